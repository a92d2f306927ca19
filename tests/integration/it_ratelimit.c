/*
 * Integration test: natterd's rate limits on a real server.
 *
 * With --send-rate 1 --send-burst 5, a user who sends 20 messages at once
 * over WebSocket gets `rate_limited` errors carrying retry_after_ms for the
 * sends over the limit, acks for the others, which are stored with gapless
 * seqs, and the connection stays open; another user on the same server
 * sends meanwhile without a refusal. REST sends share the user's bucket:
 * over it, 429 with Retry-After and the standard error body. Bad input
 * is still answered bad_request (validation comes first).
 *
 * With --login-failures 10, the 11th wrong password for an account gets
 * 429 before any hashing, then so does the right password (in any letter
 * case of the login), while another account logs in as usual.
 *
 * With --send-rate 0 --login-failures 0 nothing is limited.
 *
 * No assertion depends on timing: at 1 message a second, 20 sends at once
 * give at least 10 refusals and at least 5 acks however slow the machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "integration/harness.h"

#define FLOOD 20

/* Sends `n` messages at once as one burst of frames on c, then collects
 * the answer to each (by its id). Fills acks (seqs of the acked ones, in
 * the order sent) and returns how many were acked; *limited counts the
 * rate_limited errors, each checked for a positive retry_after_ms. */
static int flood(ntc_conn *c, const char *tag, int64_t chat_id, int n, int64_t *acks, int *limited)
{
    char req_id[48], text[64];
    for (int i = 0; i < n; i++) {
        snprintf(req_id, sizeof req_id, "%s-%d", tag, i);
        snprintf(text, sizeof text, "%s message %d", tag, i);
        CHECK_EQ_INT(nth_send(c, req_id, chat_id, text, NULL), 0);
    }
    CHECK_EQ_INT(ntc_conn_flush_blocking(c, NTH_WAIT_MS), 0);
    int nacks = 0;
    *limited = 0;
    for (int i = 0; i < n; i++) {
        snprintf(req_id, sizeof req_id, "%s-%d", tag, i);
        nth_filter f = {.str_path = "id", .str_value = req_id};
        const char *json;
        size_t len;
        int rc = nth_wait_for(c, &f, NTH_WAIT_MS, &json, &len);
        CHECK_EQ_INT(rc, 1);
        if (rc != 1) return nacks;
        if (ntc_json_is_type(json, len, "ack")) {
            int64_t seq = -1;
            CHECK_EQ_INT(ntc_json_int(json, len, "seq", &seq), 0);
            acks[nacks++] = seq;
            continue;
        }
        char code[64] = "";
        int64_t retry_ms = 0;
        CHECK(ntc_json_is_type(json, len, "error"));
        CHECK(ntc_json_str(json, len, "code", code, sizeof code) > 0);
        CHECK_STR_EQ(code, "rate_limited");
        CHECK(ntc_json_str(json, len, "message", text, sizeof text) > 0);
        CHECK_EQ_INT(ntc_json_int(json, len, "retry_after_ms", &retry_ms), 0);
        /* At 1 a second a token is never more than 1000 ms away. */
        CHECK(retry_ms >= 1 && retry_ms <= 1000);
        if (!strcmp(code, "rate_limited"))
            ++*limited;
        else
            fprintf(stderr, "  %s answered %.*s\n", req_id, (int)len, json);
    }
    return nacks;
}

/* The seqs of the chat's stored messages, ascending; returns how many
 * (at most cap), -1 on failure. */
static int history(const nt_server *srv, const nth_user *u, int64_t chat_id, int64_t *seqs, int cap)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=0&limit=200",
             (long long)chat_id);
    nt_buf body = NT_BUF_INIT;
    int status = nth_api(srv, "GET", path, u->s.access_token, NULL, &body);
    CHECK_EQ_INT(status, 200);
    int n = status == 200 ? ntc_json_count(body.data, body.len, "messages") : -1;
    for (int i = 0; i < n && i < cap; i++) {
        char key[48];
        snprintf(key, sizeof key, "messages.%d.seq", i);
        if (ntc_json_int(body.data, body.len, key, &seqs[i]) != 0) seqs[i] = -1;
    }
    nt_buf_free(&body);
    return n;
}

/* One REST send; returns the status, and the Retry-After seconds (0 if
 * none) and the error code of the answer. */
static int rest_send(const nt_server *srv, const nth_user *u, int64_t chat_id, const char *text,
                     int *retry_after_s, char *code, size_t code_cap)
{
    char path[96], body[256];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    snprintf(body, sizeof body, "{\"text\":\"%s\"}", text);
    ntc_http_req req = {.method = "POST", .path = path, .bearer = u->s.access_token, .body = body};
    nt_buf headers = NT_BUF_INIT, resp = NT_BUF_INIT;
    int status = 0;
    int rc = ntc_http_do(srv->host, srv->port, &req, &status, &headers, &resp);
    CHECK_EQ_INT(rc, 0);
    *retry_after_s = 0;
    code[0] = '\0';
    if (rc == 0) {
        nt_buf_cstr(&headers);
        const char *h = strcasestr(headers.data, "\r\nRetry-After:");
        if (h) *retry_after_s = atoi(h + strlen("\r\nRetry-After:"));
        if (ntc_json_str(resp.data, resp.len, "error.code", code, code_cap) < 0) code[0] = '\0';
        if (status == 429) {
            char message[256];
            CHECK(ntc_json_str(resp.data, resp.len, "error.message", message, sizeof message) > 0);
        }
    }
    nt_buf_free(&headers);
    nt_buf_free(&resp);
    return rc ? rc : status;
}

static nth_user alice, bob, carol;
static int64_t ab_chat, cb_chat;
static int stored; /* messages alice got stored in ab_chat */

static void case_ws_flood(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *c = nth_connect(srv, &carol);
    REQUIRE(a && c);
    int64_t acks[FLOOD];
    int limited = 0;
    int nacks = flood(a, "alice", ab_chat, FLOOD, acks, &limited);
    printf("alice: %d acked, %d rate_limited of %d\n", nacks, limited, FLOOD);
    CHECK(nacks >= 5);
    CHECK(limited >= 10);
    CHECK_EQ_INT(nacks + limited, FLOOD);
    /* The acked ones took seqs 1, 2, 3... in the order sent: no gaps. */
    for (int i = 0; i < nacks; i++)
        CHECK_EQ_INT(acks[i], i + 1);
    stored = nacks;

    /* The refusals show in /metrics as refused WebSocket sends. */
    nt_buf metrics = NT_BUF_INIT;
    CHECK_EQ_INT(nth_api(srv, "GET", "/metrics", NULL, NULL, &metrics), 200);
    const char *line = metrics.data ? strstr(metrics.data, "\nnatter_send_errors_total ") : NULL;
    CHECK(line != NULL);
    if (line) CHECK(atoll(line + strlen("\nnatter_send_errors_total ")) >= limited);
    nt_buf_free(&metrics);

    /* Carol, on the same server while alice is refused, is not. */
    int64_t carol_acks[5];
    int carol_limited = 0;
    CHECK_EQ_INT(flood(c, "carol", cb_chat, 5, carol_acks, &carol_limited), 5);
    CHECK_EQ_INT(carol_limited, 0);

    /* A bad frame is still a bad_request, not a rate_limited. */
    CHECK_EQ_INT(nth_send(a, "empty", ab_chat, "", NULL), 0);
    char code[64] = "";
    CHECK_EQ_INT(nth_wait_ack(a, "empty", NTH_WAIT_MS, NULL, NULL, code, sizeof code), 2);
    CHECK_STR_EQ(code, "bad_request");

    /* Alice's connection is still open and answers. */
    CHECK_EQ_INT(ntc_conn_send_text(a, "{\"type\":\"ping\",\"id\":\"still-there\"}"), 0);
    nth_filter pong = {.type = "pong", .str_path = "id", .str_value = "still-there"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(a, &pong, NTH_WAIT_MS, &json, &len), 1);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(c, NTH_WAIT_MS), 1000);
}

static void case_rest(nt_server *srv)
{
    /* Alice's bucket is the WebSocket's: nearly empty. At 1 a second, 20
     * quick posts cannot all pass. */
    int retry_s = 0, got429 = 0;
    char code[64];
    for (int i = 0; i < 20 && !got429; i++) {
        char text[32];
        snprintf(text, sizeof text, "rest %d", i);
        int status = rest_send(srv, &alice, ab_chat, text, &retry_s, code, sizeof code);
        if (status == 201) {
            stored++;
            continue;
        }
        CHECK_EQ_INT(status, 429);
        CHECK_STR_EQ(code, "rate_limited");
        CHECK(retry_s >= 1);
        got429 = 1;
    }
    CHECK(got429);
    /* Bad input is answered as such, over the limit too: the limit counts
     * only sends that would be stored. */
    CHECK_EQ_INT(rest_send(srv, &alice, ab_chat, "", &retry_s, code, sizeof code), 400);
    CHECK_STR_EQ(code, "bad_request");
    /* Bob, the other member, posts in the same chat as usual. */
    CHECK_EQ_INT(rest_send(srv, &bob, ab_chat, "bob is fine", &retry_s, code, sizeof code), 201);
    CHECK_EQ_INT(retry_s, 0);
    stored++;

    /* Everything acknowledged is stored, nothing refused is, seqs 1..n. */
    int64_t seqs[200];
    int n = history(srv, &bob, ab_chat, seqs, 200);
    CHECK_EQ_INT(n, stored);
    for (int i = 0; i < n && i < 200; i++)
        CHECK_EQ_INT(seqs[i], i + 1);
}

static void case_login(nt_server *srv)
{
    nth_user dave, erin;
    REQUIRE(nth_register(srv, "dave", &dave) == 0);
    REQUIRE(nth_register(srv, "erin", &erin) == 0);
    ntc_session s;
    for (int i = 1; i <= 10; i++) {
        ntc_login(srv->host, srv->port, dave.s.nickname, "wrong-password", &s);
        CHECK_EQ_INT(s.http_status, 401);
    }
    ntc_login(srv->host, srv->port, dave.s.nickname, "wrong-password", &s);
    CHECK_EQ_INT(s.http_status, 429);
    /* The right password no longer helps: the answer must not tell. */
    ntc_login(srv->host, srv->port, dave.s.nickname, dave.password, &s);
    CHECK_EQ_INT(s.http_status, 429);
    /* The login is matched without regard to letter case. */
    char upper[64];
    snprintf(upper, sizeof upper, "%s", dave.s.nickname);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    ntc_login(srv->host, srv->port, upper, dave.password, &s);
    CHECK_EQ_INT(s.http_status, 429);

    /* The answer's shape: 429, Retry-After, the standard error body. */
    char body[256];
    snprintf(body, sizeof body, "{\"login\":\"%s\",\"password\":\"%s\"}", dave.s.nickname,
             dave.password);
    ntc_http_req req = {.method = "POST", .path = "/api/v1/auth/login", .body = body};
    nt_buf headers = NT_BUF_INIT, resp = NT_BUF_INIT;
    int status = 0;
    CHECK_EQ_INT(ntc_http_do(srv->host, srv->port, &req, &status, &headers, &resp), 0);
    CHECK_EQ_INT(status, 429);
    nt_buf_cstr(&headers);
    const char *h = headers.data ? strcasestr(headers.data, "\r\nRetry-After:") : NULL;
    CHECK(h != NULL);
    /* 10 a minute: the next try is at most 6 s away. */
    int retry_s = h ? atoi(h + strlen("\r\nRetry-After:")) : 0;
    CHECK(retry_s >= 1 && retry_s <= 6);
    char code[64] = "";
    CHECK(ntc_json_str(resp.data, resp.len, "error.code", code, sizeof code) > 0);
    CHECK_STR_EQ(code, "rate_limited");
    nt_buf_free(&headers);
    nt_buf_free(&resp);

    /* Another account is not affected, by nickname or by email. */
    CHECK_EQ_INT(ntc_login(srv->host, srv->port, erin.s.nickname, erin.password, &s), 0);
    CHECK_EQ_INT(ntc_login(srv->host, srv->port, erin.email, erin.password, &s), 0);
}

/* --send-rate 0 --login-failures 0: a burst far over --send-burst and more
 * wrong passwords than 10 pass through untouched. */
static void case_unlimited(nt_server *srv)
{
    nth_user u, v;
    REQUIRE(nth_register(srv, "free", &u) == 0);
    REQUIRE(nth_register(srv, "open", &v) == 0);
    int64_t chat = nth_direct_chat(srv, &u, &v);
    REQUIRE(chat > 0);
    ntc_conn *c = nth_connect(srv, &u);
    REQUIRE(c);
    int64_t acks[50];
    int limited = 0;
    CHECK_EQ_INT(flood(c, "free", chat, 50, acks, &limited), 50);
    CHECK_EQ_INT(limited, 0);
    CHECK_EQ_INT(ntc_conn_close(c, NTH_WAIT_MS), 1000);
    ntc_session s;
    for (int i = 0; i < 12; i++) {
        ntc_login(srv->host, srv->port, u.s.nickname, "wrong-password", &s);
        CHECK_EQ_INT(s.http_status, 401);
    }
    CHECK_EQ_INT(ntc_login(srv->host, srv->port, u.s.nickname, u.password, &s), 0);
}

int main(void)
{
    nt_server *srv = nth_start("--send-rate 1 --send-burst 5 --login-failures 10");
    CHECK(srv != NULL);
    if (!srv) return check_exit();
    CHECK_EQ_INT(nth_register(srv, "alice", &alice), 0);
    CHECK_EQ_INT(nth_register(srv, "bob", &bob), 0);
    CHECK_EQ_INT(nth_register(srv, "carol", &carol), 0);
    ab_chat = nth_direct_chat(srv, &alice, &bob);
    cb_chat = nth_direct_chat(srv, &carol, &bob);
    CHECK(ab_chat > 0 && cb_chat > 0);
    if (ab_chat > 0 && cb_chat > 0) {
        NTH_CASE("WebSocket sends over --send-rate are refused, others are not", case_ws_flood,
                 srv);
        NTH_CASE("REST sends share the bucket: 429 with Retry-After", case_rest, srv);
    }
    NTH_CASE("the 11th failed login of an account gets 429, right password too", case_login, srv);
    nth_case_begin("stops cleanly");
    CHECK_EQ_INT(nth_stop(srv), 0);
    nth_case_end();
    if (check_failures) nth_dump_log(srv, 3000);
    nth_free(srv, check_failures == 0);

    nt_server *open_srv = nth_start("--send-rate 0 --send-burst 1 --login-failures 0");
    CHECK(open_srv != NULL);
    if (!open_srv) return check_exit();
    NTH_CASE("--send-rate 0 and --login-failures 0 limit nothing", case_unlimited, open_srv);
    CHECK_EQ_INT(nth_stop(open_srv), 0);
    if (check_failures) nth_dump_log(open_srv, 3000);
    nth_free(open_srv, check_failures == 0);
    return check_exit();
}
