/*
 * Unit tests of the bus (bus.h) over the in-process back end, with a real
 * libuv loop on the main thread: deliveries made on the loop thread and from
 * four other threads, presence, work queues with redelivery after the
 * visibility timeout, request/reply between threads with timeouts and late
 * replies, leader locks, and close waking blocked callers. Run under ASan
 * and LSan, so leaks fail the test too.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus_cases.h"

#define SENDERS 4
#define FRAMES_PER_SENDER 2000
#define ONLINE_BASE 1000
#define OFFLINE_BASE 2000

/* ---- what the delivery handler saw (loop thread only) -------------------- */

static struct {
    uv_thread_t loop_thread;
    int calls;
    int wrong_thread;
    char last_frame[64];
    int64_t last_ids[8];
    size_t last_n;
    nt_shared *kept;
    int nested_ok;
    /* frames from the sender threads */
    int threaded;
    int next_seq[SENDERS];
    int out_of_order;
    int bad_recipients;
    int offline_seen;
} rx;

static void on_delivery(void *arg, nt_shared *frame, const int64_t *ids, size_t n)
{
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &rx.loop_thread)) rx.wrong_thread++;
    rx.calls++;
    size_t len = frame->len < sizeof rx.last_frame - 1 ? frame->len : sizeof rx.last_frame - 1;
    memcpy(rx.last_frame, frame->data, len);
    rx.last_frame[len] = '\0';
    rx.last_n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        rx.last_ids[i] = ids[i];

    int k, seq;
    if (sscanf(rx.last_frame, "T%d:%d", &k, &seq) == 2 && k >= 0 && k < SENDERS) {
        rx.threaded++;
        if (seq != rx.next_seq[k]) rx.out_of_order++;
        rx.next_seq[k] = seq + 1;
        if (n != 1 || ids[0] != ONLINE_BASE + k) rx.bad_recipients++;
    } else if (rx.last_frame[0] == 'X') {
        rx.offline_seen++;
    } else if (strcmp(rx.last_frame, "keep") == 0) {
        rx.kept = nt_shared_ref(frame);
    } else if (strcmp(rx.last_frame, "nested") == 0) {
        int64_t inner_ids[] = {2};
        nt_bus_deliver(arg, inner_ids, 1, "inner", 5);
        /* The inner delivery must not have reused our recipients array. */
        rx.nested_ok = n == 2 && ids[0] == 1 && ids[1] == 2;
    }
}

/* ---- open ----------------------------------------------------------------- */

static void test_open(void)
{
    char err[128] = "";
    /* A Redis bus that cannot be reached at start fails to open, with a
     * message. Port 1 so that a redis-server on this machine's 6379 does not
     * turn the check into a real connection. */
    CHECK(nt_bus_open("redis://127.0.0.1:1", &loop, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
    err[0] = '\0';
    CHECK(nt_bus_open("localhost", &loop, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');

    nt_bus *b = nt_bus_open(NULL, &loop, err, sizeof err);
    CHECK(b != NULL);
    CHECK_EQ_INT(nt_bus_ping(b), 0);
    nt_bus_close(b);

    bus = nt_bus_open("local", &loop, err, sizeof err);
    CHECK(bus != NULL);
    if (!bus) {
        fprintf(stderr, "cannot open the bus: %s\n", err);
        exit(1);
    }
}

/* ---- presence ------------------------------------------------------------- */

#define MANY_USERS 100000

static int64_t many_id(int i)
{
    /* Spread out and some negative, so hashing and probing get exercised. */
    return (i % 3 == 0 ? -1 : 1) * ((int64_t)i * 7919 + 5);
}

static atomic_int online_misses;

static void *check_online_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < MANY_USERS; i++) {
        if (!nt_bus_online(bus, many_id(i))) atomic_fetch_add(&online_misses, 1);
        if (nt_bus_online(bus, many_id(i) + 1)) /* never connected */
            atomic_fetch_add(&online_misses, 1);
    }
    return NULL;
}

/* What the presence handler was told (loop thread). */
static struct {
    int online, offline, wrong_thread;
    int64_t last_user;
    bool last_online;
} seen;

static void on_presence(void *arg, int64_t user_id, bool online)
{
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &rx.loop_thread)) seen.wrong_thread++;
    if (online)
        seen.online++;
    else
        seen.offline++;
    seen.last_user = user_id;
    seen.last_online = online;
}

static void on_flushed(void *arg)
{
    ++*(int *)arg;
}

static void test_presence(void)
{
    nt_bus_set_presence_handler(bus, on_presence, NULL);
    CHECK(!nt_bus_online(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_up(bus, 42), 0);
    /* In one process the transition is known at once. */
    CHECK_EQ_INT(seen.online, 1);
    CHECK(seen.last_user == 42 && seen.last_online);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 42), 0);
    CHECK_EQ_INT(seen.online, 1); /* not the first connection */
    CHECK(nt_bus_online(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0);
    CHECK_EQ_INT(seen.offline, 0);
    CHECK(nt_bus_online(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0);
    CHECK_EQ_INT(seen.offline, 1);
    CHECK(seen.last_user == 42 && !seen.last_online);
    CHECK(!nt_bus_online(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0); /* unbalanced: ignored */
    CHECK_EQ_INT(seen.offline, 1);
    CHECK(!nt_bus_online(bus, 42));
    /* Nothing is ever pending in one process: a flush calls back at once. */
    int flushed = 0;
    CHECK_EQ_INT(nt_bus_registry_flush(bus, on_flushed, &flushed), 0);
    CHECK_EQ_INT(flushed, 1);

    seen.online = seen.offline = 0;
    for (int i = 0; i < MANY_USERS; i++)
        CHECK_EQ_INT(nt_bus_conn_up(bus, many_id(i)), 0);
    CHECK_EQ_INT(seen.online, MANY_USERS);
    for (int i = 0; i < MANY_USERS; i += 2) /* a second connection */
        nt_bus_conn_up(bus, many_id(i));
    CHECK_EQ_INT(seen.online, MANY_USERS);

    pthread_t readers[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&readers[t], NULL, check_online_thread, NULL);
    /* Writers on the loop thread while readers run elsewhere. */
    for (int i = 0; i < 20000; i++) { /* ids no other user here has */
        nt_bus_conn_up(bus, INT64_C(9000000000) + i);
        nt_bus_conn_down(bus, INT64_C(9000000000) + i);
    }
    for (int t = 0; t < 2; t++)
        pthread_join(readers[t], NULL);
    CHECK_EQ_INT(atomic_load(&online_misses), 0);
    CHECK_EQ_INT(seen.online, MANY_USERS + 20000);
    CHECK_EQ_INT(seen.offline, 20000);

    /* Remove every other user: the rest must still be found. */
    seen.offline = 0;
    for (int i = 1; i < MANY_USERS; i += 2)
        nt_bus_conn_down(bus, many_id(i));
    CHECK_EQ_INT(seen.offline, MANY_USERS / 2);
    int wrong = 0;
    for (int i = 0; i < MANY_USERS; i++)
        wrong += nt_bus_online(bus, many_id(i)) != (i % 2 == 0);
    CHECK_EQ_INT(wrong, 0);
    seen.offline = 0;
    for (int i = 0; i < MANY_USERS; i += 2) {
        nt_bus_conn_down(bus, many_id(i));
        nt_bus_conn_down(bus, many_id(i));
    }
    CHECK_EQ_INT(seen.offline, MANY_USERS / 2);
    wrong = 0;
    for (int i = 0; i < MANY_USERS; i++)
        wrong += nt_bus_online(bus, many_id(i));
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(seen.wrong_thread, 0);
    nt_bus_set_presence_handler(bus, NULL, NULL);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 43), 0); /* no handler: nothing told */
    CHECK_EQ_INT(nt_bus_conn_down(bus, 43), 0);
}

/* ---- delivery on the loop thread ----------------------------------------- */

static void loop_thread_deliveries(uv_timer_t *timer)
{
    (void)timer;
    int64_t both[] = {1, 2, 3};
    CHECK_EQ_INT(nt_bus_deliver(bus, both, 3, "hello", 5), 0);
    CHECK_EQ_INT(rx.calls, 1); /* handed over at once */
    CHECK_STR_EQ(rx.last_frame, "hello");
    CHECK_EQ_INT(rx.last_n, 2);
    CHECK_EQ_INT(rx.last_ids[0], 1);
    CHECK_EQ_INT(rx.last_ids[1], 2);

    int64_t offline[] = {3, 4};
    CHECK_EQ_INT(nt_bus_deliver(bus, offline, 2, "nobody", 6), 0);
    CHECK_EQ_INT(rx.calls, 1);

    int64_t one[] = {1};
    CHECK_EQ_INT(nt_bus_deliver(bus, one, 1, "keep", 4), 0);
    CHECK(rx.kept != NULL);
    if (rx.kept) {
        CHECK_EQ_INT(rx.kept->refs, 1); /* the bus dropped its own */
        CHECK_EQ_INT(rx.kept->len, 4);
        CHECK(memcmp(rx.kept->data, "keep", 4) == 0);
        nt_shared_unref(rx.kept);
        rx.kept = NULL;
    }

    int64_t pair[] = {1, 2};
    int before = rx.calls;
    CHECK_EQ_INT(nt_bus_deliver(bus, pair, 2, "nested", 6), 0);
    CHECK_EQ_INT(rx.calls, before + 2);
    CHECK(rx.nested_ok);
}

static void test_loop_thread_delivery(void)
{
    nt_bus_set_delivery_handler(bus, on_delivery, bus);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 1), 0);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 2), 0);
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, loop_thread_deliveries, 0, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- delivery from other threads ------------------------------------------ */

static atomic_int send_errors;

static void *sender_thread(void *arg)
{
    int k = (int)(intptr_t)arg;
    int64_t ids[] = {ONLINE_BASE + k, OFFLINE_BASE + k};
    int64_t offline_only[] = {OFFLINE_BASE + k};
    char frame[32];
    for (int i = 0; i < FRAMES_PER_SENDER; i++) {
        int len = snprintf(frame, sizeof frame, "T%d:%d", k, i);
        if (nt_bus_deliver(bus, ids, 2, frame, (size_t)len) != 0) atomic_fetch_add(&send_errors, 1);
        if (i % 10 == 0 && nt_bus_deliver(bus, offline_only, 1, "X", 1) != 0)
            atomic_fetch_add(&send_errors, 1);
        if (i % 500 == 0) sleep_ms(1); /* let the loop drain part way through */
    }
    return NULL;
}

static uint64_t wait_started;

static void wait_for_frames(uv_timer_t *timer)
{
    if (rx.threaded >= SENDERS * FRAMES_PER_SENDER || elapsed_ms(wait_started) > 20000)
        uv_timer_stop(timer);
}

static void test_threaded_delivery(void)
{
    for (int k = 0; k < SENDERS; k++)
        CHECK_EQ_INT(nt_bus_conn_up(bus, ONLINE_BASE + k), 0);
    pthread_t senders[SENDERS];
    for (int k = 0; k < SENDERS; k++)
        pthread_create(&senders[k], NULL, sender_thread, (void *)(intptr_t)k);

    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    wait_started = nt_mono_ns();
    uv_timer_start(&timer, wait_for_frames, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int k = 0; k < SENDERS; k++)
        pthread_join(senders[k], NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);

    CHECK_EQ_INT(atomic_load(&send_errors), 0);
    CHECK_EQ_INT(rx.threaded, SENDERS * FRAMES_PER_SENDER);
    CHECK_EQ_INT(rx.out_of_order, 0);
    CHECK_EQ_INT(rx.bad_recipients, 0);
    CHECK_EQ_INT(rx.offline_seen, 0);
    CHECK_EQ_INT(rx.wrong_thread, 0);
    for (int k = 0; k < SENDERS; k++)
        CHECK_EQ_INT(rx.next_seq[k], FRAMES_PER_SENDER);
}

/* ---- work queues ---------------------------------------------------------- */

static void test_queue_basics(void)
{
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "a", 1), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "bb", 2), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "ccc", 3), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "other", "z", 1), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 3);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "other"), 1);

    nt_bus_job a, b, c;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 0, 10000, &a), 0);
    CHECK_STR_EQ(a.payload, "a");
    CHECK_EQ_INT(a.len, 1);
    CHECK(a.id != 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 3); /* in flight counts */
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", a.id), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 2);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", a.id), -ENOENT);

    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 0, 10000, &b), 0);
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 0, 10000, &c), 0);
    CHECK_STR_EQ(b.payload, "bb");
    CHECK_STR_EQ(c.payload, "ccc");
    CHECK(b.id != c.id);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", c.id), 0);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", b.id), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 0);
    nt_bus_job_free(&a);
    nt_bus_job_free(&b);
    nt_bus_job_free(&c);
    CHECK(a.payload == NULL);

    nt_bus_job none;
    uint64_t start = nt_mono_ns();
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 50, 10000, &none), NT_BUS_ETIMEDOUT);
    CHECK(elapsed_ms(start) >= 45);
    CHECK(none.payload == NULL);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "nowhere", 1), -ENOENT);

    /* "other" is left with a job so close has something to free. */
}

static void test_queue_redelivery(void)
{
    queue_redelivery_cases(bus);
    /* "second" stays queued: close must free it. */
}

/* ---- close wakes blocked callers ----------------------------------------- */

static void test_close_wakes(void)
{
    char err[128];
    closing_bus = nt_bus_open("local", &loop, err, sizeof err);
    CHECK(closing_bus != NULL);
    if (!closing_bus) return;
    CHECK_EQ_INT(nt_bus_queue_push(closing_bus, "left", "over", 4), 0);
    close_wakes_blocked(100);
}

int main(void)
{
    alarm(120); /* a hang (a caller close failed to wake) fails the test */
    if (uv_loop_init(&loop) != 0) return 1;
    rx.loop_thread = uv_thread_self();

    test_open();
    test_presence();
    test_loop_thread_delivery();
    test_threaded_delivery();
    test_queue_basics();
    test_queue_redelivery();
    request_reply_case(bus);
    request_timeout_case(bus);
    late_reply_case(bus);
    leader_cases("local");
    test_close_wakes();

    /* Leave deliveries queued from another thread undrained: close frees them. */
    pthread_t late;
    pthread_create(&late, NULL, sender_thread, (void *)(intptr_t)0);
    pthread_join(late, NULL);

    nt_bus_close(bus);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    return check_exit();
}
