/*
 * libnatter: the C client library of Natter, used by the terminal client
 * (natter), the load generator (natter-bench) and the integration tests.
 *
 * Two layers. The core is non-blocking and loop-agnostic: an ntc_conn is one
 * WebSocket connection to natterd whose caller owns the event loop (epoll,
 * poll, anything): it asks the connection for its fd and whether it wants to
 * write, and calls ntc_conn_on_readable / ntc_conn_on_writable when the fd is
 * ready. Received text messages are queued inside the connection and popped
 * with ntc_conn_next. Sends only append to an output buffer; one flush writes
 * everything queued with a single send(2), so a bench turn costs one system
 * call per connection however many frames it queued. An idle connection
 * costs its 192-byte struct and at most a small output buffer, so one
 * process can hold thousands.
 *
 * On top of it sit blocking helpers for tests and the CLI (connect, auth,
 * wait for a frame or a frame of a type, close), a tiny blocking HTTP/1.1
 * client and the account calls (register, login).
 *
 * Error convention: 0 (or a documented positive value) on success, a
 * negative errno-style code on failure. Nothing here is thread-safe; one
 * connection belongs to one thread.
 */
#ifndef NT_CLIENT_NATTER_H
#define NT_CLIENT_NATTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* ---- WebSocket connection, non-blocking core ----------------------------- */

typedef struct ntc_conn ntc_conn;

typedef enum ntc_state {
    NTC_CONNECTING = 1, /* TCP connect in progress */
    NTC_HANDSHAKE,      /* upgrade request sent (or queued), waiting for 101 */
    NTC_OPEN,           /* frames flow both ways */
    NTC_CLOSING,        /* we sent a close frame, waiting for the server's */
    NTC_CLOSED,         /* nothing more will be read; queued frames can still be popped */
} ntc_state;

/* Largest message the client accepts from the server; a bigger one closes
 * the connection with 1009. */
#define NTC_MAX_MESSAGE (16u << 20)

/*
 * Starts a non-blocking TCP connect to host:port (a numeric address or a
 * name, resolved with getaddrinfo, which may block for names) and queues the
 * HTTP upgrade request for GET /ws. The request goes out once the connect
 * completes (ntc_conn_on_writable). Frames may be queued at once (e.g. the
 * auth frame); they are held back until the server accepted the upgrade, as
 * RFC 6455 requires. Returns the connection, or NULL with errno set.
 * The caller frees it with ntc_conn_free (or ntc_conn_close).
 */
ntc_conn *ntc_conn_new(const char *host, int port);

/* Closes the socket at once (no close frame) and frees everything. NULL is
 * a no-op. Pointers returned by ntc_conn_next die with it. */
void ntc_conn_free(ntc_conn *c);

/* The socket, for the caller's poll/epoll. It stays open (the same number)
 * until ntc_conn_free, even after the connection reached NTC_CLOSED. */
int ntc_conn_fd(const ntc_conn *c);

/* True while the connection waits for its connect to finish or has output
 * that may be written now: the caller should then wait for POLLOUT. */
bool ntc_conn_wants_write(const ntc_conn *c);

ntc_state ntc_conn_state(const ntc_conn *c);

/* Close code the server sent in its close frame; 1006 if the connection
 * ended without one; 0 while no close happened. */
int ntc_conn_close_code(const ntc_conn *c);

/* Close code this client sent (e.g. 1002 after a malformed server frame, or
 * the code given to ntc_conn_send_close); 0 if none. */
int ntc_conn_local_close_code(const ntc_conn *c);

/* The HTTP status of the upgrade answer (101 once open), 0 before it came. */
int ntc_conn_http_status(const ntc_conn *c);

/* First error the connection met (negative errno, e.g. -ECONNREFUSED,
 * -EPROTO for a bad handshake or frame), 0 if none. A clean close by either
 * side is not an error. */
int ntc_conn_error(const ntc_conn *c);

/*
 * Call when the fd is readable. Reads until the socket is drained (edge- or
 * level-triggered polling both work), answers pings with pongs (queued, so
 * check ntc_conn_wants_write afterwards), queues text messages, handles the
 * server's close frame. Returns 0, or a negative errno once the connection
 * is closed by an error or end of stream (then the state is NTC_CLOSED and
 * queued messages can still be popped).
 */
int ntc_conn_on_readable(ntc_conn *c);

/* Call when the fd is writable: completes the connect and flushes output.
 * Returns 0 or a negative errno (connect failed: state NTC_CLOSED). A write
 * error (peer gone) drops the output but leaves the read side alone, so a
 * close frame the server sent before leaving can still be read. */
int ntc_conn_on_writable(ntc_conn *c);

/* Writes as much queued output as the socket takes now, with one send(2).
 * Returns 0 (even if some is left: see ntc_conn_wants_write) or a negative
 * errno. A no-op before the connect completed. */
int ntc_conn_flush(ntc_conn *c);

/*
 * Pops the oldest received text message: returns 1 and sets *json / *len
 * (NUL-terminated; the pointer is valid until the next call of any ntc_conn_*
 * function on this connection), or 0 if none is queued.
 */
int ntc_conn_next(ntc_conn *c, const char **json, size_t *len);

/* Number of received messages waiting to be popped. */
size_t ntc_conn_queued(const ntc_conn *c);

/* Queue a masked text frame (JSON text, as is) for sending; nothing is
 * written until a flush or on_writable. 0, -ENOMEM, or -EPIPE once a close
 * frame was sent or received. */
int ntc_conn_send_text(ntc_conn *c, const char *json);
int ntc_conn_send_textn(ntc_conn *c, const char *json, size_t len);

/* Queue one masked, final frame with any opcode and payload (tests: ping,
 * binary, an invalid opcode...). Same returns as ntc_conn_send_text. */
int ntc_conn_send_frame(ntc_conn *c, uint8_t opcode, const void *payload, size_t len);

/* Queue raw bytes as they are (tests: unmasked or otherwise broken frames).
 * Before the upgrade completed they are held back like frames. */
int ntc_conn_send_raw(ntc_conn *c, const void *bytes, size_t len);

/* Queue a close frame with `code` and `reason` (may be NULL); the state
 * becomes NTC_CLOSING, or NTC_CLOSED if the server had closed already. */
int ntc_conn_send_close(ntc_conn *c, uint16_t code, const char *reason);

/* Bytes of output queued and not written yet. */
size_t ntc_conn_pending_output(const ntc_conn *c);

/* Starts a non-blocking TCP connect (TCP_NODELAY, close-on-exec) to
 * host:port; the first address getaddrinfo gives is used. Returns the fd
 * (the connect may still be in progress: wait for POLLOUT and check
 * SO_ERROR) or a negative errno (-EHOSTUNREACH if the name does not resolve). */
int ntc_tcp_connect_start(const char *host, int port);

/* ---- blocking helpers (tests, CLI) --------------------------------------- */

/* Connects and waits for the upgrade to finish, at most timeout_ms. Returns
 * an NTC_OPEN connection, or NULL with errno set (ETIMEDOUT, ECONNREFUSED,
 * EPROTO for a refused or bad upgrade...). */
ntc_conn *ntc_conn_connect_blocking(const char *host, int port, int timeout_ms);

/* Sends {"type":"auth","token":TOKEN} and waits for the "ready" frame, which
 * is consumed. Other frames that arrive first stay queued. Returns 0,
 * -EACCES if the server closed the connection (4001) or answered an error,
 * -ETIMEDOUT, or another negative errno. */
int ntc_conn_auth(ntc_conn *c, const char *access_token, int timeout_ms);

/* Writes all queued output, waiting at most timeout_ms. 0, -ETIMEDOUT, or
 * a negative errno. */
int ntc_conn_flush_blocking(ntc_conn *c, int timeout_ms);

/*
 * Flushes queued output and waits for the next text message, at most
 * timeout_ms. Returns 1 with *json / *len set as by ntc_conn_next, 0 on
 * timeout, or a negative errno (-ECONNRESET) if the connection closed and
 * nothing is queued; ntc_conn_close_code then says how it closed.
 */
int ntc_conn_wait(ntc_conn *c, int timeout_ms, const char **json, size_t *len);

/* A predicate over a received message; true selects it. */
typedef bool (*ntc_match_fn)(const char *json, size_t len, void *arg);

/*
 * Like ntc_conn_wait, but returns the first message (queued or arriving)
 * for which match() is true. Messages that do not match are NOT discarded:
 * they stay queued in arrival order and later ntc_conn_next / ntc_conn_wait
 * calls return them. (ntc_conn_drain throws queued messages away.)
 */
int ntc_conn_wait_match(ntc_conn *c, ntc_match_fn match, void *arg, int timeout_ms,
                        const char **json, size_t *len);

/* ntc_conn_wait_match for messages whose top-level "type" equals `type`. */
int ntc_conn_wait_type(ntc_conn *c, const char *type, int timeout_ms, const char **json,
                       size_t *len);

/* Discards every queued message; returns how many. */
size_t ntc_conn_drain(ntc_conn *c);

/* Waits until the server closed the connection (close frame or end of
 * stream), at most timeout_ms, discarding any messages. Returns the server's
 * close code (1006 without a frame) or -ETIMEDOUT. */
int ntc_conn_wait_closed(ntc_conn *c, int timeout_ms);

/* Sends close 1000, waits (at most timeout_ms) for the server's close, then
 * frees the connection. Returns the server's close code or -ETIMEDOUT (the
 * connection is freed either way). NULL is a no-op returning 0. */
int ntc_conn_close(ntc_conn *c, int timeout_ms);

/* ---- blocking HTTP/1.1 --------------------------------------------------- */

#define NTC_HTTP_TIMEOUT_MS 10000

typedef struct ntc_http_req {
    const char *method;        /* "GET", "POST"... */
    const char *path;          /* "/api/v1/..." with the query string */
    const char *bearer;        /* access token, or NULL */
    const char *body;          /* request body, or NULL */
    size_t body_len;           /* used when body is not NULL; 0 means strlen(body) */
    const char *content_type;  /* default "application/json" when there is a body */
    const char *extra_headers; /* "Name: value\r\n..." or NULL */
    int timeout_ms;            /* whole exchange; 0 means NTC_HTTP_TIMEOUT_MS */
} ntc_http_req;

/*
 * One request over a fresh connection (Connection: close). On 0, *status
 * holds the status code, resp_body (if not NULL) the body (replacing its
 * content) and resp_headers (if not NULL) the raw header block. The body is
 * read by Content-Length, or to the end of the stream without one.
 * Returns 0 or a negative errno (-ETIMEDOUT, -ECONNREFUSED, -EPROTO for an
 * unparsable answer).
 */
int ntc_http_do(const char *host, int port, const ntc_http_req *req, int *status,
                nt_buf *resp_headers, nt_buf *resp_body);

/* The common case: ntc_http_do with a JSON body (or none), a bearer token
 * (or none) and the default timeout. */
int ntc_http(const char *host, int port, const char *method, const char *path,
             const char *bearer_token, const char *json_body, int *status, nt_buf *resp_body);

/* Sends `len` raw bytes (a whole request, possibly malformed) and reads one
 * answer as ntc_http_do does. */
int ntc_http_raw(const char *host, int port, const void *request, size_t len, int timeout_ms,
                 int *status, nt_buf *resp_headers, nt_buf *resp_body);

/* A connected, blocking TCP socket to host:port (TCP_NODELAY), waiting at
 * most timeout_ms for the connect; returns the fd (the caller closes it) or
 * a negative errno. */
int ntc_tcp_connect(const char *host, int port, int timeout_ms);

/* Reads one HTTP response from a blocking or non-blocking fd (deadline
 * timeout_ms), as ntc_http_do does. */
int ntc_http_read_response(int fd, int timeout_ms, int *status, nt_buf *resp_headers,
                           nt_buf *resp_body);

/* ---- accounts ------------------------------------------------------------ */

typedef struct ntc_session {
    int64_t user_id;
    char nickname[64];
    char access_token[1024];
    char refresh_token[512];
    int http_status; /* status of the last answer, also on failure */
} ntc_session;

/*
 * POST /api/v1/auth/register and fill *out from the answer. Returns 0 on
 * 201, else a negative errno that maps the answer: -EINVAL (400), -EACCES
 * (401), -EEXIST (409), -EAGAIN (429), -EIO (5xx), -EPROTO (anything else or
 * an unparsable body), or a transport error. out->http_status is always set
 * (0 if no answer came).
 */
int ntc_register(const char *host, int port, const char *email, const char *password,
                 const char *nickname, ntc_session *out);

/* POST /api/v1/auth/login with an email or nickname; returns as
 * ntc_register (0 on 200). */
int ntc_login(const char *host, int port, const char *login, const char *password,
              ntc_session *out);

/* ---- JSON conveniences ----------------------------------------------------- */

/*
 * Look up a value in a JSON document by a dotted path of object keys and
 * array indexes ("message.seq", "messages.0.text"; "" is the root).
 * ntc_json_int: 0 and *out if it is an integer, else -ENOENT (missing),
 * -EINVAL (wrong type or not JSON). ntc_json_str: the unescaped length and
 * the NUL-terminated string in out[0..cap), or -ENOENT / -EINVAL / -ENOSPC.
 * ntc_json_has: true if the path exists (any type, null included).
 * ntc_json_count: elements of an array or pairs of an object, or -ENOENT /
 * -EINVAL.
 */
int ntc_json_int(const char *json, size_t len, const char *path, int64_t *out);
int ntc_json_str(const char *json, size_t len, const char *path, char *out, size_t cap);
bool ntc_json_has(const char *json, size_t len, const char *path);
int ntc_json_count(const char *json, size_t len, const char *path);

/* True if the message's top-level "type" is `type`. */
bool ntc_json_is_type(const char *json, size_t len, const char *type);

#endif
