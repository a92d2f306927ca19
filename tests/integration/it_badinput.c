/*
 * Integration test: every kind of bad input against a real natterd, over
 * HTTP and WebSocket: malformed JSON, wrong types, missing fields, values
 * out of range, oversize bodies, headers and frames, broken WebSocket
 * framing, garbage and expired tokens, chats the caller is not in, unknown
 * ids, a request trickling in a byte at a time and a client that never
 * reads. Each case is printed by name; after each one the server must still
 * answer /healthz and carry a normal chat between two users.
 *
 * Expectations come from API.md: 400 bad_request (whose message names the
 * field), 401, 403/404, 413, 431, WebSocket errors as {"type":"error"}
 * frames that leave the connection open, and close codes 1002, 1007, 1009,
 * 4001 for frames that break the protocol.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "integration/harness.h"
#include "net/ws.h"

static nth_user alice, bob, carol; /* carol is in no chat with the others */
static int64_t chat_id;            /* alice and bob's direct chat */

/* A second server whose access tokens live 10 s, and a user on it whose
 * token is expired by the time the token case runs. */
static nt_server *short_srv;
static nth_user eve;
static uint64_t eve_registered_ns;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char messages_path[96]; /* /api/v1/chats/{chat_id}/messages */

/* ---- expectations ------------------------------------------------------------ */

/* One REST call; checks the status, and for errors the code word and that
 * the message names `field` (when given). */
static void expect_http(nt_server *srv, const char *what, const char *method, const char *path,
                        const char *token, const char *body, int want_status, const char *want_code,
                        const char *field)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, method, path, token, body, &resp);
    check_count++;
    if (status != want_status) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: %s %s -> %d, want %d; body %.300s\n", what, method, path,
                status, want_status, resp.data ? resp.data : "");
    }
    if (want_code && status == want_status) {
        char code[64] = "", message[512] = "";
        ntc_json_str(resp.data, resp.len, "error.code", code, sizeof code);
        ntc_json_str(resp.data, resp.len, "error.message", message, sizeof message);
        check_count++;
        if (strcmp(code, want_code) != 0) {
            check_failures++;
            fprintf(stderr, "  FAILED %s: error.code '%s', want '%s' (body %.300s)\n", what, code,
                    want_code, resp.data ? resp.data : "");
        }
        check_count++;
        if (field && !strstr(message, field)) {
            check_failures++;
            fprintf(stderr, "  FAILED %s: error.message '%s' does not name '%s'\n", what, message,
                    field);
        }
    }
    nt_buf_free(&resp);
}

/* Like expect_http, but 403 and 404 are both right (a chat one is not in
 * may be hidden or forbidden). */
static void expect_http_403_404(nt_server *srv, const char *what, const char *method,
                                const char *path, const char *token, const char *body)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, method, path, token, body, &resp);
    check_count++;
    if (status != 403 && status != 404) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: %s %s -> %d, want 403 or 404; body %.300s\n", what, method,
                path, status, resp.data ? resp.data : "");
    }
    nt_buf_free(&resp);
}

/* Sends raw bytes as a request and checks the answer's status. */
static void expect_raw(nt_server *srv, const char *what, const void *request, size_t len,
                       int want_status)
{
    int status = 0;
    nt_buf body = NT_BUF_INIT;
    int rc = ntc_http_raw(srv->host, srv->port, request, len, NTH_WAIT_MS, &status, NULL, &body);
    check_count++;
    if (rc != 0 || status != want_status) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: rc %d, status %d, want %d\n", what, rc, status, want_status);
    }
    nt_buf_free(&body);
}

/* Sends one frame on an authenticated connection and expects an error
 * frame (with the request id echoed when req_id is set, and the code when
 * want_code is set); the connection must stay open. */
static void expect_ws_error(ntc_conn *c, const char *what, const char *frame, size_t frame_len,
                            const char *req_id, const char *want_code)
{
    CHECK_EQ_INT(ntc_conn_send_textn(c, frame, frame_len), 0);
    nth_filter f = {.type = "error", .str_path = req_id ? "id" : NULL, .str_value = req_id};
    const char *json;
    size_t len;
    int rc = nth_wait_for(c, &f, NTH_WAIT_MS, &json, &len);
    check_count++;
    if (rc != 1) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: no error frame (rc %d, state %d, close %d)\n", what, rc,
                ntc_conn_state(c), ntc_conn_close_code(c));
        return;
    }
    if (want_code) {
        char code[64] = "";
        ntc_json_str(json, len, "code", code, sizeof code);
        check_count++;
        if (strcmp(code, want_code) != 0) {
            check_failures++;
            fprintf(stderr, "  FAILED %s: code '%s', want '%s': %.*s\n", what, code, want_code,
                    (int)len, json);
        }
    }
}

/* The connection still works: a ping frame of the protocol gets its pong. */
static void expect_ws_alive(ntc_conn *c, const char *what)
{
    static unsigned n;
    char frame[64], id[32];
    snprintf(id, sizeof id, "alive-%u", ++n);
    snprintf(frame, sizeof frame, "{\"type\":\"ping\",\"id\":\"%s\"}", id);
    CHECK_EQ_INT(ntc_conn_send_text(c, frame), 0);
    nth_filter f = {.type = "pong", .str_path = "id", .str_value = id};
    const char *json;
    size_t len;
    int rc = nth_wait_for(c, &f, NTH_WAIT_MS, &json, &len);
    check_count++;
    if (rc != 1) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: connection not usable afterwards (rc %d, close %d)\n", what,
                rc, ntc_conn_close_code(c));
    }
}

/* Waits for the server to close c and checks the close code. */
static void expect_ws_close(ntc_conn *c, const char *what, int want_code)
{
    int code = ntc_conn_wait_closed(c, NTH_WAIT_MS);
    check_count++;
    if (code != want_code) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: close code %d, want %d\n", what, code, want_code);
    }
}

/* A WebSocket opened and authenticated as alice. */
static ntc_conn *alice_ws(nt_server *srv)
{
    return nth_connect(srv, &alice);
}

/* ---- after every case ---------------------------------------------------------- */

static void server_still_fine(nt_server *srv)
{
    CHECK(nth_healthy(srv));
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    CHECK(a && b);
    if (a && b) {
        static unsigned n;
        char req_id[32], text[64];
        snprintf(req_id, sizeof req_id, "sanity-%u", ++n);
        snprintf(text, sizeof text, "still here %u", n);
        int64_t seq = -1;
        CHECK_EQ_INT(nth_send(a, req_id, chat_id, text, NULL), 0);
        CHECK_EQ_INT(nth_wait_ack(a, req_id, NTH_WAIT_MS, &seq, NULL, NULL, 0), 1);
        char got[64] = "";
        CHECK_EQ_INT(nth_wait_message(b, chat_id, seq, NTH_WAIT_MS, NULL, got, sizeof got), 1);
        CHECK_STR_EQ(got, text);
    }
    ntc_conn_close(a, NTH_WAIT_MS);
    ntc_conn_close(b, NTH_WAIT_MS);
}

/* ---- HTTP cases ------------------------------------------------------------------ */

static void case_malformed_json(nt_server *srv)
{
    const char *tok = alice.s.access_token;
    expect_http(srv, "cut-off JSON", "POST", "/api/v1/auth/register", NULL,
                "{\"email\": \"x@y.z\", \"password\": ", 400, "bad_request", NULL);
    expect_http(srv, "trailing garbage", "POST", messages_path, tok, "{\"text\":\"hi\"} x", 400,
                "bad_request", NULL);
    expect_http(srv, "array instead of object", "POST", messages_path, tok, "[\"hi\"]", 400,
                "bad_request", NULL);
    expect_http(srv, "single quotes", "POST", messages_path, tok, "{'text':'hi'}", 400,
                "bad_request", NULL);
    expect_http(srv, "empty body", "POST", "/api/v1/auth/login", NULL, "", 400, "bad_request",
                NULL);
    expect_http(srv, "deep nesting", "POST", messages_path, tok,
                "{\"text\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]"
                "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
                400, "bad_request", NULL);
    expect_http(srv, "invalid UTF-8 inside a string", "POST", messages_path, tok,
                "{\"text\":\"\xff\xfe\"}", 400, "bad_request", NULL);
    expect_http(srv, "lone surrogate escape", "POST", messages_path, tok, "{\"text\":\"\\ud800\"}",
                400, "bad_request", NULL);
}

static void case_wrong_types(nt_server *srv)
{
    const char *tok = alice.s.access_token;
    expect_http(srv, "email as a number", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":5,\"password\":\"long enough pw\",\"nickname\":\"typed1\"}", 400,
                "bad_request", "email");
    expect_http(srv, "text as a number", "POST", messages_path, tok, "{\"text\":42}", 400,
                "bad_request", "text");
    expect_http(srv, "client_id as an array", "POST", messages_path, tok,
                "{\"text\":\"hi\",\"client_id\":[]}", 400, "bad_request", "client_id");
    expect_http(srv, "user_id as a string", "POST", "/api/v1/chats", tok,
                "{\"type\":\"direct\",\"user_id\":\"abc\"}", 400, "bad_request", "user_id");
    char path[96];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/read", (long long)chat_id);
    expect_http(srv, "read seq as a string", "POST", path, tok, "{\"seq\":\"x\"}", 400,
                "bad_request", "seq");
    expect_http(srv, "bio as an object", "PATCH", "/api/v1/users/me", tok, "{\"bio\":{}}", 400,
                "bad_request", "bio");
    expect_http(srv, "login as null", "POST", "/api/v1/auth/login", NULL,
                "{\"login\":null,\"password\":\"whatever1\"}", 400, "bad_request", "login");
}

static void case_missing_fields(nt_server *srv)
{
    const char *tok = alice.s.access_token;
    expect_http(srv, "register without nickname", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":\"nonick@example.test\",\"password\":\"long enough pw\"}", 400,
                "bad_request", "nickname");
    expect_http(srv, "register without password", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":\"nopw@example.test\",\"nickname\":\"nopw1\"}", 400, "bad_request",
                "password");
    expect_http(srv, "message without text", "POST", messages_path, tok, "{}", 400, "bad_request",
                "text");
    expect_http(srv, "chat without type", "POST", "/api/v1/chats", tok, "{}", 400, "bad_request",
                "type");
    expect_http(srv, "direct chat without user_id", "POST", "/api/v1/chats", tok,
                "{\"type\":\"direct\"}", 400, "bad_request", "user_id");
    expect_http(srv, "login without password", "POST", "/api/v1/auth/login", NULL,
                "{\"login\":\"someone\"}", 400, "bad_request", "password");
    expect_http(srv, "refresh without token", "POST", "/api/v1/auth/refresh", NULL, "{}", 400,
                "bad_request", "refresh_token");
}

static void case_out_of_range(nt_server *srv)
{
    const char *tok = alice.s.access_token;
    expect_http(srv, "nickname of 2 characters", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":\"short@example.test\",\"password\":\"long enough pw\","
                "\"nickname\":\"ab\"}",
                400, "bad_request", "nickname");
    expect_http(srv, "nickname of 33 characters", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":\"long@example.test\",\"password\":\"long enough pw\","
                "\"nickname\":\"abcdefghijabcdefghijabcdefghijabc\"}",
                400, "bad_request", "nickname");
    expect_http(srv, "nickname with a space", "POST", "/api/v1/auth/register", NULL,
                "{\"email\":\"space@example.test\",\"password\":\"long enough pw\","
                "\"nickname\":\"bad name\"}",
                400, "bad_request", "nickname");
    expect_http(
        srv, "password of 7 bytes", "POST", "/api/v1/auth/register", NULL,
        "{\"email\":\"pw7@example.test\",\"password\":\"1234567\",\"nickname\":\"pw7user\"}", 400,
        "bad_request", "password");
    expect_http(srv, "empty text", "POST", messages_path, tok, "{\"text\":\"\"}", 400,
                "bad_request", "text");
    expect_http(srv, "text with NUL", "POST", messages_path, tok, "{\"text\":\"a\\u0000b\"}", 400,
                "bad_request", "text");
    /* 4097 code points of two bytes each: over the limit in code points,
     * well under the body limit. */
    nt_buf body = NT_BUF_INIT;
    nt_buf_append_str(&body, "{\"text\":\"");
    for (int i = 0; i < 4097; i++)
        nt_buf_append_str(&body, "\xc3\xa9");
    nt_buf_append_str(&body, "\"}");
    expect_http(srv, "text of 4097 code points", "POST", messages_path, tok, nt_buf_cstr(&body),
                400, "bad_request", "text");
    /* Exactly 4096 is fine. */
    nt_buf_reset(&body);
    nt_buf_append_str(&body, "{\"text\":\"");
    for (int i = 0; i < 4096; i++)
        nt_buf_append_str(&body, "\xc3\xa9");
    nt_buf_append_str(&body, "\"}");
    expect_http(srv, "text of 4096 code points", "POST", messages_path, tok, nt_buf_cstr(&body),
                201, NULL, NULL);
    nt_buf_reset(&body);
    nt_buf_append_str(&body, "{\"bio\":\"");
    for (int i = 0; i < 501; i++)
        nt_buf_append_str(&body, "b");
    nt_buf_append_str(&body, "\"}");
    expect_http(srv, "bio of 501 code points", "PATCH", "/api/v1/users/me", tok, nt_buf_cstr(&body),
                400, "bad_request", "bio");
    nt_buf_free(&body);
    expect_http(srv, "birth_date 2020-13-45", "PATCH", "/api/v1/users/me", tok,
                "{\"birth_date\":\"2020-13-45\"}", 400, "bad_request", "birth_date");
    expect_http(srv, "gender robot", "PATCH", "/api/v1/users/me", tok, "{\"gender\":\"robot\"}",
                400, "bad_request", "gender");
    expect_http(srv, "avatar_url not http(s)", "PATCH", "/api/v1/users/me", tok,
                "{\"avatar_url\":\"javascript:alert(1)\"}", 400, "bad_request", "avatar_url");
    char path[128];
    snprintf(path, sizeof path, "%s?limit=201", messages_path);
    expect_http(srv, "limit 201", "GET", path, tok, NULL, 400, "bad_request", "limit");
    snprintf(path, sizeof path, "%s?limit=0", messages_path);
    expect_http(srv, "limit 0", "GET", path, tok, NULL, 400, "bad_request", "limit");
    snprintf(path, sizeof path, "%s?after_seq=-5", messages_path);
    expect_http(srv, "after_seq -5", "GET", path, tok, NULL, 400, "bad_request", "after_seq");
    snprintf(path, sizeof path, "%s?limit=abc", messages_path);
    expect_http(srv, "limit abc", "GET", path, tok, NULL, 400, "bad_request", "limit");
    snprintf(path, sizeof path, "%s?limit=99999999999999999999999", messages_path);
    expect_http(srv, "limit beyond int64", "GET", path, tok, NULL, 400, "bad_request", "limit");
    snprintf(path, sizeof path, "/api/v1/chats/%lld/read", (long long)chat_id);
    expect_http(srv, "read seq 0", "POST", path, tok, "{\"seq\":0}", 400, "bad_request", "seq");
}

static void case_oversize_body(nt_server *srv)
{
    /* 64 KiB + 1 of valid JSON. */
    size_t len = 65537;
    char *body = malloc(len + 1);
    memcpy(body, "{\"text\":\"", 9);
    memset(body + 9, 'a', len - 11);
    memcpy(body + len - 2, "\"}", 3);
    expect_http(srv, "body of 64 KiB + 1", "POST", messages_path, alice.s.access_token, body, 413,
                "payload_too_large", NULL);
    /* Also without authentication: the cap holds before the token check. */
    expect_http(srv, "body of 64 KiB + 1 on register", "POST", "/api/v1/auth/register", NULL, body,
                413, "payload_too_large", NULL);
    free(body);
    /* A huge Content-Length and no body: refused at once, not awaited. */
    const char *req = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n";
    expect_raw(srv, "Content-Length 1e9 without the body", req, strlen(req), 413);
    /* The same with a chunked body: the chunk size already says too much.
     * (Refusing chunked bodies altogether, 411/501, would be fine too.) */
    const char *chunked = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                          "Transfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n";
    int status = 0;
    int rc = ntc_http_raw(srv->host, srv->port, chunked, strlen(chunked), NTH_WAIT_MS, &status,
                          NULL, NULL);
    check_count++;
    if (rc != 0 || (status != 413 && status != 400 && status != 411 && status != 501)) {
        check_failures++;
        fprintf(stderr,
                "  FAILED chunked body announcing a 4 GiB chunk, no data: rc %d, "
                "status %d, want 413 at once\n",
                rc, status);
    }
    /* 64 KiB + 1 sent in chunks. */
    nt_buf req_chunks = NT_BUF_INIT;
    nt_buf_append_str(&req_chunks, "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 16; i++) {
        nt_buf_append_str(&req_chunks, "1000\r\n");
        for (int k = 0; k < 4096; k++)
            nt_buf_append(&req_chunks, " ", 1);
        nt_buf_append_str(&req_chunks, "\r\n");
    }
    nt_buf_append_str(&req_chunks, "1\r\n \r\n0\r\n\r\n");
    expect_raw(srv, "64 KiB + 1 in chunks", req_chunks.data, req_chunks.len, 413);
    nt_buf_free(&req_chunks);
}

static void case_oversize_headers(nt_server *srv)
{
    nt_buf req = NT_BUF_INIT;
    nt_buf_append_str(&req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    for (int i = 0; i < 70000; i++)
        nt_buf_append(&req, "h", 1);
    nt_buf_append_str(&req, "\r\n\r\n");
    expect_raw(srv, "one header of 70000 bytes", req.data, req.len, 431);
    nt_buf_reset(&req);
    nt_buf_append_str(&req, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 2000; i++)
        nt_buf_appendf(&req, "X-Many-%d: %d\r\n", i, i);
    nt_buf_append_str(&req, "\r\n");
    expect_raw(srv, "2000 headers", req.data, req.len, 431);
    nt_buf_reset(&req);
    nt_buf_append_str(&req, "GET /healthz?");
    for (int i = 0; i < 70000; i++)
        nt_buf_append(&req, "q", 1);
    nt_buf_append_str(&req, " HTTP/1.1\r\nHost: x\r\n\r\n");
    int status = 0;
    int rc =
        ntc_http_raw(srv->host, srv->port, req.data, req.len, NTH_WAIT_MS, &status, NULL, NULL);
    CHECK_EQ_INT(rc, 0);
    CHECK(status == 414 || status == 431 || status == 400);
    nt_buf_free(&req);
}

static void case_malformed_requests(nt_server *srv)
{
    const char *garbage = "GARBAGE\r\n\r\n";
    expect_raw(srv, "garbage request line", garbage, strlen(garbage), 400);
    const char *binary = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
    expect_raw(srv, "a TLS hello", binary, strlen(binary), 400);
    const char *bad_cl = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: abc\r\n\r\n";
    expect_raw(srv, "Content-Length abc", bad_cl, strlen(bad_cl), 400);
    const char *two_cl = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    expect_raw(srv, "two different Content-Lengths", two_cl, strlen(two_cl), 400);
    expect_http(srv, "unknown endpoint", "GET", "/api/v1/no-such-thing", alice.s.access_token, NULL,
                404, "not_found", NULL);
    /* An upgrade without a key is not a WebSocket. */
    const char *no_key = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    int status = 0;
    CHECK_EQ_INT(ntc_http_raw(srv->host, srv->port, no_key, strlen(no_key), NTH_WAIT_MS, &status,
                              NULL, NULL),
                 0);
    CHECK(status >= 400 && status < 500);
    const char *bad_key = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n";
    CHECK_EQ_INT(ntc_http_raw(srv->host, srv->port, bad_key, strlen(bad_key), NTH_WAIT_MS, &status,
                              NULL, NULL),
                 0);
    CHECK(status >= 400 && status < 500);
}

/* ---- tokens ------------------------------------------------------------------------ */

static void ws_auth_expect_4001(nt_server *srv, const char *what, const char *first_frame)
{
    ntc_conn *c = ntc_conn_connect_blocking(srv->host, srv->port, NTH_WAIT_MS);
    CHECK(c != NULL);
    if (!c) return;
    CHECK_EQ_INT(ntc_conn_send_text(c, first_frame), 0);
    const char *json;
    size_t len;
    int rc = ntc_conn_wait_type(c, "ready", NTH_WAIT_MS, &json, &len);
    check_count++;
    if (rc == 1) {
        check_failures++;
        fprintf(stderr, "  FAILED %s: the server said ready\n", what);
    }
    expect_ws_close(c, what, NT_WS_CLOSE_AUTH);
    ntc_conn_free(c);
}

static void case_tokens(nt_server *srv)
{
    expect_http(srv, "garbage bearer", "GET", "/api/v1/users/me", "garbage", NULL, 401,
                "unauthorized", NULL);
    expect_http(srv, "no token", "GET", "/api/v1/users/me", NULL, NULL, 401, "unauthorized", NULL);
    expect_http(srv, "three dots", "GET", "/api/v1/chats", "a.b.c", NULL, 401, "unauthorized",
                NULL);
    /* alice's token with its signature altered. */
    char forged[sizeof alice.s.access_token];
    snprintf(forged, sizeof forged, "%s", alice.s.access_token);
    size_t n = strlen(forged);
    forged[n - 2] = forged[n - 2] == 'A' ? 'B' : 'A';
    expect_http(srv, "altered signature", "GET", "/api/v1/users/me", forged, NULL, 401,
                "unauthorized", NULL);
    /* alice's token with an altered payload (still signed for the old). */
    snprintf(forged, sizeof forged, "%s", alice.s.access_token);
    char *dot = strchr(forged, '.');
    if (dot && dot[1]) dot[2] = dot[2] == 'x' ? 'y' : 'x';
    expect_http(srv, "altered payload", "GET", "/api/v1/users/me", forged, NULL, 401,
                "unauthorized", NULL);
    /* A refresh token is not an access token. */
    expect_http(srv, "refresh token as bearer", "GET", "/api/v1/users/me", alice.s.refresh_token,
                NULL, 401, "unauthorized", NULL);
    expect_http(srv, "garbage refresh token", "POST", "/api/v1/auth/refresh", NULL,
                "{\"refresh_token\":\"garbage\"}", 401, "unauthorized", NULL);

    ws_auth_expect_4001(srv, "ws: garbage token", "{\"type\":\"auth\",\"token\":\"garbage\"}");
    ws_auth_expect_4001(srv, "ws: token as a number", "{\"type\":\"auth\",\"token\":12}");
    ws_auth_expect_4001(srv, "ws: send before auth",
                        "{\"type\":\"send\",\"chat_id\":1,\"text\":\"hi\"}");
    ws_auth_expect_4001(srv, "ws: not JSON before auth", "hello?");
    char frame[1200];
    snprintf(frame, sizeof frame, "{\"type\":\"auth\",\"token\":\"%s\"}", forged);
    ws_auth_expect_4001(srv, "ws: altered token", frame);

    /* Expired: eve's token from the 10-second server. */
    if (short_srv) {
        uint64_t age_ms = (nt_mono_ns() - eve_registered_ns) / 1000000u;
        if (age_ms < 12000) sleep_ms((int)(12000 - age_ms));
        expect_http(short_srv, "expired token", "GET", "/api/v1/users/me", eve.s.access_token, NULL,
                    401, "unauthorized", NULL);
        snprintf(frame, sizeof frame, "{\"type\":\"auth\",\"token\":\"%s\"}", eve.s.access_token);
        ws_auth_expect_4001(short_srv, "ws: expired token", frame);
        /* The refresh token still gives a fresh access token. */
        char body[700];
        snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", eve.s.refresh_token);
        expect_http(short_srv, "refresh after expiry", "POST", "/api/v1/auth/refresh", NULL, body,
                    200, NULL, NULL);
        CHECK(nth_healthy(short_srv));
    } else {
        CHECK(!"the short-token server did not start");
    }
}

/* ---- membership and ids ------------------------------------------------------------ */

static void case_not_a_member(nt_server *srv)
{
    const char *tok = carol.s.access_token;
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld", (long long)chat_id);
    expect_http_403_404(srv, "get a chat one is not in", "GET", path, tok, NULL);
    expect_http_403_404(srv, "read its history", "GET", messages_path, tok, NULL);
    expect_http_403_404(srv, "post into it", "POST", messages_path, tok, "{\"text\":\"intruder\"}");
    snprintf(path, sizeof path, "/api/v1/chats/%lld/read", (long long)chat_id);
    expect_http_403_404(srv, "move its read marker", "POST", path, tok, "{\"seq\":1}");
    snprintf(path, sizeof path, "/api/v1/chats/%lld/members", (long long)chat_id);
    char body[64];
    snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)carol.s.user_id);
    expect_http_403_404(srv, "add oneself to a direct chat", "POST", path, tok, body);
    snprintf(path, sizeof path, "/api/v1/chats/%lld/export", (long long)chat_id);
    expect_http_403_404(srv, "export it", "GET", path, tok, NULL);

    ntc_conn *c = nth_connect(srv, &carol);
    CHECK(c != NULL);
    if (c) {
        char frame[160];
        snprintf(frame, sizeof frame,
                 "{\"type\":\"send\",\"id\":\"x1\",\"chat_id\":%lld,\"text\":\"intruder\"}",
                 (long long)chat_id);
        CHECK_EQ_INT(ntc_conn_send_text(c, frame), 0);
        char code[64] = "";
        CHECK_EQ_INT(nth_wait_ack(c, "x1", NTH_WAIT_MS, NULL, NULL, code, sizeof code), 2);
        CHECK(!strcmp(code, "not_found") || !strcmp(code, "forbidden"));
        snprintf(frame, sizeof frame, "{\"type\":\"typing\",\"chat_id\":%lld}", (long long)chat_id);
        CHECK_EQ_INT(ntc_conn_send_text(c, frame), 0);
        expect_ws_alive(c, "after typing into a foreign chat");
        ntc_conn_close(c, NTH_WAIT_MS);
    }
    /* Nothing from carol reached the chat. */
    nt_buf resp = NT_BUF_INIT;
    char hist[160];
    snprintf(hist, sizeof hist, "%s?limit=200", messages_path);
    CHECK_EQ_INT(nth_api(srv, "GET", hist, alice.s.access_token, NULL, &resp), 200);
    CHECK(resp.data && !strstr(resp.data, "intruder"));
    nt_buf_free(&resp);
}

static void case_unknown_ids(nt_server *srv)
{
    const char *tok = alice.s.access_token;
    expect_http(srv, "unknown chat", "GET", "/api/v1/chats/999999999", tok, NULL, 404, "not_found",
                NULL);
    expect_http(srv, "unknown chat's messages", "GET", "/api/v1/chats/999999999/messages", tok,
                NULL, 404, "not_found", NULL);
    expect_http(srv, "post to an unknown chat", "POST", "/api/v1/chats/999999999/messages", tok,
                "{\"text\":\"hi\"}", 404, "not_found", NULL);
    expect_http(srv, "unknown user", "GET", "/api/v1/users/999999999", tok, NULL, 404, "not_found",
                NULL);
    expect_http(srv, "unknown nickname", "GET", "/api/v1/users/by-nickname/nobody_here_xyz", tok,
                NULL, 404, "not_found", NULL);
    expect_http(srv, "direct chat with an unknown user", "POST", "/api/v1/chats", tok,
                "{\"type\":\"direct\",\"user_id\":999999999}", 404, "not_found", NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/999999", messages_path);
    expect_http(srv, "edit an unknown message", "PATCH", path, tok, "{\"text\":\"x\"}", 404,
                "not_found", NULL);
    expect_http(srv, "accept a request never made", "POST",
                "/api/v1/friends/requests/999999999/accept", tok, NULL, 404, "not_found", NULL);
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, "GET", "/api/v1/chats/abc", tok, NULL, &resp);
    CHECK(status == 400 || status == 404);
    status = nth_api(srv, "GET", "/api/v1/chats/99999999999999999999999", tok, NULL, &resp);
    CHECK(status == 400 || status == 404);
    nt_buf_free(&resp);

    ntc_conn *c = alice_ws(srv);
    CHECK(c != NULL);
    if (c) {
        const char *frame =
            "{\"type\":\"send\",\"id\":\"u1\",\"chat_id\":999999999,\"text\":\"x\"}";
        expect_ws_error(c, "ws: send to an unknown chat", frame, strlen(frame), "u1", "not_found");
        expect_ws_alive(c, "after an unknown chat");
        ntc_conn_close(c, NTH_WAIT_MS);
    }
}

/* ---- WebSocket frames the server must refuse politely ------------------------------ */

static void case_ws_bad_frames(nt_server *srv)
{
    ntc_conn *c = alice_ws(srv);
    REQUIRE(c != NULL);
    char frame[256];
    const char *f;
    f = "{\"type\":\"send\",";
    expect_ws_error(c, "ws: malformed JSON", f, strlen(f), NULL, "bad_request");
    f = "[1,2,3]";
    expect_ws_error(c, "ws: an array", f, strlen(f), NULL, "bad_request");
    f = "{\"type\":\"send\",\"id\":\"t1\",\"chat_id\":\"abc\",\"text\":\"hi\"}";
    expect_ws_error(c, "ws: chat_id as a string", f, strlen(f), "t1", "bad_request");
    snprintf(frame, sizeof frame, "{\"type\":\"send\",\"id\":\"t2\",\"chat_id\":%lld,\"text\":7}",
             (long long)chat_id);
    expect_ws_error(c, "ws: text as a number", frame, strlen(frame), "t2", "bad_request");
    snprintf(frame, sizeof frame, "{\"type\":\"send\",\"id\":\"t3\",\"chat_id\":%lld}",
             (long long)chat_id);
    expect_ws_error(c, "ws: send without text", frame, strlen(frame), "t3", "bad_request");
    f = "{\"type\":\"send\",\"id\":\"t4\",\"text\":\"hi\"}";
    expect_ws_error(c, "ws: send without chat_id", f, strlen(f), "t4", "bad_request");
    snprintf(frame, sizeof frame,
             "{\"type\":\"send\",\"id\":\"t5\",\"chat_id\":%lld,\"text\":\"\"}",
             (long long)chat_id);
    expect_ws_error(c, "ws: empty text", frame, strlen(frame), "t5", "bad_request");
    f = "{\"type\":\"send\",\"id\":\"t6\",\"chat_id\":-3,\"text\":\"hi\"}";
    expect_ws_error(c, "ws: negative chat_id", f, strlen(f), "t6", "bad_request");
    nt_buf big = NT_BUF_INIT;
    nt_buf_appendf(&big, "{\"type\":\"send\",\"id\":\"t7\",\"chat_id\":%lld,\"text\":\"",
                   (long long)chat_id);
    for (int i = 0; i < 4097; i++)
        nt_buf_append_str(&big, "\xc3\xa9");
    nt_buf_append_str(&big, "\"}");
    expect_ws_error(c, "ws: text of 4097 code points", big.data, big.len, "t7", "bad_request");
    nt_buf_free(&big);
    f = "{\"type\":\"no-such-type\",\"id\":\"t8\"}";
    expect_ws_error(c, "ws: unknown type", f, strlen(f), "t8", NULL);
    f = "{\"id\":\"t9\"}";
    expect_ws_error(c, "ws: no type", f, strlen(f), "t9", "bad_request");
    snprintf(frame, sizeof frame,
             "{\"type\":\"read\",\"id\":\"t10\",\"chat_id\":%lld,\"seq\":\"x\"}",
             (long long)chat_id);
    expect_ws_error(c, "ws: read with seq as a string", frame, strlen(frame), "t10", "bad_request");
    f = "{\"type\":\"auth\",\"id\":\"t11\",\"token\":\"again\"}";
    expect_ws_error(c, "ws: a second auth", f, strlen(f), "t11", NULL);
    expect_ws_alive(c, "after bad frames");
    /* A binary frame and a WebSocket-level ping do not break anything. */
    CHECK_EQ_INT(ntc_conn_send_frame(c, NT_WS_OP_PING, "hi", 2), 0);
    expect_ws_alive(c, "after a protocol ping");
    ntc_conn_close(c, NTH_WAIT_MS);
}

/* Sends `frame` (raw bytes or a frame) and expects the server to close
 * with `want`. */
static void ws_expect_protocol_close(nt_server *srv, const char *what, const void *raw,
                                     size_t raw_len, int want)
{
    ntc_conn *c = alice_ws(srv);
    CHECK(c != NULL);
    if (!c) return;
    CHECK_EQ_INT(ntc_conn_send_raw(c, raw, raw_len), 0);
    expect_ws_close(c, what, want);
    ntc_conn_free(c);
}

static void case_oversize_frame(nt_server *srv)
{
    /* One text frame of 64 KiB + 1. */
    size_t len = 65537;
    char *payload = malloc(len);
    memset(payload, 'a', len);
    nt_buf raw = NT_BUF_INIT;
    nt_ws_append_frame(&raw, NT_WS_OP_TEXT, payload, len, true);
    ws_expect_protocol_close(srv, "ws: one frame of 64 KiB + 1", raw.data, raw.len, 1009);
    /* A frame header announcing 2^62 bytes, and nothing after it. */
    const uint8_t huge[] = {0x81, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    ws_expect_protocol_close(srv, "ws: a header announcing 2^62 bytes", huge, sizeof huge, 1009);
    /* A message of 64 KiB + 1 in small fragments. */
    nt_buf_reset(&raw);
    size_t off = 0, step = 4096;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        uint8_t opcode = off == 0 ? NT_WS_OP_TEXT : NT_WS_OP_CONT;
        bool fin = off + n == len;
        /* nt_ws_append_frame writes final frames only: clear FIN by hand. */
        size_t at = raw.len;
        nt_ws_append_frame(&raw, opcode, payload + off, n, true);
        if (!fin) raw.data[at] &= 0x7f;
        off += n;
    }
    ws_expect_protocol_close(srv, "ws: 64 KiB + 1 in fragments", raw.data, raw.len, 1009);
    nt_buf_free(&raw);
    free(payload);
}

static void case_bad_utf8_frame(nt_server *srv)
{
    nt_buf raw = NT_BUF_INIT;
    static const char bad[] = "{\"type\":\"ping\",\"id\":\"\xC3\x28\"}";
    nt_ws_append_frame(&raw, NT_WS_OP_TEXT, bad, sizeof bad - 1, true);
    ws_expect_protocol_close(srv, "ws: invalid UTF-8 text frame", raw.data, raw.len, 1007);
    nt_buf_reset(&raw);
    nt_ws_append_frame(&raw, NT_WS_OP_TEXT, "\xED\xA0\x80", 3, true); /* a surrogate */
    ws_expect_protocol_close(srv, "ws: UTF-8 encoded surrogate", raw.data, raw.len, 1007);
    nt_buf_free(&raw);
}

static void case_protocol_violations(nt_server *srv)
{
    /* Unmasked text frame from a client. */
    const char text[] = "{\"type\":\"ping\",\"id\":1}";
    nt_buf raw = NT_BUF_INIT;
    uint8_t head[2] = {0x81, (uint8_t)(sizeof text - 1)};
    nt_buf_append(&raw, head, 2);
    nt_buf_append(&raw, text, sizeof text - 1);
    ws_expect_protocol_close(srv, "ws: unmasked frame", raw.data, raw.len, 1002);
    nt_buf_reset(&raw);
    nt_ws_append_frame(&raw, 0x3, "x", 1, true);
    ws_expect_protocol_close(srv, "ws: reserved opcode 3", raw.data, raw.len, 1002);
    nt_buf_reset(&raw);
    nt_ws_append_frame(&raw, NT_WS_OP_TEXT, "{}", 2, true);
    raw.data[0] |= 0x40; /* RSV1 without an extension */
    ws_expect_protocol_close(srv, "ws: RSV1 set", raw.data, raw.len, 1002);
    nt_buf_reset(&raw);
    nt_ws_append_frame(&raw, NT_WS_OP_CONT, "x", 1, true);
    ws_expect_protocol_close(srv, "ws: continuation without a start", raw.data, raw.len, 1002);
    nt_buf_reset(&raw);
    char long_ping[126];
    memset(long_ping, 'p', sizeof long_ping);
    nt_ws_append_frame(&raw, NT_WS_OP_PING, long_ping, sizeof long_ping, true);
    ws_expect_protocol_close(srv, "ws: ping of 126 bytes", raw.data, raw.len, 1002);
    nt_buf_free(&raw);
}

/* ---- slow clients --------------------------------------------------------------------- */

static void case_trickle(nt_server *srv)
{
    char body[256];
    snprintf(body, sizeof body, "{\"login\":\"%s\",\"password\":\"%s\"}", alice.s.nickname,
             alice.password);
    char req[1024];
    int req_len = snprintf(req, sizeof req,
                           "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           strlen(body), body);
    int fd = ntc_tcp_connect(srv->host, srv->port, NTH_WAIT_MS);
    REQUIRE(fd >= 0);
    ntc_conn *a = alice_ws(srv);
    ntc_conn *b = nth_connect(srv, &bob);
    CHECK(a && b);
    int served = 0;
    for (int i = 0; i < req_len; i++) {
        CHECK_EQ_INT(send(fd, req + i, 1, MSG_NOSIGNAL), 1);
        sleep_ms(5);
        if (i % 40 == 0) {
            /* Others are served normally meanwhile. */
            CHECK(nth_healthy(srv));
            if (a && b) {
                char req_id[32], text[32];
                snprintf(req_id, sizeof req_id, "trickle-%d", i);
                snprintf(text, sizeof text, "while trickling %d", i);
                int64_t seq = -1;
                CHECK_EQ_INT(nth_send(a, req_id, chat_id, text, NULL), 0);
                CHECK_EQ_INT(nth_wait_ack(a, req_id, NTH_WAIT_MS, &seq, NULL, NULL, 0), 1);
                CHECK_EQ_INT(nth_wait_message(b, chat_id, seq, NTH_WAIT_MS, NULL, NULL, 0), 1);
            }
            served++;
        }
    }
    int status = 0;
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(ntc_http_read_response(fd, NTH_WAIT_MS, &status, NULL, &resp), 0);
    CHECK_EQ_INT(status, 200);
    CHECK(ntc_json_has(resp.data, resp.len, "access_token"));
    printf("  served %d others while one request trickled in (%d bytes)\n", served, req_len);
    nt_buf_free(&resp);
    close(fd);
    ntc_conn_close(a, NTH_WAIT_MS);
    ntc_conn_close(b, NTH_WAIT_MS);
}

static void case_never_reads(nt_server *srv)
{
    ntc_conn *slow = nth_connect(srv, &bob);
    ntc_conn *a = alice_ws(srv);
    REQUIRE(slow && a);

    /* Alice floods the chat with 4000-character messages; each one is an
     * event for bob's connection, which never reads. Bob's connection also
     * asks for pongs it will not read. */
    char text[4001];
    memset(text, 'z', 4000);
    text[4000] = '\0';
    char ping_payload[125];
    memset(ping_payload, 'p', sizeof ping_payload);
    const int batch = 50, goal = 6000; /* ~24 MB for bob, well past any buffer */
    int sent = 0, rate_limited = 0;
    uint64_t deadline = nt_mono_ns() + 120ull * 1000000000u;
    while (sent < goal && nt_mono_ns() < deadline) {
        for (int i = 0; i < batch; i++) {
            char req_id[32];
            snprintf(req_id, sizeof req_id, "flood-%d", sent + i);
            nth_send(a, req_id, chat_id, text, NULL);
        }
        for (int i = 0; i < 100 && ntc_conn_state(slow) != NTC_CLOSED; i++)
            ntc_conn_send_frame(slow, NT_WS_OP_PING, ping_payload, sizeof ping_payload);
        ntc_conn_flush(slow); /* never blocks; what does not fit stays */
        int acked = 0;
        for (int i = 0; i < batch; i++) {
            char req_id[32], code[64] = "";
            snprintf(req_id, sizeof req_id, "flood-%d", sent + i);
            int rc = nth_wait_ack(a, req_id, NTH_WAIT_MS, NULL, NULL, code, sizeof code);
            if (rc == 1)
                acked++;
            else if (rc == 2 && !strcmp(code, "rate_limited"))
                rate_limited++;
            else {
                CHECK_EQ_INT(rc, 1); /* the sender must keep being served */
                fprintf(stderr, "  flood send %d: rc %d code %s\n", sent + i, rc, code);
                goto flood_done;
            }
        }
        sent += acked;
        ntc_conn_drain(a);                /* alice's own copies of the events */
        if (acked < batch) sleep_ms(200); /* rate limited: slow down */
        if ((sent / batch) % 20 == 0) CHECK(nth_healthy(srv));
    }
flood_done:
    printf("  flooded %d messages of 4000 bytes (%d rate-limited sends)\n", sent, rate_limited);
    CHECK(sent >= goal);
    CHECK(nth_healthy(srv));

    /* Now read what bob's connection got: it must end (closed by the
     * server) before all of the flood arrived. */
    int got = 0;
    const char *json;
    size_t len;
    uint64_t read_deadline = nt_mono_ns() + 60ull * 1000000000u;
    while (ntc_conn_state(slow) != NTC_CLOSED && nt_mono_ns() < read_deadline) {
        int rc = ntc_conn_wait(slow, 5000, &json, &len);
        if (rc == 1 && ntc_json_is_type(json, len, "message")) got++;
        if (rc == 0) break; /* nothing more for 5 s and still open */
    }
    printf("  the slow connection received %d of %d messages, then: state %d, close code %d\n", got,
           sent, ntc_conn_state(slow), ntc_conn_close_code(slow));
    CHECK_EQ_INT(ntc_conn_state(slow), NTC_CLOSED);
    CHECK(got < sent);
    int code = ntc_conn_close_code(slow);
    CHECK(code == 1008 || code == 1006);
    ntc_conn_free(slow);
    ntc_conn_close(a, NTH_WAIT_MS);
}

/* ---- main ---------------------------------------------------------------------------- */

typedef struct bad_case {
    const char *name;
    void (*run)(nt_server *srv);
} bad_case;

static const bad_case cases[] = {
    {"malformed JSON", case_malformed_json},
    {"wrong types", case_wrong_types},
    {"missing fields", case_missing_fields},
    {"values out of range", case_out_of_range},
    {"oversize body (413)", case_oversize_body},
    {"oversize headers (431)", case_oversize_headers},
    {"malformed HTTP requests", case_malformed_requests},
    {"garbage and expired tokens (401 / close 4001)", case_tokens},
    {"chats the caller is not in (403/404)", case_not_a_member},
    {"unknown ids (404)", case_unknown_ids},
    {"bad WebSocket frames answered with errors", case_ws_bad_frames},
    {"oversize frame (close 1009)", case_oversize_frame},
    {"invalid UTF-8 text frame (close 1007)", case_bad_utf8_frame},
    {"unmasked and other protocol violations (close 1002)", case_protocol_violations},
    {"a request trickling in one byte at a time", case_trickle},
    {"a client that never reads", case_never_reads},
};

int main(void)
{
    nt_server *srv = nth_start(NULL);
    CHECK(srv != NULL);
    if (!srv) return check_exit();
    short_srv = nth_start("--access-ttl 10");
    if (short_srv && nth_register(short_srv, "eve", &eve) == 0) eve_registered_ns = nt_mono_ns();
    CHECK_EQ_INT(nth_register(srv, "alice", &alice), 0);
    CHECK_EQ_INT(nth_register(srv, "bob", &bob), 0);
    CHECK_EQ_INT(nth_register(srv, "carol", &carol), 0);
    chat_id = nth_direct_chat(srv, &alice, &bob);
    CHECK(chat_id > 0);
    snprintf(messages_path, sizeof messages_path, "/api/v1/chats/%lld/messages",
             (long long)chat_id);

    int failed_cases = 0;
    for (size_t i = 0; chat_id > 0 && i < sizeof cases / sizeof cases[0]; i++) {
        nth_case_begin(cases[i].name);
        cases[i].run(srv);
        server_still_fine(srv);
        if (!nth_case_end()) failed_cases++;
        if (srv->pid > 0 && kill(srv->pid, 0) != 0) {
            fprintf(stderr, "natterd died\n");
            break;
        }
    }
    printf("%d case(s) failed\n", failed_cases);

    nth_case_begin("clean shutdown (SIGTERM, exit 0)");
    CHECK_EQ_INT(nth_stop(srv), 0);
    if (short_srv) CHECK_EQ_INT(nth_stop(short_srv), 0);
    nth_case_end();
    if (check_failures) {
        fprintf(stderr, "--- end of natterd's log:\n");
        nth_dump_log(srv, 3000);
    }
    nth_free(short_srv, check_failures == 0);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
