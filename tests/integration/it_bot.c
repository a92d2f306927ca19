/*
 * Integration test of the built-in bot (issue 4) against real natterd
 * processes. A user finds `bot` by nickname, opens a direct chat with it
 * and talks over WebSocket:
 *
 *  server A (--pow-bits 12 --lobby-interval 1): reverse of ASCII, Cyrillic
 *    and emoji; "!pow" and "!rpc" answered with the reversed text and a
 *    proof the test checks itself with OpenSSL's SHA256(); "Hello world!"
 *    arrives in the lobby within 2.5 s;
 *  server B (--pow-bits 24 --lobby-interval 0): a 24-bit "!pow"; no lobby
 *    message in 3 s;
 *  server C (--pow-bits 28 --pow-max-pending 1 --rpc-timeout 10): the RPC
 *    timeout path (a 28-bit proof needs about 2^28 tries, far more than a
 *    worker can do in 10 ms, so no worker answers in time and the timeout
 *    message must appear; 28 rather than 24 bits keeps the odds of a lucky
 *    early proof near 0.1% even on a fast many-core machine), then the
 *    per-user limit (two "!pow" back to back: the second is refused while
 *    the first is still being worked on), then SIGTERM must stop the server
 *    at once despite a search in progress.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "integration/harness.h"

static nth_user alice;
static nth_user bot;
static int64_t chat_id;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Registers alice, finds the bot, opens their direct chat. */
static bool setup(nt_server *srv)
{
    memset(&alice, 0, sizeof alice);
    memset(&bot, 0, sizeof bot);
    if (nth_register(srv, "alice", &alice) != 0) return false;
    nt_buf resp = NT_BUF_INIT;
    int status =
        nth_api(srv, "GET", "/api/v1/users/by-nickname/bot", alice.s.access_token, NULL, &resp);
    CHECK_EQ_INT(status, 200);
    bool ok = status == 200 && ntc_json_int(resp.data, resp.len, "id", &bot.s.user_id) == 0;
    nt_buf_free(&resp);
    if (!ok) return false;
    chat_id = nth_direct_chat(srv, &alice, &bot);
    return chat_id > 0;
}

/* Waits for the next message from the bot in chat `in_chat`; returns a heap
 * copy of the whole event (caller frees) or NULL on timeout. */
static char *wait_bot(ntc_conn *c, int64_t in_chat, int timeout_ms)
{
    nth_filter f = {.type = "message",
                    .int_path = "message.chat_id",
                    .int_value = in_chat,
                    .int_path2 = "message.sender_id",
                    .int_value2 = bot.s.user_id};
    const char *json;
    size_t len;
    if (nth_wait_for(c, &f, timeout_ms, &json, &len) != 1) return NULL;
    return strndup(json, len);
}

static void send_text(ntc_conn *c, const char *text)
{
    static unsigned n;
    char req_id[32], client_id[64];
    snprintf(req_id, sizeof req_id, "req-%u", ++n);
    snprintf(client_id, sizeof client_id, "bot-it-%d-%u", (int)getpid(), n);
    CHECK_EQ_INT(nth_send(c, req_id, chat_id, text, client_id), 0);
    CHECK_EQ_INT(nth_wait_ack(c, req_id, NTH_WAIT_MS, NULL, NULL, NULL, 0), 1);
}

/* Sends text and expects the bot's answer `want` (and no "pow" on it). */
static void expect_reverse(ntc_conn *c, const char *text, const char *want)
{
    send_text(c, text);
    char *ev = wait_bot(c, chat_id, NTH_WAIT_MS);
    CHECK(ev != NULL);
    if (!ev) {
        fprintf(stderr, "  no answer to '%s'\n", text);
        return;
    }
    char got[512];
    CHECK(ntc_json_str(ev, strlen(ev), "message.text", got, sizeof got) >= 0);
    CHECK_STR_EQ(got, want);
    CHECK(!ntc_json_has(ev, strlen(ev), "message.pow"));
    free(ev);
}

/* Checks an answer to "<prefix>!pow" / "<prefix>!rpc": the reversed prefix,
 * and a pow whose hash the test recomputes. */
static void check_proof(const char *ev, const char *prefix, const char *reversed, int bits)
{
    size_t len = strlen(ev);
    char got[512], hash[80], want_hex[65];
    int64_t nonce = -1, got_bits = -1;
    CHECK(ntc_json_str(ev, len, "message.text", got, sizeof got) >= 0);
    CHECK_STR_EQ(got, reversed);
    CHECK_EQ_INT(ntc_json_int(ev, len, "message.pow.nonce", &nonce), 0);
    CHECK_EQ_INT(ntc_json_int(ev, len, "message.pow.bits", &got_bits), 0);
    CHECK_EQ_INT(got_bits, bits);
    CHECK_EQ_INT(ntc_json_str(ev, len, "message.pow.hash", hash, sizeof hash), 64);
    CHECK(nonce >= 0);

    char input[600];
    int n = snprintf(input, sizeof input, "%s%lld", prefix, (long long)nonce);
    uint8_t digest[32];
    SHA256((const unsigned char *)input, (size_t)n, digest);
    for (int i = 0; i < 32; i++)
        snprintf(want_hex + 2 * i, 3, "%02x", digest[i]);
    CHECK_STR_EQ(hash, want_hex);
    int zeros = 0;
    for (int i = 0; i < 32 && zeros == 8 * i; i++)
        for (int b = 7; b >= 0 && !(digest[i] >> b & 1); b--)
            zeros++;
    CHECK(zeros >= bits);
}

static void expect_proof(ntc_conn *c, const char *text, const char *prefix, const char *reversed,
                         int bits, int timeout_ms)
{
    send_text(c, text);
    double t0 = now_s();
    char *ev = wait_bot(c, chat_id, timeout_ms);
    CHECK(ev != NULL);
    if (!ev) {
        fprintf(stderr, "  no proof for '%s'\n", text);
        return;
    }
    printf("  '%s': proof of %d bits in %.3f s\n", text, bits, now_s() - t0);
    check_proof(ev, prefix, reversed, bits);
    free(ev);
}

/* ---- server A ---------------------------------------------------------------- */

static void case_reverse(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    expect_reverse(c, "hello world", "dlrow olleh");
    expect_reverse(c, "Привет, мир", "рим ,тевирП");
    expect_reverse(c, "pizza 🍕🎉 time", "emit 🎉🍕 azzip");
    expect_reverse(c, "日本 ok 😀", "😀 ko 本日");
    /* "pow" without the "!" is just text. */
    expect_reverse(c, "pow", "wop");
    ntc_conn_free(c);
}

static void case_pow_and_rpc(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    expect_proof(c, "proof me !pow", "proof me ", " em foorp", 12, NTH_WAIT_MS);
    expect_proof(c, "Привет 🌍!pow", "Привет 🌍", "🌍 тевирП", 12, NTH_WAIT_MS);
    expect_proof(c, "call me!rpc", "call me", "em llac", 12, NTH_WAIT_MS);
    expect_proof(c, "мир!rpc", "мир", "рим", 12, NTH_WAIT_MS);
    ntc_conn_free(c);
}

static void case_lobby_on(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    ntc_conn_drain(c);
    nth_filter f = {.type = "message",
                    .int_path = "message.sender_id",
                    .int_value = bot.s.user_id,
                    .str_path = "message.text",
                    .str_value = "Hello world!"};
    const char *json;
    size_t len;
    double t0 = now_s();
    CHECK_EQ_INT(nth_wait_for(c, &f, 2500, &json, &len), 1);
    printf("  Hello world! after %.3f s\n", now_s() - t0);
    /* And it is the lobby. */
    nt_buf resp = NT_BUF_INIT;
    int64_t lobby_chat = -1, got_chat = -2;
    ntc_json_int(json, len, "message.chat_id", &got_chat);
    CHECK_EQ_INT(nth_api(srv, "GET", "/api/v1/chats", alice.s.access_token, NULL, &resp), 200);
    for (int i = 0; resp.data; i++) {
        char path[64], title[64];
        snprintf(path, sizeof path, "chats.%d.title", i);
        int rc = ntc_json_str(resp.data, resp.len, path, title, sizeof title);
        if (rc == -ENOENT) break;
        if (rc >= 0 && strcmp(title, "lobby") == 0) {
            snprintf(path, sizeof path, "chats.%d.id", i);
            ntc_json_int(resp.data, resp.len, path, &lobby_chat);
            break;
        }
    }
    nt_buf_free(&resp);
    CHECK_EQ_INT(got_chat, lobby_chat);
    /* Once a second, not faster. */
    ntc_conn_drain(c);
    t0 = now_s();
    int count = 0;
    double left;
    while ((left = 3.5 - (now_s() - t0)) > 0 &&
           nth_wait_for(c, &f, (int)(left * 1000) + 1, &json, &len) == 1)
        count++;
    printf("  %d lobby messages in 3.5 s\n", count);
    CHECK(count >= 2 && count <= 4);
    ntc_conn_free(c);
}

/* ---- server B ------------------------------------------------------------------ */

static void case_pow_24(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    expect_proof(c, "twenty-four bits !pow", "twenty-four bits ", " stib ruof-ytnewt", 24, 120000);
    ntc_conn_free(c);
}

static void case_lobby_off(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    nth_filter f = {.type = "message", .str_path = "message.text", .str_value = "Hello world!"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(c, &f, 3000, &json, &len), 0);
    ntc_conn_free(c);
}

/* ---- server C ------------------------------------------------------------------ */

static void case_rpc_timeout(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    send_text(c, "too slow!rpc");
    char *ev = wait_bot(c, chat_id, NTH_WAIT_MS);
    CHECK(ev != NULL);
    if (ev) {
        char got[512];
        CHECK(ntc_json_str(ev, strlen(ev), "message.text", got, sizeof got) >= 0);
        CHECK_STR_EQ(got, "proof of work timed out after 10 ms; try again");
        CHECK(!ntc_json_has(ev, strlen(ev), "message.pow"));
        free(ev);
    }
    ntc_conn_free(c);
}

static void case_pending_limit(nt_server *srv)
{
    ntc_conn *c = nth_connect(srv, &alice);
    REQUIRE(c != NULL);
    send_text(c, "first!pow");
    send_text(c, "second!pow");
    char *ev = wait_bot(c, chat_id, NTH_WAIT_MS);
    CHECK(ev != NULL);
    if (ev) {
        char got[512];
        CHECK(ntc_json_str(ev, strlen(ev), "message.text", got, sizeof got) >= 0);
        CHECK(strncmp(got, "too many proof-of-work jobs pending: at most 1 per user", 55) == 0);
        if (strncmp(got, "too many", 8) != 0) fprintf(stderr, "  got '%s'\n", got);
        free(ev);
    }
    ntc_conn_free(c);
    /* The first job is still searching (2^28 tries): SIGTERM must not wait
     * for it. */
    double t0 = now_s();
    CHECK_EQ_INT(nth_stop(srv), 0);
    double took = now_s() - t0;
    printf("  stopped in %.3f s with a search running\n", took);
    CHECK(took < 5.0);
}

static nt_server *start(const char *args)
{
    nt_server *srv = nth_start(args);
    CHECK(srv != NULL);
    if (!srv) return NULL;
    bool ok = setup(srv);
    CHECK(ok);
    if (!ok) {
        nth_free(srv, false);
        return NULL;
    }
    return srv;
}

static void finish(nt_server *srv)
{
    if (!srv) return;
    if (srv->pid) CHECK_EQ_INT(nth_stop(srv), 0);
    if (check_failures) nth_dump_log(srv, 3000);
    nth_free(srv, check_failures == 0);
}

int main(void)
{
    nt_server *srv = start("--pow-bits 12 --lobby-interval 1");
    if (srv) {
        NTH_CASE("the bot reverses ASCII, Cyrillic, CJK and emoji by code point", case_reverse,
                 srv);
        NTH_CASE("!pow and !rpc answer with the reversed text and a valid 12-bit proof",
                 case_pow_and_rpc, srv);
        NTH_CASE("with --lobby-interval 1 Hello world! reaches the lobby every second",
                 case_lobby_on, srv);
        finish(srv);
    }

    srv = start("--pow-bits 24 --lobby-interval 0");
    if (srv) {
        NTH_CASE("!pow at 24 bits", case_pow_24, srv);
        NTH_CASE("with --lobby-interval 0 no Hello world! in 3 s", case_lobby_off, srv);
        finish(srv);
    }

    srv = start("--pow-bits 28 --pow-max-pending 1 --rpc-timeout 10 --lobby-interval 0");
    if (srv) {
        NTH_CASE("!rpc that no worker finishes in time gets the timeout message", case_rpc_timeout,
                 srv);
        NTH_CASE("a second !pow past --pow-max-pending is refused; SIGTERM does not wait for "
                 "a search",
                 case_pending_limit, srv);
        finish(srv);
    }
    return check_exit();
}
