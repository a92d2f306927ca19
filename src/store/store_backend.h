/*
 * The table every store back end fills in (internal to src/store/).
 *
 * store.c owns the public nt_store_* functions: it picks a back end by the
 * scheme of the URL ("sqlite:..."), checks the arguments that do not depend
 * on the back end, and forwards each call through this table, in the way
 * Redis hides TCP and TLS behind connection.h. A new back end (PostgreSQL)
 * is one more table and one more line in store.c's list of schemes; no
 * service changes. Every entry has the contract of the public function of
 * the same name in store.h, with the back end's own state `be` in place of
 * the nt_store handle, and may assume its pointer arguments are valid.
 */
#ifndef NT_STORE_BACKEND_H
#define NT_STORE_BACKEND_H

#include "store/store.h"

typedef struct nt_store_ops {
    const char *name; /* for logs: "sqlite" */

    /* `where` is the URL without its "scheme:" prefix. */
    void *(*open)(const char *where, char *err, size_t err_len);
    void (*close)(void *be);
    int (*ping)(void *be);
    void (*stats)(void *be, nt_store_stats_t *out);

    int (*user_create)(void *be, const nt_user_new *in, nt_user *out, const char **conflict_field);
    int (*user_get)(void *be, int64_t id, nt_user *out);
    int (*user_by_nickname)(void *be, const char *nickname, nt_user *out);
    int (*user_for_login)(void *be, const char *login, nt_user *out, char *pw_hash,
                          size_t pw_hash_len);
    int (*user_update)(void *be, int64_t id, const nt_user_patch *patch, nt_user *out);
    int (*user_search)(void *be, const char *prefix, int64_t after_id, int limit, nt_user *out,
                       int *n);
    int (*user_set_last_seen)(void *be, int64_t id, int64_t ts);

    int (*session_create)(void *be, int64_t user_id, const uint8_t refresh_hash[32],
                          int64_t expires_at, int64_t now, nt_session *out);
    int (*session_rotate)(void *be, const uint8_t old_hash[32], const uint8_t new_hash[32],
                          int64_t new_expires_at, int64_t now, nt_session *out);
    int (*session_revoke)(void *be, const uint8_t refresh_hash[32], nt_session *out);
    int (*session_active)(void *be, int64_t session_id);

    int (*chat_direct)(void *be, int64_t a, int64_t b, int64_t now, nt_chat *out, bool *created);
    int (*chat_create)(void *be, const char *type, const char *title, int64_t owner_id,
                       const int64_t *member_ids, int n, int64_t now, nt_chat *out);
    int (*chat_get)(void *be, int64_t chat_id, int64_t viewer_id, nt_chat *out);
    int (*chat_list)(void *be, int64_t user_id, int limit, nt_chat **out, int *n);
    int (*channel_by_title)(void *be, const char *title, int64_t *chat_id);
    int (*member_role)(void *be, int64_t chat_id, int64_t user_id, int *role);
    int (*member_add)(void *be, int64_t chat_id, int64_t user_id, int role);
    int (*member_remove)(void *be, int64_t chat_id, int64_t user_id);
    int (*chat_member_ids)(void *be, int64_t chat_id, int64_t **ids, int *n);
    int (*user_partners)(void *be, int64_t user_id, int64_t **ids, int *n);
    int (*chat_close)(void *be, int64_t chat_id);

    /* Both append entries get an op whose out fields are cleared; the back end
     * checks the inputs itself, on its writer thread (done() runs only there). */
    void (*append)(void *be, nt_append *op);
    int (*append_wait)(void *be, nt_append *op);
    int (*messages)(void *be, int64_t chat_id, int64_t before_seq, int64_t after_seq, int limit,
                    nt_message **out, int *n);
    int (*message_edit)(void *be, int64_t chat_id, int64_t seq, int64_t sender_id, const char *text,
                        int64_t now, nt_message *out);
    int (*message_delete)(void *be, int64_t chat_id, int64_t seq, int64_t sender_id, int64_t now,
                          nt_message *out);
    int (*export_chat)(void *be, int64_t chat_id, int (*fn)(void *arg, const nt_message *m),
                       void *arg);
    int (*mark)(void *be, int64_t chat_id, int64_t user_id, int kind, int64_t seq,
                int64_t *delivered_seq, int64_t *read_seq, bool *moved);

    /* Friends, blocks, matching and random chats (migration 2). A back end
     * may leave these NULL: store.c then answers NT_STORE_EUNAVAILABLE. */
    int (*friend_request)(void *be, int64_t from_id, int64_t to_id, int64_t now, int *outcome);
    int (*friend_accept)(void *be, int64_t user_id, int64_t from_id, int64_t now);
    int (*friend_reject)(void *be, int64_t user_id, int64_t from_id);
    int (*friend_remove)(void *be, int64_t user_id, int64_t other_id);
    int (*friend_list)(void *be, int64_t user_id, int kind, int limit, nt_user **out, int *n);
    int (*block)(void *be, int64_t blocker_id, int64_t blocked_id, int64_t now);
    int (*unblock)(void *be, int64_t blocker_id, int64_t blocked_id);
    int (*block_peers)(void *be, int64_t user_id, int64_t **ids, int *n);
    int (*match_prefs_get)(void *be, int64_t user_id, nt_match_prefs *out);
    int (*match_prefs_set)(void *be, int64_t user_id, const nt_match_prefs *in, int64_t now);
    int (*chat_random)(void *be, int64_t a, int64_t b, const char *alias_a, const char *alias_b,
                       int64_t now, nt_chat *out);
    int (*chat_random_async)(void *be, int64_t a, int64_t b, const char *alias_a,
                             const char *alias_b, int64_t now, nt_store_chat_done done, void *arg);
    int (*chat_reveal)(void *be, int64_t chat_id, int64_t user_id, bool *shown_now);
    int (*random_alias)(void *be, int64_t chat_id, int64_t user_id, char alias[NT_ALIAS_MAX]);
} nt_store_ops;

/* The back ends compiled in. */
extern const nt_store_ops nt_store_sqlite_ops;

#endif
