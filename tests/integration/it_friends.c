/*
 * Integration test: friends and blocks against a real natterd over real
 * sockets. A request by nickname reaches the receiver as `friend_request`,
 * acceptance gives `friend` to both, crossing requests make friends at
 * once; every bad input gets its status; a block ends the friendship, stops
 * the blocked user's friend requests and messages (403 over REST, an error
 * frame over WebSocket) while the blocker may still write, and unblocking
 * restores it; presence goes to friends when the first connection opens and
 * the last one closes, not when a second device comes and goes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integration/harness.h"

static nth_user ann, ben, cat, dan;

static int api(nt_server *srv, const char *method, const char *path, const nth_user *u,
               const char *body, nt_buf *resp)
{
    if (resp) nt_buf_reset(resp);
    return nth_api(srv, method, path, u ? u->s.access_token : NULL, body, resp);
}

/* Expects status (and the error code, when code is not NULL, and a message
 * naming `field` when field is not NULL). */
static void expect(nt_server *srv, const char *method, const char *path, const nth_user *u,
                   const char *body, int status, const char *code, const char *field)
{
    nt_buf resp = NT_BUF_INIT;
    int got = api(srv, method, path, u, body, &resp);
    CHECK_EQ_INT(got, status);
    if (got != status)
        fprintf(stderr, "  %s %s %s -> %d %s\n", method, path, body ? body : "", got,
                resp.data ? resp.data : "");
    if (code) {
        char c[64] = "";
        ntc_json_str(resp.data ? resp.data : "", resp.len, "error.code", c, sizeof c);
        CHECK_STR_EQ(c, code);
    }
    if (field) {
        char msg[256] = "";
        ntc_json_str(resp.data ? resp.data : "", resp.len, "error.message", msg, sizeof msg);
        CHECK(strstr(msg, field) != NULL);
    }
    nt_buf_free(&resp);
}

/* Does list `key` of GET /friends as u hold other? */
static bool in_list(nt_server *srv, const nth_user *u, const char *key, const nth_user *other)
{
    nt_buf resp = NT_BUF_INIT;
    bool found = false;
    CHECK_EQ_INT(api(srv, "GET", "/api/v1/friends", u, NULL, &resp), 200);
    int n = ntc_json_count(resp.data ? resp.data : "", resp.len, key);
    for (int i = 0; i < n; i++) {
        char path[64];
        int64_t id = 0;
        snprintf(path, sizeof path, "%s.%d.id", key, i);
        if (ntc_json_int(resp.data, resp.len, path, &id) == 0 && id == other->s.user_id)
            found = true;
    }
    nt_buf_free(&resp);
    return found;
}

static void request(nt_server *srv, const nth_user *from, const nth_user *to, int status)
{
    char js[128];
    snprintf(js, sizeof js, "{\"nickname\":\"%s\"}", to->s.nickname);
    expect(srv, "POST", "/api/v1/friends/requests", from, js, status, NULL, NULL);
}

/* Waits for an event of `type` whose integer at path is value. */
static bool wait_event(ntc_conn *c, const char *type, const char *path, int64_t value, int ms)
{
    nth_filter f = {.type = type, .int_path = path, .int_value = value};
    const char *json;
    size_t len;
    return nth_wait_for(c, &f, ms, &json, &len) == 1;
}

static void case_bad_input(nt_server *srv)
{
    char path[96], js[96];
    expect(srv, "GET", "/api/v1/friends", NULL, NULL, 401, "unauthorized", NULL);
    expect(srv, "POST", "/api/v1/friends/requests", NULL, "{\"nickname\":\"x\"}", 401, NULL, NULL);
    expect(srv, "POST", "/api/v1/friends/requests", &ann, "{", 400, "bad_request", NULL);
    expect(srv, "POST", "/api/v1/friends/requests", &ann, "{}", 400, "bad_request", "nickname");
    expect(srv, "POST", "/api/v1/friends/requests", &ann, "{\"nickname\":7}", 400, "bad_request",
           "nickname");
    expect(srv, "POST", "/api/v1/friends/requests", &ann, "{\"nickname\":\"no way\"}", 400,
           "bad_request", "nickname");
    snprintf(js, sizeof js, "{\"nickname\":\"%s\"}", ann.s.nickname);
    expect(srv, "POST", "/api/v1/friends/requests", &ann, js, 400, "bad_request", "nickname");
    expect(srv, "POST", "/api/v1/friends/requests", &ann, "{\"nickname\":\"nobody_here\"}", 404,
           "not_found", NULL);
    expect(srv, "POST", "/api/v1/friends/requests/999999999/accept", &ann, NULL, 404, "not_found",
           NULL);
    expect(srv, "POST", "/api/v1/friends/requests/999999999/reject", &ann, NULL, 404, "not_found",
           NULL);
    snprintf(path, sizeof path, "/api/v1/friends/requests/%" PRId64 "/accept", ben.s.user_id);
    expect(srv, "POST", path, &ann, NULL, 404, "not_found", NULL); /* no request */
    snprintf(path, sizeof path, "/api/v1/friends/requests/%" PRId64 "/reject", ben.s.user_id);
    expect(srv, "POST", path, &ann, NULL, 404, "not_found", NULL);
    expect(srv, "DELETE", "/api/v1/friends/999999999", &ann, NULL, 404, "not_found", NULL);
    snprintf(path, sizeof path, "/api/v1/friends/%" PRId64, ben.s.user_id);
    expect(srv, "DELETE", path, &ann, NULL, 404, "not_found", NULL); /* not friends */
    expect(srv, "POST", "/api/v1/friends/requests/abc/accept", &ann, NULL, 404, NULL, NULL);
    expect(srv, "POST", "/api/v1/blocks/999999999", &ann, NULL, 404, "not_found", NULL);
    expect(srv, "DELETE", "/api/v1/blocks/999999999", &ann, NULL, 404, "not_found", NULL);
    snprintf(path, sizeof path, "/api/v1/blocks/%" PRId64, ann.s.user_id);
    expect(srv, "POST", path, &ann, NULL, 400, "bad_request", "user_id");
}

static void case_friend_flows(nt_server *srv)
{
    char path[96];
    ntc_conn *a = nth_connect(srv, &ann);
    ntc_conn *b = nth_connect(srv, &ben);
    REQUIRE(a && b);
    request(srv, &ann, &ben, 201);
    CHECK(wait_event(b, "friend_request", "user.id", ann.s.user_id, NTH_WAIT_MS));
    request(srv, &ann, &ben, 200); /* again: still one request */
    CHECK(in_list(srv, &ann, "outgoing", &ben));
    CHECK(in_list(srv, &ben, "incoming", &ann));
    snprintf(path, sizeof path, "/api/v1/friends/requests/%" PRId64 "/accept", ann.s.user_id);
    expect(srv, "POST", path, &ben, NULL, 200, NULL, NULL);
    CHECK(wait_event(a, "friend", "user.id", ben.s.user_id, NTH_WAIT_MS));
    CHECK(wait_event(b, "friend", "user.id", ann.s.user_id, NTH_WAIT_MS));
    CHECK(in_list(srv, &ann, "friends", &ben));
    CHECK(in_list(srv, &ben, "friends", &ann));
    CHECK(!in_list(srv, &ben, "incoming", &ann));

    /* Crossing requests: friends at once. */
    ntc_conn *c = nth_connect(srv, &cat);
    REQUIRE(c);
    request(srv, &cat, &dan, 201);
    request(srv, &dan, &cat, 201);
    CHECK(wait_event(c, "friend", "user.id", dan.s.user_id, NTH_WAIT_MS));
    CHECK(in_list(srv, &dan, "friends", &cat));
    /* Remove, then reject. */
    snprintf(path, sizeof path, "/api/v1/friends/%" PRId64, cat.s.user_id);
    expect(srv, "DELETE", path, &dan, NULL, 204, NULL, NULL);
    CHECK(!in_list(srv, &cat, "friends", &dan));
    request(srv, &dan, &cat, 201);
    snprintf(path, sizeof path, "/api/v1/friends/requests/%" PRId64 "/reject", dan.s.user_id);
    expect(srv, "POST", path, &cat, NULL, 204, NULL, NULL);
    CHECK(!in_list(srv, &cat, "incoming", &dan));
    CHECK(!in_list(srv, &dan, "outgoing", &cat));
    ntc_conn_free(a);
    ntc_conn_free(b);
    ntc_conn_free(c);
}

/* Sends on WS and returns 1 for an ack, 2 for an error frame (code copied). */
static int ws_send(ntc_conn *c, int64_t chat, char *code, size_t cap)
{
    static unsigned n;
    char req[32], cid[48];
    snprintf(req, sizeof req, "r%u", ++n);
    snprintf(cid, sizeof cid, "friends-%d-%u", (int)getpid(), n);
    if (nth_send(c, req, chat, "hello", cid) != 0) return -1;
    return nth_wait_ack(c, req, NTH_WAIT_MS, NULL, NULL, code, cap);
}

static void case_blocks(nt_server *srv)
{
    char path[96], msgs[96], code[64];
    int64_t chat = nth_direct_chat(srv, &ann, &ben);
    REQUIRE(chat > 0);
    snprintf(msgs, sizeof msgs, "/api/v1/chats/%" PRId64 "/messages", chat);
    ntc_conn *b = nth_connect(srv, &ben);
    REQUIRE(b);
    CHECK_EQ_INT(ws_send(b, chat, code, sizeof code), 1);

    snprintf(path, sizeof path, "/api/v1/blocks/%" PRId64, ben.s.user_id);
    expect(srv, "POST", path, &ann, NULL, 204, NULL, NULL);
    expect(srv, "POST", path, &ann, NULL, 204, NULL, NULL); /* idempotent */
    CHECK(!in_list(srv, &ann, "friends", &ben));
    CHECK(!in_list(srv, &ben, "friends", &ann));
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(api(srv, "GET", "/api/v1/blocks", &ann, NULL, &resp), 200);
    CHECK_EQ_INT(ntc_json_count(resp.data, resp.len, "blocks"), 1);
    nt_buf_free(&resp);

    /* The blocked one cannot write, over WebSocket or REST. */
    CHECK_EQ_INT(ws_send(b, chat, code, sizeof code), 2);
    CHECK_STR_EQ(code, "forbidden");
    expect(srv, "POST", msgs, &ben, "{\"text\":\"let me in\"}", 403, "forbidden", NULL);
    /* ... nor ask to be friends; the blocker cannot ask either. */
    request(srv, &ben, &ann, 403);
    request(srv, &ann, &ben, 403);
    /* The blocker still writes. */
    expect(srv, "POST", msgs, &ann, "{\"text\":\"bye\"}", 201, NULL, NULL);
    /* A two-member group is covered too. */
    char js[128];
    snprintf(js, sizeof js, "{\"type\":\"group\",\"title\":\"pair\",\"member_ids\":[%" PRId64 "]}",
             ben.s.user_id);
    CHECK_EQ_INT(api(srv, "POST", "/api/v1/chats", &ann, js, &resp), 201);
    int64_t group = 0;
    ntc_json_int(resp.data, resp.len, "id", &group);
    nt_buf_free(&resp);
    CHECK_EQ_INT(ws_send(b, group, code, sizeof code), 2);

    /* Unblock: everything works again. */
    expect(srv, "DELETE", path, &ann, NULL, 204, NULL, NULL);
    expect(srv, "DELETE", path, &ann, NULL, 204, NULL, NULL);
    CHECK_EQ_INT(ws_send(b, chat, code, sizeof code), 1);
    CHECK_EQ_INT(ws_send(b, group, code, sizeof code), 1);
    request(srv, &ben, &ann, 201);
    request(srv, &ann, &ben, 201); /* crossing: friends again */
    CHECK(in_list(srv, &ann, "friends", &ben));
    ntc_conn_free(b);
}

static void case_presence(nt_server *srv)
{
    /* cat and ben: friends, no chat in common. */
    request(srv, &cat, &ben, 201);
    request(srv, &ben, &cat, 201);
    ntc_conn *watcher = nth_connect(srv, &ben);
    REQUIRE(watcher);
    ntc_conn_drain(watcher);

    ntc_conn *first = nth_connect(srv, &cat);
    REQUIRE(first);
    nth_filter on = {
        .type = "presence", .int_path = "user_id", .int_value = cat.s.user_id, .str_path = NULL};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(watcher, &on, NTH_WAIT_MS, &json, &len), 1);
    CHECK(strstr(json, "\"online\":true") != NULL);
    ntc_conn_drain(watcher);

    /* A second device opens and closes: nothing. */
    ntc_conn *second = nth_connect(srv, &cat);
    REQUIRE(second);
    CHECK_EQ_INT(ntc_conn_close(second, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(nth_wait_for(watcher, &on, 1000, &json, &len), 0);

    /* The last one closes: offline, with last_seen. */
    CHECK_EQ_INT(ntc_conn_close(first, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(nth_wait_for(watcher, &on, NTH_WAIT_MS, &json, &len), 1);
    CHECK(strstr(json, "\"online\":false") != NULL);
    int64_t last_seen = 0;
    CHECK_EQ_INT(ntc_json_int(json, len, "last_seen", &last_seen), 0);
    CHECK(last_seen > 0);
    ntc_conn_free(watcher);
}

int main(void)
{
    nt_server *srv = nth_start(NULL);
    CHECK(srv != NULL);
    if (!srv) return check_exit();
    CHECK_EQ_INT(nth_register(srv, "ann", &ann), 0);
    CHECK_EQ_INT(nth_register(srv, "ben", &ben), 0);
    CHECK_EQ_INT(nth_register(srv, "cat", &cat), 0);
    CHECK_EQ_INT(nth_register(srv, "dan", &dan), 0);
    NTH_CASE("friends: every bad input", case_bad_input, srv);
    NTH_CASE("friends: request, accept, crossing, remove, reject with events", case_friend_flows,
             srv);
    NTH_CASE("blocks: no messages, no requests, friendship gone; unblock", case_blocks, srv);
    NTH_CASE("presence to friends on first connect and last disconnect only", case_presence, srv);
    if (check_failures) nth_dump_log(srv, 3000);
    CHECK_EQ_INT(nth_stop(srv), 0);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
