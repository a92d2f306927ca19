/*
 * The service handlers behind the REST routes and WebSocket frames. See
 * api.h for the rules every handler follows (worker thread, validation,
 * stable error codes). `body`/`len` is the raw JSON request body; `query`
 * the raw query string. Each handler fills `r` (status + JSON body) and
 * emits its events through ctx->bus.
 */
#ifndef NT_SERVICES_H
#define NT_SERVICES_H

#include <stddef.h>
#include <stdint.h>

#include "services/api.h"

/* ---- auth (auth.c) ---- */
void nt_auth_register(nt_ctx *ctx, const char *body, size_t len, nt_reply *r);
void nt_auth_login(nt_ctx *ctx, const char *body, size_t len, nt_reply *r);
void nt_auth_refresh(nt_ctx *ctx, const char *body, size_t len, nt_reply *r);
/* 204. *revoked_session gets the ended session's id (0 if none) so the
 * gateway can close that session's WebSockets at once. */
void nt_auth_logout(nt_ctx *ctx, const char *body, size_t len, nt_reply *r,
                    int64_t *revoked_session);
/* Checks an access token: HS256 signature, exp, and that its session is
 * still active in the store. 0 and *out filled; -1 for a bad, expired or
 * revoked token; -2 when the store cannot answer (the caller says
 * `unavailable`, never `unauthorized`, to a token that may be valid). */
int nt_auth_verify(nt_ctx *ctx, const char *token, nt_caller *out);
/* Creates the signing key file (32 random bytes, mode 0600) in data_dir if
 * missing and loads it into ctx->jwt_key. 0 or -errno. */
int nt_auth_load_key(nt_ctx *ctx, const char *path);

/* ---- users (users.c) ---- */
void nt_users_me(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
void nt_users_update_me(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r);
void nt_users_get(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r);
void nt_users_by_nickname(nt_ctx *ctx, const nt_caller *c, const char *nickname, nt_reply *r);
void nt_users_search(nt_ctx *ctx, const nt_caller *c, const char *query, nt_reply *r);
/* Presence: the user's first connection opened (online) or last closed.
 * Stores last_seen when going offline and sends `presence` events to the
 * user's partners (direct chats and friends, not users they blocked, never
 * the anonymous partners of random chats). */
void nt_users_presence(nt_ctx *ctx, int64_t user_id, bool online);
/* The `ready` frame: {"type":"ready","user":{...}} into out. */
int nt_users_ready_frame(nt_ctx *ctx, int64_t user_id, nt_buf *out);

/* ---- chats (chats.c) ---- */
void nt_chats_create(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r);
void nt_chats_list(nt_ctx *ctx, const nt_caller *c, const char *query, nt_reply *r);
void nt_chats_get(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r);
void nt_chats_add_member(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body,
                         size_t len, nt_reply *r);
void nt_chats_remove_member(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t user_id,
                            nt_reply *r);
/* REST read marker: body {"seq"}; 204. */
void nt_chats_read(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body, size_t len,
                   nt_reply *r);
/* Moves a marker (NT_MARK_DELIVERED / NT_MARK_READ) and sends `receipt` to
 * the other members when it moved. 204 or an error. */
void nt_chats_mark(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int kind, int64_t seq,
                   nt_reply *r);
/* Sends `typing` to the other online members; 204 or an error. */
void nt_chats_typing(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r);

/* ---- messages (messages.c) ---- */
void nt_messages_history(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *query,
                         nt_reply *r);
/* REST send: body {"text","client_id"?}; 201 message, 200 for a repeat;
 * 429 rate_limited with Retry-After over the send rate limit. */
void nt_messages_post(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body,
                      size_t len, nt_reply *r);
void nt_messages_edit(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t seq,
                      const char *body, size_t len, nt_reply *r);
void nt_messages_delete(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t seq, nt_reply *r);
/* JSON Lines, content type application/x-ndjson. Members only. */
void nt_messages_export(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r);
/* Checks a message text against API.md (1..text_max_cp code points, no
 * NUL; UTF-8 is already guaranteed by the JSON reader). NULL if fine, else
 * the reason. Cheap: used on the loop thread by the WebSocket send path. */
const char *nt_messages_check_text(const nt_ctx *ctx, const char *text, size_t len);
/* Reads the optional "client_id" of a send: 1..64 bytes of printable ASCII
 * into out ("" when absent or null). False, with a 400 naming the field in r,
 * otherwise. Used by the REST and the WebSocket send alike. */
bool nt_messages_read_client_id(const nt_json *doc, char out[NT_CLIENT_ID_MAX], nt_reply *r);
/* The send rate limit (ctx->send_limit): true if user_id may send one
 * message now (and counts it); false, with *retry_after_ms, if the send
 * must be refused as rate_limited and nothing stored. Cheap, never
 * blocks for long (one short lock): the WebSocket send path calls it on
 * the loop thread after validating the frame; nt_messages_post calls it
 * after validating the body. */
bool nt_messages_send_allowed(nt_ctx *ctx, int64_t user_id, uint32_t *retry_after_ms);
/* After a message was stored (REST or WebSocket path): sends the `message`
 * event to every member. Any thread. */
void nt_messages_fanout(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n);

/* ---- friends and blocks (friends.c) ---- */
/* {"friends":[user],"incoming":[user],"outgoing":[user]}. */
void nt_friends_list(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* Body {"nickname"} (or {"user_id"}). 201 {"status":"pending"|"friends",
 * "user"} for a new request or a crossing one that made friends at once; 200
 * with the same shape when nothing changed. 400 for oneself, 404 unknown
 * user, 403 when a block exists either way. Events: `friend_request` to the
 * receiver, or `friend` to both. */
void nt_friends_request(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r);
/* 200 {"status":"friends","user"}; 404 without a pending request. `friend`
 * to both. */
void nt_friends_accept(nt_ctx *ctx, const nt_caller *c, int64_t from_id, nt_reply *r);
/* 204; 404 without a pending request. */
void nt_friends_reject(nt_ctx *ctx, const nt_caller *c, int64_t from_id, nt_reply *r);
/* 204: ends a friendship or withdraws one's own pending request; 404 if
 * there was neither. */
void nt_friends_remove(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r);
/* {"blocks":[user]}: the users the caller blocked. */
void nt_blocks_list(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* 204 (idempotent); ends friendship and requests both ways and takes the
 * pair out of each other's reach in the match queue. 400 self, 404 unknown. */
void nt_blocks_add(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r);
/* 204 (idempotent); 404 unknown user. */
void nt_blocks_remove(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r);

/* ---- matching and random chats (match.c) ---- */
/* GET: the caller's preferences (defaults when never set). */
void nt_match_prefs_get(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* PUT {"genders","age_min","age_max","interests"?}: 200 with the stored
 * preferences; 400 naming the field for anything out of the rules. */
void nt_match_prefs_put(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r);
/* Joins the queue: 202 {"status":"waiting"} or {"status":"matched",
 * "chat_id"} when a partner was found at once (both get `matched`); 200
 * {"status":"waiting"} when already waiting (still one entry). 400 naming
 * gender or birth_date when the profile lacks them. */
void nt_match_join(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* As nt_match_join, but a pair made in the in-process queue does not wait
 * for its chat to be stored: 202 {"status":"matched"} at once and the chat
 * comes with the `matched` events (from the store's writer thread). If the
 * chat cannot be stored, both go back into the queue (the partner in its
 * old place, the caller as a new arrival) and wait as `match_queued` said.
 * For the WebSocket `match` frame, whose answer names no chat. */
void nt_match_join_async(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* Leaves the queue: 204 (also when not waiting). */
void nt_match_leave(nt_ctx *ctx, const nt_caller *c, nt_reply *r);
/* The user's last connection closed: out of the queue, quietly. */
void nt_match_disconnect(nt_ctx *ctx, int64_t user_id);
/* Two users just blocked or unblocked: the waiting queue learns it. */
void nt_match_block_changed(nt_ctx *ctx, int64_t a, int64_t b, bool blocked);
/* POST /chats/{id}/reveal: 204; when this was the second consent both
 * members get a `chat` event with real user ids. 404 not a member, 400 not
 * a random chat. */
void nt_match_reveal(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r);
/* How many pairs of ctx wait for their chat to be stored (their `matched`
 * is still to come): a draining gateway keeps WebSockets open until 0. */
int nt_match_storing(nt_ctx *ctx);
/* Waits until no pair of ctx waits for its chat (their callbacks put users
 * back into the queue and deliver on the bus: call it while the store and
 * the bus are open, before closing them), then frees the in-process queue
 * kept for ctx (tests, shutdown). */
void nt_match_shutdown(nt_ctx *ctx);

#endif
