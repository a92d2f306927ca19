/*
 * The friends service: friend requests by nickname (or id), the incoming and
 * outgoing lists, accept, reject, remove, and blocks. Every handler runs on a
 * worker thread (api.h): it validates, asks the store (which keeps each
 * change in one transaction, see nt_store_friend_request and
 * nt_store_block), answers, and tells the users concerned with `friend_request`
 * and `friend` events.
 *
 * Blocks reach further than this file: the store refuses a blocked user's
 * messages in two-member chats, presence skips blocked users, and the match
 * queue is told here so a blocked pair is never paired.
 *
 * A request to someone who blocked the caller is answered 403 forbidden.
 * That tells the caller about the block; the alternatives (pretending to
 * succeed, or 404) would lie about state the caller can observe anyway
 * (the user exists, and no request ever shows up as accepted), see
 * docs/decisions.md.
 */
#include "services/services.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "services/validate.h"
#include "services/views.h"

#define FRIENDS_TOKS 64
/* Each list of GET /friends is cut at this many users (ordered by id). */
#define FRIENDS_LIST_MAX 1000

static bool friends__online(nt_ctx *ctx, int64_t user_id)
{
    return ctx->bus && nt_bus_online(ctx->bus, user_id);
}

static void friends__reply_empty(nt_reply *r, int status)
{
    nt_buf_reset(&r->body);
    r->status = status;
    r->content_type = NULL;
}

/* Answers {"status":status_word,"user":{...}}. */
static void friends__reply_status(nt_ctx *ctx, nt_reply *r, int status, const char *word,
                                  const nt_user *u)
{
    nt_jw w;
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "status", word);
    nt_jw_key(&w, "user");
    nt_view_user(&w, u, friends__online(ctx, u->id), false);
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = status;
    r->content_type = NULL;
}

/* Sends {"type":type,"user":{about}} to `to`. Best effort. */
static void friends__event(nt_ctx *ctx, int64_t to, const char *type, const nt_user *about)
{
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", type);
    nt_jw_key(&w, "user");
    nt_view_user(&w, about, friends__online(ctx, about->id), false);
    nt_jw_obj_end(&w);
    if (!nt_jw_error(&w)) nt_bus_deliver(ctx->bus, &to, 1, frame.data, frame.len);
    nt_buf_free(&frame);
}

/* `friend` to both sides of a new friendship. */
static void friends__made(nt_ctx *ctx, const nt_user *a, const nt_user *b)
{
    friends__event(ctx, a->id, "friend", b);
    friends__event(ctx, b->id, "friend", a);
}

/* Loads the user a path names; 404 (filled in r) when there is none. */
static bool friends__load(nt_ctx *ctx, int64_t user_id, nt_user *u, nt_reply *r)
{
    if (user_id <= 0) {
        nt_reply_error(r, 404, "not_found", "user not found");
        return false;
    }
    int rc = nt_store_user_get(ctx->store, user_id, u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return false;
    }
    return true;
}

/* ---- handlers ------------------------------------------------------------------ */

static bool friends__write_list(nt_ctx *ctx, nt_jw *w, const char *key, int64_t user_id, int kind,
                                nt_reply *r)
{
    nt_user *users = NULL;
    int n = 0;
    int rc = nt_store_friend_list(ctx->store, user_id, kind, FRIENDS_LIST_MAX, &users, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, key);
        return false;
    }
    nt_jw_key(w, key);
    nt_jw_arr(w);
    for (int i = 0; i < n; i++)
        nt_view_user(w, &users[i], friends__online(ctx, users[i].id), false);
    nt_jw_arr_end(w);
    free(users);
    return true;
}

void nt_friends_list(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    nt_buf out = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &out);
    nt_jw_obj(&w);
    if (!friends__write_list(ctx, &w, "friends", c->user_id, NT_LIST_FRIENDS, r) ||
        !friends__write_list(ctx, &w, "incoming", c->user_id, NT_LIST_INCOMING, r) ||
        !friends__write_list(ctx, &w, "outgoing", c->user_id, NT_LIST_OUTGOING, r))
        goto out;
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        goto out;
    }
    nt_buf_free(&r->body);
    r->body = out;
    out = (nt_buf)NT_BUF_INIT;
    r->status = 200;
    r->content_type = NULL;
out:
    nt_buf_free(&out);
}

void nt_friends_request(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r)
{
    nt_json_tok toks[FRIENDS_TOKS];
    nt_json doc;
    char nickname[NT_NICK_MAX];
    bool has_nick = false, has_id = false;
    int64_t user_id = 0;
    nt_user to, me;

    if (!nt_body_object(r, body, len, &doc, toks, FRIENDS_TOKS)) return;
    if (!nt_field_str(r, &doc, 0, "nickname", false, 0, 0, nickname, sizeof nickname, &has_nick)) {
        if (strstr(r->message, "too long"))
            nt_reply_error(r, 400, "bad_request",
                           "nickname must be 3..32 characters of "
                           "A-Z a-z 0-9 _ . -");
        return;
    }
    if (!has_nick && !nt_field_int(r, &doc, 0, "user_id", false, 1, INT64_MAX, &user_id, &has_id))
        return;
    if (!has_nick && !has_id) {
        nt_reply_error(r, 400, "bad_request", "nickname is required");
        return;
    }
    int rc;
    if (has_nick) {
        if (!nt_valid_nickname(nickname)) {
            nt_reply_error(r, 400, "bad_request",
                           "nickname must be 3..32 characters of A-Z a-z 0-9 _ . -");
            return;
        }
        rc = nt_store_user_by_nickname(ctx->store, nickname, &to);
    } else {
        rc = nt_store_user_get(ctx->store, user_id, &to);
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, has_nick ? "nickname: user" : "user_id: user");
        return;
    }
    if (to.id == c->user_id) {
        nt_reply_error(r, 400, "bad_request", "%s: you cannot send a friend request to yourself",
                       has_nick ? "nickname" : "user_id");
        return;
    }
    int outcome = 0;
    rc = nt_store_friend_request(ctx->store, c->user_id, to.id, nt_now_ms(), &outcome);
    if (rc == NT_STORE_EFORBIDDEN) {
        if (outcome == NT_FRIEND_BLOCKED_BY_ME)
            nt_reply_error(r, 403, "forbidden", "you blocked this user; unblock them first");
        else
            nt_reply_error(r, 403, "forbidden", "this user does not accept your friend requests");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    switch (outcome) {
    case NT_FRIEND_REQUESTED:
        friends__reply_status(ctx, r, 201, "pending", &to);
        if (nt_store_user_get(ctx->store, c->user_id, &me) == 0)
            friends__event(ctx, to.id, "friend_request", &me);
        break;
    case NT_FRIEND_MADE:
        friends__reply_status(ctx, r, 201, "friends", &to);
        if (nt_store_user_get(ctx->store, c->user_id, &me) == 0) friends__made(ctx, &me, &to);
        break;
    case NT_FRIEND_PENDING:
        friends__reply_status(ctx, r, 200, "pending", &to);
        break;
    default: /* NT_FRIEND_ALREADY */
        friends__reply_status(ctx, r, 200, "friends", &to);
        break;
    }
}

void nt_friends_accept(nt_ctx *ctx, const nt_caller *c, int64_t from_id, nt_reply *r)
{
    nt_user from, me;
    if (!friends__load(ctx, from_id, &from, r)) return;
    int rc = nt_store_friend_accept(ctx->store, c->user_id, from_id, nt_now_ms());
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "user_id: no friend request from this user");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "friend request");
        return;
    }
    friends__reply_status(ctx, r, 200, "friends", &from);
    if (nt_store_user_get(ctx->store, c->user_id, &me) == 0) friends__made(ctx, &me, &from);
}

void nt_friends_reject(nt_ctx *ctx, const nt_caller *c, int64_t from_id, nt_reply *r)
{
    nt_user from;
    if (!friends__load(ctx, from_id, &from, r)) return;
    int rc = nt_store_friend_reject(ctx->store, c->user_id, from_id);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "user_id: no friend request from this user");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "friend request");
        return;
    }
    friends__reply_empty(r, 204);
}

void nt_friends_remove(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r)
{
    nt_user other;
    if (!friends__load(ctx, user_id, &other, r)) return;
    int rc = nt_store_friend_remove(ctx->store, c->user_id, user_id);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "user_id: not a friend and no pending request");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "friend");
        return;
    }
    friends__reply_empty(r, 204);
}

void nt_blocks_list(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    nt_buf out = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &out);
    nt_jw_obj(&w);
    if (!friends__write_list(ctx, &w, "blocks", c->user_id, NT_LIST_BLOCKED, r)) goto out;
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        goto out;
    }
    nt_buf_free(&r->body);
    r->body = out;
    out = (nt_buf)NT_BUF_INIT;
    r->status = 200;
    r->content_type = NULL;
out:
    nt_buf_free(&out);
}

void nt_blocks_add(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r)
{
    nt_user other;
    if (user_id == c->user_id) {
        nt_reply_error(r, 400, "bad_request", "user_id: you cannot block yourself");
        return;
    }
    if (!friends__load(ctx, user_id, &other, r)) return;
    int rc = nt_store_block(ctx->store, c->user_id, user_id, nt_now_ms());
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    nt_match_block_changed(ctx, c->user_id, user_id, true);
    friends__reply_empty(r, 204);
}

void nt_blocks_remove(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r)
{
    nt_user other;
    if (user_id == c->user_id) {
        nt_reply_error(r, 400, "bad_request", "user_id: you cannot block yourself");
        return;
    }
    if (!friends__load(ctx, user_id, &other, r)) return;
    int rc = nt_store_unblock(ctx->store, c->user_id, user_id);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    nt_match_block_changed(ctx, c->user_id, user_id, false);
    friends__reply_empty(r, 204);
}
