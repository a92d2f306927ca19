/*
 * The password-hashing pool: see hash_pool.h. A mutex-protected FIFO of
 * waiting jobs, a condition variable the threads sleep on, and a second
 * FIFO of finished jobs that the loop thread empties when the uv_async
 * fires (the same hand-off as the WebSocket send path in ws_session.c).
 *
 * The Argon2id hashes themselves do not run in this process: each pool
 * thread owns a helper process, forked at start, that does nothing but
 * hash and verify at SCHED_IDLE, one request at a time over a socketpair.
 * The pool threads run at normal priority and do the rest of a login or
 * registration (parsing, store reads and writes, signing) themselves,
 * blocked on the socket while their helper hashes. Why a process and not a
 * thread at idle priority (docs/decisions.md, "Password hashing"): libsodium
 * maps each hash's 64 MiB with MAP_POPULATE and unmaps it after, and both
 * hold the process's mmap lock while they fault in or free 16,384 pages;
 * a thread at idle priority preempted there kept the store writer (glibc
 * growing a heap with mprotect, SQLite growing its map with mremap) waiting
 * up to 23 ms. And an idle-priority thread preempted inside uv_async_send
 * made the loop spin in sched_yield until it ran again. A process of its
 * own has its own memory map and never touches the loop's handles.
 */
#include "gateway/hash_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "gateway/gateway_internal.h"
#include "services/auth.h"

#define HASH_QUEUE_PER_THREAD 16
#define HASH_MAX_THREADS 64
#define HASH_PW_MAX 4096 /* auth.c never passes a longer password */
/* How long a pool thread waits for its helper's answer before it hashes
 * itself, at normal priority: the helper runs only on idle CPU time, and
 * on a machine kept busy by other work it may not run for many seconds
 * (docs/decisions.md, "Password hashing: a login waits at most a second
 * for idle time"). */
#define HASH_PATIENCE_MS 1000

/* One request to a helper, sent as one SOCK_SEQPACKET message of its used
 * length (the header, str, and pw_len bytes of pw). */
enum { HASH_OP_STR = 1, HASH_OP_VERIFY = 2 };
typedef struct hash_req {
    uint32_t op;
    uint32_t pw_len;
    uint64_t seq;                 /* copied into the answer */
    uint64_t ops, mem;            /* HASH_OP_STR: the cost */
    char str[NT_PWHASH_STRBYTES]; /* HASH_OP_VERIFY: the stored string */
    char pw[HASH_PW_MAX];
} hash_req;

/* The answer: libsodium's return value and, for HASH_OP_STR, the string. */
typedef struct hash_res {
    uint64_t seq; /* the request's: an answer the thread gave up on is skipped */
    int32_t rc;
    char str[NT_PWHASH_STRBYTES];
} hash_res;

/* A pool thread's helper process; touched only by that thread once the
 * pool runs (and by the loop thread before and after). */
typedef struct pool_helper {
    gw_hash_pool *pool;
    pid_t pid;    /* 0: none running */
    int fd;       /* our end of the socketpair, -1 if none */
    uint64_t seq; /* of the last request sent */
    /* Request seq went unanswered for HASH_PATIENCE_MS and its answer is
     * still to come: no request is sent behind it (pool__ask). */
    bool late;
    bool warned; /* of a late answer; reset by an answer in time */
} pool_helper;

struct gw_hash_pool {
    uv_async_t async; /* first: the close callback gets the pool from it */
    gw_hash_done_fn done;
    pthread_t threads[HASH_MAX_THREADS];
    pool_helper helpers[HASH_MAX_THREADS]; /* helpers[i] is threads[i]'s */
    int nthreads;
    size_t max_queued;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t wake;
    gw_job *wait_head, *wait_tail; /* submitted, not started */
    size_t nwaiting;
    size_t nrunning;
    gw_job *done_head, *done_tail; /* finished, not yet handed to the loop */
    double avg_ms;                 /* moving average of a job's run time */
    bool stopping;
};

static void pool__push(gw_job **head, gw_job **tail, gw_job *job)
{
    job->pool_next = NULL;
    if (*tail)
        (*tail)->pool_next = job;
    else
        *head = job;
    *tail = job;
}

/* ---- the helper process ---- */

/*
 * Lowest priority for the calling process (the helper has one thread).
 * SCHED_IDLE (Linux) gives it the smallest CFS weight there is and lets
 * any normal thread that wakes on its CPU preempt it, so the loop, the
 * store writer and the pool threads run as if the hash were not there,
 * and the hash takes only the idle time of the cores. An unprivileged
 * process may always lower itself to it. If the kernel or a sandbox
 * refuses, nice 19 is the next best (about 1.5 % of a core against a
 * nice-0 thread). The helper cannot log (see pool__helper_main): if both
 * fail it hashes at normal priority.
 */
static void pool__lower_priority(void)
{
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_IDLE, &param) == 0) return;
    (void)setpriority(PRIO_PROCESS, 0, 19);
}

/*
 * The helper's whole life, in the child of fork(): answer requests until
 * the socket closes, then _exit. It was forked from a multithreaded
 * process, so it keeps to what is safe there: system calls, libsodium
 * (initialised before the fork; Argon2id takes no locks) and malloc, which
 * glibc makes usable in the child of a fork. Never the log (its lock may
 * have been held by another thread at the fork), never exit() (the
 * parent's atexit handlers are not the helper's).
 */
static void pool__helper_main(int fd, pid_t parent) __attribute__((noreturn));
static void pool__helper_main(int fd, pid_t parent)
{
    /* Die with the parent (the thread that forked it, to be exact: the
     * loop thread at start, or the pool thread that respawned it). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    /* Keep nothing of the parent's but stdio and the socket: no listening
     * socket or database file stays open in a helper. */
    if (fd != 3) {
        if (dup2(fd, 3) < 0) _exit(1);
        fd = 3;
    }
    if (close_range(4, ~0U, 0) != 0) {
        /* A kernel before 5.9, or a filter that refuses it: one by one. */
        long max = sysconf(_SC_OPEN_MAX);
        for (long i = 4; i < (max > 0 ? max : 65536); i++)
            close((int)i);
    }
    pool__lower_priority();

    static hash_req req;
    static hash_res res;
    for (;;) {
        ssize_t n = recv(fd, &req, sizeof req, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(0);
        memset(&res, 0, sizeof res);
        res.seq = req.seq;
        size_t head = offsetof(hash_req, pw);
        if ((size_t)n < head || req.pw_len > HASH_PW_MAX || (size_t)n != head + req.pw_len) {
            res.rc = -1;
        } else if (req.op == HASH_OP_STR) {
            res.rc = crypto_pwhash_str(res.str, req.pw, req.pw_len, req.ops, (size_t)req.mem);
        } else if (req.op == HASH_OP_VERIFY) {
            req.str[sizeof req.str - 1] = '\0';
            res.rc = crypto_pwhash_str_verify(req.str, req.pw, req.pw_len);
        } else {
            res.rc = -1;
        }
        sodium_memzero(&req, sizeof req);
        if (send(fd, &res, sizeof res, MSG_NOSIGNAL) != (ssize_t)sizeof res) _exit(0);
    }
}

/* Starts h's helper process. 0 or -errno. Any thread; all signals are
 * blocked across the fork, so the child runs no handler of the parent's. */
static int pool__spawn(pool_helper *h)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        pool__helper_main(sv[1], parent);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return -fork_errno;
    }
    h->pid = pid;
    h->fd = sv[0];
    return 0;
}

/* Ends h's helper, if any, and reaps it. */
static void pool__reap(pool_helper *h)
{
    if (h->fd >= 0) close(h->fd);
    h->fd = -1;
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    h->pid = 0;
}

/* ---- the hasher auth.c calls (services/auth.h) ---- */

/* The helper of the pool thread this runs on; NULL on any other thread. */
static __thread pool_helper *pool__self;

/* Waits until h's answer to request `seq` is in res, skipping answers to
 * requests given up on before. 0; -ETIMEDOUT at the deadline (a deadline
 * already past: only the answers there are now are read); -EPIPE if the
 * helper is gone. */
static int pool__await(pool_helper *h, uint64_t seq, uint64_t deadline, hash_res *res)
{
    for (;;) {
        uint64_t now = nt_mono_ns();
        int ms = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -EPIPE;
        if (n == 0 && ms == 0) return -ETIMEDOUT;
        if (n == 0) continue; /* woken early: wait out the rest */
        ssize_t got;
        do
            got = recv(h->fd, res, sizeof *res, 0);
        while (got < 0 && errno == EINTR);
        if (got != (ssize_t)sizeof *res) return -EPIPE;
        if (res->seq == seq) return 0;
    }
}

/* Sends req (of len bytes) to this thread's helper and waits for the
 * answer; a helper that died (killed, out of memory) is replaced once.
 * 0 with res filled; -ENOSYS off the pool, when no helper answered (none
 * could be started, or the new one died too), when the helper did not
 * answer within HASH_PATIENCE_MS, and at once while that late answer is
 * still to come: the caller then hashes in its own thread. A request sent
 * behind a late one would wait for that hash first, so each login of a
 * busy spell would wait the full patience, and a helper that never runs
 * would fill the socket until send() blocked the thread for good. A
 * failure must not read as -1, which verify means "wrong password": a
 * right one would get 401. */
static int pool__ask(hash_req *req, size_t len, hash_res *res)
{
    pool_helper *h = pool__self;
    if (!h) return -ENOSYS;
    if (h->late) {
        int rc = h->fd >= 0 ? pool__await(h, h->seq, 0, res) : 0; /* only what is there now */
        if (rc == -ETIMEDOUT) return -ENOSYS;
        if (rc != 0) {
            nt_warn("hashing pool: helper process %d is gone; starting another", (int)h->pid);
            pool__reap(h);
        }
        h->late = false; /* caught up (or replaced): it takes requests again */
    }
    uint64_t deadline = nt_mono_ns() + (uint64_t)HASH_PATIENCE_MS * 1000000u;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (h->fd < 0) {
            int rc = pool__spawn(h);
            if (rc != 0) {
                nt_warn("hashing pool: cannot start a helper process (%s): hashing in the "
                        "pool thread",
                        strerror(-rc));
                return -ENOSYS;
            }
        }
        req->seq = ++h->seq;
        ssize_t n;
        do
            n = send(h->fd, req, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        int rc = n == (ssize_t)len ? pool__await(h, req->seq, deadline, res) : -EPIPE;
        if (rc == 0) {
            h->warned = false;
            return 0;
        }
        if (rc == -ETIMEDOUT) {
            if (!h->warned)
                nt_warn("hashing pool: helper process %d did not answer within %d ms (no idle "
                        "CPU time): hashing in the pool thread until it has answered",
                        (int)h->pid, HASH_PATIENCE_MS);
            h->warned = true;
            h->late = true;
            return -ENOSYS;
        }
        nt_warn("hashing pool: helper process %d is gone; starting another", (int)h->pid);
        pool__reap(h);
    }
    nt_warn("hashing pool: no helper process answered: hashing in the pool thread");
    return -ENOSYS;
}

static int pool__str(char out[NT_PWHASH_STRBYTES], const char *pw, size_t pw_len,
                     unsigned long long ops, size_t mem)
{
    if (!pool__self) return -ENOSYS;
    if (pw_len > HASH_PW_MAX) return -1;
    hash_req req = {.op = HASH_OP_STR, .pw_len = (uint32_t)pw_len, .ops = ops, .mem = mem};
    hash_res res;
    memcpy(req.pw, pw, pw_len);
    int rc = pool__ask(&req, offsetof(hash_req, pw) + pw_len, &res);
    sodium_memzero(&req, sizeof req);
    if (rc != 0) return rc;
    if (res.rc == 0) memcpy(out, res.str, NT_PWHASH_STRBYTES);
    return res.rc == 0 ? 0 : -1;
}

static int pool__verify(const char str[NT_PWHASH_STRBYTES], const char *pw, size_t pw_len)
{
    if (!pool__self) return -ENOSYS;
    if (pw_len > HASH_PW_MAX) return -1;
    hash_req req = {.op = HASH_OP_VERIFY, .pw_len = (uint32_t)pw_len};
    hash_res res;
    memcpy(req.str, str, NT_PWHASH_STRBYTES);
    memcpy(req.pw, pw, pw_len);
    int rc = pool__ask(&req, offsetof(hash_req, pw) + pw_len, &res);
    sodium_memzero(&req, sizeof req);
    if (rc != 0) return rc;
    return res.rc == 0 ? 0 : -1;
}

static const nt_pwhasher pool__hasher = {.str = pool__str, .verify = pool__verify};

/* ---- the pool ---- */

static void *pool__thread(void *arg)
{
    pool_helper *self = arg;
    gw_hash_pool *pool = self->pool;
    pool__self = self;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->wait_head && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->lock);
        if (pool->stopping) break;
        gw_job *job = pool->wait_head;
        pool->wait_head = job->pool_next;
        if (!pool->wait_head) pool->wait_tail = NULL;
        pool->nwaiting--;
        pool->nrunning++;
        pthread_mutex_unlock(&pool->lock);

        uint64_t t0 = nt_mono_ns();
        job->run(job);
        double ms = (double)(nt_mono_ns() - t0) / 1e6;

        pthread_mutex_lock(&pool->lock);
        pool->nrunning--;
        pool->avg_ms = pool->avg_ms > 0 ? pool->avg_ms * 0.875 + ms * 0.125 : ms;
        pool__push(&pool->done_head, &pool->done_tail, job);
        pthread_mutex_unlock(&pool->lock);
        uv_async_send(&pool->async);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    pool__self = NULL;
    return NULL;
}

/* Loop thread: hand every finished job to `done`, oldest first. */
static void pool__on_async(uv_async_t *h)
{
    gw_hash_pool *pool = h->data;
    pthread_mutex_lock(&pool->lock);
    gw_job *job = pool->done_head;
    pool->done_head = pool->done_tail = NULL;
    pthread_mutex_unlock(&pool->lock);
    while (job) {
        gw_job *next = job->pool_next;
        pool->done(job);
        job = next;
    }
}

static int pool__default_threads(void)
{
    cpu_set_t set;
    int cpus = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
    if (cpus <= 0) cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    /* Leave one core to the loop and the store writer; each hash also holds
     * 64 MiB in its helper while it runs, so more threads cost memory, not
     * only CPU. */
    int n = cpus - 1;
    return n < 1 ? 1 : n > HASH_MAX_THREADS ? HASH_MAX_THREADS : n;
}

/* Stops the first `started` threads; the pool's lock and cond exist. */
static void pool__stop_threads(gw_hash_pool *pool, int started)
{
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < started; i++)
        pthread_join(pool->threads[i], NULL);
}

/* Ends every helper; their threads have stopped (or never started). */
static void pool__reap_all(gw_hash_pool *pool)
{
    for (int i = 0; i < pool->nthreads; i++)
        pool__reap(&pool->helpers[i]);
}

/* The async handle is closed: nothing refers to the pool any more. */
static void pool__on_closed(uv_handle_t *h)
{
    gw_hash_pool *pool = h->data;
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

gw_hash_pool *gw_hash_pool_new(uv_loop_t *loop, int threads, size_t max_queued,
                               gw_hash_done_fn done, char *err, size_t err_len)
{
    int started = 0, rc;
    gw_hash_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        snprintf(err, err_len, "hashing pool: out of memory");
        return NULL;
    }
    pool->done = done;
    pool->nthreads = threads > 0 ? threads : pool__default_threads();
    if (pool->nthreads > HASH_MAX_THREADS) pool->nthreads = HASH_MAX_THREADS;
    pool->max_queued = max_queued ? max_queued : (size_t)pool->nthreads * HASH_QUEUE_PER_THREAD;
    if ((rc = pthread_mutex_init(&pool->lock, NULL)) != 0) goto fail_free;
    if ((rc = pthread_cond_init(&pool->wake, NULL)) != 0) goto fail_mutex;
    if ((rc = uv_async_init(loop, &pool->async, pool__on_async)) != 0) {
        snprintf(err, err_len, "hashing pool: %s", uv_strerror(rc));
        goto fail_cond;
    }
    pool->async.data = pool;

    /* The helpers hash with libsodium, which must be set up before the
     * fork (sodium_init takes a lock). Fork them now, while the process is
     * small: a fork copies the page tables of everything mapped. */
    for (int i = 0; i < pool->nthreads; i++)
        pool->helpers[i] = (pool_helper){.pool = pool, .fd = -1};
    if (sodium_init() < 0) {
        snprintf(err, err_len, "hashing pool: libsodium failed to start");
        goto fail_async;
    }
    for (int i = 0; i < pool->nthreads; i++) {
        if ((rc = pool__spawn(&pool->helpers[i])) != 0) {
            snprintf(err, err_len, "hashing pool: helper process %d of %d: %s", i + 1,
                     pool->nthreads, strerror(-rc));
            goto fail_async;
        }
    }
    nt_auth_set_hasher(&pool__hasher);

    /* The threads take no signals: those are the loop's (uv_signal). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; started < pool->nthreads; started++) {
        rc = pthread_create(&pool->threads[started], NULL, pool__thread, &pool->helpers[started]);
        if (rc != 0) break;
        pthread_setname_np(pool->threads[started], "nt-hash");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started < pool->nthreads) {
        snprintf(err, err_len, "hashing pool: thread %d of %d: %s", started + 1, pool->nthreads,
                 strerror(rc));
        pool__stop_threads(pool, started);
        pool__reap_all(pool);
        /* The handle belongs to the loop now: the memory goes when it has
         * closed it. */
        uv_close((uv_handle_t *)&pool->async, pool__on_closed);
        return NULL;
    }
    return pool;

fail_async:
    pool__reap_all(pool);
    uv_close((uv_handle_t *)&pool->async, pool__on_closed);
    return NULL;
fail_cond:
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    return NULL;
fail_mutex:
    pthread_mutex_destroy(&pool->lock);
fail_free:
    snprintf(err, err_len, "hashing pool: %s", strerror(rc));
    free(pool);
    return NULL;
}

int gw_hash_pool_submit(gw_hash_pool *pool, gw_job *job)
{
    pthread_mutex_lock(&pool->lock);
    if (pool->nwaiting >= pool->max_queued) {
        pthread_mutex_unlock(&pool->lock);
        return -EAGAIN;
    }
    pool__push(&pool->wait_head, &pool->wait_tail, job);
    pool->nwaiting++;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

unsigned gw_hash_pool_retry_after(gw_hash_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    double ahead = (double)(pool->nwaiting + pool->nrunning);
    double avg_ms = pool->avg_ms > 0 ? pool->avg_ms : 100;
    pthread_mutex_unlock(&pool->lock);
    double s = ahead * avg_ms / pool->nthreads / 1000.0;
    return s < 1 ? 1 : s > 60 ? 60 : (unsigned)s + 1;
}

int gw_hash_pool_threads(const gw_hash_pool *pool)
{
    return pool->nthreads;
}

void gw_hash_pool_free(gw_hash_pool *pool)
{
    if (!pool) return;
    pool__stop_threads(pool, pool->nthreads);
    pool__reap_all(pool);
    uv_close((uv_handle_t *)&pool->async, pool__on_closed);
}
