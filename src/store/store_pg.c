/*
 * The PostgreSQL back end of the store (libpq), selected by a
 * "postgres://..." or "postgresql://..." URL. It keeps the contract of
 * store.h exactly as the SQLite back end does; what differs is that several
 * Natter processes may write to one database at once.
 *
 * Writes. One writer thread owns the write connection. Every write, the
 * async message append included, is a node on one FIFO queue; the writer
 * takes the whole queue and runs it as one transaction (BEGIN ... COMMIT),
 * and reports completion only after COMMIT: nt_append.done() for async
 * appends, a condition variable for the synchronous functions (which wrap
 * their work in a pg_job). Each non-append write runs in its own SAVEPOINT
 * so a failure undoes it alone. Consecutive appends form a run that costs a
 * fixed number of round trips whatever its size: one query finds the
 * client_id duplicates, one locks the chat rows (SELECT ... FOR UPDATE, in
 * id order, so writers in different processes queue instead of deadlocking)
 * and reads their counters, one reloads the members of chats whose member
 * list changed, one multi-row INSERT writes every message (unnest of array
 * parameters) and one UPDATE writes the counters. A run sits in a savepoint;
 * if it fails as a whole its appends are retried one by one, each in its own
 * savepoint, so one bad append does not fail its neighbours.
 *
 * The writer caches the sorted member list of each chat it appends to.
 * Another process may change members at any time, so an entry is only used
 * while the chat's members_version (bumped by a trigger on members, from a
 * sequence, see migrations_pg.h), read under the row lock, still matches.
 *
 * Reads. Each thread that reads gets its own connection (thread-specific
 * data), opened on first use; the store lists them and closes them at close
 * or when their thread exits. Reads of several queries run in a REPEATABLE
 * READ transaction so they see one snapshot.
 *
 * SQL. Every statement with values is a constant in the table below,
 * prepared once per connection (PQprepare) and run with PQexecPrepared;
 * values are only ever parameters (arrays as array literals in a
 * parameter), never formatted into SQL. Errors: a unique or foreign key
 * violation is NT_STORE_ECONFLICT (the constraint tells the field), bad data
 * NT_STORE_EINVAL, anything else NT_STORE_EUNAVAILABLE. A connection that
 * broke is closed; the next call on that thread (or the writer's next batch)
 * connects again, so the store recovers by itself when the server is back.
 * The connect timeout keeps calls from hanging on an unreachable server and
 * nt_store_ping() has its own deadline.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "store/migrations_pg.h"
#include "store/store.h"
#include "store/store_backend.h"
#include "store/store_common.h"

#define PG_CONNECT_TIMEOUT_S "3"
#define PG_PING_TIMEOUT_MS 2000
#define PG_EXPORT_PAGE 500
#define PG_RUN_MAX 1024 /* appends in one multi-row insert */
#define PG_MAX_PARAMS 8
#define PG_MIGRATE_KEY "7305438247" /* advisory lock key: "natter" migrations */

#define PG_USER_COLS                                                                               \
    "id, nickname, email, bio, avatar_url, coalesce(gender, ''), coalesce(birth_date, ''), "       \
    "created_at, last_seen"
/* The last column is the sender's alias while a random chat is anonymous. */
#define PG_MSG_COLS                                                                                \
    "id, chat_id, seq, sender_id, text, ts, client_id, edited_at, deleted, extra_json, "           \
    "(SELECT r.alias FROM random_members r WHERE r.chat_id = messages.chat_id "                    \
    "AND r.user_id = messages.sender_id AND r.hidden)"

#define PG_STATEMENTS(X)                                                                           \
    X(BEGIN, "BEGIN")                                                                              \
    X(BEGIN_READ, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")                               \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(SAVEPOINT, "SAVEPOINT op")                                                                   \
    X(RELEASE, "RELEASE SAVEPOINT op")                                                             \
    X(ROLLBACK_TO, "ROLLBACK TO SAVEPOINT op")                                                     \
    X(MIGRATE_LOCK, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_KEY ")")                            \
    X(SCHEMA_VERSION, "SELECT coalesce(max(version), 0) FROM schema_version")                      \
    X(SCHEMA_RECORD, "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)")           \
    /* users */                                                                                    \
    X(USER_GET, "SELECT " PG_USER_COLS " FROM users WHERE id = $1")                                \
    X(USER_BY_NICK, "SELECT " PG_USER_COLS " FROM users WHERE lower(nickname) = lower($1::text)")  \
    X(USER_LOGIN, "SELECT " PG_USER_COLS ", password_hash FROM users "                             \
                  "WHERE lower(email) = lower($1::text) OR lower(nickname) = lower($1::text) "     \
                  "ORDER BY id LIMIT 1")                                                           \
    X(USER_EXISTS, "SELECT 1 FROM users WHERE id = $1")                                            \
    X(USER_EMAIL_TAKEN, "SELECT 1 FROM users WHERE lower(email) = lower($1::text)")                \
    X(USER_NICK_TAKEN, "SELECT 1 FROM users WHERE lower(nickname) = lower($1::text) AND id <> $2") \
    X(USER_INSERT, "INSERT INTO users (email, nickname, password_hash, gender, birth_date, "       \
                   "created_at) VALUES ($1, $2, $3, nullif($4::text, ''), nullif($5::text, ''), "  \
                   "$6) RETURNING " PG_USER_COLS)                                                  \
    X(USER_UPDATE, "UPDATE users SET nickname = coalesce($2::text, nickname), "                    \
                   "bio = coalesce($3::text, bio), avatar_url = coalesce($4::text, avatar_url), "  \
                   "gender = CASE WHEN $5::text IS NULL THEN gender ELSE nullif($5::text, '') "    \
                   "END, birth_date = CASE WHEN $6::text IS NULL THEN birth_date "                 \
                   "ELSE nullif($6::text, '') END WHERE id = $1 RETURNING " PG_USER_COLS)          \
    X(USER_SEARCH, "SELECT " PG_USER_COLS " FROM users WHERE lower(nickname) LIKE "                \
                   "lower($1::text) ESCAPE '\\' AND id > $2 ORDER BY id LIMIT $3")                 \
    X(USER_LAST_SEEN, "UPDATE users SET last_seen = $2 WHERE id = $1")                             \
    /* sessions */                                                                                 \
    X(SESSION_INSERT, "INSERT INTO sessions (user_id, created_at) VALUES ($1, $2) RETURNING id")   \
    X(SESSION_ACTIVE, "SELECT revoked FROM sessions WHERE id = $1")                                \
    X(SESSION_REVOKE, "UPDATE sessions SET revoked = true WHERE id = $1")                          \
    X(TOKEN_INSERT, "INSERT INTO refresh_tokens (hash, session_id, expires_at) "                   \
                    "VALUES ($1, $2, $3)")                                                         \
    /* FOR UPDATE: two processes rotating one token queue; the second then                         \
     * sees it used (a replay) instead of both succeeding. */                                      \
    X(TOKEN_GET, "SELECT t.session_id, s.user_id, t.expires_at, t.used, s.revoked "                \
                 "FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id "                   \
                 "WHERE t.hash = $1 FOR UPDATE OF t, s")                                           \
    X(TOKEN_USE, "UPDATE refresh_tokens SET used = true WHERE hash = $1")                          \
    X(TOKEN_PRUNE, "DELETE FROM refresh_tokens WHERE session_id = $1 AND expires_at <= $2")        \
    /* chats and members */                                                                        \
    X(CHAT_GET, "SELECT id, type, title, created_at, last_seq, last_activity, closed "             \
                "FROM chats WHERE id = $1")                                                        \
    X(CHAT_EXISTS, "SELECT 1 FROM chats WHERE id = $1")                                            \
    X(CHAT_BY_DIRECT_KEY, "SELECT id FROM chats WHERE direct_key = $1")                            \
    X(CHAT_INSERT, "INSERT INTO chats (type, title, created_at, last_activity) "                   \
                   "VALUES ($1, $2, $3, $3) RETURNING id")                                         \
    X(CHAT_INSERT_DIRECT, "INSERT INTO chats (type, title, created_at, last_activity, "            \
                          "direct_key) VALUES ('direct', '', $1, $1, $2) "                         \
                          "ON CONFLICT (direct_key) DO NOTHING RETURNING id")                      \
    X(CHAT_CLOSE, "UPDATE chats SET closed = true WHERE id = $1")                                  \
    X(CHAT_LIST, "SELECT c.id FROM members m JOIN chats c ON c.id = m.chat_id "                    \
                 "WHERE m.user_id = $1 ORDER BY c.last_activity DESC, c.id DESC LIMIT $2")         \
    X(CHANNEL_BY_TITLE, "SELECT id FROM chats WHERE type = 'channel' AND title = $1 "              \
                        "ORDER BY id LIMIT 1")                                                     \
    X(MEMBERS, "SELECT m.user_id, m.role, m.delivered_seq, m.read_seq, r.alias, r.revealed, "      \
               "r.hidden FROM members m LEFT JOIN random_members r "                               \
               "ON r.chat_id = m.chat_id AND r.user_id = m.user_id "                               \
               "WHERE m.chat_id = $1 ORDER BY m.user_id")                                          \
    X(MEMBER_IDS, "SELECT user_id FROM members WHERE chat_id = $1 ORDER BY user_id")               \
    X(MEMBER_ROLE, "SELECT role FROM members WHERE chat_id = $1 AND user_id = $2")                 \
    X(MEMBER_INSERT, "INSERT INTO members (chat_id, user_id, role, joined_at) "                    \
                     "VALUES ($1, $2, $3, $4)")                                                    \
    X(MEMBER_INSERT_IGNORE, "INSERT INTO members (chat_id, user_id, role, joined_at) "             \
                            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")                      \
    X(MEMBER_DELETE, "DELETE FROM members WHERE chat_id = $1 AND user_id = $2")                    \
    X(PARTNERS, "SELECT id FROM (SELECT o.user_id AS id FROM members m "                           \
                "JOIN chats c ON c.id = m.chat_id AND c.type = 'direct' "                          \
                "JOIN members o ON o.chat_id = m.chat_id AND o.user_id <> m.user_id "              \
                "WHERE m.user_id = $1 "                                                            \
                "UNION SELECT friend_id FROM friends WHERE user_id = $1) AS p "                    \
                "WHERE id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = $1) "           \
                "ORDER BY id")                                                                     \
    X(MARK_GET, "SELECT m.delivered_seq, m.read_seq, c.last_seq FROM members m "                   \
                "JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = $1 AND m.user_id = $2 "        \
                "FOR UPDATE OF m")                                                                 \
    X(MARK_SET, "UPDATE members SET delivered_seq = $3, read_seq = $4 "                            \
                "WHERE chat_id = $1 AND user_id = $2")                                             \
    /* appends, by runs (see pg__appends) */                                                       \
    X(APPEND_DUPS, "SELECT " PG_MSG_COLS " FROM messages "                                         \
                   "JOIN unnest($1::bigint[], $2::text[]) AS u(sender, cid) "                      \
                   "ON messages.sender_id = u.sender AND messages.client_id = u.cid "              \
                   "WHERE messages.client_id IS NOT NULL")                                         \
    X(APPEND_LOCK, "SELECT id, closed, members_version, last_seq, last_activity FROM chats "       \
                   "WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE")                          \
    X(APPEND_MEMBERS, "SELECT chat_id, user_id FROM members WHERE chat_id = ANY($1::bigint[]) "    \
                      "ORDER BY chat_id, user_id")                                                 \
    X(APPEND_INSERT, "INSERT INTO messages (chat_id, seq, sender_id, text, ts, client_id, "        \
                     "extra_json) SELECT * FROM unnest($1::bigint[], $2::bigint[], "               \
                     "$3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[]) "            \
                     "RETURNING id, chat_id, seq")                                                 \
    /* Chats of two members (a < b): who blocked whom, and the aliases of                          \
     * an anonymous random chat. */                                                                \
    X(APPEND_PAIRS, "SELECT v.chat, "                                                              \
                    "EXISTS (SELECT 1 FROM blocks WHERE blocker_id = v.b AND blocked_id = v.a), "  \
                    "EXISTS (SELECT 1 FROM blocks WHERE blocker_id = v.a AND blocked_id = v.b), "  \
                    "(SELECT alias FROM random_members r WHERE r.chat_id = v.chat "                \
                    "AND r.user_id = v.a AND r.hidden), "                                          \
                    "(SELECT alias FROM random_members r WHERE r.chat_id = v.chat "                \
                    "AND r.user_id = v.b AND r.hidden) "                                           \
                    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(chat, a, b)")      \
    X(APPEND_COUNTERS, "UPDATE chats c SET last_seq = v.seq, last_activity = v.act "               \
                       "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, seq, act) " \
                       "WHERE c.id = v.id")                                                        \
    /* messages */                                                                                 \
    X(MSG_BY_SEQ, "SELECT " PG_MSG_COLS " FROM messages WHERE chat_id = $1 AND seq = $2")          \
    X(MSG_BY_SEQ_LOCK, "SELECT " PG_MSG_COLS " FROM messages WHERE chat_id = $1 AND seq = $2 "     \
                       "FOR UPDATE")                                                               \
    X(MSG_AFTER, "SELECT " PG_MSG_COLS " FROM messages "                                           \
                 "WHERE chat_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4")             \
    X(MSG_BEFORE, "SELECT " PG_MSG_COLS " FROM messages "                                          \
                  "WHERE chat_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3")                    \
    X(MSG_EDIT, "UPDATE messages SET text = $3, edited_at = $4 "                                   \
                "WHERE chat_id = $1 AND seq = $2")                                                 \
    X(MSG_DELETE, "UPDATE messages SET text = '', extra_json = NULL, deleted = true "              \
                  "WHERE chat_id = $1 AND seq = $2")                                               \
    X(UNREAD, "SELECT count(*) FROM messages "                                                     \
              "WHERE chat_id = $1 AND seq > $2 AND sender_id <> $3")                               \
    /* friends and blocks */                                                                       \
    /* Locks both users (NO KEY: inserts referencing them go on) so that                           \
     * writers in different processes handle one pair one at a time. */                            \
    X(PAIR_LOCK, "SELECT id FROM users WHERE id = $1 OR id = $2 ORDER BY id FOR NO KEY UPDATE")    \
    X(FRIEND_INSERT, "INSERT INTO friends (user_id, friend_id, created_at) "                       \
                     "VALUES ($1, $2, $3), ($2, $1, $3) ON CONFLICT DO NOTHING")                   \
    X(FRIEND_DELETE, "DELETE FROM friends WHERE (user_id = $1 AND friend_id = $2) "                \
                     "OR (user_id = $2 AND friend_id = $1)")                                       \
    X(FRIEND_EXISTS, "SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2")                \
    X(REQ_EXISTS, "SELECT 1 FROM friend_requests WHERE from_id = $1 AND to_id = $2")               \
    X(REQ_INSERT, "INSERT INTO friend_requests (from_id, to_id, created_at) "                      \
                  "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")                                    \
    X(REQ_DELETE, "DELETE FROM friend_requests WHERE from_id = $1 AND to_id = $2")                 \
    X(REQ_DELETE_PAIR, "DELETE FROM friend_requests WHERE (from_id = $1 AND to_id = $2) "          \
                       "OR (from_id = $2 AND to_id = $1)")                                         \
    X(BLOCK_PAIR, "SELECT blocker_id FROM blocks WHERE (blocker_id = $1 AND blocked_id = $2) "     \
                  "OR (blocker_id = $2 AND blocked_id = $1)")                                      \
    X(BLOCK_INSERT, "INSERT INTO blocks (blocker_id, blocked_id, created_at) "                     \
                    "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")                                  \
    X(BLOCK_DELETE, "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2")                \
    X(BLOCK_PEERS, "SELECT blocked_id FROM blocks WHERE blocker_id = $1 "                          \
                   "UNION SELECT blocker_id FROM blocks WHERE blocked_id = $1 ORDER BY 1")         \
    X(LIST_FRIENDS, "SELECT " PG_USER_COLS " FROM users WHERE id IN "                              \
                    "(SELECT friend_id FROM friends WHERE user_id = $1) ORDER BY id LIMIT $2")     \
    X(LIST_INCOMING, "SELECT " PG_USER_COLS " FROM users WHERE id IN "                             \
                     "(SELECT from_id FROM friend_requests WHERE to_id = $1) "                     \
                     "ORDER BY id LIMIT $2")                                                       \
    X(LIST_OUTGOING, "SELECT " PG_USER_COLS " FROM users WHERE id IN "                             \
                     "(SELECT to_id FROM friend_requests WHERE from_id = $1) "                     \
                     "ORDER BY id LIMIT $2")                                                       \
    X(LIST_BLOCKED, "SELECT " PG_USER_COLS " FROM users WHERE id IN "                              \
                    "(SELECT blocked_id FROM blocks WHERE blocker_id = $1) ORDER BY id LIMIT $2")  \
    /* matching and random chats */                                                                \
    X(PREFS_GET, "SELECT genders, age_min, age_max, interests FROM match_prefs "                   \
                 "WHERE user_id = $1")                                                             \
    X(PREFS_SET, "INSERT INTO match_prefs (user_id, genders, age_min, age_max, interests, "        \
                 "updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE "    \
                 "SET genders = excluded.genders, age_min = excluded.age_min, "                    \
                 "age_max = excluded.age_max, interests = excluded.interests, "                    \
                 "updated_at = excluded.updated_at")                                               \
    X(RANDOM_INSERT, "INSERT INTO random_members (chat_id, user_id, alias) VALUES ($1, $2, $3)")   \
    /* Both rows locked: two reveals at once in two processes must not both                        \
     * miss the other's consent. */                                                                \
    X(RANDOM_LOCK, "SELECT user_id, revealed, hidden FROM random_members "                         \
                   "WHERE chat_id = $1 ORDER BY user_id FOR UPDATE")                               \
    X(RANDOM_REVEAL, "UPDATE random_members SET revealed = true "                                  \
                     "WHERE chat_id = $1 AND user_id = $2")                                        \
    X(RANDOM_SHOW, "UPDATE random_members SET hidden = false WHERE chat_id = $1")                  \
    X(RANDOM_ALIAS, "SELECT alias FROM random_members "                                            \
                    "WHERE chat_id = $1 AND user_id = $2 AND hidden")

enum pg_stmt_id {
#define PG_ENUM(id, sql) PG_##id,
    PG_STATEMENTS(PG_ENUM)
#undef PG_ENUM
        PG_NSTMT
};

static const char *const pg_sql[PG_NSTMT] = {
#define PG_TEXT(id, sql) [PG_##id] = sql,
    PG_STATEMENTS(PG_TEXT)
#undef PG_TEXT
};

typedef struct pg_store pg_store;

/* One connection and which statements it has prepared. Used by one thread
 * at a time. pq == NULL: not connected (never, or dropped after a failure). */
typedef struct pg_conn {
    PGconn *pq;
    pg_store *owner;
    struct pg_conn *next; /* in owner->readers */
    bool prepared[PG_NSTMT];
    char conflict[64]; /* the constraint of the last unique violation */
} pg_conn;

/*
 * The writer's cache of a chat's members (sorted), valid while the chat's
 * members_version is `version`. The other fields are scratch for the run of
 * appends in progress, read from the locked row (`run` says which run).
 */
typedef struct pg_chat_entry {
    int64_t chat_id;        /* 0: a free slot */
    int64_t version;        /* 0: members not loaded */
    nt_member_set *members; /* one reference (NULL: none); appends take more */
    uint64_t run;
    bool closed;
    bool touched; /* this run appended to it */
    int64_t last_seq;
    int64_t last_activity;
    /* Chats of two members, read once per run that appends to them: bit i
     * of pair_blocked says ids[i] was blocked by the other one; aliases[i]
     * is ids[i]'s alias while a random chat is anonymous. */
    uint64_t pair_run;
    uint8_t pair_blocked;
    char aliases[2][NT_ALIAS_MAX];
} pg_chat_entry;

#define PG_CACHE_SLOTS 4096 /* a power of two; cleared at 3/4 full */

struct pg_store {
    char *url;
    pg_conn writer;   /* the writer thread's (and open/close's) only */
    nt_store_queue q; /* the writes; q.lock guards readers too */
    bool down;        /* the last connect failed (atomic; for logging only) */

    pthread_key_t reader_key;
    bool key_created;
    pg_conn *readers;

    /* The writer thread's only. */
    pg_chat_entry *cache;
    int cache_used;
    uint64_t run; /* counts runs of appends */
};

/* A synchronous write other than an append: fn does the work on the writer
 * connection, inside the batch transaction (see nt_store_job). */
typedef struct pg_job {
    nt_store_job base; /* first: the queue hands back &base */
    int (*fn)(pg_conn *w, void *arg);
    void *arg;
} pg_job;

/* ---- parameters ----------------------------------------------------------- */

/* The parameters of one statement; integers are formatted into `ints`. */
typedef struct pg_params {
    int n;
    const char *values[PG_MAX_PARAMS];
    int lengths[PG_MAX_PARAMS];
    int formats[PG_MAX_PARAMS];
    char ints[PG_MAX_PARAMS][24];
} pg_params;

static void pp_int(pg_params *p, int64_t v)
{
    snprintf(p->ints[p->n], sizeof(p->ints[p->n]), "%" PRId64, v);
    p->values[p->n] = p->ints[p->n];
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}

/* A NUL-terminated text; NULL is SQL NULL. */
static void pp_str(pg_params *p, const char *s)
{
    p->values[p->n] = s;
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}

/* Bytes in binary format (bytea, or text with a length). */
static void pp_bin(pg_params *p, const void *data, size_t len)
{
    p->values[p->n] = data;
    p->lengths[p->n] = (int)len;
    p->formats[p->n] = 1;
    p->n++;
}

/* A growing array literal, e.g. {1,2} or {"a\"b",NULL}, for one parameter. */
typedef struct pg_array {
    char *data;
    size_t len, cap;
    int count;
    bool oom;
} pg_array;

static void pa_put(pg_array *a, const char *s, size_t n)
{
    if (a->oom) return;
    if (a->len + n + 2 > a->cap) {
        size_t ncap = a->cap ? a->cap : 256;
        while (a->len + n + 2 > ncap)
            ncap *= 2;
        char *grown = realloc(a->data, ncap);
        if (!grown) {
            a->oom = true;
            return;
        }
        a->data = grown;
        a->cap = ncap;
    }
    memcpy(a->data + a->len, s, n);
    a->len += n;
    a->data[a->len] = '\0';
}

static void pa_sep(pg_array *a)
{
    pa_put(a, a->count++ ? "," : "{", 1);
}

static void pa_int(pg_array *a, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRId64, v);
    pa_sep(a);
    pa_put(a, num, (size_t)n);
}

/* A text element of len bytes, quoted; NULL is the SQL NULL element. */
static void pa_text(pg_array *a, const char *s, size_t len)
{
    pa_sep(a);
    if (!s) {
        pa_put(a, "NULL", 4);
        return;
    }
    pa_put(a, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            pa_put(a, s + start, i - start);
            pa_put(a, "\\", 1);
            start = i;
        }
    }
    pa_put(a, s + start, len - start);
    pa_put(a, "\"", 1);
}

/* Closes the literal; NULL when memory ran out. */
static const char *pa_end(pg_array *a)
{
    if (a->count == 0) pa_put(a, "{", 1);
    pa_put(a, "}", 1);
    return a->oom ? NULL : a->data;
}

static void pa_free(pg_array *a)
{
    free(a->data);
    memset(a, 0, sizeof(*a));
}

/* ---- connections, statements, errors -------------------------------------- */

static void pg__quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs ("... already exists, skipping") are not news */
}

static void pg__drop(pg_conn *c)
{
    if (c->pq) PQfinish(c->pq);
    c->pq = NULL;
    memset(c->prepared, 0, sizeof(c->prepared));
}

/* Connects c to the store's database. */
static int pg__connect(pg_store *b, pg_conn *c, char *err, size_t err_len)
{
    /* The defaults come before dbname, so the URL's own settings win.
     * Keepalives and tcp_user_timeout turn a vanished host (no RST) into an
     * error within seconds instead of a worker blocked for good. */
    static const char *const keys[] = {"connect_timeout",
                                       "client_encoding",
                                       "application_name",
                                       "keepalives_idle",
                                       "keepalives_interval",
                                       "keepalives_count",
                                       "tcp_user_timeout",
                                       "dbname",
                                       NULL};
    const char *values[] = {
        PG_CONNECT_TIMEOUT_S, "UTF8", "natterd", "10", "3", "3", "10000", b->url, NULL};
    pg__drop(c);
    c->pq = PQconnectdbParams(keys, values, 1);
    if (!c->pq || PQstatus(c->pq) != CONNECTION_OK) {
        const char *msg = c->pq ? PQerrorMessage(c->pq) : "out of memory";
        size_t n = strcspn(msg, "\n");
        snprintf(err, err_len, "cannot connect to PostgreSQL: %.*s", (int)n, msg);
        pg__drop(c);
        return NT_STORE_EUNAVAILABLE;
    }
    PQsetNoticeProcessor(c->pq, pg__quiet, NULL);
    return 0;
}

/* Connected, or connects again (after a failure or a server restart). The
 * store logs when the database becomes unreachable and when it is back, not
 * every refused attempt in between. */
static int pg__ensure(pg_store *b, pg_conn *c)
{
    if (c->pq && PQstatus(c->pq) == CONNECTION_OK) return 0;
    char err[256];
    if (pg__connect(b, c, err, sizeof(err)) != 0) {
        if (!__atomic_exchange_n(&b->down, true, __ATOMIC_RELAXED))
            nt_warn("store pg unavailable msg=\"%s\"", err);
        return NT_STORE_EUNAVAILABLE;
    }
    if (__atomic_exchange_n(&b->down, false, __ATOMIC_RELAXED)) nt_warn("store pg reachable again");
    return 0;
}

/* Maps a failed result to a store code, logs what is not a plain conflict,
 * and drops the connection if it broke. */
static int pg__fail(pg_conn *c, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strncmp(state, "23", 2) == 0) {
        const char *name = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        snprintf(c->conflict, sizeof(c->conflict), "%s", name ? name : "");
        return NT_STORE_ECONFLICT;
    }
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg[0] && c->pq) msg = PQerrorMessage(c->pq);
    nt_warn("store pg error op=\"%.60s\" state=%s msg=\"%.*s\"", what, state ? state : "-",
            (int)strcspn(msg, "\n"), msg);
    if (state && strncmp(state, "22", 2) == 0) return NT_STORE_EINVAL; /* bad data */
    if (c->pq && PQstatus(c->pq) != CONNECTION_OK) pg__drop(c);
    return NT_STORE_EUNAVAILABLE;
}

static int pg__ensure(pg_store *b, pg_conn *c);

/* One attempt of pg__exec. */
static int pg__exec_once(pg_conn *c, enum pg_stmt_id id, const pg_params *p, PGresult **out)
{
    char name[16];
    *out = NULL;
    if (!c->pq) return NT_STORE_EUNAVAILABLE;
    snprintf(name, sizeof(name), "s%d", (int)id);
    if (!c->prepared[id]) {
        PGresult *r = PQprepare(c->pq, name, pg_sql[id], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = pg__fail(c, r, pg_sql[id]);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        c->prepared[id] = true;
    }
    PGresult *r = PQexecPrepared(c->pq, name, p ? p->n : 0, p ? p->values : NULL,
                                 p ? p->lengths : NULL, p ? p->formats : NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg__fail(c, r, pg_sql[id]);
        PQclear(r);
        return rc;
    }
    *out = r;
    return 0;
}

/*
 * Runs statement id with p (may be NULL); on success *out is the result (the
 * caller PQclears it). A connection only learns that the server went away
 * (a restart) when it is next used; if that happens to a statement outside
 * any transaction (a read, or BEGIN) it is safe to connect again and retry
 * once. Inside a transaction it never reconnects: the transaction is gone
 * and must not silently carry on without its first half.
 */
static int pg__exec(pg_conn *c, enum pg_stmt_id id, const pg_params *p, PGresult **out)
{
    bool idle = c->pq && PQtransactionStatus(c->pq) == PQTRANS_IDLE;
    int rc = pg__exec_once(c, id, p, out);
    if (rc == NT_STORE_EUNAVAILABLE && idle && !c->pq && pg__ensure(c->owner, c) == 0)
        rc = pg__exec_once(c, id, p, out);
    return rc;
}

/* Runs a statement whose rows do not matter; *changed (may be NULL) gets the
 * number of rows it changed. */
static int pg__run(pg_conn *c, enum pg_stmt_id id, const pg_params *p, int64_t *changed)
{
    PGresult *r;
    int rc = pg__exec(c, id, p, &r);
    if (rc) return rc;
    if (changed) *changed = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

/* pg__exec for a query that must return a row: ENOTFOUND (nothing to
 * clear) when it returns none. */
static int pg__exec_row(pg_conn *c, enum pg_stmt_id id, const pg_params *p, PGresult **out)
{
    int rc = pg__exec(c, id, p, out);
    if (rc == 0 && PQntuples(*out) == 0) {
        PQclear(*out);
        *out = NULL;
        rc = NT_STORE_ENOTFOUND;
    }
    return rc;
}

/* pg__run for a write that must hit a row: ENOTFOUND when none changed. */
static int pg__run_found(pg_conn *c, enum pg_stmt_id id, const pg_params *p)
{
    int64_t changed = 0;
    int rc = pg__run(c, id, p, &changed);
    return rc ? rc : changed ? 0 : NT_STORE_ENOTFOUND;
}

static int64_t pg__i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool pg__bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static void pg__str(const PGresult *r, int row, int col, char *dst, size_t cap)
{
    size_t n = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, PQgetvalue(r, row, col), n);
    dst[n] = '\0';
}

/* A heap copy of a text column; NULL -> NULL unless empty_if_null. */
static int pg__dup(const PGresult *r, int row, int col, bool empty_if_null, char **out, size_t *len)
{
    bool null = PQgetisnull(r, row, col);
    *out = NULL;
    if (len) *len = 0;
    if (null && !empty_if_null) return 0;
    size_t n = null ? 0 : (size_t)PQgetlength(r, row, col);
    char *copy = malloc(n + 1);
    if (!copy) return NT_STORE_EUNAVAILABLE;
    if (n) memcpy(copy, PQgetvalue(r, row, col), n);
    copy[n] = '\0';
    *out = copy;
    if (len) *len = n;
    return 0;
}

/* Fills u from the PG_USER_COLS columns of a row. */
static void pg__row_user(const PGresult *r, int row, nt_user *u)
{
    u->id = pg__i64(r, row, 0);
    pg__str(r, row, 1, u->nickname, sizeof(u->nickname));
    pg__str(r, row, 2, u->email, sizeof(u->email));
    pg__str(r, row, 3, u->bio, sizeof(u->bio));
    pg__str(r, row, 4, u->avatar_url, sizeof(u->avatar_url));
    pg__str(r, row, 5, u->gender, sizeof(u->gender));
    pg__str(r, row, 6, u->birth_date, sizeof(u->birth_date));
    u->created_at = pg__i64(r, row, 7);
    u->last_seen = pg__i64(r, row, 8);
}

/* Fills m (text and extra_json on the heap) from the PG_MSG_COLS columns. */
static int pg__row_message(const PGresult *r, int row, nt_message *m)
{
    memset(m, 0, sizeof(*m));
    m->id = pg__i64(r, row, 0);
    m->chat_id = pg__i64(r, row, 1);
    m->seq = pg__i64(r, row, 2);
    m->sender_id = pg__i64(r, row, 3);
    m->ts = pg__i64(r, row, 5);
    pg__str(r, row, 6, m->client_id, sizeof(m->client_id));
    m->edited_at = pg__i64(r, row, 7);
    m->deleted = pg__bool(r, row, 8);
    pg__str(r, row, 10, m->sender_alias, sizeof(m->sender_alias));
    if (pg__dup(r, row, 4, true, &m->text, &m->text_len) ||
        pg__dup(r, row, 9, false, &m->extra_json, NULL)) {
        nt_message_free(m);
        return NT_STORE_EUNAVAILABLE;
    }
    return 0;
}

/* The first column of the only row of a query: 1 found (*v set), 0 no row,
 * <0 error. */
static int pg__int(pg_conn *c, enum pg_stmt_id id, const pg_params *p, int64_t *v)
{
    PGresult *r;
    int rc = pg__exec(c, id, p, &r);
    if (rc) return rc;
    rc = PQntuples(r) > 0;
    if (rc && v) *v = pg__i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* 0 if the row a one-key existence query looks for exists, else ENOTFOUND
 * or an error. */
static int pg__exists(pg_conn *c, enum pg_stmt_id id, int64_t key)
{
    pg_params p = {0};
    pp_int(&p, key);
    int rc = pg__int(c, id, &p, NULL);
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

/* Every row's first column, as a heap array. */
static int pg__int_list(pg_conn *c, enum pg_stmt_id id, const pg_params *p, int64_t **out, int *n)
{
    PGresult *r;
    int rc = pg__exec(c, id, p, &r);
    if (rc) return rc;
    int count = PQntuples(r);
    int64_t *arr = NULL;
    if (count > 0 && !(arr = malloc((size_t)count * sizeof(*arr)))) {
        PQclear(r);
        return NT_STORE_EUNAVAILABLE;
    }
    for (int i = 0; i < count; i++)
        arr[i] = pg__i64(r, i, 0);
    PQclear(r);
    *out = arr;
    *n = count;
    return 0;
}

static int pg__message_load(pg_conn *c, enum pg_stmt_id id, int64_t chat_id, int64_t seq,
                            nt_message *out)
{
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, seq);
    PGresult *r;
    int rc = pg__exec(c, id, &p, &r);
    if (rc) return rc;
    rc = PQntuples(r) > 0 ? pg__row_message(r, 0, out) : NT_STORE_ENOTFOUND;
    PQclear(r);
    return rc;
}

static int pg__user_load(pg_conn *c, int64_t id, nt_user *out)
{
    pg_params p = {0};
    pp_int(&p, id);
    PGresult *r;
    int rc = pg__exec(c, PG_USER_GET, &p, &r);
    if (rc) return rc;
    rc = PQntuples(r) > 0 ? 0 : NT_STORE_ENOTFOUND;
    if (rc == 0) pg__row_user(r, 0, out);
    PQclear(r);
    return rc;
}

/*
 * Loads a chat with its members, its last message and the viewer's unread
 * count (messages after the viewer's read marker sent by someone else; 0 if
 * the viewer is not a member). out must be zeroed; on failure it is freed.
 */
static int pg__chat_load(pg_conn *c, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    pg_params p = {0};
    pp_int(&p, chat_id);
    PGresult *r;
    int rc = pg__exec_row(c, PG_CHAT_GET, &p, &r);
    if (rc) return rc;
    out->id = pg__i64(r, 0, 0);
    pg__str(r, 0, 1, out->type, sizeof(out->type));
    pg__str(r, 0, 2, out->title, sizeof(out->title));
    out->created_at = pg__i64(r, 0, 3);
    out->last_seq = pg__i64(r, 0, 4);
    out->last_activity = pg__i64(r, 0, 5);
    out->closed = pg__bool(r, 0, 6);
    PQclear(r);

    if ((rc = pg__exec(c, PG_MEMBERS, &p, &r)) != 0) goto fail;
    int count = PQntuples(r);
    if (count > 0 && !(out->members = calloc((size_t)count, sizeof(*out->members)))) {
        PQclear(r);
        rc = NT_STORE_EUNAVAILABLE;
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        nt_member *m = &out->members[i];
        m->user_id = pg__i64(r, i, 0);
        m->role = (int)pg__i64(r, i, 1);
        m->delivered_seq = pg__i64(r, i, 2);
        m->read_seq = pg__i64(r, i, 3);
        m->alias[0] = '\0';
        if (pg__bool(r, i, 6)) pg__str(r, i, 4, m->alias, sizeof(m->alias));
        m->revealed = pg__bool(r, i, 5);
    }
    out->nmembers = count;
    PQclear(r);

    if (out->last_seq > 0) {
        rc = pg__message_load(c, PG_MSG_BY_SEQ, chat_id, out->last_seq, &out->last_message);
        if (rc == 0)
            out->has_last_message = true;
        else if (rc != NT_STORE_ENOTFOUND)
            goto fail;
    }
    int64_t viewer_read;
    if (nt_store_viewer_read(out, viewer_id, &viewer_read) && viewer_read < out->last_seq) {
        pg_params q = {0};
        pp_int(&q, chat_id);
        pp_int(&q, viewer_read);
        pp_int(&q, viewer_id);
        if ((rc = pg__int(c, PG_UNREAD, &q, &out->unread)) < 0) goto fail;
    }
    return 0;

fail:
    nt_chat_free(out);
    memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- readers ---------------------------------------------------------------- */

static void pg__reader_exit(void *arg)
{
    pg_conn *c = arg;
    pg_store *b = c->owner;
    pthread_mutex_lock(&b->q.lock);
    for (pg_conn **pp = &b->readers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&b->q.lock);
    pg__drop(c);
    free(c);
}

/* The calling thread's read connection, connected (again if it broke);
 * NULL if the database cannot be reached (logged). */
static pg_conn *pg__reader(pg_store *b)
{
    pg_conn *c = pthread_getspecific(b->reader_key);
    if (!c) {
        if (!(c = calloc(1, sizeof(*c)))) return NULL;
        c->owner = b;
        if (pthread_setspecific(b->reader_key, c) != 0) {
            free(c);
            return NULL;
        }
        pthread_mutex_lock(&b->q.lock);
        c->next = b->readers;
        b->readers = c;
        pthread_mutex_unlock(&b->q.lock);
    }
    return pg__ensure(b, c) == 0 ? c : NULL;
}

/* A read transaction, so a multi-query read sees one snapshot. */
static int pg__read_begin(pg_conn *c)
{
    return pg__run(c, PG_BEGIN_READ, NULL, NULL);
}

static void pg__read_end(pg_conn *c)
{
    if (c->pq && PQtransactionStatus(c->pq) != PQTRANS_IDLE) pg__run(c, PG_ROLLBACK, NULL, NULL);
}

/* ---- the writer ------------------------------------------------------------- */

/* Runs fn on the writer connection in the next batch and waits for the
 * commit. Returns fn's status, or EUNAVAILABLE if the commit failed. */
static int pg__write(pg_store *b, int (*fn)(pg_conn *w, void *arg), void *arg)
{
    pg_job job;
    memset(&job, 0, sizeof(job));
    job.base.generic = true;
    job.fn = fn;
    job.arg = arg;
    return nt_store_queue_run(&b->q, &job.base);
}

/* The job of a synchronous write other than an append, or NULL. */
static pg_job *pg__generic_job(const nt_append *op)
{
    return (pg_job *)nt_store_generic_job(op);
}

static void pg__cache_clear(pg_store *b)
{
    for (int i = 0; i < PG_CACHE_SLOTS; i++)
        nt_member_set_unref(b->cache[i].members);
    memset(b->cache, 0, PG_CACHE_SLOTS * sizeof(*b->cache));
    b->cache_used = 0;
}

/* The slot of chat_id, taken if it was free. The caller keeps the cache
 * below 3/4 full, so a free slot is always found. */
static pg_chat_entry *pg__cache_slot(pg_store *b, int64_t chat_id, bool take)
{
    for (size_t i = nt_store_cache_home(chat_id, PG_CACHE_SLOTS);;
         i = (i + 1) & (PG_CACHE_SLOTS - 1)) {
        pg_chat_entry *e = &b->cache[i];
        if (e->chat_id == chat_id) return e;
        if (e->chat_id == 0) {
            if (!take) return NULL;
            e->chat_id = chat_id;
            b->cache_used++;
            return e;
        }
    }
}

/* How many members the cached set holds (a chat nobody is in has none). */
static int pg__nmembers(const pg_chat_entry *e)
{
    return e->members ? e->members->n : 0;
}

static int pg__cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

/* An inserted message's key, to find its op among the INSERT's rows. */
typedef struct pg_key {
    int64_t chat_id;
    int64_t seq;
    nt_append *op;
} pg_key;

static int pg__cmp_key(const void *x, const void *y)
{
    const pg_key *a = x, *b = y;
    if (a->chat_id != b->chat_id) return a->chat_id < b->chat_id ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Finds the ops whose (sender, client_id) is already stored: they become
 * duplicates carrying the stored message (done[i] = true). */
static int pg__appends_dups(pg_conn *w, nt_append **ops, bool *done, int n)
{
    pg_array senders = {0}, cids = {0};
    int rc = 0, wanted = 0;
    for (int i = 0; i < n; i++) {
        if (done[i] || !ops[i]->client_id[0]) continue;
        pa_int(&senders, ops[i]->sender_id);
        pa_text(&cids, ops[i]->client_id, strlen(ops[i]->client_id));
        wanted++;
    }
    if (wanted == 0) goto out;
    pg_params p = {0};
    pp_str(&p, pa_end(&senders));
    pp_str(&p, pa_end(&cids));
    if (!p.values[0] || !p.values[1]) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    PGresult *r;
    if ((rc = pg__exec(w, PG_APPEND_DUPS, &p, &r)) != 0) goto out;
    for (int row = 0; row < PQntuples(r) && rc == 0; row++) {
        int64_t sender = pg__i64(r, row, 3);
        const char *cid = PQgetvalue(r, row, 6);
        for (int i = 0; i < n; i++) {
            if (done[i] || ops[i]->sender_id != sender || strcmp(ops[i]->client_id, cid) != 0)
                continue;
            if ((rc = pg__row_message(r, row, &ops[i]->msg)) != 0) break;
            ops[i]->duplicate = true;
            done[i] = true;
            break;
        }
    }
    PQclear(r);
out:
    pa_free(&senders);
    pa_free(&cids);
    return rc;
}

/* Locks the rows of the chats the ops touch, reads their state into the
 * cache's scratch fields, and reloads the members of every chat whose
 * members_version moved. */
static int pg__appends_lock(pg_store *b, pg_conn *w, nt_append **ops, const bool *done, int n)
{
    int64_t *ids = malloc((size_t)n * sizeof(*ids));
    int64_t *scratch = NULL; /* one chat's member ids at a time */
    pg_array lock_ids = {0}, reload_ids = {0};
    PGresult *r = NULL;
    int nids = 0, rc = 0;
    if (!ids) return NT_STORE_EUNAVAILABLE;
    for (int i = 0; i < n; i++) {
        if (ops[i]->duplicate)
            ids[nids++] = ops[i]->msg.chat_id;
        else if (!done[i])
            ids[nids++] = ops[i]->chat_id;
    }
    qsort(ids, (size_t)nids, sizeof(*ids), pg__cmp_i64);
    int distinct = 0;
    for (int i = 0; i < nids; i++)
        if (distinct == 0 || ids[distinct - 1] != ids[i]) ids[distinct++] = ids[i];
    if (distinct == 0) goto out;
    if (b->cache_used + distinct > PG_CACHE_SLOTS / 4 * 3) pg__cache_clear(b);
    for (int i = 0; i < distinct; i++)
        pa_int(&lock_ids, ids[i]);

    pg_params p = {0};
    pp_str(&p, pa_end(&lock_ids));
    if (!p.values[0]) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    if ((rc = pg__exec(w, PG_APPEND_LOCK, &p, &r)) != 0) goto out;
    for (int row = 0; row < PQntuples(r); row++) {
        pg_chat_entry *e = pg__cache_slot(b, pg__i64(r, row, 0), true);
        int64_t version = pg__i64(r, row, 2);
        e->run = b->run;
        e->touched = false;
        e->closed = pg__bool(r, row, 1);
        e->last_seq = pg__i64(r, row, 3);
        e->last_activity = pg__i64(r, row, 4);
        if (e->version != version) {
            nt_member_set_unref(e->members);
            e->members = NULL;
            e->version = -version; /* to load; see below */
            pa_int(&reload_ids, e->chat_id);
        }
    }
    PQclear(r);
    r = NULL;
    if (reload_ids.count == 0) goto out;

    /* Rows come sorted by chat, then user: each chat's members are a
     * contiguous, sorted stretch. */
    pg_params q = {0};
    pp_str(&q, pa_end(&reload_ids));
    if (!q.values[0]) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    if ((rc = pg__exec(w, PG_APPEND_MEMBERS, &q, &r)) != 0) goto out;
    int rows = PQntuples(r);
    if (rows > 0 && !(scratch = malloc((size_t)rows * sizeof(*scratch)))) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    for (int row = 0; row < rows;) {
        int64_t chat_id = pg__i64(r, row, 0);
        int end = row;
        while (end < rows && pg__i64(r, end, 0) == chat_id)
            end++;
        pg_chat_entry *e = pg__cache_slot(b, chat_id, false);
        if (e && e->version < 0) {
            for (int i = row; i < end; i++)
                scratch[i - row] = pg__i64(r, i, 1);
            if (!(e->members = nt_member_set_new(scratch, end - row))) {
                rc = NT_STORE_EUNAVAILABLE;
                goto out;
            }
        }
        row = end;
    }
    for (int i = 0; i < distinct; i++) {
        pg_chat_entry *e = pg__cache_slot(b, ids[i], false);
        if (e && e->version < 0) e->version = -e->version;
    }

out:
    if (rc) {
        /* Entries half loaded must not be trusted by a later run. */
        for (int i = 0; i < distinct; i++) {
            pg_chat_entry *e = pg__cache_slot(b, ids[i], false);
            if (e && e->version < 0) e->version = 0;
        }
    }
    PQclear(r);
    pa_free(&lock_ids);
    pa_free(&reload_ids);
    free(scratch);
    free(ids);
    return rc;
}

/*
 * For every chat of exactly two members the run writes to: which member the
 * other blocked and, for an anonymous random chat, the aliases (one query
 * for the whole run). Blocks are read afresh each run, so a block made by
 * another process counts from its commit on.
 */
static int pg__appends_pairs(pg_store *b, pg_conn *w, nt_append **ops, const bool *done, int n)
{
    pg_array chats = {0}, as = {0}, bs = {0};
    PGresult *r = NULL;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        pg_chat_entry *e = pg__cache_slot(b, ops[i]->chat_id, false);
        if (!e || e->run != b->run || pg__nmembers(e) != 2 || e->pair_run == b->run) continue;
        e->pair_run = b->run;
        e->pair_blocked = 0;
        memset(e->aliases, 0, sizeof(e->aliases));
        pa_int(&chats, e->chat_id);
        pa_int(&as, e->members->ids[0]);
        pa_int(&bs, e->members->ids[1]);
    }
    if (chats.count == 0) goto out;
    pg_params p = {0};
    pp_str(&p, pa_end(&chats));
    pp_str(&p, pa_end(&as));
    pp_str(&p, pa_end(&bs));
    if (!p.values[0] || !p.values[1] || !p.values[2]) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    if ((rc = pg__exec(w, PG_APPEND_PAIRS, &p, &r)) != 0) goto out;
    for (int row = 0; row < PQntuples(r); row++) {
        pg_chat_entry *e = pg__cache_slot(b, pg__i64(r, row, 0), false);
        if (!e) continue;
        e->pair_blocked = (uint8_t)((pg__bool(r, row, 1) ? 1 : 0) | (pg__bool(r, row, 2) ? 2 : 0));
        pg__str(r, row, 3, e->aliases[0], sizeof(e->aliases[0]));
        pg__str(r, row, 4, e->aliases[1], sizeof(e->aliases[1]));
    }
out:
    if (rc) {
        /* Not trusted by a retry of this run. */
        for (int i = 0; i < n; i++) {
            pg_chat_entry *e = pg__cache_slot(b, ops[i]->chat_id, false);
            if (e) e->pair_run = 0;
        }
    }
    PQclear(r);
    pa_free(&chats);
    pa_free(&as);
    pa_free(&bs);
    return rc;
}

/*
 * One run of appends (no two with the same sender and client_id), inside the
 * caller's savepoint. Sets each op's status (0, EINVAL, ENOTFOUND,
 * EFORBIDDEN) and out fields; returns non-zero only if the run failed as a
 * whole (the caller rolls it back and resets the ops).
 */
static int pg__appends(pg_store *b, pg_conn *w, nt_append **ops, int n)
{
    bool *done = calloc((size_t)n, sizeof(*done));
    pg_key *keys = calloc((size_t)n, sizeof(*keys));
    pg_array a_chat = {0}, a_seq = {0}, a_sender = {0}, a_text = {0}, a_ts = {0}, a_cid = {0},
             a_extra = {0}, c_id = {0}, c_seq = {0}, c_act = {0};
    PGresult *r = NULL;
    int rc = 0, nkeys = 0;
    if (!done || !keys) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    b->run++;

    for (int i = 0; i < n; i++) {
        nt_append *op = ops[i];
        op->status = 0;
        if (nt_store_append_check(op) != 0 ||
            memchr(op->text, '\0', op->text_len)) { /* PostgreSQL text holds no NUL */
            op->status = NT_STORE_EINVAL;
            done[i] = true;
        }
    }
    if ((rc = pg__appends_dups(w, ops, done, n)) != 0) goto out;
    if ((rc = pg__appends_lock(b, w, ops, done, n)) != 0) goto out;
    if ((rc = pg__appends_pairs(b, w, ops, done, n)) != 0) goto out;

    for (int i = 0; i < n; i++) {
        nt_append *op = ops[i];
        if (op->duplicate) {
            pg_chat_entry *e = pg__cache_slot(b, op->msg.chat_id, false);
            if (!e || e->run != b->run) {
                nt_store_append_reset(op);
                op->status = NT_STORE_ENOTFOUND;
            } else {
                nt_store_append_members(op, e->members);
            }
            continue;
        }
        if (done[i]) continue;
        pg_chat_entry *e = pg__cache_slot(b, op->chat_id, false);
        if (!e || e->run != b->run) {
            op->status = NT_STORE_ENOTFOUND;
            continue;
        }
        if (e->closed || !nt_member_set_contains(e->members, op->sender_id)) {
            op->status = NT_STORE_EFORBIDDEN;
            continue;
        }
        int sender_idx = -1;
        if (pg__nmembers(e) == 2) {
            /* Blocks apply where only the two of them talk (direct, random,
             * a two-member group): the blocked one cannot write. */
            sender_idx = e->members->ids[0] == op->sender_id ? 0 : 1;
            if (e->pair_blocked & (1u << sender_idx)) {
                op->status = NT_STORE_EFORBIDDEN;
                continue;
            }
        }
        if ((rc = nt_store_append_copy(op)) != 0) goto out;
        nt_store_append_stamp(op, ++e->last_seq, sender_idx >= 0 ? e->aliases[sender_idx] : NULL);
        nt_store_append_members(op, e->members);
        nt_message *m = &op->msg;
        if (op->ts > e->last_activity) e->last_activity = op->ts;
        if (!e->touched) {
            e->touched = true;
            pa_int(&c_id, e->chat_id);
        }
        keys[nkeys++] = (pg_key){m->chat_id, m->seq, op};
        pa_int(&a_chat, m->chat_id);
        pa_int(&a_seq, m->seq);
        pa_int(&a_sender, m->sender_id);
        pa_text(&a_text, op->text, op->text_len);
        pa_int(&a_ts, m->ts);
        pa_text(&a_cid, op->client_id[0] ? op->client_id : NULL, strlen(op->client_id));
        pa_text(&a_extra, op->extra_json, op->extra_json ? strlen(op->extra_json) : 0);
    }
    if (nkeys == 0) goto out;

    pg_params p = {0};
    pp_str(&p, pa_end(&a_chat));
    pp_str(&p, pa_end(&a_seq));
    pp_str(&p, pa_end(&a_sender));
    pp_str(&p, pa_end(&a_text));
    pp_str(&p, pa_end(&a_ts));
    pp_str(&p, pa_end(&a_cid));
    pp_str(&p, pa_end(&a_extra));
    for (int i = 0; i < p.n; i++) {
        if (!p.values[i]) {
            rc = NT_STORE_EUNAVAILABLE;
            goto out;
        }
    }
    if ((rc = pg__exec(w, PG_APPEND_INSERT, &p, &r)) != 0) goto out;
    if (PQntuples(r) != nkeys) {
        nt_warn("store pg append inserted=%d expected=%d", PQntuples(r), nkeys);
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    qsort(keys, (size_t)nkeys, sizeof(*keys), pg__cmp_key);
    for (int row = 0; row < nkeys; row++) {
        pg_key k = {pg__i64(r, row, 1), pg__i64(r, row, 2), NULL};
        pg_key *hit = bsearch(&k, keys, (size_t)nkeys, sizeof(*keys), pg__cmp_key);
        if (!hit) {
            rc = NT_STORE_EUNAVAILABLE;
            goto out;
        }
        hit->op->msg.id = pg__i64(r, row, 0);
    }
    PQclear(r);
    r = NULL;

    /* The counters, once per chat. c_id was filled in the order chats were
     * first touched; the scratch fields hold the final values. */
    for (int i = 0; i < n; i++) {
        if (ops[i]->status != 0 || ops[i]->duplicate || done[i]) continue;
        pg_chat_entry *e = pg__cache_slot(b, ops[i]->chat_id, false);
        if (e->touched) {
            pa_int(&c_seq, e->last_seq);
            pa_int(&c_act, e->last_activity);
            e->touched = false; /* appended to the counter arrays */
        }
    }
    pg_params q = {0};
    pp_str(&q, pa_end(&c_id));
    pp_str(&q, pa_end(&c_seq));
    pp_str(&q, pa_end(&c_act));
    if (!q.values[0] || !q.values[1] || !q.values[2]) {
        rc = NT_STORE_EUNAVAILABLE;
        goto out;
    }
    rc = pg__run(w, PG_APPEND_COUNTERS, &q, NULL);

out:
    PQclear(r);
    pg_array *arrays[] = {&a_chat, &a_seq,   &a_sender, &a_text, &a_ts,
                          &a_cid,  &a_extra, &c_id,     &c_seq,  &c_act};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        pa_free(arrays[i]);
    free(done);
    free(keys);
    return rc;
}

/* A savepoint-wrapped pg__appends: 0 (each op has its status), or the run's
 * failure after rolling it back (ops reset), or -1000 if the transaction
 * itself is lost. */
#define PG_LOST (-1000)
static int pg__appends_saved(pg_store *b, pg_conn *w, nt_append **ops, int n)
{
    if (pg__run(w, PG_SAVEPOINT, NULL, NULL) != 0) return PG_LOST;
    int rc = pg__appends(b, w, ops, n);
    if (!w->pq) return PG_LOST;
    if (rc) {
        for (int i = 0; i < n; i++)
            nt_store_append_reset(ops[i]);
        if (pg__run(w, PG_ROLLBACK_TO, NULL, NULL) != 0) return PG_LOST;
    }
    if (pg__run(w, PG_RELEASE, NULL, NULL) != 0) return PG_LOST;
    return rc;
}

/* Hash of an op's idempotency key, for spotting a repeat inside a run. */
static uint64_t pg__client_hash(const nt_append *op)
{
    uint64_t h = (uint64_t)op->sender_id * 0x9E3779B97F4A7C15ull;
    for (const char *s = op->client_id; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

/*
 * Runs the appends from `first` on, up to the next generic write, the first
 * op that repeats a (sender, client_id) of the run (it must see the first
 * one's insert, so it starts the next run) or PG_RUN_MAX ops. If the run
 * fails as a whole, its ops are run again one by one so only the culprit
 * fails. Returns the node after the run, or sets *lost.
 */
static nt_append *pg__append_run(pg_store *b, pg_conn *w, nt_append *first, bool *lost)
{
    enum { SLOTS = PG_RUN_MAX * 2 };
    nt_append *ops[PG_RUN_MAX];
    int16_t seen[SLOTS]; /* index + 1 of an op with a client_id, by hash */
    int n = 0;
    memset(seen, 0, sizeof(seen));
    nt_append *op = first;
    for (; op && !pg__generic_job(op) && n < PG_RUN_MAX; op = op->next) {
        if (op->client_id[0] && memchr(op->client_id, '\0', sizeof(op->client_id))) {
            size_t slot = (size_t)(pg__client_hash(op) & (SLOTS - 1));
            bool repeat = false;
            for (; seen[slot]; slot = (slot + 1) & (SLOTS - 1)) {
                const nt_append *o = ops[seen[slot] - 1];
                if (o->sender_id == op->sender_id && strcmp(o->client_id, op->client_id) == 0) {
                    repeat = true;
                    break;
                }
            }
            if (repeat) break;
            seen[slot] = (int16_t)(n + 1);
        }
        ops[n++] = op;
    }
    int rc = pg__appends_saved(b, w, ops, n);
    if (rc == PG_LOST) goto lost;
    if (rc == 0) return op;
    for (int i = 0; i < n; i++) {
        rc = pg__appends_saved(b, w, &ops[i], 1);
        /* A unique violation here is another process storing the same
         * client_id at the same moment; once it committed, a second try
         * sees its message and reports a duplicate. */
        if (rc == NT_STORE_ECONFLICT) rc = pg__appends_saved(b, w, &ops[i], 1);
        if (rc == PG_LOST) goto lost;
        if (rc) ops[i]->status = rc;
    }
    return op;

lost:
    *lost = true;
    return NULL;
}

/*
 * One group commit: every op of the batch in one transaction, each generic
 * write in its own savepoint, appends by runs (pg__append_run). If the
 * transaction itself fails (the connection broke, BEGIN, a savepoint or
 * COMMIT failed) every op of the batch is reported EUNAVAILABLE and nothing
 * of it is written (a COMMIT whose answer was lost is the one case where the
 * outcome is unknown, as with any database).
 */
static void pg__run_batch(void *be, nt_append *batch)
{
    pg_store *b = be;
    pg_conn *w = &b->writer;
    bool lost = false;
    if (pg__ensure(b, w) != 0 || pg__run(w, PG_BEGIN, NULL, NULL) != 0) goto lost;
    for (nt_append *op = batch; op;) {
        pg_job *job = pg__generic_job(op);
        if (!job) {
            op = pg__append_run(b, w, op, &lost);
            if (lost) goto lost;
            continue;
        }
        if (pg__run(w, PG_SAVEPOINT, NULL, NULL) != 0) goto lost;
        job->base.status = job->fn(w, job->arg);
        if (!w->pq) goto lost;
        /* EREUSED is the one failure that writes: it revokes a session. */
        if (job->base.status != 0 && job->base.status != NT_STORE_EREUSED &&
            pg__run(w, PG_ROLLBACK_TO, NULL, NULL) != 0)
            goto lost;
        if (pg__run(w, PG_RELEASE, NULL, NULL) != 0) goto lost;
        op = op->next;
    }
    if (pg__run(w, PG_COMMIT, NULL, NULL) != 0) goto lost;
    return;

lost:
    if (w->pq && PQtransactionStatus(w->pq) != PQTRANS_IDLE) pg__run(w, PG_ROLLBACK, NULL, NULL);
    /* The cache may hold members read in the rolled-back transaction. */
    pg__cache_clear(b);
    for (nt_append *op = batch; op; op = op->next)
        nt_store_op_lost(op);
}

/* ---- open, close, migrations ---------------------------------------------- */

/* Runs a constant, parameterless script (DDL) with the simple protocol. */
static int pg__script(pg_conn *c, const char *sql, char *err, size_t err_len, const char *what)
{
    PGresult *r = PQexec(c->pq, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        const char *msg = PQresultErrorMessage(r);
        snprintf(err, err_len, "%s failed: %.*s", what, (int)strcspn(msg, "\n"), msg);
    }
    PQclear(r);
    return ok ? 0 : NT_STORE_EUNAVAILABLE;
}

static int pg__migrate(pg_conn *w, char *err, size_t err_len)
{
    int64_t version = 0;
    /* The advisory lock makes processes that open one database at once run
     * the migrations one after the other; the later ones then find them done. */
    if (pg__run(w, PG_BEGIN, NULL, NULL) != 0 || pg__run(w, PG_MIGRATE_LOCK, NULL, NULL) != 0) {
        snprintf(err, err_len, "migrations: cannot start: %s", PQerrorMessage(w->pq));
        goto fail;
    }
    if (pg__script(w,
                   "CREATE TABLE IF NOT EXISTS schema_version ("
                   "  version integer PRIMARY KEY, applied_at bigint NOT NULL)",
                   err, err_len, "schema_version") != 0)
        goto fail;
    if (pg__int(w, PG_SCHEMA_VERSION, NULL, &version) != 1) {
        snprintf(err, err_len, "migrations: cannot read schema_version");
        goto fail;
    }
    if (version > PG_MIGRATIONS_COUNT) {
        snprintf(err, err_len, "database schema version %" PRId64 " is newer than this server's %d",
                 version, PG_MIGRATIONS_COUNT);
        goto fail;
    }
    for (int64_t v = version + 1; v <= PG_MIGRATIONS_COUNT; v++) {
        char what[32];
        snprintf(what, sizeof(what), "migration %" PRId64, v);
        if (pg__script(w, pg_migrations[v - 1], err, err_len, what) != 0) goto fail;
        pg_params p = {0};
        pp_int(&p, v);
        pp_int(&p, nt_now_ms());
        if (pg__run(w, PG_SCHEMA_RECORD, &p, NULL) != 0) {
            snprintf(err, err_len, "migrations: cannot record version %" PRId64, v);
            goto fail;
        }
    }
    if (pg__run(w, PG_COMMIT, NULL, NULL) != 0) {
        snprintf(err, err_len, "migrations: commit failed");
        goto fail;
    }
    return 0;

fail:
    if (w->pq && PQtransactionStatus(w->pq) != PQTRANS_IDLE) pg__run(w, PG_ROLLBACK, NULL, NULL);
    return NT_STORE_EUNAVAILABLE;
}

static void pg_close(void *be);

static void *pg_open(const char *where, char *err, size_t err_len)
{
    /* store.c strips the scheme: "//user@host:port/db?..." is left. */
    if (strncmp(where, "//", 2) != 0) {
        snprintf(err, err_len, "postgres store URL must be postgres://[user@]host[:port]/db");
        return NULL;
    }
    pg_store *b = calloc(1, sizeof(*b));
    size_t len = strlen("postgresql:") + strlen(where) + 1;
    if (!b || !(b->url = malloc(len))) {
        free(b);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(b->url, len, "postgresql:%s", where);
    nt_store_queue_init(&b->q);
    if (pthread_key_create(&b->reader_key, pg__reader_exit) != 0) {
        snprintf(err, err_len, "no thread key left");
        goto fail;
    }
    b->key_created = true;
    b->writer.owner = b;
    if (!(b->cache = calloc(PG_CACHE_SLOTS, sizeof(*b->cache)))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (pg__connect(b, &b->writer, err, err_len) != 0) goto fail;
    if (pg__migrate(&b->writer, err, err_len) != 0) goto fail;
    int rc = nt_store_queue_start(&b->q, b, pg__run_batch, NULL);
    if (rc != 0) {
        snprintf(err, err_len, "cannot start the writer thread: %s", strerror(rc));
        goto fail;
    }
    return b;

fail:
    pg_close(b);
    return NULL;
}

static void pg_close(void *be)
{
    pg_store *b = be;
    if (!b) return;
    nt_store_queue_stop(&b->q);
    if (b->key_created) pthread_key_delete(b->reader_key);
    pthread_mutex_lock(&b->q.lock);
    pg_conn *readers = b->readers;
    b->readers = NULL;
    pthread_mutex_unlock(&b->q.lock);
    while (readers) {
        pg_conn *next = readers->next;
        pg__drop(readers);
        free(readers);
        readers = next;
    }
    pg__drop(&b->writer);
    if (b->cache) {
        pg__cache_clear(b);
        free(b->cache);
    }
    nt_store_queue_destroy(&b->q);
    free(b->url);
    free(b);
}

/* Waits, up to deadline_ms (nt_now_ms clock), for the answer to what was
 * sent on c and checks it. 0 or -1 (failed or too slow). */
static int pg__await(pg_conn *c, int64_t deadline_ms)
{
    int ok = 0;
    for (;;) {
        while (PQisBusy(c->pq)) {
            int64_t left = deadline_ms - nt_now_ms();
            if (left <= 0) return -1;
            struct pollfd pfd = {.fd = PQsocket(c->pq), .events = POLLIN};
            int n = poll(&pfd, 1, (int)left);
            if (n < 0 && errno != EINTR) return -1;
            if (n > 0 && !PQconsumeInput(c->pq)) return -1;
        }
        PGresult *r = PQgetResult(c->pq);
        if (!r) return ok;
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) ok = -1;
        PQclear(r);
    }
}

/* One ping on c (see pg_ping); drops c on failure. */
static int pg__ping_once(pg_conn *c, int64_t deadline)
{
    char name[16];
    snprintf(name, sizeof(name), "s%d", (int)PG_SCHEMA_VERSION);
    if (!c->prepared[PG_SCHEMA_VERSION]) {
        if (!PQsendPrepare(c->pq, name, pg_sql[PG_SCHEMA_VERSION], 0, NULL) ||
            pg__await(c, deadline) != 0)
            goto fail;
        c->prepared[PG_SCHEMA_VERSION] = true;
    }
    if (!PQsendQueryPrepared(c->pq, name, 0, NULL, NULL, NULL, 0) || pg__await(c, deadline) != 0)
        goto fail;
    return 0;

fail:
    /* Half an exchange may be in flight: start afresh next time. */
    pg__drop(c);
    return NT_STORE_EUNAVAILABLE;
}

static int pg_ping(void *be)
{
    pg_store *b = be;
    pg_conn *c = pthread_getspecific(b->reader_key);
    bool reused = c && c->pq;
    if (!(c = pg__reader(b))) return NT_STORE_EUNAVAILABLE;
    /* A read of a real table, with a deadline: a server that accepts but
     * does not answer must still make /readyz say no, quickly. A kept
     * connection may have been closed by a server restart: then one more
     * try on a fresh one. */
    int64_t deadline = nt_now_ms() + PG_PING_TIMEOUT_MS;
    if (pg__ping_once(c, deadline) == 0) return 0;
    if (!reused || pg__ensure(b, c) != 0) return NT_STORE_EUNAVAILABLE;
    return pg__ping_once(c, deadline);
}

static void pg_stats(void *be, nt_store_stats_t *out)
{
    pg_store *b = be;
    nt_store_queue_stats(&b->q, out);
}

/* ---- users ------------------------------------------------------------------ */

/* The user field a unique violation on the users table was about. */
static const char *pg__user_field(const pg_conn *c)
{
    return strstr(c->conflict, "email") ? "email" : "nickname";
}

struct user_create_args {
    const nt_user_new *in;
    nt_user *out;
    const char **conflict_field;
};

static int pg__w_user_create(pg_conn *w, void *arg)
{
    struct user_create_args *a = arg;
    const nt_user_new *in = a->in;
    pg_params p = {0};
    int rc;

    pp_str(&p, in->email);
    if ((rc = pg__int(w, PG_USER_EMAIL_TAKEN, &p, NULL)) != 0) {
        if (rc == 1) *a->conflict_field = "email";
        return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    p = (pg_params){0};
    pp_str(&p, in->nickname);
    pp_int(&p, 0);
    if ((rc = pg__int(w, PG_USER_NICK_TAKEN, &p, NULL)) != 0) {
        if (rc == 1) *a->conflict_field = "nickname";
        return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    p = (pg_params){0};
    pp_str(&p, in->email);
    pp_str(&p, in->nickname);
    pp_str(&p, in->password_hash);
    pp_str(&p, in->gender);
    pp_str(&p, in->birth_date);
    pp_int(&p, in->created_at);
    PGresult *r;
    /* Another process may have taken the name since the checks above: the
     * unique index then says which field. */
    if ((rc = pg__exec(w, PG_USER_INSERT, &p, &r)) != 0) {
        if (rc == NT_STORE_ECONFLICT) *a->conflict_field = pg__user_field(w);
        return rc;
    }
    pg__row_user(r, 0, a->out);
    PQclear(r);
    return 0;
}

static int pg_user_create(void *be, const nt_user_new *in, nt_user *out,
                          const char **conflict_field)
{
    struct user_create_args a = {in, out, conflict_field};
    return pg__write(be, pg__w_user_create, &a);
}

static int pg_user_get(void *be, int64_t id, nt_user *out)
{
    pg_conn *c = pg__reader(be);
    return c ? pg__user_load(c, id, out) : NT_STORE_EUNAVAILABLE;
}

/* Runs a one-text-parameter user query and fills out (and the password
 * hash, column 9, if pw_hash). */
static int pg__user_query(pg_store *b, enum pg_stmt_id id, const char *key, nt_user *out,
                          char *pw_hash, size_t pw_hash_len)
{
    pg_conn *c = pg__reader(b);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_str(&p, key);
    PGresult *r;
    int rc = pg__exec_row(c, id, &p, &r);
    if (rc) return rc;
    pg__row_user(r, 0, out);
    if (pw_hash) pg__str(r, 0, 9, pw_hash, pw_hash_len);
    PQclear(r);
    return 0;
}

static int pg_user_by_nickname(void *be, const char *nickname, nt_user *out)
{
    return pg__user_query(be, PG_USER_BY_NICK, nickname, out, NULL, 0);
}

static int pg_user_for_login(void *be, const char *login, nt_user *out, char *pw_hash,
                             size_t pw_hash_len)
{
    return pg__user_query(be, PG_USER_LOGIN, login, out, pw_hash, pw_hash_len);
}

struct user_update_args {
    int64_t id;
    const nt_user_patch *patch;
    nt_user *out;
};

static int pg__w_user_update(pg_conn *w, void *arg)
{
    struct user_update_args *a = arg;
    const nt_user_patch *pt = a->patch;
    int rc;
    if (pt->nickname) {
        pg_params q = {0};
        pp_str(&q, pt->nickname);
        pp_int(&q, a->id);
        if ((rc = pg__int(w, PG_USER_NICK_TAKEN, &q, NULL)) != 0)
            return rc == 1 ? NT_STORE_ECONFLICT : rc;
    }
    pg_params p = {0};
    pp_int(&p, a->id);
    pp_str(&p, pt->nickname);
    pp_str(&p, pt->bio);
    pp_str(&p, pt->avatar_url);
    pp_str(&p, pt->gender);
    pp_str(&p, pt->birth_date);
    PGresult *r;
    if ((rc = pg__exec(w, PG_USER_UPDATE, &p, &r)) != 0) return rc;
    rc = PQntuples(r) > 0 ? 0 : NT_STORE_ENOTFOUND;
    if (rc == 0 && a->out) pg__row_user(r, 0, a->out);
    PQclear(r);
    return rc;
}

static int pg_user_update(void *be, int64_t id, const nt_user_patch *patch, nt_user *out)
{
    struct user_update_args a = {id, patch, out};
    return pg__write(be, pg__w_user_update, &a);
}

static int pg_user_search(void *be, const char *prefix, int64_t after_id, int limit, nt_user *out,
                          int *n)
{
    char *pattern = nt_store_like_prefix(prefix);
    if (!pattern) return NT_STORE_EUNAVAILABLE;
    pg_conn *c = pg__reader(be);
    int rc = NT_STORE_EUNAVAILABLE;
    if (c) {
        pg_params p = {0};
        pp_str(&p, pattern);
        pp_int(&p, after_id);
        pp_int(&p, limit);
        PGresult *r;
        if ((rc = pg__exec(c, PG_USER_SEARCH, &p, &r)) == 0) {
            for (int row = 0; row < PQntuples(r) && *n < limit; row++)
                pg__row_user(r, row, &out[(*n)++]);
            PQclear(r);
        }
    }
    free(pattern);
    return rc;
}

struct id_ts_args {
    int64_t id;
    int64_t ts;
};

static int pg__w_user_last_seen(pg_conn *w, void *arg)
{
    struct id_ts_args *a = arg;
    pg_params p = {0};
    pp_int(&p, a->id);
    pp_int(&p, a->ts);
    return pg__run_found(w, PG_USER_LAST_SEEN, &p);
}

static int pg_user_set_last_seen(void *be, int64_t id, int64_t ts)
{
    struct id_ts_args a = {id, ts};
    return pg__write(be, pg__w_user_last_seen, &a);
}

/* ---- sessions --------------------------------------------------------------- */

struct session_args {
    int64_t user_id;
    const uint8_t *hash;     /* create: the first token; rotate: the old one */
    const uint8_t *new_hash; /* rotate */
    int64_t expires_at;
    int64_t now;
    nt_session *out;
};

static int pg__token_insert(pg_conn *w, const uint8_t *hash, int64_t session_id, int64_t expires_at)
{
    pg_params p = {0};
    pp_bin(&p, hash, 32);
    pp_int(&p, session_id);
    pp_int(&p, expires_at);
    return pg__run(w, PG_TOKEN_INSERT, &p, NULL);
}

static int pg__w_session_create(pg_conn *w, void *arg)
{
    struct session_args *a = arg;
    int rc = pg__exists(w, PG_USER_EXISTS, a->user_id);
    if (rc) return rc;
    pg_params p = {0};
    pp_int(&p, a->user_id);
    pp_int(&p, a->now);
    int64_t session_id = 0;
    if ((rc = pg__int(w, PG_SESSION_INSERT, &p, &session_id)) != 1)
        return rc < 0 ? rc : NT_STORE_EUNAVAILABLE;
    if ((rc = pg__token_insert(w, a->hash, session_id, a->expires_at)) != 0) return rc;
    if (a->out) {
        a->out->id = session_id;
        a->out->user_id = a->user_id;
    }
    return 0;
}

static int pg_session_create(void *be, int64_t user_id, const uint8_t refresh_hash[32],
                             int64_t expires_at, int64_t now, nt_session *out)
{
    struct session_args a = {user_id, refresh_hash, NULL, expires_at, now, out};
    return pg__write(be, pg__w_session_create, &a);
}

/* Looks a refresh token up (and locks it): 1 found, 0 unknown, <0 error. */
static int pg__token_get(pg_conn *w, const uint8_t *hash, nt_session *session, int64_t *expires_at,
                         bool *used, bool *revoked)
{
    pg_params p = {0};
    pp_bin(&p, hash, 32);
    PGresult *r;
    int rc = pg__exec(w, PG_TOKEN_GET, &p, &r);
    if (rc) return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    session->id = pg__i64(r, 0, 0);
    session->user_id = pg__i64(r, 0, 1);
    *expires_at = pg__i64(r, 0, 2);
    *used = pg__bool(r, 0, 3);
    *revoked = pg__bool(r, 0, 4);
    PQclear(r);
    return 1;
}

static int pg__session_revoke(pg_conn *w, int64_t session_id)
{
    pg_params p = {0};
    pp_int(&p, session_id);
    return pg__run(w, PG_SESSION_REVOKE, &p, NULL);
}

static int pg__w_session_rotate(pg_conn *w, void *arg)
{
    struct session_args *a = arg;
    nt_session session;
    int64_t expires_at;
    bool used, revoked;
    int rc = pg__token_get(w, a->hash, &session, &expires_at, &used, &revoked);
    if (rc <= 0) return rc == 0 ? NT_STORE_ENOTFOUND : rc;
    if (revoked) return NT_STORE_ENOTFOUND;
    if (a->out) *a->out = session;
    if (used) {
        /* A replayed token: end the whole session. */
        rc = pg__session_revoke(w, session.id);
        return rc ? rc : NT_STORE_EREUSED;
    }
    if (expires_at <= a->now) return NT_STORE_ENOTFOUND;
    pg_params p = {0};
    pp_bin(&p, a->hash, 32);
    if ((rc = pg__run(w, PG_TOKEN_USE, &p, NULL)) != 0) return rc;
    /* Used tokens are kept to detect replays, but only until they expire. */
    pg_params q = {0};
    pp_int(&q, session.id);
    pp_int(&q, a->now);
    if ((rc = pg__run(w, PG_TOKEN_PRUNE, &q, NULL)) != 0) return rc;
    return pg__token_insert(w, a->new_hash, session.id, a->expires_at);
}

static int pg_session_rotate(void *be, const uint8_t old_hash[32], const uint8_t new_hash[32],
                             int64_t new_expires_at, int64_t now, nt_session *out)
{
    struct session_args a = {0, old_hash, new_hash, new_expires_at, now, out};
    return pg__write(be, pg__w_session_rotate, &a);
}

static int pg__w_session_revoke(pg_conn *w, void *arg)
{
    struct session_args *a = arg;
    nt_session session;
    int64_t expires_at;
    bool used, revoked;
    int rc = pg__token_get(w, a->hash, &session, &expires_at, &used, &revoked);
    if (rc <= 0) return rc == 0 ? NT_STORE_ENOTFOUND : rc;
    if (a->out) *a->out = session;
    return revoked ? 0 : pg__session_revoke(w, session.id);
}

static int pg_session_revoke(void *be, const uint8_t refresh_hash[32], nt_session *out)
{
    struct session_args a = {0, refresh_hash, NULL, 0, 0, out};
    return pg__write(be, pg__w_session_revoke, &a);
}

static int pg_session_active(void *be, int64_t session_id)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, session_id);
    PGresult *r;
    int rc = pg__exec(c, PG_SESSION_ACTIVE, &p, &r);
    if (rc) return rc;
    rc = PQntuples(r) > 0 && !pg__bool(r, 0, 0) ? 0 : NT_STORE_ENOTFOUND;
    PQclear(r);
    return rc;
}

/* ---- chats and members ------------------------------------------------------ */

static int pg__member_insert(pg_conn *w, enum pg_stmt_id id, int64_t chat_id, int64_t user_id,
                             int role, int64_t now)
{
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, user_id);
    pp_int(&p, role);
    pp_int(&p, now);
    return pg__run(w, id, &p, NULL);
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

static int pg__w_chat_direct(pg_conn *w, void *arg)
{
    struct chat_args *a = arg;
    char key[NT_STORE_DIRECT_KEY_MAX];
    nt_store_direct_key(a->a, a->b, key);
    pg_params p = {0};
    pp_str(&p, key);
    int64_t chat_id = 0;
    int rc = pg__int(w, PG_CHAT_BY_DIRECT_KEY, &p, &chat_id);
    if (rc < 0) return rc;
    if (rc == 0) {
        if ((rc = pg__exists(w, PG_USER_EXISTS, a->a)) != 0 ||
            (rc = pg__exists(w, PG_USER_EXISTS, a->b)) != 0)
            return rc;
        /* Another process may create the pair at the same moment: the unique
         * key makes one insert win and the other read the winner's row. */
        pg_params q = {0};
        pp_int(&q, a->now);
        pp_str(&q, key);
        if ((rc = pg__int(w, PG_CHAT_INSERT_DIRECT, &q, &chat_id)) < 0) return rc;
        if (rc == 1) {
            if ((rc = pg__member_insert(w, PG_MEMBER_INSERT, chat_id, a->a, NT_ROLE_MEMBER,
                                        a->now)) != 0 ||
                (rc = pg__member_insert(w, PG_MEMBER_INSERT, chat_id, a->b, NT_ROLE_MEMBER,
                                        a->now)) != 0)
                return rc;
            *a->created = true;
        } else if ((rc = pg__int(w, PG_CHAT_BY_DIRECT_KEY, &p, &chat_id)) != 1) {
            return rc < 0 ? rc : NT_STORE_EUNAVAILABLE;
        }
    }
    return pg__chat_load(w, chat_id, a->a, a->out);
}

static int pg_chat_direct(void *be, int64_t a, int64_t b, int64_t now, nt_chat *out, bool *created)
{
    struct chat_args args = {.a = a, .b = b, .now = now, .out = out, .created = created};
    return pg__write(be, pg__w_chat_direct, &args);
}

static int pg__w_chat_create(pg_conn *w, void *arg)
{
    struct chat_args *a = arg;
    int rc;
    if (a->a > 0 && (rc = pg__exists(w, PG_USER_EXISTS, a->a)) != 0) return rc;
    for (int i = 0; i < a->n; i++)
        if ((rc = pg__exists(w, PG_USER_EXISTS, a->member_ids[i])) != 0) return rc;
    pg_params p = {0};
    pp_str(&p, a->type);
    pp_str(&p, a->title);
    pp_int(&p, a->now);
    int64_t chat_id = 0;
    if ((rc = pg__int(w, PG_CHAT_INSERT, &p, &chat_id)) != 1)
        return rc < 0 ? rc : NT_STORE_EUNAVAILABLE;
    if (a->a > 0 &&
        (rc = pg__member_insert(w, PG_MEMBER_INSERT, chat_id, a->a, NT_ROLE_OWNER, a->now)) != 0)
        return rc;
    for (int i = 0; i < a->n; i++)
        if ((rc = pg__member_insert(w, PG_MEMBER_INSERT_IGNORE, chat_id, a->member_ids[i],
                                    NT_ROLE_MEMBER, a->now)) != 0)
            return rc;
    return pg__chat_load(w, chat_id, a->a, a->out);
}

static int pg_chat_create(void *be, const char *type, const char *title, int64_t owner_id,
                          const int64_t *member_ids, int n, int64_t now, nt_chat *out)
{
    struct chat_args args = {.a = owner_id,
                             .type = type,
                             .title = title,
                             .member_ids = member_ids,
                             .n = n,
                             .now = now,
                             .out = out};
    return pg__write(be, pg__w_chat_create, &args);
}

static int pg_chat_get(void *be, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    int rc = pg__read_begin(c);
    if (rc) return rc;
    rc = pg__chat_load(c, chat_id, viewer_id, out);
    pg__read_end(c);
    return rc;
}

/* pg__chat_load for nt_store_chats_load. */
static int pg__chat_load_any(void *c, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    return pg__chat_load(c, chat_id, viewer_id, out);
}

static int pg_chat_list(void *be, int64_t user_id, int limit, nt_chat **out, int *n)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    int rc = pg__read_begin(c);
    if (rc) return rc;
    int64_t *ids = NULL;
    int nids = 0;
    pg_params p = {0};
    pp_int(&p, user_id);
    pp_int(&p, limit);
    if ((rc = pg__int_list(c, PG_CHAT_LIST, &p, &ids, &nids)) == 0)
        rc = nt_store_chats_load(c, pg__chat_load_any, ids, nids, user_id, out, n);
    pg__read_end(c);
    free(ids);
    return rc;
}

static int pg_channel_by_title(void *be, const char *title, int64_t *chat_id)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_str(&p, title);
    int rc = pg__int(c, PG_CHANNEL_BY_TITLE, &p, chat_id);
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

static int pg_member_role(void *be, int64_t chat_id, int64_t user_id, int *role)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, user_id);
    int64_t v = 0;
    int rc = pg__int(c, PG_MEMBER_ROLE, &p, &v);
    if (rc == 1 && role) *role = (int)v;
    return rc == 1 ? 0 : rc == 0 ? NT_STORE_ENOTFOUND : rc;
}

struct member_args {
    int64_t chat_id;
    int64_t user_id;
    int role;
};

/* No cache invalidation here: the members trigger moves members_version,
 * which the next run of appends compares under the chat's row lock. */
static int pg__w_member_add(pg_conn *w, void *arg)
{
    struct member_args *a = arg;
    int rc;
    if ((rc = pg__exists(w, PG_CHAT_EXISTS, a->chat_id)) != 0 ||
        (rc = pg__exists(w, PG_USER_EXISTS, a->user_id)) != 0)
        return rc;
    /* The primary key (chat_id, user_id) turns a second add into ECONFLICT. */
    return pg__member_insert(w, PG_MEMBER_INSERT, a->chat_id, a->user_id, a->role, nt_now_ms());
}

static int pg_member_add(void *be, int64_t chat_id, int64_t user_id, int role)
{
    struct member_args a = {chat_id, user_id, role};
    return pg__write(be, pg__w_member_add, &a);
}

static int pg__w_member_remove(pg_conn *w, void *arg)
{
    struct member_args *a = arg;
    pg_params p = {0};
    pp_int(&p, a->chat_id);
    pp_int(&p, a->user_id);
    return pg__run_found(w, PG_MEMBER_DELETE, &p);
}

static int pg_member_remove(void *be, int64_t chat_id, int64_t user_id)
{
    struct member_args a = {chat_id, user_id, 0};
    return pg__write(be, pg__w_member_remove, &a);
}

static int pg_chat_member_ids(void *be, int64_t chat_id, int64_t **ids, int *n)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, chat_id);
    return pg__int_list(c, PG_MEMBER_IDS, &p, ids, n);
}

static int pg_user_partners(void *be, int64_t user_id, int64_t **ids, int *n)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, user_id);
    return pg__int_list(c, PG_PARTNERS, &p, ids, n);
}

static int pg__w_chat_close(pg_conn *w, void *arg)
{
    pg_params p = {0};
    pp_int(&p, *(int64_t *)arg);
    return pg__run_found(w, PG_CHAT_CLOSE, &p);
}

static int pg_chat_close(void *be, int64_t chat_id)
{
    return pg__write(be, pg__w_chat_close, &chat_id);
}

/* ---- messages --------------------------------------------------------------- */

static void pg_append(void *be, nt_append *op)
{
    nt_store_queue_append(&((pg_store *)be)->q, op);
}

static int pg_append_wait(void *be, nt_append *op)
{
    return nt_store_queue_append_wait(&((pg_store *)be)->q, op);
}

/* The rows of a message query as a heap array, in row order. */
static int pg__message_rows(pg_conn *c, enum pg_stmt_id id, const pg_params *p, nt_message **out,
                            int *n)
{
    PGresult *r;
    int rc = pg__exec(c, id, p, &r);
    if (rc) return rc;
    int count = PQntuples(r), got = 0;
    nt_message *arr = NULL;
    if (count > 0 && !(arr = calloc((size_t)count, sizeof(*arr)))) rc = NT_STORE_EUNAVAILABLE;
    for (; rc == 0 && got < count; got++)
        if ((rc = pg__row_message(r, got, &arr[got])) != 0) break;
    PQclear(r);
    if (rc) {
        nt_messages_free(arr, got);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* History: the oldest `limit` with after < seq < before (nt_store_after_fn). */
static int pg__messages_after(void *conn, int64_t chat_id, int64_t after, int64_t before, int limit,
                              nt_message **out, int *n)
{
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, after);
    pp_int(&p, before);
    pp_int(&p, limit);
    return pg__message_rows(conn, PG_MSG_AFTER, &p, out, n);
}

/* History: the newest `limit` with seq < before (nt_store_newest_fn). */
static int pg__messages_newest(void *conn, int64_t chat_id, int64_t before, int limit,
                               nt_message **out, int *n)
{
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, before);
    pp_int(&p, limit);
    return pg__message_rows(conn, PG_MSG_BEFORE, &p, out, n);
}

static int pg_messages(void *be, int64_t chat_id, int64_t before_seq, int64_t after_seq, int limit,
                       nt_message **out, int *n)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    return nt_store_messages_read(c, pg__messages_after, pg__messages_newest, chat_id, before_seq,
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

static int pg__w_message_change(pg_conn *w, void *arg)
{
    struct message_change_args *a = arg;
    nt_message cur;
    int rc = pg__message_load(w, PG_MSG_BY_SEQ_LOCK, a->chat_id, a->seq, &cur);
    if (rc) return rc;
    bool allowed = cur.sender_id == a->sender_id && !cur.deleted;
    nt_message_free(&cur);
    if (!allowed) return NT_STORE_EFORBIDDEN;
    pg_params p = {0};
    pp_int(&p, a->chat_id);
    pp_int(&p, a->seq);
    if (a->text) {
        pp_str(&p, a->text);
        pp_int(&p, a->now);
    }
    if ((rc = pg__run(w, a->text ? PG_MSG_EDIT : PG_MSG_DELETE, &p, NULL)) != 0) return rc;
    return pg__message_load(w, PG_MSG_BY_SEQ, a->chat_id, a->seq, a->out);
}

static int pg_message_edit(void *be, int64_t chat_id, int64_t seq, int64_t sender_id,
                           const char *text, int64_t now, nt_message *out)
{
    struct message_change_args a = {chat_id, seq, sender_id, text, now, out};
    return pg__write(be, pg__w_message_change, &a);
}

static int pg_message_delete(void *be, int64_t chat_id, int64_t seq, int64_t sender_id, int64_t now,
                             nt_message *out)
{
    struct message_change_args a = {chat_id, seq, sender_id, NULL, now, out};
    return pg__write(be, pg__w_message_change, &a);
}

static int pg_export(void *be, int64_t chat_id, int (*fn)(void *arg, const nt_message *m),
                     void *arg)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    int rc = pg__exists(c, PG_CHAT_EXISTS, chat_id);
    if (rc) return rc;
    return nt_store_export_pages(c, pg__messages_after, chat_id, PG_EXPORT_PAGE, fn, arg);
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

static int pg__w_mark(pg_conn *w, void *arg)
{
    struct mark_args *a = arg;
    pg_params p = {0};
    pp_int(&p, a->chat_id);
    pp_int(&p, a->user_id);
    PGresult *r;
    int rc = pg__exec_row(w, PG_MARK_GET, &p, &r);
    if (rc) return rc;
    int64_t delivered = pg__i64(r, 0, 0);
    int64_t read = pg__i64(r, 0, 1);
    int64_t last_seq = pg__i64(r, 0, 2);
    PQclear(r);

    *a->moved = nt_store_mark_advance(a->kind, a->seq, last_seq, delivered, read, a->delivered_seq,
                                      a->read_seq);
    if (!*a->moved) return 0;
    pp_int(&p, *a->delivered_seq);
    pp_int(&p, *a->read_seq);
    return pg__run(w, PG_MARK_SET, &p, NULL);
}

static int pg_mark(void *be, int64_t chat_id, int64_t user_id, int kind, int64_t seq,
                   int64_t *delivered_seq, int64_t *read_seq, bool *moved)
{
    struct mark_args a = {chat_id, user_id, kind, seq, delivered_seq, read_seq, moved};
    return pg__write(be, pg__w_mark, &a);
}

/* ---- friends and blocks ------------------------------------------------------ */

/* Runs a statement with two ids ($1, $2) and, when now >= 0, a time ($3);
 * *changed (may be NULL) gets the rows changed. */
static int pg__run_pair(pg_conn *w, enum pg_stmt_id id, int64_t a, int64_t b, int64_t now,
                        int64_t *changed)
{
    pg_params p = {0};
    pp_int(&p, a);
    pp_int(&p, b);
    if (now >= 0) pp_int(&p, now);
    return pg__run(w, id, &p, changed);
}

/* 1 if the two-id query finds a row (*v = its first column), 0 if not,
 * <0 on error. */
static int pg__pair_int(pg_conn *w, enum pg_stmt_id id, int64_t a, int64_t b, int64_t *v)
{
    pg_params p = {0};
    pp_int(&p, a);
    pp_int(&p, b);
    return pg__int(w, id, &p, v);
}

/* Locks the two users; ENOTFOUND unless both exist. */
static int pg__pair_lock(pg_conn *w, int64_t a, int64_t b)
{
    pg_params p = {0};
    pp_int(&p, a);
    pp_int(&p, b);
    PGresult *r;
    int rc = pg__exec(w, PG_PAIR_LOCK, &p, &r);
    if (rc) return rc;
    rc = PQntuples(r) == 2 ? 0 : NT_STORE_ENOTFOUND;
    PQclear(r);
    return rc;
}

struct friend_args {
    int64_t a, b; /* request: from, to; accept/reject: user, from; block: blocker, blocked */
    int64_t now;
    int *outcome;
};

static int pg__w_friend_request(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int64_t blocker = 0, changed = 0;
    int rc;
    if ((rc = pg__pair_lock(w, a->a, a->b)) != 0) return rc;
    if ((rc = pg__pair_int(w, PG_BLOCK_PAIR, a->a, a->b, &blocker)) < 0) return rc;
    if (rc == 1) {
        *a->outcome = blocker == a->a ? NT_FRIEND_BLOCKED_BY_ME : NT_FRIEND_BLOCKED_BY_THEM;
        return NT_STORE_EFORBIDDEN;
    }
    if ((rc = pg__pair_int(w, PG_FRIEND_EXISTS, a->a, a->b, NULL)) != 0) {
        if (rc == 1) *a->outcome = NT_FRIEND_ALREADY;
        return rc < 0 ? rc : 0;
    }
    if ((rc = pg__pair_int(w, PG_REQ_EXISTS, a->b, a->a, NULL)) < 0) return rc;
    if (rc == 1) {
        /* They had asked first: this request is an acceptance. */
        if ((rc = pg__run_pair(w, PG_REQ_DELETE_PAIR, a->a, a->b, -1, NULL)) != 0 ||
            (rc = pg__run_pair(w, PG_FRIEND_INSERT, a->a, a->b, a->now, NULL)) != 0)
            return rc;
        *a->outcome = NT_FRIEND_MADE;
        return 0;
    }
    if ((rc = pg__run_pair(w, PG_REQ_INSERT, a->a, a->b, a->now, &changed)) != 0) return rc;
    *a->outcome = changed ? NT_FRIEND_REQUESTED : NT_FRIEND_PENDING;
    return 0;
}

static int pg_friend_request(void *be, int64_t from_id, int64_t to_id, int64_t now, int *outcome)
{
    struct friend_args a = {from_id, to_id, now, outcome};
    return pg__write(be, pg__w_friend_request, &a);
}

static int pg__w_friend_accept(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int64_t changed = 0;
    int rc = pg__run_pair(w, PG_REQ_DELETE, a->b, a->a, -1, &changed);
    if (rc) return rc;
    if (changed == 0) return NT_STORE_ENOTFOUND;
    /* A request the other way, if any, is answered too. */
    if ((rc = pg__run_pair(w, PG_REQ_DELETE, a->a, a->b, -1, NULL)) != 0) return rc;
    return pg__run_pair(w, PG_FRIEND_INSERT, a->a, a->b, a->now, NULL);
}

static int pg_friend_accept(void *be, int64_t user_id, int64_t from_id, int64_t now)
{
    struct friend_args a = {user_id, from_id, now, NULL};
    return pg__write(be, pg__w_friend_accept, &a);
}

static int pg__w_friend_reject(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int64_t changed = 0;
    int rc = pg__run_pair(w, PG_REQ_DELETE, a->b, a->a, -1, &changed);
    if (rc) return rc;
    return changed ? 0 : NT_STORE_ENOTFOUND;
}

static int pg_friend_reject(void *be, int64_t user_id, int64_t from_id)
{
    struct friend_args a = {user_id, from_id, 0, NULL};
    return pg__write(be, pg__w_friend_reject, &a);
}

static int pg__w_friend_remove(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int64_t friends = 0, requests = 0;
    int rc;
    if ((rc = pg__run_pair(w, PG_FRIEND_DELETE, a->a, a->b, -1, &friends)) != 0 ||
        (rc = pg__run_pair(w, PG_REQ_DELETE, a->a, a->b, -1, &requests)) != 0)
        return rc;
    return friends + requests ? 0 : NT_STORE_ENOTFOUND;
}

static int pg_friend_remove(void *be, int64_t user_id, int64_t other_id)
{
    struct friend_args a = {user_id, other_id, 0, NULL};
    return pg__write(be, pg__w_friend_remove, &a);
}

static int pg_friend_list(void *be, int64_t user_id, int kind, int limit, nt_user **out, int *n)
{
    static const enum pg_stmt_id ids[] = {
        [NT_LIST_FRIENDS] = PG_LIST_FRIENDS,
        [NT_LIST_INCOMING] = PG_LIST_INCOMING,
        [NT_LIST_OUTGOING] = PG_LIST_OUTGOING,
        [NT_LIST_BLOCKED] = PG_LIST_BLOCKED,
    };
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, user_id);
    pp_int(&p, limit);
    PGresult *r;
    int rc = pg__exec(c, ids[kind], &p, &r);
    if (rc) return rc;
    int count = PQntuples(r);
    nt_user *arr = NULL;
    if (count > 0 && !(arr = calloc((size_t)count, sizeof(*arr)))) {
        PQclear(r);
        return NT_STORE_EUNAVAILABLE;
    }
    for (int i = 0; i < count; i++)
        pg__row_user(r, i, &arr[i]);
    PQclear(r);
    *out = arr;
    *n = count;
    return 0;
}

static int pg__w_block(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    int rc;
    if ((rc = pg__pair_lock(w, a->a, a->b)) != 0 ||
        (rc = pg__run_pair(w, PG_BLOCK_INSERT, a->a, a->b, a->now, NULL)) != 0 ||
        (rc = pg__run_pair(w, PG_FRIEND_DELETE, a->a, a->b, -1, NULL)) != 0 ||
        (rc = pg__run_pair(w, PG_REQ_DELETE_PAIR, a->a, a->b, -1, NULL)) != 0)
        return rc;
    return 0;
}

static int pg_block(void *be, int64_t blocker_id, int64_t blocked_id, int64_t now)
{
    struct friend_args a = {blocker_id, blocked_id, now, NULL};
    return pg__write(be, pg__w_block, &a);
}

static int pg__w_unblock(pg_conn *w, void *arg)
{
    struct friend_args *a = arg;
    return pg__run_pair(w, PG_BLOCK_DELETE, a->a, a->b, -1, NULL);
}

static int pg_unblock(void *be, int64_t blocker_id, int64_t blocked_id)
{
    struct friend_args a = {blocker_id, blocked_id, 0, NULL};
    return pg__write(be, pg__w_unblock, &a);
}

static int pg_block_peers(void *be, int64_t user_id, int64_t **ids, int *n)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, user_id);
    return pg__int_list(c, PG_BLOCK_PEERS, &p, ids, n);
}

/* ---- matching and random chats ----------------------------------------------- */

static int pg_match_prefs_get(void *be, int64_t user_id, nt_match_prefs *out)
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, user_id);
    PGresult *r;
    int rc = pg__exec_row(c, PG_PREFS_GET, &p, &r);
    if (rc) return rc;
    out->genders = (unsigned)pg__i64(r, 0, 0);
    out->age_min = (int)pg__i64(r, 0, 1);
    out->age_max = (int)pg__i64(r, 0, 2);
    nt_store_tags_split(PQgetvalue(r, 0, 3), out);
    PQclear(r);
    return 0;
}

struct prefs_args {
    int64_t user_id;
    const nt_match_prefs *in;
    const char *tags;
    int64_t now;
};

static int pg__w_match_prefs_set(pg_conn *w, void *arg)
{
    struct prefs_args *a = arg;
    int rc = pg__exists(w, PG_USER_EXISTS, a->user_id);
    if (rc) return rc;
    pg_params p = {0};
    pp_int(&p, a->user_id);
    pp_int(&p, (int64_t)a->in->genders);
    pp_int(&p, a->in->age_min);
    pp_int(&p, a->in->age_max);
    pp_str(&p, a->tags);
    pp_int(&p, a->now);
    return pg__run(w, PG_PREFS_SET, &p, NULL);
}

static int pg_match_prefs_set(void *be, int64_t user_id, const nt_match_prefs *in, int64_t now)
{
    char tags[NT_STORE_TAGS_MAX];
    nt_store_tags_join(in, tags);
    struct prefs_args a = {user_id, in, tags, now};
    return pg__write(be, pg__w_match_prefs_set, &a);
}

struct random_args {
    int64_t a, b;
    const char *alias_a, *alias_b;
    int64_t now;
    nt_chat *out;
};

static int pg__random_member(pg_conn *w, int64_t chat_id, int64_t user_id, const char *alias,
                             int64_t now)
{
    int rc = pg__member_insert(w, PG_MEMBER_INSERT, chat_id, user_id, NT_ROLE_MEMBER, now);
    if (rc) return rc;
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, user_id);
    pp_str(&p, alias);
    return pg__run(w, PG_RANDOM_INSERT, &p, NULL);
}

static int pg__w_chat_random(pg_conn *w, void *arg)
{
    struct random_args *a = arg;
    int rc;
    if ((rc = pg__exists(w, PG_USER_EXISTS, a->a)) != 0 ||
        (rc = pg__exists(w, PG_USER_EXISTS, a->b)) != 0)
        return rc;
    pg_params p = {0};
    pp_str(&p, "random");
    pp_str(&p, "");
    pp_int(&p, a->now);
    int64_t chat_id = 0;
    if ((rc = pg__int(w, PG_CHAT_INSERT, &p, &chat_id)) != 1)
        return rc < 0 ? rc : NT_STORE_EUNAVAILABLE;
    if ((rc = pg__random_member(w, chat_id, a->a, a->alias_a, a->now)) != 0 ||
        (rc = pg__random_member(w, chat_id, a->b, a->alias_b, a->now)) != 0)
        return rc;
    return pg__chat_load(w, chat_id, a->a, a->out);
}

static int pg_chat_random(void *be, int64_t a, int64_t b, const char *alias_a, const char *alias_b,
                          int64_t now, nt_chat *out)
{
    struct random_args args = {a, b, alias_a, alias_b, now, out};
    return pg__write(be, pg__w_chat_random, &args);
}

/* nt_store_chat_random_async: the chat is made in the writer's batch like
 * pg_chat_random's, and the job tells the request after the commit. */
typedef struct pg_random_job {
    pg_job job; /* first: the queue hands back &job.base */
    struct random_args args;
    nt_store_random_req req;
} pg_random_job;

static void pg__random_told(nt_store_job *base)
{
    pg_random_job *j = (pg_random_job *)base;
    nt_store_random_req_tell(&j->req, base->status);
    free(j);
}

static int pg_chat_random_async(void *be, int64_t a, int64_t b, const char *alias_a,
                                const char *alias_b, int64_t now, nt_store_chat_done done,
                                void *arg)
{
    pg_random_job *j = calloc(1, sizeof *j);
    if (!j) return NT_STORE_EUNAVAILABLE;
    nt_store_random_req_init(&j->req, a, b, alias_a, alias_b, now, done, arg);
    j->args = (struct random_args){a, b, j->req.alias_a, j->req.alias_b, now, &j->req.out};
    j->job.base.generic = true;
    j->job.base.done = pg__random_told;
    j->job.fn = pg__w_chat_random;
    j->job.arg = &j->args;
    int rc = nt_store_queue_submit(&((pg_store *)be)->q, &j->job.base);
    if (rc != 0) free(j);
    return rc;
}

struct reveal_args {
    int64_t chat_id, user_id;
    bool *shown_now;
};

static int pg__w_chat_reveal(pg_conn *w, void *arg)
{
    struct reveal_args *a = arg;
    pg_params p = {0};
    pp_int(&p, a->chat_id);
    PGresult *r;
    int rc = pg__exec(w, PG_RANDOM_LOCK, &p, &r);
    if (rc) return rc;
    bool found = false, hidden = false;
    int others_pending = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        if (pg__i64(r, row, 0) == a->user_id) {
            found = true;
            hidden = pg__bool(r, row, 2);
        } else if (!pg__bool(r, row, 1)) {
            others_pending++;
        }
    }
    PQclear(r);
    if (!found) return NT_STORE_ENOTFOUND;
    if (!hidden) return 0; /* both agreed long ago */
    if ((rc = pg__run_pair(w, PG_RANDOM_REVEAL, a->chat_id, a->user_id, -1, NULL)) != 0) return rc;
    if (others_pending > 0) return 0;
    /* The next run of appends reads the aliases afresh: nothing to forget. */
    if ((rc = pg__run(w, PG_RANDOM_SHOW, &p, NULL)) != 0) return rc;
    *a->shown_now = true;
    return 0;
}

static int pg_chat_reveal(void *be, int64_t chat_id, int64_t user_id, bool *shown_now)
{
    struct reveal_args a = {chat_id, user_id, shown_now};
    return pg__write(be, pg__w_chat_reveal, &a);
}

static int pg_random_alias(void *be, int64_t chat_id, int64_t user_id, char alias[NT_ALIAS_MAX])
{
    pg_conn *c = pg__reader(be);
    if (!c) return NT_STORE_EUNAVAILABLE;
    pg_params p = {0};
    pp_int(&p, chat_id);
    pp_int(&p, user_id);
    PGresult *r;
    int rc = pg__exec(c, PG_RANDOM_ALIAS, &p, &r);
    if (rc) return rc;
    rc = PQntuples(r) > 0 ? 0 : NT_STORE_ENOTFOUND;
    if (rc == 0) pg__str(r, 0, 0, alias, NT_ALIAS_MAX);
    PQclear(r);
    return rc;
}

const nt_store_ops nt_store_pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .stats = pg_stats,
    .user_create = pg_user_create,
    .user_get = pg_user_get,
    .user_by_nickname = pg_user_by_nickname,
    .user_for_login = pg_user_for_login,
    .user_update = pg_user_update,
    .user_search = pg_user_search,
    .user_set_last_seen = pg_user_set_last_seen,
    .session_create = pg_session_create,
    .session_rotate = pg_session_rotate,
    .session_revoke = pg_session_revoke,
    .session_active = pg_session_active,
    .chat_direct = pg_chat_direct,
    .chat_create = pg_chat_create,
    .chat_get = pg_chat_get,
    .chat_list = pg_chat_list,
    .channel_by_title = pg_channel_by_title,
    .member_role = pg_member_role,
    .member_add = pg_member_add,
    .member_remove = pg_member_remove,
    .chat_member_ids = pg_chat_member_ids,
    .user_partners = pg_user_partners,
    .chat_close = pg_chat_close,
    .append = pg_append,
    .append_wait = pg_append_wait,
    .messages = pg_messages,
    .message_edit = pg_message_edit,
    .message_delete = pg_message_delete,
    .export_chat = pg_export,
    .mark = pg_mark,
    .friend_request = pg_friend_request,
    .friend_accept = pg_friend_accept,
    .friend_reject = pg_friend_reject,
    .friend_remove = pg_friend_remove,
    .friend_list = pg_friend_list,
    .block = pg_block,
    .unblock = pg_unblock,
    .block_peers = pg_block_peers,
    .match_prefs_get = pg_match_prefs_get,
    .match_prefs_set = pg_match_prefs_set,
    .chat_random = pg_chat_random,
    .chat_random_async = pg_chat_random_async,
    .chat_reveal = pg_chat_reveal,
    .random_alias = pg_random_alias,
};
