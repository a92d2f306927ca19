/*
 * The WebSocket protocol of API.md: auth, send, delivered, read, typing,
 * match, match_cancel, ping. `send` is the hot path: it is validated on the loop thread, handed
 * to the store's group commit without a worker hop, and acknowledged and
 * fanned out when the writer thread reports the commit. Everything else
 * that needs the store runs as a job on a worker thread.
 */
#include "gateway/gateway_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/asan.h"
#include "common/clock.h"
#include "common/log.h"
#include "services/services.h"

#define WS_TOKENS 64

struct gw_send {
    nt_append op;
    gw_send *next_done; /* in the done queue, or in the gateway's send_cache */
    nt_gateway *gw;
    nt_conn *conn;
    uint64_t started_ns;
    bool cached; /* text has room for GW_SEND_CACHED_TEXT bytes: reusable */
    char ws_id[72];
    char text[]; /* the unescaped text, owned here until the commit */
};

/* Sends whose text fits GW_SEND_CACHED_TEXT bytes are kept for reuse, up to
 * GW_SEND_CACHE_MAX of them, so the send path does not allocate per
 * message; a longer text takes its own allocation. */
#define GW_SEND_CACHED_TEXT 1024
#define GW_SEND_CACHE_MAX 256

/* ---- small frames ------------------------------------------------------------ */

static void send_error(nt_conn *c, const char *ws_id, const char *code, const char *message)
{
    if (c->state != NT_CONN_WS) return;
    nt_buf out = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &out);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "error");
    if (ws_id && ws_id[0]) {
        nt_jw_key(&w, "id");
        nt_jw_raw(&w, ws_id, strlen(ws_id));
    }
    nt_jw_kstr(&w, "code", code);
    nt_jw_kstr(&w, "message", message);
    nt_jw_obj_end(&w);
    if (!nt_jw_error(&w)) nt_conn_send_text(c, out.data, out.len);
    nt_buf_free(&out);
}

/* The answer to a send over --send-rate: an error frame that also says when
 * the next send may succeed. */
static void send_rate_limited(nt_conn *c, const char *ws_id, uint32_t retry_after_ms)
{
    if (c->state != NT_CONN_WS) return;
    char frame[320]; /* the id is under 72 bytes */
    int n = snprintf(frame, sizeof frame,
                     "{\"type\":\"error\"%s%s,\"code\":\"rate_limited\",\"message\":\"too many "
                     "messages; nothing was written, retry in %u ms\",\"retry_after_ms\":%u}",
                     ws_id[0] ? ",\"id\":" : "", ws_id, retry_after_ms, retry_after_ms);
    if (n > 0 && (size_t)n < sizeof frame) nt_conn_send_text(c, frame, (size_t)n);
}

static void send_reply_error(nt_conn *c, const char *ws_id, const nt_reply *r)
{
    send_error(c, ws_id, r->code[0] ? r->code : "internal",
               r->message[0] ? r->message : "request failed");
}

/* Copies the raw JSON of the request's "id" (a string or a number). */
static bool take_id(const nt_json *doc, char out[72])
{
    out[0] = '\0';
    int tok = nt_json_get(doc, 0, "id");
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) return true;
    const nt_json_tok *t = &doc->toks[tok];
    const char *start = doc->src + t->start;
    size_t len = t->len;
    if (t->type == NT_JSON_STRING) {
        start--; /* include the quotes */
        len += 2;
    } else if (t->type != NT_JSON_NUMBER) {
        return false;
    }
    if (len >= 72) return false;
    memcpy(out, start, len);
    out[len] = '\0';
    return true;
}

static bool get_positive(const nt_json *doc, const char *key, int64_t *out)
{
    int tok = nt_json_get(doc, 0, key);
    return tok >= 0 && nt_json_int(doc, tok, out) == 0 && *out > 0;
}

void gw_conn_maybe_resume(nt_conn *c)
{
    if ((c->state == NT_CONN_WS || c->state == NT_CONN_WS_CLOSING) &&
        c->session.sends < GW_MAX_SENDS_PER_CONN && c->session.jobs < GW_MAX_JOBS_PER_CONN &&
        !c->session.auth_pending)
        nt_conn_resume(c);
}

/* ---- jobs ------------------------------------------------------------------------ */

enum { WS_AUTH = 1, WS_MARK, WS_TYPING, WS_MATCH, WS_MATCH_CANCEL };

static void run_ws_job(gw_job *job)
{
    nt_ctx *ctx = job->gw->ctx;
    switch (job->kind) {
    case WS_AUTH:
        switch (nt_auth_verify(ctx, job->token, &job->caller)) {
        case 0:
            job->reply.status =
                nt_users_ready_frame(ctx, job->caller.user_id, &job->frame) == 0 ? 200 : 503;
            break;
        case -2:
            job->reply.status = 503;
            break;
        default:
            job->reply.status = 401;
            break;
        }
        break;
    case WS_MARK:
        nt_chats_mark(ctx, &job->caller, job->chat_id, job->route, job->seq, &job->reply);
        break;
    case WS_TYPING:
        nt_chats_typing(ctx, &job->caller, job->chat_id, &job->reply);
        break;
    case WS_MATCH:
        nt_match_join_async(ctx, &job->caller, &job->reply);
        break;
    case WS_MATCH_CANCEL:
        nt_match_leave(ctx, &job->caller, &job->reply);
        break;
    }
}

/*
 * An authenticated WebSocket's `ready`, held until the bus registry has the
 * connection (nt_bus_registry_flush): from `ready` on, messages sent
 * through any node reach it. Until then the connection stays auth_pending
 * (not read, no deliveries) and holds a reference and a job, so a drain or
 * nt_gateway_free waits for it. The loop never waits: the bus calls back.
 */
typedef struct gw_ready {
    nt_gateway *gw;
    nt_conn *conn;
    size_t len;
    char frame[];
} gw_ready;

static void send_ready(void *arg)
{
    gw_ready *r = arg;
    nt_conn *c = r->conn;
    r->gw->jobs_in_flight--;
    c->session.jobs--;
    c->session.auth_pending = false;
    if (c->state == NT_CONN_WS) nt_conn_send_text(c, r->frame, r->len);
    gw_conn_maybe_resume(c);
    nt_conn_unref(c);
    free(r);
}

/* The auth frame is answered by closing the connection. */
static void auth_refuse(nt_conn *c, uint16_t code, const char *reason)
{
    c->session.auth_pending = false;
    nt_conn_close_ws(c, code, reason);
}

static void auth_done(nt_gateway *gw, nt_conn *c, gw_job *job)
{
    if (job->reply.status == 503) {
        /* The token may be valid: 1013 "try again later", not 4001. */
        auth_refuse(c, NT_WS_CLOSE_TRY_AGAIN, "storage is unavailable");
        return;
    }
    if (job->reply.status != 200) {
        auth_refuse(c, NT_WS_CLOSE_AUTH, "invalid or expired token");
        return;
    }
    gw_ready *r = malloc(sizeof *r + job->frame.len);
    if (!r) {
        auth_refuse(c, NT_WS_CLOSE_TRY_AGAIN, "out of memory");
        return;
    }
    c->session.user_id = job->caller.user_id;
    c->session.session_id = job->caller.session_id;
    gw_registry_add(gw, c);
    /* Presence (first connection anywhere) comes to on_presence. */
    if (nt_bus_conn_up(gw->ctx->bus, c->session.user_id) != 0) {
        gw_registry_remove(gw, c);
        c->session.user_id = 0; /* on_close must not count it down */
        free(r);
        auth_refuse(c, NT_WS_CLOSE_TRY_AGAIN, "out of memory");
        return;
    }
    r->gw = gw;
    r->conn = c;
    r->len = job->frame.len;
    if (r->len) memcpy(r->frame, job->frame.data, r->len);
    nt_conn_ref(c);
    c->session.jobs++;
    gw->jobs_in_flight++;
    /* Cannot queue the flush: answer at once, as before the registry. */
    if (nt_bus_registry_flush(gw->ctx->bus, send_ready, r) != 0) send_ready(r);
}

static void after_ws_job(gw_job *job)
{
    nt_conn *c = job->conn;
    nt_gateway *gw = job->gw;
    if (c->state != NT_CONN_WS) return;
    if (job->kind == WS_AUTH) {
        auth_done(gw, c, job);
        return;
    }
    if (job->reply.status >= 400) {
        send_reply_error(c, job->ws_id, &job->reply);
    } else if (job->kind == WS_MATCH || job->kind == WS_MATCH_CANCEL) {
        /* The answer to a match request: {"type":"match_queued"|
         * "match_cancelled","id"?} (the pair itself comes as `matched`). */
        char ans[128];
        int n = snprintf(ans, sizeof ans, "{\"type\":\"%s\"%s%s}",
                         job->kind == WS_MATCH ? "match_queued" : "match_cancelled",
                         job->ws_id[0] ? ",\"id\":" : "", job->ws_id);
        if (n > 0 && (size_t)n < sizeof ans) nt_conn_send_text(c, ans, (size_t)n);
    }
}

/*
 * Presence changes of one user are told in the order they happened: at most
 * one presence job per user is in flight, and a change that comes meanwhile
 * waits in `pending` (only the latest state matters) and runs after it.
 * Otherwise a quick offline-online pair could reach partners reversed.
 */
struct gw_presence_slot {
    struct gw_presence_slot *next;
    int64_t user_id;
    int pending; /* -1 none, 0 offline, 1 online */
};

static void submit_presence(nt_gateway *gw, int64_t user_id, bool online);

static void run_presence(gw_job *job)
{
    nt_users_presence(job->gw->ctx, job->caller.user_id, job->online);
}

static void after_presence(gw_job *job)
{
    for (gw_presence_slot **p = &job->gw->presence_in_flight; *p; p = &(*p)->next) {
        gw_presence_slot *slot = *p;
        if (slot->user_id != job->caller.user_id) continue;
        if (slot->pending >= 0 && (slot->pending == 1) != job->online) {
            bool online = slot->pending == 1;
            slot->pending = -1;
            submit_presence(job->gw, slot->user_id, online);
        } else {
            *p = slot->next;
            free(slot);
        }
        return;
    }
}

static void submit_presence(nt_gateway *gw, int64_t user_id, bool online)
{
    gw_job *job = calloc(1, sizeof *job);
    if (!job) return;
    job->caller.user_id = user_id;
    job->online = online;
    job->run = run_presence;
    job->after = after_presence;
    gw_job_submit(gw, job);
}

void gw_presence(nt_gateway *gw, int64_t user_id, bool online)
{
    for (gw_presence_slot *slot = gw->presence_in_flight; slot; slot = slot->next) {
        if (slot->user_id == user_id) {
            slot->pending = online;
            return;
        }
    }
    gw_presence_slot *slot = calloc(1, sizeof *slot);
    if (!slot) return;
    slot->user_id = user_id;
    slot->pending = -1;
    slot->next = gw->presence_in_flight;
    gw->presence_in_flight = slot;
    submit_presence(gw, user_id, online);
}

/* `mark` is NT_MARK_* for WS_MARK jobs. */
static void submit_ws_job(nt_gateway *gw, nt_conn *c, int kind, int mark, int64_t chat_id,
                          int64_t seq, const char *ws_id)
{
    gw_job *job = calloc(1, sizeof *job);
    if (!job) {
        send_error(c, ws_id, "unavailable", "out of memory");
        return;
    }
    job->conn = c;
    job->kind = kind;
    job->route = mark;
    job->chat_id = chat_id;
    job->seq = seq;
    job->caller.user_id = c->session.user_id;
    job->caller.session_id = c->session.session_id;
    memcpy(job->ws_id, ws_id, sizeof job->ws_id);
    job->run = run_ws_job;
    job->after = after_ws_job;
    gw_job_submit(gw, job);
    if (c->session.jobs >= GW_MAX_JOBS_PER_CONN) nt_conn_pause(c);
}

/* ---- the send hot path ------------------------------------------------------ */

/* A zeroed send with room for a text of text_cap bytes (NUL included), or
 * NULL when out of memory. */
static gw_send *send_new(nt_gateway *gw, size_t text_cap)
{
    gw_send *s;
    bool cached = text_cap <= GW_SEND_CACHED_TEXT;
    if (cached && gw->send_cache) {
        s = gw->send_cache;
        NT_ASAN_UNPOISON(s, sizeof *s + GW_SEND_CACHED_TEXT);
        gw->send_cache = s->next_done;
        gw->nsend_cache--;
    } else {
        s = malloc(sizeof *s + (cached ? GW_SEND_CACHED_TEXT : text_cap));
        if (!s) return NULL;
    }
    memset(s, 0, sizeof *s);
    s->cached = cached;
    return s;
}

static void send_free(nt_gateway *gw, gw_send *s)
{
    if (s->cached && gw->nsend_cache < GW_SEND_CACHE_MAX) {
        s->next_done = gw->send_cache;
        gw->send_cache = s;
        gw->nsend_cache++;
        /* All but the link, which leak checking must still see. */
        NT_ASAN_POISON(&s->gw, sizeof *s + GW_SEND_CACHED_TEXT - offsetof(gw_send, gw));
        NT_ASAN_POISON(s, offsetof(gw_send, next_done));
        return;
    }
    free(s);
}

void gw_send_cache_free(nt_gateway *gw)
{
    while (gw->send_cache) {
        NT_ASAN_UNPOISON(gw->send_cache, sizeof(gw_send) + GW_SEND_CACHED_TEXT);
        gw_send *next = gw->send_cache->next_done;
        free(gw->send_cache);
        gw->send_cache = next;
    }
    gw->nsend_cache = 0;
}

/* Writer thread, right after the commit: hand the op to the loop. */
static void on_send_committed(nt_append *op)
{
    gw_send *s = op->user;
    nt_gateway *gw = s->gw;
    pthread_mutex_lock(&gw->done_lock);
    s->next_done = NULL;
    if (gw->done_tail)
        gw->done_tail->next_done = s;
    else
        gw->done_head = s;
    gw->done_tail = s;
    pthread_mutex_unlock(&gw->done_lock);
    uv_async_send(&gw->done_async);
}

static void finish_send(nt_gateway *gw, gw_send *s)
{
    nt_conn *c = s->conn;
    nt_append *op = &s->op;
    if (op->status == 0) {
        if (c->state == NT_CONN_WS) {
            char ack[320];
            int n = snprintf(ack, sizeof ack,
                             "{\"type\":\"ack\"%s%s,\"chat_id\":%lld,\"seq\":%lld,"
                             "\"message_id\":%lld,\"ts\":%lld}",
                             s->ws_id[0] ? ",\"id\":" : "", s->ws_id, (long long)op->chat_id,
                             (long long)op->msg.seq, (long long)op->msg.id, (long long)op->msg.ts);
            nt_conn_send_text(c, ack, (size_t)n);
        }
        nt_histogram_add(&gw->metrics.send_to_ack, (double)(nt_mono_ns() - s->started_ns) / 1e6);
        if (!op->duplicate) {
            gw->metrics.messages_in++;
            nt_messages_fanout(gw->ctx, &op->msg, op->member_ids, op->nmembers);
        }
    } else {
        gw->metrics.send_errors++;
        const char *code = "internal", *message = "the message could not be stored";
        if (op->status == NT_STORE_ENOTFOUND)
            code = "not_found", message = "no such chat";
        else if (op->status == NT_STORE_EFORBIDDEN)
            code = "forbidden", message = "you cannot write to this chat";
        else if (op->status == NT_STORE_EUNAVAILABLE)
            code = "unavailable", message = "storage is unavailable; nothing was written";
        send_error(c, s->ws_id, code, message);
    }
    gw->sends_in_flight--;
    c->session.sends--;
    gw_conn_maybe_resume(c);
    nt_conn_unref(c);
    nt_append_release(op);
    send_free(gw, s);
}

void gw_on_send_done_async(uv_async_t *h)
{
    nt_gateway *gw = h->data;
    pthread_mutex_lock(&gw->done_lock);
    gw_send *s = gw->done_head;
    gw->done_head = gw->done_tail = NULL;
    pthread_mutex_unlock(&gw->done_lock);
    while (s) {
        gw_send *next = s->next_done;
        finish_send(gw, s);
        s = next;
    }
}

static void handle_send(nt_gateway *gw, nt_conn *c, const nt_json *doc, const char *ws_id)
{
    /* With the bus down (a cluster's Redis) the message could reach nobody
     * live: refuse it plainly instead of storing it silently. */
    if (nt_bus_ping(gw->ctx->bus) != 0) {
        send_error(c, ws_id, "unavailable", "the message bus is unavailable; nothing was written");
        return;
    }
    int64_t chat_id;
    if (!get_positive(doc, "chat_id", &chat_id)) {
        send_error(c, ws_id, "bad_request", "chat_id must be a positive integer");
        return;
    }
    int text_tok = nt_json_get(doc, 0, "text");
    if (nt_json_type_of(doc, text_tok) != NT_JSON_STRING) {
        send_error(c, ws_id, "bad_request", "text must be a string");
        return;
    }
    size_t cap = doc->toks[text_tok].len + 1; /* unescaping never grows */
    gw_send *s = send_new(gw, cap);
    if (!s) {
        send_error(c, ws_id, "unavailable", "out of memory");
        return;
    }
    int text_len = nt_json_str(doc, text_tok, s->text, cap);
    const char *why = text_len < 0 ? "text must not contain NUL"
                                   : nt_messages_check_text(gw->ctx, s->text, (size_t)text_len);
    if (why) {
        send_error(c, ws_id, "bad_request", why);
        send_free(gw, s);
        return;
    }
    nt_reply bad = {0};
    if (!nt_messages_read_client_id(doc, s->op.client_id, &bad)) {
        send_reply_error(c, ws_id, &bad);
        nt_reply_free(&bad);
        send_free(gw, s);
        return;
    }
    /* Last, so only a send that would be stored counts against the limit. */
    uint32_t retry_ms;
    if (!nt_messages_send_allowed(gw->ctx, c->session.user_id, &retry_ms)) {
        gw->metrics.send_errors++; /* natter_send_errors_total: refused sends */
        send_rate_limited(c, ws_id, retry_ms);
        send_free(gw, s);
        return;
    }
    s->gw = gw;
    s->conn = c;
    s->started_ns = nt_mono_ns();
    memcpy(s->ws_id, ws_id, sizeof s->ws_id);
    s->op.chat_id = chat_id;
    s->op.sender_id = c->session.user_id;
    s->op.text = s->text;
    s->op.text_len = (size_t)text_len;
    s->op.ts = nt_now_ms();
    s->op.done = on_send_committed;
    s->op.user = s;
    nt_conn_ref(c);
    c->session.sends++;
    gw->sends_in_flight++;
    nt_store_append(gw->ctx->store, &s->op);
    if (c->session.sends >= GW_MAX_SENDS_PER_CONN) nt_conn_pause(c);
}

/* ---- dispatch ------------------------------------------------------------------- */

void gw_on_ws_text(void *arg, nt_conn *c, char *msg, size_t len)
{
    nt_gateway *gw = arg;
    nt_json_tok toks[WS_TOKENS];
    nt_json doc;
    if (nt_json_parse(&doc, msg, len, toks, WS_TOKENS) != 0 ||
        nt_json_type_of(&doc, 0) != NT_JSON_OBJECT) {
        if (!c->session.user_id) {
            nt_conn_close_ws(c, NT_WS_CLOSE_AUTH, "the first frame must be auth");
            return;
        }
        send_error(c, NULL, "bad_request", "a frame must be one JSON object");
        return;
    }
    char ws_id[72];
    if (!take_id(&doc, ws_id)) {
        send_error(c, NULL, "bad_request", "id must be a string or a number under 64 bytes");
        return;
    }
    int type_tok = nt_json_get(&doc, 0, "type");
    char type[24];
    if (nt_json_type_of(&doc, type_tok) != NT_JSON_STRING ||
        nt_json_str(&doc, type_tok, type, sizeof type) < 0) {
        if (!c->session.user_id) {
            nt_conn_close_ws(c, NT_WS_CLOSE_AUTH, "the first frame must be auth");
            return;
        }
        send_error(c, ws_id, "bad_request", "type must be a string");
        return;
    }

    if (!c->session.user_id) {
        char token[2048];
        int tok = nt_json_get(&doc, 0, "token");
        if (strcmp(type, "auth") != 0 || c->session.auth_pending ||
            nt_json_str(&doc, tok, token, sizeof token) <= 0) {
            nt_conn_close_ws(c, NT_WS_CLOSE_AUTH, "the first frame must be auth");
            return;
        }
        gw_job *job = calloc(1, sizeof *job);
        if (!job || !(job->token = strdup(token))) {
            free(job);
            nt_conn_close_ws(c, NT_WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        c->session.auth_pending = true;
        job->conn = c;
        job->kind = WS_AUTH;
        job->run = run_ws_job;
        job->after = after_ws_job;
        gw_job_submit(gw, job);
        /* Frames sent right behind auth wait for its answer instead of
         * being refused as unauthenticated. */
        nt_conn_pause(c);
        return;
    }

    if (!strcmp(type, "send")) {
        handle_send(gw, c, &doc, ws_id);
    } else if (!strcmp(type, "ping")) {
        char pong[120];
        int n = snprintf(pong, sizeof pong, "{\"type\":\"pong\"%s%s}", ws_id[0] ? ",\"id\":" : "",
                         ws_id);
        nt_conn_send_text(c, pong, (size_t)n);
    } else if (!strcmp(type, "delivered") || !strcmp(type, "read")) {
        int64_t chat_id, seq;
        if (!get_positive(&doc, "chat_id", &chat_id)) {
            send_error(c, ws_id, "bad_request", "chat_id must be a positive integer");
        } else if (!get_positive(&doc, "seq", &seq)) {
            send_error(c, ws_id, "bad_request", "seq must be a positive integer");
        } else {
            int mark = !strcmp(type, "read") ? NT_MARK_READ : NT_MARK_DELIVERED;
            submit_ws_job(gw, c, WS_MARK, mark, chat_id, seq, ws_id);
        }
    } else if (!strcmp(type, "typing")) {
        int64_t chat_id;
        if (!get_positive(&doc, "chat_id", &chat_id)) {
            send_error(c, ws_id, "bad_request", "chat_id must be a positive integer");
            return;
        }
        submit_ws_job(gw, c, WS_TYPING, 0, chat_id, 0, ws_id);
    } else if (!strcmp(type, "auth")) {
        send_error(c, ws_id, "bad_request", "already authenticated");
    } else if (!strcmp(type, "match")) {
        submit_ws_job(gw, c, WS_MATCH, 0, 0, 0, ws_id);
    } else if (!strcmp(type, "match_cancel")) {
        submit_ws_job(gw, c, WS_MATCH_CANCEL, 0, 0, 0, ws_id);
    } else {
        send_error(c, ws_id, "bad_request", "unknown type");
    }
}
