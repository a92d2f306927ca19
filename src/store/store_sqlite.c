/*
 * The SQLite back end of the store: one database file in WAL mode.
 *
 * Writes. One writer thread owns the only write connection (synchronous=FULL,
 * so a commit is on disk when it returns). Every write, the async message
 * append included, is a node on one FIFO queue. The writer takes the whole
 * queue at once and runs it as one transaction (BEGIN IMMEDIATE ... COMMIT,
 * one fsync), each op inside its own SAVEPOINT so a failing op is rolled
 * back alone; only then does it report completion: nt_append.done() for
 * async appends, a condition variable for the synchronous functions, which
 * wrap their work in an sq_job and wait. Nothing is reported before the
 * commit, so "acknowledged" always means "on disk".
 *
 * Checkpoints. SQLite's automatic checkpoint (wal_autocheckpoint) is off:
 * it made the commit that crossed 1,000 WAL pages copy them all back into
 * the database and fsync it before its acks went out. A checkpointer thread
 * with its own connection does the copying instead: woken by the writer's
 * WAL hook once enough frames are not copied back (SQ_CKPT_PAGES), it runs a PASSIVE
 * checkpoint, which never blocks the writer. The WAL file only starts over
 * from its beginning (instead of growing) when a write transaction begins
 * with everything copied back, which under a steady load never happens by
 * itself: so after a PASSIVE checkpoint that finds the WAL past
 * SQ_CKPT_HANDOFF_PAGES the writer, once the acks of its current batch are
 * out, copies back the few frames committed meanwhile (sq__wal_catch_up),
 * and its next transaction reuses the file. When the
 * writer is idle the checkpointer TRUNCATEs the WAL; a RESTART at
 * SQ_CKPT_HARD_PAGES bounds it should the catch-up keep failing.
 *
 * Reads. Each thread that reads gets its own read-only connection, opened on
 * first use and kept in thread-specific data; the store keeps a list of them
 * and closes them all at close (or when their thread exits). In WAL mode the
 * readers never wait for the writer and see the last commit.
 *
 * SQL. Every statement is a constant in the table below, prepared lazily
 * once per connection and reused; values are only ever bound, never
 * formatted into SQL. Any SQLite failure is logged and becomes
 * NT_STORE_EUNAVAILABLE; a unique or foreign key violation NT_STORE_ECONFLICT.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "store/migrations_sqlite.h"
#include "store/store.h"
#include "store/store_backend.h"
#include "store/store_common.h"

#define SQ_BUSY_TIMEOUT_MS 5000
/* The checkpointer (see the top of the file): a PASSIVE checkpoint once the
 * WAL holds SQ_CKPT_COMMITS commits' worth of frames not copied back (a
 * moving average of frames per commit), but at least SQ_CKPT_MIN_PAGES and
 * at most SQ_CKPT_PAGES (4 MB at 4 KiB); a RESTART that makes the writer
 * wait once it holds ten times as many; a TRUNCATE after this long without
 * a commit. Why scaled by the commit size: each checkpoint ends with an
 * fsync of the database file, and on this virtio disk a commit's own
 * fdatasync waits behind it. With small, frequent commits (chat traffic)
 * a fixed 1,000 pages meant a 4 MB flush every ~40 ms that set direct's p99
 * at 7 ms; 8 commits' worth (~64-100 pages there) gave 2.3 ms, while large
 * commits (ingest) still checkpoint 1,000 pages at a time, as smaller
 * checkpoints there rewrite the same pages more often (docs/performance.md,
 * "Checkpoint size"). */
#define SQ_CKPT_PAGES 1000
#define SQ_CKPT_MIN_PAGES 64
#define SQ_CKPT_COMMITS 8
#define SQ_CKPT_HARD_PAGES (10 * SQ_CKPT_PAGES)
/* The writer copies back the rest after a PASSIVE checkpoint (the WAL
 * hand-off, see the top of the file) only once the WAL holds this many
 * frames (8 MB at 4 KiB), not after every checkpoint: each catch-up stops
 * the writer for a database fsync (~1 ms here), and with small commits
 * they came 100-200 times a second. Measured on direct at 10,000 msgs/s,
 * 13 runs each: p50 0.59-0.75 ms against 0.75-0.99, p99 median 2.4 against
 * 2.6 ms; 4,000 was no better (docs/performance.md, "Checkpoint size"). */
#define SQ_CKPT_HANDOFF_PAGES 2000
#define SQ_CKPT_IDLE_MS 1000
#define SQ_CKPT_BUSY_TIMEOUT_MS 100
/* Page caches (negative: KiB). The writer's holds the hot part of messages
 * and its indexes, so appends do not re-read pages; the readers' stay small
 * because there is one per reading thread and they mostly serve point
 * lookups the OS page cache answers as well. */
#define SQ_WRITER_CACHE_KIB 65536
#define SQ_WRITER_MMAP_BYTES 268435456
#define SQ_READER_CACHE_KIB 512
#define SQ_STR_(x) #x
#define SQ_STR(x) SQ_STR_(x)
#define SQ_EXPORT_PAGE 500

/* Column lists shared by the statements that fill an nt_user/nt_message
 * (see sq__row_user and sq__row_message for the order). */
#define SQ_USER_COLS                                                                               \
    "id, nickname, email, bio, avatar_url, coalesce(gender, ''), coalesce(birth_date, ''), "       \
    "created_at, last_seen"
#define SQ_MSG_COLS                                                                                \
    "id, chat_id, seq, sender_id, text, ts, client_id, edited_at, deleted, extra_json, "           \
    "(SELECT r.alias FROM random_members r WHERE r.chat_id = messages.chat_id "                    \
    "AND r.user_id = messages.sender_id AND r.hidden = 1)"

#define SQ_STATEMENTS(X)                                                                           \
    X(BEGIN, "BEGIN")                                                                              \
    X(BEGIN_IMMEDIATE, "BEGIN IMMEDIATE")                                                          \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(SAVEPOINT, "SAVEPOINT op")                                                                   \
    X(RELEASE, "RELEASE op")                                                                       \
    X(ROLLBACK_TO, "ROLLBACK TO op")                                                               \
    X(SCHEMA_VERSION, "SELECT coalesce(max(version), 0) FROM schema_version")                      \
    X(SCHEMA_RECORD, "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)")           \
    /* users */                                                                                    \
    X(USER_GET, "SELECT " SQ_USER_COLS " FROM users WHERE id = ?1")                                \
    X(USER_BY_NICK, "SELECT " SQ_USER_COLS " FROM users WHERE nickname = ?1")                      \
    X(USER_LOGIN, "SELECT " SQ_USER_COLS ", password_hash FROM users "                             \
                  "WHERE lower(email) = lower(?1) OR nickname = ?1 ORDER BY id LIMIT 1")           \
    X(USER_EXISTS, "SELECT 1 FROM users WHERE id = ?1")                                            \
    X(USER_EMAIL_TAKEN, "SELECT 1 FROM users WHERE lower(email) = lower(?1)")                      \
    X(USER_NICK_TAKEN, "SELECT 1 FROM users WHERE nickname = ?1 AND id <> ?2")                     \
    X(USER_INSERT, "INSERT INTO users (email, nickname, password_hash, gender, birth_date, "       \
                   "created_at) VALUES (?1, ?2, ?3, nullif(?4, ''), nullif(?5, ''), ?6)")          \
    X(USER_UPDATE, "UPDATE users SET nickname = coalesce(?2, nickname), "                          \
                   "bio = coalesce(?3, bio), avatar_url = coalesce(?4, avatar_url), "              \
                   "gender = CASE WHEN ?5 IS NULL THEN gender ELSE nullif(?5, '') END, "           \
                   "birth_date = CASE WHEN ?6 IS NULL THEN birth_date "                            \
                   "ELSE nullif(?6, '') END WHERE id = ?1")                                        \
    X(USER_SEARCH, "SELECT " SQ_USER_COLS " FROM users WHERE nickname LIKE ?1 ESCAPE '\\' "        \
                   "AND id > ?2 ORDER BY id LIMIT ?3")                                             \
    X(USER_LAST_SEEN, "UPDATE users SET last_seen = ?2 WHERE id = ?1")                             \
    /* sessions */                                                                                 \
    X(SESSION_INSERT, "INSERT INTO sessions (user_id, created_at) VALUES (?1, ?2)")                \
    X(SESSION_ACTIVE, "SELECT revoked FROM sessions WHERE id = ?1")                                \
    X(SESSION_REVOKE, "UPDATE sessions SET revoked = 1 WHERE id = ?1")                             \
    X(TOKEN_INSERT, "INSERT INTO refresh_tokens (hash, session_id, expires_at) "                   \
                    "VALUES (?1, ?2, ?3)")                                                         \
    X(TOKEN_GET, "SELECT t.session_id, s.user_id, t.expires_at, t.used, s.revoked "                \
                 "FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id "                   \
                 "WHERE t.hash = ?1")                                                              \
    X(TOKEN_USE, "UPDATE refresh_tokens SET used = 1 WHERE hash = ?1")                             \
    X(TOKEN_PRUNE, "DELETE FROM refresh_tokens WHERE session_id = ?1 AND expires_at <= ?2")        \
    /* chats and members */                                                                        \
    X(CHAT_GET, "SELECT id, type, title, created_at, last_seq, last_activity, closed "             \
                "FROM chats WHERE id = ?1")                                                        \
    X(CHAT_EXISTS, "SELECT 1 FROM chats WHERE id = ?1")                                            \
    X(CHAT_BY_DIRECT_KEY, "SELECT id FROM chats WHERE direct_key = ?1")                            \
    X(CHAT_INSERT, "INSERT INTO chats (type, title, created_at, last_activity, direct_key) "       \
                   "VALUES (?1, ?2, ?3, ?3, ?4)")                                                  \
    X(CHAT_CLOSE, "UPDATE chats SET closed = 1 WHERE id = ?1")                                     \
    X(CHAT_LIST, "SELECT c.id FROM members m JOIN chats c ON c.id = m.chat_id "                    \
                 "WHERE m.user_id = ?1 ORDER BY c.last_activity DESC, c.id DESC LIMIT ?2")         \
    X(CHANNEL_BY_TITLE, "SELECT id FROM chats WHERE type = 'channel' AND title = ?1 "              \
                        "ORDER BY id LIMIT 1")                                                     \
    X(MEMBERS, "SELECT m.user_id, m.role, m.delivered_seq, m.read_seq, r.alias, r.revealed, "      \
               "r.hidden FROM members m LEFT JOIN random_members r "                               \
               "ON r.chat_id = m.chat_id AND r.user_id = m.user_id "                               \
               "WHERE m.chat_id = ?1 ORDER BY m.user_id")                                          \
    X(MEMBER_IDS, "SELECT user_id FROM members WHERE chat_id = ?1 ORDER BY user_id")               \
    X(MEMBER_ROLE, "SELECT role FROM members WHERE chat_id = ?1 AND user_id = ?2")                 \
    X(MEMBER_INSERT, "INSERT INTO members (chat_id, user_id, role, joined_at) "                    \
                     "VALUES (?1, ?2, ?3, ?4)")                                                    \
    X(MEMBER_INSERT_IGNORE, "INSERT INTO members (chat_id, user_id, role, joined_at) "             \
                            "VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING")                      \
    X(MEMBER_DELETE, "DELETE FROM members WHERE chat_id = ?1 AND user_id = ?2")                    \
    X(PARTNERS, "SELECT id FROM (SELECT o.user_id AS id FROM members m "                           \
                "JOIN chats c ON c.id = m.chat_id AND c.type = 'direct' "                          \
                "JOIN members o ON o.chat_id = m.chat_id AND o.user_id <> m.user_id "              \
                "WHERE m.user_id = ?1 "                                                            \
                "UNION SELECT friend_id FROM friends WHERE user_id = ?1) "                         \
                "WHERE id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = ?1) "           \
                "ORDER BY id")                                                                     \
    X(MARK_GET, "SELECT m.delivered_seq, m.read_seq, c.last_seq FROM members m "                   \
                "JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ?1 AND m.user_id = ?2")        \
    X(MARK_SET, "UPDATE members SET delivered_seq = ?3, read_seq = ?4 "                            \
                "WHERE chat_id = ?1 AND user_id = ?2")                                             \
    /* messages */                                                                                 \
    X(MSG_BY_CLIENT, "SELECT " SQ_MSG_COLS " FROM messages "                                       \
                     "WHERE sender_id = ?1 AND client_id = ?2")                                    \
    X(CHAT_STATE, "SELECT closed, last_seq, last_activity FROM chats WHERE id = ?1")               \
    X(CHAT_COUNTERS, "UPDATE chats SET last_seq = ?2, last_activity = ?3 WHERE id = ?1")           \
    X(MSG_INSERT, "INSERT INTO messages (chat_id, seq, sender_id, text, ts, client_id, "           \
                  "extra_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")                               \
    X(MSG_BY_SEQ, "SELECT " SQ_MSG_COLS " FROM messages WHERE chat_id = ?1 AND seq = ?2")          \
    X(MSG_AFTER, "SELECT " SQ_MSG_COLS " FROM messages "                                           \
                 "WHERE chat_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4")             \
    X(MSG_BEFORE, "SELECT " SQ_MSG_COLS " FROM messages "                                          \
                  "WHERE chat_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3")                    \
    X(MSG_EDIT, "UPDATE messages SET text = ?3, edited_at = ?4 "                                   \
                "WHERE chat_id = ?1 AND seq = ?2")                                                 \
    X(MSG_DELETE, "UPDATE messages SET text = '', extra_json = NULL, deleted = 1 "                 \
                  "WHERE chat_id = ?1 AND seq = ?2")                                               \
    X(UNREAD, "SELECT count(*) FROM messages "                                                     \
              "WHERE chat_id = ?1 AND seq > ?2 AND sender_id <> ?3")                               \
    /* friends and blocks */                                                                       \
    X(FRIEND_INSERT, "INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) "             \
                     "VALUES (?1, ?2, ?3), (?2, ?1, ?3)")                                          \
    X(FRIEND_DELETE, "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2) "                \
                     "OR (user_id = ?2 AND friend_id = ?1)")                                       \
    X(FRIEND_EXISTS, "SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")                \
    X(REQ_EXISTS, "SELECT 1 FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")               \
    X(REQ_INSERT, "INSERT OR IGNORE INTO friend_requests (from_id, to_id, created_at) "            \
                  "VALUES (?1, ?2, ?3)")                                                           \
    X(REQ_DELETE, "DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")                 \
    X(REQ_DELETE_PAIR, "DELETE FROM friend_requests WHERE (from_id = ?1 AND to_id = ?2) "          \
                       "OR (from_id = ?2 AND to_id = ?1)")                                         \
    X(BLOCK_PAIR, "SELECT blocker_id FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) "     \
                  "OR (blocker_id = ?2 AND blocked_id = ?1)")                                      \
    X(BLOCK_INSERT, "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, created_at) "           \
                    "VALUES (?1, ?2, ?3)")                                                         \
    X(BLOCK_DELETE, "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")                \
    X(BLOCK_PEERS, "SELECT blocked_id FROM blocks WHERE blocker_id = ?1 "                          \
                   "UNION SELECT blocker_id FROM blocks WHERE blocked_id = ?1 ORDER BY 1")         \
    X(LIST_FRIENDS, "SELECT " SQ_USER_COLS " FROM users WHERE id IN "                              \
                    "(SELECT friend_id FROM friends WHERE user_id = ?1) ORDER BY id LIMIT ?2")     \
    X(LIST_INCOMING, "SELECT " SQ_USER_COLS " FROM users WHERE id IN "                             \
                     "(SELECT from_id FROM friend_requests WHERE to_id = ?1) "                     \
                     "ORDER BY id LIMIT ?2")                                                       \
    X(LIST_OUTGOING, "SELECT " SQ_USER_COLS " FROM users WHERE id IN "                             \
                     "(SELECT to_id FROM friend_requests WHERE from_id = ?1) "                     \
                     "ORDER BY id LIMIT ?2")                                                       \
    X(LIST_BLOCKED, "SELECT " SQ_USER_COLS " FROM users WHERE id IN "                              \
                    "(SELECT blocked_id FROM blocks WHERE blocker_id = ?1) ORDER BY id LIMIT ?2")  \
    /* matching and random chats */                                                                \
    X(PREFS_GET, "SELECT genders, age_min, age_max, interests FROM match_prefs "                   \
                 "WHERE user_id = ?1")                                                             \
    X(PREFS_SET, "INSERT INTO match_prefs (user_id, genders, age_min, age_max, interests, "        \
                 "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (user_id) DO UPDATE "    \
                 "SET genders = excluded.genders, age_min = excluded.age_min, "                    \
                 "age_max = excluded.age_max, interests = excluded.interests, "                    \
                 "updated_at = excluded.updated_at")                                               \
    X(RANDOM_INSERT, "INSERT INTO random_members (chat_id, user_id, alias) VALUES (?1, ?2, ?3)")   \
    X(RANDOM_STATE, "SELECT revealed, hidden FROM random_members "                                 \
                    "WHERE chat_id = ?1 AND user_id = ?2")                                         \
    X(RANDOM_REVEAL, "UPDATE random_members SET revealed = 1 "                                     \
                     "WHERE chat_id = ?1 AND user_id = ?2")                                        \
    X(RANDOM_PENDING, "SELECT count(*) FROM random_members WHERE chat_id = ?1 AND revealed = 0")   \
    X(RANDOM_SHOW, "UPDATE random_members SET hidden = 0 WHERE chat_id = ?1")                      \
    X(RANDOM_ALIAS, "SELECT alias FROM random_members "                                            \
                    "WHERE chat_id = ?1 AND user_id = ?2 AND hidden = 1")                          \
    X(RANDOM_ALIASES, "SELECT user_id, alias FROM random_members "                                 \
                      "WHERE chat_id = ?1 AND hidden = 1")

enum sq_stmt_id {
#define SQ_ENUM(id, sql) SQ_##id,
    SQ_STATEMENTS(SQ_ENUM)
#undef SQ_ENUM
        SQ_NSTMT
};

static const char *const sq_sql[SQ_NSTMT] = {
#define SQ_TEXT(id, sql) [SQ_##id] = sql,
    SQ_STATEMENTS(SQ_TEXT)
#undef SQ_TEXT
};

typedef struct sq_store sq_store;

/*
 * The writer's cache of what an append needs to know about a chat: whether
 * it is closed, its members (sorted, for the membership check and for the
 * op's member_ids) and its counters. Every write goes through the writer,
 * so the cache is exact as long as the writer forgets a chat whose members
 * or closed flag it changes (sq__cache_forget) and drops everything when a
 * transaction fails. Counters of appended messages are kept here ("dirty")
 * and written to the chats row once per chat per batch (sq__cache_flush),
 * before any other write runs and before COMMIT.
 */
typedef struct sq_chat_entry {
    int64_t chat_id; /* 0: a free slot */
    bool loaded;     /* false: read the chat again before use */
    bool closed;
    bool dirty; /* last_seq/last_activity are ahead of the chats row */
    int64_t last_seq;
    int64_t last_activity;
    nt_member_set *members; /* one reference; appends take more */
    /* Chats of exactly two members only (the block rule and random-chat
     * aliases), read lazily by sq__pair_load. pair_epoch is the store's
     * block_epoch when pair_blocked was read (0: never); a block or unblock
     * bumps the epoch, so every cached answer goes stale at once. */
    uint64_t pair_epoch;
    uint8_t pair_blocked;          /* bit i: ids[i] was blocked by the other member */
    char (*aliases)[NT_ALIAS_MAX]; /* heap [2] while the random chat is anonymous */
} sq_chat_entry;

#define SQ_CACHE_SLOTS 4096 /* a power of two; cleared at 3/4 full */

/* One connection and its statement cache. Used by one thread at a time. */
typedef struct sq_conn {
    sqlite3 *db;
    sq_store *owner;
    struct sq_conn *next; /* in owner->readers */
    sqlite3_stmt *stmt[SQ_NSTMT];
} sq_conn;

struct sq_store {
    char *path;
    sq_conn writer;   /* the writer thread's (and open/close's) only */
    nt_store_queue q; /* the writes; q.lock guards readers too */

    pthread_key_t reader_key;
    bool key_created;
    sq_conn *readers;

    /* The writer thread's only. */
    sq_chat_entry *cache; /* SQ_CACHE_SLOTS slots, open addressing */
    int cache_used;
    sq_chat_entry **dirty;
    int ndirty, dirty_cap;
    bool batch_broken;    /* the counters could not be written: lose the batch */
    uint64_t block_epoch; /* bumped by every block change (see sq_chat_entry) */

    /* The checkpointer thread, its connection and what the writer's WAL
     * hook tells it (under ckpt_lock). */
    sq_conn ckpt;
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t ckpt_lock;
    pthread_cond_t ckpt_wake;
    bool ckpt_stopping;
    int wal_pages;         /* frames in the WAL after the last commit */
    int wal_copied;        /* of those, copied back by the last checkpoint */
    uint64_t wal_commits;  /* commits seen by the hook */
    bool wal_handoff;      /* the writer should copy back the rest (see top) */
    double wal_per_commit; /* frames one commit adds, moving average */
    int ckpt_due;          /* frames not copied back that call for a checkpoint */
};

/* A synchronous write other than an append: fn does the work on the writer
 * connection, inside the batch transaction (see nt_store_job). */
typedef struct sq_job {
    nt_store_job base; /* first: the queue hands back &base */
    int (*fn)(sq_conn *w, void *arg);
    void *arg;
} sq_job;

/* ---- statements and errors --------------------------------------------- */

/* Logs an SQLite failure and maps it to a store code. */
static int sq__fail(sq_conn *c, int rc, const char *what)
{
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return NT_STORE_ECONFLICT;
    nt_warn("store sqlite error op=%s rc=%d msg=\"%s\"", what, rc,
            c->db ? sqlite3_errmsg(c->db) : "no connection");
    return NT_STORE_EUNAVAILABLE;
}

/* The cached statement `id` of c, prepared on first use; NULL on failure. */
static sqlite3_stmt *sq__stmt(sq_conn *c, enum sq_stmt_id id)
{
    if (c->stmt[id]) return c->stmt[id];
    int rc =
        sqlite3_prepare_v3(c->db, sq_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[id], NULL);
    if (rc != SQLITE_OK) {
        sq__fail(c, rc, sq_sql[id]);
        c->stmt[id] = NULL;
    }
    return c->stmt[id];
}

/* Ends a use of a statement so it holds no lock and no stale binding. */
static void sq__reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Steps a bound statement that returns no row of interest, then resets it. */
static int sq__run(sq_conn *c, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) ret = sq__fail(c, rc, sqlite3_sql(st));
    sq__reset(st);
    return ret;
}

/* sq__run for a write that must hit a row: ENOTFOUND when none changed. */
static int sq__run_found(sq_conn *c, sqlite3_stmt *st)
{
    int rc = sq__run(c, st);
    return rc ? rc : sqlite3_changes(c->db) ? 0 : NT_STORE_ENOTFOUND;
}

/* Runs a statement without parameters (BEGIN, COMMIT, SAVEPOINT...). */
static int sq__exec(sq_conn *c, enum sq_stmt_id id)
{
    sqlite3_stmt *st = sq__stmt(c, id);
    return st ? sq__run(c, st) : NT_STORE_EUNAVAILABLE;
}

/*
 * Steps a statement expected to return at most one row: 1 with the row
 * (the caller reads it then calls sq__reset), 0 with none (already reset),
 * or a negative store code (already reset).
 */
static int sq__row(sq_conn *c, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return 1;
    int ret = rc == SQLITE_DONE ? 0 : sq__fail(c, rc, sqlite3_sql(st));
    sq__reset(st);
    return ret;
}

/* sq__row for a row that must exist: 0 with the row (the caller reads it
 * then calls sq__reset), ENOTFOUND or an error (already reset). */
static int sq__row_found(sq_conn *c, sqlite3_stmt *st)
{
    int rc = sq__row(c, st);
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

/* The single integer a query returns: 1 found (*v set), 0 none, <0 error. */
static int sq__int(sq_conn *c, sqlite3_stmt *st, int64_t *v)
{
    int rc = sq__row(c, st);
    if (rc == 1) {
        *v = sqlite3_column_int64(st, 0);
        sq__reset(st);
    }
    return rc;
}

static int sq__bind_str(sqlite3_stmt *st, int idx, const char *s)
{
    return s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, idx);
}

static void sq__col_str(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    size_t n = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, v, n);
    dst[n] = '\0';
}

/* A heap copy of a text column; NULL column -> NULL unless empty_if_null. */
static int sq__col_dup(sqlite3_stmt *st, int col, bool empty_if_null, char **out, size_t *len)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    *out = NULL;
    if (len) *len = 0;
    if (!v && !empty_if_null) return 0;
    size_t n = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
    char *copy = malloc(n + 1);
    if (!copy) return NT_STORE_EUNAVAILABLE;
    if (n) memcpy(copy, v, n);
    copy[n] = '\0';
    *out = copy;
    if (len) *len = n;
    return 0;
}

/* Fills u from the SQ_USER_COLS columns starting at 0. */
static void sq__row_user(sqlite3_stmt *st, nt_user *u)
{
    u->id = sqlite3_column_int64(st, 0);
    sq__col_str(st, 1, u->nickname, sizeof(u->nickname));
    sq__col_str(st, 2, u->email, sizeof(u->email));
    sq__col_str(st, 3, u->bio, sizeof(u->bio));
    sq__col_str(st, 4, u->avatar_url, sizeof(u->avatar_url));
    sq__col_str(st, 5, u->gender, sizeof(u->gender));
    sq__col_str(st, 6, u->birth_date, sizeof(u->birth_date));
    u->created_at = sqlite3_column_int64(st, 7);
    u->last_seen = sqlite3_column_int64(st, 8);
}

/* Fills m (text and extra_json on the heap) from the SQ_MSG_COLS columns. */
static int sq__row_message(sqlite3_stmt *st, nt_message *m)
{
    memset(m, 0, sizeof(*m));
    m->id = sqlite3_column_int64(st, 0);
    m->chat_id = sqlite3_column_int64(st, 1);
    m->seq = sqlite3_column_int64(st, 2);
    m->sender_id = sqlite3_column_int64(st, 3);
    m->ts = sqlite3_column_int64(st, 5);
    sq__col_str(st, 6, m->client_id, sizeof(m->client_id));
    m->edited_at = sqlite3_column_int64(st, 7);
    m->deleted = sqlite3_column_int(st, 8) != 0;
    sq__col_str(st, 10, m->sender_alias, sizeof(m->sender_alias));
    if (sq__col_dup(st, 4, true, &m->text, &m->text_len) ||
        sq__col_dup(st, 9, false, &m->extra_json, NULL)) {
        nt_message_free(m);
        return NT_STORE_EUNAVAILABLE;
    }
    return 0;
}

/* Loads one message by (chat_id, seq) into out: 0, ENOTFOUND or error. */
static int sq__message_load(sq_conn *c, int64_t chat_id, int64_t seq, nt_message *out)
{
    sqlite3_stmt *st = sq__stmt(c, SQ_MSG_BY_SEQ);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, seq);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    rc = sq__row_message(st, out);
    sq__reset(st);
    return rc;
}

static int sq__user_load(sq_conn *c, int64_t id, nt_user *out)
{
    sqlite3_stmt *st = sq__stmt(c, SQ_USER_GET);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, id);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    sq__row_user(st, out);
    sq__reset(st);
    return 0;
}

/* 0 if the row a one-parameter existence query looks for exists, else
 * ENOTFOUND or an error. */
static int sq__exists(sq_conn *c, enum sq_stmt_id id, int64_t key)
{
    sqlite3_stmt *st = sq__stmt(c, id);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, key);
    int64_t one;
    int rc = sq__int(c, st, &one);
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

/* Room for one more element in a heap array holding count of *cap elements
 * of elem bytes (doubling, from `first`): the array, moved perhaps, or NULL
 * when out of memory (arr is then left as it was). */
static void *sq__room(void *arr, int *cap, int count, size_t elem, int first)
{
    if (count < *cap) return arr;
    int ncap = *cap ? *cap * 2 : first;
    void *grown = realloc(arr, (size_t)ncap * elem);
    if (grown) *cap = ncap;
    return grown;
}

/* Reads every row of a query returning one integer column into a heap
 * array. The statement is bound by the caller and reset here. */
static int sq__int_list(sq_conn *c, sqlite3_stmt *st, int64_t **out, int *n)
{
    int64_t *arr = NULL;
    int count = 0, cap = 0, rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t *room = sq__room(arr, &cap, count, sizeof(*arr), 8);
        if (!room) {
            ret = NT_STORE_EUNAVAILABLE;
            break;
        }
        arr = room;
        arr[count++] = sqlite3_column_int64(st, 0);
    }
    if (!ret && rc != SQLITE_DONE) ret = sq__fail(c, rc, sqlite3_sql(st));
    sq__reset(st);
    if (ret) {
        free(arr);
        return ret;
    }
    *out = arr;
    *n = count;
    return 0;
}

static int sq__member_ids(sq_conn *c, int64_t chat_id, int64_t **ids, int *n)
{
    sqlite3_stmt *st = sq__stmt(c, SQ_MEMBER_IDS);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    return sq__int_list(c, st, ids, n);
}

/*
 * Loads a chat with its members, its last message and the viewer's unread
 * count (messages after the viewer's read marker sent by someone else; 0 if
 * the viewer is not a member). out must be zeroed; on failure it is freed.
 */
static int sq__chat_load(sq_conn *c, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    sqlite3_stmt *st = sq__stmt(c, SQ_CHAT_GET);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    out->id = sqlite3_column_int64(st, 0);
    sq__col_str(st, 1, out->type, sizeof(out->type));
    sq__col_str(st, 2, out->title, sizeof(out->title));
    out->created_at = sqlite3_column_int64(st, 3);
    out->last_seq = sqlite3_column_int64(st, 4);
    out->last_activity = sqlite3_column_int64(st, 5);
    out->closed = sqlite3_column_int(st, 6) != 0;
    sq__reset(st);

    st = sq__stmt(c, SQ_MEMBERS);
    if (!st) goto fail_unavailable;
    sqlite3_bind_int64(st, 1, chat_id);
    int cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        nt_member *room = sq__room(out->members, &cap, out->nmembers, sizeof(*room), 4);
        if (!room) {
            sq__reset(st);
            goto fail_unavailable;
        }
        out->members = room;
        nt_member *m = &out->members[out->nmembers++];
        m->user_id = sqlite3_column_int64(st, 0);
        m->role = sqlite3_column_int(st, 1);
        m->delivered_seq = sqlite3_column_int64(st, 2);
        m->read_seq = sqlite3_column_int64(st, 3);
        m->alias[0] = '\0';
        if (sqlite3_column_int(st, 6)) sq__col_str(st, 4, m->alias, sizeof(m->alias));
        m->revealed = sqlite3_column_int(st, 5) != 0;
    }
    if (rc != SQLITE_DONE) {
        rc = sq__fail(c, rc, "chat members");
        sq__reset(st);
        goto fail;
    }
    sq__reset(st);

    if (out->last_seq > 0) {
        rc = sq__message_load(c, chat_id, out->last_seq, &out->last_message);
        if (rc == 0)
            out->has_last_message = true;
        else if (rc != NT_STORE_ENOTFOUND)
            goto fail;
    }

    int64_t viewer_read;
    if (nt_store_viewer_read(out, viewer_id, &viewer_read) && viewer_read < out->last_seq) {
        st = sq__stmt(c, SQ_UNREAD);
        if (!st) goto fail_unavailable;
        sqlite3_bind_int64(st, 1, chat_id);
        sqlite3_bind_int64(st, 2, viewer_read);
        sqlite3_bind_int64(st, 3, viewer_id);
        rc = sq__int(c, st, &out->unread);
        if (rc < 0) goto fail;
    }
    return 0;

fail_unavailable:
    rc = NT_STORE_EUNAVAILABLE;
fail:
    nt_chat_free(out);
    memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- connections -------------------------------------------------------- */

static void sq__conn_close(sq_conn *c)
{
    for (int i = 0; i < SQ_NSTMT; i++) {
        if (c->stmt[i]) sqlite3_finalize(c->stmt[i]);
        c->stmt[i] = NULL;
    }
    if (c->db) sqlite3_close(c->db);
    c->db = NULL;
}

static int sq__conn_open(sq_conn *c, const char *path, int flags, char *err, size_t err_len)
{
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "cannot open %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sq__conn_close(c);
        return NT_STORE_EUNAVAILABLE;
    }
    sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
    return 0;
}

/* Thread exit: the reader connection of a thread that ends before the store
 * closes is closed here. */
static void sq__reader_exit(void *arg)
{
    sq_conn *c = arg;
    sq_store *b = c->owner;
    pthread_mutex_lock(&b->q.lock);
    for (sq_conn **pp = &b->readers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&b->q.lock);
    sq__conn_close(c);
    free(c);
}

/* The calling thread's read connection, opened on first use; NULL if it
 * cannot be opened (logged). */
static sq_conn *sq__reader(sq_store *b)
{
    sq_conn *c = pthread_getspecific(b->reader_key);
    if (c) return c;
    c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    char err[256];
    if (sq__conn_open(c, b->path, SQLITE_OPEN_READONLY, err, sizeof(err)) != 0) {
        nt_warn("store sqlite reader open failed msg=\"%s\"", err);
        free(c);
        return NULL;
    }
    c->owner = b;
    /* One reader per reading thread: small caches, or together they would
     * hold megabytes the OS page cache holds anyway. */
    sqlite3_exec(c->db, "PRAGMA cache_size = -" SQ_STR(SQ_READER_CACHE_KIB), NULL, NULL, NULL);
    if (pthread_setspecific(b->reader_key, c) != 0) {
        sq__conn_close(c);
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&b->q.lock);
    c->next = b->readers;
    b->readers = c;
    pthread_mutex_unlock(&b->q.lock);
    return c;
}

/* A read transaction on the caller's reader, so a multi-query read sees one
 * snapshot. */
static int sq__read_begin(sq_conn *c)
{
    return sq__exec(c, SQ_BEGIN);
}

static void sq__read_end(sq_conn *c)
{
    if (!sqlite3_get_autocommit(c->db)) sq__exec(c, SQ_COMMIT);
}

/* ---- the writer --------------------------------------------------------- */

/* Runs fn on the writer connection in the next batch and waits for the
 * commit. Returns fn's status, or EUNAVAILABLE if the commit failed. */
static int sq__write(sq_store *b, int (*fn)(sq_conn *w, void *arg), void *arg)
{
    sq_job job;
    memset(&job, 0, sizeof(job));
    job.base.generic = true;
    job.fn = fn;
    job.arg = arg;
    return nt_store_queue_run(&b->q, &job.base);
}

/* The job of a synchronous write other than an append, or NULL. */
static sq_job *sq__generic_job(const nt_append *op)
{
    return (sq_job *)nt_store_generic_job(op);
}

/* ---- the writer's chat cache -------------------------------------------- */

static void sq__cache_clear(sq_store *b)
{
    for (int i = 0; i < SQ_CACHE_SLOTS; i++) {
        nt_member_set_unref(b->cache[i].members);
        free(b->cache[i].aliases);
    }
    memset(b->cache, 0, SQ_CACHE_SLOTS * sizeof(*b->cache));
    b->cache_used = 0;
    b->ndirty = 0;
}

/* Writes the counters of every dirty chat to its row. On failure the
 * transaction must be abandoned (the counters are lost with it). */
static int sq__cache_flush(sq_store *b, sq_conn *w)
{
    int rc = 0;
    for (int i = 0; i < b->ndirty && rc == 0; i++) {
        sq_chat_entry *e = b->dirty[i];
        sqlite3_stmt *st = sq__stmt(w, SQ_CHAT_COUNTERS);
        if (!st) return NT_STORE_EUNAVAILABLE;
        sqlite3_bind_int64(st, 1, e->chat_id);
        sqlite3_bind_int64(st, 2, e->last_seq);
        sqlite3_bind_int64(st, 3, e->last_activity);
        rc = sq__run(w, st);
        e->dirty = false;
    }
    b->ndirty = 0;
    if (rc) b->batch_broken = true;
    return rc;
}

static sq_chat_entry *sq__cache_slot(sq_store *b, int64_t chat_id)
{
    for (size_t i = nt_store_cache_home(chat_id, SQ_CACHE_SLOTS);;
         i = (i + 1) & (SQ_CACHE_SLOTS - 1)) {
        sq_chat_entry *e = &b->cache[i];
        if (e->chat_id == chat_id || e->chat_id == 0) return e;
    }
}

/* Drops what an entry knows about members and aliases (the counters stay).
 * Appends that were handed the member set keep it alive. */
static void sq__cache_drop_members(sq_chat_entry *e)
{
    nt_member_set_unref(e->members);
    e->members = NULL;
    free(e->aliases);
    e->aliases = NULL;
    e->pair_epoch = 0;
}

/* Makes the cache forget a chat whose members or closed flag just changed. */
static void sq__cache_forget(sq_conn *w, int64_t chat_id)
{
    sq_chat_entry *e = sq__cache_slot(w->owner, chat_id);
    if (e->chat_id == chat_id && !e->dirty) {
        sq__cache_drop_members(e);
        e->loaded = false;
    }
}

/* The cached state of a chat, read from the database if needed:
 * 0, ENOTFOUND or an error. */
static int sq__cache_get(sq_store *b, sq_conn *w, int64_t chat_id, sq_chat_entry **out)
{
    sq_chat_entry *e = sq__cache_slot(b, chat_id);
    if (e->chat_id == 0) {
        if (b->cache_used >= SQ_CACHE_SLOTS / 4 * 3) {
            int rc = sq__cache_flush(b, w);
            sq__cache_clear(b);
            if (rc) return rc;
            e = sq__cache_slot(b, chat_id);
        }
        e->chat_id = chat_id;
        b->cache_used++;
    }
    if (!e->loaded) {
        sqlite3_stmt *st = sq__stmt(w, SQ_CHAT_STATE);
        if (!st) return NT_STORE_EUNAVAILABLE;
        sqlite3_bind_int64(st, 1, chat_id);
        int rc = sq__row_found(w, st);
        if (rc) return rc;
        e->closed = sqlite3_column_int(st, 0) != 0;
        e->last_seq = sqlite3_column_int64(st, 1);
        e->last_activity = sqlite3_column_int64(st, 2);
        sq__reset(st);
        sq__cache_drop_members(e);
        int64_t *ids = NULL;
        int n = 0;
        if ((rc = sq__member_ids(w, chat_id, &ids, &n)) != 0) return rc;
        e->members = nt_member_set_new(ids, n);
        free(ids);
        if (!e->members) return NT_STORE_EUNAVAILABLE;
        e->loaded = true;
    }
    *out = e;
    return 0;
}

/*
 * For a chat of two members: reads which of them the other blocked (when the
 * cached answer is older than the last block change) and, once per load of
 * the entry, the aliases of an anonymous random chat. Two indexed lookups,
 * and only when something changed, so the hot path of a busy direct chat
 * stays one cache probe.
 */
static int sq__pair_load(sq_store *b, sq_conn *w, sq_chat_entry *e)
{
    sqlite3_stmt *st;
    int rc;
    const int64_t *pair = e->members->ids;
    if (e->pair_epoch == b->block_epoch + 1) return 0;
    if (!(st = sq__stmt(w, SQ_BLOCK_PAIR))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, pair[0]);
    sqlite3_bind_int64(st, 2, pair[1]);
    uint8_t blocked = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        blocked |= sqlite3_column_int64(st, 0) == pair[0] ? 2 : 1;
    if (rc != SQLITE_DONE)
        rc = sq__fail(w, rc, "block pair");
    else
        rc = 0;
    sq__reset(st);
    if (rc) return rc;

    if (e->pair_epoch == 0) {
        /* First look since the entry was loaded: the aliases too. */
        free(e->aliases);
        e->aliases = NULL;
        if (!(st = sq__stmt(w, SQ_RANDOM_ALIASES))) return NT_STORE_EUNAVAILABLE;
        sqlite3_bind_int64(st, 1, e->chat_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t uid = sqlite3_column_int64(st, 0);
            int idx = uid == pair[0] ? 0 : uid == pair[1] ? 1 : -1;
            if (idx < 0) continue;
            if (!e->aliases && !(e->aliases = calloc(2, sizeof(*e->aliases)))) {
                rc = SQLITE_NOMEM;
                break;
            }
            sq__col_str(st, 1, e->aliases[idx], sizeof(e->aliases[idx]));
        }
        if (rc != SQLITE_DONE)
            rc = sq__fail(w, rc, "random aliases");
        else
            rc = 0;
        sq__reset(st);
        if (rc) return rc;
    }
    e->pair_blocked = blocked;
    /* +1 so that a fresh store (epoch 0) still differs from "never read". */
    e->pair_epoch = b->block_epoch + 1;
    return 0;
}

/*
 * The append itself, on the writer connection (see nt_append in store.h).
 * It writes with a single INSERT, atomic on its own, so it needs no
 * savepoint: on any failure nothing of it is in the transaction. The chat's
 * new counters go to the cache and reach the chats row in sq__cache_flush.
 */
static int sq__append_run(sq_store *b, sq_conn *w, nt_append *op)
{
    sq_chat_entry *chat;
    sqlite3_stmt *st;
    int rc;

    if ((rc = nt_store_append_check(op)) != 0) return rc;
    if (op->client_id[0]) {
        if (!(st = sq__stmt(w, SQ_MSG_BY_CLIENT))) return NT_STORE_EUNAVAILABLE;
        sqlite3_bind_int64(st, 1, op->sender_id);
        sqlite3_bind_text(st, 2, op->client_id, -1, SQLITE_STATIC);
        rc = sq__row(w, st);
        if (rc < 0) return rc;
        if (rc == 1) {
            rc = sq__row_message(st, &op->msg);
            sq__reset(st);
            if (rc) return rc;
            op->duplicate = true;
            if ((rc = sq__cache_get(b, w, op->msg.chat_id, &chat)) != 0) return rc;
            nt_store_append_members(op, chat->members);
            return 0;
        }
    }

    if ((rc = sq__cache_get(b, w, op->chat_id, &chat)) != 0) return rc;
    if (chat->closed || !nt_member_set_contains(chat->members, op->sender_id))
        return NT_STORE_EFORBIDDEN;
    int sender_idx = -1;
    if (chat->members->n == 2) {
        /* Blocks apply where only the two of them talk (direct, random, a
         * two-member group): the blocked one cannot write to the blocker. */
        if ((rc = sq__pair_load(b, w, chat)) != 0) return rc;
        sender_idx = chat->members->ids[0] == op->sender_id ? 0 : 1;
        if (chat->pair_blocked & (1u << sender_idx)) return NT_STORE_EFORBIDDEN;
    }

    /* Everything that can fail comes before the INSERT, so once the message
     * is written the op cannot report an error for it. */
    if (!chat->dirty && b->ndirty == b->dirty_cap) {
        int ncap = b->dirty_cap ? b->dirty_cap * 2 : 64;
        sq_chat_entry **grown = realloc(b->dirty, (size_t)ncap * sizeof(*grown));
        if (!grown) return NT_STORE_EUNAVAILABLE;
        b->dirty = grown;
        b->dirty_cap = ncap;
    }
    if ((rc = nt_store_append_copy(op)) != 0) return rc;

    int64_t seq = chat->last_seq + 1;
    if (!(st = sq__stmt(w, SQ_MSG_INSERT))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, op->chat_id);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int64(st, 3, op->sender_id);
    sqlite3_bind_text(st, 4, op->text, (int)op->text_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, op->ts);
    sq__bind_str(st, 6, op->client_id[0] ? op->client_id : NULL);
    sq__bind_str(st, 7, op->extra_json);
    if ((rc = sq__run(w, st)) != 0) return rc;

    op->msg.id = sqlite3_last_insert_rowid(w->db);
    nt_store_append_stamp(op, seq,
                          sender_idx >= 0 && chat->aliases ? chat->aliases[sender_idx] : NULL);
    nt_store_append_members(op, chat->members);
    chat->last_seq = seq;
    if (op->ts > chat->last_activity) chat->last_activity = op->ts;
    if (!chat->dirty) {
        b->dirty[b->ndirty++] = chat;
        chat->dirty = true;
    }
    return 0;
}

/*
 * One group commit: every op of the batch in one transaction. A generic
 * write runs in its own savepoint, rolled back alone if it fails; an append
 * is a single atomic INSERT and needs none. If the transaction itself fails
 * (BEGIN, a savepoint, the counters, COMMIT, or SQLite abandoning it after
 * an I/O error) every op of the batch is reported EUNAVAILABLE and the cache
 * is dropped, since it may hold what was rolled back.
 */
static void sq__run_batch(void *be, nt_append *batch)
{
    sq_store *b = be;
    sq_conn *w = &b->writer;
    b->batch_broken = false;
    if (sq__exec(w, SQ_BEGIN_IMMEDIATE) != 0) goto lost;
    for (nt_append *op = batch; op; op = op->next) {
        sq_job *job = sq__generic_job(op);
        if (job) {
            /* It must see the counters of the appends before it. */
            if (sq__cache_flush(b, w) != 0 || sq__exec(w, SQ_SAVEPOINT) != 0) goto lost;
            job->base.status = job->fn(w, job->arg);
            /* EREUSED is the one failure that writes: it revokes a session. */
            if (job->base.status != 0 && job->base.status != NT_STORE_EREUSED &&
                sq__exec(w, SQ_ROLLBACK_TO) != 0)
                goto lost;
            if (sq__exec(w, SQ_RELEASE) != 0) goto lost;
        } else {
            int rc = sq__append_run(b, w, op);
            if (rc) nt_store_append_reset(op);
            op->status = rc;
        }
        if (b->batch_broken || sqlite3_get_autocommit(w->db)) goto lost;
    }
    if (sq__cache_flush(b, w) != 0 || sq__exec(w, SQ_COMMIT) != 0) goto lost;
    return;

lost:
    if (!sqlite3_get_autocommit(w->db)) sq__exec(w, SQ_ROLLBACK);
    sq__cache_clear(b);
    for (nt_append *op = batch; op; op = op->next)
        nt_store_op_lost(op);
}

/* ---- the checkpointer --------------------------------------------------- */

/* The writer connection's WAL hook, run on the writer thread after every
 * commit: notes the WAL's size and wakes the checkpointer when a checkpoint
 * is due. It never checkpoints itself. */
static int sq__wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    sq_store *b = arg;
    pthread_mutex_lock(&b->ckpt_lock);
    int added = pages - b->wal_pages;
    if (pages < b->wal_pages) { /* the WAL started over */
        b->wal_copied = 0;
        added = pages;
    }
    b->wal_pages = pages;
    b->wal_commits++;
    /* A checkpoint is due after about SQ_CKPT_COMMITS commits' worth of
     * frames (see SQ_CKPT_PAGES). */
    b->wal_per_commit += (added - b->wal_per_commit) / 16;
    double due = SQ_CKPT_COMMITS * b->wal_per_commit;
    b->ckpt_due = due < SQ_CKPT_MIN_PAGES ? SQ_CKPT_MIN_PAGES
                  : due > SQ_CKPT_PAGES   ? SQ_CKPT_PAGES
                                          : (int)due;
    if (pages - b->wal_copied >= b->ckpt_due) pthread_cond_signal(&b->ckpt_wake);
    pthread_mutex_unlock(&b->ckpt_lock);
    return SQLITE_OK;
}

/* On the writer thread between batches, after a PASSIVE checkpoint of the
 * checkpointer: copies back what was committed since, so that the next
 * transaction starts the WAL over. A few hundred pages and one fsync of the
 * database, instead of the whole WAL. */
static void sq__wal_catch_up(void *be)
{
    sq_store *b = be;
    pthread_mutex_lock(&b->ckpt_lock);
    bool due = b->wal_handoff;
    b->wal_handoff = false;
    pthread_mutex_unlock(&b->ckpt_lock);
    if (!due) return;
    int log_frames = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(b->writer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &copied);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) sq__fail(&b->writer, rc, "checkpoint");
}

/* One checkpoint on the checkpointer's connection; called and returns with
 * ckpt_lock held. 0, or -1 if it could not run or not copy everything back
 * (busy: a reader or the writer was in the way; the next one catches up).
 * Other failures are logged. */
static int sq__checkpoint(sq_store *b, int mode)
{
    int log_frames = 0, copied = 0;
    pthread_mutex_unlock(&b->ckpt_lock);
    int rc = sqlite3_wal_checkpoint_v2(b->ckpt.db, NULL, mode, &log_frames, &copied);
    pthread_mutex_lock(&b->ckpt_lock);
    if (rc == SQLITE_BUSY) return -1;
    if (rc != SQLITE_OK) {
        sq__fail(&b->ckpt, rc, "checkpoint");
        return -1;
    }
    /* Unless the WAL has started over meanwhile (then it is smaller). */
    b->wal_copied = b->wal_pages >= log_frames ? copied : 0;
    return copied == log_frames ? 0 : -1;
}

static void sq__deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/*
 * The checkpointer thread. A PASSIVE checkpoint whenever commits left
 * ckpt_due or more frames in the WAL that are not copied back yet;
 * right after it a RESTART if the WAL holds SQ_CKPT_HARD_PAGES (the writer
 * waits only for what the PASSIVE one left); a TRUNCATE once the writer has
 * been idle for SQ_CKPT_IDLE_MS after writing something.
 */
static void *sq__ckpt_main(void *arg)
{
    sq_store *b = arg;
    uint64_t seen = 0;                  /* wal_commits at the last checkpoint */
    uint64_t truncated_at = UINT64_MAX; /* wal_commits at the last TRUNCATE */
    pthread_setname_np(pthread_self(), "nt-store-ckpt");
    pthread_mutex_lock(&b->ckpt_lock);
    while (!b->ckpt_stopping) {
        int mode;
        if (b->wal_commits != seen && b->wal_pages - b->wal_copied >= b->ckpt_due) {
            mode = SQLITE_CHECKPOINT_PASSIVE;
        } else {
            uint64_t before = b->wal_commits;
            struct timespec until;
            sq__deadline(&until, SQ_CKPT_IDLE_MS);
            int rc = pthread_cond_timedwait(&b->ckpt_wake, &b->ckpt_lock, &until);
            if (rc != ETIMEDOUT || b->ckpt_stopping || b->wal_commits != before ||
                b->wal_commits == truncated_at)
                continue;
            mode = SQLITE_CHECKPOINT_TRUNCATE;
        }
        seen = b->wal_commits;
        int rc = sq__checkpoint(b, mode);
        if (mode == SQLITE_CHECKPOINT_PASSIVE && b->wal_pages >= SQ_CKPT_HARD_PAGES)
            sq__checkpoint(b, SQLITE_CHECKPOINT_RESTART);
        else if (mode == SQLITE_CHECKPOINT_PASSIVE && rc == 0 &&
                 b->wal_pages >= SQ_CKPT_HANDOFF_PAGES)
            b->wal_handoff = true;
        if (mode == SQLITE_CHECKPOINT_TRUNCATE && rc == 0) {
            truncated_at = seen;
            b->wal_pages = 0;
            b->wal_copied = 0;
        }
    }
    pthread_mutex_unlock(&b->ckpt_lock);
    return NULL;
}

/* Opens the checkpointer's connection and starts its thread; the writer
 * connection's WAL hook is set by the caller. */
static int sq__ckpt_start(sq_store *b, char *err, size_t err_len)
{
    b->ckpt.owner = b;
    if (sq__conn_open(&b->ckpt, b->path, SQLITE_OPEN_READWRITE, err, err_len) != 0)
        return NT_STORE_EUNAVAILABLE;
    /* Short waits: a checkpoint that finds the way blocked is tried again. */
    sqlite3_busy_timeout(b->ckpt.db, SQ_CKPT_BUSY_TIMEOUT_MS);
    /* FULL: the database file is fsynced before the WAL is started over. */
    if (sqlite3_exec(b->ckpt.db,
                     "PRAGMA synchronous = FULL; PRAGMA cache_size = -" SQ_STR(SQ_READER_CACHE_KIB),
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "cannot configure the checkpointer of %s: %s", b->path,
                 sqlite3_errmsg(b->ckpt.db));
        return NT_STORE_EUNAVAILABLE;
    }
    if (pthread_create(&b->ckpt_thread, NULL, sq__ckpt_main, b) != 0) {
        snprintf(err, err_len, "cannot start the checkpointer thread: %s", strerror(errno));
        return NT_STORE_EUNAVAILABLE;
    }
    b->ckpt_started = true;
    return 0;
}

static void sq__ckpt_stop(sq_store *b)
{
    if (b->ckpt_started) {
        pthread_mutex_lock(&b->ckpt_lock);
        b->ckpt_stopping = true;
        pthread_cond_signal(&b->ckpt_wake);
        pthread_mutex_unlock(&b->ckpt_lock);
        pthread_join(b->ckpt_thread, NULL);
        b->ckpt_started = false;
    }
    sq__conn_close(&b->ckpt);
}

/* ---- open, close, migrations ------------------------------------------- */

static int sq__migrate(sq_conn *w, char *err, size_t err_len)
{
    char *msg = NULL;
    if (sqlite3_exec(w->db,
                     "BEGIN IMMEDIATE;"
                     "CREATE TABLE IF NOT EXISTS schema_version ("
                     "  version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                     NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    sqlite3_stmt *st = sq__stmt(w, SQ_SCHEMA_VERSION);
    int64_t version = 0;
    if (!st || sq__int(w, st, &version) != 1) goto fail;
    if (version > SQLITE_MIGRATIONS_COUNT) {
        snprintf(err, err_len, "database schema version %" PRId64 " is newer than this server's %d",
                 version, SQLITE_MIGRATIONS_COUNT);
        goto fail_rollback;
    }
    for (int64_t v = version + 1; v <= SQLITE_MIGRATIONS_COUNT; v++) {
        if (sqlite3_exec(w->db, sqlite_migrations[v - 1], NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, err_len, "migration %" PRId64 " failed: %s", v, msg ? msg : "?");
            goto fail_rollback;
        }
        if (!(st = sq__stmt(w, SQ_SCHEMA_RECORD))) goto fail;
        sqlite3_bind_int64(st, 1, v);
        sqlite3_bind_int64(st, 2, nt_now_ms());
        if (sq__run(w, st) != 0) goto fail;
    }
    if (sq__exec(w, SQ_COMMIT) != 0) goto fail;
    return 0;

fail:
    snprintf(err, err_len, "migrations failed: %s", msg ? msg : sqlite3_errmsg(w->db));
fail_rollback:
    sqlite3_free(msg);
    if (!sqlite3_get_autocommit(w->db)) sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    return NT_STORE_EUNAVAILABLE;
}

static void sq_close(void *be);

static void *sq_open(const char *where, char *err, size_t err_len)
{
    /* "sqlite:PATH" and "sqlite://PATH" both name PATH. */
    if (strncmp(where, "//", 2) == 0) where += 2;
    if (!where[0]) {
        snprintf(err, err_len, "sqlite store URL has no path");
        return NULL;
    }
    sq_store *b = calloc(1, sizeof(*b));
    if (!b || !(b->path = strdup(where))) {
        free(b);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    nt_store_queue_init(&b->q);
    pthread_mutex_init(&b->ckpt_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->ckpt_wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_key_create(&b->reader_key, sq__reader_exit) != 0) {
        snprintf(err, err_len, "no thread key left");
        goto fail;
    }
    b->key_created = true;
    b->writer.owner = b;
    if (!(b->cache = calloc(SQ_CACHE_SLOTS, sizeof(*b->cache)))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (sq__conn_open(&b->writer, b->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err,
                      err_len) != 0)
        goto fail;

    /* WAL: readers never wait for the writer. FULL: a commit is on disk when
     * COMMIT returns, so what we acknowledge survives a power cut. */
    sqlite3_stmt *st = NULL;
    char mode[16] = "";
    if (sqlite3_prepare_v2(b->writer.db, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        sq__col_str(st, 0, mode, sizeof(mode));
    sqlite3_finalize(st);
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, err_len, "cannot switch %s to WAL mode: %s", b->path,
                 sqlite3_errmsg(b->writer.db));
        goto fail;
    }
    /* journal_size_limit: after a checkpoint the WAL file shrinks back to
     * 64 MiB instead of keeping the size of its largest burst.
     * wal_autocheckpoint = 0: the checkpointer thread does it (see the top
     * of the file). A big cache and mmap reads, so appends find the pages
     * of messages and its indexes in memory. */
    if (sqlite3_exec(b->writer.db,
                     "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                     "PRAGMA journal_size_limit = 67108864; PRAGMA wal_autocheckpoint = 0;"
                     "PRAGMA cache_size = -" SQ_STR(
                         SQ_WRITER_CACHE_KIB) ";"
                                              "PRAGMA mmap_size = " SQ_STR(SQ_WRITER_MMAP_BYTES),
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "cannot configure %s: %s", b->path, sqlite3_errmsg(b->writer.db));
        goto fail;
    }
    if (sq__migrate(&b->writer, err, err_len) != 0) goto fail;
    if (sq__ckpt_start(b, err, err_len) != 0) goto fail;
    /* After the pragma, which would replace the hook. */
    sqlite3_wal_hook(b->writer.db, sq__wal_hook, b);

    /* After each batch's acks the writer may copy back the WAL (see top). */
    int rc = nt_store_queue_start(&b->q, b, sq__run_batch, sq__wal_catch_up);
    if (rc != 0) {
        snprintf(err, err_len, "cannot start the writer thread: %s", strerror(rc));
        goto fail;
    }
    return b;

fail:
    sq_close(b);
    return NULL;
}

static void sq_close(void *be)
{
    sq_store *b = be;
    if (!b) return;
    nt_store_queue_stop(&b->q);
    /* After the writer: its last commits may still have woken it. */
    sq__ckpt_stop(b);
    if (b->key_created) {
        /* After the delete no thread exit touches our readers any more. */
        pthread_key_delete(b->reader_key);
    }
    pthread_mutex_lock(&b->q.lock);
    sq_conn *readers = b->readers;
    b->readers = NULL;
    pthread_mutex_unlock(&b->q.lock);
    while (readers) {
        sq_conn *next = readers->next;
        sq__conn_close(readers);
        free(readers);
        readers = next;
    }
    sq__conn_close(&b->writer);
    if (b->cache) {
        sq__cache_clear(b);
        free(b->cache);
    }
    free(b->dirty);
    pthread_cond_destroy(&b->ckpt_wake);
    pthread_mutex_destroy(&b->ckpt_lock);
    nt_store_queue_destroy(&b->q);
    free(b->path);
    free(b);
}

static int sq_ping(void *be)
{
    sq_conn *c = sq__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    /* A read of a real table, not "SELECT 1", so a lost file shows. */
    sqlite3_stmt *st = sq__stmt(c, SQ_SCHEMA_VERSION);
    int64_t version;
    if (!st) return NT_STORE_EUNAVAILABLE;
    return sq__int(c, st, &version) == 1 ? 0 : NT_STORE_EUNAVAILABLE;
}

static void sq_stats(void *be, nt_store_stats_t *out)
{
    sq_store *b = be;
    nt_store_queue_stats(&b->q, out);
}

/* ---- users ------------------------------------------------------------- */

struct user_create_args {
    const nt_user_new *in;
    nt_user *out;
    const char **conflict_field;
};

static int sq__w_user_create(sq_conn *w, void *arg)
{
    struct user_create_args *a = arg;
    const nt_user_new *in = a->in;
    int64_t one;
    int rc;

    sqlite3_stmt *st = sq__stmt(w, SQ_USER_EMAIL_TAKEN);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, in->email, -1, SQLITE_STATIC);
    if ((rc = sq__int(w, st, &one)) != 0) {
        if (rc == 1) *a->conflict_field = "email";
        return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    if (!(st = sq__stmt(w, SQ_USER_NICK_TAKEN))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, in->nickname, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, 0);
    if ((rc = sq__int(w, st, &one)) != 0) {
        if (rc == 1) *a->conflict_field = "nickname";
        return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    if (!(st = sq__stmt(w, SQ_USER_INSERT))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, in->email, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, in->nickname, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, in->password_hash, -1, SQLITE_STATIC);
    sq__bind_str(st, 4, in->gender);
    sq__bind_str(st, 5, in->birth_date);
    sqlite3_bind_int64(st, 6, in->created_at);
    if ((rc = sq__run(w, st)) != 0) return rc;
    return sq__user_load(w, sqlite3_last_insert_rowid(w->db), a->out);
}

static int sq_user_create(void *be, const nt_user_new *in, nt_user *out,
                          const char **conflict_field)
{
    struct user_create_args a = {in, out, conflict_field};
    return sq__write(be, sq__w_user_create, &a);
}

static int sq_user_get(void *be, int64_t id, nt_user *out)
{
    sq_conn *c = sq__reader(be);
    return c ? sq__user_load(c, id, out) : NT_STORE_EUNAVAILABLE;
}

static int sq_user_by_nickname(void *be, const char *nickname, nt_user *out)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_USER_BY_NICK) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, nickname, -1, SQLITE_STATIC);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    sq__row_user(st, out);
    sq__reset(st);
    return 0;
}

static int sq_user_for_login(void *be, const char *login, nt_user *out, char *pw_hash,
                             size_t pw_hash_len)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_USER_LOGIN) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, login, -1, SQLITE_STATIC);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    sq__row_user(st, out);
    sq__col_str(st, 9, pw_hash, pw_hash_len);
    sq__reset(st);
    return 0;
}

struct user_update_args {
    int64_t id;
    const nt_user_patch *patch;
    nt_user *out;
};

static int sq__w_user_update(sq_conn *w, void *arg)
{
    struct user_update_args *a = arg;
    const nt_user_patch *p = a->patch;
    sqlite3_stmt *st;
    int rc;

    if (p->nickname) {
        int64_t one;
        if (!(st = sq__stmt(w, SQ_USER_NICK_TAKEN))) return NT_STORE_EUNAVAILABLE;
        sqlite3_bind_text(st, 1, p->nickname, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, a->id);
        if ((rc = sq__int(w, st, &one)) != 0) return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    if (!(st = sq__stmt(w, SQ_USER_UPDATE))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->id);
    sq__bind_str(st, 2, p->nickname);
    sq__bind_str(st, 3, p->bio);
    sq__bind_str(st, 4, p->avatar_url);
    sq__bind_str(st, 5, p->gender);
    sq__bind_str(st, 6, p->birth_date);
    if ((rc = sq__run(w, st)) != 0) return rc;
    if (sqlite3_changes(w->db) == 0) return NT_STORE_ENOTFOUND;
    return a->out ? sq__user_load(w, a->id, a->out) : 0;
}

static int sq_user_update(void *be, int64_t id, const nt_user_patch *patch, nt_user *out)
{
    struct user_update_args a = {id, patch, out};
    return sq__write(be, sq__w_user_update, &a);
}

static int sq_user_search(void *be, const char *prefix, int64_t after_id, int limit, nt_user *out,
                          int *n)
{
    char *pattern = nt_store_like_prefix(prefix);
    if (!pattern) return NT_STORE_EUNAVAILABLE;
    int ret = 0, rc = SQLITE_DONE;
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_USER_SEARCH) : NULL;
    if (!st) {
        free(pattern);
        return NT_STORE_EUNAVAILABLE;
    }
    sqlite3_bind_text(st, 1, pattern, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after_id);
    sqlite3_bind_int(st, 3, limit);
    while (*n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
        sq__row_user(st, &out[(*n)++]);
    if (*n < limit && rc != SQLITE_DONE) {
        ret = sq__fail(c, rc, "user search");
        *n = 0;
    }
    sq__reset(st);
    free(pattern);
    return ret;
}

struct id_ts_args {
    int64_t id;
    int64_t ts;
};

static int sq__w_user_last_seen(sq_conn *w, void *arg)
{
    struct id_ts_args *a = arg;
    sqlite3_stmt *st = sq__stmt(w, SQ_USER_LAST_SEEN);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->id);
    sqlite3_bind_int64(st, 2, a->ts);
    return sq__run_found(w, st);
}

static int sq_user_set_last_seen(void *be, int64_t id, int64_t ts)
{
    struct id_ts_args a = {id, ts};
    return sq__write(be, sq__w_user_last_seen, &a);
}

/* ---- sessions ---------------------------------------------------------- */

struct session_args {
    int64_t user_id;
    const uint8_t *hash;     /* create: the first token; rotate: the old one */
    const uint8_t *new_hash; /* rotate */
    int64_t expires_at;
    int64_t now;
    nt_session *out;
};

static int sq__token_insert(sq_conn *w, const uint8_t *hash, int64_t session_id, int64_t expires_at)
{
    sqlite3_stmt *st = sq__stmt(w, SQ_TOKEN_INSERT);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, session_id);
    sqlite3_bind_int64(st, 3, expires_at);
    return sq__run(w, st);
}

static int sq__w_session_create(sq_conn *w, void *arg)
{
    struct session_args *a = arg;
    int rc = sq__exists(w, SQ_USER_EXISTS, a->user_id);
    if (rc) return rc;
    sqlite3_stmt *st = sq__stmt(w, SQ_SESSION_INSERT);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->user_id);
    sqlite3_bind_int64(st, 2, a->now);
    if ((rc = sq__run(w, st)) != 0) return rc;
    int64_t session_id = sqlite3_last_insert_rowid(w->db);
    if ((rc = sq__token_insert(w, a->hash, session_id, a->expires_at)) != 0) return rc;
    if (a->out) {
        a->out->id = session_id;
        a->out->user_id = a->user_id;
    }
    return 0;
}

static int sq_session_create(void *be, int64_t user_id, const uint8_t refresh_hash[32],
                             int64_t expires_at, int64_t now, nt_session *out)
{
    struct session_args a = {user_id, refresh_hash, NULL, expires_at, now, out};
    return sq__write(be, sq__w_session_create, &a);
}

/* Looks a refresh token up: 1 found, 0 unknown, <0 error. */
static int sq__token_get(sq_conn *w, const uint8_t *hash, nt_session *session, int64_t *expires_at,
                         bool *used, bool *revoked)
{
    sqlite3_stmt *st = sq__stmt(w, SQ_TOKEN_GET);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int rc = sq__row(w, st);
    if (rc <= 0) return rc;
    session->id = sqlite3_column_int64(st, 0);
    session->user_id = sqlite3_column_int64(st, 1);
    *expires_at = sqlite3_column_int64(st, 2);
    *used = sqlite3_column_int(st, 3) != 0;
    *revoked = sqlite3_column_int(st, 4) != 0;
    sq__reset(st);
    return 1;
}

static int sq__session_revoke(sq_conn *w, int64_t session_id)
{
    sqlite3_stmt *st = sq__stmt(w, SQ_SESSION_REVOKE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, session_id);
    return sq__run(w, st);
}

static int sq__w_session_rotate(sq_conn *w, void *arg)
{
    struct session_args *a = arg;
    nt_session session;
    int64_t expires_at;
    bool used, revoked;
    int rc = sq__token_get(w, a->hash, &session, &expires_at, &used, &revoked);
    if (rc <= 0) return rc == 0 ? NT_STORE_ENOTFOUND : rc;
    if (revoked) return NT_STORE_ENOTFOUND;
    if (a->out) *a->out = session;
    if (used) {
        /* A stolen token was replayed (or the client raced itself): end the
         * whole session so neither copy keeps working. */
        rc = sq__session_revoke(w, session.id);
        return rc ? rc : NT_STORE_EREUSED;
    }
    if (expires_at <= a->now) return NT_STORE_ENOTFOUND;
    sqlite3_stmt *st = sq__stmt(w, SQ_TOKEN_USE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_blob(st, 1, a->hash, 32, SQLITE_STATIC);
    if ((rc = sq__run(w, st)) != 0) return rc;
    /* Used tokens are kept to detect replays, but only until they expire:
     * after that a replay is refused as unknown anyway. */
    if (!(st = sq__stmt(w, SQ_TOKEN_PRUNE))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, session.id);
    sqlite3_bind_int64(st, 2, a->now);
    if ((rc = sq__run(w, st)) != 0) return rc;
    return sq__token_insert(w, a->new_hash, session.id, a->expires_at);
}

static int sq_session_rotate(void *be, const uint8_t old_hash[32], const uint8_t new_hash[32],
                             int64_t new_expires_at, int64_t now, nt_session *out)
{
    struct session_args a = {0, old_hash, new_hash, new_expires_at, now, out};
    return sq__write(be, sq__w_session_rotate, &a);
}

static int sq__w_session_revoke(sq_conn *w, void *arg)
{
    struct session_args *a = arg;
    nt_session session;
    int64_t expires_at;
    bool used, revoked;
    int rc = sq__token_get(w, a->hash, &session, &expires_at, &used, &revoked);
    if (rc <= 0) return rc == 0 ? NT_STORE_ENOTFOUND : rc;
    if (a->out) *a->out = session;
    return revoked ? 0 : sq__session_revoke(w, session.id);
}

static int sq_session_revoke(void *be, const uint8_t refresh_hash[32], nt_session *out)
{
    struct session_args a = {0, refresh_hash, NULL, 0, 0, out};
    return sq__write(be, sq__w_session_revoke, &a);
}

static int sq_session_active(void *be, int64_t session_id)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_SESSION_ACTIVE) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, session_id);
    int64_t revoked = 1;
    int rc = sq__int(c, st, &revoked);
    if (rc < 0) return rc;
    return rc == 1 && !revoked ? 0 : NT_STORE_ENOTFOUND;
}

/* ---- chats and members ------------------------------------------------- */

/* Inserts a chat row; *chat_id gets its id. direct_key may be NULL. */
static int sq__chat_insert(sq_conn *w, const char *type, const char *title, int64_t now,
                           const char *direct_key, int64_t *chat_id)
{
    sqlite3_stmt *st = sq__stmt(w, SQ_CHAT_INSERT);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sq__bind_str(st, 4, direct_key);
    int rc = sq__run(w, st);
    if (rc) return rc;
    *chat_id = sqlite3_last_insert_rowid(w->db);
    return 0;
}

static int sq__member_insert(sq_conn *w, enum sq_stmt_id id, int64_t chat_id, int64_t user_id,
                             int role, int64_t now)
{
    sqlite3_stmt *st = sq__stmt(w, id);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int(st, 3, role);
    sqlite3_bind_int64(st, 4, now);
    return sq__run(w, st);
}

struct chat_args {
    int64_t a, b; /* direct: the pair; create: a = owner */
    const char *type;
    const char *title;
    const int64_t *member_ids;
    int n;
    int64_t now;
    nt_chat *out;
    bool *created;
};

static int sq__w_chat_direct(sq_conn *w, void *arg)
{
    struct chat_args *a = arg;
    char key[NT_STORE_DIRECT_KEY_MAX];
    nt_store_direct_key(a->a, a->b, key);
    int64_t chat_id = 0;
    sqlite3_stmt *st = sq__stmt(w, SQ_CHAT_BY_DIRECT_KEY);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sq__int(w, st, &chat_id);
    if (rc < 0) return rc;
    if (rc == 0) {
        if ((rc = sq__exists(w, SQ_USER_EXISTS, a->a)) != 0 ||
            (rc = sq__exists(w, SQ_USER_EXISTS, a->b)) != 0 ||
            (rc = sq__chat_insert(w, "direct", "", a->now, key, &chat_id)) != 0 ||
            (rc = sq__member_insert(w, SQ_MEMBER_INSERT, chat_id, a->a, NT_ROLE_MEMBER, a->now)) !=
                0 ||
            (rc = sq__member_insert(w, SQ_MEMBER_INSERT, chat_id, a->b, NT_ROLE_MEMBER, a->now)) !=
                0)
            return rc;
        *a->created = true;
    }
    return sq__chat_load(w, chat_id, a->a, a->out);
}

static int sq_chat_direct(void *be, int64_t a, int64_t b, int64_t now, nt_chat *out, bool *created)
{
    struct chat_args args = {.a = a, .b = b, .now = now, .out = out, .created = created};
    return sq__write(be, sq__w_chat_direct, &args);
}

static int sq__w_chat_create(sq_conn *w, void *arg)
{
    struct chat_args *a = arg;
    int rc;
    if (a->a > 0 && (rc = sq__exists(w, SQ_USER_EXISTS, a->a)) != 0) return rc;
    for (int i = 0; i < a->n; i++)
        if ((rc = sq__exists(w, SQ_USER_EXISTS, a->member_ids[i])) != 0) return rc;
    int64_t chat_id;
    if ((rc = sq__chat_insert(w, a->type, a->title, a->now, NULL, &chat_id)) != 0) return rc;
    if (a->a > 0 &&
        (rc = sq__member_insert(w, SQ_MEMBER_INSERT, chat_id, a->a, NT_ROLE_OWNER, a->now)) != 0)
        return rc;
    for (int i = 0; i < a->n; i++)
        if ((rc = sq__member_insert(w, SQ_MEMBER_INSERT_IGNORE, chat_id, a->member_ids[i],
                                    NT_ROLE_MEMBER, a->now)) != 0)
            return rc;
    return sq__chat_load(w, chat_id, a->a, a->out);
}

static int sq_chat_create(void *be, const char *type, const char *title, int64_t owner_id,
                          const int64_t *member_ids, int n, int64_t now, nt_chat *out)
{
    struct chat_args args = {.a = owner_id,
                             .type = type,
                             .title = title,
                             .member_ids = member_ids,
                             .n = n,
                             .now = now,
                             .out = out};
    return sq__write(be, sq__w_chat_create, &args);
}

static int sq_chat_get(void *be, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    sq_conn *c = sq__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    int rc = sq__read_begin(c);
    if (rc) return rc;
    rc = sq__chat_load(c, chat_id, viewer_id, out);
    sq__read_end(c);
    return rc;
}

/* sq__chat_load for nt_store_chats_load. */
static int sq__chat_load_any(void *c, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    return sq__chat_load(c, chat_id, viewer_id, out);
}

static int sq_chat_list(void *be, int64_t user_id, int limit, nt_chat **out, int *n)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_CHAT_LIST) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    int rc = sq__read_begin(c);
    if (rc) return rc;
    int64_t *ids = NULL;
    int nids = 0;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int(st, 2, limit);
    if ((rc = sq__int_list(c, st, &ids, &nids)) == 0)
        rc = nt_store_chats_load(c, sq__chat_load_any, ids, nids, user_id, out, n);
    sq__read_end(c);
    free(ids);
    return rc;
}

static int sq_channel_by_title(void *be, const char *title, int64_t *chat_id)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_CHANNEL_BY_TITLE) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_text(st, 1, title, -1, SQLITE_STATIC);
    int rc = sq__int(c, st, chat_id);
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

static int sq_member_role(void *be, int64_t chat_id, int64_t user_id, int *role)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_MEMBER_ROLE) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    int64_t v = 0;
    int rc = sq__int(c, st, &v);
    if (rc == 1 && role) *role = (int)v;
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

struct member_args {
    int64_t chat_id;
    int64_t user_id;
    int role;
};

static int sq__w_member_add(sq_conn *w, void *arg)
{
    struct member_args *a = arg;
    int rc;
    if ((rc = sq__exists(w, SQ_CHAT_EXISTS, a->chat_id)) != 0 ||
        (rc = sq__exists(w, SQ_USER_EXISTS, a->user_id)) != 0)
        return rc;
    sq__cache_forget(w, a->chat_id);
    /* The primary key (chat_id, user_id) turns a second add into ECONFLICT. */
    return sq__member_insert(w, SQ_MEMBER_INSERT, a->chat_id, a->user_id, a->role, nt_now_ms());
}

static int sq_member_add(void *be, int64_t chat_id, int64_t user_id, int role)
{
    struct member_args a = {chat_id, user_id, role};
    return sq__write(be, sq__w_member_add, &a);
}

static int sq__w_member_remove(sq_conn *w, void *arg)
{
    struct member_args *a = arg;
    sq__cache_forget(w, a->chat_id);
    sqlite3_stmt *st = sq__stmt(w, SQ_MEMBER_DELETE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    sqlite3_bind_int64(st, 2, a->user_id);
    return sq__run_found(w, st);
}

static int sq_member_remove(void *be, int64_t chat_id, int64_t user_id)
{
    struct member_args a = {chat_id, user_id, 0};
    return sq__write(be, sq__w_member_remove, &a);
}

static int sq_chat_member_ids(void *be, int64_t chat_id, int64_t **ids, int *n)
{
    sq_conn *c = sq__reader(be);
    return c ? sq__member_ids(c, chat_id, ids, n) : NT_STORE_EUNAVAILABLE;
}

static int sq_user_partners(void *be, int64_t user_id, int64_t **ids, int *n)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_PARTNERS) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, user_id);
    return sq__int_list(c, st, ids, n);
}

static int sq__w_chat_close(sq_conn *w, void *arg)
{
    int64_t *chat_id = arg;
    sq__cache_forget(w, *chat_id);
    sqlite3_stmt *st = sq__stmt(w, SQ_CHAT_CLOSE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, *chat_id);
    return sq__run_found(w, st);
}

static int sq_chat_close(void *be, int64_t chat_id)
{
    return sq__write(be, sq__w_chat_close, &chat_id);
}

/* ---- messages ---------------------------------------------------------- */

static void sq_append(void *be, nt_append *op)
{
    nt_store_queue_append(&((sq_store *)be)->q, op);
}

static int sq_append_wait(void *be, nt_append *op)
{
    return nt_store_queue_append_wait(&((sq_store *)be)->q, op);
}

/* Reads the rows of a bound message query into a heap array (in row order),
 * then resets it. */
static int sq__message_rows(sq_conn *c, sqlite3_stmt *st, nt_message **out, int *n)
{
    nt_message *arr = NULL;
    int count = 0, cap = 0, rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        nt_message *room = sq__room(arr, &cap, count, sizeof(*arr), 16);
        if (!room) {
            ret = NT_STORE_EUNAVAILABLE;
            break;
        }
        arr = room;
        if ((ret = sq__row_message(st, &arr[count])) != 0) break;
        count++;
    }
    if (!ret && rc != SQLITE_DONE) ret = sq__fail(c, rc, sqlite3_sql(st));
    sq__reset(st);
    if (ret) {
        nt_messages_free(arr, count);
        return ret;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* History: the oldest `limit` with after < seq < before (nt_store_after_fn). */
static int sq__messages_after(void *conn, int64_t chat_id, int64_t after, int64_t before, int limit,
                              nt_message **out, int *n)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = sq__stmt(c, SQ_MSG_AFTER);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, before);
    sqlite3_bind_int(st, 4, limit);
    return sq__message_rows(c, st, out, n);
}

/* History: the newest `limit` with seq < before (nt_store_newest_fn). */
static int sq__messages_newest(void *conn, int64_t chat_id, int64_t before, int limit,
                               nt_message **out, int *n)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = sq__stmt(c, SQ_MSG_BEFORE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, before);
    sqlite3_bind_int(st, 3, limit);
    return sq__message_rows(c, st, out, n);
}

static int sq_messages(void *be, int64_t chat_id, int64_t before_seq, int64_t after_seq, int limit,
                       nt_message **out, int *n)
{
    sq_conn *c = sq__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    return nt_store_messages_read(c, sq__messages_after, sq__messages_newest, chat_id, before_seq,
                                  after_seq, limit, out, n);
}

struct message_change_args {
    int64_t chat_id;
    int64_t seq;
    int64_t sender_id;
    const char *text; /* NULL: delete */
    int64_t now;
    nt_message *out;
};

static int sq__w_message_change(sq_conn *w, void *arg)
{
    struct message_change_args *a = arg;
    nt_message cur;
    int rc = sq__message_load(w, a->chat_id, a->seq, &cur);
    if (rc) return rc;
    bool allowed = cur.sender_id == a->sender_id && !cur.deleted;
    nt_message_free(&cur);
    if (!allowed) return NT_STORE_EFORBIDDEN;
    sqlite3_stmt *st = sq__stmt(w, a->text ? SQ_MSG_EDIT : SQ_MSG_DELETE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    sqlite3_bind_int64(st, 2, a->seq);
    if (a->text) {
        sqlite3_bind_text(st, 3, a->text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, a->now);
    }
    if ((rc = sq__run(w, st)) != 0) return rc;
    return sq__message_load(w, a->chat_id, a->seq, a->out);
}

static int sq_message_edit(void *be, int64_t chat_id, int64_t seq, int64_t sender_id,
                           const char *text, int64_t now, nt_message *out)
{
    struct message_change_args a = {chat_id, seq, sender_id, text, now, out};
    return sq__write(be, sq__w_message_change, &a);
}

static int sq_message_delete(void *be, int64_t chat_id, int64_t seq, int64_t sender_id, int64_t now,
                             nt_message *out)
{
    struct message_change_args a = {chat_id, seq, sender_id, NULL, now, out};
    return sq__write(be, sq__w_message_change, &a);
}

static int sq_export(void *be, int64_t chat_id, int (*fn)(void *arg, const nt_message *m),
                     void *arg)
{
    sq_conn *c = sq__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    int rc = sq__exists(c, SQ_CHAT_EXISTS, chat_id);
    if (rc) return rc;
    /* No statement stays open while fn runs: a slow consumer must not pin a
     * read snapshot (and the WAL) for long. */
    return nt_store_export_pages(c, sq__messages_after, chat_id, SQ_EXPORT_PAGE, fn, arg);
}

struct mark_args {
    int64_t chat_id;
    int64_t user_id;
    int kind;
    int64_t seq;
    int64_t *delivered_seq;
    int64_t *read_seq;
    bool *moved;
};

static int sq__w_mark(sq_conn *w, void *arg)
{
    struct mark_args *a = arg;
    sqlite3_stmt *st = sq__stmt(w, SQ_MARK_GET);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    sqlite3_bind_int64(st, 2, a->user_id);
    int rc = sq__row_found(w, st);
    if (rc) return rc;
    int64_t delivered = sqlite3_column_int64(st, 0);
    int64_t read = sqlite3_column_int64(st, 1);
    int64_t last_seq = sqlite3_column_int64(st, 2);
    sq__reset(st);

    *a->moved = nt_store_mark_advance(a->kind, a->seq, last_seq, delivered, read, a->delivered_seq,
                                      a->read_seq);
    if (!*a->moved) return 0;
    if (!(st = sq__stmt(w, SQ_MARK_SET))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    sqlite3_bind_int64(st, 2, a->user_id);
    sqlite3_bind_int64(st, 3, *a->delivered_seq);
    sqlite3_bind_int64(st, 4, *a->read_seq);
    return sq__run(w, st);
}

static int sq_mark(void *be, int64_t chat_id, int64_t user_id, int kind, int64_t seq,
                   int64_t *delivered_seq, int64_t *read_seq, bool *moved)
{
    struct mark_args a = {chat_id, user_id, kind, seq, delivered_seq, read_seq, moved};
    return sq__write(be, sq__w_mark, &a);
}

/* ---- friends and blocks ---------------------------------------------------- */

/* Runs a bound statement with two ids (?1, ?2) and optionally a time (?3). */
static int sq__run_pair(sq_conn *w, enum sq_stmt_id id, int64_t a, int64_t b, int64_t now)
{
    sqlite3_stmt *st = sq__stmt(w, id);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    if (sqlite3_bind_parameter_count(st) >= 3) sqlite3_bind_int64(st, 3, now);
    return sq__run(w, st);
}

/* 1 if the two-id query finds a row, 0 if not, <0 on error. */
static int sq__pair_exists(sq_conn *w, enum sq_stmt_id id, int64_t a, int64_t b)
{
    sqlite3_stmt *st = sq__stmt(w, id);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    int64_t v;
    return sq__int(w, st, &v);
}

struct friend_args {
    int64_t a, b; /* request: from, to; accept/reject: user, from; block: blocker, blocked */
    int64_t now;
    int *outcome;
};

static int sq__w_friend_request(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc;
    if ((rc = sq__exists(w, SQ_USER_EXISTS, a->a)) != 0 ||
        (rc = sq__exists(w, SQ_USER_EXISTS, a->b)) != 0)
        return rc;
    sqlite3_stmt *st = sq__stmt(w, SQ_BLOCK_PAIR);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->a);
    sqlite3_bind_int64(st, 2, a->b);
    int64_t blocker = 0;
    if ((rc = sq__int(w, st, &blocker)) < 0) return rc;
    if (rc == 1) {
        *a->outcome = blocker == a->a ? NT_FRIEND_BLOCKED_BY_ME : NT_FRIEND_BLOCKED_BY_THEM;
        return NT_STORE_EFORBIDDEN;
    }
    if ((rc = sq__pair_exists(w, SQ_FRIEND_EXISTS, a->a, a->b)) != 0) {
        if (rc == 1) *a->outcome = NT_FRIEND_ALREADY;
        return rc < 0 ? rc : 0;
    }
    if ((rc = sq__pair_exists(w, SQ_REQ_EXISTS, a->b, a->a)) < 0) return rc;
    if (rc == 1) {
        /* They had asked first: this request is an acceptance. */
        if ((rc = sq__run_pair(w, SQ_REQ_DELETE_PAIR, a->a, a->b, 0)) != 0 ||
            (rc = sq__run_pair(w, SQ_FRIEND_INSERT, a->a, a->b, a->now)) != 0)
            return rc;
        *a->outcome = NT_FRIEND_MADE;
        return 0;
    }
    if ((rc = sq__run_pair(w, SQ_REQ_INSERT, a->a, a->b, a->now)) != 0) return rc;
    *a->outcome = sqlite3_changes(w->db) ? NT_FRIEND_REQUESTED : NT_FRIEND_PENDING;
    return 0;
}

static int sq_friend_request(void *be, int64_t from_id, int64_t to_id, int64_t now, int *outcome)
{
    struct friend_args a = {from_id, to_id, now, outcome};
    return sq__write(be, sq__w_friend_request, &a);
}

static int sq__w_friend_accept(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc = sq__run_pair(w, SQ_REQ_DELETE, a->b, a->a, 0);
    if (rc) return rc;
    if (sqlite3_changes(w->db) == 0) return NT_STORE_ENOTFOUND;
    /* A request the other way, if any, is answered too. */
    if ((rc = sq__run_pair(w, SQ_REQ_DELETE, a->a, a->b, 0)) != 0) return rc;
    return sq__run_pair(w, SQ_FRIEND_INSERT, a->a, a->b, a->now);
}

static int sq_friend_accept(void *be, int64_t user_id, int64_t from_id, int64_t now)
{
    struct friend_args a = {user_id, from_id, now, NULL};
    return sq__write(be, sq__w_friend_accept, &a);
}

static int sq__w_friend_reject(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc = sq__run_pair(w, SQ_REQ_DELETE, a->b, a->a, 0);
    if (rc) return rc;
    return sqlite3_changes(w->db) ? 0 : NT_STORE_ENOTFOUND;
}

static int sq_friend_reject(void *be, int64_t user_id, int64_t from_id)
{
    struct friend_args a = {user_id, from_id, 0, NULL};
    return sq__write(be, sq__w_friend_reject, &a);
}

static int sq__w_friend_remove(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc = sq__run_pair(w, SQ_FRIEND_DELETE, a->a, a->b, 0);
    if (rc) return rc;
    int changed = sqlite3_changes(w->db);
    if ((rc = sq__run_pair(w, SQ_REQ_DELETE, a->a, a->b, 0)) != 0) return rc;
    changed += sqlite3_changes(w->db);
    return changed ? 0 : NT_STORE_ENOTFOUND;
}

static int sq_friend_remove(void *be, int64_t user_id, int64_t other_id)
{
    struct friend_args a = {user_id, other_id, 0, NULL};
    return sq__write(be, sq__w_friend_remove, &a);
}

static int sq_friend_list(void *be, int64_t user_id, int kind, int limit, nt_user **out, int *n)
{
    static const enum sq_stmt_id ids[] = {
        [NT_LIST_FRIENDS] = SQ_LIST_FRIENDS,
        [NT_LIST_INCOMING] = SQ_LIST_INCOMING,
        [NT_LIST_OUTGOING] = SQ_LIST_OUTGOING,
        [NT_LIST_BLOCKED] = SQ_LIST_BLOCKED,
    };
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, ids[kind]) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    nt_user *arr = NULL;
    int count = 0, cap = 0, rc, ret = 0;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int(st, 2, limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        nt_user *room = sq__room(arr, &cap, count, sizeof(*arr), 8);
        if (!room) {
            ret = NT_STORE_EUNAVAILABLE;
            break;
        }
        arr = room;
        sq__row_user(st, &arr[count++]);
    }
    if (!ret && rc != SQLITE_DONE) ret = sq__fail(c, rc, "friend list");
    sq__reset(st);
    if (ret) {
        free(arr);
        return ret;
    }
    *out = arr;
    *n = count;
    return 0;
}

static int sq__w_block(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc;
    if ((rc = sq__exists(w, SQ_USER_EXISTS, a->a)) != 0 ||
        (rc = sq__exists(w, SQ_USER_EXISTS, a->b)) != 0 ||
        (rc = sq__run_pair(w, SQ_BLOCK_INSERT, a->a, a->b, a->now)) != 0 ||
        (rc = sq__run_pair(w, SQ_FRIEND_DELETE, a->a, a->b, 0)) != 0 ||
        (rc = sq__run_pair(w, SQ_REQ_DELETE_PAIR, a->a, a->b, 0)) != 0)
        return rc;
    w->owner->block_epoch++;
    return 0;
}

static int sq_block(void *be, int64_t blocker_id, int64_t blocked_id, int64_t now)
{
    struct friend_args a = {blocker_id, blocked_id, now, NULL};
    return sq__write(be, sq__w_block, &a);
}

static int sq__w_unblock(sq_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc = sq__run_pair(w, SQ_BLOCK_DELETE, a->a, a->b, 0);
    if (rc) return rc;
    w->owner->block_epoch++;
    return 0;
}

static int sq_unblock(void *be, int64_t blocker_id, int64_t blocked_id)
{
    struct friend_args a = {blocker_id, blocked_id, 0, NULL};
    return sq__write(be, sq__w_unblock, &a);
}

static int sq_block_peers(void *be, int64_t user_id, int64_t **ids, int *n)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_BLOCK_PEERS) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, user_id);
    return sq__int_list(c, st, ids, n);
}

/* ---- matching and random chats ---------------------------------------------- */

static int sq_match_prefs_get(void *be, int64_t user_id, nt_match_prefs *out)
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_PREFS_GET) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, user_id);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    out->genders = (unsigned)sqlite3_column_int(st, 0);
    out->age_min = sqlite3_column_int(st, 1);
    out->age_max = sqlite3_column_int(st, 2);
    nt_store_tags_split((const char *)sqlite3_column_text(st, 3), out);
    sq__reset(st);
    return 0;
}

struct prefs_args {
    int64_t user_id;
    const nt_match_prefs *in;
    const char *tags;
    int64_t now;
};

static int sq__w_match_prefs_set(sq_conn *w, void *arg)
{
    struct prefs_args *a = arg;
    int rc = sq__exists(w, SQ_USER_EXISTS, a->user_id);
    if (rc) return rc;
    sqlite3_stmt *st = sq__stmt(w, SQ_PREFS_SET);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->user_id);
    sqlite3_bind_int(st, 2, (int)a->in->genders);
    sqlite3_bind_int(st, 3, a->in->age_min);
    sqlite3_bind_int(st, 4, a->in->age_max);
    sqlite3_bind_text(st, 5, a->tags, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, a->now);
    return sq__run(w, st);
}

static int sq_match_prefs_set(void *be, int64_t user_id, const nt_match_prefs *in, int64_t now)
{
    char tags[NT_STORE_TAGS_MAX];
    nt_store_tags_join(in, tags);
    struct prefs_args a = {user_id, in, tags, now};
    return sq__write(be, sq__w_match_prefs_set, &a);
}

struct random_args {
    int64_t a, b;
    const char *alias_a, *alias_b;
    int64_t now;
    nt_chat *out;
};

static int sq__random_member(sq_conn *w, int64_t chat_id, int64_t user_id, const char *alias,
                             int64_t now)
{
    int rc = sq__member_insert(w, SQ_MEMBER_INSERT, chat_id, user_id, NT_ROLE_MEMBER, now);
    if (rc) return rc;
    sqlite3_stmt *st = sq__stmt(w, SQ_RANDOM_INSERT);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_text(st, 3, alias, -1, SQLITE_STATIC);
    return sq__run(w, st);
}

static int sq__w_chat_random(sq_conn *w, void *arg)
{
    struct random_args *a = arg;
    int64_t chat_id;
    int rc;
    if ((rc = sq__exists(w, SQ_USER_EXISTS, a->a)) != 0 ||
        (rc = sq__exists(w, SQ_USER_EXISTS, a->b)) != 0 ||
        (rc = sq__chat_insert(w, "random", "", a->now, NULL, &chat_id)) != 0 ||
        (rc = sq__random_member(w, chat_id, a->a, a->alias_a, a->now)) != 0 ||
        (rc = sq__random_member(w, chat_id, a->b, a->alias_b, a->now)) != 0)
        return rc;
    return sq__chat_load(w, chat_id, a->a, a->out);
}

static int sq_chat_random(void *be, int64_t a, int64_t b, const char *alias_a, const char *alias_b,
                          int64_t now, nt_chat *out)
{
    struct random_args args = {a, b, alias_a, alias_b, now, out};
    return sq__write(be, sq__w_chat_random, &args);
}

/* nt_store_chat_random_async: the chat is made in the writer's batch like
 * sq_chat_random's, and the job tells the request after the commit. */
typedef struct sq_random_job {
    sq_job job; /* first: the queue hands back &job.base */
    struct random_args args;
    nt_store_random_req req;
} sq_random_job;

static void sq__random_told(nt_store_job *base)
{
    sq_random_job *j = (sq_random_job *)base;
    nt_store_random_req_tell(&j->req, base->status);
    free(j);
}

static int sq_chat_random_async(void *be, int64_t a, int64_t b, const char *alias_a,
                                const char *alias_b, int64_t now, nt_store_chat_done done,
                                void *arg)
{
    sq_random_job *j = calloc(1, sizeof *j);
    if (!j) return NT_STORE_EUNAVAILABLE;
    nt_store_random_req_init(&j->req, a, b, alias_a, alias_b, now, done, arg);
    j->args = (struct random_args){a, b, j->req.alias_a, j->req.alias_b, now, &j->req.out};
    j->job.base.generic = true;
    j->job.base.done = sq__random_told;
    j->job.fn = sq__w_chat_random;
    j->job.arg = &j->args;
    int rc = nt_store_queue_submit(&((sq_store *)be)->q, &j->job.base);
    if (rc != 0) free(j);
    return rc;
}

struct reveal_args {
    int64_t chat_id, user_id;
    bool *shown_now;
};

static int sq__w_chat_reveal(sq_conn *w, void *arg)
{
    struct reveal_args *a = arg;
    sqlite3_stmt *st = sq__stmt(w, SQ_RANDOM_STATE);
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    sqlite3_bind_int64(st, 2, a->user_id);
    int rc = sq__row_found(w, st);
    if (rc) return rc;
    bool hidden = sqlite3_column_int(st, 1) != 0;
    sq__reset(st);
    if (!hidden) return 0; /* both agreed long ago */
    if ((rc = sq__run_pair(w, SQ_RANDOM_REVEAL, a->chat_id, a->user_id, 0)) != 0) return rc;
    if (!(st = sq__stmt(w, SQ_RANDOM_PENDING))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    int64_t pending = 1;
    if ((rc = sq__int(w, st, &pending)) < 0) return rc;
    if (pending > 0) return 0;
    if (!(st = sq__stmt(w, SQ_RANDOM_SHOW))) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, a->chat_id);
    if ((rc = sq__run(w, st)) != 0) return rc;
    /* The appends of this chat must stop stamping aliases. */
    sq__cache_forget(w, a->chat_id);
    *a->shown_now = true;
    return 0;
}

static int sq_chat_reveal(void *be, int64_t chat_id, int64_t user_id, bool *shown_now)
{
    struct reveal_args a = {chat_id, user_id, shown_now};
    return sq__write(be, sq__w_chat_reveal, &a);
}

static int sq_random_alias(void *be, int64_t chat_id, int64_t user_id, char alias[NT_ALIAS_MAX])
{
    sq_conn *c = sq__reader(be);
    sqlite3_stmt *st = c ? sq__stmt(c, SQ_RANDOM_ALIAS) : NULL;
    if (!st) return NT_STORE_EUNAVAILABLE;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    int rc = sq__row_found(c, st);
    if (rc) return rc;
    sq__col_str(st, 0, alias, NT_ALIAS_MAX);
    sq__reset(st);
    return 0;
}

const nt_store_ops nt_store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .stats = sq_stats,
    .user_create = sq_user_create,
    .user_get = sq_user_get,
    .user_by_nickname = sq_user_by_nickname,
    .user_for_login = sq_user_for_login,
    .user_update = sq_user_update,
    .user_search = sq_user_search,
    .user_set_last_seen = sq_user_set_last_seen,
    .session_create = sq_session_create,
    .session_rotate = sq_session_rotate,
    .session_revoke = sq_session_revoke,
    .session_active = sq_session_active,
    .chat_direct = sq_chat_direct,
    .chat_create = sq_chat_create,
    .chat_get = sq_chat_get,
    .chat_list = sq_chat_list,
    .channel_by_title = sq_channel_by_title,
    .member_role = sq_member_role,
    .member_add = sq_member_add,
    .member_remove = sq_member_remove,
    .chat_member_ids = sq_chat_member_ids,
    .user_partners = sq_user_partners,
    .chat_close = sq_chat_close,
    .append = sq_append,
    .append_wait = sq_append_wait,
    .messages = sq_messages,
    .message_edit = sq_message_edit,
    .message_delete = sq_message_delete,
    .export_chat = sq_export,
    .mark = sq_mark,
    .friend_request = sq_friend_request,
    .friend_accept = sq_friend_accept,
    .friend_reject = sq_friend_reject,
    .friend_remove = sq_friend_remove,
    .friend_list = sq_friend_list,
    .block = sq_block,
    .unblock = sq_unblock,
    .block_peers = sq_block_peers,
    .match_prefs_get = sq_match_prefs_get,
    .match_prefs_set = sq_match_prefs_set,
    .chat_random = sq_chat_random,
    .chat_random_async = sq_chat_random_async,
    .chat_reveal = sq_chat_reveal,
    .random_alias = sq_random_alias,
};
