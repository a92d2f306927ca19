/*
 * libnatter's WebSocket connection (see natter.h): a small state machine
 * (connect, upgrade, open, closing, closed) driven by the caller's loop, with
 * the blocking helpers built on poll(2) at the end of the file.
 *
 * Memory: reads go to a buffer on the stack and frames are parsed straight
 * from it; only a partial frame left at the end of a read is copied into the
 * connection (`in`). Received messages are queued in one buffer (`inbox`) as
 * [u32 length][bytes][NUL] records. Output is one contiguous buffer (`out`)
 * written with a single send(2) per flush. All three are empty (no heap) on
 * an idle connection.
 */
#include "client/natter.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"
#include "net/ws.h"

#define CONN_READ_CHUNK 65536    /* stack buffer for one recv */
#define CONN_MAX_HANDSHAKE 16384 /* largest upgrade answer we accept */
#define CONN_KEEP_BUF 16384      /* empty buffers bigger than this are freed */

struct ntc_conn {
    int fd;
    uint8_t state;       /* ntc_state */
    bool write_failed;   /* the peer is gone for writing: output is dropped */
    bool close_sent;     /* we queued a close frame: no more frames */
    uint16_t close_code; /* from the server's close frame, 1006 without */
    uint16_t local_close_code;
    uint16_t http_status;
    int err;
    size_t hs_left;  /* bytes of the upgrade request not yet written */
    size_t out_head; /* bytes of `out` already written */
    nt_buf out;
    nt_buf in; /* a partial frame (or upgrade answer) between reads */
    nt_ws_assembler assembler;
    nt_buf inbox; /* received messages: [u32 len][bytes][NUL]... */
    size_t inbox_head;
    size_t inbox_count;
    char ws_key[25];
};

/* ---- small helpers ------------------------------------------------------- */

static void conn__set_err(ntc_conn *c, int err)
{
    if (!c->err && err < 0) c->err = err;
}

/* The connection is over for reading; keep the fd until ntc_conn_free. */
static void conn__closed(ntc_conn *c, int err)
{
    conn__set_err(c, err);
    if (!c->close_code) c->close_code = 1006;
    c->state = NTC_CLOSED;
    nt_buf_free(&c->in);
    nt_ws_assembler_free(&c->assembler);
}

static int conn__closed_rc(const ntc_conn *c)
{
    return c->err ? c->err : -ECONNRESET;
}

static void conn__out_trim(ntc_conn *c)
{
    if (c->out_head == c->out.len) {
        c->out_head = 0;
        c->out.len = 0;
        if (c->out.cap > CONN_KEEP_BUF) nt_buf_free(&c->out);
    } else if (c->out_head > CONN_KEEP_BUF && c->out_head * 2 > c->out.len) {
        nt_buf_consume(&c->out, c->out_head);
        c->out_head = 0;
    }
}

/* Bytes that may be written now: before the upgrade only the request. */
static size_t conn__writable_bytes(const ntc_conn *c)
{
    if (c->fd < 0 || c->write_failed || c->state == NTC_CONNECTING) return 0;
    size_t pending = c->out.len - c->out_head;
    if (c->state == NTC_HANDSHAKE && pending > c->hs_left) pending = c->hs_left;
    return pending;
}

static int conn__inbox_push(ntc_conn *c, const uint8_t *msg, size_t len)
{
    uint32_t len32 = (uint32_t)len;
    int rc = nt_buf_reserve(&c->inbox, sizeof len32 + len + 1);
    if (rc) return rc;
    memcpy(c->inbox.data + c->inbox.len, &len32, sizeof len32);
    if (len) memcpy(c->inbox.data + c->inbox.len + sizeof len32, msg, len);
    c->inbox.data[c->inbox.len + sizeof len32 + len] = '\0';
    c->inbox.len += sizeof len32 + len + 1;
    c->inbox_count++;
    return 0;
}

static size_t conn__record_len(const ntc_conn *c, size_t off)
{
    uint32_t len32;
    memcpy(&len32, c->inbox.data + off, sizeof len32);
    return len32;
}

/* ---- connect ------------------------------------------------------------- */

int ntc_tcp_connect_start(const char *host, int port)
{
    char port_str[16];
    snprintf(port_str, sizeof port_str, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port_str, &hints, &res) != 0 || !res) return -EHOSTUNREACH;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = -errno;
        freeaddrinfo(res);
        return err;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    int err = errno;
    freeaddrinfo(res);
    if (rc < 0 && err != EINPROGRESS) {
        close(fd);
        return -err;
    }
    return fd;
}

ntc_conn *ntc_conn_new(const char *host, int port)
{
    ntc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->fd = -1;
    nt_ws_client_key(c->ws_key);
    int rc = nt_buf_appendf(&c->out,
                            "GET /ws HTTP/1.1\r\n"
                            "Host: %s:%d\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Key: %s\r\n"
                            "Sec-WebSocket-Version: 13\r\n"
                            "\r\n",
                            host, port, c->ws_key);
    if (rc) goto fail;
    c->hs_left = c->out.len;
    c->fd = ntc_tcp_connect_start(host, port);
    if (c->fd < 0) {
        rc = c->fd;
        goto fail;
    }
    /* connect(2) on loopback usually says EINPROGRESS, but it may already
     * be done; on_writable checks SO_ERROR either way. */
    c->state = NTC_CONNECTING;
    return c;
fail:
    nt_buf_free(&c->out);
    free(c);
    errno = -rc;
    return NULL;
}

void ntc_conn_free(ntc_conn *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    nt_buf_free(&c->out);
    nt_buf_free(&c->in);
    nt_buf_free(&c->inbox);
    nt_ws_assembler_free(&c->assembler);
    free(c);
}

int ntc_conn_fd(const ntc_conn *c)
{
    return c->fd;
}

bool ntc_conn_wants_write(const ntc_conn *c)
{
    return c->state == NTC_CONNECTING || conn__writable_bytes(c) > 0;
}

ntc_state ntc_conn_state(const ntc_conn *c)
{
    return (ntc_state)c->state;
}

int ntc_conn_close_code(const ntc_conn *c)
{
    return c->close_code;
}

int ntc_conn_local_close_code(const ntc_conn *c)
{
    return c->local_close_code;
}

int ntc_conn_http_status(const ntc_conn *c)
{
    return c->http_status;
}

int ntc_conn_error(const ntc_conn *c)
{
    return c->err;
}

size_t ntc_conn_pending_output(const ntc_conn *c)
{
    return c->out.len - c->out_head;
}

size_t ntc_conn_queued(const ntc_conn *c)
{
    return c->inbox_count;
}

static int conn__finish_connect(ntc_conn *c)
{
    int so_err = 0;
    socklen_t so_len = sizeof so_err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_err, &so_len) < 0) so_err = errno;
    if (so_err) {
        conn__closed(c, -so_err);
        return -so_err;
    }
    c->state = NTC_HANDSHAKE;
    return 0;
}

/* ---- output -------------------------------------------------------------- */

int ntc_conn_flush(ntc_conn *c)
{
    size_t avail = conn__writable_bytes(c);
    if (avail == 0) return 0;
    ssize_t n;
    do {
        n = send(c->fd, c->out.data + c->out_head, avail, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        int err = -errno;
        /* The server left. Drop the output but keep reading: a close frame
         * it sent before leaving may still be waiting in our receive queue. */
        c->write_failed = true;
        c->out_head = c->out.len;
        conn__out_trim(c);
        conn__set_err(c, err);
        return err;
    }
    c->out_head += (size_t)n;
    c->hs_left -= (size_t)n < c->hs_left ? (size_t)n : c->hs_left;
    conn__out_trim(c);
    return 0;
}

int ntc_conn_on_writable(ntc_conn *c)
{
    if (c->state == NTC_CONNECTING) {
        int rc = conn__finish_connect(c);
        if (rc) return rc;
    }
    return ntc_conn_flush(c);
}

static int conn__can_send(const ntc_conn *c)
{
    if (c->close_sent || c->state == NTC_CLOSED) return -EPIPE;
    return 0;
}

int ntc_conn_send_textn(ntc_conn *c, const char *json, size_t len)
{
    return ntc_conn_send_frame(c, NT_WS_OP_TEXT, json, len);
}

int ntc_conn_send_text(ntc_conn *c, const char *json)
{
    return ntc_conn_send_frame(c, NT_WS_OP_TEXT, json, strlen(json));
}

int ntc_conn_send_frame(ntc_conn *c, uint8_t opcode, const void *payload, size_t len)
{
    int rc = conn__can_send(c);
    if (rc) return rc;
    return nt_ws_append_frame(&c->out, opcode, payload, len, true);
}

int ntc_conn_send_raw(ntc_conn *c, const void *bytes, size_t len)
{
    int rc = conn__can_send(c);
    if (rc) return rc;
    return nt_buf_append(&c->out, bytes, len);
}

int ntc_conn_send_close(ntc_conn *c, uint16_t code, const char *reason)
{
    int rc = conn__can_send(c);
    if (rc) return rc;
    rc = nt_ws_append_close(&c->out, code, reason ? reason : "", true);
    if (rc) return rc;
    c->close_sent = true;
    c->local_close_code = code;
    if (c->state == NTC_OPEN) c->state = NTC_CLOSING;
    return 0;
}

/* We saw something the protocol forbids: say so with a close frame, stop. */
static int conn__fail(ntc_conn *c, uint16_t code, int err)
{
    if (!c->close_sent && c->state >= NTC_OPEN) {
        if (nt_ws_append_close(&c->out, code, "", true) == 0) {
            c->close_sent = true;
            c->local_close_code = code;
            ntc_conn_flush(c);
        }
    }
    conn__closed(c, err);
    return err;
}

/* ---- input --------------------------------------------------------------- */

/* Parses the upgrade answer in buf[0..len); returns the bytes it took, 0 if
 * it is not complete yet, or a negative errno. */
static ssize_t conn__handshake(ntc_conn *c, const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len > CONN_MAX_HANDSHAKE ? -EPROTO : 0;
    size_t head_len = (size_t)(end - buf) + 4;
    if (head_len > CONN_MAX_HANDSHAKE) return -EPROTO;
    int status = 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ') return -EPROTO;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -EPROTO;
        status = status * 10 + (buf[i] - '0');
    }
    c->http_status = (uint16_t)status;
    if (status != 101) return -EPROTO;

    char expect[29];
    if (nt_ws_accept_key(c->ws_key, strlen(c->ws_key), expect) != 0) return -EPROTO;
    bool accepted = false;
    const char *line = memchr(buf, '\n', head_len) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end + 2 - line));
        if (!eol) break;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            size_t name_len = (size_t)(colon - line);
            const char *value = colon + 1, *value_end = eol;
            while (value < value_end && (*value == ' ' || *value == '\t'))
                value++;
            while (value_end > value &&
                   (value_end[-1] == '\r' || value_end[-1] == ' ' || value_end[-1] == '\t'))
                value_end--;
            if (name_len == 20 && strncasecmp(line, "Sec-WebSocket-Accept", 20) == 0)
                accepted = (size_t)(value_end - value) == 28 && memcmp(value, expect, 28) == 0;
        }
        line = eol + 1;
    }
    if (!accepted) return -EPROTO;
    c->state = NTC_OPEN;
    return (ssize_t)head_len;
}

static int conn__on_close_frame(ntc_conn *c, const nt_ws_frame *f)
{
    uint16_t code = 1005; /* RFC 6455: no status code was present */
    if (f->len >= 2) code = (uint16_t)(f->payload[0] << 8 | f->payload[1]);
    c->close_code = code;
    if (!c->close_sent) {
        /* Echo the code, as RFC 6455 5.5.1 asks (1005 must not be sent). */
        uint16_t echo = code == 1005 ? NT_WS_CLOSE_NORMAL : code;
        if (nt_ws_append_close(&c->out, echo, "", true) == 0) {
            c->close_sent = true;
            ntc_conn_flush(c);
        }
    }
    conn__closed(c, 0);
    return 0;
}

/* Consumes frames from buf[0..len); returns the bytes taken or a negative
 * errno (the connection is then closed). */
static ssize_t conn__process(ntc_conn *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    if (c->state == NTC_HANDSHAKE) {
        ssize_t n = conn__handshake(c, (const char *)buf, len);
        if (n < 0) {
            conn__closed(c, (int)n);
            return n;
        }
        if (n == 0) return 0;
        off = (size_t)n;
        ntc_conn_flush(c); /* frames queued before the upgrade may go now */
    }
    while (off < len && (c->state == NTC_OPEN || c->state == NTC_CLOSING)) {
        nt_ws_frame f;
        ssize_t n = nt_ws_parse(buf + off, len - off, NTC_MAX_MESSAGE, false, &f);
        if (n == 0) break;
        if (n < 0) return conn__fail(c, (uint16_t)-n, -EPROTO);
        off += (size_t)n;
        switch (f.opcode) {
        case NT_WS_OP_PING:
            if (!c->close_sent &&
                nt_ws_append_frame(&c->out, NT_WS_OP_PONG, f.payload, f.len, true) != 0)
                return conn__fail(c, NT_WS_CLOSE_INTERNAL, -ENOMEM);
            break;
        case NT_WS_OP_PONG:
            break;
        case NT_WS_OP_CLOSE:
            conn__on_close_frame(c, &f);
            return (ssize_t)off;
        default: {
            const uint8_t *msg;
            size_t msg_len;
            uint8_t opcode;
            int rc = nt_ws_assemble(&c->assembler, &f, NTC_MAX_MESSAGE, &msg, &msg_len, &opcode);
            if (rc < 0) return conn__fail(c, (uint16_t)-rc, -EPROTO);
            if (rc == 1) {
                if (opcode == NT_WS_OP_TEXT && conn__inbox_push(c, msg, msg_len) != 0)
                    return conn__fail(c, NT_WS_CLOSE_INTERNAL, -ENOMEM);
                /* Give a reassembled message's buffer back now, not at the
                 * next message: idle connections hold no heap. */
                nt_ws_assembler_free(&c->assembler);
            }
            break;
        }
        }
    }
    return (ssize_t)off;
}

/* Feeds freshly read bytes: parse straight from them when nothing is
 * pending, else join them to the pending partial frame first. */
static int conn__ingest(ntc_conn *c, uint8_t *data, size_t len)
{
    if (c->in.len == 0) {
        ssize_t n = conn__process(c, data, len);
        if (n < 0) return (int)n;
        if (c->state != NTC_CLOSED && (size_t)n < len)
            return nt_buf_append(&c->in, data + n, len - (size_t)n);
        return 0;
    }
    int rc = nt_buf_append(&c->in, data, len);
    if (rc) return conn__fail(c, NT_WS_CLOSE_INTERNAL, rc);
    ssize_t n = conn__process(c, (uint8_t *)c->in.data, c->in.len);
    if (n < 0) return (int)n;
    if (c->state == NTC_CLOSED) return 0;
    nt_buf_consume(&c->in, (size_t)n);
    if (c->in.len == 0) nt_buf_free(&c->in);
    return 0;
}

int ntc_conn_on_readable(ntc_conn *c)
{
    if (c->state == NTC_CONNECTING) {
        int rc = conn__finish_connect(c);
        if (rc) return rc;
    }
    if (c->state == NTC_CLOSED) return conn__closed_rc(c);
    uint8_t chunk[CONN_READ_CHUNK];
    for (;;) {
        ssize_t n = recv(c->fd, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            int err = -errno;
            conn__closed(c, err);
            return err;
        }
        if (n == 0) {
            /* End of stream. Before the upgrade that is an error; after it,
             * a server that left without a close frame (1006). */
            conn__closed(c, c->state == NTC_HANDSHAKE ? -ECONNRESET : 0);
            return conn__closed_rc(c);
        }
        int rc = conn__ingest(c, chunk, (size_t)n);
        if (rc < 0) return rc;
        if (c->state == NTC_CLOSED) return conn__closed_rc(c);
        /* A short read drained the socket; with edge-triggered polling a new
         * arrival raises a new edge, so stopping here is safe. */
        if ((size_t)n < sizeof chunk) return 0;
    }
}

/* ---- the queue of received messages -------------------------------------- */

int ntc_conn_next(ntc_conn *c, const char **json, size_t *len)
{
    /* Records popped earlier are dropped only now, so the pointer handed out
     * last time stayed valid until this call. */
    if (c->inbox_head == c->inbox.len) {
        c->inbox_head = 0;
        c->inbox.len = 0;
        if (c->inbox.cap > CONN_KEEP_BUF) nt_buf_free(&c->inbox);
    } else if (c->inbox_head > CONN_KEEP_BUF && c->inbox_head * 2 > c->inbox.len) {
        nt_buf_consume(&c->inbox, c->inbox_head);
        c->inbox_head = 0;
    }
    if (c->inbox_head == c->inbox.len) return 0;
    size_t msg_len = conn__record_len(c, c->inbox_head);
    *json = c->inbox.data + c->inbox_head + sizeof(uint32_t);
    *len = msg_len;
    c->inbox_head += sizeof(uint32_t) + msg_len + 1;
    c->inbox_count--;
    return 1;
}

size_t ntc_conn_drain(ntc_conn *c)
{
    size_t n = c->inbox_count;
    c->inbox_head = c->inbox.len = 0;
    c->inbox_count = 0;
    if (c->inbox.cap > CONN_KEEP_BUF) nt_buf_free(&c->inbox);
    return n;
}

/* Moves the record at `off` to the head of the queue, keeping the order of
 * the others, so ntc_conn_next pops it. */
static int conn__inbox_to_front(ntc_conn *c, size_t off)
{
    if (off == c->inbox_head) return 0;
    size_t rec = sizeof(uint32_t) + conn__record_len(c, off) + 1;
    char *tmp = malloc(rec);
    if (!tmp) return -ENOMEM;
    memcpy(tmp, c->inbox.data + off, rec);
    memmove(c->inbox.data + c->inbox_head + rec, c->inbox.data + c->inbox_head,
            off - c->inbox_head);
    memcpy(c->inbox.data + c->inbox_head, tmp, rec);
    free(tmp);
    return 0;
}

/* ---- blocking helpers ---------------------------------------------------- */

static int conn__remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = nt_mono_ns();
    if (now >= deadline_ns) return 0;
    return (int)((deadline_ns - now + 999999) / 1000000);
}

static uint64_t conn__deadline(int timeout_ms)
{
    return nt_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
}

/* One poll and the work it calls for. 0 if something may have changed,
 * -ETIMEDOUT when the deadline passed, or another negative errno. */
static int conn__step(ntc_conn *c, uint64_t deadline_ns)
{
    int ms = conn__remaining_ms(deadline_ns);
    if (ms == 0) return -ETIMEDOUT;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (ntc_conn_wants_write(c)) p.events |= POLLOUT;
    int n = poll(&p, 1, ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    if (n == 0) return -ETIMEDOUT;
    if (c->state == NTC_CONNECTING) {
        int rc = ntc_conn_on_writable(c);
        if (rc) return rc;
    } else if (p.revents & POLLOUT) {
        ntc_conn_flush(c); /* a write error leaves the read side to report */
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) ntc_conn_on_readable(c);
    return 0;
}

ntc_conn *ntc_conn_connect_blocking(const char *host, int port, int timeout_ms)
{
    ntc_conn *c = ntc_conn_new(host, port);
    if (!c) return NULL;
    uint64_t deadline = conn__deadline(timeout_ms);
    int rc = 0;
    while (c->state == NTC_CONNECTING || c->state == NTC_HANDSHAKE) {
        rc = conn__step(c, deadline);
        if (rc) break;
    }
    if (c->state != NTC_OPEN) {
        if (rc == 0) rc = c->err ? c->err : -EPROTO;
        ntc_conn_free(c);
        errno = -rc;
        return NULL;
    }
    return c;
}

int ntc_conn_flush_blocking(ntc_conn *c, int timeout_ms)
{
    uint64_t deadline = conn__deadline(timeout_ms);
    for (;;) {
        if (c->state != NTC_CONNECTING && c->state != NTC_HANDSHAKE) {
            int rc = ntc_conn_flush(c);
            if (rc) return rc;
        }
        if (c->write_failed) return c->err ? c->err : -EPIPE;
        if (ntc_conn_pending_output(c) == 0) return 0;
        if (c->state == NTC_CLOSED && conn__writable_bytes(c) == 0) return conn__closed_rc(c);
        int rc = conn__step(c, deadline);
        if (rc) return rc;
    }
}

int ntc_conn_wait_match(ntc_conn *c, ntc_match_fn match, void *arg, int timeout_ms,
                        const char **json, size_t *len)
{
    uint64_t deadline = conn__deadline(timeout_ms);
    size_t scan = c->inbox_head; /* records before it were checked already */
    for (;;) {
        while (scan < c->inbox.len) {
            size_t msg_len = conn__record_len(c, scan);
            const char *msg = c->inbox.data + scan + sizeof(uint32_t);
            if (!match || match(msg, msg_len, arg)) {
                int rc = conn__inbox_to_front(c, scan);
                if (rc) return rc;
                return ntc_conn_next(c, json, len);
            }
            scan += sizeof(uint32_t) + msg_len + 1;
        }
        if (c->state == NTC_CLOSED) return conn__closed_rc(c);
        ntc_conn_flush(c);
        int rc = conn__step(c, deadline);
        if (rc == -ETIMEDOUT) return 0;
        if (rc) return rc;
    }
}

int ntc_conn_wait(ntc_conn *c, int timeout_ms, const char **json, size_t *len)
{
    return ntc_conn_wait_match(c, NULL, NULL, timeout_ms, json, len);
}

static bool conn__match_type(const char *json, size_t len, void *arg)
{
    return ntc_json_is_type(json, len, arg);
}

int ntc_conn_wait_type(ntc_conn *c, const char *type, int timeout_ms, const char **json,
                       size_t *len)
{
    return ntc_conn_wait_match(c, conn__match_type, (void *)type, timeout_ms, json, len);
}

static bool conn__match_auth_answer(const char *json, size_t len, void *arg)
{
    return ntc_json_is_type(json, len, "ready") || ntc_json_is_type(json, len, "error");
}

int ntc_conn_auth(ntc_conn *c, const char *access_token, int timeout_ms)
{
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "auth");
    nt_jw_kstr(&w, "token", access_token);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (!rc) rc = ntc_conn_send_textn(c, frame.data, frame.len);
    nt_buf_free(&frame);
    if (rc) return rc;
    const char *json = NULL;
    size_t len = 0;
    rc = ntc_conn_wait_match(c, conn__match_auth_answer, NULL, timeout_ms, &json, &len);
    if (rc == 0) return -ETIMEDOUT;
    if (rc < 0) return c->close_code == NT_WS_CLOSE_AUTH ? -EACCES : rc;
    return ntc_json_is_type(json, len, "ready") ? 0 : -EACCES;
}

int ntc_conn_wait_closed(ntc_conn *c, int timeout_ms)
{
    uint64_t deadline = conn__deadline(timeout_ms);
    while (c->state != NTC_CLOSED) {
        ntc_conn_drain(c);
        ntc_conn_flush(c);
        int rc = conn__step(c, deadline);
        if (rc == -ETIMEDOUT) return rc;
        if (rc && c->state != NTC_CLOSED) return rc;
    }
    ntc_conn_drain(c);
    return c->close_code;
}

int ntc_conn_close(ntc_conn *c, int timeout_ms)
{
    if (!c) return 0;
    int rc;
    if (c->state == NTC_CLOSED) {
        rc = c->close_code;
    } else if (c->state != NTC_OPEN && c->state != NTC_CLOSING) {
        rc = -ENOTCONN;
    } else {
        if (!c->close_sent) ntc_conn_send_close(c, NT_WS_CLOSE_NORMAL, NULL);
        rc = ntc_conn_wait_closed(c, timeout_ms);
    }
    ntc_conn_free(c);
    return rc;
}
