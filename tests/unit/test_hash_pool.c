/*
 * Unit tests of the password-hashing pool (src/gateway/hash_pool.c), on a
 * real libuv loop with its real threads and helper processes: hashes made
 * and checked through a thread's helper agree with libsodium's own;
 * threads off the pool are told to hash themselves (-ENOSYS); a helper
 * that was killed is replaced on the next hash; a full queue refuses the
 * next job with -EAGAIN and a Retry-After of 1..60 s while the jobs it
 * holds still finish, in order; freeing the pool ends and reaps every
 * helper; a thread whose helper is gone and cannot be started again
 * declines (-ENOSYS, auth.c then hashes itself) instead of calling a right
 * password wrong, and gets a helper again once one can be started; a
 * helper that gets no CPU time makes a hash decline after the patience
 * instead of keeping the login waiting, gets nothing more until its late
 * answer is in, and answers again once it runs.
 */
#include "gateway/hash_pool.c"

#include <semaphore.h>
#include <sys/resource.h>

#include "unit/check.h"

typedef struct tjob {
    gw_job job; /* first: the pool hands back this pointer */
    int id;
    sem_t *started, *release; /* if set: post started, wait for release */
    /* hashing through the helper */
    bool hash;
    int str_rc, verify_good, verify_bad;
    char str[NT_PWHASH_STRBYTES];
} tjob;

static int done_ids[16];
static int ndone;

static void on_done(gw_job *job)
{
    tjob *t = (tjob *)job;
    if (ndone < 16) done_ids[ndone] = t->id;
    ndone++;
}

static void run_job(gw_job *job)
{
    tjob *t = (tjob *)job;
    if (t->started) sem_post(t->started);
    if (t->release) sem_wait(t->release);
    if (t->hash) {
        t->str_rc = pool__hasher.str(t->str, "correct horse", 13, crypto_pwhash_OPSLIMIT_MIN,
                                     crypto_pwhash_MEMLIMIT_MIN);
        t->verify_good = pool__hasher.verify(t->str, "correct horse", 13);
        t->verify_bad = pool__hasher.verify(t->str, "wrong horse", 11);
    }
}

static tjob *new_job(int id)
{
    tjob *t = calloc(1, sizeof *t);
    t->id = id;
    t->job.run = run_job;
    return t;
}

static void wait_done(uv_loop_t *loop, int n)
{
    while (ndone < n)
        uv_run(loop, UV_RUN_ONCE);
}

static bool alive(pid_t pid)
{
    return pid > 0 && kill(pid, 0) == 0;
}

/* Hashes through the helper of a one-thread pool; returns the job. */
static tjob *hash_on_pool(uv_loop_t *loop, gw_hash_pool *pool, int id)
{
    tjob *t = new_job(id);
    t->hash = true;
    int before = ndone;
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &t->job), 0);
    wait_done(loop, before + 1);
    return t;
}

/* A one-thread pool with room for max_queued jobs (0: the default), the
 * done count reset; NULL after a failed check. */
static gw_hash_pool *new_pool(uv_loop_t *loop, size_t max_queued)
{
    char err[200] = "";
    ndone = 0;
    gw_hash_pool *pool = gw_hash_pool_new(loop, 1, max_queued, on_done, err, sizeof err);
    CHECK(pool != NULL);
    if (!pool) fprintf(stderr, "%s\n", err);
    return pool;
}

static void test_helper_hashes(uv_loop_t *loop)
{
    gw_hash_pool *pool = new_pool(loop, 0);
    if (!pool) return;
    CHECK_EQ_INT(gw_hash_pool_threads(pool), 1);
    pid_t helper = pool->helpers[0].pid;
    CHECK(helper != getpid());
    CHECK(alive(helper));

    /* A hash made by the helper is a valid Argon2id string for libsodium
     * here, and the helper tells the right password from a wrong one. */
    tjob *t = hash_on_pool(loop, pool, 1);
    CHECK_EQ_INT(t->str_rc, 0);
    CHECK(strncmp(t->str, "$argon2id$", 10) == 0);
    CHECK_EQ_INT(crypto_pwhash_str_verify(t->str, "correct horse", 13), 0);
    CHECK_EQ_INT(t->verify_good, 0);
    CHECK_EQ_INT(t->verify_bad, -1);
    free(t);

    /* Off the pool's threads the hasher declines: auth.c hashes itself. */
    char out[NT_PWHASH_STRBYTES];
    CHECK_EQ_INT(pool__hasher.str(out, "correct horse", 13, crypto_pwhash_OPSLIMIT_MIN,
                                  crypto_pwhash_MEMLIMIT_MIN),
                 -ENOSYS);
    CHECK_EQ_INT(pool__hasher.verify(out, "correct horse", 13), -ENOSYS);

    /* A killed helper is replaced by the next hash, which still works. */
    kill(helper, SIGKILL);
    t = hash_on_pool(loop, pool, 2);
    CHECK_EQ_INT(t->str_rc, 0);
    CHECK_EQ_INT(t->verify_good, 0);
    CHECK_EQ_INT(t->verify_bad, -1);
    free(t);
    pid_t second = pool->helpers[0].pid;
    CHECK(second != helper);
    CHECK(alive(second));
    CHECK(!alive(helper)); /* reaped, not a zombie */

    gw_hash_pool_free(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(!alive(second)); /* ended and reaped by the free */
}

/* A job that kills its thread's helper and, with no file descriptor left
 * for a new socketpair, asks the hasher to verify a right password. */
static void run_no_helper(gw_job *job)
{
    tjob *t = (tjob *)job;
    struct rlimit old, none;
    getrlimit(RLIMIT_NOFILE, &old);
    none = old;
    none.rlim_cur = 3; /* stdio only: socketpair fails with EMFILE */
    kill(pool__self->pid, SIGKILL);
    setrlimit(RLIMIT_NOFILE, &none);
    t->verify_good = pool__hasher.verify(t->str, "correct horse", 13);
    t->str_rc = pool__hasher.str(t->str, "correct horse", 13, crypto_pwhash_OPSLIMIT_MIN,
                                 crypto_pwhash_MEMLIMIT_MIN);
    setrlimit(RLIMIT_NOFILE, &old);
}

static void test_no_helper(uv_loop_t *loop)
{
    gw_hash_pool *pool = new_pool(loop, 0);
    if (!pool) return;

    tjob *t = new_job(1);
    t->job.run = run_no_helper;
    CHECK_EQ_INT(crypto_pwhash_str(t->str, "correct horse", 13, crypto_pwhash_OPSLIMIT_MIN,
                                   crypto_pwhash_MEMLIMIT_MIN),
                 0);
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &t->job), 0);
    wait_done(loop, 1);
    /* Not -1: that reads as "wrong password" (401 for a right one). */
    CHECK_EQ_INT(t->verify_good, -ENOSYS);
    CHECK_EQ_INT(t->str_rc, -ENOSYS);
    CHECK_EQ_INT(pool->helpers[0].pid, 0); /* the dead one was reaped */
    free(t);

    /* Descriptors again: the next hash starts a helper and works. */
    t = hash_on_pool(loop, pool, 2);
    CHECK_EQ_INT(t->str_rc, 0);
    CHECK_EQ_INT(t->verify_good, 0);
    CHECK_EQ_INT(t->verify_bad, -1);
    CHECK(alive(pool->helpers[0].pid));
    free(t);

    gw_hash_pool_free(pool);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void test_queue_full(uv_loop_t *loop)
{
    sem_t started, release;
    sem_init(&started, 0, 0);
    sem_init(&release, 0, 0);
    gw_hash_pool *pool = new_pool(loop, 2);
    if (!pool) return;

    /* Job 1 holds the one thread; 2 and 3 fill the queue of 2; 4 is refused. */
    tjob *a = new_job(1);
    a->started = &started;
    a->release = &release;
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &a->job), 0);
    sem_wait(&started);
    tjob *b = new_job(2), *c = new_job(3), *d = new_job(4);
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &b->job), 0);
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &c->job), 0);
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &d->job), -EAGAIN);
    unsigned retry = gw_hash_pool_retry_after(pool);
    CHECK(retry >= 1 && retry <= 60);
    free(d); /* refused: still ours */

    sem_post(&release);
    wait_done(loop, 3);
    CHECK_EQ_INT(ndone, 3);
    CHECK_EQ_INT(done_ids[0], 1);
    CHECK_EQ_INT(done_ids[1], 2);
    CHECK_EQ_INT(done_ids[2], 3);
    free(a);
    free(b);
    free(c);

    /* Room again once the queue drained. */
    tjob *e = new_job(5);
    CHECK_EQ_INT(gw_hash_pool_submit(pool, &e->job), 0);
    wait_done(loop, 4);
    CHECK_EQ_INT(done_ids[3], 5);
    free(e);

    gw_hash_pool_free(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    sem_destroy(&started);
    sem_destroy(&release);
}

/* A helper that gets no CPU time (stopped here; starved by a busy machine
 * in real life) makes a hash decline after HASH_PATIENCE_MS, so that
 * auth.c hashes in the pool thread instead of keeping a login waiting;
 * while that late answer is still to come, nothing more is sent to the
 * helper (it would wait behind the late hash, and a helper that never runs
 * would fill the socket until send() blocked the thread) and the hashes
 * decline at once. Once the late answer is in, it is skipped and the
 * helper answers the next requests itself, without being replaced. */
static void test_late_helper(uv_loop_t *loop)
{
    gw_hash_pool *pool = new_pool(loop, 0);
    if (!pool) return;
    pool_helper *h = &pool->helpers[0];
    pid_t helper = h->pid;
    CHECK_EQ_INT(kill(helper, SIGSTOP), 0);

    for (int round = 1; round <= 2; round++) {
        tjob *t = hash_on_pool(loop, pool, round); /* str, verify, verify */
        CHECK_EQ_INT(t->str_rc, -ENOSYS);
        CHECK_EQ_INT(t->verify_good, -ENOSYS); /* never -1: a right password stays right */
        CHECK_EQ_INT(t->verify_bad, -ENOSYS);
        CHECK(h->late);
        CHECK_EQ_INT((int)h->seq, 1); /* only the first request went to the helper */
        free(t);
    }

    /* The pool thread is idle now: wait here for the late answer. */
    CHECK_EQ_INT(kill(helper, SIGCONT), 0);
    struct pollfd p = {.fd = h->fd, .events = POLLIN};
    CHECK_EQ_INT(poll(&p, 1, -1), 1);
    tjob *t = hash_on_pool(loop, pool, 3);
    CHECK_EQ_INT(t->str_rc, 0);
    CHECK_EQ_INT(crypto_pwhash_str_verify(t->str, "correct horse", 13), 0);
    CHECK_EQ_INT(t->verify_good, 0);
    CHECK_EQ_INT(t->verify_bad, -1);
    CHECK(!h->late);
    CHECK_EQ_INT((int)h->seq, 4);
    CHECK_EQ_INT(h->pid, helper); /* the same process */
    free(t);

    gw_hash_pool_free(pool);
    uv_run(loop, UV_RUN_DEFAULT);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_helper_hashes(&loop);
    test_queue_full(&loop);
    test_no_helper(&loop);
    test_late_helper(&loop);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    return check_exit();
}
