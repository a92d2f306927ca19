/*
 * Random chats across cluster nodes (issue 6): redis-server, PostgreSQL,
 * three natterd gateway nodes on the Redis bus and nginx, all started by
 * this test and stopped by pid. The match queue lives in Redis, so:
 *
 *  1. Two users waiting through different gateway nodes are paired, and
 *     both get `matched` (same chat, the partner's gender and age) on
 *     their own node's WebSocket.
 *  2. A user who left the queue through another node is not paired; an
 *     incompatible user (outside the other's genders) waits; a compatible
 *     one on a third node takes the first one still waiting.
 *  3. Shared interests come first: of two users waiting for a newcomer,
 *     the one sharing an interest with it (on another node) is taken
 *     rather than the one who waited longer and shares none.
 *  4. A user waiting through a gateway node that is then SIGKILLed is not
 *     given to anyone once the node's heartbeat has run out.
 *  5. A pair whose chat cannot be stored (PostgreSQL refuses random chats
 *     for a while): the newcomer gets 503 and the waiting user is back in
 *     the queue as it waited, so once chats can be stored an incompatible
 *     user does not get it and a compatible one does.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"

static nct_cluster cluster;

/* A registered user with a gender, an age (born on 1 January) and
 * preferences (raw JSON, or NULL for the defaults: everyone 13..120). */
static bool make(nt_server *srv, nth_user *u, const char *prefix, const char *gender, int age,
                 const char *prefs)
{
    char js[256];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    if (nth_register(srv, prefix, u) != 0) return false;
    snprintf(js, sizeof js, "{\"gender\":\"%s\",\"birth_date\":\"%04d-01-01\"}", gender,
             tm.tm_year + 1900 - age);
    if (nth_api(srv, "PATCH", "/api/v1/users/me", u->s.access_token, js, NULL) != 200) return false;
    return !prefs ||
           nth_api(srv, "PUT", "/api/v1/match/preferences", u->s.access_token, prefs, NULL) == 200;
}

/* POST /match through srv: the status; "matched" or "waiting" in status. */
static int join(nt_server *srv, const nth_user *u, char *status, size_t cap)
{
    nt_buf resp = NT_BUF_INIT;
    int st = nth_api(srv, "POST", "/api/v1/match", u->s.access_token, NULL, &resp);
    status[0] = '\0';
    ntc_json_str(resp.data ? resp.data : "", resp.len, "status", status, cap);
    nt_buf_free(&resp);
    return st;
}

/* Waits for `matched` on c: chat id, partner gender and age. */
static bool wait_matched(ntc_conn *c, int ms, int64_t *chat, char *gender, int64_t *age)
{
    nth_filter f = {.type = "matched"};
    const char *json;
    size_t len;
    if (nth_wait_for(c, &f, ms, &json, &len) != 1) return false;
    ntc_json_int(json, len, "chat.id", chat);
    ntc_json_str(json, len, "partner.gender", gender, 16);
    ntc_json_int(json, len, "partner.age", age);
    return true;
}

/* ---- 1. two nodes, one pair ------------------------------------------------------ */

static void case_pair_across_nodes(nct_cluster *c)
{
    nth_user ann, ben;
    char st[32], gender[16];
    int64_t chat_a = 0, chat_b = 0, age = 0;

    REQUIRE(make(c->gateways[0], &ann, "ann", "female", 30, NULL));
    REQUIRE(make(c->gateways[1], &ben, "ben", "male", 40, NULL));
    ntc_conn *a = nth_connect(c->gateways[0], &ann);
    ntc_conn *b = nth_connect(c->gateways[1], &ben);
    REQUIRE(a && b);

    CHECK_EQ_INT(join(c->gateways[0], &ann, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    /* Joining again through another node keeps one entry. */
    CHECK_EQ_INT(join(c->gateways[2], &ann, st, sizeof st), 200);
    CHECK_EQ_INT(join(c->gateways[1], &ben, st, sizeof st), 202);
    CHECK(strcmp(st, "matched") == 0);

    CHECK(wait_matched(a, NTH_WAIT_MS, &chat_a, gender, &age));
    CHECK(strcmp(gender, "male") == 0);
    CHECK_EQ_INT(age, 40);
    CHECK(wait_matched(b, NTH_WAIT_MS, &chat_b, gender, &age));
    CHECK(strcmp(gender, "female") == 0);
    CHECK_EQ_INT(age, 30);
    CHECK(chat_a > 0 && chat_a == chat_b);
    ntc_conn_free(a);
    ntc_conn_free(b);
}

/* ---- 2. leave, incompatible, compatible ------------------------------------------- */

static void case_leave_and_compatibility(nct_cluster *c)
{
    nth_user cal, dot, eve, fay;
    char st[32], gender[16];
    int64_t chat_d = 0, chat_f = 0, age = 0;

    REQUIRE(make(c->gateways[0], &cal, "cal", "male", 25, NULL));
    REQUIRE(make(c->gateways[1], &dot, "dot", "female", 26,
                 "{\"genders\":[\"female\"],\"age_min\":13,\"age_max\":120}"));
    REQUIRE(make(c->gateways[2], &eve, "eve", "male", 27, NULL));
    REQUIRE(make(c->gateways[2], &fay, "fay", "female", 28, NULL));
    ntc_conn *cd = nth_connect(c->gateways[1], &dot);
    ntc_conn *cf = nth_connect(c->gateways[2], &fay);
    REQUIRE(cd && cf);

    /* Cal joins on node 1 and leaves through node 2: gone everywhere. */
    CHECK_EQ_INT(join(c->gateways[0], &cal, st, sizeof st), 202);
    CHECK_EQ_INT(nth_api(c->gateways[1], "DELETE", "/api/v1/match", cal.s.access_token, NULL, NULL),
                 204);
    /* Dot wants women only: waits. Eve (a man) does not fit Dot: waits. */
    CHECK_EQ_INT(join(c->gateways[1], &dot, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    CHECK_EQ_INT(join(c->gateways[2], &eve, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    /* Fay fits both; Dot waited longer. */
    CHECK_EQ_INT(join(c->gateways[2], &fay, st, sizeof st), 202);
    CHECK(strcmp(st, "matched") == 0);
    CHECK(wait_matched(cd, NTH_WAIT_MS, &chat_d, gender, &age));
    CHECK_EQ_INT(age, 28);
    CHECK(wait_matched(cf, NTH_WAIT_MS, &chat_f, gender, &age));
    CHECK_EQ_INT(age, 26);
    CHECK(chat_d > 0 && chat_d == chat_f);
    CHECK_EQ_INT(nth_api(c->gateways[0], "DELETE", "/api/v1/match", eve.s.access_token, NULL, NULL),
                 204);
    ntc_conn_free(cd);
    ntc_conn_free(cf);
}

/* ---- 3. shared interests first ---------------------------------------------------- */

static void case_interests_first(nct_cluster *c)
{
    nth_user ian, jon, kim;
    char st[32], gender[16];
    int64_t chat_j = 0, chat_k = 0, age = 0;

    /* Ian and Jon both want women only, so they never pair each other. */
    REQUIRE(make(c->gateways[0], &ian, "ian", "male", 35,
                 "{\"genders\":[\"female\"],\"age_min\":13,\"age_max\":120,"
                 "\"interests\":[\"sailing\"]}"));
    REQUIRE(make(c->gateways[1], &jon, "jon", "male", 36,
                 "{\"genders\":[\"female\"],\"age_min\":13,\"age_max\":120,"
                 "\"interests\":[\"chess\",\"go\"]}"));
    REQUIRE(make(c->gateways[2], &kim, "kim", "female", 37,
                 "{\"genders\":[\"male\"],\"age_min\":13,\"age_max\":120,"
                 "\"interests\":[\"go\",\"jazz\"]}"));
    ntc_conn *cj = nth_connect(c->gateways[1], &jon);
    ntc_conn *ck = nth_connect(c->gateways[2], &kim);
    REQUIRE(cj && ck);

    /* Ian waits first, then Jon; Kim shares "go" with Jon only. */
    CHECK_EQ_INT(join(c->gateways[0], &ian, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    CHECK_EQ_INT(join(c->gateways[1], &jon, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    CHECK_EQ_INT(join(c->gateways[2], &kim, st, sizeof st), 202);
    CHECK(strcmp(st, "matched") == 0);
    CHECK(wait_matched(ck, NTH_WAIT_MS, &chat_k, gender, &age));
    CHECK_EQ_INT(age, 36); /* Jon, not Ian */
    CHECK(wait_matched(cj, NTH_WAIT_MS, &chat_j, gender, &age));
    CHECK_EQ_INT(age, 37);
    CHECK(chat_j > 0 && chat_j == chat_k);
    /* Ian still waits: gone only when he leaves. */
    CHECK_EQ_INT(nth_api(c->gateways[1], "DELETE", "/api/v1/match", ian.s.access_token, NULL, NULL),
                 204);
    ntc_conn_free(cj);
    ntc_conn_free(ck);
}

/* ---- 5. a chat that cannot be stored ---------------------------------------------- */

/* Runs one SQL statement on the cluster's PostgreSQL; 0 if it worked. */
static int sql(nct_cluster *c, const char *stmt)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 '%s' -c \"%s\" "
             ">/dev/null 2>&1",
             c->pg_url, stmt);
    return system(cmd) == 0 ? 0 : -1;
}

static void case_store_fails(nct_cluster *c)
{
    nth_user lia, max, ned, oli;
    char st[32], gender[16];
    int64_t chat_l = 0, chat_o = 0, age = 0;

    REQUIRE(make(c->gateways[0], &lia, "lia", "female", 29,
                 "{\"genders\":[\"male\"],\"age_min\":25,\"age_max\":35,"
                 "\"interests\":[\"ski\"]}"));
    REQUIRE(make(c->gateways[1], &max, "max", "male", 30, NULL));
    REQUIRE(make(c->gateways[1], &ned, "ned", "male", 40, NULL));
    REQUIRE(make(c->gateways[1], &oli, "oli", "male", 31, NULL));
    ntc_conn *cl = nth_connect(c->gateways[0], &lia);
    ntc_conn *co = nth_connect(c->gateways[1], &oli);
    REQUIRE(cl && co);

    CHECK_EQ_INT(join(c->gateways[0], &lia, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    REQUIRE(sql(c, "ALTER TABLE chats ADD CONSTRAINT ct_no_random "
                   "CHECK (type <> 'random') NOT VALID") == 0);
    /* Redis pairs Max with Lia; their chat cannot be stored. */
    CHECK_EQ_INT(join(c->gateways[1], &max, st, sizeof st), 503);
    CHECK_EQ_INT(sql(c, "ALTER TABLE chats DROP CONSTRAINT ct_no_random"), 0);
    /* Ned (40) is outside Lia's 25..35: he waits, Lia is not his. */
    CHECK_EQ_INT(join(c->gateways[1], &ned, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    CHECK_EQ_INT(nth_api(c->gateways[1], "DELETE", "/api/v1/match", ned.s.access_token, NULL, NULL),
                 204);
    /* Oli fits: Lia is still waiting, with her preferences. */
    CHECK_EQ_INT(join(c->gateways[1], &oli, st, sizeof st), 202);
    CHECK(strcmp(st, "matched") == 0);
    CHECK(wait_matched(cl, NTH_WAIT_MS, &chat_l, gender, &age));
    CHECK_EQ_INT(age, 31);
    CHECK(wait_matched(co, NTH_WAIT_MS, &chat_o, gender, &age));
    CHECK_EQ_INT(age, 29);
    CHECK(chat_l > 0 && chat_l == chat_o);
    ntc_conn_free(cl);
    ntc_conn_free(co);
}

/* ---- 4. a dead node's waiting user ----------------------------------------------- */

static void case_dead_node(nct_cluster *c)
{
    nth_user gus, hal;
    char st[32];

    REQUIRE(make(c->gateways[2], &gus, "gus", "male", 33, NULL));
    REQUIRE(make(c->gateways[0], &hal, "hal", "male", 34, NULL));
    CHECK_EQ_INT(join(c->gateways[2], &gus, st, sizeof st), 202);
    nth_kill(c->gateways[2]);
    /* The node's liveness key lasts 5 s after its last heartbeat. */
    struct timespec ts = {7, 0};
    nanosleep(&ts, NULL);
    CHECK_EQ_INT(join(c->gateways[0], &hal, st, sizeof st), 202);
    CHECK(strcmp(st, "waiting") == 0);
    CHECK_EQ_INT(nth_api(c->gateways[1], "DELETE", "/api/v1/match", hal.s.access_token, NULL, NULL),
                 204);
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
    NTH_CASE("two users waiting on different gateway nodes are paired", case_pair_across_nodes,
             &cluster);
    NTH_CASE("leave through another node, incompatible users wait, the oldest fit is taken",
             case_leave_and_compatibility, &cluster);
    NTH_CASE("shared interests are preferred over a longer wait", case_interests_first, &cluster);
    NTH_CASE("a pair whose chat cannot be stored: the waiting user is back as it waited",
             case_store_fails, &cluster);
    NTH_CASE("a user waiting on a gateway that died is not paired", case_dead_node, &cluster);
    nct_stop(&cluster, check_failures == 0);
    return check_exit();
}
