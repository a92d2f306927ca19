/*
 * The network core: accept, read, parse HTTP and WebSocket, queue and flush
 * output, keep deadlines. See server.h for the rules it keeps; the gateway
 * gives requests and messages their meaning through the callbacks.
 */
#include "net/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define READ_BUFFER_SIZE (64 * 1024 + 64)
#define FLUSH_IOVECS 1024   /* IOV_MAX: one writev takes everything queued */
#define HTTP_IDLE_S 60      /* keep-alive connection with no request */
#define HTTP_REQUEST_S 30   /* a whole request head and body */
#define WS_CLOSE_WAIT_S 2   /* waiting for the peer's close frame */
#define PRE_AUTH_FRAME 4096 /* frames before authentication are small */

struct nt_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_check_t flush;
    nt_server_opts opts;
    nt_server_callbacks cb;
    nt_http_limits http_limits;
    char host[64];
    nt_conn *conns; /* list of all open connections */
    nt_conn *dirty; /* connections with output queued this turn */
    size_t nconns;
    uint32_t clock_s; /* seconds since start, from the loop clock */
    uint64_t start_ms;
    bool listening, draining;
    nt_server_stats stats;
    char read_buffer[READ_BUFFER_SIZE]; /* shared by every connection */
    bool read_buffer_busy;
};

typedef struct write_req {
    uv_write_t req;
    nt_conn *conn;
    size_t bytes;
} write_req;

static void conn_close_now(nt_conn *c);
static void conn_flush(nt_conn *c);
static void process_input(nt_conn *c, char *data, size_t len);

static uint32_t server_clock(nt_server *s)
{
    return (uint32_t)((uv_now(s->loop) - s->start_ms) / 1000);
}

/* ---- output ---------------------------------------------------------- */

static void mark_dirty(nt_conn *c)
{
    if (c->dirty) return;
    c->dirty = true;
    c->dirty_next = c->server->dirty;
    c->server->dirty = c;
}

/* Takes over one reference of `block`. */
static void conn_queue(nt_conn *c, nt_shared *block)
{
    if (!nt_conn_is_open(c) && c->state != NT_CONN_WS_CLOSING) {
        nt_shared_unref(block);
        return;
    }
    if (c->outq_len == c->outq_cap) {
        uint32_t cap = c->outq_cap ? c->outq_cap * 2 : 4;
        nt_outq_item *q = realloc(c->outq, cap * sizeof *q);
        if (!q) {
            nt_shared_unref(block);
            conn_close_now(c);
            return;
        }
        c->outq = q;
        c->outq_cap = cap;
    }
    c->outq[c->outq_len++] = (nt_outq_item){block, 0};
    c->pending_out += block->len;
    if (c->pending_out > c->server->opts.max_output) {
        /* A slow consumer: its unsent output would grow without bound. The
         * close frame could not get through a full buffer anyway, so cut it. */
        c->server->stats.slow_consumers++;
        nt_warn("slow consumer cut off user=%lld pending=%zu", (long long)c->session.user_id,
                c->pending_out);
        conn_close_now(c);
        return;
    }
    mark_dirty(c);
}

/* Drops `bytes` written bytes from the front of the queue. */
static void outq_consume(nt_conn *c, size_t bytes)
{
    uint32_t done = 0;
    c->pending_out -= bytes;
    while (bytes > 0 && done < c->outq_len) {
        nt_outq_item *it = &c->outq[done];
        size_t left = it->block->len - it->offset;
        if (bytes < left) {
            it->offset += (uint32_t)bytes;
            break;
        }
        bytes -= left;
        nt_shared_unref(it->block);
        done++;
    }
    if (done) {
        memmove(c->outq, c->outq + done, (c->outq_len - done) * sizeof *c->outq);
        c->outq_len -= done;
    }
    if (c->outq_len == 0 && c->outq_cap > 4) {
        /* Idle connections give their queue memory back. */
        free(c->outq);
        c->outq = NULL;
        c->outq_cap = 0;
    }
}

/* An empty queue keeps its (small) array between flushes so that a busy
 * connection does not allocate per frame; the sweep gives it back once a
 * second, so a connection that went idle owns no output memory (about 80
 * bytes of each idle connection's share otherwise). */
static void outq_trim(nt_conn *c)
{
    if (c->outq && c->outq_len == 0 && !c->outq_inflight) {
        free(c->outq);
        c->outq = NULL;
        c->outq_cap = 0;
    }
}

static void outq_release(nt_conn *c)
{
    for (uint32_t i = 0; i < c->outq_len; i++)
        nt_shared_unref(c->outq[i].block);
    free(c->outq);
    c->outq = NULL;
    c->outq_len = c->outq_cap = 0;
    c->pending_out = 0;
}

static void on_write_done(uv_write_t *req, int status)
{
    write_req *wr = (write_req *)req;
    nt_conn *c = wr->conn;
    c->outq_inflight = 0;
    if (status == 0 && !c->handle_closed && c->state != NT_CONN_CLOSED) {
        c->server->stats.bytes_out += wr->bytes;
        outq_consume(c, wr->bytes);
        if (c->outq_len)
            conn_flush(c);
        else if (c->close_after_flush)
            conn_close_now(c);
    } else if (status != 0) {
        conn_close_now(c);
    }
    free(wr);
    nt_conn_unref(c);
}

/* One writev for everything pending; what the kernel does not take now goes
 * to an uv_write that finishes it. */
static void conn_flush(nt_conn *c)
{
    if (c->outq_inflight || c->handle_closed || c->state == NT_CONN_CLOSED) return;
    while (c->outq_len) {
        uv_buf_t bufs[FLUSH_IOVECS];
        unsigned n = c->outq_len < FLUSH_IOVECS ? c->outq_len : FLUSH_IOVECS;
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            nt_outq_item *it = &c->outq[i];
            bufs[i] = uv_buf_init(it->block->data + it->offset, it->block->len - it->offset);
            total += bufs[i].len;
        }
        c->server->stats.writev_calls++;
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (rc > 0) {
            c->server->stats.bytes_out += (uint64_t)rc;
            outq_consume(c, (size_t)rc);
            if ((size_t)rc == total) continue;
            /* Partial write: hand the rest to libuv. */
            n = c->outq_len < FLUSH_IOVECS ? c->outq_len : FLUSH_IOVECS;
            total = 0;
            for (unsigned i = 0; i < n; i++) {
                nt_outq_item *it = &c->outq[i];
                bufs[i] = uv_buf_init(it->block->data + it->offset, it->block->len - it->offset);
                total += bufs[i].len;
            }
        } else if (rc != UV_EAGAIN) {
            conn_close_now(c);
            return;
        }
        write_req *wr = malloc(sizeof *wr);
        if (!wr) {
            conn_close_now(c);
            return;
        }
        wr->conn = c;
        wr->bytes = total;
        nt_conn_ref(c);
        c->outq_inflight = n;
        if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, n, on_write_done) != 0) {
            c->outq_inflight = 0;
            free(wr);
            nt_conn_unref(c);
            conn_close_now(c);
        }
        return;
    }
    if (c->close_after_flush) conn_close_now(c);
}

/* Runs once per loop turn after I/O: flush every connection that got output. */
static void on_flush_check(uv_check_t *h)
{
    nt_server *s = h->data;
    while (s->dirty) {
        nt_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        conn_flush(c);
        nt_conn_unref(c);
    }
}

void nt_conn_send_frame(nt_conn *c, nt_shared *frame)
{
    c->server->stats.frames_out++;
    bool was_dirty = c->dirty;
    conn_queue(c, nt_shared_ref(frame));
    if (!was_dirty && c->dirty) nt_conn_ref(c); /* the dirty list holds a reference */
}

nt_shared *nt_ws_frame_text(const char *payload, size_t len)
{
    uint8_t header[10];
    size_t hl = nt_ws_header(header, NT_WS_OP_TEXT, len);
    nt_shared *f = nt_shared_alloc(hl + len);
    if (!f) return NULL;
    memcpy(f->data, header, hl);
    memcpy(f->data + hl, payload, len);
    return f;
}

static void send_ws(nt_conn *c, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t header[10];
    size_t hl = nt_ws_header(header, opcode, len);
    nt_shared *f = nt_shared_alloc(hl + len);
    if (!f) {
        conn_close_now(c);
        return;
    }
    memcpy(f->data, header, hl);
    if (len) memcpy(f->data + hl, payload, len);
    nt_conn_send_frame(c, f);
    nt_shared_unref(f);
}

void nt_conn_send_text(nt_conn *c, const char *json, size_t len)
{
    send_ws(c, NT_WS_OP_TEXT, json, len);
}

static void send_raw(nt_conn *c, const void *bytes, size_t len)
{
    nt_shared *b = nt_shared_new(bytes, len);
    if (!b) {
        conn_close_now(c);
        return;
    }
    bool was_dirty = c->dirty;
    conn_queue(c, b);
    if (!was_dirty && c->dirty) nt_conn_ref(c);
}

/* ---- lifecycle --------------------------------------------------------- */

void nt_conn_ref(nt_conn *c)
{
    c->refs++;
}

static void conn_free(nt_conn *c)
{
    outq_release(c);
    nt_buf_free(&c->in);
    nt_ws_assembler_free(&c->ws_msg);
    if (c->http) nt_http_parser_free(c->http);
    free(c);
}

void nt_conn_unref(nt_conn *c)
{
    if (--c->refs == 0) conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    nt_conn *c = h->data;
    c->handle_closed = true;
    nt_conn_unref(c);
}

static void conn_close_now(nt_conn *c)
{
    if (c->state == NT_CONN_CLOSED) return;
    nt_server *s = c->server;
    bool was_ws = c->state != NT_CONN_HTTP;
    c->state = NT_CONN_CLOSED;
    if (s->cb.on_close) s->cb.on_close(s->cb.arg, c);
    /* unlink from the list of open connections */
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->nconns--;
    s->stats.connections_open--;
    if (was_ws) s->stats.websockets_open--;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void respond_error_and_close(nt_conn *c, int status)
{
    char body[160];
    const char *code = status == 413 ? "payload_too_large" : "bad_request";
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code,
                     nt_http_reason(status));
    nt_buf out = NT_BUF_INIT;
    if (nt_http_append_response(&out, status, "application/json", NULL, body, (size_t)n, false) ==
        0)
        send_raw(c, out.data, out.len);
    nt_buf_free(&out);
    c->close_after_flush = true;
    nt_conn_pause(c);
    if (c->outq_len == 0) conn_close_now(c);
}

void nt_conn_close_ws(nt_conn *c, uint16_t code, const char *reason)
{
    if (c->state != NT_CONN_WS) return;
    nt_buf frame = NT_BUF_INIT;
    if (nt_ws_append_close(&frame, code, reason ? reason : "", false) == 0)
        send_raw(c, frame.data, frame.len);
    nt_buf_free(&frame);
    c->state = NT_CONN_WS_CLOSING;
    c->closing_since_s = c->server->clock_s;
    if (code == NT_WS_CLOSE_PROTOCOL || code == NT_WS_CLOSE_BAD_DATA ||
        code == NT_WS_CLOSE_TOO_BIG || code == 1003)
        c->server->stats.protocol_errors++;
    /* A peer that broke the protocol gets no more reading: close once the
     * frame is out. A normal close waits for the peer's answer. */
    if (code == NT_WS_CLOSE_PROTOCOL || code == NT_WS_CLOSE_TOO_BIG ||
        code == NT_WS_CLOSE_BAD_DATA || code == NT_WS_CLOSE_POLICY) {
        c->close_after_flush = true;
        nt_conn_pause(c);
    }
}

void nt_conn_pause(nt_conn *c)
{
    if (!c->paused && !c->handle_closed) {
        c->paused = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void process_stashed(nt_conn *c);

void nt_conn_resume(nt_conn *c)
{
    if (c->server->draining && c->state == NT_CONN_WS)
        return; /* draining: only the closing handshake is read */
    if (c->paused && c->state != NT_CONN_CLOSED && !c->close_after_flush) {
        c->paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (!c->in_process) process_stashed(c);
    }
}

/* ---- input --------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    nt_conn *c = h->data;
    nt_server *s = c->server;
    /* Reads land in the server's buffer; only leftovers are copied into the
     * connection's own, so idle connections own no input memory. */
    if (!s->read_buffer_busy) {
        s->read_buffer_busy = true;
        *buf = uv_buf_init(s->read_buffer, sizeof s->read_buffer);
    } else {
        *buf = uv_buf_init(malloc(READ_BUFFER_SIZE), READ_BUFFER_SIZE);
        if (!buf->base) buf->len = 0;
    }
}

static void release_read_buffer(nt_server *s, const uv_buf_t *buf)
{
    if (buf->base == s->read_buffer)
        s->read_buffer_busy = false;
    else
        free(buf->base);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    nt_conn *c = stream->data;
    nt_server *s = c->server;
    if (nread < 0) {
        release_read_buffer(s, buf);
        conn_close_now(c);
        return;
    }
    if (nread == 0) {
        release_read_buffer(s, buf);
        return;
    }
    s->stats.bytes_in += (uint64_t)nread;
    c->last_rx_s = s->clock_s;
    c->ping_sent_s = 0;
    nt_conn_ref(c);
    if (c->in.len) {
        if (nt_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
            release_read_buffer(s, buf);
            conn_close_now(c);
            nt_conn_unref(c);
            return;
        }
        release_read_buffer(s, buf);
        nt_buf tmp = c->in;
        c->in = (nt_buf)NT_BUF_INIT;
        process_input(c, tmp.data, tmp.len);
        nt_buf_free(&tmp);
    } else {
        process_input(c, buf->base, (size_t)nread);
        release_read_buffer(s, buf);
    }
    nt_conn_unref(c);
}

/* Keeps unparsed input. Bounded: a partial frame or request never needs
 * more than the largest frame or body plus a read's worth. */
static void stash_input(nt_conn *c, const char *data, size_t len)
{
    const nt_server_opts *o = &c->server->opts;
    size_t cap = (o->max_frame > o->max_body ? o->max_frame : o->max_body) + 2 * READ_BUFFER_SIZE;
    if (!len) return;
    if (c->in.len + len > cap || nt_buf_append(&c->in, data, len) != 0) conn_close_now(c);
}

static bool header_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0) return true;
    }
    return false;
}

/* Returns false if the connection can take no more input now. */
static bool handle_upgrade(nt_conn *c, nt_http_request *req)
{
    nt_server *s = c->server;
    char accept[29];
    if (strcmp(req->ws_version, "13") != 0 ||
        nt_ws_accept_key(req->ws_key, strlen(req->ws_key), accept) != 0 ||
        !header_has_token(req->upgrade, "websocket")) {
        respond_error_and_close(c, 400);
        return false;
    }
    int status = s->cb.on_upgrade ? s->cb.on_upgrade(s->cb.arg, c, req) : 404;
    if (status != 0) {
        respond_error_and_close(c, status);
        return false;
    }
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    send_raw(c, head, (size_t)n);
    c->state = NT_CONN_WS;
    c->created_s = s->clock_s; /* the auth deadline counts from the upgrade */
    s->stats.websockets_open++;
    return true;
}

/* Feeds HTTP bytes; returns bytes used, or -1 if the connection stops. */
static ssize_t process_http(nt_conn *c, char *data, size_t len)
{
    nt_server *s = c->server;
    if (!c->http) {
        c->http = nt_http_parser_new(&s->http_limits);
        if (!c->http) {
            conn_close_now(c);
            return -1;
        }
        c->request_started_s = s->clock_s;
    }
    bool done = false;
    ssize_t used = nt_http_parser_feed(c->http, data, len, &done);
    if (used < 0) {
        respond_error_and_close(c, (int)-used);
        return -1;
    }
    if (!done) return used;

    /* Take the request over; the parser is freed so an idle keep-alive
     * connection holds none. */
    nt_http_request *req = malloc(sizeof *req);
    if (!req) {
        conn_close_now(c);
        return -1;
    }
    nt_http_request *parsed = nt_http_parser_request(c->http);
    *req = *parsed;
    memset(parsed, 0, sizeof *parsed);
    nt_http_parser_free(c->http);
    c->http = NULL;
    s->stats.http_requests++;

    if (req->is_upgrade) {
        bool ok = handle_upgrade(c, req);
        nt_http_request_free(req);
        free(req);
        return ok ? used : -1;
    }
    c->busy = true;
    c->keep_alive = req->keep_alive;
    /* Nothing more is read until the answer is out: pipelined bytes wait in
     * the socket, not in our memory. */
    nt_conn_pause(c);
    s->cb.on_request(s->cb.arg, c, req);
    return used;
}

static void handle_close_frame(nt_conn *c, const nt_ws_frame *f)
{
    if (c->state == NT_CONN_WS_CLOSING) {
        /* The answer to our close: the handshake is complete once our own
         * close frame is out too. */
        if (c->outq_len) {
            c->close_after_flush = true;
            nt_conn_pause(c);
        } else {
            conn_close_now(c);
        }
        return;
    }
    uint16_t code = NT_WS_CLOSE_NORMAL;
    int check = nt_ws_close_check(f->payload, f->len, &code);
    if (check < 0) {
        nt_conn_close_ws(c, (uint16_t)-check, "bad close frame");
        return;
    }
    if (code == 1005) /* the peer sent no status: answer without one too */
        code = NT_WS_CLOSE_NORMAL;
    nt_buf frame = NT_BUF_INIT;
    if (nt_ws_append_close(&frame, code, "", false) == 0) send_raw(c, frame.data, frame.len);
    nt_buf_free(&frame);
    c->state = NT_CONN_WS_CLOSING;
    c->closing_since_s = c->server->clock_s;
    c->close_after_flush = true;
    nt_conn_pause(c);
}

/* Feeds WebSocket bytes; returns bytes used, or -1 if the connection stops. */
static ssize_t process_ws(nt_conn *c, char *data, size_t len)
{
    nt_server *s = c->server;
    size_t max = c->session.user_id ? s->opts.max_frame : PRE_AUTH_FRAME;
    nt_ws_frame f;
    ssize_t used = nt_ws_parse((uint8_t *)data, len, max, true, &f);
    if (used == 0) return 0;
    if (used < 0) {
        nt_conn_close_ws(c, (uint16_t)-used, "protocol error");
        return -1;
    }
    s->stats.frames_in++;
    switch (f.opcode) {
    case NT_WS_OP_PING:
        if (c->state == NT_CONN_WS) /* nothing but close after our close */
            send_ws(c, NT_WS_OP_PONG, f.payload, f.len);
        return used;
    case NT_WS_OP_PONG:
        return used;
    case NT_WS_OP_CLOSE:
        handle_close_frame(c, &f);
        return -1;
    default:
        break;
    }
    if (c->state == NT_CONN_WS_CLOSING) return used; /* data after our close frame is ignored */
    const uint8_t *msg;
    size_t msg_len;
    uint8_t opcode;
    int rc = nt_ws_assemble(&c->ws_msg, &f, max, &msg, &msg_len, &opcode);
    if (rc < 0) {
        nt_conn_close_ws(c, (uint16_t)-rc, "bad message");
        return -1;
    }
    if (rc == 1) {
        if (opcode != NT_WS_OP_TEXT) {
            nt_conn_close_ws(c, 1003, "text frames only");
            return -1;
        }
        s->cb.on_ws_text(s->cb.arg, c, (char *)msg, msg_len);
    }
    return used;
}

static void process_input(nt_conn *c, char *data, size_t len)
{
    if (c->in_process) { /* called again from a callback: keep for later */
        stash_input(c, data, len);
        return;
    }
    c->in_process = true;
    while (len > 0 && c->state != NT_CONN_CLOSED && !c->close_after_flush) {
        if (c->busy || c->paused) {
            stash_input(c, data, len);
            len = 0;
            break;
        }
        ssize_t used;
        if (c->state == NT_CONN_HTTP)
            used = process_http(c, data, len);
        else
            used = process_ws(c, data, len);
        if (used < 0) {
            len = 0;
            break;
        }
        if (used == 0) {
            /* An incomplete frame: keep it. The HTTP parser keeps partial
             * requests itself, so only WebSocket input stops here. */
            stash_input(c, data, len);
            len = 0;
            break;
        }
        data += used;
        len -= (size_t)used;
    }
    c->in_process = false;
}

/* Continues with input that waited while a request was answered. */
static void process_stashed(nt_conn *c)
{
    if (!c->in.len || c->busy || c->paused || c->state == NT_CONN_CLOSED) return;
    nt_buf tmp = c->in;
    c->in = (nt_buf)NT_BUF_INIT;
    nt_conn_ref(c);
    process_input(c, tmp.data, tmp.len);
    nt_buf_free(&tmp);
    nt_conn_unref(c);
}

void nt_conn_respond(nt_conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool close)
{
    if (c->state == NT_CONN_CLOSED) return;
    bool keep = c->keep_alive && !close && !c->server->draining;
    nt_buf out = NT_BUF_INIT;
    if (nt_http_append_response(&out, status, content_type, extra_headers, body, len, keep) != 0) {
        nt_buf_free(&out);
        conn_close_now(c);
        return;
    }
    /* One block for head and body: one iovec, one copy. */
    nt_shared *block = nt_shared_new(out.data, out.len);
    nt_buf_free(&out);
    if (!block) {
        conn_close_now(c);
        return;
    }
    bool was_dirty = c->dirty;
    conn_queue(c, block);
    if (!was_dirty && c->dirty) nt_conn_ref(c);
    c->busy = false;
    if (!keep) {
        c->close_after_flush = true;
        nt_conn_pause(c);
        return;
    }
    nt_conn_resume(c); /* also carries on with input that waited */
}

/* ---- accept and sweep ------------------------------------------------------ */

static void on_connection(uv_stream_t *listener, int status)
{
    nt_server *s = listener->data;
    if (status < 0) return;
    nt_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->server = s;
    c->refs = 1; /* dropped by the close callback */
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    if (s->nconns >= s->opts.max_connections || s->draining) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->created_s = c->last_rx_s = s->clock_s;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->stats.connections_total++;
    s->stats.connections_open++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void sweep_conn(nt_server *s, nt_conn *c)
{
    uint32_t now = s->clock_s;
    uint32_t ping = (uint32_t)s->opts.ping_interval_s;
    switch (c->state) {
    case NT_CONN_HTTP:
        /* A request that trickles in costs a parser, not a thread: it gets
         * HTTP_REQUEST_S for the whole request, then it is cut. */
        if (c->busy) return;
        if (c->http ? now - c->request_started_s >= HTTP_REQUEST_S
                    : now - c->last_rx_s >= HTTP_IDLE_S)
            conn_close_now(c);
        return;
    case NT_CONN_WS:
        if (!c->session.user_id && !c->session.auth_pending &&
            now - c->created_s >= (uint32_t)s->opts.auth_timeout_s) {
            nt_conn_close_ws(c, NT_WS_CLOSE_AUTH, "auth timeout");
            return;
        }
        if (c->paused) {
            return; /* we stopped reading it (back-pressure): silence is ours */
        } else if (now - c->last_rx_s >= 2 * ping) {
            conn_close_now(c); /* no answer to our ping: the peer is gone */
        } else if (now - c->last_rx_s >= ping && !c->ping_sent_s) {
            c->ping_sent_s = now;
            send_ws(c, NT_WS_OP_PING, NULL, 0);
        }
        return;
    case NT_CONN_WS_CLOSING:
        if (now - c->closing_since_s >= WS_CLOSE_WAIT_S) conn_close_now(c);
        return;
    default:
        return;
    }
}

static void on_sweep(uv_timer_t *t)
{
    nt_server *s = t->data;
    s->clock_s = server_clock(s);
    nt_conn *c = s->conns;
    while (c) {
        nt_conn *next = c->next; /* sweep_conn may unlink c */
        outq_trim(c);
        sweep_conn(s, c);
        c = next;
    }
    /* Pings and close frames queued by the sweep go out now, not after the
     * next I/O event (the flush check runs only after a poll). */
    on_flush_check(&s->flush);
}

nt_server *nt_server_new(uv_loop_t *loop, const nt_server_opts *opts, const nt_server_callbacks *cb)
{
    nt_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->opts = *opts;
    s->cb = *cb;
    snprintf(s->host, sizeof s->host, "%s", opts->host);
    s->opts.host = s->host;
    s->http_limits = (nt_http_limits){16 * 1024, 8 * 1024, opts->max_body};
    s->start_ms = uv_now(loop);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_check_init(loop, &s->flush);
    s->flush.data = s;
    return s;
}

int nt_server_listen(nt_server *s)
{
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(s->host, s->opts.port, (struct sockaddr_in *)&addr);
    if (rc != 0) rc = uv_ip6_addr(s->host, s->opts.port, (struct sockaddr_in6 *)&addr);
    if (rc != 0) return rc;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0) return rc;
    if ((rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection)) != 0) return rc;
    s->listening = true;
    uv_timer_start(&s->sweep, on_sweep, 1000, 1000);
    uv_check_start(&s->flush, on_flush_check);
    return 0;
}

void nt_server_drain(nt_server *s)
{
    if (s->draining) return;
    s->draining = true;
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
    }
    nt_conn *c = s->conns;
    while (c) {
        nt_conn *next = c->next;
        if (c->state == NT_CONN_WS)
            nt_conn_pause(c); /* the gateway closes it once its sends are acked */
        else if (c->state == NT_CONN_HTTP && !c->busy && !c->http)
            conn_close_now(c);
        c = next;
    }
}

void nt_server_each_ws(nt_server *s, void (*fn)(void *arg, nt_conn *c), void *arg)
{
    nt_conn *c = s->conns;
    while (c) {
        nt_conn *next = c->next;
        if (c->state == NT_CONN_WS) fn(arg, c);
        c = next;
    }
}

size_t nt_server_connection_count(const nt_server *s)
{
    return s->nconns;
}

const nt_server_stats *nt_server_get_stats(const nt_server *s)
{
    return &s->stats;
}

void nt_server_free(nt_server *s)
{
    if (!s) return;
    /* Remaining connections (drain timeout) are closed without ceremony. */
    while (s->conns)
        conn_close_now(s->conns);
    if (s->listening) uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->flush, NULL);
    uv_run(s->loop, UV_RUN_NOWAIT);
    on_flush_check(&s->flush); /* drop dirty-list references */
    uv_run(s->loop, UV_RUN_NOWAIT);
    free(s);
}
