/*
 * Many REST calls fast: a few threads, each with one keep-alive HTTP/1.1
 * connection, one request in flight at a time. libnatter's ntc_http opens a
 * connection per call, which is fine for setting up a few hundred users but
 * not for the 100,000 waiting users of the match scenario (every call would
 * cost a TCP handshake, a TIME_WAIT slot and a worker wake-up for the
 * accept). Connecting and reading an answer are libnatter's.
 */
#include "bench/bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REST_THREADS_MAX 64
#define REST_ATTEMPTS 4
#define REST_TIMEOUT_MS 30000

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

/* One request on fd and its answer (libnatter's reader: the head in
 * `head`, the body in `body`): the status, or a negative errno (the
 * connection is then unusable). *keep says whether the server keeps it. */
static int rest__roundtrip(int fd, const char *req, size_t len, nt_buf *head, nt_buf *body,
                           bool *keep)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EPIPE;
        off += (size_t)w;
    }
    int status = 0;
    int rc = ntc_http_read_response(fd, REST_TIMEOUT_MS, &status, head, body);
    if (rc) return rc;
    *keep = !strcasestr(nt_buf_cstr(head), "\r\nConnection: close");
    return status;
}

static void *rest__worker(void *p)
{
    rest_job *job = p;
    const nb_opts *o = job->o;
    nt_buf req = NT_BUF_INIT, head = NT_BUF_INIT, body = NT_BUF_INIT;
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
            if (fd < 0) fd = ntc_tcp_connect(o->host, o->port, REST_TIMEOUT_MS);
            if (fd < 0) {
                status = fd;
                struct timespec ts = {0, 50000000L * (attempt + 1)};
                nanosleep(&ts, NULL);
                continue;
            }
            bool keep = true;
            status = rest__roundtrip(fd, req.data, req.len, &head, &body, &keep);
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
                fprintf(stderr, "natter-bench: %s %s answered %d%s%.200s\n", r.method, r.path,
                        status, body.len ? ": " : "", body.len ? nt_buf_cstr(&body) : "");
            }
        }
    }
    if (fd >= 0) close(fd);
    nt_buf_free(&req);
    nt_buf_free(&head);
    nt_buf_free(&body);
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
