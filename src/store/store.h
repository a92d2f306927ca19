/*
 * The store: every durable read and write of Natter, behind one interface.
 * No SQL exists outside src/store/. Back ends: SQLite (store_sqlite.c, the
 * default, one file in WAL mode) and later PostgreSQL; a service never knows
 * which one it runs on.
 *
 * Threads. Every function here may block (disk, network round trip), so none
 * may be called on a loop thread; call them from worker threads. The one
 * exception is nt_store_append(), which only enqueues and is safe anywhere.
 * Writes are executed by the store's single writer thread, which takes every
 * write that arrived while the previous commit ran and runs them in one
 * transaction with one fsync (group commit); each write sits in its own
 * savepoint so one failing write does not undo the others. The synchronous
 * write functions wait for the commit of their batch before returning.
 * Reads run on a per-thread read connection and see committed data.
 *
 * Errors: 0 on success or one of the NT_STORE_E* codes below.
 */
#ifndef NT_STORE_H
#define NT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/histogram.h"

enum {
    NT_STORE_OK = 0,
    NT_STORE_ENOTFOUND = -2,
    NT_STORE_ECONFLICT = -3,    /* unique key taken */
    NT_STORE_EFORBIDDEN = -4,   /* not a member, not the sender, chat closed */
    NT_STORE_EREUSED = -5,      /* refresh token used twice: session revoked */
    NT_STORE_EUNAVAILABLE = -6, /* the database failed; nothing was written */
    NT_STORE_EINVAL = -7,
};

/* Field sizes, with room for the NUL. Texts are bounded by API.md limits. */
#define NT_NICK_MAX 33
#define NT_EMAIL_MAX 255
#define NT_BIO_MAX 2001 /* 500 code points of up to 4 bytes */
#define NT_URL_MAX 1025
#define NT_GENDER_MAX 8
#define NT_DATE_MAX 11
#define NT_TITLE_MAX 513 /* 128 code points */
#define NT_CLIENT_ID_MAX 65
#define NT_TYPE_MAX 8
#define NT_ALIAS_MAX 48     /* a random-chat alias, "Brave Otter" */
#define NT_INTERESTS_MAX 10 /* interest tags per user */
#define NT_INTEREST_MAX 33  /* one tag: 1..32 bytes */

typedef struct nt_store nt_store;

/* Opens a store from a URL: "sqlite:PATH" (the file is created if missing).
 * Runs the numbered migrations and starts the writer thread. On failure
 * returns NULL and writes a one-line reason into err. */
nt_store *nt_store_open(const char *url, char *err, size_t err_len);
/* Finishes every queued write, stops the writer, closes everything. */
void nt_store_close(nt_store *s);
/* 0 if the database answers (for /readyz). */
int nt_store_ping(nt_store *s);

/* Group-commit counters since open, for /metrics. A batch is one write
 * transaction; hist counts batches by size: 1, 2-4, 5-16, 17-64, 65-256,
 * 257 and more ops. queued is the number of writes waiting right now.
 * commit: per batch, from its first statement to its commit being durable;
 * write: per write, from its arrival in the queue to that commit (it waits
 * for the commit in progress, then for its own). */
#define NT_STORE_HIST_BUCKETS 6
typedef struct nt_store_stats_t {
    uint64_t batches;
    uint64_t ops;
    uint64_t hist[NT_STORE_HIST_BUCKETS];
    uint64_t queued;
    nt_histogram commit;
    nt_histogram write;
} nt_store_stats_t;
/* Copies a consistent snapshot of the counters into out. Safe on any thread. */
void nt_store_stats(nt_store *s, nt_store_stats_t *out);

/* ---- users ----------------------------------------------------------- */

typedef struct nt_user {
    int64_t id;
    char nickname[NT_NICK_MAX];
    char email[NT_EMAIL_MAX];
    char bio[NT_BIO_MAX];
    char avatar_url[NT_URL_MAX];
    char gender[NT_GENDER_MAX];   /* "" = null */
    char birth_date[NT_DATE_MAX]; /* "YYYY-MM-DD" or "" = null */
    int64_t created_at;
    int64_t last_seen; /* 0 = never */
} nt_user;

typedef struct nt_user_new {
    const char *email;
    const char *nickname;
    const char *password_hash; /* Argon2id encoded string */
    const char *gender;        /* NULL = null */
    const char *birth_date;    /* NULL = null */
    int64_t created_at;
} nt_user_new;

/* Creates a user. Email and nickname are unique case-insensitively:
 * NT_STORE_ECONFLICT with *conflict_field = "email" or "nickname". */
int nt_store_user_create(nt_store *s, const nt_user_new *in, nt_user *out,
                         const char **conflict_field);
int nt_store_user_get(nt_store *s, int64_t id, nt_user *out);
int nt_store_user_by_nickname(nt_store *s, const char *nickname, nt_user *out);
/* Finds a user by email or nickname (case-insensitive) and returns the
 * password hash too (pw_hash_len >= 128). */
int nt_store_user_for_login(nt_store *s, const char *login, nt_user *out, char *pw_hash,
                            size_t pw_hash_len);

/* A partial update: NULL fields are left alone; "" sets gender/birth_date
 * to null and clears bio/avatar_url. Nickname conflicts: NT_STORE_ECONFLICT. */
typedef struct nt_user_patch {
    const char *nickname;
    const char *bio;
    const char *avatar_url;
    const char *gender;
    const char *birth_date;
} nt_user_patch;
int nt_store_user_update(nt_store *s, int64_t id, const nt_user_patch *patch, nt_user *out);

/* Nickname prefix search, case-insensitive, ordered by id, ids > after_id.
 * Fills out[0..limit) and sets *n. */
int nt_store_user_search(nt_store *s, const char *prefix, int64_t after_id, int limit, nt_user *out,
                         int *n);
int nt_store_user_set_last_seen(nt_store *s, int64_t id, int64_t ts);

/* ---- sessions and refresh tokens ------------------------------------- */

/* Refresh tokens are stored as SHA-256 hashes only. */
typedef struct nt_session {
    int64_t id;
    int64_t user_id;
} nt_session;

/* Starts a session with its first refresh token. */
int nt_store_session_create(nt_store *s, int64_t user_id, const uint8_t refresh_hash[32],
                            int64_t expires_at, int64_t now, nt_session *out);
/* Rotation: the token `old_hash` is marked used and `new_hash` becomes the
 * session's current token. Unknown, expired or revoked: ENOTFOUND. Already
 * used: the whole session is revoked in the same transaction, EREUSED. */
int nt_store_session_rotate(nt_store *s, const uint8_t old_hash[32], const uint8_t new_hash[32],
                            int64_t new_expires_at, int64_t now, nt_session *out);
/* Logout: revokes the session the token belongs to (used or not). */
int nt_store_session_revoke(nt_store *s, const uint8_t refresh_hash[32], nt_session *out);
/* 0 if the session exists and is not revoked, else ENOTFOUND. */
int nt_store_session_active(nt_store *s, int64_t session_id);

/* ---- chats and members ----------------------------------------------- */

enum { NT_ROLE_MEMBER = 0, NT_ROLE_OWNER = 1 };

typedef struct nt_member {
    int64_t user_id;
    int role;
    int64_t delivered_seq;
    int64_t read_seq;
    /* Random chats: the member's alias while the chat is anonymous (not yet
     * revealed by both), else ""; and whether this member agreed to reveal. */
    char alias[NT_ALIAS_MAX];
    bool revealed;
} nt_member;

typedef struct nt_message {
    int64_t id;
    int64_t chat_id;
    int64_t seq;
    int64_t sender_id;
    char *text; /* heap, NUL-terminated; owned by the message */
    size_t text_len;
    int64_t ts;
    char client_id[NT_CLIENT_ID_MAX]; /* "" = null */
    int64_t edited_at;                /* 0 = null */
    bool deleted;
    char *extra_json; /* NULL, or members of a JSON object to merge into the
                         message object, e.g. "\"pow\":{...}" (heap) */
    /* The sender's alias when the message is in a random chat that is still
     * anonymous: views then hide sender_id. "" otherwise. */
    char sender_alias[NT_ALIAS_MAX];
} nt_message;

void nt_message_free(nt_message *m); /* frees text and extra_json, not m */
void nt_messages_free(nt_message *arr, int n);

typedef struct nt_chat {
    int64_t id;
    char type[NT_TYPE_MAX]; /* "direct", "group", "channel", "random" */
    char title[NT_TITLE_MAX];
    int64_t created_at;
    int64_t last_seq;
    int64_t last_activity; /* ts of the last message, else created_at */
    bool closed;           /* a random chat that ended */
    nt_member *members;    /* heap */
    int nmembers;
    bool has_last_message;
    nt_message last_message;
    int64_t unread; /* for the viewer: last_seq - read_seq, minus own msgs not counted */
} nt_chat;

void nt_chat_free(nt_chat *c); /* frees members and last_message, not c */
void nt_chats_free(nt_chat *arr, int n);

/* The direct chat of a and b, created if missing (*created says which).
 * Idempotent under concurrency: the pair is a unique key. */
int nt_store_chat_direct(nt_store *s, int64_t a, int64_t b, int64_t now, nt_chat *out,
                         bool *created);
/* A group or channel (type "group"/"channel"), or a random chat; owner_id
 * becomes owner (0 = no owner, e.g. random chats or the lobby), the others
 * members. Unknown member ids: ENOTFOUND. */
int nt_store_chat_create(nt_store *s, const char *type, const char *title, int64_t owner_id,
                         const int64_t *member_ids, int n, int64_t now, nt_chat *out);
/* A chat with members, last message, and unread count for viewer_id. */
int nt_store_chat_get(nt_store *s, int64_t chat_id, int64_t viewer_id, nt_chat *out);
/* The viewer's chats, most recent activity first, at most `limit`. *out is
 * heap (nt_chats_free). */
int nt_store_chat_list(nt_store *s, int64_t user_id, int limit, nt_chat **out, int *n);
/* The channel with this exact title (e.g. "lobby"), or ENOTFOUND. */
int nt_store_channel_by_title(nt_store *s, const char *title, int64_t *chat_id);
/* The member's role, or ENOTFOUND when user_id is not a member. */
int nt_store_member_role(nt_store *s, int64_t chat_id, int64_t user_id, int *role);
/* ECONFLICT if already a member, ENOTFOUND if chat or user is missing. */
int nt_store_member_add(nt_store *s, int64_t chat_id, int64_t user_id, int role);
int nt_store_member_remove(nt_store *s, int64_t chat_id, int64_t user_id);
/* All member ids of a chat (heap array, free()). */
int nt_store_chat_member_ids(nt_store *s, int64_t chat_id, int64_t **ids, int *n);
/* Presence partners of user_id: users who share a chat of type direct with
 * them, and their friends, without the users user_id blocked. Partners of
 * random chats are not included (they are anonymous). Heap array, free(). */
int nt_store_user_partners(nt_store *s, int64_t user_id, int64_t **ids, int *n);
/* Marks a random chat closed: it takes no more messages. */
int nt_store_chat_close(nt_store *s, int64_t chat_id);

/* ---- member sets ------------------------------------------------------- */

/*
 * An immutable, reference-counted, ascending set of user ids: the members of
 * a chat as the store's writer caches them. The cache holds one reference;
 * every append result that lists the chat's members holds another, so a
 * message to a lobby of 100,000 members costs one atomic increment instead
 * of an 800 KB copy. When membership changes the cache drops its reference
 * and loads a new set; results still holding the old one keep it alive.
 * ids and n never change after nt_member_set_new; refs belongs to the
 * functions below. Any thread may ref and unref.
 */
typedef struct nt_member_set {
    _Atomic int refs;
    int n;
    int64_t ids[]; /* ascending, no repeats */
} nt_member_set;

/* A new set (refs 1) of the n ids (copied, sorted, repeats dropped; ids may
 * be NULL when n is 0). NULL when out of memory or n < 0. */
nt_member_set *nt_member_set_new(const int64_t *ids, int n);
/* One more reference to set (NULL: NULL). Returns set. */
nt_member_set *nt_member_set_ref(nt_member_set *set);
/* Drops one reference; the last one frees the set. NULL is ignored. */
void nt_member_set_unref(nt_member_set *set);
/* Whether user_id is in set (binary search; NULL holds nobody). */
bool nt_member_set_contains(const nt_member_set *set, int64_t user_id);

/* ---- messages ---------------------------------------------------------- */

/*
 * One message to store: the hot path. Filled by the caller, executed by the
 * writer thread inside the next group commit:
 *  - (sender_id, client_id) already stored: status 0, duplicate = true and
 *    msg is the first message (nothing new is written);
 *  - chat missing: ENOTFOUND; sender not a member or chat closed: EFORBIDDEN;
 *  - a chat of exactly two members where the other member blocked the
 *    sender: EFORBIDDEN (direct, random, or a two-member group);
 *  - otherwise the chat's next seq is taken and the message written.
 * On success member_ids lists every member of the chat, ascending, so the
 * caller can route deliveries without another read. They are the ids of
 * `members`, the store's own shared member set of the chat, which the op
 * holds a reference to (no copy per message); nt_append_release drops it.
 * done() runs on the writer thread after the commit; it must be short
 * (typically: push to a queue and wake a loop).
 */
typedef struct nt_append {
    /* in */
    int64_t chat_id;
    int64_t sender_id;
    const char *text; /* owned by the caller until done() */
    size_t text_len;
    char client_id[NT_CLIENT_ID_MAX]; /* "" = none */
    const char *extra_json;           /* NULL or object members, see nt_message */
    int64_t ts;
    void (*done)(struct nt_append *op);
    void *user;
    /* out */
    int status;
    bool duplicate;
    nt_message msg;            /* msg.text/extra_json are copies owned by the op */
    nt_member_set *members;    /* a reference owned by the op, or NULL */
    const int64_t *member_ids; /* members->ids (NULL when there are none) */
    int nmembers;
    /* store-private */
    struct nt_append *next;
    void *waiter;
    uint64_t queued_ns; /* when it was queued (monotonic) */
} nt_append;

void nt_store_append(nt_store *s, nt_append *op);
/* Blocking variant for worker threads: enqueues and waits for the commit. */
int nt_store_append_wait(nt_store *s, nt_append *op);
/* Frees what the store put in the op's out fields and drops its reference
 * to the member set. */
void nt_append_release(nt_append *op);

/* History, ascending by seq: seq > after_seq (if >= 0; pass -1 for none)
 * and seq < before_seq (if > 0); with only before_seq or neither, the newest
 * `limit` of the range; with after_seq, the oldest `limit` after it (so
 * after_seq 0 reads from the first message). *out is heap. */
int nt_store_messages(nt_store *s, int64_t chat_id, int64_t before_seq, int64_t after_seq,
                      int limit, nt_message **out, int *n);
/* Edit or delete by the sender: ENOTFOUND no such message, EFORBIDDEN not
 * the sender (or already deleted). Deleting clears the text. out gets the
 * new state. */
int nt_store_message_edit(nt_store *s, int64_t chat_id, int64_t seq, int64_t sender_id,
                          const char *text, int64_t now, nt_message *out);
int nt_store_message_delete(nt_store *s, int64_t chat_id, int64_t seq, int64_t sender_id,
                            int64_t now, nt_message *out);
/* Calls fn for every message of the chat in seq order, reading in pages so
 * memory stays bounded. Stops early if fn returns non-zero (returned). */
int nt_store_export(nt_store *s, int64_t chat_id, int (*fn)(void *arg, const nt_message *m),
                    void *arg);

/* Receipt markers: moves the member's delivered or read marker forward to
 * min(seq, last_seq), never back; reading implies delivered. *moved tells if
 * anything changed; the new values come back either way. ENOTFOUND when not
 * a member. */
enum { NT_MARK_DELIVERED = 1, NT_MARK_READ = 2 };
int nt_store_mark(nt_store *s, int64_t chat_id, int64_t user_id, int kind, int64_t seq,
                  int64_t *delivered_seq, int64_t *read_seq, bool *moved);

/* ---- friends and blocks -------------------------------------------------- */

/* What nt_store_friend_request did. */
enum {
    NT_FRIEND_REQUESTED = 1,   /* a new pending request from -> to */
    NT_FRIEND_PENDING,         /* the same request was already pending */
    NT_FRIEND_MADE,            /* to had asked from already: now friends */
    NT_FRIEND_ALREADY,         /* they were friends already */
    NT_FRIEND_BLOCKED_BY_ME,   /* EFORBIDDEN: from blocked to */
    NT_FRIEND_BLOCKED_BY_THEM, /* EFORBIDDEN: to blocked from */
};
/* A friend request from -> to, in one transaction: ENOTFOUND when either
 * user is missing, EINVAL for from == to, EFORBIDDEN when a block exists
 * either way (*outcome says which); otherwise 0 and *outcome. A request to
 * someone who had already asked makes both friends at once. */
int nt_store_friend_request(nt_store *s, int64_t from_id, int64_t to_id, int64_t now, int *outcome);
/* user_id accepts the pending request from from_id: both become friends.
 * ENOTFOUND when there is no such request. */
int nt_store_friend_accept(nt_store *s, int64_t user_id, int64_t from_id, int64_t now);
/* user_id rejects (deletes) the pending request from from_id; ENOTFOUND if none. */
int nt_store_friend_reject(nt_store *s, int64_t user_id, int64_t from_id);
/* Ends the friendship of user_id and other_id, and withdraws a pending
 * request user_id -> other_id. ENOTFOUND when there was neither. */
int nt_store_friend_remove(nt_store *s, int64_t user_id, int64_t other_id);

enum { NT_LIST_FRIENDS = 1, NT_LIST_INCOMING, NT_LIST_OUTGOING, NT_LIST_BLOCKED };
/* The users of one list of user_id (friends, senders of incoming requests,
 * receivers of outgoing ones, users user_id blocked), by id, at most limit.
 * *out is heap (free()). */
int nt_store_friend_list(nt_store *s, int64_t user_id, int kind, int limit, nt_user **out, int *n);

/* blocker blocks blocked (idempotent): their friendship and the pending
 * requests both ways are deleted in the same transaction. ENOTFOUND when a
 * user is missing, EINVAL for blocker == blocked. */
int nt_store_block(nt_store *s, int64_t blocker_id, int64_t blocked_id, int64_t now);
/* Lifts a block (idempotent: 0 when there was none). */
int nt_store_unblock(nt_store *s, int64_t blocker_id, int64_t blocked_id);
/* Every user that user_id blocked or that blocked user_id, ascending, no
 * duplicates (heap, free()). */
int nt_store_block_peers(nt_store *s, int64_t user_id, int64_t **ids, int *n);

/* ---- matching and random chats ------------------------------------------- */

enum { NT_GENDER_MALE = 1, NT_GENDER_FEMALE = 2, NT_GENDER_OTHER = 4, NT_GENDER_ALL = 7 };

typedef struct nt_match_prefs {
    unsigned genders; /* NT_GENDER_* bits, non-empty */
    int age_min, age_max;
    int ninterests;
    char interests[NT_INTERESTS_MAX][NT_INTEREST_MAX]; /* lowercase tags */
} nt_match_prefs;

/* The stored preferences of user_id, or ENOTFOUND when never set. */
int nt_store_match_prefs_get(nt_store *s, int64_t user_id, nt_match_prefs *out);
/* Replaces them (tags must not contain ','). ENOTFOUND for a missing user. */
int nt_store_match_prefs_set(nt_store *s, int64_t user_id, const nt_match_prefs *in, int64_t now);

/* A new random chat of a and b, each known by an alias until both reveal.
 * out is the chat as a sees it. */
int nt_store_chat_random(nt_store *s, int64_t a, int64_t b, const char *alias_a,
                         const char *alias_b, int64_t now, nt_chat *out);
/*
 * nt_store_chat_random without waiting for the commit: done(arg, rc, chat)
 * runs on the store's writer thread once the chat is stored (rc 0, *chat
 * as a sees it, the callee's to nt_chat_free) or could not be (rc a store
 * error, chat NULL). done must be quick and must not block: it holds up
 * every write behind it. Returns 0 when queued (done will run exactly
 * once), else an error and done does not run.
 */
typedef void (*nt_store_chat_done)(void *arg, int rc, nt_chat *chat);
int nt_store_chat_random_async(nt_store *s, int64_t a, int64_t b, const char *alias_a,
                               const char *alias_b, int64_t now, nt_store_chat_done done,
                               void *arg);
/* user_id agrees to reveal in the random chat. ENOTFOUND when user_id is not
 * a member of such a chat. *shown_now is true when this call was the second
 * consent, i.e. the chat just stopped being anonymous. */
int nt_store_chat_reveal(nt_store *s, int64_t chat_id, int64_t user_id, bool *shown_now);
/* The alias of user_id in chat_id while the chat is anonymous: 0 and alias
 * filled, or ENOTFOUND (not a random chat, not a member, or revealed). */
int nt_store_random_alias(nt_store *s, int64_t chat_id, int64_t user_id, char alias[NT_ALIAS_MAX]);

#endif
