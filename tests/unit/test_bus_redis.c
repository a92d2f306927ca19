/*
 * Unit tests of the bus (bus.h) over the Redis back end, against a real
 * redis-server this test starts on a free loopback port (own config in a
 * temp folder, daemonized with a pid file, stopped by that pid, also if the
 * test dies: reaper.h). The same behaviours as test_bus.c - presence,
 * deliveries from the loop and from other threads, work queues with
 * redelivery, request/reply with timeouts and late replies, leader locks,
 * close waking blocked callers - plus what only a cluster has: two buses as
 * two nodes (cross-node deliveries in order, presence across nodes, a dead
 * node's counts ignored and reaped), the shared match queue (a partner put
 * back waits with its own preferences), Redis frozen with SIGSTOP (registry
 * changes, flushes and presence go on without it and catch up afterwards),
 * and Redis restarted under a running bus (calls fail with
 * NT_BUS_EUNAVAILABLE, the bus reconnects and rewrites its registry by
 * itself). Exits 77 (skipped) if redis-server is not installed.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include <hiredis/hiredis.h>

#include "bus/bus_backend.h"
#include "bus_cases.h"
#include "reaper.h"

#define SENDERS 4
#define FRAMES_PER_SENDER 500
#define CROSS_FRAMES 1000
#define ONLINE_BASE 1000
#define OFFLINE_BASE 2000
#define MANY_USERS 2000

static nt_bus *bus2; /* node "b"; `bus` (bus_cases.h) is node "a" */
static char url_a[128], url_b[128];

static struct {
    char dir[512];
    char conf[600];
    char pidfile[600];
    int port;
} redis;

/* ---- the redis-server of this test ------------------------------------------ */

static bool have_redis_server(void)
{
    const char *path = getenv("PATH");
    char buf[1024];
    if (!path) return false;
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/redis-server", (int)n, path);
        if (access(buf, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static redisContext *raw_connect(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static pid_t redis_pid(void)
{
    FILE *f = fopen(redis.pidfile, "r");
    long pid = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* Starts redis-server with our config (it daemonizes) and waits for it.
 * The reaper stops it if the test dies without redis_stop (abort, a
 * sanitizer report, alarm). */
static int redis_start(void)
{
    pid_t child = fork();
    if (child == 0) {
        execlp("redis-server", "redis-server", redis.conf, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return -1;
    for (int i = 0; i < 200; i++) {
        redisContext *c = raw_connect();
        if (c) {
            redisFree(c);
            if (redis_pid() > 0) {
                reaper_watch(redis_pid(), SIGTERM);
                return 0;
            }
        }
        sleep_ms(10);
    }
    return -1;
}

/* Stops our redis-server by its pid and waits until it is gone. */
static void redis_stop(void)
{
    pid_t pid = redis_pid();
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++)
        sleep_ms(10);
    if (kill(pid, 0) == 0) kill(pid, SIGKILL);
    reaper_forget(pid);
    unlink(redis.pidfile);
}

static int redis_setup(void)
{
    const char *tmp = getenv("NT_TEST_TMP");
    if (!tmp || !*tmp) tmp = "/tmp";
    mkdir(tmp, 0700);
    snprintf(redis.dir, sizeof redis.dir, "%s/bus_redis.XXXXXX", tmp);
    if (!mkdtemp(redis.dir)) return -1;
    redis.port = free_port();
    snprintf(redis.conf, sizeof redis.conf, "%s/redis.conf", redis.dir);
    snprintf(redis.pidfile, sizeof redis.pidfile, "%s/redis.pid", redis.dir);
    FILE *f = fopen(redis.conf, "w");
    if (!f) return -1;
    fprintf(f,
            "bind 127.0.0.1\nport %d\ndaemonize yes\npidfile %s\nsave \"\"\nappendonly no\n"
            "dir %s\nlogfile %s/redis.log\n",
            redis.port, redis.pidfile, redis.dir, redis.dir);
    fclose(f);
    snprintf(url_a, sizeof url_a, "redis://127.0.0.1:%d?node=a", redis.port);
    snprintf(url_b, sizeof url_b, "redis://127.0.0.1:%d?node=b", redis.port);
    return redis_start();
}

static void redis_teardown(void)
{
    redis_stop();
    char path[700];
    const char *names[] = {"redis.conf", "redis.log", "redis.pid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", redis.dir, names[i]);
        unlink(path);
    }
    rmdir(redis.dir);
}

static long long raw_int(const char *cmd)
{
    redisContext *c = raw_connect();
    long long v = -1;
    if (!c) return v;
    redisReply *r = redisCommand(c, cmd);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    else if (r && r->type == REDIS_REPLY_ARRAY)
        v = (long long)r->elements;
    if (r) freeReplyObject(r);
    redisFree(c);
    return v;
}

static void raw_cmd(const char *cmd)
{
    redisContext *c = raw_connect();
    if (!c) return;
    redisReply *r = redisCommand(c, cmd);
    if (r) freeReplyObject(r);
    redisFree(c);
}

/* Runs the loop for ms milliseconds (the bus's heartbeat and reconnects
 * are loop timers). */
static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_loop_for(int ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, stop_loop, (uint64_t)ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- what the delivery handlers saw (loop thread only) ------------------- */

struct rx {
    const char *name;
    uv_thread_t loop_thread;
    int calls;
    int wrong_thread;
    char last_frame[64];
    int64_t last_ids[8];
    size_t last_n;
    nt_shared *kept;
    int nested_ok;
    int threaded;
    int next_seq[SENDERS];
    int out_of_order;
    int bad_recipients;
    int offline_seen;
    int cross;
    int cross_next;
    int cross_out_of_order;
};

static struct rx rx_a = {.name = "a"}, rx_b = {.name = "b"};

static void on_delivery(void *arg, nt_shared *frame, const int64_t *ids, size_t n)
{
    struct rx *rx = arg;
    nt_bus *self = rx == &rx_a ? bus : bus2;
    uv_thread_t me = uv_thread_self();
    if (!uv_thread_equal(&me, &rx->loop_thread)) rx->wrong_thread++;
    rx->calls++;
    size_t len = frame->len < sizeof rx->last_frame - 1 ? frame->len : sizeof rx->last_frame - 1;
    memcpy(rx->last_frame, frame->data, len);
    rx->last_frame[len] = '\0';
    rx->last_n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        rx->last_ids[i] = ids[i];

    int k, seq;
    if (sscanf(rx->last_frame, "T%d:%d", &k, &seq) == 2 && k >= 0 && k < SENDERS) {
        rx->threaded++;
        if (seq != rx->next_seq[k]) rx->out_of_order++;
        rx->next_seq[k] = seq + 1;
        if (n != 1 || ids[0] != ONLINE_BASE + k) rx->bad_recipients++;
    } else if (sscanf(rx->last_frame, "C%d", &seq) == 1) {
        rx->cross++;
        if (seq != rx->cross_next) rx->cross_out_of_order++;
        rx->cross_next = seq + 1;
    } else if (rx->last_frame[0] == 'X') {
        rx->offline_seen++;
    } else if (strcmp(rx->last_frame, "keep") == 0) {
        rx->kept = nt_shared_ref(frame);
    } else if (strcmp(rx->last_frame, "nested") == 0) {
        int64_t inner_ids[] = {2};
        nt_bus_deliver(self, inner_ids, 1, "inner", 5);
        rx->nested_ok = n == 2 && ids[0] == 1 && ids[1] == 2;
    }
}

/* ---- open ----------------------------------------------------------------- */

static void test_open(void)
{
    char err[160] = "";
    char bad[64];
    snprintf(bad, sizeof bad, "redis://127.0.0.1:%d", free_port()); /* nobody there */
    CHECK(nt_bus_open(bad, &loop, err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot reach") != NULL);
    err[0] = '\0';
    CHECK(nt_bus_open("redis://:1", &loop, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
    err[0] = '\0';
    CHECK(nt_bus_open("redis://127.0.0.1:99999", &loop, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');

    bus = nt_bus_open(url_a, &loop, err, sizeof err);
    bus2 = nt_bus_open(url_b, &loop, err, sizeof err);
    if (!bus || !bus2) {
        fprintf(stderr, "cannot open the bus: %s\n", err);
        exit(1);
    }
    nt_bus_set_delivery_handler(bus, on_delivery, &rx_a);
    nt_bus_set_delivery_handler(bus2, on_delivery, &rx_b);
    /* The subscriber and publisher connections come up on the loop. */
    for (int i = 0; i < 100 && nt_bus_ping(bus) != 0; i++)
        run_loop_for(10);
    CHECK_EQ_INT(nt_bus_ping(bus), 0);
    CHECK_EQ_INT(nt_bus_ping(bus2), 0);
    CHECK_EQ_INT(raw_int("EXISTS natter:alive:a"), 1);
}

/* ---- presence ------------------------------------------------------------- */

static int64_t many_id(int i)
{
    return (i % 3 == 0 ? -1 : 1) * ((int64_t)i * 7919 + 5);
}

static atomic_int online_misses;

static void *check_online_thread(void *arg)
{
    nt_bus *b = arg; /* the other node: every answer comes from Redis */
    for (int i = 0; i < MANY_USERS; i++) {
        if (!nt_bus_online(b, many_id(i))) atomic_fetch_add(&online_misses, 1);
        if (nt_bus_online(b, many_id(i) + 1)) atomic_fetch_add(&online_misses, 1);
    }
    return NULL;
}

/* ---- delivery on the loop thread ----------------------------------------- */

static void loop_thread_deliveries(uv_timer_t *timer)
{
    int64_t both[] = {1, 2, 3};
    CHECK_EQ_INT(nt_bus_deliver(bus, both, 3, "hello", 5), 0);
    CHECK_EQ_INT(rx_a.calls, 1); /* local recipients: at once */
    CHECK_STR_EQ(rx_a.last_frame, "hello");
    CHECK_EQ_INT(rx_a.last_n, 2);
    CHECK_EQ_INT(rx_a.last_ids[0], 1);
    CHECK_EQ_INT(rx_a.last_ids[1], 2);

    int64_t offline[] = {3, 4};
    CHECK_EQ_INT(nt_bus_deliver(bus, offline, 2, "nobody", 6), 0);
    CHECK_EQ_INT(rx_a.calls, 1);

    int64_t one[] = {1};
    CHECK_EQ_INT(nt_bus_deliver(bus, one, 1, "keep", 4), 0);
    CHECK(rx_a.kept != NULL);
    if (rx_a.kept) {
        CHECK_EQ_INT(rx_a.kept->refs, 1);
        CHECK(memcmp(rx_a.kept->data, "keep", 4) == 0);
        nt_shared_unref(rx_a.kept);
        rx_a.kept = NULL;
    }
    int64_t pair[] = {1, 2};
    int before = rx_a.calls;
    CHECK_EQ_INT(nt_bus_deliver(bus, pair, 2, "nested", 6), 0);
    CHECK_EQ_INT(rx_a.calls, before + 2);
    CHECK(rx_a.nested_ok);

    /* User 5 lives on node b: the frame goes through Redis. */
    int64_t remote[] = {5};
    for (int i = 0; i < CROSS_FRAMES; i++) {
        char frame[16];
        int len = snprintf(frame, sizeof frame, "C%d", i);
        nt_bus_deliver(bus, remote, 1, frame, (size_t)len);
    }
}

static uint64_t wait_started;
static int (*wait_done)(void);

static void wait_tick(uv_timer_t *timer)
{
    if (wait_done() || elapsed_ms(wait_started) > 20000) uv_stop(timer->loop);
}

static void run_until(int (*done)(void))
{
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    wait_started = nt_mono_ns();
    wait_done = done;
    uv_timer_start(&timer, wait_tick, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- registry flushes and presence --------------------------------------- */

/* What each node's presence handler was told, in order (loop thread). */
struct pres {
    int online, offline, wrong_thread;
    int64_t log_user[64];
    bool log_online[64];
    int nlog;
};

static struct pres pres_a, pres_b;
static uv_thread_t main_thread;

#define DECIDE_USERS 300 /* more than one batch (RB_REG_BATCH, 256) */
#define DECIDE_BASE 20000000
static int decide_told[DECIDE_USERS]; /* node a's presence calls per user */

static void on_presence(void *arg, int64_t user_id, bool online)
{
    struct pres *p = arg;
    if (p == &pres_a && user_id >= DECIDE_BASE && user_id < DECIDE_BASE + DECIDE_USERS)
        decide_told[user_id - DECIDE_BASE]++;
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &main_thread)) p->wrong_thread++;
    if (online)
        p->online++;
    else
        p->offline++;
    if (p->nlog < 64) {
        p->log_user[p->nlog] = user_id;
        p->log_online[p->nlog++] = online;
    }
}

static void pres_reset(struct pres *p)
{
    memset(p, 0, sizeof *p);
}

static int flushes_pending;

static void on_flushed(void *arg)
{
    flushes_pending--;
}

static int flushed(void)
{
    return flushes_pending == 0;
}

/* Runs the loop until every registry change made so far on node b is in
 * Redis (or given up on) and its presence calls were made. */
static void flush(nt_bus *b)
{
    flushes_pending++;
    CHECK_EQ_INT(nt_bus_registry_flush(b, on_flushed, NULL), 0);
    run_until(flushed);
    CHECK_EQ_INT(flushes_pending, 0);
    flushes_pending = 0;
}

/* nt_bus_online from another thread (on the loop thread the bus answers
 * from its own node only). */
struct online_q {
    nt_bus *bus;
    int64_t user_id;
    bool online;
};

static void *online_thread(void *arg)
{
    struct online_q *q = arg;
    q->online = nt_bus_online(q->bus, q->user_id);
    return NULL;
}

static bool online_elsewhere(nt_bus *b, int64_t user_id)
{
    struct online_q q = {.bus = b, .user_id = user_id};
    pthread_t t;
    pthread_create(&t, NULL, online_thread, &q);
    pthread_join(t, NULL);
    return q.online;
}

static int cross_done(void)
{
    return rx_b.cross >= CROSS_FRAMES;
}

static void test_presence(void)
{
    main_thread = uv_thread_self();
    nt_bus_set_presence_handler(bus, on_presence, &pres_a);
    nt_bus_set_presence_handler(bus2, on_presence, &pres_b);
    CHECK(!online_elsewhere(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_up(bus, 42), 0);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 42), 0);
    /* Counted on its own node at once; the loop thread of another node
     * does not ask Redis. */
    CHECK(nt_bus_online(bus, 42));
    CHECK(!nt_bus_online(bus2, 42));
    flush(bus);
    CHECK_EQ_INT(pres_a.online, 1);
    CHECK(pres_a.nlog == 1 && pres_a.log_user[0] == 42 && pres_a.log_online[0]);
    CHECK(online_elsewhere(bus2, 42));
    /* A second node: not the user's first connection anywhere, and the
     * first node's last one going is not the user's last. */
    CHECK_EQ_INT(nt_bus_conn_up(bus2, 42), 0);
    flush(bus2);
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0);
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0);
    flush(bus);
    CHECK_EQ_INT(pres_b.online, 0);
    CHECK_EQ_INT(pres_a.offline, 0);
    CHECK(online_elsewhere(bus, 42));
    CHECK_EQ_INT(nt_bus_conn_down(bus2, 42), 0);
    flush(bus2);
    CHECK_EQ_INT(pres_b.offline, 1);
    CHECK(!online_elsewhere(bus, 42));
    CHECK(!online_elsewhere(bus2, 42));
    CHECK_EQ_INT(nt_bus_conn_down(bus, 42), 0); /* unbalanced: ignored */
    flush(bus);
    CHECK_EQ_INT(pres_a.offline, 0);
    CHECK(!online_elsewhere(bus, 42));

    /* Quick changes of one user are told in the order they were made. */
    pres_reset(&pres_a);
    for (int i = 0; i < 4; i++) {
        nt_bus_conn_up(bus, 43);
        nt_bus_conn_down(bus, 43);
    }
    flush(bus);
    CHECK_EQ_INT(pres_a.nlog, 8);
    int misordered = 0;
    for (int i = 0; i < pres_a.nlog; i++)
        misordered += pres_a.log_user[i] != 43 || pres_a.log_online[i] != (i % 2 == 0);
    CHECK_EQ_INT(misordered, 0);

    pres_reset(&pres_a);
    for (int i = 0; i < MANY_USERS; i++)
        nt_bus_conn_up(bus, many_id(i));
    flush(bus);
    CHECK_EQ_INT(pres_a.online, MANY_USERS);
    pthread_t readers[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&readers[t], NULL, check_online_thread, bus2);
    for (int i = 0; i < 500; i++) {
        nt_bus_conn_up(bus, 5000000 + i);
        nt_bus_conn_down(bus, 5000000 + i);
    }
    for (int t = 0; t < 2; t++)
        pthread_join(readers[t], NULL);
    CHECK_EQ_INT(atomic_load(&online_misses), 0);
    for (int i = 0; i < MANY_USERS; i++)
        nt_bus_conn_down(bus, many_id(i));
    flush(bus);
    CHECK_EQ_INT(pres_a.online, MANY_USERS + 500);
    CHECK_EQ_INT(pres_a.offline, MANY_USERS + 500);
    CHECK(!online_elsewhere(bus2, many_id(7)));

    /* A node that died without leaving: its heartbeat key is gone, so its
     * counts do not make anyone online, and the next heartbeat of a live
     * node removes them. */
    raw_cmd("HSET natter:u:77 ghost 1");
    raw_cmd("SADD natter:nu:ghost 77");
    raw_cmd("SADD natter:nodes ghost");
    CHECK(!online_elsewhere(bus, 77));
    pres_reset(&pres_a);
    nt_bus_conn_up(bus, 77);
    nt_bus_conn_down(bus, 77);
    flush(bus);
    CHECK(pres_a.online == 1 && pres_a.offline == 1);
    run_loop_for(1300);
    CHECK_EQ_INT(raw_int("HEXISTS natter:u:77 ghost"), 0);
    CHECK_EQ_INT(raw_int("SISMEMBER natter:nodes ghost"), 0);
    CHECK_EQ_INT(raw_int("SISMEMBER natter:nodes a"), 1);
    CHECK_EQ_INT(pres_a.wrong_thread + pres_b.wrong_thread, 0);
}

/* ---- more presence events than the loop's inbox holds --------------------- */

#define EVENT_QUEUE_MAX ((int)NT_BUS_REDIS_EVENTS_MAX)
#define BACKLOG_USERS (EVENT_QUEUE_MAX + 4000)
#define BACKLOG_BASE 10000000

static int backlog_online_at_flush = -1;

static void on_backlog_flushed(void *arg)
{
    backlog_online_at_flush = pres_a.online;
    flushes_pending--;
}

static bool registered_on_a(int64_t user_id)
{
    char cmd[80];
    snprintf(cmd, sizeof cmd, "HEXISTS natter:u:%lld a", (long long)user_id);
    return raw_int(cmd) == 1;
}

/*
 * The loop does not run while the registry thread tells more transitions
 * than the loop's inbox holds: the registry thread waits for the loop
 * instead of growing the inbox or dropping events (which, for a flush,
 * would leave a connection without `ready` for ever: the same wait covers
 * an inbox that cannot grow for want of memory). Once the loop runs, every
 * transition is told, and the flush queued after them comes after them.
 */
static void test_event_backlog(void)
{
    pres_reset(&pres_a);
    int refused = 0;
    for (int i = 0; i < BACKLOG_USERS; i++)
        refused += nt_bus_conn_up(bus, BACKLOG_BASE + i) != 0;
    CHECK_EQ_INT(refused, 0);
    flushes_pending++;
    CHECK_EQ_INT(nt_bus_registry_flush(bus, on_backlog_flushed, NULL), 0);
    /* The changes reach Redis in order; the one of user EVENT_QUEUE_MAX is
     * in the first batch whose transitions no longer fit the inbox. */
    bool full = false;
    for (int i = 0; i < 3000 && !full; i++) {
        full = registered_on_a(BACKLOG_BASE + EVENT_QUEUE_MAX);
        if (!full) sleep_ms(10);
    }
    CHECK(full);
    /* The registry thread waits for the loop now: the last users are not
     * sent until the loop has taken the events. */
    CHECK(!registered_on_a(BACKLOG_BASE + BACKLOG_USERS - 1));
    CHECK_EQ_INT(pres_a.online, 0);
    run_until(flushed);
    CHECK_EQ_INT(flushes_pending, 0);
    flushes_pending = 0;
    CHECK_EQ_INT(pres_a.online, BACKLOG_USERS);
    CHECK_EQ_INT(backlog_online_at_flush, BACKLOG_USERS);
    CHECK(registered_on_a(BACKLOG_BASE + BACKLOG_USERS - 1));

    for (int i = 0; i < BACKLOG_USERS; i++)
        nt_bus_conn_down(bus, BACKLOG_BASE + i);
    flush(bus);
    CHECK_EQ_INT(pres_a.offline, BACKLOG_USERS);
    CHECK(!registered_on_a(BACKLOG_BASE));
}

static void test_loop_thread_delivery(void)
{
    rx_a.loop_thread = rx_b.loop_thread = uv_thread_self();
    CHECK_EQ_INT(nt_bus_conn_up(bus, 1), 0);
    CHECK_EQ_INT(nt_bus_conn_up(bus, 2), 0);
    CHECK_EQ_INT(nt_bus_conn_up(bus2, 5), 0);
    flush(bus2); /* user 5 is in Redis: deliveries from node a find it */
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, loop_thread_deliveries, 0, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_close((uv_handle_t *)&timer, NULL);
    run_until(cross_done);
    CHECK_EQ_INT(rx_b.cross, CROSS_FRAMES);
    CHECK_EQ_INT(rx_b.cross_out_of_order, 0);
    CHECK_EQ_INT(rx_b.last_n, 1);
    CHECK_EQ_INT(rx_b.last_ids[0], 5);
    CHECK_EQ_INT(rx_a.cross, 0); /* nothing came back to the sender's node */
    CHECK_EQ_INT(rx_b.wrong_thread, 0);
    CHECK_EQ_INT(nt_bus_conn_down(bus2, 5), 0);
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
        /* Senders 0 and 1 reach their user on node a, 2 and 3 on node b. */
        if (nt_bus_deliver(bus, ids, 2, frame, (size_t)len) != 0) atomic_fetch_add(&send_errors, 1);
        if (i % 10 == 0 && nt_bus_deliver(bus, offline_only, 1, "X", 1) != 0)
            atomic_fetch_add(&send_errors, 1);
    }
    return NULL;
}

static int threaded_done(void)
{
    return rx_a.threaded + rx_b.threaded >= SENDERS * FRAMES_PER_SENDER;
}

static void test_threaded_delivery(void)
{
    for (int k = 0; k < SENDERS; k++)
        CHECK_EQ_INT(nt_bus_conn_up(k < 2 ? bus : bus2, ONLINE_BASE + k), 0);
    flush(bus);
    flush(bus2);
    pthread_t senders[SENDERS];
    for (int k = 0; k < SENDERS; k++)
        pthread_create(&senders[k], NULL, sender_thread, (void *)(intptr_t)k);
    run_until(threaded_done);
    for (int k = 0; k < SENDERS; k++)
        pthread_join(senders[k], NULL);
    CHECK_EQ_INT(atomic_load(&send_errors), 0);
    CHECK_EQ_INT(rx_a.threaded, 2 * FRAMES_PER_SENDER);
    CHECK_EQ_INT(rx_b.threaded, 2 * FRAMES_PER_SENDER);
    CHECK_EQ_INT(rx_a.out_of_order + rx_b.out_of_order, 0);
    CHECK_EQ_INT(rx_a.bad_recipients + rx_b.bad_recipients, 0);
    CHECK_EQ_INT(rx_a.offline_seen + rx_b.offline_seen, 0);
    CHECK_EQ_INT(rx_a.wrong_thread + rx_b.wrong_thread, 0);
}

/* ---- work queues ---------------------------------------------------------- */

/* Queue calls block: made from a thread, as the bot's workers do. */
static void *queue_basics_thread(void *arg)
{
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "a", 1), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "bb", 2), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus2, "jobs", "ccc", 3), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "other", "z", 1), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 3);
    CHECK_EQ_INT(nt_bus_queue_depth(bus2, "other"), 1);

    nt_bus_job a, b, c;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 0, 10000, &a), 0);
    CHECK_STR_EQ(a.payload, "a");
    CHECK_EQ_INT(a.len, 1);
    CHECK(a.id != 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 3);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", a.id), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 2);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", a.id), -ENOENT);

    CHECK_EQ_INT(nt_bus_queue_pop(bus2, "jobs", 0, 10000, &b), 0); /* any node */
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 0, 10000, &c), 0);
    CHECK_STR_EQ(b.payload, "bb");
    CHECK_STR_EQ(c.payload, "ccc");
    CHECK(b.id != c.id);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "jobs", c.id), 0);
    CHECK_EQ_INT(nt_bus_queue_ack(bus2, "jobs", b.id), 0);
    CHECK_EQ_INT(nt_bus_queue_depth(bus, "jobs"), 0);
    nt_bus_job_free(&a);
    nt_bus_job_free(&b);
    nt_bus_job_free(&c);

    nt_bus_job none;
    uint64_t start = nt_mono_ns();
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 50, 10000, &none), NT_BUS_ETIMEDOUT);
    CHECK(elapsed_ms(start) >= 45);
    CHECK(none.payload == NULL);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "nowhere", 1), -ENOENT);

    /* A binary payload with NULs and newlines comes back byte for byte. */
    CHECK_EQ_INT(nt_bus_queue_push(bus, "bin", "a\0b\nc", 5), 0);
    nt_bus_job bin;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "bin", 0, 1000, &bin), 0);
    CHECK_EQ_INT(bin.len, 5);
    CHECK(bin.payload && memcmp(bin.payload, "a\0b\nc", 5) == 0 && bin.payload[5] == '\0');
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "bin", bin.id), 0);
    nt_bus_job_free(&bin);
    return NULL;
}

static void run_in_thread(void *(*fn)(void *))
{
    pthread_t t;
    pthread_create(&t, NULL, fn, NULL);
    pthread_join(t, NULL);
}

/* A worker on node a takes the job and "dies"; one on node b gets it. */
static void *queue_redelivery_thread(void *arg)
{
    queue_redelivery_cases(bus2);

    /* A push wakes a blocked popper at once (no polling interval). */
    struct popper waiter = {.bus = bus2, .timeout_ms = 5000, .visibility_ms = 1000, .ack = true};
    pthread_t t;
    nt_bus_job second;
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "redo", 0, 10000, &second), 0);
    CHECK_EQ_INT(nt_bus_queue_ack(bus, "redo", second.id), 0);
    nt_bus_job_free(&second);
    pthread_create(&t, NULL, popper_thread, &waiter);
    sleep_ms(200);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "redo", "wake", 4), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(waiter.rc, 0);
    CHECK(waiter.waited_ms < 1500);
    nt_bus_job_free(&waiter.job);
    return NULL;
}

/* ---- request / reply ------------------------------------------------------ */

/* Callers on node a, the servers on node b. */
static void *request_timeout_thread(void *arg)
{
    request_timeout_case(bus2);
    return NULL;
}

static void *late_reply_thread(void *arg)
{
    late_reply_case(bus2);
    /* The late reply was not stored anywhere. */
    CHECK_EQ_INT(raw_int("KEYS natter:r:*"), 0);
    return NULL;
}

/* ---- leader lock ---------------------------------------------------------- */

static void test_leader(void)
{
    leader_cases(url_b);
    /* `other` shared node name b with bus2 and left: bus2's heartbeat finds
     * its registry gone and writes it again. */
    run_loop_for(1300);
    CHECK_EQ_INT(raw_int("EXISTS natter:alive:b"), 1);
}

/* ---- shared match queue: a partner put back waits as before ----------------- */

/* True if the string reply of cmd equals want. */
static bool raw_str_is(const char *cmd, const char *want)
{
    redisContext *c = raw_connect();
    bool same = false;
    if (!c) return false;
    redisReply *r = redisCommand(c, cmd);
    if (r && r->type == REDIS_REPLY_STRING) same = strcmp(r->str, want) == 0;
    if (r) freeReplyObject(r);
    redisFree(c);
    return same;
}

static nt_bus_match_entry mq_entry(int64_t user, unsigned gender, int age, unsigned genders, int lo,
                                   int hi, const uint64_t *interests, int ninterests)
{
    nt_bus_match_entry e;
    memset(&e, 0, sizeof e);
    e.user_id = user;
    e.gender = gender;
    e.age = age;
    e.genders = genders;
    e.age_min = lo;
    e.age_max = hi;
    e.interests = interests;
    e.ninterests = ninterests;
    return e;
}

/* A (male, 30, wants women 25..35, interests a1 b2) as the queue kept it. */
static void check_partner_a(const nt_bus_match_entry *p)
{
    CHECK_EQ_INT(p->user_id, 501);
    CHECK_EQ_INT(p->gender, 1);
    CHECK_EQ_INT(p->age, 30);
    CHECK_EQ_INT(p->genders, 2);
    CHECK_EQ_INT(p->age_min, 25);
    CHECK_EQ_INT(p->age_max, 35);
    CHECK_EQ_INT(p->ninterests, 2);
    if (p->ninterests == 2) {
        CHECK(p->interests == p->interest_buf);
        CHECK((p->interests[0] == 0xa1 && p->interests[1] == 0xb2) ||
              (p->interests[0] == 0xb2 && p->interests[1] == 0xa1));
    }
    CHECK_STR_EQ(p->node, "a");
    CHECK(p->arrival > 0);
}

/*
 * The shared queue hands back a partner's whole entry, and the partner put
 * back the way match.c does when the chat cannot be stored (scan_cap 0, from
 * the pairing node, blocks read again) waits with its own preferences,
 * interests, place and node: a compatible newcomer finds it, incompatible
 * ones do not, and it still outranks an older waiting user by a shared
 * interest.
 */
static void *match_requeue_thread(void *arg)
{
    const uint64_t tags_a[] = {0xa1, 0xb2}, tags_b[] = {0xa1}, tags_e[] = {0xb2};
    nt_bus_match_entry partner, unused;

    /* F waits first (older, no interests), then A, both from node a. */
    nt_bus_match_entry f = mq_entry(506, 1, 30, 2, 20, 35, NULL, 0);
    nt_bus_match_entry a = mq_entry(501, 1, 30, 2, 25, 35, tags_a, 2);
    CHECK_EQ_INT(nt_bus_match_join(bus, &f, 32, &partner), NT_BUS_MATCH_WAITING);
    CHECK_EQ_INT(nt_bus_match_join(bus, &a, 32, &partner), NT_BUS_MATCH_WAITING);

    /* B on node b shares a1 with A: takes A over the older F. */
    nt_bus_match_entry b = mq_entry(502, 2, 28, 1, 20, 40, tags_b, 1);
    memset(&partner, 0x5a, sizeof partner);
    CHECK_EQ_INT(nt_bus_match_join(bus2, &b, 32, &partner), NT_BUS_MATCH_PAIRED);
    check_partner_a(&partner);
    CHECK_EQ_INT(raw_int("EXISTS natter:mq:e:501"), 0);

    /* Their chat could not be stored: node b puts A back as match.c does. */
    nt_bus_match_entry back = partner;
    back.interests = back.interest_buf;
    back.blocks = NULL;
    back.nblocks = 0;
    CHECK_EQ_INT(nt_bus_match_join(bus2, &back, 0, &unused), NT_BUS_MATCH_WAITING);
    CHECK_EQ_INT(raw_int("HGET natter:mq:e:501 lo"), 25);
    CHECK_EQ_INT(raw_int("HGET natter:mq:e:501 hi"), 35);
    CHECK(raw_str_is("HGET natter:mq:e:501 n", "a")); /* A's node, not b */
    CHECK_EQ_INT(raw_int("ZSCORE natter:mq:b:1:30:2 501"), (long long)partner.arrival);

    /* Incompatible newcomers do not get A (nor F): a woman of 40 (outside
     * both ranges), a man (A and F want women). */
    nt_bus_match_entry c = mq_entry(503, 2, 40, 1, 20, 50, tags_a, 2);
    nt_bus_match_entry d = mq_entry(504, 1, 30, 1, 20, 40, tags_a, 2);
    CHECK_EQ_INT(nt_bus_match_join(bus2, &c, 32, &partner), NT_BUS_MATCH_WAITING);
    CHECK_EQ_INT(nt_bus_match_join(bus2, &d, 32, &partner), NT_BUS_MATCH_WAITING);
    CHECK_EQ_INT(nt_bus_match_leave(bus2, 503), 1);
    CHECK_EQ_INT(nt_bus_match_leave(bus2, 504), 1);

    /* A compatible newcomer sharing b2 with A: A again, over the older F,
     * with everything it waited with. */
    nt_bus_match_entry e = mq_entry(505, 2, 30, 1, 20, 40, tags_e, 1);
    CHECK_EQ_INT(nt_bus_match_join(bus2, &e, 32, &partner), NT_BUS_MATCH_PAIRED);
    check_partner_a(&partner);

    CHECK_EQ_INT(nt_bus_match_leave(bus, 506), 1);
    CHECK_EQ_INT(raw_int("EXISTS natter:mq:e:501"), 0);
    return NULL;
}

/* ---- Redis frozen (SIGSTOP): the loop thread is never held ------------------- */

/* A frozen Redis keeps its sockets open and answers nothing: the worst case
 * for a caller that waits. Registry changes still return at once, a flush
 * comes back while Redis is still frozen (the registry thread gives up on
 * it), and once Redis runs again the registry catches up: the other node
 * sees the user, and the presence handler is told the user came online. */
static void test_redis_frozen(void)
{
    pid_t pid = redis_pid();
    CHECK(pid > 0);
    if (pid <= 0) return;
    pres_reset(&pres_a);
    CHECK_EQ_INT(kill(pid, SIGSTOP), 0);
    uint64_t start = nt_mono_ns();
    CHECK_EQ_INT(nt_bus_conn_up(bus, 90), 0);
    /* A failure deadline, not a measurement: it returns without Redis. */
    CHECK(elapsed_ms(start) < 5000);
    flush(bus);
    CHECK_EQ_INT(pres_a.online, 0); /* not decided without Redis */
    CHECK(kill(pid, 0) == 0);       /* still frozen all along */
    CHECK_EQ_INT(kill(pid, SIGCONT), 0);
    bool seen = false;
    for (int i = 0; i < 150 && !seen; i++) {
        run_loop_for(100);
        seen = online_elsewhere(bus2, 90) && pres_a.online == 1;
    }
    CHECK(seen);
    CHECK(pres_a.nlog == 1 && pres_a.log_user[0] == 90 && pres_a.log_online[0]);
    nt_bus_conn_down(bus, 90);
    flush(bus);
    CHECK_EQ_INT(pres_a.offline, 1);
    CHECK(!online_elsewhere(bus2, 90));
}

/* ---- Redis fails between two batches of the catch-up -------------------------- */

/* Error replies Redis has sent since it started (INFO stats). */
static long long redis_error_replies(void)
{
    redisContext *c = raw_connect();
    long long v = -1;
    if (!c) return v;
    redisReply *r = redisCommand(c, "INFO stats");
    const char *at =
        r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "total_error_replies:") : NULL;
    if (at) v = strtoll(at + strlen("total_error_replies:"), NULL, 10);
    if (r) freeReplyObject(r);
    redisFree(c);
    return v;
}

static int last_decide_user_told(void)
{
    return decide_told[DECIDE_USERS - 1] > 0;
}

/*
 * More users than one batch come online on node a while Redis is frozen.
 * When it runs again, node a decides their presence in batches of 256
 * users; the second batch fails: the last user's counts name a live node
 * ("poison", its heartbeat key set by hand) with a count that is not a
 * number, so the script errors, as a Redis going away between the two
 * batches would fail it, but at a known point. The next heartbeat decides
 * again; once the poison is gone the last users are told too. Every user
 * is told online exactly once: the first batch is not told again.
 */
static void test_redis_fails_while_deciding(void)
{
    pid_t pid = redis_pid();
    CHECK(pid > 0);
    if (pid <= 0) return;
    int64_t last = DECIDE_BASE + DECIDE_USERS - 1;
    char cmd[128];
    raw_cmd("SET natter:alive:poison 1");
    snprintf(cmd, sizeof cmd, "HSET natter:u:%lld poison not-a-number", (long long)last);
    raw_cmd(cmd);
    memset(decide_told, 0, sizeof decide_told);
    pres_reset(&pres_a);

    long long errors_before = redis_error_replies();
    CHECK(errors_before >= 0);
    CHECK_EQ_INT(kill(pid, SIGSTOP), 0);
    int refused = 0;
    for (int i = 0; i < DECIDE_USERS; i++)
        refused += nt_bus_conn_up(bus, DECIDE_BASE + i) != 0;
    CHECK_EQ_INT(refused, 0);
    /* Back while Redis is still frozen: every change before it was
     * absorbed, to be decided once Redis answers. */
    flush(bus);
    CHECK_EQ_INT(pres_a.online, 0);
    CHECK_EQ_INT(kill(pid, SIGCONT), 0);

    /* The first batch is told, then the second one fails in Redis. */
    long long errors = errors_before;
    for (int i = 0; i < 200 && (errors <= errors_before || pres_a.online < 256); i++) {
        run_loop_for(50);
        errors = redis_error_replies();
    }
    CHECK(errors > errors_before);
    CHECK_EQ_INT(decide_told[0], 1);
    CHECK_EQ_INT(decide_told[DECIDE_USERS - 1], 0);

    raw_cmd("DEL natter:alive:poison");
    run_until(last_decide_user_told);
    int twice = 0, never = 0;
    for (int i = 0; i < DECIDE_USERS; i++) {
        twice += decide_told[i] > 1;
        never += decide_told[i] == 0;
    }
    CHECK_EQ_INT(twice, 0);
    CHECK_EQ_INT(never, 0);
    CHECK_EQ_INT(pres_a.online, DECIDE_USERS);
    CHECK_EQ_INT(pres_a.offline, 0);

    for (int i = 0; i < DECIDE_USERS; i++)
        nt_bus_conn_down(bus, DECIDE_BASE + i);
    flush(bus);
    CHECK_EQ_INT(pres_a.offline, DECIDE_USERS);
    snprintf(cmd, sizeof cmd, "DEL natter:u:%lld", (long long)last);
    raw_cmd(cmd);
}

/* ---- Redis restarted under running buses ----------------------------------- */

static int pings_ok(void)
{
    return nt_bus_ping(bus) == 0 && nt_bus_ping(bus2) == 0;
}

static void *outage_calls_thread(void *arg)
{
    char *reply = NULL;
    CHECK_EQ_INT(nt_bus_ping(bus), NT_BUS_EUNAVAILABLE);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "x", 1), NT_BUS_EUNAVAILABLE);
    CHECK_EQ_INT(nt_bus_request(bus, "echo", "x", 1, 200, &reply, NULL), NT_BUS_EUNAVAILABLE);
    nt_bus_job job;
    uint64_t start = nt_mono_ns();
    CHECK_EQ_INT(nt_bus_queue_pop(bus, "jobs", 300, 1000, &job), NT_BUS_EUNAVAILABLE);
    CHECK(elapsed_ms(start) < 3000); /* bounded, never a hang */
    CHECK(!nt_bus_leader(bus, "cron", 1000));
    int64_t ids[] = {6};
    CHECK_EQ_INT(nt_bus_deliver(bus, ids, 1, "x", 1), NT_BUS_EUNAVAILABLE);
    return NULL;
}

static void *after_outage_thread(void *arg)
{
    CHECK_EQ_INT(nt_bus_ping(bus), 0);
    CHECK_EQ_INT(nt_bus_queue_push(bus, "jobs", "after", 5), 0);
    nt_bus_job job;
    CHECK_EQ_INT(nt_bus_queue_pop(bus2, "jobs", 1000, 1000, &job), 0);
    CHECK_STR_EQ(job.payload, "after");
    CHECK_EQ_INT(nt_bus_queue_ack(bus2, "jobs", job.id), 0);
    nt_bus_job_free(&job);
    CHECK(nt_bus_leader(bus, "cron", 1000));
    return NULL;
}

static int outage_cross_done(void)
{
    return rx_b.cross >= CROSS_FRAMES + 1;
}

static void test_redis_restart(void)
{
    CHECK_EQ_INT(nt_bus_conn_up(bus2, 6), 0);
    flush(bus2);
    redis_stop();
    run_loop_for(1200); /* the buses notice */
    CHECK_EQ_INT(nt_bus_ping(bus), NT_BUS_EUNAVAILABLE);
    run_in_thread(outage_calls_thread);
    /* Registry changes during the outage are kept locally; a flush does
     * not wait for Redis, and presence is told once Redis is back... */
    pres_reset(&pres_b);
    CHECK_EQ_INT(nt_bus_conn_up(bus2, 8), 0);
    flush(bus2);
    CHECK_EQ_INT(pres_b.online, 0);

    CHECK_EQ_INT(redis_start(), 0);
    for (int i = 0; i < 50 && !pings_ok(); i++)
        run_loop_for(100);
    run_loop_for(1100); /* one more heartbeat: registries written again */
    CHECK_EQ_INT(nt_bus_ping(bus), 0);
    CHECK_EQ_INT(nt_bus_ping(bus2), 0);
    /* ...and written to the new Redis with what was there before. */
    CHECK(online_elsewhere(bus, 6));
    CHECK(online_elsewhere(bus, 8));
    CHECK(pres_b.online == 1 && pres_b.log_user[0] == 8);
    CHECK_EQ_INT(raw_int("HGET natter:u:6 b"), 1);
    run_in_thread(after_outage_thread);

    int64_t ids[] = {6};
    char frame[16];
    int len = snprintf(frame, sizeof frame, "C%d", CROSS_FRAMES);
    CHECK_EQ_INT(nt_bus_deliver(bus, ids, 1, frame, (size_t)len), 0);
    run_until(outage_cross_done);
    CHECK_EQ_INT(rx_b.cross, CROSS_FRAMES + 1);
}

/* ---- close wakes blocked callers ----------------------------------------- */

static void test_close_wakes(void)
{
    char err[160];
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d?node=closing", redis.port);
    closing_bus = nt_bus_open(url, &loop, err, sizeof err);
    CHECK(closing_bus != NULL);
    if (!closing_bus) return;
    int64_t took = close_wakes_blocked(300);
    CHECK(took < 500); /* woken, not waiting out a slice */
    /* The request withdrew its call. */
    CHECK_EQ_INT(raw_int("LLEN natter:svc:unserved"), 0);
}

int main(void)
{
    if (!have_redis_server()) {
        printf("SKIP: redis-server is not installed (scripts/setup installs it)\n");
        return 77;
    }
    alarm(180);
    if (redis_setup() != 0) {
        fprintf(stderr, "cannot start redis-server (config in %s)\n", redis.dir);
        redis_stop();
        return 1;
    }
    if (uv_loop_init(&loop) != 0) return 1;

    test_open();
    test_presence();
    test_event_backlog();
    test_loop_thread_delivery();
    test_threaded_delivery();
    run_in_thread(queue_basics_thread);
    run_in_thread(queue_redelivery_thread);
    request_reply_case(bus2);
    run_in_thread(request_timeout_thread);
    run_in_thread(late_reply_thread);
    test_leader();
    run_in_thread(match_requeue_thread);
    test_redis_frozen();
    test_redis_fails_while_deciding();
    test_redis_restart();
    test_close_wakes();

    nt_bus_close(bus2);
    nt_bus_close(bus);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    CHECK_EQ_INT(raw_int("SCARD natter:nodes"), 0); /* both left cleanly */
    redis_teardown();
    return check_exit();
}
