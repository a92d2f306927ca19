/*
 * The chats service: creating direct, group and channel chats, listing and
 * reading them, membership changes, read/delivered markers and typing
 * notices. Every handler runs on a worker thread (see api.h): it validates
 * its input, asks the store, answers through nt_reply and tells the members
 * what changed with one bus delivery per event (`chat`, `chat_closed`,
 * `receipt`, `typing` from API.md). Objects are written only through the
 * views in views.h.
 *
 * Random chats are made by the match service (match.c); while anonymous,
 * receipts and typing notices name the member by alias, never by id.
 *
 * Visibility rule shared with messages.c: a chat is visible to its members;
 * a channel is public, so anyone may read it. To a non-member a group,
 * direct or random chat does not exist (404), so its id reveals nothing.
 */
#include "services/services.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "net/http.h"
#include "services/validate.h"
#include "services/views.h"

#define CHATS_LIMIT_DEFAULT 50
#define CHATS_LIMIT_MAX 200
/* Tokens for a body with no member list: the fields we read plus room for a
 * few unknown ones (API.md: unknown fields are ignored). */
#define CHATS_SMALL_TOKS 64

/* ---- helpers -------------------------------------------------------------- */

/* The member entry of user_id in ch, or NULL. */
static const nt_member *chats__member(const nt_chat *ch, int64_t user_id)
{
    for (int i = 0; i < ch->nmembers; i++)
        if (ch->members[i].user_id == user_id) return &ch->members[i];
    return NULL;
}

static bool chats__is_type(const nt_chat *ch, const char *type)
{
    return strcmp(ch->type, type) == 0;
}

/* Answers `status` with the chat object. */
static void chats__reply_chat(nt_reply *r, int status, const nt_chat *ch)
{
    nt_jw w;

    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_view_chat(&w, ch);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory writing the chat");
        return;
    }
    r->status = status;
    r->content_type = NULL;
}

static void chats__reply_empty(nt_reply *r, int status)
{
    nt_buf_reset(&r->body);
    r->status = status;
    r->content_type = NULL;
}

/* Sends {"type":"chat","chat":{...}} to every member of ch and, when
 * extra_id > 0 and not a member (a user just removed), to that user too.
 * Encoded once. The chat's "unread" is the one the store computed for the
 * viewer it was read for; clients keep their own markers. Best effort: an
 * event that cannot be sent does not undo the change. */
static void chats__send_chat_event(nt_ctx *ctx, const nt_chat *ch, int64_t extra_id)
{
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    int64_t *ids = NULL;
    size_t n = 0;

    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "chat");
    nt_jw_key(&w, "chat");
    nt_view_chat(&w, ch);
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) goto out;

    ids = malloc(((size_t)ch->nmembers + 1) * sizeof *ids);
    if (!ids) goto out;
    for (int i = 0; i < ch->nmembers; i++)
        ids[n++] = ch->members[i].user_id;
    if (extra_id > 0 && !chats__member(ch, extra_id)) ids[n++] = extra_id;
    if (n > 0) nt_bus_deliver(ctx->bus, ids, n, frame.data, frame.len);
out:
    free(ids);
    nt_buf_free(&frame);
}

/* Reads the chat as seen by viewer and checks that the caller may look at
 * it: members always, anyone for a channel when channel_public. On failure
 * the reply is filled (404 for an invisible or missing chat) and the chat is
 * already freed. */
static bool chats__load_visible(nt_ctx *ctx, const nt_caller *c, int64_t chat_id,
                                bool channel_public, nt_chat *ch, nt_reply *r)
{
    memset(ch, 0, sizeof *ch);
    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return false;
    }
    int rc = nt_store_chat_get(ctx->store, chat_id, c->user_id, ch);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return false;
    }
    if (chats__member(ch, c->user_id) || (channel_public && chats__is_type(ch, "channel")))
        return true;
    /* 404, not 403: a non-member must not learn that a private chat exists. */
    nt_chat_free(ch);
    memset(ch, 0, sizeof *ch);
    nt_reply_error(r, 404, "not_found", "chat not found");
    return false;
}

/* Writes "user_id": the actor of a receipt or typing notice, or, in an
 * anonymous random chat, "user_id": null and "alias" (the same frame goes
 * to both members). */
static void chats__write_actor(nt_ctx *ctx, nt_jw *w, int64_t chat_id, int64_t user_id)
{
    char alias[NT_ALIAS_MAX];
    if (nt_store_random_alias(ctx->store, chat_id, user_id, alias) == 0) {
        nt_jw_key(w, "user_id");
        nt_jw_null(w);
        nt_jw_kstr(w, "alias", alias);
    } else {
        nt_jw_kint(w, "user_id", user_id);
    }
}

static int chats__cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---- create --------------------------------------------------------------- */

static void chats__create_direct(nt_ctx *ctx, const nt_caller *c, const nt_json *doc, nt_reply *r)
{
    int64_t other = 0;
    nt_user u;
    nt_chat ch;
    bool created = false;

    if (!nt_field_int(r, doc, 0, "user_id", true, 1, INT64_MAX, &other, NULL)) return;
    if (other == c->user_id) {
        nt_reply_error(r, 400, "bad_request", "user_id: a direct chat needs another user");
        return;
    }
    int rc = nt_store_user_get(ctx->store, other, &u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user_id: user");
        return;
    }
    memset(&ch, 0, sizeof ch);
    rc = nt_store_chat_direct(ctx->store, c->user_id, other, nt_now_ms(), &ch, &created);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user_id: user");
        return;
    }
    chats__reply_chat(r, created ? 201 : 200, &ch);
    if (created && r->status == 201) chats__send_chat_event(ctx, &ch, 0);
    nt_chat_free(&ch);
}

/* Reads "member_ids" (optional array of positive ids) into a sorted list
 * without duplicates and without the caller. *ids is heap (free()). */
static bool chats__member_ids(nt_ctx *ctx, const nt_caller *c, const nt_json *doc,
                              int64_t **ids_out, int *n_out, nt_reply *r)
{
    int tok = nt_json_get(doc, 0, "member_ids");
    int64_t *ids = NULL;
    int n = 0;

    *ids_out = NULL;
    *n_out = 0;
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) return true;
    if (nt_json_type_of(doc, tok) != NT_JSON_ARRAY) {
        nt_reply_error(r, 400, "bad_request", "member_ids must be an array of user ids");
        return false;
    }
    uint32_t count = doc->toks[tok].count;
    if (count > 0) {
        ids = malloc(count * sizeof *ids);
        if (!ids) {
            nt_reply_error(r, 500, "internal", "out of memory");
            return false;
        }
    }
    for (int el = nt_json_first(doc, tok); el >= 0; el = nt_json_next(doc, el)) {
        int64_t v;
        if (nt_json_type_of(doc, el) != NT_JSON_NUMBER || nt_json_int(doc, el, &v) != 0 || v <= 0) {
            nt_reply_error(r, 400, "bad_request", "member_ids must hold positive integer user ids");
            free(ids);
            return false;
        }
        if (v != c->user_id) ids[n++] = v;
    }
    if (n > 1) {
        qsort(ids, (size_t)n, sizeof *ids, chats__cmp_id);
        int w = 1;
        for (int i = 1; i < n; i++)
            if (ids[i] != ids[w - 1]) ids[w++] = ids[i];
        n = w;
    }
    /* The owner counts as a member. */
    if (n + 1 > ctx->limits.group_max_members) {
        nt_reply_error(r, 400, "bad_request", "member_ids: a chat has at most %d members",
                       ctx->limits.group_max_members);
        free(ids);
        return false;
    }
    *ids_out = ids;
    *n_out = n;
    return true;
}

static void chats__create_group(nt_ctx *ctx, const nt_caller *c, const nt_json *doc,
                                const char *type, nt_reply *r)
{
    char title[NT_TITLE_MAX];
    int64_t *ids = NULL;
    int n = 0;
    nt_chat ch;

    if (!nt_field_str(r, doc, 0, "title", true, 1, ctx->limits.title_max_cp, title, sizeof title,
                      NULL))
        return;
    if (!chats__member_ids(ctx, c, doc, &ids, &n, r)) return;
    memset(&ch, 0, sizeof ch);
    int rc = nt_store_chat_create(ctx->store, type, title, c->user_id, ids, n, nt_now_ms(), &ch);
    free(ids);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "member_ids: unknown user");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    chats__reply_chat(r, 201, &ch);
    if (r->status == 201) chats__send_chat_event(ctx, &ch, 0);
    nt_chat_free(&ch);
}

void nt_chats_create(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r)
{
    /* The member list can be long: room for every id plus the other fields. */
    int cap = CHATS_SMALL_TOKS +
              2 * (ctx->limits.group_max_members > 0 ? ctx->limits.group_max_members : 0);
    nt_json_tok *toks = calloc((size_t)cap, sizeof *toks);
    nt_json doc;

    if (!toks) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    if (!nt_body_object(r, body, len, &doc, toks, cap)) goto out;

    int type_tok = nt_json_get(&doc, 0, "type");
    if (nt_json_type_of(&doc, type_tok) != NT_JSON_STRING) {
        nt_reply_error(r, 400, "bad_request",
                       "type is required: \"direct\", \"group\" or \"channel\"");
    } else if (nt_json_str_eq(&doc, type_tok, "direct")) {
        chats__create_direct(ctx, c, &doc, r);
    } else if (nt_json_str_eq(&doc, type_tok, "group")) {
        chats__create_group(ctx, c, &doc, "group", r);
    } else if (nt_json_str_eq(&doc, type_tok, "channel")) {
        chats__create_group(ctx, c, &doc, "channel", r);
    } else {
        /* "random" chats come only from matching. */
        nt_reply_error(r, 400, "bad_request", "type must be \"direct\", \"group\" or \"channel\"");
    }
out:
    free(toks);
}

/* ---- list and get ------------------------------------------------------------ */

void nt_chats_list(nt_ctx *ctx, const nt_caller *c, const char *query, nt_reply *r)
{
    int64_t limit;
    nt_chat *chats = NULL;
    int n = 0;
    nt_jw w;

    if (!nt_query_int(r, query, "limit", 1, CHATS_LIMIT_MAX, CHATS_LIMIT_DEFAULT, &limit)) return;
    int rc = nt_store_chat_list(ctx->store, c->user_id, (int)limit, &chats, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chats");
        return;
    }
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "chats");
    nt_jw_arr(&w);
    for (int i = 0; i < n; i++)
        nt_view_chat(&w, &chats[i]);
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    nt_chats_free(chats, n);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory writing chats");
        return;
    }
    r->status = 200;
    r->content_type = NULL;
}

void nt_chats_get(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r)
{
    nt_chat ch;

    if (!chats__load_visible(ctx, c, chat_id, true, &ch, r)) return;
    chats__reply_chat(r, 200, &ch);
    nt_chat_free(&ch);
}

/* ---- members ------------------------------------------------------------------ */

void nt_chats_add_member(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body,
                         size_t len, nt_reply *r)
{
    nt_json_tok toks[CHATS_SMALL_TOKS];
    nt_json doc;
    int64_t user_id = 0;
    nt_chat ch;

    if (!nt_body_object(r, body, len, &doc, toks, CHATS_SMALL_TOKS)) return;
    if (!nt_field_int(r, &doc, 0, "user_id", true, 1, INT64_MAX, &user_id, NULL)) return;
    if (!chats__load_visible(ctx, c, chat_id, true, &ch, r)) return;

    const nt_member *me = chats__member(&ch, c->user_id);
    if (chats__is_type(&ch, "group")) {
        if (!me || me->role != NT_ROLE_OWNER) {
            nt_reply_error(r, 403, "forbidden", "only the group owner may add members");
            goto out;
        }
        /* Already a member: nothing to do, and the caller's wish holds. */
        if (chats__member(&ch, user_id)) {
            chats__reply_empty(r, 204);
            goto out;
        }
        if (ch.nmembers >= ctx->limits.group_max_members) {
            nt_reply_error(r, 403, "forbidden", "the group is full (at most %d members)",
                           ctx->limits.group_max_members);
            goto out;
        }
    } else if (chats__is_type(&ch, "channel")) {
        if (user_id != c->user_id) {
            nt_reply_error(r, 403, "forbidden", "user_id: in a channel you may add only yourself");
            goto out;
        }
        if (me) {
            chats__reply_empty(r, 204); /* joining twice is still joined */
            goto out;
        }
    } else {
        nt_reply_error(r, 403, "forbidden", "members of a %s chat cannot change", ch.type);
        goto out;
    }

    int rc = nt_store_member_add(ctx->store, chat_id, user_id, NT_ROLE_MEMBER);
    if (rc == NT_STORE_ECONFLICT) {
        /* A concurrent add won the race: the outcome is the same. */
        chats__reply_empty(r, 204);
        goto out;
    }
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "user_id: user not found");
        goto out;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "member");
        goto out;
    }
    if (chats__is_type(&ch, "channel")) {
        /* Joining a public channel does not make its whole past unread;
         * the history stays readable. (A group member added by the owner
         * does see the group's past as unread: it was meant for them.) */
        int64_t delivered, read;
        bool moved;
        nt_store_mark(ctx->store, chat_id, user_id, NT_MARK_READ, INT64_MAX, &delivered, &read,
                      &moved);
    }
    chats__reply_empty(r, 204);

    /* Tell everyone, the newcomer included, with the chat as it is now. */
    nt_chat_free(&ch);
    memset(&ch, 0, sizeof ch);
    if (nt_store_chat_get(ctx->store, chat_id, user_id, &ch) == 0)
        chats__send_chat_event(ctx, &ch, user_id);
out:
    nt_chat_free(&ch);
}

/* A member leaves a random chat: it closes for both and the others hear of
 * it. The member stays listed so both can still read the history. */
static void chats__close_random(nt_ctx *ctx, nt_chat *ch, nt_reply *r)
{
    if (ch->closed) {
        chats__reply_empty(r, 204);
        return;
    }
    int rc = nt_store_chat_close(ctx->store, ch->id);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    chats__reply_empty(r, 204);

    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "chat_closed");
    nt_jw_kint(&w, "chat_id", ch->id);
    nt_jw_obj_end(&w);
    int64_t *ids = malloc(((size_t)ch->nmembers + 1) * sizeof *ids);
    if (!nt_jw_error(&w) && ids) {
        /* Every member: the other side, and the leaver's other devices. */
        for (int i = 0; i < ch->nmembers; i++)
            ids[i] = ch->members[i].user_id;
        nt_bus_deliver(ctx->bus, ids, (size_t)ch->nmembers, frame.data, frame.len);
    }
    free(ids);
    nt_buf_free(&frame);
}

void nt_chats_remove_member(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t user_id,
                            nt_reply *r)
{
    nt_chat ch;

    if (user_id <= 0) {
        nt_reply_error(r, 400, "bad_request", "user_id must be a positive integer");
        return;
    }
    if (!chats__load_visible(ctx, c, chat_id, true, &ch, r)) return;

    const nt_member *me = chats__member(&ch, c->user_id);
    bool self = user_id == c->user_id;
    if (!me) {
        /* Only a channel gets here for a non-member. */
        nt_reply_error(r, self ? 404 : 403, self ? "not_found" : "forbidden",
                       "you are not a member of this chat");
        goto out;
    }
    if (chats__is_type(&ch, "direct")) {
        nt_reply_error(r, 403, "forbidden", "a direct chat cannot be left");
        goto out;
    }
    if (chats__is_type(&ch, "random")) {
        if (!self) {
            nt_reply_error(r, 403, "forbidden", "in a random chat you may remove only yourself");
            goto out;
        }
        chats__close_random(ctx, &ch, r);
        goto out;
    }
    if (!self && !(chats__is_type(&ch, "group") && me->role == NT_ROLE_OWNER)) {
        nt_reply_error(r, 403, "forbidden", "only the group owner may remove other members");
        goto out;
    }
    if (!chats__member(&ch, user_id)) {
        nt_reply_error(r, 404, "not_found", "user_id: not a member of this chat");
        goto out;
    }
    int rc = nt_store_member_remove(ctx->store, chat_id, user_id);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "member");
        goto out;
    }
    chats__reply_empty(r, 204);

    /* The remaining members see the new list; the one who left or was
     * removed gets it too, so every device of theirs can drop the chat. */
    nt_chat_free(&ch);
    memset(&ch, 0, sizeof ch);
    if (nt_store_chat_get(ctx->store, chat_id, c->user_id, &ch) == 0)
        chats__send_chat_event(ctx, &ch, user_id);
out:
    nt_chat_free(&ch);
}

/* ---- markers and typing ------------------------------------------------------------ */

void nt_chats_read(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body, size_t len,
                   nt_reply *r)
{
    nt_json_tok toks[CHATS_SMALL_TOKS];
    nt_json doc;
    int64_t seq = 0;

    if (!nt_body_object(r, body, len, &doc, toks, CHATS_SMALL_TOKS)) return;
    if (!nt_field_int(r, &doc, 0, "seq", true, 1, INT64_MAX, &seq, NULL)) return;
    nt_chats_mark(ctx, c, chat_id, NT_MARK_READ, seq, r);
}

void nt_chats_mark(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int kind, int64_t seq,
                   nt_reply *r)
{
    int64_t delivered = 0, read = 0;
    bool moved = false;
    int64_t *ids = NULL;
    int n = 0;

    if (kind != NT_MARK_DELIVERED && kind != NT_MARK_READ) {
        nt_reply_error(r, 400, "bad_request", "type must be \"delivered\" or \"read\"");
        return;
    }
    if (seq <= 0) {
        nt_reply_error(r, 400, "bad_request", "seq must be a positive integer");
        return;
    }
    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    int rc = nt_store_mark(ctx->store, chat_id, c->user_id, kind, seq, &delivered, &read, &moved);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "marker");
        return;
    }
    chats__reply_empty(r, 204);
    if (!moved) return;

    /* Every member, the user's own other devices included. */
    if (nt_store_chat_member_ids(ctx->store, chat_id, &ids, &n) != 0) return;
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "receipt");
    nt_jw_kint(&w, "chat_id", chat_id);
    chats__write_actor(ctx, &w, chat_id, c->user_id);
    nt_jw_kint(&w, "delivered_seq", delivered);
    nt_jw_kint(&w, "read_seq", read);
    nt_jw_obj_end(&w);
    if (!nt_jw_error(&w) && n > 0) nt_bus_deliver(ctx->bus, ids, (size_t)n, frame.data, frame.len);
    nt_buf_free(&frame);
    free(ids);
}

void nt_chats_typing(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r)
{
    int role;
    int64_t *ids = NULL;
    int n = 0;

    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    int rc = nt_store_member_role(ctx->store, chat_id, c->user_id, &role);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    rc = nt_store_chat_member_ids(ctx->store, chat_id, &ids, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    chats__reply_empty(r, 204);

    /* Typing is ephemeral: only members online right now, never the typist. */
    int online = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] != c->user_id && nt_bus_online(ctx->bus, ids[i])) ids[online++] = ids[i];
    if (online > 0) {
        nt_buf frame = NT_BUF_INIT;
        nt_jw w;
        nt_jw_init(&w, &frame);
        nt_jw_obj(&w);
        nt_jw_kstr(&w, "type", "typing");
        nt_jw_kint(&w, "chat_id", chat_id);
        chats__write_actor(ctx, &w, chat_id, c->user_id);
        nt_jw_obj_end(&w);
        if (!nt_jw_error(&w)) nt_bus_deliver(ctx->bus, ids, (size_t)online, frame.data, frame.len);
        nt_buf_free(&frame);
    }
    free(ids);
}
