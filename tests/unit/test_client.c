/*
 * Unit test of libnatter (src/client): a minimal WebSocket and HTTP server
 * inside the test, on a loopback socket, plays natterd's part. The
 * non-blocking core is driven step by step from this one thread (the test is
 * the server and the client's event loop at once), which makes every partial
 * read deterministic; the blocking helpers are tested against the same fake
 * server run on a second thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/natter.h"
#include "net/ws.h"
#include "unit/check.h"

/* ---- the fake server's tools ---------------------------------------------- */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        perror("listen");
        exit(2);
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

static int accept_one(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1) {
        fprintf(stderr, "accept: timeout\n");
        exit(2);
    }
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* Reads more bytes into acc, waiting at most ms. Returns bytes read, 0 at
 * end of stream, -1 on timeout or error. */
static int srv_read_more(int fd, nt_buf *acc, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) return -1;
    if (nt_buf_reserve(acc, 65536)) return -1;
    ssize_t n = recv(fd, acc->data + acc->len, 65536, MSG_DONTWAIT);
    if (n < 0) return -1;
    acc->len += (size_t)n;
    return (int)n;
}

static void srv_write(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            perror("srv_write");
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Appends a server frame; `fin` and `masked` are chosen freely. */
static void frame_append(nt_buf *out, uint8_t opcode, bool fin, const void *payload, size_t len,
                         bool masked)
{
    uint8_t head[14];
    size_t n = 0;
    head[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t mask_bit = masked ? 0x80 : 0;
    if (len < 126) {
        head[n++] = (uint8_t)(mask_bit | len);
    } else if (len < 65536) {
        head[n++] = mask_bit | 126;
        head[n++] = (uint8_t)(len >> 8);
        head[n++] = (uint8_t)len;
    } else {
        head[n++] = mask_bit | 127;
        for (int i = 7; i >= 0; i--)
            head[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    static const uint8_t key[4] = {1, 2, 3, 4};
    if (masked) {
        memcpy(head + n, key, 4);
        n += 4;
    }
    nt_buf_append(out, head, n);
    size_t at = out->len;
    nt_buf_append(out, payload, len);
    if (masked)
        for (size_t i = 0; i < len; i++)
            out->data[at + i] ^= (char)key[i % 4];
}

static void srv_send_frame(int fd, uint8_t opcode, bool fin, const void *payload, size_t len)
{
    nt_buf out = NT_BUF_INIT;
    frame_append(&out, opcode, fin, payload, len, false);
    srv_write(fd, out.data, out.len);
    nt_buf_free(&out);
}

/* A frame the client wrote, with what its raw header said. */
typedef struct got_frame {
    bool masked;
    bool fin;
    uint8_t opcode;
    char payload[70000];
    size_t len;
} got_frame;

/* Reads one client frame from fd (bytes already read stay in acc). */
static int srv_read_frame(int fd, nt_buf *acc, got_frame *g)
{
    for (;;) {
        if (acc->len >= 2) {
            bool masked = (acc->data[1] & 0x80) != 0;
            nt_buf copy = NT_BUF_INIT;
            nt_buf_append(&copy, acc->data, acc->len);
            nt_ws_frame f;
            /* Parse as the server would (masking required) and, if the
             * client forgot the mask, as a client would, to report it. */
            ssize_t n = nt_ws_parse((uint8_t *)copy.data, copy.len, 1 << 20, masked, &f);
            if (n > 0) {
                g->masked = masked;
                g->fin = f.fin;
                g->opcode = f.opcode;
                g->len = f.len < sizeof g->payload ? f.len : sizeof g->payload - 1;
                memcpy(g->payload, f.payload, g->len);
                g->payload[g->len] = '\0';
                nt_buf_consume(acc, (size_t)n);
                nt_buf_free(&copy);
                return 0;
            }
            nt_buf_free(&copy);
            if (n < 0) return -1;
        }
        if (srv_read_more(fd, acc, 2000) <= 0) return -1;
    }
}

/* Reads the upgrade request into req and returns its Sec-WebSocket-Key. */
static int srv_read_upgrade(int fd, nt_buf *acc, char key[25])
{
    char *end;
    while (!(end = acc->len ? memmem(acc->data, acc->len, "\r\n\r\n", 4) : NULL))
        if (srv_read_more(fd, acc, 2000) <= 0) return -1;
    nt_buf_cstr(acc);
    const char *k = strcasestr(acc->data, "Sec-WebSocket-Key: ");
    if (!k || k > end) return -1;
    memcpy(key, k + 19, 24);
    key[24] = '\0';
    return (int)(end + 4 - acc->data);
}

static void srv_accept_upgrade(int fd, const char *key, const char *accept_override,
                               const void *extra, size_t extra_len)
{
    char accept[29];
    nt_ws_accept_key(key, strlen(key), accept);
    nt_buf out = NT_BUF_INIT;
    nt_buf_appendf(&out,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nsec-websocket-accept:  %s \r\n\r\n",
                   accept_override ? accept_override : accept);
    nt_buf_append(&out, extra, extra_len);
    srv_write(fd, out.data, out.len);
    nt_buf_free(&out);
}

/* ---- the client's loop ------------------------------------------------------ */

/* One poll of the client and the callbacks it calls for. */
static void pump(ntc_conn *c, int ms)
{
    struct pollfd p = {.fd = ntc_conn_fd(c), .events = POLLIN};
    if (ntc_conn_wants_write(c)) p.events |= POLLOUT;
    if (poll(&p, 1, ms) != 1) return;
    if (p.revents & POLLOUT || ntc_conn_state(c) == NTC_CONNECTING) ntc_conn_on_writable(c);
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) ntc_conn_on_readable(c);
}

/* Connects a client to the fake server and completes the upgrade; the
 * server side fd is returned in *sfd. */
static ntc_conn *open_pair(int lfd, int port, int *sfd, nt_buf *acc)
{
    ntc_conn *c = ntc_conn_new("127.0.0.1", port);
    CHECK(c != NULL);
    if (!c) exit(1);
    *sfd = accept_one(lfd);
    char key[25];
    while (ntc_conn_state(c) == NTC_CONNECTING)
        pump(c, 1000);
    int head = srv_read_upgrade(*sfd, acc, key);
    CHECK(head > 0);
    nt_buf_consume(acc, (size_t)head);
    srv_accept_upgrade(*sfd, key, NULL, NULL, 0);
    for (int i = 0; i < 50 && ntc_conn_state(c) == NTC_HANDSHAKE; i++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_OPEN);
    return c;
}

static bool next_is(ntc_conn *c, const char *want)
{
    const char *json;
    size_t len;
    if (ntc_conn_next(c, &json, &len) != 1) {
        fprintf(stderr, "  expected '%s', queue empty\n", want);
        return false;
    }
    if (len != strlen(want) || memcmp(json, want, len) != 0 || json[len] != '\0') {
        fprintf(stderr, "  expected '%s', got '%.*s'\n", want, (int)len, json);
        return false;
    }
    return true;
}

/* ---- tests of the non-blocking core ------------------------------------------ */

static void test_handshake_and_frames(int lfd, int port)
{
    ntc_conn *c = ntc_conn_new("127.0.0.1", port);
    CHECK(c != NULL);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CONNECTING);
    CHECK(ntc_conn_wants_write(c));
    /* Queued before the upgrade: must be held back until the 101. */
    const char *auth = "{\"type\":\"auth\",\"token\":\"t\"}";
    CHECK_EQ_INT(ntc_conn_send_text(c, auth), 0);

    int s = accept_one(lfd);
    while (ntc_conn_state(c) == NTC_CONNECTING)
        pump(c, 1000);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_HANDSHAKE);
    CHECK(!ntc_conn_wants_write(c)); /* the auth frame waits */

    nt_buf acc = NT_BUF_INIT;
    char key[25];
    int head = srv_read_upgrade(s, &acc, key);
    CHECK(head > 0);
    CHECK_EQ_INT(acc.len, head); /* nothing after the request */
    CHECK(srv_read_more(s, &acc, 100) < 0);
    CHECK(strstr(acc.data, "GET /ws HTTP/1.1\r\n") == acc.data);
    CHECK(strcasestr(acc.data, "\r\nUpgrade: websocket\r\n") != NULL);
    CHECK(strcasestr(acc.data, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(strcasestr(acc.data, "\r\nHost: 127.0.0.1:") != NULL);
    nt_buf_reset(&acc);

    /* 101 and a first frame in the same write. */
    nt_buf frames = NT_BUF_INIT;
    frame_append(&frames, NT_WS_OP_TEXT, true, "{\"type\":\"ready\"}", 16, false);
    srv_accept_upgrade(s, key, NULL, frames.data, frames.len);
    nt_buf_reset(&frames);
    for (int i = 0; i < 20 && ntc_conn_queued(c) == 0; i++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_OPEN);
    CHECK_EQ_INT(ntc_conn_http_status(c), 101);
    CHECK(next_is(c, "{\"type\":\"ready\"}"));

    /* The held-back auth frame went out after the 101, masked. */
    got_frame *g = calloc(1, sizeof *g);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked);
    CHECK(g->fin);
    CHECK_EQ_INT(g->opcode, NT_WS_OP_TEXT);
    CHECK_STR_EQ(g->payload, auth);

    /* Fragments with a ping in between, fed one byte at a time. */
    frame_append(&frames, NT_WS_OP_TEXT, false, "hel", 3, false);
    frame_append(&frames, NT_WS_OP_PING, true, "abc", 3, false);
    frame_append(&frames, NT_WS_OP_CONT, false, "lo ", 3, false);
    frame_append(&frames, NT_WS_OP_CONT, true, "world", 5, false);
    for (size_t i = 0; i < frames.len; i++) {
        srv_write(s, frames.data + i, 1);
        pump(c, 100);
    }
    nt_buf_reset(&frames);
    CHECK_EQ_INT(ntc_conn_queued(c), 1);
    CHECK(next_is(c, "hello world"));
    CHECK_EQ_INT(ntc_conn_flush(c), 0); /* the pong (pump may have sent it already) */
    CHECK_EQ_INT(ntc_conn_pending_output(c), 0);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked);
    CHECK_EQ_INT(g->opcode, NT_WS_OP_PONG);
    CHECK_STR_EQ(g->payload, "abc");

    /* A message bigger than one read (64-bit length), and a 16-bit length
     * frame cut after its first header byte. */
    size_t big_len = 200000;
    char *big = malloc(big_len + 1);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    big[big_len] = '\0';
    frame_append(&frames, NT_WS_OP_TEXT, true, big, big_len, false);
    frame_append(&frames, NT_WS_OP_TEXT, true, big, 300, false);
    size_t sent = 0;
    fcntl(s, F_SETFL, O_NONBLOCK);
    while (sent < frames.len - 300 - 3) {
        ssize_t n = send(s, frames.data + sent, frames.len - 300 - 3 - sent, MSG_NOSIGNAL);
        if (n > 0) sent += (size_t)n;
        pump(c, 10);
    }
    fcntl(s, F_SETFL, 0);
    srv_write(s, frames.data + sent, frames.len - sent);
    for (int i = 0; i < 50 && ntc_conn_queued(c) < 2; i++)
        pump(c, 100);
    nt_buf_reset(&frames);
    const char *json;
    size_t len;
    CHECK_EQ_INT(ntc_conn_next(c, &json, &len), 1);
    CHECK(len == big_len && memcmp(json, big, big_len) == 0);
    CHECK_EQ_INT(ntc_conn_next(c, &json, &len), 1);
    CHECK(len == 300 && memcmp(json, big, 300) == 0);
    CHECK_EQ_INT(ntc_conn_next(c, &json, &len), 0);
    free(big);

    /* Several messages in one write; a binary frame is not queued; waiting
     * for a type keeps the others in order. */
    frame_append(&frames, NT_WS_OP_TEXT, true, "{\"type\":\"a\",\"n\":1}", 18, false);
    frame_append(&frames, NT_WS_OP_BINARY, true, "\x01\x02", 2, false);
    frame_append(&frames, NT_WS_OP_TEXT, true, "{\"type\":\"b\"}", 12, false);
    frame_append(&frames, NT_WS_OP_TEXT, true, "{\"type\":\"c\"}", 12, false);
    srv_write(s, frames.data, frames.len);
    nt_buf_reset(&frames);
    CHECK_EQ_INT(ntc_conn_wait_type(c, "b", 2000, &json, &len), 1);
    CHECK(len == 12 && strcmp(json, "{\"type\":\"b\"}") == 0);
    CHECK_EQ_INT(ntc_conn_queued(c), 2);
    CHECK_EQ_INT(ntc_conn_wait_type(c, "zzz", 50, &json, &len), 0);
    CHECK(next_is(c, "{\"type\":\"a\",\"n\":1}"));
    CHECK(next_is(c, "{\"type\":\"c\"}"));

    /* What the client sends is masked and decodes to the same bytes. */
    char text[1000];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    CHECK_EQ_INT(ntc_conn_send_text(c, "{\"type\":\"ping\",\"id\":1}"), 0);
    CHECK_EQ_INT(ntc_conn_send_text(c, text), 0);
    CHECK_EQ_INT(ntc_conn_send_frame(c, NT_WS_OP_PING, "p", 1), 0);
    CHECK_EQ_INT(ntc_conn_flush_blocking(c, 2000), 0);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked && g->opcode == NT_WS_OP_TEXT);
    CHECK_STR_EQ(g->payload, "{\"type\":\"ping\",\"id\":1}");
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked && g->opcode == NT_WS_OP_TEXT && g->len == strlen(text));
    CHECK_STR_EQ(g->payload, text);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked && g->opcode == NT_WS_OP_PING && g->len == 1);

    /* The server closes with 1009: the client records it and echoes it. */
    uint8_t close_payload[] = {0x03, 0xF1, 'b', 'i', 'g'};
    srv_send_frame(s, NT_WS_OP_CLOSE, true, close_payload, sizeof close_payload);
    for (int i = 0; i < 20 && ntc_conn_state(c) != NTC_CLOSED; i++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSED);
    CHECK_EQ_INT(ntc_conn_close_code(c), 1009);
    CHECK_EQ_INT(ntc_conn_error(c), 0);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->masked && g->opcode == NT_WS_OP_CLOSE && g->len >= 2);
    CHECK_EQ_INT(((uint8_t)g->payload[0] << 8) | (uint8_t)g->payload[1], 1009);
    CHECK_EQ_INT(ntc_conn_send_text(c, "{}"), -EPIPE);
    CHECK(ntc_conn_wait(c, 10, &json, &len) < 0);
    ntc_conn_free(c);
    close(s);
    free(g);
    nt_buf_free(&acc);
    nt_buf_free(&frames);
}

/* A server that breaks the protocol gets a close with the right code. */
static void test_protocol_errors(int lfd, int port)
{
    struct {
        const char *name;
        uint8_t opcode;
        bool fin, masked;
        const char *payload;
        int want_code;
    } cases[] = {
        {"masked frame from the server", NT_WS_OP_TEXT, true, true, "{}", 1002},
        {"invalid UTF-8 text", NT_WS_OP_TEXT, true, false, "\xC3\x28", 1007},
        {"continuation without start", NT_WS_OP_CONT, true, false, "x", 1002},
        {"fragmented ping", NT_WS_OP_PING, false, false, "x", 1002},
        {"unknown opcode", 0x3, true, false, "x", 1002},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        printf("  protocol error: %s\n", cases[i].name);
        int s;
        nt_buf acc = NT_BUF_INIT, out = NT_BUF_INIT;
        ntc_conn *c = open_pair(lfd, port, &s, &acc);
        frame_append(&out, cases[i].opcode, cases[i].fin, cases[i].payload,
                     strlen(cases[i].payload), cases[i].masked);
        srv_write(s, out.data, out.len);
        for (int k = 0; k < 20 && ntc_conn_state(c) != NTC_CLOSED; k++)
            pump(c, 100);
        CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSED);
        CHECK_EQ_INT(ntc_conn_local_close_code(c), cases[i].want_code);
        CHECK_EQ_INT(ntc_conn_error(c), -EPROTO);
        CHECK_EQ_INT(ntc_conn_queued(c), 0);
        got_frame *g = calloc(1, sizeof *g);
        CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
        CHECK(g->opcode == NT_WS_OP_CLOSE && g->masked && g->len >= 2);
        CHECK_EQ_INT(((uint8_t)g->payload[0] << 8) | (uint8_t)g->payload[1], cases[i].want_code);
        free(g);
        ntc_conn_free(c);
        close(s);
        nt_buf_free(&acc);
        nt_buf_free(&out);
    }
}

static void test_close_variants(int lfd, int port)
{
    /* A close frame without a status: recorded as 1005, echoed as 1000. */
    int s;
    nt_buf acc = NT_BUF_INIT;
    ntc_conn *c = open_pair(lfd, port, &s, &acc);
    srv_send_frame(s, NT_WS_OP_TEXT, true, "{\"last\":1}", 10);
    srv_send_frame(s, NT_WS_OP_CLOSE, true, "", 0);
    CHECK_EQ_INT(ntc_conn_wait_closed(c, 2000), 1005);
    got_frame *g = calloc(1, sizeof *g);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->opcode == NT_WS_OP_CLOSE && g->len >= 2);
    CHECK_EQ_INT(((uint8_t)g->payload[0] << 8) | (uint8_t)g->payload[1], 1000);
    ntc_conn_free(c);
    close(s);
    nt_buf_reset(&acc);

    /* The server leaves without a close frame: 1006, queued frames stay. */
    c = open_pair(lfd, port, &s, &acc);
    srv_send_frame(s, NT_WS_OP_TEXT, true, "{\"x\":2}", 7);
    close(s);
    for (int k = 0; k < 20 && ntc_conn_state(c) != NTC_CLOSED; k++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSED);
    CHECK_EQ_INT(ntc_conn_close_code(c), 1006);
    CHECK(next_is(c, "{\"x\":2}"));
    ntc_conn_free(c);
    nt_buf_reset(&acc);

    /* We close first: state CLOSING until the server's answer. */
    c = open_pair(lfd, port, &s, &acc);
    CHECK_EQ_INT(ntc_conn_send_close(c, 1000, "bye"), 0);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSING);
    CHECK_EQ_INT(ntc_conn_flush_blocking(c, 1000), 0);
    CHECK_EQ_INT(srv_read_frame(s, &acc, g), 0);
    CHECK(g->opcode == NT_WS_OP_CLOSE && g->len == 5 && memcmp(g->payload + 2, "bye", 3) == 0);
    srv_send_frame(s, NT_WS_OP_CLOSE, true, "\x03\xe8", 2);
    CHECK_EQ_INT(ntc_conn_wait_closed(c, 2000), 1000);
    CHECK_EQ_INT(srv_read_more(s, &acc, 100), -1); /* no second close */
    ntc_conn_free(c);
    close(s);
    free(g);
    nt_buf_free(&acc);
}

static void test_bad_upgrades(int lfd, int port)
{
    /* Wrong Sec-WebSocket-Accept. */
    ntc_conn *c = ntc_conn_new("127.0.0.1", port);
    int s = accept_one(lfd);
    while (ntc_conn_state(c) == NTC_CONNECTING)
        pump(c, 1000);
    nt_buf acc = NT_BUF_INIT;
    char key[25];
    CHECK(srv_read_upgrade(s, &acc, key) > 0);
    srv_accept_upgrade(s, key, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL, 0);
    for (int k = 0; k < 20 && ntc_conn_state(c) != NTC_CLOSED; k++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSED);
    CHECK_EQ_INT(ntc_conn_error(c), -EPROTO);
    ntc_conn_free(c);
    close(s);
    nt_buf_reset(&acc);

    /* A plain HTTP error instead of 101. */
    c = ntc_conn_new("127.0.0.1", port);
    s = accept_one(lfd);
    while (ntc_conn_state(c) == NTC_CONNECTING)
        pump(c, 1000);
    CHECK(srv_read_upgrade(s, &acc, key) > 0);
    const char *answer = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    srv_write(s, answer, strlen(answer));
    for (int k = 0; k < 20 && ntc_conn_state(c) != NTC_CLOSED; k++)
        pump(c, 100);
    CHECK_EQ_INT(ntc_conn_state(c), NTC_CLOSED);
    CHECK_EQ_INT(ntc_conn_http_status(c), 401);
    CHECK_EQ_INT(ntc_conn_error(c), -EPROTO);
    ntc_conn_free(c);
    close(s);
    nt_buf_free(&acc);

    /* Nobody listening. */
    int dead_port;
    int dead = listen_loopback(&dead_port);
    close(dead);
    errno = 0;
    c = ntc_conn_connect_blocking("127.0.0.1", dead_port, 2000);
    CHECK(c == NULL);
    CHECK_EQ_INT(errno, ECONNREFUSED);
}

/* ---- blocking helpers against a fake server thread ------------------------- */

typedef struct fake_ws {
    int lfd;
    int connections; /* to serve, one after the other */
} fake_ws;

/* Handshake; auth "good" gets ready, anything else close 4001; then every
 * text frame gets a "noise" frame and its echo; a close is echoed. */
static void *fake_ws_main(void *arg)
{
    fake_ws *f = arg;
    got_frame *g = calloc(1, sizeof *g);
    for (int i = 0; i < f->connections; i++) {
        int s = accept_one(f->lfd);
        nt_buf acc = NT_BUF_INIT;
        char key[25];
        int head = srv_read_upgrade(s, &acc, key);
        if (head < 0) goto next;
        nt_buf_consume(&acc, (size_t)head);
        srv_accept_upgrade(s, key, NULL, NULL, 0);
        if (srv_read_frame(s, &acc, g) != 0) goto next;
        if (!strstr(g->payload, "\"token\":\"good\"")) {
            srv_send_frame(s, NT_WS_OP_CLOSE, true, "\x0f\xa1", 2);
            goto next;
        }
        srv_send_frame(s, NT_WS_OP_TEXT, true, "{\"type\":\"hello\"}", 16);
        srv_send_frame(s, NT_WS_OP_TEXT, true, "{\"type\":\"ready\",\"user\":{\"id\":7}}", 32);
        while (srv_read_frame(s, &acc, g) == 0) {
            if (g->opcode == NT_WS_OP_CLOSE) {
                srv_send_frame(s, NT_WS_OP_CLOSE, true, g->payload, g->len);
                break;
            }
            if (g->opcode == NT_WS_OP_TEXT) {
                srv_send_frame(s, NT_WS_OP_TEXT, true, "{\"type\":\"noise\"}", 16);
                srv_send_frame(s, NT_WS_OP_TEXT, true, g->payload, g->len);
            }
        }
    next:
        nt_buf_free(&acc);
        close(s);
    }
    free(g);
    return NULL;
}

static void test_blocking(void)
{
    fake_ws f;
    int port;
    f.lfd = listen_loopback(&port);
    f.connections = 2;
    pthread_t t;
    pthread_create(&t, NULL, fake_ws_main, &f);

    ntc_conn *c = ntc_conn_connect_blocking("127.0.0.1", port, 5000);
    CHECK(c != NULL);
    CHECK_EQ_INT(ntc_conn_auth(c, "good", 5000), 0);
    /* The frame before "ready" stays queued. */
    const char *json;
    size_t len;
    CHECK_EQ_INT(ntc_conn_queued(c), 1);
    CHECK_EQ_INT(ntc_conn_send_text(c, "{\"type\":\"echo\",\"n\":5}"), 0);
    CHECK_EQ_INT(ntc_conn_wait_type(c, "echo", 5000, &json, &len), 1);
    int64_t n = 0;
    CHECK_EQ_INT(ntc_json_int(json, len, "n", &n), 0);
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_INT(ntc_conn_wait(c, 5000, &json, &len), 1);
    CHECK(ntc_json_is_type(json, len, "hello"));
    CHECK_EQ_INT(ntc_conn_wait(c, 5000, &json, &len), 1);
    CHECK(ntc_json_is_type(json, len, "noise"));
    CHECK_EQ_INT(ntc_conn_wait(c, 50, &json, &len), 0);
    CHECK_EQ_INT(ntc_conn_close(c, 5000), 1000);

    c = ntc_conn_connect_blocking("127.0.0.1", port, 5000);
    CHECK(c != NULL);
    CHECK_EQ_INT(ntc_conn_auth(c, "bad", 5000), -EACCES);
    CHECK_EQ_INT(ntc_conn_close_code(c), 4001);
    CHECK_EQ_INT(ntc_conn_close(c, 1000), 4001);

    pthread_join(t, NULL);
    close(f.lfd);
}

/* ---- HTTP ------------------------------------------------------------------ */

typedef struct fake_http {
    int lfd;
    const char *answer; /* whole response, or NULL to never answer */
    char request[8192];
    size_t request_len;
} fake_http;

static void *fake_http_main(void *arg)
{
    fake_http *f = arg;
    int s = accept_one(f->lfd);
    nt_buf acc = NT_BUF_INIT;
    char *end;
    while (!(end = acc.len ? memmem(acc.data, acc.len, "\r\n\r\n", 4) : NULL))
        if (srv_read_more(s, &acc, 2000) <= 0) goto out;
    nt_buf_cstr(&acc);
    const char *cl = strcasestr(acc.data, "Content-Length: ");
    size_t want = (size_t)(end + 4 - acc.data) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
    while (acc.len < want)
        if (srv_read_more(s, &acc, 2000) <= 0) goto out;
    f->request_len = acc.len < sizeof f->request - 1 ? acc.len : sizeof f->request - 1;
    memcpy(f->request, acc.data, f->request_len);
    f->request[f->request_len] = '\0';
    if (f->answer)
        srv_write(s, f->answer, strlen(f->answer));
    else
        usleep(600 * 1000); /* never answer; the client's deadline is shorter */
out:
    nt_buf_free(&acc);
    close(s);
    return NULL;
}

static void http_exchange(fake_http *f, int port, void (*client)(int port, fake_http *f))
{
    pthread_t t;
    pthread_create(&t, NULL, fake_http_main, f);
    client(port, f);
    pthread_join(t, NULL);
}

static void http_client_post(int port, fake_http *f)
{
    int status = 0;
    nt_buf body = NT_BUF_INIT;
    CHECK_EQ_INT(
        ntc_http("127.0.0.1", port, "POST", "/api/v1/x?y=1", "tok", "{\"a\":1}", &status, &body),
        0);
    CHECK_EQ_INT(status, 201);
    CHECK_STR_EQ(nt_buf_cstr(&body), "{\"ok\":true}");
    nt_buf_free(&body);
}

static void http_client_register(int port, fake_http *f)
{
    ntc_session s;
    CHECK_EQ_INT(ntc_register("127.0.0.1", port, "a@b.c", "password1", "alice", &s), 0);
    CHECK_EQ_INT(s.http_status, 201);
    CHECK_EQ_INT(s.user_id, 42);
    CHECK_STR_EQ(s.nickname, "alice");
    CHECK_STR_EQ(s.access_token, "AT.x.y");
    CHECK_STR_EQ(s.refresh_token, "RT");
}

static void http_client_conflict(int port, fake_http *f)
{
    ntc_session s;
    CHECK_EQ_INT(ntc_login("127.0.0.1", port, "alice", "password1", &s), -EEXIST);
    CHECK_EQ_INT(s.http_status, 409);
}

static void http_client_timeout(int port, fake_http *f)
{
    int status = 0;
    nt_buf body = NT_BUF_INIT;
    ntc_http_req req = {.method = "GET", .path = "/slow", .timeout_ms = 300};
    CHECK_EQ_INT(ntc_http_do("127.0.0.1", port, &req, &status, NULL, &body), -ETIMEDOUT);
    nt_buf_free(&body);
}

static void test_http(void)
{
    fake_http *f = calloc(1, sizeof *f);
    int port;
    f->lfd = listen_loopback(&port);

    f->answer = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                "content-length: 11\r\n\r\n{\"ok\":true}";
    http_exchange(f, port, http_client_post);
    CHECK(strstr(f->request, "POST /api/v1/x?y=1 HTTP/1.1\r\n") == f->request);
    CHECK(strstr(f->request, "\r\nAuthorization: Bearer tok\r\n") != NULL);
    CHECK(strstr(f->request, "\r\nContent-Length: 7\r\n") != NULL);
    CHECK(strstr(f->request, "\r\n\r\n{\"a\":1}") != NULL);

    const char *reg_body =
        "{\"user\":{\"id\":42,\"nickname\":\"alice\"},"
        "\"access_token\":\"AT.x.y\",\"refresh_token\":\"RT\",\"expires_in\":900}";
    char reg_answer[512];
    snprintf(reg_answer, sizeof reg_answer, "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(reg_body), reg_body);
    f->answer = reg_answer;
    http_exchange(f, port, http_client_register);
    CHECK(strstr(f->request, "POST /api/v1/auth/register HTTP/1.1\r\n") == f->request);
    CHECK(strstr(f->request,
                 "{\"email\":\"a@b.c\",\"password\":\"password1\",\"nickname\":\"alice\"}") !=
          NULL);

    f->answer = "HTTP/1.1 409 Conflict\r\nContent-Length: 47\r\n\r\n"
                "{\"error\":{\"code\":\"conflict\",\"message\":\"taken\"}}";
    http_exchange(f, port, http_client_conflict);
    CHECK(strstr(f->request, "{\"login\":\"alice\",\"password\":\"password1\"}") != NULL);

    /* No answer at all: the deadline holds. */
    f->answer = NULL;
    http_exchange(f, port, http_client_timeout);

    close(f->lfd);
    free(f);
}

static void test_json_helpers(void)
{
    const char *doc = "{\"type\":\"message\",\"message\":{\"seq\":3,\"text\":\"a\\nb\"},"
                      "\"list\":[{\"id\":1},{\"id\":2}],\"nothing\":null}";
    size_t len = strlen(doc);
    int64_t v = 0;
    char s[16];
    CHECK(ntc_json_is_type(doc, len, "message"));
    CHECK(!ntc_json_is_type(doc, len, "ack"));
    CHECK(!ntc_json_is_type("[1]", 3, "ack"));
    CHECK(!ntc_json_is_type("{oops", 5, "ack"));
    CHECK_EQ_INT(ntc_json_int(doc, len, "message.seq", &v), 0);
    CHECK_EQ_INT(v, 3);
    CHECK_EQ_INT(ntc_json_int(doc, len, "list.1.id", &v), 0);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(ntc_json_int(doc, len, "list.2.id", &v), -ENOENT);
    CHECK_EQ_INT(ntc_json_int(doc, len, "message.text", &v), -EINVAL);
    CHECK_EQ_INT(ntc_json_str(doc, len, "message.text", s, sizeof s), 3);
    CHECK_STR_EQ(s, "a\nb");
    CHECK_EQ_INT(ntc_json_str(doc, len, "type", s, 4), -ENOSPC);
    CHECK(ntc_json_has(doc, len, "nothing"));
    CHECK(!ntc_json_has(doc, len, "missing"));
    CHECK_EQ_INT(ntc_json_count(doc, len, "list"), 2);
    CHECK_EQ_INT(ntc_json_count(doc, len, ""), 4);

    /* A document with more values than the stack token array. */
    nt_buf big = NT_BUF_INIT;
    nt_buf_append_str(&big, "{\"type\":\"many\",\"a\":[");
    for (int i = 0; i < 3000; i++)
        nt_buf_appendf(&big, "%s%d", i ? "," : "", i);
    nt_buf_append_str(&big, "]}");
    CHECK(ntc_json_is_type(big.data, big.len, "many"));
    CHECK_EQ_INT(ntc_json_int(big.data, big.len, "a.2999", &v), 0);
    CHECK_EQ_INT(v, 2999);
    nt_buf_free(&big);
}

int main(void)
{
    int port;
    int lfd = listen_loopback(&port);
    printf("handshake and frames\n");
    test_handshake_and_frames(lfd, port);
    printf("protocol errors\n");
    test_protocol_errors(lfd, port);
    printf("close variants\n");
    test_close_variants(lfd, port);
    printf("bad upgrades\n");
    test_bad_upgrades(lfd, port);
    close(lfd);
    printf("blocking helpers\n");
    test_blocking();
    printf("http\n");
    test_http();
    printf("json helpers\n");
    test_json_helpers();
    return check_exit();
}
