/*
 * HEAD answers carry the Content-Length the GET's body would have and no
 * body (RFC 9110 9.3.2, 8.6), on the public listener (answers written at
 * once: /healthz, /metrics, /api/v1/openapi.json, a 404; and answers from a
 * worker job: /readyz, a 401) and on the admin listener (/healthz, /readyz,
 * /metrics, a 404). Each HEAD is followed by a GET on the same keep-alive
 * connection: if the HEAD had sent body bytes, the GET's answer would not
 * start where the HEAD's head ended.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "integration/harness.h"

/* One keep-alive connection and the bytes read from it, not yet used. */
typedef struct http_conn {
    int fd;
    char buf[1 << 18];
    size_t len;
} http_conn;

typedef struct http_answer {
    int status;
    long content_length; /* -1: none */
    size_t body_len;     /* bytes of body taken from the connection */
    char body[256];      /* its start, NUL-terminated */
} http_answer;

static int http_open(http_conn *hc, int port)
{
    hc->len = 0;
    hc->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (hc->fd < 0 || connect(hc->fd, (struct sockaddr *)&a, sizeof a) != 0) return -errno;
    return 0;
}

/* Reads more bytes into hc->buf; 0, or -1 on EOF, error or NTH_WAIT_MS of
 * silence. */
static int http_fill(http_conn *hc)
{
    struct pollfd p = {.fd = hc->fd, .events = POLLIN};
    if (hc->len == sizeof hc->buf || poll(&p, 1, NTH_WAIT_MS) != 1) return -1;
    ssize_t n = read(hc->fd, hc->buf + hc->len, sizeof hc->buf - hc->len);
    if (n <= 0) return -1;
    hc->len += (size_t)n;
    return 0;
}

static void http_consume(http_conn *hc, size_t n)
{
    memmove(hc->buf, hc->buf + n, hc->len - n);
    hc->len -= n;
}

/* Sends METHOD path and reads the answer: its head, then (not for HEAD)
 * Content-Length bytes of body. The answer must start with the first byte
 * not yet used on the connection. 0 or -1 (printed). */
static int http_ask(http_conn *hc, const char *method, const char *path, http_answer *ans)
{
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    if (write(hc->fd, req, (size_t)n) != n) return -1;
    char *end;
    while (true) {
        hc->buf[hc->len < sizeof hc->buf ? hc->len : sizeof hc->buf - 1] = '\0';
        if ((end = strstr(hc->buf, "\r\n\r\n"))) break;
        if (http_fill(hc) != 0) {
            fprintf(stderr, "%s %s: no whole answer head\n", method, path);
            return -1;
        }
    }
    if (strncmp(hc->buf, "HTTP/1.1 ", 9) != 0) {
        fprintf(stderr, "%s %s: the answer starts with \"%.20s\"\n", method, path, hc->buf);
        return -1;
    }
    ans->status = atoi(hc->buf + 9);
    ans->content_length = -1;
    for (char *line = strstr(hc->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2)
        if (strncasecmp(line, "Content-Length:", 15) == 0) ans->content_length = atol(line + 15);
    http_consume(hc, (size_t)(end + 4 - hc->buf));
    ans->body_len = 0;
    ans->body[0] = '\0';
    if (strcmp(method, "HEAD") == 0 || ans->content_length <= 0) return 0;
    while (hc->len < (size_t)ans->content_length)
        if (http_fill(hc) != 0) {
            fprintf(stderr, "%s %s: body shorter than Content-Length\n", method, path);
            return -1;
        }
    ans->body_len = (size_t)ans->content_length;
    snprintf(ans->body, sizeof ans->body, "%.*s", (int)ans->body_len, hc->buf);
    http_consume(hc, ans->body_len);
    return 0;
}

/* HEAD then GET of path on one connection to port. `same_length`: the
 * body does not change between the two (not so for /metrics). */
static void check_head(int port, const char *path, int want_status, bool same_length)
{
    http_conn *hc = calloc(1, sizeof *hc);
    REQUIRE(hc != NULL);
    http_answer head = {0}, get = {0};
    bool ok = http_open(hc, port) == 0 && http_ask(hc, "HEAD", path, &head) == 0 &&
              http_ask(hc, "GET", path, &get) == 0;
    printf("port %d %s: HEAD %d Content-Length %ld; GET %d Content-Length %ld body %zu\n", port,
           path, head.status, head.content_length, get.status, get.content_length, get.body_len);
    CHECK(ok);
    CHECK_EQ_INT(head.status, want_status);
    CHECK_EQ_INT(get.status, want_status);
    CHECK(get.content_length > 0);
    CHECK(head.content_length > 0);
    if (same_length) CHECK_EQ_INT(head.content_length, get.content_length);
    /* Nothing after the GET's body: the HEAD sent no body of its own. */
    CHECK_EQ_INT((int)hc->len, 0);
    if (hc->fd >= 0) close(hc->fd);
    free(hc);
}

int main(void)
{
    int admin_port = nth_free_port();
    char args[64];
    snprintf(args, sizeof args, "--admin-listen 127.0.0.1:%d", admin_port);
    nt_server *srv = nth_start(args);
    if (!srv) return 1;

    nth_case_begin("public listener: HEAD has the GET's Content-Length and no body");
    check_head(srv->port, "/healthz", 200, true);
    check_head(srv->port, "/api/v1/openapi.json", 200, true);
    check_head(srv->port, "/metrics", 200, false);
    check_head(srv->port, "/no/such/path", 404, true);
    check_head(srv->port, "/readyz", 200, true);
    check_head(srv->port, "/api/v1/users/me", 401, true);
    nth_case_end();

    nth_case_begin("admin listener: HEAD has the GET's Content-Length and no body");
    check_head(admin_port, "/healthz", 200, true);
    check_head(admin_port, "/readyz", 200, true);
    check_head(admin_port, "/metrics", 200, false);
    check_head(admin_port, "/nope", 404, true);
    nth_case_end();

    CHECK_EQ_INT(nth_stop(srv), 0);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
