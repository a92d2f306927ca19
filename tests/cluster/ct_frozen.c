/*
 * A frozen Redis does not hold a gateway's loop (issue 6): redis-server,
 * PostgreSQL, two natterd gateway nodes on the Redis bus and nginx, all
 * started by this test and stopped by pid.
 *
 * redis-server is SIGSTOPped: its sockets stay open and nothing answers,
 * the worst case for a caller that waits. While it is stopped a WebSocket
 * authenticates on node 1 (`ready` comes) and /healthz answers on both
 * nodes; the bound on each (5 s) is a failure deadline, not a measurement.
 * Once Redis is SIGCONTed the registry catches up: the user's friend,
 * connected to node 2, gets the `presence` online event, node 2 reports
 * the user online, and the user's last disconnect is told as offline (the
 * registry counted the connection once, although the registry change sent
 * into the frozen Redis may still have run after it woke).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/clock.h"

#define DEADLINE_MS 5000

static nct_cluster cluster;
static pid_t frozen_pid; /* continued by the exit hook if a check failed */

static void continue_redis(void)
{
    if (frozen_pid > 0) kill(frozen_pid, SIGCONT);
    frozen_pid = 0;
}

static pid_t redis_pid(const nct_cluster *c)
{
    FILE *f = fopen(c->redis_pidfile, "r");
    long pid = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

static int64_t ms_since(uint64_t start_ns)
{
    return (int64_t)((nt_mono_ns() - start_ns) / 1000000u);
}

static void befriend(nct_cluster *c, const nth_user *a, const nth_user *b)
{
    char js[128];
    snprintf(js, sizeof js, "{\"nickname\":\"%s\"}", b->s.nickname);
    CHECK_EQ_INT(
        nth_api(nct_front(c), "POST", "/api/v1/friends/requests", a->s.access_token, js, NULL),
        201);
    snprintf(js, sizeof js, "{\"nickname\":\"%s\"}", a->s.nickname);
    CHECK_EQ_INT(
        nth_api(nct_front(c), "POST", "/api/v1/friends/requests", b->s.access_token, js, NULL),
        201);
}

/* What must work while Redis is frozen; ann's connection in *out. */
static void while_frozen(nct_cluster *c, const nth_user *ann, ntc_conn **out)
{
    uint64_t start = nt_mono_ns();
    ntc_conn *a = nth_connect(c->gateways[0], ann);
    int64_t auth_ms = ms_since(start);
    REQUIRE(a != NULL);
    *out = a;
    if (auth_ms >= DEADLINE_MS) fprintf(stderr, "auth took %lld ms\n", (long long)auth_ms);
    CHECK(auth_ms < DEADLINE_MS);
    for (int i = 0; i < 2; i++) {
        start = nt_mono_ns();
        CHECK(nth_healthy(c->gateways[i]));
        CHECK(ms_since(start) < DEADLINE_MS);
    }
    /* The authenticated socket is served too. */
    CHECK_EQ_INT(ntc_conn_send_text(a, "{\"type\":\"ping\",\"id\":\"p\"}"), 0);
    nth_filter pong = {.type = "pong"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(a, &pong, DEADLINE_MS, &json, &len), 1);
}

static void case_frozen_redis(nct_cluster *c)
{
    nth_user ann, ben;
    REQUIRE(nth_register(nct_front(c), "ann", &ann) == 0);
    REQUIRE(nth_register(nct_front(c), "ben", &ben) == 0);
    befriend(c, &ann, &ben);
    ntc_conn *watcher = nth_connect(c->gateways[1], &ben);
    REQUIRE(watcher);
    ntc_conn_drain(watcher);

    pid_t pid = redis_pid(c);
    REQUIRE(pid > 0);
    REQUIRE(kill(pid, SIGSTOP) == 0);
    frozen_pid = pid;
    ntc_conn *a = NULL;
    while_frozen(c, &ann, &a);
    CHECK(kill(pid, 0) == 0); /* stopped, not gone, all along */
    continue_redis();
    REQUIRE(a != NULL);

    /* Presence catches up: ben hears that ann came online... */
    nth_filter on = {.type = "presence", .int_path = "user_id", .int_value = ann.s.user_id};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(watcher, &on, 20000, &json, &len), 1);
    CHECK(json && strstr(json, "\"online\":true") != NULL);
    /* ...node 2 sees her online... */
    char path[96];
    snprintf(path, sizeof path, "/api/v1/users/%lld", (long long)ann.s.user_id);
    nt_buf body = NT_BUF_INIT;
    CHECK_EQ_INT(nth_api(c->gateways[1], "GET", path, ben.s.access_token, NULL, &body), 200);
    CHECK(body.data && strstr(body.data, "\"online\":true") != NULL);
    nt_buf_free(&body);
    /* ...and her one connection closing is her last one anywhere. */
    ntc_conn_drain(watcher);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(nth_wait_for(watcher, &on, NTH_WAIT_MS, &json, &len), 1);
    CHECK(json && strstr(json, "\"online\":false") != NULL);
    ntc_conn_free(watcher);
}

int main(void)
{
    alarm(280);
    int rc = nct_start(&cluster, 2);
    if (rc == NCT_SKIP) return 77;
    if (rc != 0) {
        nct_stop(&cluster, false);
        return 1;
    }
    /* After nct_start's own hook, so it runs first: a stopped redis-server
     * is continued before anything stops it. */
    atexit(continue_redis);
    NTH_CASE("a frozen Redis holds no loop; presence catches up after", case_frozen_redis,
             &cluster);
    continue_redis();
    nct_stop(&cluster, check_failures == 0);
    return check_exit();
}
