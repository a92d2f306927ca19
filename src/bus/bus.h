/*
 * The bus: everything that crosses services or processes. Back ends: the
 * in-process one (bus_local.c, default) and Redis (bus_redis.c). Services use only
 * this header and never know which back end runs.
 *
 * Concepts:
 *  - node: one natterd process. Gateways hold connections; the registry
 *    knows which nodes hold connections of which users.
 *  - delivery: one encoded frame for a set of users. The bus sends it once
 *    to each node that holds connections of any of them, with the list of
 *    that node's recipients; the node's delivery handler writes it out.
 *  - work queue: jobs taken by one worker each and acknowledged when done;
 *    a job not acknowledged within its visibility timeout goes back to the
 *    queue for another worker (a worker that died mid-job).
 *  - request/reply: a call to a named service with a correlation id and a
 *    reply address, waited for with a timeout.
 *  - leader lock: a named lock held for a TTL and renewed by its holder, so
 *    exactly one process runs a singleton (the lobby cron).
 *
 * Threads: nt_bus_deliver, the queue, request/reply and leader functions are
 * safe from any thread; the blocking ones (pop, request, serve) must not be
 * called on a loop thread. Registry functions, the presence handler and the
 * delivery handler run on the loop thread the bus was attached to, and none
 * of them waits for Redis.
 */
#ifndef NT_BUS_H
#define NT_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"

typedef struct nt_bus nt_bus;

enum {
    NT_BUS_OK = 0,
    NT_BUS_ETIMEDOUT = -110,
    NT_BUS_EUNAVAILABLE = -111, /* the bus is down: caller answers 503 */
    NT_BUS_ENOMEM = -12,
    NT_BUS_ECLOSED = -32,
    NT_BUS_ENOTSUP = -95, /* the back end does not offer this (match queue) */
};

/* "local" (in-process). `loop` is the loop thread that runs deliveries and
 * presence. Returns NULL and a one-line reason in err on failure. */
nt_bus *nt_bus_open(const char *url, uv_loop_t *loop, char *err, size_t err_len);
/* Wakes every blocked call (they return NT_BUS_ECLOSED) and frees the bus.
 * Call on the loop thread after worker threads have stopped using it. */
void nt_bus_close(nt_bus *b);
int nt_bus_ping(nt_bus *b); /* 0 if the bus answers (for /readyz) */

/* ---- delivery ---------------------------------------------------------- */

/* Called on the loop thread with one frame and this node's recipients. The
 * handler takes its own references to `frame` if it keeps it. */
typedef void (*nt_bus_delivery_fn)(void *arg, nt_shared *frame, const int64_t *user_ids, size_t n);
void nt_bus_set_delivery_handler(nt_bus *b, nt_bus_delivery_fn fn, void *arg);

/* Sends `frame` (a complete text payload, e.g. a JSON event) to every
 * connection of every user in user_ids. Safe from any thread; on the loop
 * thread local recipients are handed over at once, from other threads the
 * frame is queued and the loop woken. Users with no connection are skipped. */
int nt_bus_deliver(nt_bus *b, const int64_t *user_ids, size_t n, const char *frame, size_t len);

/* ---- registry and presence (loop thread) -------------------------------- */

/*
 * The loop thread never waits for the registry. nt_bus_conn_up/down count
 * the change on this node at once (local deliveries and nt_bus_online see
 * it before they return) and queue it for the registry the nodes share;
 * whether it made the user come online (first connection anywhere) or go
 * offline (last one gone) is decided there and told later to the presence
 * handler, on the loop thread.
 *
 * The presence handler is called once per transition, for each user in the
 * order the changes were made (online, offline, online...), never for a
 * change that was not a transition. With the Redis back end the node whose
 * change made the transition is told. Changes made while Redis does not
 * answer are told once it answers again and the node's registry is back in
 * it: a user whose connections on this node went from none to some (or
 * back) during the outage comes online (goes offline) if no other live
 * node holds it. The in-process back end calls the handler before
 * nt_bus_conn_up/down returns. It must not close the bus.
 */
typedef void (*nt_bus_presence_fn)(void *arg, int64_t user_id, bool online);
void nt_bus_set_presence_handler(nt_bus *b, nt_bus_presence_fn fn, void *arg);

/* A connection of user_id was authenticated on this node. 0, or
 * NT_BUS_ENOMEM (nothing was counted). */
int nt_bus_conn_up(nt_bus *b, int64_t user_id);
/* A connection closed. 0; a down without a matching up is ignored. */
int nt_bus_conn_down(nt_bus *b, int64_t user_id);
/*
 * Calls fn(arg) on the loop thread once every registry change made on this
 * node before this call is in the shared registry, after the presence
 * handler calls of those changes: from then on deliveries made on any node
 * reach this node's users (the gateway sends `ready` then). If Redis does
 * not answer (a command of the registry thread timed out after 1 s or the
 * connection is down), fn is called without waiting for it and those
 * changes are written when Redis is back. The in-process back end calls fn
 * before returning. 0, or NT_BUS_ENOMEM (fn will not be called). A bus
 * closed first never calls fn: wait for it before closing.
 */
int nt_bus_registry_flush(nt_bus *b, void (*fn)(void *arg), void *arg);
/* True if the user has a connection on any node. Any thread; on the loop
 * thread (which must not wait) the Redis back end answers from this node's
 * connections only. */
bool nt_bus_online(nt_bus *b, int64_t user_id);

/* ---- work queues --------------------------------------------------------- */

typedef struct nt_bus_job {
    uint64_t id;
    char *payload; /* heap, NUL-terminated; freed by nt_bus_job_free */
    size_t len;
} nt_bus_job;

int nt_bus_queue_push(nt_bus *b, const char *queue, const void *payload, size_t len);
/* Takes the next job, waiting up to timeout_ms. The job stays owned by this
 * worker until nt_bus_queue_ack; after visibility_ms without an ack it is
 * given to another worker. Returns 0, NT_BUS_ETIMEDOUT or NT_BUS_ECLOSED. */
int nt_bus_queue_pop(nt_bus *b, const char *queue, int timeout_ms, int visibility_ms,
                     nt_bus_job *job);
int nt_bus_queue_ack(nt_bus *b, const char *queue, uint64_t job_id);
/* Jobs waiting plus jobs taken and not yet acknowledged. */
size_t nt_bus_queue_depth(nt_bus *b, const char *queue);
void nt_bus_job_free(nt_bus_job *job);

/* ---- request / reply ------------------------------------------------------ */

typedef struct nt_bus_call {
    char correlation_id[40];
    char reply_to[64];
    char *payload; /* heap, NUL-terminated */
    size_t len;
} nt_bus_call;

/* Calls `service` and waits up to timeout_ms for the reply (heap, *reply,
 * NUL-terminated, caller frees). NT_BUS_ETIMEDOUT if nobody answered; a late
 * reply is discarded. */
int nt_bus_request(nt_bus *b, const char *service, const void *payload, size_t len, int timeout_ms,
                   char **reply, size_t *reply_len);
/* A server takes the next call to `service`, waiting up to timeout_ms. */
int nt_bus_serve(nt_bus *b, const char *service, int timeout_ms, nt_bus_call *call);
int nt_bus_reply(nt_bus *b, const nt_bus_call *call, const void *payload, size_t len);
void nt_bus_call_free(nt_bus_call *call);

/* ---- leader lock ----------------------------------------------------------- */

/* Takes or renews the lock `name` for ttl_ms. True if this process holds it
 * now. A holder that stops renewing loses it after ttl_ms. */
bool nt_bus_leader(nt_bus *b, const char *name, int ttl_ms);

/* ---- shared match queue ---------------------------------------------------- */

/* A user waiting for a random chat, as the shared queue keeps it. gender is
 * one bit (1 male, 2 female, 4 other), genders the set wanted, ages within
 * 13..120. interests: hashes of the user's interest tags
 * (nt_match_tag_hash), at most NT_BUS_MATCH_INTERESTS_MAX, no repeats; kept
 * in the queue. blocks: the users this one blocked or was blocked by (read
 * at join time, so both directions are covered); not kept in the queue.
 *
 * A partner returned by nt_bus_match_join is the entry as the queue kept
 * it: everything above but blocks (interests point into interest_buf),
 * plus its place in the queue (arrival) and the node it waited from. Given
 * back to nt_bus_match_join with scan_cap 0 (and its blocks read again) it
 * waits exactly as before: same preferences, same place, same node. A new
 * arrival leaves arrival 0 and node empty (this node's name is used). */
#define NT_BUS_MATCH_INTERESTS_MAX 10
typedef struct nt_bus_match_entry {
    int64_t user_id;
    unsigned gender;
    int age;
    unsigned genders;
    int age_min, age_max;
    const uint64_t *interests;
    int ninterests;
    const int64_t *blocks;
    int nblocks;
    uint64_t arrival;
    char node[64];
    uint64_t interest_buf[NT_BUS_MATCH_INTERESTS_MAX];
} nt_bus_match_entry;

enum { NT_BUS_MATCH_WAITING = 0, NT_BUS_MATCH_ALREADY = 1, NT_BUS_MATCH_PAIRED = 2 };

/*
 * The match queue shared by every node (Redis). In one atomic step: if
 * me->user_id already waits, NT_BUS_MATCH_ALREADY; else of the compatible
 * waiting users (each inside the other's genders and age range, not in
 * me->blocks; at most scan_cap looked at per bucket) the one sharing the
 * most interests with me, the oldest of those, leaves the queue and its
 * entry goes into *partner: NT_BUS_MATCH_PAIRED; else me waits:
 * NT_BUS_MATCH_WAITING. scan_cap 0 only queues me (puts back a partner
 * whose chat could not be stored, with its arrival and node). -EINVAL for
 * more than NT_BUS_MATCH_INTERESTS_MAX interests. NT_BUS_ENOTSUP from the
 * in-process back end (the caller keeps its own queue), NT_BUS_EUNAVAILABLE
 * if Redis does not answer. Any thread.
 */
int nt_bus_match_join(nt_bus *b, const nt_bus_match_entry *me, int scan_cap,
                      nt_bus_match_entry *partner);
/* Takes user_id out of the shared queue: 1 if it was waiting, 0 if not,
 * NT_BUS_ENOTSUP or NT_BUS_EUNAVAILABLE. Any thread. */
int nt_bus_match_leave(nt_bus *b, int64_t user_id);

/* ---- notes on use (added with the first back end) ------------------------ */

/*
 * - Open the bus on its loop thread (uv handles are created there, and
 *   deliveries made on that thread are handed over at once).
 * - nt_bus_close closes the bus's uv handles with uv_close; their memory is
 *   given back by their close callbacks the next time the loop runs (e.g.
 *   uv_run(loop, UV_RUN_NOWAIT)), which the owner does anyway before
 *   uv_loop_close. The bus itself does not keep the loop alive. Close may be
 *   called from inside a loop callback other than the delivery handler.
 * - Timeouts: timeout_ms < 0 waits until the bus closes, 0 does not wait.
 *   visibility_ms <= 0 means the back end's default (30 s).
 * - nt_bus_queue_ack returns -ENOENT for a job it does not know (already
 *   acknowledged). Acknowledging a job whose visibility ran out still
 *   removes it, wherever it is.
 * - nt_bus_reply returns 0 also when the caller has already given up; the
 *   reply is then dropped.
 * - nt_bus_deliver returns NT_BUS_EUNAVAILABLE if too much is queued for a
 *   loop that does not drain it, -EMSGSIZE for a frame over 4 GiB.
 * - nt_bus_conn_up returns NT_BUS_ENOMEM if the registry cannot grow.
 * - Clear the presence handler (NULL) before freeing what its arg points
 *   to; transitions decided after that are dropped.
 * - "local": leader locks are shared by every local bus of the process, so
 *   two buses opened in one process compete like two nodes.
 */

#endif
