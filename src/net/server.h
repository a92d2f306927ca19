/*
 * The network core: a libuv TCP server that speaks HTTP/1.1 and WebSocket.
 * It owns sockets, input parsing, output queues and timers; what requests
 * and messages mean is the gateway's business (callbacks below).
 *
 * Rules it keeps (DESIGN.md "The event loop"):
 *  - nothing here blocks; everything runs on one loop thread;
 *  - output is queued as reference-counted blocks and flushed once per loop
 *    turn with one writev per connection (up to IOV_MAX blocks; what the
 *    kernel does not take goes to one uv_write), so a fan-out to a busy
 *    connection costs one system call, not one per message;
 *  - a connection whose unsent output passes max_output is a slow consumer
 *    and is cut off; nobody waits for it;
 *  - an idle connection holds no buffers: input goes to a loop-wide read
 *    buffer and only a partial frame or request is copied aside;
 *  - one sweep timer per server (not one per connection) enforces the
 *    request, auth and keepalive deadlines;
 *  - a connection is never freed inside its own callback: closing marks it,
 *    libuv's close callback and the last reference free it.
 */
#ifndef NT_SERVER_H
#define NT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "net/http.h"
#include "net/ws.h"

typedef struct nt_server nt_server;
typedef struct nt_conn nt_conn;

typedef enum {
    NT_CONN_HTTP = 0,
    NT_CONN_WS,
    NT_CONN_WS_CLOSING, /* we sent a close frame and wait for the peer's */
    NT_CONN_CLOSED,
} nt_conn_state;

typedef struct nt_outq_item {
    nt_shared *block;
    uint32_t offset; /* bytes of the block already written */
} nt_outq_item;

/* One client connection. The gateway may read the fields and owns the
 * `session` part; everything else belongs to server.c. */
struct nt_conn {
    uv_tcp_t tcp;
    nt_server *server;
    nt_conn *prev, *next;   /* all connections */
    nt_conn *dirty_next;    /* connections with output to flush this turn */
    nt_buf in;              /* unparsed input (partial request or frame) */
    nt_http_parser *http;   /* only while a request is being read */
    nt_ws_assembler ws_msg; /* only holds memory inside a fragmented message */
    nt_outq_item *outq;     /* pending output, oldest first */
    uint32_t outq_len, outq_cap;
    uint32_t outq_inflight; /* items handed to an uv_write in progress */
    size_t pending_out;     /* unsent bytes */
    uint32_t refs;
    /* server clock, seconds */
    uint32_t created_s, last_rx_s, ping_sent_s, closing_since_s, request_started_s;
    uint8_t state;   /* nt_conn_state */
    bool busy;       /* an HTTP request is being answered */
    bool in_process; /* inside process_input (re-entrance guard) */
    bool paused;     /* reading stopped for back-pressure */
    bool dirty;      /* on the dirty list */
    bool close_after_flush;
    bool handle_closed; /* libuv's close callback ran */
    bool keep_alive;
    /* gateway-owned session state */
    struct {
        int64_t user_id; /* 0 until the auth frame was accepted */
        int64_t session_id;
        nt_conn *next_of_user; /* the gateway's registry chain */
        nt_conn *prev_of_user;
        uint16_t jobs;  /* worker jobs in flight for this connection */
        uint16_t sends; /* sends waiting for their commit */
        bool auth_pending;
    } session;
};

typedef struct nt_server_opts {
    const char *host;
    int port;
    size_t max_connections;
    size_t max_output;
    size_t max_frame;
    size_t max_body;
    int auth_timeout_s;
    int ping_interval_s;
} nt_server_opts;

typedef struct nt_server_callbacks {
    void *arg;
    /* A whole HTTP request that is not a WebSocket upgrade. The callee owns
     * `req` (nt_http_request_free + free) and must answer once with
     * nt_conn_respond, now or later; input waits until then. */
    void (*on_request)(void *arg, nt_conn *c, nt_http_request *req);
    /* A WebSocket upgrade request: return 0 to accept (the server answers
     * 101) or an HTTP status to refuse with. `req` stays owned by the server. */
    int (*on_upgrade)(void *arg, nt_conn *c, const nt_http_request *req);
    /* One whole text message (UTF-8 checked). `msg` is writable and valid
     * only during the call. */
    void (*on_ws_text)(void *arg, nt_conn *c, char *msg, size_t len);
    /* The connection is closing: drop every reference to it from the
     * gateway (registry). Called once. */
    void (*on_close)(void *arg, nt_conn *c);
} nt_server_callbacks;

typedef struct nt_server_stats {
    uint64_t connections_total;
    uint64_t connections_open;
    uint64_t websockets_open;
    uint64_t http_requests;
    uint64_t frames_in;
    uint64_t frames_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t writev_calls;
    uint64_t slow_consumers;
    uint64_t protocol_errors;
} nt_server_stats;

/* Creates a server on `loop`; nothing listens until nt_server_listen. */
nt_server *nt_server_new(uv_loop_t *loop, const nt_server_opts *opts,
                         const nt_server_callbacks *cb);
/* Binds and listens. 0 or a libuv error code (negative). */
int nt_server_listen(nt_server *s);
/* SIGTERM: stops accepting, closes idle HTTP connections and stops reading
 * WebSockets; the caller closes each WebSocket with 1001 once its work in
 * flight is answered (nt_server_each_ws + nt_conn_close_ws). Requests in
 * progress may finish. */
void nt_server_drain(nt_server *s);
size_t nt_server_connection_count(const nt_server *s);
const nt_server_stats *nt_server_get_stats(const nt_server *s);
/* Frees the server; call after the loop stopped running its handles. */
void nt_server_free(nt_server *s);
/* Calls fn for every open WebSocket (e.g. to close a revoked session). */
void nt_server_each_ws(nt_server *s, void (*fn)(void *arg, nt_conn *c), void *arg);

/* Answers the current HTTP request and resumes reading (or closes after
 * the answer when keep-alive is off or `close` is set). A NULL body with
 * `len` above 0 answers a HEAD: that Content-Length, no body. */
void nt_conn_respond(nt_conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool close);
/* Queues a WebSocket text frame with a copy of `json`. */
void nt_conn_send_text(nt_conn *c, const char *json, size_t len);
/* Queues a complete, already framed WebSocket frame shared by reference
 * (fan-out: frame once, send to many). Takes its own reference. */
void nt_conn_send_frame(nt_conn *c, nt_shared *frame);
/* Frames a text payload once for fan-out: header + payload in one block. */
nt_shared *nt_ws_frame_text(const char *payload, size_t len);
/* Starts the closing handshake with `code` and closes after it (or after a
 * short timeout). */
void nt_conn_close_ws(nt_conn *c, uint16_t code, const char *reason);
/* Stops reading from / resumes reading from the socket (back-pressure). */
void nt_conn_pause(nt_conn *c);
void nt_conn_resume(nt_conn *c);
/* References keep a closed connection's memory alive for async work. */
void nt_conn_ref(nt_conn *c);
void nt_conn_unref(nt_conn *c);
static inline bool nt_conn_is_open(const nt_conn *c)
{
    return c->state == NT_CONN_HTTP || c->state == NT_CONN_WS;
}

#endif
