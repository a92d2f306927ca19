/*
 * The messages service: the REST side of the send path (validate, store
 * durably through the group-committing writer, fan out once), history,
 * edit, delete and export, plus the two pieces the WebSocket send path
 * shares with it: nt_messages_check_text (cheap, loop-thread safe) and
 * nt_messages_fanout (one encoding, one bus delivery for all members).
 *
 * Visibility follows chats.c: members see a chat; a channel's history is
 * public; to anyone else a private chat does not exist (404). Writing
 * (edit, delete) and export need membership, channels included.
 */
#include "services/services.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/utf8.h"
#include "net/http.h"
#include "services/validate.h"
#include "services/views.h"

#define MSGS_LIMIT_DEFAULT 50
#define MSGS_LIMIT_MAX 200
#define MSGS_TOKS 64

/* ---- helpers -------------------------------------------------------------- */

/* May the caller see (or, without channel_public, write to) this chat?
 * Members may; a channel is public for reading. A channel a non-member may
 * not write to answers 403 (a channel's existence is no secret); any other
 * chat is 404 to a non-member, so its id reveals nothing. */
static bool msgs__access(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, bool channel_public,
                         nt_reply *r)
{
    int role;
    nt_chat ch;

    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return false;
    }
    int rc = nt_store_member_role(ctx->store, chat_id, c->user_id, &role);
    if (rc == 0) return true;
    if (rc != NT_STORE_ENOTFOUND) {
        nt_reply_store_error(r, rc, "chat");
        return false;
    }
    /* Not a member (or no such chat): the rare path may read the chat. */
    memset(&ch, 0, sizeof ch);
    rc = nt_store_chat_get(ctx->store, chat_id, c->user_id, &ch);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return false;
    }
    bool channel = strcmp(ch.type, "channel") == 0;
    nt_chat_free(&ch);
    if (channel && channel_public) return true;
    if (channel)
        nt_reply_error(r, 403, "forbidden", "only members of this channel may do that");
    else
        nt_reply_error(r, 404, "not_found", "chat not found");
    return false;
}

/* Encodes one event frame for m and delivers it to ids. */
static void msgs__event(nt_ctx *ctx, const char *type, const nt_message *m, const int64_t *ids,
                        int n)
{
    if (n <= 0) return;
    /* The bus copies the frame: the thread's scratch buffer will do. */
    nt_buf *frame = nt_buf_scratch_take();
    if (frame && nt_view_message_event(frame, type, m) == 0)
        nt_bus_deliver(ctx->bus, ids, (size_t)n, frame->data, frame->len);
    nt_buf_scratch_give(frame);
}

/* An edit or delete: the members hear of it. Best effort. */
static void msgs__event_to_members(nt_ctx *ctx, const char *type, const nt_message *m)
{
    int64_t *ids = NULL;
    int n = 0;

    if (nt_store_chat_member_ids(ctx->store, m->chat_id, &ids, &n) == 0)
        msgs__event(ctx, type, m, ids, n);
    free(ids);
}

static void msgs__reply_message(nt_reply *r, int status, const nt_message *m)
{
    nt_jw w;

    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_view_message(&w, m);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory writing the message");
        return;
    }
    r->status = status;
    r->content_type = NULL;
}

/* Reads and checks the "text" field. Returns the unescaped text (heap,
 * free()) and its length, or NULL with the reply filled. */
static char *msgs__read_text(nt_ctx *ctx, const nt_json *doc, size_t *len_out, nt_reply *r)
{
    int tok = nt_json_get(doc, 0, "text");

    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) {
        nt_reply_error(r, 400, "bad_request", "text is required");
        return NULL;
    }
    if (nt_json_type_of(doc, tok) != NT_JSON_STRING) {
        nt_reply_error(r, 400, "bad_request", "text must be a string");
        return NULL;
    }
    /* Unescaping never makes a string longer. */
    size_t cap = (size_t)doc->toks[tok].len + 1;
    char *text = malloc(cap);
    if (!text) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return NULL;
    }
    int n = nt_json_str(doc, tok, text, cap);
    if (n == -3) {
        nt_reply_error(r, 400, "bad_request", "text must not contain NUL");
        goto fail;
    }
    if (n < 0) {
        nt_reply_error(r, 400, "bad_request", "text is not a valid string");
        goto fail;
    }
    const char *why = nt_messages_check_text(ctx, text, (size_t)n);
    if (why) {
        nt_reply_error(r, 400, "bad_request", "%s", why);
        goto fail;
    }
    *len_out = (size_t)n;
    return text;
fail:
    free(text);
    return NULL;
}

bool nt_messages_read_client_id(const nt_json *doc, char out[NT_CLIENT_ID_MAX], nt_reply *r)
{
    int tok = nt_json_get(doc, 0, "client_id");

    out[0] = '\0';
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) return true;
    if (nt_json_type_of(doc, tok) != NT_JSON_STRING) {
        nt_reply_error(r, 400, "bad_request", "client_id must be a string");
        return false;
    }
    int n = nt_json_str(doc, tok, out, NT_CLIENT_ID_MAX);
    bool ok = n >= 1;
    for (int i = 0; ok && i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e) ok = false;
    if (!ok) {
        out[0] = '\0';
        nt_reply_error(r, 400, "bad_request", "client_id must be 1..%d bytes of printable ASCII",
                       NT_CLIENT_ID_MAX - 1);
        return false;
    }
    return true;
}

/* ---- public ------------------------------------------------------------------ */

const char *nt_messages_check_text(const nt_ctx *ctx, const char *text, size_t len)
{
    if (!text || len == 0) return "text must not be empty";
    if (memchr(text, '\0', len)) return "text must not contain NUL";
    /* Code points never outnumber bytes: short texts need no count. */
    if (len > (size_t)ctx->limits.text_max_cp &&
        nt_utf8_count(text, len) > (size_t)ctx->limits.text_max_cp)
        return "text is too long (too many characters)";
    return NULL;
}

void nt_messages_fanout(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n)
{
    msgs__event(ctx, "message", m, member_ids, n);
    /* Both send paths (REST and WebSocket) come through here exactly once
     * per new message, so this is where listeners such as the bot hear it. */
    if (ctx->message_hook) ctx->message_hook(ctx, m, member_ids, n);
}

void nt_messages_history(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *query,
                         nt_reply *r)
{
    int64_t before = 0, after = -1, limit = 0; /* after -1: no cursor */
    nt_message *msgs = NULL;
    int n = 0;
    nt_jw w;

    if (!nt_query_int(r, query, "before_seq", 0, INT64_MAX, 0, &before) ||
        !nt_query_int(r, query, "after_seq", 0, INT64_MAX, -1, &after) ||
        !nt_query_int(r, query, "limit", 1, MSGS_LIMIT_MAX, MSGS_LIMIT_DEFAULT, &limit))
        return;
    if (!msgs__access(ctx, c, chat_id, true, r)) return;
    int rc = nt_store_messages(ctx->store, chat_id, before, after, (int)limit, &msgs, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "messages");
    nt_jw_arr(&w);
    for (int i = 0; i < n; i++)
        nt_view_message(&w, &msgs[i]);
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    nt_messages_free(msgs, n);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory writing messages");
        return;
    }
    r->status = 200;
    r->content_type = NULL;
}

bool nt_messages_send_allowed(nt_ctx *ctx, int64_t user_id, uint32_t *retry_after_ms)
{
    if (!ctx->send_limit) return true; /* --send-rate 0 */
    return nt_rate_table_take(ctx->send_limit, (uint64_t)user_id, nt_mono_ns(), retry_after_ms);
}

void nt_messages_post(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, const char *body,
                      size_t len, nt_reply *r)
{
    nt_json_tok toks[MSGS_TOKS];
    nt_json doc;
    nt_append op;
    size_t text_len = 0;
    char *text = NULL;

    if (!nt_body_object(r, body, len, &doc, toks, MSGS_TOKS)) return;
    memset(&op, 0, sizeof op);
    if (!nt_messages_read_client_id(&doc, op.client_id, r)) return;
    text = msgs__read_text(ctx, &doc, &text_len, r);
    if (!text) return;
    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        goto out;
    }
    /* After validation, as on the WebSocket: only a send that would be
     * stored counts against the limit. */
    uint32_t retry_ms;
    if (!nt_messages_send_allowed(ctx, c->user_id, &retry_ms)) {
        nt_reply_error(r, 429, "rate_limited",
                       "too many messages; nothing was written, retry in %u ms", retry_ms);
        snprintf(r->headers, sizeof r->headers, "Retry-After: %u\r\n", nt_retry_after_s(retry_ms));
        goto out;
    }

    op.chat_id = chat_id;
    op.sender_id = c->user_id;
    op.text = text;
    op.text_len = text_len;
    op.ts = nt_now_ms();
    int rc = nt_store_append_wait(ctx->store, &op);
    if (rc == 0) rc = op.status;
    if (rc == NT_STORE_EFORBIDDEN) {
        nt_reply_error(r, 403, "forbidden",
                       "not a member of this chat, the chat is closed, or the other member "
                       "blocked you");
        goto out_op;
    }
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        goto out_op;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "message");
        goto out_op;
    }
    if (op.duplicate) {
        /* A retry: the first message again, and no second fan-out. */
        msgs__reply_message(r, 200, &op.msg);
        goto out_op;
    }
    msgs__reply_message(r, 201, &op.msg);
    nt_messages_fanout(ctx, &op.msg, op.member_ids, op.nmembers);
out_op:
    nt_append_release(&op);
out:
    free(text);
}

/* Edit (text != NULL) or delete: the shared part after validation. */
static void msgs__change(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t seq,
                         const char *text, nt_reply *r)
{
    nt_message m;
    int rc;

    if (seq <= 0) {
        nt_reply_error(r, 400, "bad_request", "seq must be a positive integer");
        return;
    }
    if (!msgs__access(ctx, c, chat_id, false, r)) return;
    memset(&m, 0, sizeof m);
    if (text)
        rc = nt_store_message_edit(ctx->store, chat_id, seq, c->user_id, text, nt_now_ms(), &m);
    else
        rc = nt_store_message_delete(ctx->store, chat_id, seq, c->user_id, nt_now_ms(), &m);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 404, "not_found", "seq: message not found");
        return;
    }
    if (rc == NT_STORE_EFORBIDDEN) {
        nt_reply_error(r, 403, "forbidden",
                       "only the sender may change a message, and not once it is deleted");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "message");
        return;
    }
    if (text) {
        msgs__reply_message(r, 200, &m);
    } else {
        nt_buf_reset(&r->body);
        r->status = 204;
        r->content_type = NULL;
    }
    msgs__event_to_members(ctx, text ? "message_edited" : "message_deleted", &m);
    nt_message_free(&m);
}

void nt_messages_edit(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t seq,
                      const char *body, size_t len, nt_reply *r)
{
    nt_json_tok toks[MSGS_TOKS];
    nt_json doc;
    size_t text_len = 0;

    if (!nt_body_object(r, body, len, &doc, toks, MSGS_TOKS)) return;
    char *text = msgs__read_text(ctx, &doc, &text_len, r);
    if (!text) return;
    msgs__change(ctx, c, chat_id, seq, text, r);
    free(text);
}

void nt_messages_delete(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, int64_t seq, nt_reply *r)
{
    msgs__change(ctx, c, chat_id, seq, NULL, r);
}

/* nt_store_export callback: one message, one line. */
static int msgs__export_line(void *arg, const nt_message *m)
{
    nt_buf *out = arg;
    nt_jw w;

    nt_jw_init(&w, out);
    nt_view_message(&w, m);
    if (nt_jw_error(&w) || nt_buf_append(out, "\n", 1) != 0) return 1;
    return 0;
}

void nt_messages_export(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r)
{
    if (!msgs__access(ctx, c, chat_id, false, r)) return;
    nt_buf_reset(&r->body);
    int rc = nt_store_export(ctx->store, chat_id, msgs__export_line, &r->body);
    if (rc > 0) {
        nt_reply_error(r, 500, "internal", "out of memory writing the export");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    r->status = 200;
    r->content_type = "application/x-ndjson";
}
