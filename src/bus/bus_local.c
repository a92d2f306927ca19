/*
 * The in-process bus back end (URL "local"): one natterd process is the
 * whole cluster, so the bus is memory, mutexes and condition variables.
 *
 *  - Deliveries: on the loop thread the frame is handed to the delivery
 *    handler at once, in one nt_shared, with only the recipients that are
 *    online. From any other thread the frame and ids are copied into a queue
 *    entry and the loop is woken with a uv_async; the async callback drains
 *    the queue on the loop, in the order the entries were queued.
 *  - Registry: connections per user (conn_counts.h), behind a rwlock
 *    because nt_bus_online is called from any thread. A count going from
 *    or to zero is the presence transition, told to the presence handler
 *    at once; nothing is ever pending, so a registry flush calls back at
 *    once too.
 *  - Work queues: named FIFOs created on first use. A popped job moves to an
 *    in-flight list with a deadline; a job not acknowledged by then goes back
 *    to the front of its queue, which is how a worker that died mid-job is
 *    modelled. Deadlines are checked on every pop and ack, and waiting
 *    poppers wake for the earliest one.
 *  - Request/reply: a call is queued on its service's queue and the caller
 *    waits on its own condition variable, found by correlation id when the
 *    reply comes. A reply for a caller that gave up is dropped.
 *  - Leader locks: process-wide (all local buses in the process compete, each
 *    identified by a random token), so two buses opened in one process behave
 *    like two nodes would.
 *
 * Locks: `mu` guards queues, calls and waiters; `reg_lock` the registry;
 * `dq_mu` the cross-thread delivery queue; `leader_mu` the leader table.
 * None is held while calling the delivery handler, and none nests another.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus_backend.h"
#include "bus/conn_counts.h"
#include "bus/inbox.h"
#include "common/clock.h"

/* Bytes of deliveries queued from other threads that the loop has not
 * drained yet; past this nt_bus_deliver answers NT_BUS_EUNAVAILABLE rather
 * than grow without bound behind a stuck loop. */
#define LOCAL_DELIVERY_QUEUE_MAX ((size_t)256 << 20)
/* Jobs waiting in one work queue (or calls in one service queue). */
#define LOCAL_QUEUE_MAX ((size_t)1 << 20)
/* Used when nt_bus_queue_pop gets visibility_ms <= 0. */
#define LOCAL_DEFAULT_VISIBILITY_MS 30000
#define LOCAL_NEVER UINT64_MAX

/* A job, or a call waiting for a server. Calls need no more than their id:
 * the correlation id is derived from it and the bus token. */
struct local_item {
    struct local_item *next;
    uint64_t id;
    uint64_t deadline_ns; /* job in flight: visibility; call: caller's deadline */
    size_t len;
    char payload[];
};

struct local_queue {
    struct local_queue *next;
    struct local_item *head, *tail;               /* waiting */
    struct local_item *flight_head, *flight_tail; /* taken, not acknowledged */
    size_t n_waiting;
    size_t n_flight;
    pthread_cond_t cond; /* an item arrived or came back */
    char name[];
};

/* A caller of nt_bus_request, on its own stack. */
struct local_waiter {
    struct local_waiter *next;
    char correlation_id[40];
    pthread_cond_t cond;
    bool done;
    char *reply;
    size_t reply_len;
};

struct local_bus {
    nt_bus base;
    uint64_t token; /* this bus among others (leader locks, reply address) */
    char reply_to[64];
    uv_thread_t loop_thread;
    uv_async_t *async; /* own allocation: freed by its close callback */

    pthread_mutex_t mu;
    pthread_cond_t idle; /* the last blocked caller left after close */
    bool closed;
    int blocked; /* threads inside pop, serve or request */
    uint64_t next_id;
    struct local_queue *queues;
    struct local_queue *services;
    struct local_waiter *waiters;

    pthread_rwlock_t reg_lock;
    nt_conn_counts reg; /* connections per user on this node */

    pthread_mutex_t dq_mu;
    nt_inbox dq; /* deliveries from other threads */

    /* Loop thread only. */
    int64_t *recipients; /* reused from one delivery to the next */
    size_t recipients_cap;
    int delivering; /* > 0 while the handler runs (it may deliver again) */
};

struct local_leader {
    struct local_leader *next;
    uint64_t holder;
    uint64_t expiry_ns;
    char name[];
};

static pthread_mutex_t leader_mu = PTHREAD_MUTEX_INITIALIZER;
static struct local_leader *leaders;

static struct local_bus *local__of(nt_bus *b)
{
    return (struct local_bus *)b;
}

/* ---- time ----------------------------------------------------------------- */

static uint64_t local__deadline(int timeout_ms)
{
    if (timeout_ms < 0) return LOCAL_NEVER;
    return nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
}

static int local__cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc) return -rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return -rc;
}

/* Waits on cond (created by local__cond_init) until signalled or deadline. */
static void local__wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, uint64_t deadline_ns)
{
    if (deadline_ns == LOCAL_NEVER) {
        pthread_cond_wait(cond, mu);
        return;
    }
    struct timespec ts = {
        .tv_sec = (time_t)(deadline_ns / 1000000000u),
        .tv_nsec = (long)(deadline_ns % 1000000000u),
    };
    pthread_cond_timedwait(cond, mu, &ts);
}

/* ---- registry ------------------------------------------------------------- */

/* The process is the whole cluster: a change of the local count from or to
 * zero is the transition, told at once (the loop thread is the caller). */
static int local__conn_up(nt_bus *b, int64_t user_id)
{
    struct local_bus *lb = local__of(b);
    pthread_rwlock_wrlock(&lb->reg_lock);
    int64_t before = nt_conn_counts_add(&lb->reg, user_id, +1);
    pthread_rwlock_unlock(&lb->reg_lock);
    if (before < 0) return NT_BUS_ENOMEM;
    if (before == 0 && b->presence_fn) b->presence_fn(b->presence_arg, user_id, true);
    return 0;
}

static int local__conn_down(nt_bus *b, int64_t user_id)
{
    struct local_bus *lb = local__of(b);
    pthread_rwlock_wrlock(&lb->reg_lock);
    int64_t before = nt_conn_counts_add(&lb->reg, user_id, -1);
    pthread_rwlock_unlock(&lb->reg_lock);
    if (before == 1 && b->presence_fn) b->presence_fn(b->presence_arg, user_id, false);
    return 0;
}

/* Nothing is ever pending: the registry is this process's memory. */
static int local__registry_flush(nt_bus *b, void (*fn)(void *arg), void *arg)
{
    fn(arg);
    return 0;
}

static bool local__online(nt_bus *b, int64_t user_id)
{
    struct local_bus *lb = local__of(b);
    pthread_rwlock_rdlock(&lb->reg_lock);
    bool online = nt_conn_counts_get(&lb->reg, user_id) > 0;
    pthread_rwlock_unlock(&lb->reg_lock);
    return online;
}

/* ---- delivery ------------------------------------------------------------- */

/* On the loop thread: hands frame to the handler with the online users. */
static int local__deliver_now(struct local_bus *lb, const int64_t *user_ids, size_t n,
                              const char *frame, size_t len)
{
    nt_bus_delivery_fn fn = lb->base.delivery_fn;
    if (!fn || n == 0) return 0;
    /* The handler may deliver again from inside; only the outer call may use
     * the shared recipients array. */
    int64_t *recipients;
    bool nested = lb->delivering > 0;
    if (nested) {
        recipients = malloc(n * sizeof *recipients);
        if (!recipients) return NT_BUS_ENOMEM;
    } else {
        if (n > lb->recipients_cap) {
            int64_t *grown = realloc(lb->recipients, n * sizeof *grown);
            if (!grown) return NT_BUS_ENOMEM;
            lb->recipients = grown;
            lb->recipients_cap = n;
        }
        recipients = lb->recipients;
    }

    size_t m = 0;
    pthread_rwlock_rdlock(&lb->reg_lock);
    for (size_t i = 0; i < n; i++) {
        if (nt_conn_counts_get(&lb->reg, user_ids[i]) > 0) recipients[m++] = user_ids[i];
    }
    pthread_rwlock_unlock(&lb->reg_lock);

    int rc = 0;
    if (m > 0) {
        nt_shared *shared = nt_shared_new(frame, len);
        if (!shared) {
            rc = NT_BUS_ENOMEM;
        } else {
            lb->delivering++;
            fn(lb->base.delivery_arg, shared, recipients, m);
            lb->delivering--;
            nt_shared_unref(shared);
        }
    }
    if (nested) free(recipients);
    return rc;
}

static void local__drain(uv_async_t *handle)
{
    struct local_bus *lb = handle->data;
    if (!lb) return;
    pthread_mutex_lock(&lb->dq_mu);
    nt_inbox_item *all = nt_inbox_take(&lb->dq);
    pthread_mutex_unlock(&lb->dq_mu);

    for (nt_inbox_item *d = all; d; d = d->next)
        local__deliver_now(lb, d->ids, d->n, nt_inbox_frame(d), d->len);
    nt_inbox_free_chain(all);
}

static int local__deliver(nt_bus *b, const int64_t *user_ids, size_t n, const char *frame,
                          size_t len)
{
    struct local_bus *lb = local__of(b);
    if (len > UINT32_MAX) /* nt_shared's limit */
        return -EMSGSIZE;
    uv_thread_t self = uv_thread_self();
    if (uv_thread_equal(&self, &lb->loop_thread))
        return local__deliver_now(lb, user_ids, n, frame, len);

    nt_inbox_item *d = nt_inbox_item_new(user_ids, n, frame, len);
    if (!d) return NT_BUS_ENOMEM;
    pthread_mutex_lock(&lb->dq_mu);
    int rc = nt_inbox_push(&lb->dq, d);
    pthread_mutex_unlock(&lb->dq_mu);
    if (rc != 0) {
        free(d);
        return NT_BUS_EUNAVAILABLE;
    }
    /* uv_async_send coalesces: one wake-up drains everything queued. */
    uv_async_send(lb->async);
    return 0;
}

/* ---- queues (shared by work queues and service call queues) --------------- */

/* Finds the queue `name` in list, creating it if create; mu held. */
static struct local_queue *local__queue(struct local_queue **list, const char *name, bool create)
{
    for (struct local_queue *q = *list; q; q = q->next) {
        if (strcmp(q->name, name) == 0) return q;
    }
    if (!create) return NULL;
    size_t name_len = strlen(name);
    struct local_queue *q = calloc(1, sizeof *q + name_len + 1);
    if (!q) return NULL;
    if (local__cond_init(&q->cond)) {
        free(q);
        return NULL;
    }
    memcpy(q->name, name, name_len + 1);
    q->next = *list;
    *list = q;
    return q;
}

static void local__queue_append(struct local_queue *q, struct local_item *item)
{
    item->next = NULL;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->n_waiting++;
}

static struct local_item *local__queue_take(struct local_queue *q)
{
    struct local_item *item = q->head;
    q->head = item->next;
    if (!q->head) q->tail = NULL;
    q->n_waiting--;
    item->next = NULL;
    return item;
}

static void local__queue_push_front(struct local_queue *q, struct local_item *item)
{
    item->next = q->head;
    q->head = item;
    if (!q->tail) q->tail = item;
    q->n_waiting++;
}

/* Unlinks and returns the item with `id` from a list, or NULL. */
static struct local_item *local__unlink(struct local_item **head, struct local_item **tail,
                                        uint64_t id)
{
    struct local_item *prev = NULL;
    for (struct local_item *it = *head; it; prev = it, it = it->next) {
        if (it->id != id) continue;
        if (prev)
            prev->next = it->next;
        else
            *head = it->next;
        if (*tail == it) *tail = prev;
        it->next = NULL;
        return it;
    }
    return NULL;
}

/* Moves in-flight jobs whose visibility ran out back to the front of the
 * queue, oldest first, and wakes poppers if any came back. mu held. */
static void local__requeue_expired(struct local_queue *q, uint64_t now)
{
    struct local_item *back_head = NULL, *back_tail = NULL;
    struct local_item *prev = NULL, *it = q->flight_head;
    size_t n_back = 0;
    while (it) {
        struct local_item *next = it->next;
        if (it->deadline_ns <= now) {
            if (prev)
                prev->next = next;
            else
                q->flight_head = next;
            if (q->flight_tail == it) q->flight_tail = prev;
            it->next = NULL;
            if (back_tail)
                back_tail->next = it;
            else
                back_head = it;
            back_tail = it;
            n_back++;
        } else {
            prev = it;
        }
        it = next;
    }
    if (!n_back) return;
    back_tail->next = q->head;
    q->head = back_head;
    if (!q->tail) q->tail = back_tail;
    q->n_waiting += n_back;
    q->n_flight -= n_back;
    pthread_cond_broadcast(&q->cond);
}

/* Drops calls whose caller has stopped waiting. mu held. */
static void local__drop_stale_calls(struct local_queue *q, uint64_t now)
{
    struct local_item *prev = NULL, *it = q->head;
    while (it) {
        struct local_item *next = it->next;
        if (it->deadline_ns <= now) {
            if (prev)
                prev->next = next;
            else
                q->head = next;
            if (q->tail == it) q->tail = prev;
            q->n_waiting--;
            free(it);
        } else {
            prev = it;
        }
        it = next;
    }
}

static uint64_t local__earliest_flight(const struct local_queue *q)
{
    uint64_t earliest = LOCAL_NEVER;
    for (const struct local_item *it = q->flight_head; it; it = it->next) {
        if (it->deadline_ns < earliest) earliest = it->deadline_ns;
    }
    return earliest;
}

/* Counts a thread that may block on the bus; close waits for it to leave. */
static void local__enter(struct local_bus *lb)
{
    lb->blocked++;
}

static void local__leave(struct local_bus *lb)
{
    if (--lb->blocked == 0 && lb->closed) pthread_cond_broadcast(&lb->idle);
}

/*
 * Waits up to timeout_ms for the next item of q and unlinks it. Jobs
 * (is_job) see expired in-flight jobs come back; calls whose caller gave up
 * are skipped. mu held; returns 0, NT_BUS_ETIMEDOUT or NT_BUS_ECLOSED.
 */
static int local__wait_item(struct local_bus *lb, struct local_queue *q, int timeout_ms,
                            bool is_job, struct local_item **out)
{
    uint64_t end = local__deadline(timeout_ms);
    int rc;
    local__enter(lb);
    for (;;) {
        if (lb->closed) {
            rc = NT_BUS_ECLOSED;
            break;
        }
        uint64_t now = nt_mono_ns();
        if (is_job)
            local__requeue_expired(q, now);
        else
            local__drop_stale_calls(q, now);
        if (q->head) {
            *out = local__queue_take(q);
            rc = 0;
            break;
        }
        if (now >= end) {
            rc = NT_BUS_ETIMEDOUT;
            break;
        }
        uint64_t until = end;
        if (is_job) {
            uint64_t earliest = local__earliest_flight(q);
            if (earliest < until) until = earliest;
        }
        local__wait_until(&q->cond, &lb->mu, until);
    }
    local__leave(lb);
    return rc;
}

static struct local_item *local__item_new(const void *payload, size_t len)
{
    if (len > SIZE_MAX - sizeof(struct local_item) - 1) return NULL;
    struct local_item *item = malloc(sizeof *item + len + 1);
    if (!item) return NULL;
    item->next = NULL;
    item->len = len;
    if (len) memcpy(item->payload, payload, len);
    item->payload[len] = '\0';
    return item;
}

static char *local__strndup(const char *bytes, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    if (len) memcpy(copy, bytes, len);
    copy[len] = '\0';
    return copy;
}

/* ---- work queues ---------------------------------------------------------- */

static int local__queue_push(nt_bus *b, const char *queue, const void *payload, size_t len)
{
    struct local_bus *lb = local__of(b);
    struct local_item *item = local__item_new(payload, len);
    if (!item) return NT_BUS_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&lb->mu);
    if (lb->closed) {
        rc = NT_BUS_ECLOSED;
        goto fail;
    }
    struct local_queue *q = local__queue(&lb->queues, queue, true);
    if (!q) {
        rc = NT_BUS_ENOMEM;
        goto fail;
    }
    if (q->n_waiting >= LOCAL_QUEUE_MAX) {
        rc = NT_BUS_EUNAVAILABLE;
        goto fail;
    }
    item->id = ++lb->next_id;
    item->deadline_ns = LOCAL_NEVER;
    local__queue_append(q, item);
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&lb->mu);
    return 0;
fail:
    pthread_mutex_unlock(&lb->mu);
    free(item);
    return rc;
}

static int local__queue_pop(nt_bus *b, const char *queue, int timeout_ms, int visibility_ms,
                            nt_bus_job *job)
{
    struct local_bus *lb = local__of(b);
    if (visibility_ms <= 0) visibility_ms = LOCAL_DEFAULT_VISIBILITY_MS;
    pthread_mutex_lock(&lb->mu);
    if (lb->closed) {
        pthread_mutex_unlock(&lb->mu);
        return NT_BUS_ECLOSED;
    }
    struct local_queue *q = local__queue(&lb->queues, queue, true);
    if (!q) {
        pthread_mutex_unlock(&lb->mu);
        return NT_BUS_ENOMEM;
    }
    struct local_item *item;
    int rc = local__wait_item(lb, q, timeout_ms, true, &item);
    if (rc == 0) {
        char *payload = local__strndup(item->payload, item->len);
        if (!payload) {
            local__queue_push_front(q, item);
            rc = NT_BUS_ENOMEM;
        } else {
            item->deadline_ns = local__deadline(visibility_ms);
            if (q->flight_tail)
                q->flight_tail->next = item;
            else
                q->flight_head = item;
            q->flight_tail = item;
            q->n_flight++;
            job->id = item->id;
            job->payload = payload;
            job->len = item->len;
        }
    }
    pthread_mutex_unlock(&lb->mu);
    return rc;
}

static int local__queue_ack(nt_bus *b, const char *queue, uint64_t job_id)
{
    struct local_bus *lb = local__of(b);
    int rc = -ENOENT;
    pthread_mutex_lock(&lb->mu);
    struct local_queue *q = local__queue(&lb->queues, queue, false);
    if (!q) goto out;
    /* An ack that comes after the deadline but before another worker took
     * the job still counts: the work is done, nobody needs to redo it. The
     * same holds if the job already went back to the queue. */
    struct local_item *item = local__unlink(&q->flight_head, &q->flight_tail, job_id);
    if (item) {
        q->n_flight--;
    } else {
        item = local__unlink(&q->head, &q->tail, job_id);
        if (item) q->n_waiting--;
    }
    if (item) {
        free(item);
        rc = 0;
    }
    local__requeue_expired(q, nt_mono_ns());
out:
    pthread_mutex_unlock(&lb->mu);
    return rc;
}

static size_t local__queue_depth(nt_bus *b, const char *queue)
{
    struct local_bus *lb = local__of(b);
    size_t depth = 0;
    pthread_mutex_lock(&lb->mu);
    struct local_queue *q = local__queue(&lb->queues, queue, false);
    if (q) depth = q->n_waiting + q->n_flight;
    pthread_mutex_unlock(&lb->mu);
    return depth;
}

/* ---- request / reply ------------------------------------------------------ */

static void local__correlation_id(const struct local_bus *lb, uint64_t id, char *out,
                                  size_t out_len)
{
    snprintf(out, out_len, "%016" PRIx64 "-%" PRIu64, lb->token, id);
}

static int local__request(nt_bus *b, const char *service, const void *payload, size_t len,
                          int timeout_ms, char **reply, size_t *reply_len)
{
    struct local_bus *lb = local__of(b);
    struct local_waiter waiter = {0};
    if (local__cond_init(&waiter.cond)) return NT_BUS_ENOMEM;
    struct local_item *item = local__item_new(payload, len);
    if (!item) {
        pthread_cond_destroy(&waiter.cond);
        return NT_BUS_ENOMEM;
    }
    uint64_t deadline = local__deadline(timeout_ms);
    int rc;

    pthread_mutex_lock(&lb->mu);
    if (lb->closed) {
        rc = NT_BUS_ECLOSED;
        goto fail;
    }
    struct local_queue *q = local__queue(&lb->services, service, true);
    if (!q) {
        rc = NT_BUS_ENOMEM;
        goto fail;
    }
    local__drop_stale_calls(q, nt_mono_ns());
    if (q->n_waiting >= LOCAL_QUEUE_MAX) {
        rc = NT_BUS_EUNAVAILABLE;
        goto fail;
    }
    item->id = ++lb->next_id;
    item->deadline_ns = deadline;
    local__correlation_id(lb, item->id, waiter.correlation_id, sizeof waiter.correlation_id);
    uint64_t call_id = item->id;
    local__queue_append(q, item);
    item = NULL;
    pthread_cond_signal(&q->cond);
    waiter.next = lb->waiters;
    lb->waiters = &waiter;

    local__enter(lb);
    while (!waiter.done && !lb->closed && nt_mono_ns() < deadline)
        local__wait_until(&waiter.cond, &lb->mu, deadline);
    local__leave(lb);

    for (struct local_waiter **w = &lb->waiters; *w; w = &(*w)->next) {
        if (*w == &waiter) {
            *w = waiter.next;
            break;
        }
    }
    if (waiter.done) {
        *reply = waiter.reply;
        if (reply_len) *reply_len = waiter.reply_len;
        rc = 0;
    } else {
        /* Nobody will wait for this call: take it back if no server has. */
        struct local_item *unserved = local__unlink(&q->head, &q->tail, call_id);
        if (unserved) {
            q->n_waiting--;
            free(unserved);
        }
        rc = lb->closed ? NT_BUS_ECLOSED : NT_BUS_ETIMEDOUT;
    }
fail:
    pthread_mutex_unlock(&lb->mu);
    free(item);
    pthread_cond_destroy(&waiter.cond);
    return rc;
}

static int local__serve(nt_bus *b, const char *service, int timeout_ms, nt_bus_call *call)
{
    struct local_bus *lb = local__of(b);
    pthread_mutex_lock(&lb->mu);
    if (lb->closed) {
        pthread_mutex_unlock(&lb->mu);
        return NT_BUS_ECLOSED;
    }
    struct local_queue *q = local__queue(&lb->services, service, true);
    if (!q) {
        pthread_mutex_unlock(&lb->mu);
        return NT_BUS_ENOMEM;
    }
    struct local_item *item;
    int rc = local__wait_item(lb, q, timeout_ms, false, &item);
    if (rc == 0) {
        call->payload = local__strndup(item->payload, item->len);
        if (!call->payload) {
            local__queue_push_front(q, item);
            rc = NT_BUS_ENOMEM;
        } else {
            call->len = item->len;
            local__correlation_id(lb, item->id, call->correlation_id, sizeof call->correlation_id);
            memcpy(call->reply_to, lb->reply_to, sizeof call->reply_to);
            free(item);
        }
    }
    pthread_mutex_unlock(&lb->mu);
    return rc;
}

static int local__reply(nt_bus *b, const nt_bus_call *call, const void *payload, size_t len)
{
    struct local_bus *lb = local__of(b);
    int rc = 0;
    pthread_mutex_lock(&lb->mu);
    if (lb->closed) {
        rc = NT_BUS_ECLOSED;
        goto out;
    }
    struct local_waiter *w = lb->waiters;
    while (w && (w->done || strcmp(w->correlation_id, call->correlation_id) != 0))
        w = w->next;
    if (!w) /* the caller gave up: the reply is dropped, nothing was copied */
        goto out;
    w->reply = local__strndup(payload, len);
    if (!w->reply) {
        rc = NT_BUS_ENOMEM;
        goto out;
    }
    w->reply_len = len;
    w->done = true;
    pthread_cond_signal(&w->cond);
out:
    pthread_mutex_unlock(&lb->mu);
    return rc;
}

/* ---- leader lock ---------------------------------------------------------- */

static bool local__leader(nt_bus *b, const char *name, int ttl_ms)
{
    struct local_bus *lb = local__of(b);
    if (ttl_ms < 1) ttl_ms = 1;
    uint64_t now = nt_mono_ns();
    bool held = false;
    pthread_mutex_lock(&leader_mu);
    struct local_leader *l = leaders;
    while (l && strcmp(l->name, name) != 0)
        l = l->next;
    if (!l) {
        size_t name_len = strlen(name);
        l = malloc(sizeof *l + name_len + 1);
        if (!l) goto out;
        memcpy(l->name, name, name_len + 1);
        l->next = leaders;
        leaders = l;
    } else if (l->holder != lb->token && l->expiry_ns > now) {
        goto out;
    }
    l->holder = lb->token;
    l->expiry_ns = now + (uint64_t)ttl_ms * 1000000u;
    held = true;
out:
    pthread_mutex_unlock(&leader_mu);
    return held;
}

/* A closing bus steps down at once instead of leaving its locks to expire. */
static void local__leader_release_all(uint64_t token)
{
    pthread_mutex_lock(&leader_mu);
    struct local_leader **link = &leaders;
    while (*link) {
        struct local_leader *l = *link;
        if (l->holder == token) {
            *link = l->next;
            free(l);
        } else {
            link = &l->next;
        }
    }
    pthread_mutex_unlock(&leader_mu);
}

/* ---- open / close --------------------------------------------------------- */

static uint64_t local__random_token(void)
{
    uint64_t token = 0;
    if (getrandom(&token, sizeof token, GRND_NONBLOCK) != (ssize_t)sizeof token)
        token = nt_mono_ns() ^ ((uint64_t)getpid() << 32);
    return token ? token : 1;
}

static void local__async_closed(uv_handle_t *handle)
{
    free(handle);
}

static nt_bus *local__open(const char *url, uv_loop_t *loop, char *err, size_t err_len)
{
    struct local_bus *lb = calloc(1, sizeof *lb);
    if (!lb) goto fail_alloc;
    lb->base.ops = &nt_bus_local_ops;
    lb->base.loop = loop;
    lb->loop_thread = uv_thread_self();
    lb->token = local__random_token();
    snprintf(lb->reply_to, sizeof lb->reply_to, "local:%016" PRIx64, lb->token);

    if (nt_conn_counts_init(&lb->reg) != 0) goto fail_reg;
    if (pthread_mutex_init(&lb->mu, NULL)) goto fail_mu;
    if (local__cond_init(&lb->idle)) goto fail_idle;
    if (pthread_rwlock_init(&lb->reg_lock, NULL)) goto fail_rwlock;
    if (pthread_mutex_init(&lb->dq_mu, NULL)) goto fail_dq;
    lb->dq.max_bytes = LOCAL_DELIVERY_QUEUE_MAX;
    lb->async = malloc(sizeof *lb->async);
    if (!lb->async) goto fail_async;
    if (uv_async_init(loop, lb->async, local__drain)) goto fail_async_init;
    lb->async->data = lb;
    /* The bus alone does not keep the loop alive; the server's listeners
     * and connections do. */
    uv_unref((uv_handle_t *)lb->async);
    return &lb->base;

fail_async_init:
    free(lb->async);
fail_async:
    pthread_mutex_destroy(&lb->dq_mu);
fail_dq:
    pthread_rwlock_destroy(&lb->reg_lock);
fail_rwlock:
    pthread_cond_destroy(&lb->idle);
fail_idle:
    pthread_mutex_destroy(&lb->mu);
fail_mu:
    nt_conn_counts_free(&lb->reg);
fail_reg:
    free(lb);
fail_alloc:
    snprintf(err, err_len, "bus: cannot set up the local back end");
    return NULL;
}

static void local__free_items(struct local_item *it)
{
    while (it) {
        struct local_item *next = it->next;
        free(it);
        it = next;
    }
}

static void local__free_queues(struct local_queue *q)
{
    while (q) {
        struct local_queue *next = q->next;
        local__free_items(q->head);
        local__free_items(q->flight_head);
        pthread_cond_destroy(&q->cond);
        free(q);
        q = next;
    }
}

static void local__close(nt_bus *b)
{
    struct local_bus *lb = local__of(b);

    pthread_mutex_lock(&lb->mu);
    lb->closed = true;
    for (struct local_queue *q = lb->queues; q; q = q->next)
        pthread_cond_broadcast(&q->cond);
    for (struct local_queue *q = lb->services; q; q = q->next)
        pthread_cond_broadcast(&q->cond);
    for (struct local_waiter *w = lb->waiters; w; w = w->next)
        pthread_cond_signal(&w->cond);
    /* Blocked threads still touch the bus while they wake up. */
    while (lb->blocked > 0)
        pthread_cond_wait(&lb->idle, &lb->mu);
    pthread_mutex_unlock(&lb->mu);

    /* The handle's memory goes in its close callback, on a later loop turn,
     * so closing inside a loop callback is safe. */
    lb->async->data = NULL;
    uv_close((uv_handle_t *)lb->async, local__async_closed);

    nt_inbox_free_chain(nt_inbox_take(&lb->dq));
    local__leader_release_all(lb->token);
    local__free_queues(lb->queues);
    local__free_queues(lb->services);
    free(lb->recipients);
    nt_conn_counts_free(&lb->reg);
    pthread_mutex_destroy(&lb->dq_mu);
    pthread_rwlock_destroy(&lb->reg_lock);
    pthread_cond_destroy(&lb->idle);
    pthread_mutex_destroy(&lb->mu);
    free(lb);
}

static int local__ping(nt_bus *b)
{
    struct local_bus *lb = local__of(b);
    pthread_mutex_lock(&lb->mu);
    bool closed = lb->closed;
    pthread_mutex_unlock(&lb->mu);
    return closed ? NT_BUS_EUNAVAILABLE : 0;
}

const nt_bus_ops nt_bus_local_ops = {
    .name = "local",
    .open = local__open,
    .close = local__close,
    .ping = local__ping,
    .deliver = local__deliver,
    .conn_up = local__conn_up,
    .conn_down = local__conn_down,
    .registry_flush = local__registry_flush,
    .online = local__online,
    .queue_push = local__queue_push,
    .queue_pop = local__queue_pop,
    .queue_ack = local__queue_ack,
    .queue_depth = local__queue_depth,
    .request = local__request,
    .serve = local__serve,
    .reply = local__reply,
    .leader = local__leader,
};
