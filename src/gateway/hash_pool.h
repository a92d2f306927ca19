/*
 * The password-hashing pool: a few threads of their own that run the
 * gateway's jobs which cost an Argon2id hash (register and login). They
 * are kept off libuv's pool so that a login storm cannot fill the workers
 * every other REST call and WebSocket job waits for. The hash itself runs
 * in a helper process per thread at the lowest CPU priority (SCHED_IDLE),
 * off the CPU whenever the loop or the store writer wants it and outside
 * this process's memory map; the threads, at normal priority, do the
 * store work of the job and wait for their helper (the pool installs the
 * hasher auth.c calls, services/auth.h). A helper that has not answered
 * within a second (no idle CPU time) is not waited for: the thread then
 * hashes itself, at normal priority, and goes on doing so without waiting
 * until that late answer is in. The queue is bounded: past the
 * bound a job is refused and the caller answers 503 at once
 * (docs/decisions.md, "Password hashing").
 *
 * A job runs its `run` on a pool thread; finished jobs go back to the loop
 * thread through one uv_async, where the pool calls `done` for each of them
 * in the order they finished. Internal to src/gateway/.
 */
#ifndef NT_GW_HASH_POOL_H
#define NT_GW_HASH_POOL_H

#include <stddef.h>
#include <uv.h>

typedef struct gw_job gw_job;
typedef struct gw_hash_pool gw_hash_pool;

/* Called on the loop thread for each finished job; owns the job from then. */
typedef void (*gw_hash_done_fn)(gw_job *job);

/* Starts `threads` hashing threads (0: one fewer than the CPUs this process
 * may run on, at least one), each with its helper process, with room for
 * `max_queued` jobs waiting (0: 16 per thread), and a uv_async on `loop`.
 * Call it early: each helper is forked from this process as it is then.
 * Returns NULL with a line in err on failure (nothing is left running). */
gw_hash_pool *gw_hash_pool_new(uv_loop_t *loop, int threads, size_t max_queued,
                               gw_hash_done_fn done, char *err, size_t err_len);

/* Loop thread. Queues a job (job->run runs on a pool thread). 0, or
 * -EAGAIN when max_queued jobs already wait (the job is untouched and stays
 * the caller's). */
int gw_hash_pool_submit(gw_hash_pool *pool, gw_job *job);

/* Loop thread. Seconds a refused client should wait before trying again:
 * the queue ahead of it at the average hash time seen so far, 1..60. */
unsigned gw_hash_pool_retry_after(gw_hash_pool *pool);

/* Number of hashing threads running. */
int gw_hash_pool_threads(const gw_hash_pool *pool);

/* Loop thread. Stops and joins the threads, ends and reaps the helper
 * processes, and closes the async handle
 * (the memory goes when libuv has closed it, on a later loop turn). Every
 * submitted job must have come back through `done` first: jobs still queued
 * are dropped without `done`. NULL is a no-op. */
void gw_hash_pool_free(gw_hash_pool *pool);

#endif
