/*
 * The behaviour cases test_bus.c (in-process back end) and test_bus_redis.c
 * (Redis back end) both run against bus.h: work queue redelivery after the
 * visibility timeout, request/reply between threads, request timeouts and
 * late replies, leader locks, and close waking blocked callers. Each case
 * takes the second bus (or its URL) it needs, so the local test passes the
 * same bus or "local" and the Redis test passes its node "b"; what only one
 * back end can check (Redis keys, a push waking a popper at once) stays in
 * that test, around these calls.
 *
 * The including test owns `loop` and `bus` (declared here) and opens `bus`
 * before running any case. Everything is static: each test is its own
 * executable.
 */
#ifndef NT_TEST_BUS_CASES_H
#define NT_TEST_BUS_CASES_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/bus.h"
#include "check.h"
#include "common/clock.h"

static uv_loop_t loop;
static nt_bus *bus;

static inline int64_t elapsed_ms(uint64_t since_ns)
{
    return (int64_t)((nt_mono_ns() - since_ns) / 1000000u);
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- work queue redelivery ------------------------------------------------ */

/* One pop (and ack, if asked) of queue "redo" on p->bus, timed. */
struct popper {
    nt_bus *bus;
    int timeout_ms;
    int visibility_ms;
    bool ack;
    int rc;
    nt_bus_job job;
    int64_t waited_ms;
};

static inline void *popper_thread(void *arg)
{
    struct popper *p = arg;
    uint64_t start = nt_mono_ns();
    p->rc = nt_bus_queue_pop(p->bus, "redo", p->timeout_ms, p->visibility_ms, &p->job);
    p->waited_ms = elapsed_ms(start);
    if (p->rc == 0 && p->ack) p->rc = nt_bus_queue_ack(p->bus, "redo", p->job.id);
    return NULL;
}

/* A job taken on `bus` and never acknowledged comes back to a worker on
 * `worker2` once its visibility timeout runs out; an expired job goes back
 * in front of newer ones. Leaves "second" queued on "redo". */
static inline void queue_redelivery_cases(nt_bus *worker2)
{
    CHECK_EQ_INT(nt_bus_queue_push(bus, "redo", "work", 4), 0);

    /* A worker takes the job and "dies" without acknowledging it. */
    struct popper dead = {.bus = bus, .timeout_ms = 1000, .visibility_ms = 300, .ack = false};
    pthread_t t;
    pthread_create(&t, NULL, popper_thread, &dead);
    pthread_join(t, NULL);
    CHECK_EQ_INT(dead.rc, 0);
    CHECK_STR_EQ(dead.job.payload, "work");

    nt_bus_job hidden;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "redo", 0, 1000, &hidden), NT_BUS_ETIMEDOUT);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "redo"), 1);

    /* Another worker blocks with nothing waiting and gets it back once the
     * visibility timeout runs out. */
    struct popper live = {.bus = worker2, .timeout_ms = 5000, .visibility_ms = 10000, .ack = true};
    pthread_create(&t, NULL, popper_thread, &live);
    pthread_join(t, NULL);
    CHECK_EQ_INT(live.rc, 0);
    CHECK_EQ_INT(live.job.id, dead.job.id);
    CHECK_STR_EQ(live.job.payload, "work");
    CHECK(live.waited_ms >= 100);
    CHECK(live.waited_ms < 4000);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "redo"), 0);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "redo", dead.job.id), -ENOENT);
    nt_bus_job_free(&dead.job);
    nt_bus_job_free(&live.job);

    /* An expired job goes back in front of newer ones. */
    CHECK_EQ_INT(nt_bus_queue_push(bus, "redo", "first", 5), 0);
    nt_bus_job first, again;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "redo", 0, 20, &first), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "redo", "second", 6), 0);
    sleep_ms(40);
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "redo", 0, 10000, &again), 0);
    CHECK_STR_EQ(again.payload, "first");
    CHECK_EQ_INT(again.id, first.id);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "redo", again.id), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "redo"), 1);
    nt_bus_job_free(&first);
    nt_bus_job_free(&again);
}

/* ---- request / reply ------------------------------------------------------ */

#define CLIENTS 2
#define CALLS_PER_CLIENT 100

/* Serves to_serve calls of `service` on s->bus, answering "re:" + payload. */
struct server {
    nt_bus *bus;
    const char *service;
    int to_serve;
    int delay_ms;
    int served;
    int bad_calls;
    int reply_rc;
};

static inline void *server_thread(void *arg)
{
    struct server *s = arg;
    while (s->served < s->to_serve) {
        nt_bus_call call;
        if (nt_bus_serve(s->bus, s->service, 5000, &call) != 0) break;
        if (!call.payload || call.correlation_id[0] == '\0' || call.reply_to[0] == '\0' ||
            call.payload[call.len] != '\0')
            s->bad_calls++;
        if (s->delay_ms) sleep_ms(s->delay_ms);
        char reply[64];
        int len = snprintf(reply, sizeof reply, "re:%s", call.payload ? call.payload : "");
        int rc = nt_bus_reply(s->bus, &call, reply, (size_t)len);
        if (rc != 0) s->reply_rc = rc;
        nt_bus_call_free(&call);
        s->served++;
    }
    return NULL;
}

static atomic_int client_errors;

/* CALLS_PER_CLIENT echo requests on `bus`, counting wrong answers. */
static inline void *client_thread(void *arg)
{
    int k = (int)(intptr_t)arg;
    for (int i = 0; i < CALLS_PER_CLIENT; i++) {
        char ask[32], want[40];
        int len = snprintf(ask, sizeof ask, "c%d-%d", k, i);
        snprintf(want, sizeof want, "re:%s", ask);
        char *reply = NULL;
        size_t reply_len = 0;
        int rc = nt_bus_request(bus, "echo", ask, (size_t)len, 5000, &reply, &reply_len);
        if (rc != 0 || !reply || strcmp(reply, want) != 0 || reply_len != strlen(want))
            atomic_fetch_add(&client_errors, 1);
        free(reply);
    }
    return NULL;
}

/* CLIENTS threads calling on `bus`, one server thread on server_bus. */
static inline void request_reply_case(nt_bus *server_bus)
{
    struct server s = {
        .bus = server_bus, .service = "echo", .to_serve = CLIENTS * CALLS_PER_CLIENT};
    pthread_t server, clients[CLIENTS];
    pthread_create(&server, NULL, server_thread, &s);
    for (int k = 0; k < CLIENTS; k++)
        pthread_create(&clients[k], NULL, client_thread, (void *)(intptr_t)k);
    for (int k = 0; k < CLIENTS; k++)
        pthread_join(clients[k], NULL);
    pthread_join(server, NULL);
    CHECK_EQ_INT(atomic_load(&client_errors), 0);
    CHECK_EQ_INT(s.served, CLIENTS * CALLS_PER_CLIENT);
    CHECK_EQ_INT(s.bad_calls, 0);
    CHECK_EQ_INT(s.reply_rc, 0);
}

/* A request nobody serves times out with no reply, and the abandoned call
 * was withdrawn: a server arriving late on server_bus sees nothing. */
static inline void request_timeout_case(nt_bus *server_bus)
{
    char *reply = (char *)"untouched";
    size_t reply_len = 7;
    uint64_t start = nt_mono_ns();
    CHECK_EQ_INT(nt_bus_request(bus, "nobody", "x", 1, 50, &reply, &reply_len), NT_BUS_ETIMEDOUT);
    CHECK(elapsed_ms(start) >= 45);
    CHECK(reply == NULL);
    CHECK_EQ_INT(reply_len, 0);

    nt_bus_call call;
    CHECK_EQ_INT(nt_bus_serve(server_bus, "nobody", 0, &call), NT_BUS_ETIMEDOUT);
    CHECK(call.payload == NULL);
}

/* A reply from server_bus after the caller gave up is dropped, not an
 * error (LSan checks the leak). */
static inline void late_reply_case(nt_bus *server_bus)
{
    struct server s = {.bus = server_bus, .service = "slow", .to_serve = 1, .delay_ms = 200};
    pthread_t server;
    pthread_create(&server, NULL, server_thread, &s);
    char *reply = NULL;
    CHECK_EQ_INT(nt_bus_request(bus, "slow", "late", 4, 50, &reply, NULL), NT_BUS_ETIMEDOUT);
    CHECK(reply == NULL);
    pthread_join(server, NULL);
    CHECK_EQ_INT(s.served, 1);
    CHECK_EQ_INT(s.reply_rc, 0);
}

/* ---- leader lock ---------------------------------------------------------- */

/* Leader locks between `bus` and a bus opened on other_url: held, renewed,
 * lapsed, taken over, and given up at once on close. */
static inline void leader_cases(const char *other_url)
{
    char err[160];
    nt_bus *other = nt_bus_open(other_url, &loop, err, sizeof err);
    CHECK(other != NULL);
    if (!other) return;
    CHECK(nt_bus_leader(bus, "cron", 200));
    CHECK(!nt_bus_leader(other, "cron", 200));
    CHECK(nt_bus_leader(bus, "cron", 200)); /* renew */
    CHECK(nt_bus_leader(other, "backup", 200));
    sleep_ms(120);
    CHECK(nt_bus_leader(bus, "cron", 200)); /* renewed before expiry: still ours */
    CHECK(!nt_bus_leader(other, "cron", 200));
    sleep_ms(300); /* the holder stopped renewing */
    CHECK(nt_bus_leader(other, "cron", 200));
    CHECK(!nt_bus_leader(bus, "cron", 200));
    CHECK(nt_bus_leader(other, "backup", 200)); /* lapsed, but nobody took it */
    CHECK(!nt_bus_leader(bus, "backup", 200));
    nt_bus_close(other); /* steps down at once */
    CHECK(nt_bus_leader(bus, "cron", 200));
    CHECK(nt_bus_leader(bus, "backup", 200));
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- close wakes blocked callers ----------------------------------------- */

enum { BLOCK_POP, BLOCK_SERVE, BLOCK_REQUEST };

struct blocked {
    int kind;
    int rc;
};

static nt_bus *closing_bus;
static atomic_int blocked_started;

static inline void *blocked_thread(void *arg)
{
    struct blocked *b = arg;
    atomic_fetch_add(&blocked_started, 1);
    if (b->kind == BLOCK_POP) {
        nt_bus_job job;
        b->rc = nt_bus_queue_pop(closing_bus, "q", -1, 1000, &job);
        if (b->rc == 0) nt_bus_job_free(&job);
    } else if (b->kind == BLOCK_SERVE) {
        nt_bus_call call;
        b->rc = nt_bus_serve(closing_bus, "svc", -1, &call);
        if (b->rc == 0) nt_bus_call_free(&call);
    } else {
        char *reply = NULL;
        b->rc = nt_bus_request(closing_bus, "unserved", "hi", 2, -1, &reply, NULL);
        free(reply);
    }
    return NULL;
}

/* Blocks three pops, a serve and a request on closing_bus (opened by the
 * caller), lets them settle for settle_ms, closes it and checks each woke
 * with NT_BUS_ECLOSED. Returns how long nt_bus_close took, in ms. */
static inline int64_t close_wakes_blocked(int settle_ms)
{
    struct blocked args[5] = {
        {BLOCK_POP, 1}, {BLOCK_POP, 1}, {BLOCK_POP, 1}, {BLOCK_SERVE, 1}, {BLOCK_REQUEST, 1},
    };
    pthread_t threads[5];
    for (int i = 0; i < 5; i++)
        pthread_create(&threads[i], NULL, blocked_thread, &args[i]);
    while (atomic_load(&blocked_started) < 5)
        sleep_ms(1);
    sleep_ms(settle_ms); /* let them block */
    uint64_t start = nt_mono_ns();
    nt_bus_close(closing_bus);
    int64_t took = elapsed_ms(start);
    for (int i = 0; i < 5; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(args[i].rc, NT_BUS_ECLOSED);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    return took;
}

#endif
