/*
 * Many REST calls fast: a few threads, each with one keep-alive HTTP/1.1
 * connection, one request in flight at a time. libnatter's ntc_http opens a
 * connection per call, which is fine for setting up a few hundred users but
 * not for the 100,000 waiting users of the match scenario (every call would
 * cost a TCP handshake, a TIME_WAIT slot and a worker wake-up for the
 * accept). natterd answers every request with Content-Length, so the reader
 * needs nothing else.
 */
#include "bench/bench.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REST_THREADS_MAX 64
#define REST_ATTEMPTS 4
#define REST_TIMEOUT_S 30

typedef struct rest_job {
    const nb_opts *o;
    const nb_user *users;
    int n;
    nb_rest_fill fill;
    void *arg;
    int *status;
    atomic_int next;
    atomic_long ok, failed; /* 2xx; transport failures and >= 500 after retries */
    atomic_long by_class[6];
    atomic_int printed;
} rest_job;

static int rest__connect(const nb_opts *o)
{
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(o->host, port, &hints, &ai) != 0 || !ai) return -EHOSTUNREACH;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {REST_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : -errno;
    freeaddrinfo(ai);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

/* One request on fd and its answer: the status, or a negative errno (the
 * connection is then unusable). *keep says whether the server keeps it. */
static int rest__roundtrip(int fd, const char *req, size_t len, nt_buf *in, bool *keep)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EPIPE;
        off += (size_t)w;
    }
    nt_buf_reset(in);
    size_t head = 0, need = 0;
    int status = 0;
    *keep = true;
    for (;;) {
        if (head && in->len >= head + need) break;
        if (nt_buf_reserve(in, 4096) != 0) return -ENOMEM;
        ssize_t r = recv(fd, in->data + in->len, 4096, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -errno : -ECONNRESET;
        in->len += (size_t)r;
        if (head) continue;
        nt_buf_cstr(in);
        char *end = strstr(in->data, "\r\n\r\n");
        if (!end) continue;
        head = (size_t)(end - in->data) + 4;
        if (sscanf(in->data, "HTTP/1.%*d %d", &status) != 1) return -EPROTO;
        for (char *line = strstr(in->data, "\r\n"); line && line < end;
             line = strstr(line + 2, "\r\n")) {
            if (!strncasecmp(line + 2, "Content-Length:", 15))
                need = (size_t)strtoul(line + 17, NULL, 10);
            else if (!strncasecmp(line + 2, "Connection: close", 17))
                *keep = false;
        }
    }
    return status;
}

static void *rest__worker(void *p)
{
    rest_job *job = p;
    const nb_opts *o = job->o;
    nt_buf req = NT_BUF_INIT, in = NT_BUF_INIT;
    int fd = -1;
    for (;;) {
        int i = atomic_fetch_add(&job->next, 1);
        if (i >= job->n) break;
        nb_rest_req r = {.method = "POST"};
        job->fill(job->arg, i, &r);
        nt_buf_reset(&req);
        size_t blen = strlen(r.body);
        nt_buf_appendf(&req,
                       "%s %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                       "Content-Length: %zu\r\n%s\r\n%s",
                       r.method, r.path, o->host, o->port, job->users[i].token, blen,
                       blen ? "Content-Type: application/json\r\n" : "", r.body);
        int status = -EIO;
        for (int attempt = 0; attempt < REST_ATTEMPTS; attempt++) {
            if (fd < 0) fd = rest__connect(o);
            if (fd < 0) {
                status = fd;
                struct timespec ts = {0, 50000000L * (attempt + 1)};
                nanosleep(&ts, NULL);
                continue;
            }
            bool keep = true;
            status = rest__roundtrip(fd, req.data, req.len, &in, &keep);
            if (status < 0 || !keep) {
                close(fd);
                fd = -1;
            }
            if (status > 0 && status != 503) break;
        }
        if (job->status) job->status[i] = status;
        int cls = status > 0 ? status / 100 : 0;
        if (cls < 0 || cls > 5) cls = 0;
        atomic_fetch_add(&job->by_class[cls], 1);
        if (status >= 200 && status < 300) {
            atomic_fetch_add(&job->ok, 1);
        } else {
            atomic_fetch_add(&job->failed, 1);
            if (atomic_fetch_add(&job->printed, 1) == 0) {
                const char *body = in.len ? strstr(nt_buf_cstr(&in), "\r\n\r\n") : NULL;
                fprintf(stderr, "natter-bench: %s %s answered %d%s%.200s\n", r.method, r.path,
                        status, body ? ": " : "", body ? body + 4 : "");
            }
        }
    }
    if (fd >= 0) close(fd);
    nt_buf_free(&req);
    nt_buf_free(&in);
    return NULL;
}

long nb_rest_batch(const nb_opts *o, const nb_user *users, int n, int threads, nb_rest_fill fill,
                   void *arg, int *status)
{
    if (n <= 0) return 0;
    rest_job job = {.o = o, .users = users, .n = n, .fill = fill, .arg = arg, .status = status};
    atomic_init(&job.next, 0);
    if (threads > n) threads = n;
    if (threads > REST_THREADS_MAX) threads = REST_THREADS_MAX;
    if (threads < 1) threads = 1;
    pthread_t tids[REST_THREADS_MAX];
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tids[started], NULL, rest__worker, &job) != 0) break;
    if (started == 0) rest__worker(&job);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return atomic_load(&job.ok);
}
