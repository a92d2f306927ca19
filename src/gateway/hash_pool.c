/*
 * The password-hashing pool: see hash_pool.h. A mutex-protected FIFO of
 * waiting jobs, a condition variable the threads sleep on, and a second
 * FIFO of finished jobs that the loop thread empties when the uv_async
 * fires (the same hand-off as the WebSocket send path in ws_session.c).
 */
#include "gateway/hash_pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "gateway/gateway_internal.h"

#define HASH_QUEUE_PER_THREAD 16
#define HASH_MAX_THREADS 64

struct gw_hash_pool {
    uv_async_t async; /* first: the close callback gets the pool from it */
    gw_hash_done_fn done;
    pthread_t threads[HASH_MAX_THREADS];
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

/*
 * Lowest priority for the calling thread. SCHED_IDLE (Linux) gives the
 * thread the smallest CFS weight there is and lets any normal thread that
 * wakes on its CPU preempt it, so the loop thread and the store writer run
 * as if the hash were not there, and the hash takes only the idle time of
 * the cores. An unprivileged process may always lower itself to it. If the
 * kernel or a sandbox refuses (not Linux, a seccomp filter), nice 19 is the
 * next best: on Linux nice is per thread when given the thread id, and it
 * still leaves the hash about 1.5 % of a core against a nice-0 thread. If
 * both fail the pool still works, only without the protection: say so once.
 */
static void pool__lower_priority(void)
{
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_IDLE, &param) == 0) return;
    int sched_errno = errno;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 19) == 0) return;
    nt_warn("hashing thread: neither SCHED_IDLE (%s) nor nice 19 (%s) could be set; "
            "logins will compete with the loop for the CPU",
            strerror(sched_errno), strerror(errno));
}

static void *pool__thread(void *arg)
{
    gw_hash_pool *pool = arg;
    pool__lower_priority();
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
     * 64 MiB while it runs, so more threads cost memory, not only CPU. */
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

    /* The threads take no signals: those are the loop's (uv_signal). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; started < pool->nthreads; started++) {
        rc = pthread_create(&pool->threads[started], NULL, pool__thread, pool);
        if (rc != 0) break;
        pthread_setname_np(pool->threads[started], "nt-hash");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started < pool->nthreads) {
        snprintf(err, err_len, "hashing pool: thread %d of %d: %s", started + 1, pool->nthreads,
                 strerror(rc));
        pool__stop_threads(pool, started);
        /* The handle belongs to the loop now: the memory goes when it has
         * closed it. */
        uv_close((uv_handle_t *)&pool->async, pool__on_closed);
        return NULL;
    }
    return pool;

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
    uv_close((uv_handle_t *)&pool->async, pool__on_closed);
}
