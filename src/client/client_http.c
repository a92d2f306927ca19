/*
 * libnatter's blocking HTTP/1.1 client and account calls (see natter.h).
 * One request per connection (Connection: close), every wait bounded by one
 * deadline with poll(2). Just enough HTTP for natterd, which always answers
 * with Content-Length; also sends raw, deliberately broken requests for the
 * bad-input tests.
 */
#include "client/natter.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"

#define HTTP_MAX_HEAD 65536

static int http__remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = nt_mono_ns();
    return now >= deadline_ns ? 0 : (int)((deadline_ns - now + 999999) / 1000000);
}

/* Waits for `events` on fd until the deadline: 0, -ETIMEDOUT or -errno. */
static int http__wait(int fd, short events, uint64_t deadline_ns, short *revents)
{
    for (;;) {
        int ms = http__remaining_ms(deadline_ns);
        if (ms == 0) return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return -ETIMEDOUT;
        if (revents) *revents = p.revents;
        return 0;
    }
}

int ntc_tcp_connect(const char *host, int port, int timeout_ms)
{
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    int fd = ntc_tcp_connect_start(host, port);
    if (fd < 0) return fd;
    int rc = http__wait(fd, POLLOUT, deadline, NULL);
    if (rc == 0) {
        int so_err = 0;
        socklen_t so_len = sizeof so_err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &so_len) < 0) so_err = errno;
        rc = -so_err;
    }
    if (rc == 0) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) rc = -errno;
    }
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

/* Finds header `name` (case-insensitive) in the head block; returns its
 * value (trimmed) in value/value_len, or false. */
static bool http__header(const char *head, size_t head_len, const char *name, const char **value,
                         size_t *value_len)
{
    size_t name_len = strlen(name);
    const char *end = head + head_len;
    const char *line = memchr(head, '\n', head_len);
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        if ((size_t)(eol - line) > name_len && line[name_len] == ':' &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = line + name_len + 1, *v_end = eol;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            *value = v;
            *value_len = (size_t)(v_end - v);
            return true;
        }
        line = eol < end ? eol : NULL;
    }
    return false;
}

static int http__read_response(int fd, uint64_t deadline, int *status, nt_buf *resp_headers,
                               nt_buf *resp_body)
{
    nt_buf in = NT_BUF_INIT;
    int rc = 0;
    size_t head_len = 0;
    bool eof = false;
    long long content_length = -1;
    for (;;) {
        if (!head_len) {
            const char *end = in.len ? memmem(in.data, in.len, "\r\n\r\n", 4) : NULL;
            if (end) {
                head_len = (size_t)(end - in.data) + 4;
                int code = 0;
                if (head_len < 13 || memcmp(in.data, "HTTP/1.", 7) != 0 || in.data[8] != ' ') {
                    rc = -EPROTO;
                    goto out;
                }
                for (int i = 9; i < 12; i++) {
                    if (in.data[i] < '0' || in.data[i] > '9') {
                        rc = -EPROTO;
                        goto out;
                    }
                    code = code * 10 + (in.data[i] - '0');
                }
                *status = code;
                const char *v;
                size_t v_len;
                if (code == 204 || code == 304 || code < 200) {
                    content_length = 0;
                } else if (http__header(in.data, head_len, "Content-Length", &v, &v_len)) {
                    char num[24];
                    char *num_end;
                    if (v_len == 0 || v_len >= sizeof num) {
                        rc = -EPROTO;
                        goto out;
                    }
                    memcpy(num, v, v_len);
                    num[v_len] = '\0';
                    content_length = strtoll(num, &num_end, 10);
                    if (*num_end || content_length < 0) {
                        rc = -EPROTO;
                        goto out;
                    }
                }
            } else if (in.len > HTTP_MAX_HEAD || eof) {
                rc = -EPROTO;
                goto out;
            }
        }
        if (head_len) {
            size_t have = in.len - head_len;
            if (content_length >= 0 && have >= (size_t)content_length) break;
            if (eof) {
                if (content_length >= 0) rc = -EPROTO; /* the body was cut short */
                break;
            }
        }
        rc = http__wait(fd, POLLIN, deadline, NULL);
        if (rc) goto out;
        if ((rc = nt_buf_reserve(&in, 16384)) != 0) goto out;
        ssize_t n = recv(fd, in.data + in.len, in.cap - in.len - 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) {
            /* A reset after a whole answer arrived is fine (the server did
             * not read all we sent); without an answer it is the error. */
            rc = -errno;
            goto out;
        }
        if (n == 0) eof = true;
        in.len += (size_t)n;
    }
    if (resp_headers) {
        nt_buf_reset(resp_headers);
        rc = nt_buf_append(resp_headers, in.data, head_len);
    }
    if (resp_body && rc == 0) {
        size_t body_len = in.len - head_len;
        if (content_length >= 0 && body_len > (size_t)content_length)
            body_len = (size_t)content_length;
        nt_buf_reset(resp_body);
        rc = nt_buf_append(resp_body, in.data + head_len, body_len);
        if (rc == 0) nt_buf_cstr(resp_body);
    }
out:
    nt_buf_free(&in);
    return rc;
}

int ntc_http_read_response(int fd, int timeout_ms, int *status, nt_buf *resp_headers,
                           nt_buf *resp_body)
{
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    return http__read_response(fd, deadline, status, resp_headers, resp_body);
}

/* Sends the whole request, but stops early if the server already answers
 * (e.g. 413 before reading an oversize body) or went away: the answer is
 * what matters. Returns 0 or a negative errno. */
static int http__send_all(int fd, const char *data, size_t len, uint64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        short revents = 0;
        int rc = http__wait(fd, POLLOUT | POLLIN, deadline, &revents);
        if (rc) return rc;
        if (revents & POLLIN) return 0; /* an early answer */
        if (revents & (POLLERR | POLLHUP)) return -EPIPE;
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return -errno;
        off += (size_t)n;
    }
    return 0;
}

static int http__exchange(const char *host, int port, const char *request, size_t len,
                          int timeout_ms, int *status, nt_buf *resp_headers, nt_buf *resp_body)
{
    if (timeout_ms <= 0) timeout_ms = NTC_HTTP_TIMEOUT_MS;
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    *status = 0;
    int fd = ntc_tcp_connect_start(host, port);
    if (fd < 0) return fd;
    int rc = http__wait(fd, POLLOUT, deadline, NULL);
    if (rc == 0) {
        int so_err = 0;
        socklen_t so_len = sizeof so_err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &so_len);
        rc = -so_err;
    }
    if (rc == 0) {
        int send_rc = http__send_all(fd, request, len, deadline);
        rc = http__read_response(fd, deadline, status, resp_headers, resp_body);
        if (rc && send_rc && send_rc != -ETIMEDOUT) rc = send_rc;
    }
    close(fd);
    return rc;
}

int ntc_http_raw(const char *host, int port, const void *request, size_t len, int timeout_ms,
                 int *status, nt_buf *resp_headers, nt_buf *resp_body)
{
    return http__exchange(host, port, request, len, timeout_ms, status, resp_headers, resp_body);
}

int ntc_http_do(const char *host, int port, const ntc_http_req *req, int *status,
                nt_buf *resp_headers, nt_buf *resp_body)
{
    nt_buf out = NT_BUF_INIT;
    size_t body_len = 0;
    if (req->body) body_len = req->body_len ? req->body_len : strlen(req->body);
    bool wants_length = req->body || !strcmp(req->method, "POST") || !strcmp(req->method, "PUT") ||
                        !strcmp(req->method, "PATCH");
    int rc = nt_buf_appendf(&out, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n",
                            req->method, req->path, host, port);
    if (!rc && req->bearer) rc = nt_buf_appendf(&out, "Authorization: Bearer %s\r\n", req->bearer);
    if (!rc && req->body)
        rc = nt_buf_appendf(&out, "Content-Type: %s\r\n",
                            req->content_type ? req->content_type : "application/json");
    if (!rc && wants_length) rc = nt_buf_appendf(&out, "Content-Length: %zu\r\n", body_len);
    if (!rc && req->extra_headers) rc = nt_buf_append_str(&out, req->extra_headers);
    if (!rc) rc = nt_buf_append(&out, "\r\n", 2);
    if (!rc && body_len) rc = nt_buf_append(&out, req->body, body_len);
    if (!rc)
        rc = http__exchange(host, port, out.data, out.len, req->timeout_ms, status, resp_headers,
                            resp_body);
    nt_buf_free(&out);
    return rc;
}

int ntc_http(const char *host, int port, const char *method, const char *path,
             const char *bearer_token, const char *json_body, int *status, nt_buf *resp_body)
{
    ntc_http_req req = {.method = method, .path = path, .bearer = bearer_token, .body = json_body};
    return ntc_http_do(host, port, &req, status, NULL, resp_body);
}

/* ---- accounts ------------------------------------------------------------ */

static int account__status_error(int status)
{
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
        return -EACCES;
    case 409:
        return -EEXIST;
    case 429:
        return -EAGAIN;
    default:
        return status >= 500 ? -EIO : -EPROTO;
    }
}

/* Posts `body` to `path` and fills the session from {"user", "access_token",
 * "refresh_token"}. */
static int account__call(const char *host, int port, const char *path, const char *body,
                         int ok_status, ntc_session *out)
{
    nt_buf resp = NT_BUF_INIT;
    int status = 0;
    memset(out, 0, sizeof *out);
    int rc = ntc_http(host, port, "POST", path, NULL, body, &status, &resp);
    out->http_status = status;
    if (rc) goto out;
    if (status != ok_status) {
        rc = account__status_error(status);
        goto out;
    }
    if (ntc_json_int(resp.data, resp.len, "user.id", &out->user_id) != 0 ||
        ntc_json_str(resp.data, resp.len, "user.nickname", out->nickname, sizeof out->nickname) <
            0 ||
        ntc_json_str(resp.data, resp.len, "access_token", out->access_token,
                     sizeof out->access_token) <= 0 ||
        ntc_json_str(resp.data, resp.len, "refresh_token", out->refresh_token,
                     sizeof out->refresh_token) <= 0)
        rc = -EPROTO;
out:
    nt_buf_free(&resp);
    return rc;
}

int ntc_register(const char *host, int port, const char *email, const char *password,
                 const char *nickname, ntc_session *out)
{
    nt_buf body = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "email", email);
    nt_jw_kstr(&w, "password", password);
    nt_jw_kstr(&w, "nickname", nickname);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0)
        rc = account__call(host, port, "/api/v1/auth/register", nt_buf_cstr(&body), 201, out);
    else
        memset(out, 0, sizeof *out);
    nt_buf_free(&body);
    return rc;
}

int ntc_login(const char *host, int port, const char *login, const char *password, ntc_session *out)
{
    nt_buf body = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "login", login);
    nt_jw_kstr(&w, "password", password);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0)
        rc = account__call(host, port, "/api/v1/auth/login", nt_buf_cstr(&body), 200, out);
    else
        memset(out, 0, sizeof *out);
    nt_buf_free(&body);
    return rc;
}
