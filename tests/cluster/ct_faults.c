/*
 * Cluster faults over real processes (issue 6): redis-server, PostgreSQL,
 * three natterd gateway nodes (--roles gateway, Redis bus, PostgreSQL
 * store) and nginx in front, all started by this test and stopped by pid.
 *
 *  1. A message between two users on different gateway nodes arrives, in
 *     order, once.
 *  2. Redis restarted: the nodes answer /readyz 503 and refuse sends
 *     (WebSocket and REST) with `unavailable` while it is down (nothing is
 *     written), reconnect by themselves, and afterwards cross-node
 *     delivery works again with no node restarted.
 *  3. A gateway node SIGKILLed: its client reconnects through nginx to
 *     another node and, with after_seq, has every message - none lost,
 *     none doubled.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/clock.h"

#define BATCH 20

static nct_cluster cluster;
static nth_user alice, bob;
static int64_t chat_id;
static int sent_count; /* alice's messages so far, for unique client ids */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sends n messages as `from` and waits for each ack; the acked seqs go in
 * seqs (room for n). Returns how many were acked. */
static int send_batch(ntc_conn *from, int n, int64_t *seqs)
{
    int acked = 0;
    for (int i = 0; i < n; i++) {
        char id[32], text[64], client_id[48];
        int k = ++sent_count;
        snprintf(id, sizeof id, "r%d", k);
        snprintf(text, sizeof text, "message %d", k);
        snprintf(client_id, sizeof client_id, "ct-%d-%d", (int)getpid(), k);
        if (nth_send(from, id, chat_id, text, client_id) != 0) continue;
        int64_t seq = -1;
        char code[32] = "";
        int rc = nth_wait_ack(from, id, NTH_WAIT_MS, &seq, NULL, code, sizeof code);
        if (rc == 1)
            seqs[acked++] = seq;
        else
            fprintf(stderr, "send %d: rc=%d code=%s\n", k, rc, code);
    }
    return acked;
}

/* Reads the chat's messages after after_seq through `node`; their seqs in
 * order into seqs (room for cap). The count, or -1. */
static int history_seqs(const nt_server *node, const nth_user *u, int64_t after_seq, int64_t *seqs,
                        int cap)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld&limit=200",
             (long long)chat_id, (long long)after_seq);
    nt_buf body = NT_BUF_INIT;
    int status = nth_api(node, "GET", path, u->s.access_token, NULL, &body);
    int n = -1;
    if (status == 200 && body.data) {
        n = 0;
        /* Each message object has exactly one "seq" key. */
        for (const char *p = body.data; (p = strstr(p, "\"seq\":")) != NULL && n < cap; p += 6)
            seqs[n++] = strtoll(p + 6, NULL, 10);
    } else {
        fprintf(stderr, "history: HTTP %d\n", status);
    }
    nt_buf_free(&body);
    return n;
}

/* Bob receives `n` message events: each must be the next seq in `want`. */
static void expect_live(ntc_conn *conn, const int64_t *want, int n)
{
    int in_order = 0;
    for (int i = 0; i < n; i++) {
        int64_t seq = -1;
        if (nth_wait_message(conn, chat_id, 0, NTH_WAIT_MS, &seq, NULL, 0) != 1) {
            fprintf(stderr, "live: message %d of %d did not come\n", i + 1, n);
            break;
        }
        if (seq == want[i])
            in_order++;
        else
            fprintf(stderr, "live: got seq %lld, wanted %lld\n", (long long)seq,
                    (long long)want[i]);
    }
    CHECK_EQ_INT(in_order, n);
    /* Once: nothing more comes. */
    int64_t extra = -1;
    CHECK_EQ_INT(nth_wait_message(conn, chat_id, 0, 700, &extra, NULL, 0), 0);
}

/* ---- 1. across nodes ------------------------------------------------------------ */

static void case_cross_node(nct_cluster *c)
{
    REQUIRE(nth_register(nct_front(c), "alice", &alice) == 0);
    REQUIRE(nth_register(nct_front(c), "bob", &bob) == 0);
    chat_id = nth_direct_chat(nct_front(c), &alice, &bob);
    REQUIRE(chat_id > 0);

    /* Alice on node 1, Bob on node 2: every frame crosses Redis. */
    ntc_conn *a = nth_connect(c->gateways[0], &alice);
    ntc_conn *b = nth_connect(c->gateways[1], &bob);
    REQUIRE(a && b);
    int64_t seqs[BATCH];
    CHECK_EQ_INT(send_batch(a, BATCH, seqs), BATCH);
    for (int i = 1; i < BATCH; i++)
        CHECK(seqs[i] == seqs[i - 1] + 1);
    expect_live(b, seqs, BATCH);

    /* And back, through node 2 to node 1. */
    CHECK_EQ_INT(nth_send(b, "back", chat_id, "and back", "ct-back-1"), 0);
    int64_t back_seq = -1;
    CHECK_EQ_INT(nth_wait_ack(b, "back", NTH_WAIT_MS, &back_seq, NULL, NULL, 0), 1);
    int64_t got = -1;
    char text[64] = "";
    CHECK_EQ_INT(nth_wait_message(a, chat_id, back_seq, NTH_WAIT_MS, &got, text, sizeof text), 1);
    CHECK_STR_EQ(text, "and back");
    ntc_conn_free(a);
    ntc_conn_free(b);
}

/* ---- 2. Redis restarted ------------------------------------------------------------ */

static bool all_ready(nct_cluster *c, int want_status)
{
    for (int i = 0; i < c->ngateways; i++)
        if (nct_readyz(c->gateways[i]) != want_status) return false;
    return true;
}

static void case_redis_restart(nct_cluster *c)
{
    ntc_conn *a = nth_connect(c->gateways[0], &alice);
    ntc_conn *b = nth_connect(c->gateways[2], &bob);
    REQUIRE(a && b);
    int64_t before[BATCH], last_before = 0;
    REQUIRE(send_batch(a, 1, before) == 1);
    last_before = before[0];
    expect_live(b, before, 1);

    REQUIRE(nct_redis_stop(c) == 0);
    bool not_ready = false;
    for (int i = 0; i < 50 && !(not_ready = all_ready(c, 503)); i++)
        sleep_ms(100);
    CHECK(not_ready);

    /* A send during the outage fails plainly and writes nothing. */
    CHECK_EQ_INT(nth_send(a, "out", chat_id, "during the outage", "ct-outage-1"), 0);
    char code[32] = "";
    CHECK_EQ_INT(nth_wait_ack(a, "out", NTH_WAIT_MS, NULL, NULL, code, sizeof code), 2);
    CHECK_STR_EQ(code, "unavailable");
    char path[96];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(nth_api(c->gateways[1], "POST", path, alice.s.access_token,
                         "{\"text\":\"posted during the outage\"}", &resp),
                 503);
    CHECK(resp.data && strstr(resp.data, "\"unavailable\""));
    nt_buf_free(&resp);

    REQUIRE(nct_redis_start(c) == 0);
    bool ready = false;
    for (int i = 0; i < 100 && !(ready = all_ready(c, 200)); i++)
        sleep_ms(100);
    CHECK(ready);

    /* Nothing of the refused send was stored. */
    int64_t hist[8];
    CHECK_EQ_INT(history_seqs(c->gateways[1], &alice, last_before, hist, 8), 0);

    /* Delivery across nodes works again on the same processes and sockets. */
    int64_t after[3];
    CHECK_EQ_INT(send_batch(a, 3, after), 3);
    CHECK(after[0] == last_before + 1);
    expect_live(b, after, 3);
    for (int i = 0; i < c->ngateways; i++)
        CHECK(c->gateways[i]->pid > 0 && waitpid(c->gateways[i]->pid, NULL, WNOHANG) == 0);
    ntc_conn_free(a);
    ntc_conn_free(b);
}

/* ---- 3. a gateway killed -------------------------------------------------------------- */

/* The gateway (not alice's node 1) that holds bob's one WebSocket, or -1. */
static int bobs_node(nct_cluster *c)
{
    for (int i = 1; i < c->ngateways; i++)
        if (nct_metric(c->gateways[i], "natter_websockets_open") == 1) return i;
    return -1;
}

static void case_gateway_killed(nct_cluster *c)
{
    ntc_conn *a = nth_connect(c->gateways[0], &alice);
    REQUIRE(a);
    /* Bob comes in through nginx; until he lands on a node other than
     * alice's, he tries again. */
    ntc_conn *b = NULL;
    int victim = -1;
    for (int attempt = 0; attempt < 6 && victim < 0; attempt++) {
        if (b) ntc_conn_free(b);
        b = nth_connect(nct_front(c), &bob);
        REQUIRE(b);
        sleep_ms(100);
        victim = bobs_node(c);
    }
    REQUIRE(victim > 0);

    int64_t first[BATCH];
    REQUIRE(send_batch(a, BATCH, first) == BATCH);
    expect_live(b, first, BATCH);
    int64_t last_seen = first[BATCH - 1];

    /* The node dies mid-conversation; alice keeps writing. */
    nth_kill(c->gateways[victim]);
    int64_t during[BATCH];
    CHECK_EQ_INT(send_batch(a, BATCH, during), BATCH);
    ntc_conn_free(b);

    /* Bob reconnects through nginx and lands on a live node. */
    b = nth_connect(nct_front(c), &bob);
    REQUIRE(b);
    int64_t after[BATCH];
    CHECK_EQ_INT(send_batch(a, BATCH, after), BATCH);
    expect_live(b, after, BATCH);

    /* Catch-up by after_seq: every message since the last one seen, each
     * once, in order, ending with the last one sent. */
    int64_t hist[3 * BATCH + 8];
    int n = history_seqs(nct_front(c), &bob, last_seen, hist, 3 * BATCH + 8);
    CHECK_EQ_INT(n, 2 * BATCH);
    int consecutive = 0;
    for (int i = 0; i < n; i++)
        consecutive += hist[i] == last_seen + 1 + i;
    CHECK_EQ_INT(consecutive, n);
    if (n == 2 * BATCH) {
        CHECK_EQ_INT(hist[0], during[0]);
        CHECK_EQ_INT(hist[n - 1], after[BATCH - 1]);
    }
    ntc_conn_free(a);
    ntc_conn_free(b);
}

int main(void)
{
    alarm(280);
    int rc = nct_start(&cluster, 3);
    if (rc == NCT_SKIP) return 77;
    if (rc != 0) {
        nct_stop(&cluster, false);
        return 1;
    }
    NTH_CASE("a message across gateway nodes arrives in order, once", case_cross_node, &cluster);
    NTH_CASE("Redis restarted: not ready, sends unavailable, then everything works",
             case_redis_restart, &cluster);
    NTH_CASE("a gateway SIGKILLed: reconnect through nginx, after_seq has every message once",
             case_gateway_killed, &cluster);
    nct_stop(&cluster, check_failures == 0);
    return check_exit();
}
