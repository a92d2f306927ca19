/*
 * Integration test: chatting over WebSocket against a real natterd.
 * Two users talk both ways (ack, then delivery; seq grows by one without
 * gaps), one user on three connections sees every event on each, a retried
 * send with the same client_id is stored and delivered once, a reconnecting
 * client catches up with after_seq, and the history survives a restart on
 * the same data folder.
 *
 * The cases share one server, two users and their direct chat; `last_seq`
 * follows the chat's last message from case to case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integration/harness.h"

static nth_user alice, bob;
static int64_t chat_id;
static int64_t last_seq;

/* A client_id no other run or case uses. */
static const char *fresh_client_id(void)
{
    static char id[64];
    static unsigned n;
    snprintf(id, sizeof id, "cid-%d-%u", (int)getpid(), ++n);
    return id;
}

/* Sends text as `from` on c and checks the ack: seq is last_seq + 1.
 * Returns the seq (or -1). */
static int64_t send_checked(ntc_conn *c, const char *text, int64_t *message_id)
{
    static unsigned n;
    char req_id[32];
    snprintf(req_id, sizeof req_id, "req-%u", ++n);
    int64_t seq = -1, mid = -1;
    char code[64] = "";
    CHECK_EQ_INT(nth_send(c, req_id, chat_id, text, fresh_client_id()), 0);
    int rc = nth_wait_ack(c, req_id, NTH_WAIT_MS, &seq, &mid, code, sizeof code);
    CHECK_EQ_INT(rc, 1);
    if (rc == 2) fprintf(stderr, "  send '%s' answered error %s\n", text, code);
    if (rc != 1) return -1;
    CHECK_EQ_INT(seq, last_seq + 1);
    CHECK(mid > 0);
    last_seq = seq;
    if (message_id) *message_id = mid;
    return seq;
}

/* Waits on c for the message with `seq` in the chat and checks its fields. */
static void expect_message(ntc_conn *c, int64_t seq, const char *text, const nth_user *sender,
                           int64_t message_id)
{
    nth_filter f = {.type = "message",
                    .int_path = "message.chat_id",
                    .int_value = chat_id,
                    .int_path2 = "message.seq",
                    .int_value2 = seq};
    const char *json;
    size_t len;
    int rc = nth_wait_for(c, &f, NTH_WAIT_MS, &json, &len);
    CHECK_EQ_INT(rc, 1);
    if (rc != 1) {
        fprintf(stderr, "  no message seq %lld ('%s')\n", (long long)seq, text);
        return;
    }
    char got[256];
    int64_t v = 0;
    CHECK(ntc_json_str(json, len, "message.text", got, sizeof got) >= 0);
    CHECK_STR_EQ(got, text);
    CHECK_EQ_INT(ntc_json_int(json, len, "message.sender_id", &v), 0);
    CHECK_EQ_INT(v, sender->s.user_id);
    if (message_id > 0) {
        CHECK_EQ_INT(ntc_json_int(json, len, "message.id", &v), 0);
        CHECK_EQ_INT(v, message_id);
    }
}

static void case_two_users(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a && b);
    for (int i = 0; i < 10; i++) {
        bool from_alice = i % 2 == 0;
        ntc_conn *sender = from_alice ? a : b, *receiver = from_alice ? b : a;
        char text[64];
        snprintf(text, sizeof text, "%s says %d", from_alice ? "alice" : "bob", i);
        int64_t mid = 0;
        int64_t seq = send_checked(sender, text, &mid);
        if (seq < 0) break;
        expect_message(receiver, seq, text, from_alice ? &alice : &bob, mid);
    }
    /* Several sends in flight at once: acks and deliveries in seq order.
     * (Drop what is queued: whether a sender's own connection also gets its
     * message as an event is not specified.) */
    ntc_conn_drain(a);
    ntc_conn_drain(b);
    int64_t first = last_seq + 1;
    for (int i = 0; i < 20; i++) {
        char text[32], req_id[32];
        snprintf(text, sizeof text, "burst %d", i);
        snprintf(req_id, sizeof req_id, "burst-%d", i);
        CHECK_EQ_INT(nth_send(a, req_id, chat_id, text, fresh_client_id()), 0);
    }
    for (int i = 0; i < 20; i++) {
        char req_id[32];
        snprintf(req_id, sizeof req_id, "burst-%d", i);
        int64_t seq = -1;
        CHECK_EQ_INT(nth_wait_ack(a, req_id, NTH_WAIT_MS, &seq, NULL, NULL, 0), 1);
        CHECK_EQ_INT(seq, first + i);
    }
    for (int i = 0; i < 20; i++) {
        int64_t seq = -1;
        char text[64] = "", want[32];
        snprintf(want, sizeof want, "burst %d", i);
        CHECK_EQ_INT(nth_wait_message(b, chat_id, 0, NTH_WAIT_MS, &seq, text, sizeof text), 1);
        CHECK_EQ_INT(seq, first + i); /* in order, no gap, no repeat */
        CHECK_STR_EQ(text, want);
    }
    last_seq = first + 19;
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);
}

static void expect_event(ntc_conn *c, const char *type, const char *path, int64_t value,
                         const char *path2, int64_t value2, const char *who)
{
    nth_filter f = {.type = type,
                    .int_path = path,
                    .int_value = value,
                    .int_path2 = path2,
                    .int_value2 = value2};
    const char *json;
    size_t len;
    int rc = nth_wait_for(c, &f, NTH_WAIT_MS, &json, &len);
    CHECK_EQ_INT(rc, 1);
    if (rc != 1)
        fprintf(stderr, "  %s: no '%s' event with %s=%lld\n", who, type, path2 ? path2 : path,
                (long long)(path2 ? value2 : value));
}

/* Texts whose frames land on the largest size edge of the server's cache
 * of small frames (1,024 bytes with the NUL): each one is acknowledged and
 * arrives whole. A text of 868 bytes (a WebSocket frame of exactly 1,024
 * bytes; the bus's copy of the event is that at 872) once crashed natterd.
 * The event's other fields (ids, time) move the edge by a few bytes, hence
 * the range. */
static void case_frame_sizes(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a && b);
    char text[1100];
    for (size_t n = 850; n <= 890; n++) {
        memset(text, 'a' + (char)(n % 26), n);
        text[n] = '\0';
        int64_t seq = send_checked(a, text, NULL);
        if (seq < 0) break;
        nth_filter f = {.type = "message",
                        .int_path = "message.chat_id",
                        .int_value = chat_id,
                        .int_path2 = "message.seq",
                        .int_value2 = seq};
        const char *json;
        size_t len;
        CHECK_EQ_INT(nth_wait_for(b, &f, NTH_WAIT_MS, &json, &len), 1);
        char got[1100];
        CHECK(json && ntc_json_str(json, len, "message.text", got, sizeof got) == (int)n);
    }
    CHECK(nth_healthy(srv));
    ntc_conn_free(a);
    ntc_conn_free(b);
}

static void case_three_devices(nt_server *srv)
{
    ntc_conn *a[3];
    for (int i = 0; i < 3; i++)
        a[i] = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a[0] && a[1] && a[2] && b);
    const char *names[3] = {"alice device 1", "alice device 2", "alice device 3"};

    /* Alice sends from device 1: her other devices and bob get it. */
    int64_t mid = 0;
    int64_t seq = send_checked(a[0], "from alice's first device", &mid);
    REQUIRE(seq > 0);
    expect_message(a[1], seq, "from alice's first device", &alice, mid);
    expect_message(a[2], seq, "from alice's first device", &alice, mid);
    expect_message(b, seq, "from alice's first device", &alice, mid);

    /* Bob sends: every one of alice's devices gets it. */
    seq = send_checked(b, "to all of alice's devices", &mid);
    REQUIRE(seq > 0);
    for (int i = 0; i < 3; i++)
        expect_message(a[i], seq, "to all of alice's devices", &bob, mid);

    /* Bob types and reads: receipts and typing reach every device. */
    char frame[128];
    snprintf(frame, sizeof frame, "{\"type\":\"typing\",\"chat_id\":%lld}", (long long)chat_id);
    CHECK_EQ_INT(ntc_conn_send_text(b, frame), 0);
    snprintf(frame, sizeof frame, "{\"type\":\"read\",\"chat_id\":%lld,\"seq\":%lld}",
             (long long)chat_id, (long long)seq);
    CHECK_EQ_INT(ntc_conn_send_text(b, frame), 0);
    CHECK_EQ_INT(ntc_conn_flush_blocking(b, NTH_WAIT_MS), 0);
    for (int i = 0; i < 3; i++) {
        expect_event(a[i], "typing", "chat_id", chat_id, "user_id", bob.s.user_id, names[i]);
        expect_event(a[i], "receipt", "user_id", bob.s.user_id, "read_seq", seq, names[i]);
    }

    /* Alice sends from device 3: devices 1 and 2 get it. */
    seq = send_checked(a[2], "from alice's third device", &mid);
    REQUIRE(seq > 0);
    expect_message(a[0], seq, "from alice's third device", &alice, mid);
    expect_message(a[1], seq, "from alice's third device", &alice, mid);
    expect_message(b, seq, "from alice's third device", &alice, mid);

    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ntc_conn_close(a[i], NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);
}

static void case_retried_send(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a && b);
    char cid[64];
    snprintf(cid, sizeof cid, "%s", fresh_client_id());

    int64_t seq1 = -1, mid1 = -1, seq2 = -2, mid2 = -2;
    CHECK_EQ_INT(nth_send(a, "dup-1", chat_id, "sent twice", cid), 0);
    CHECK_EQ_INT(nth_wait_ack(a, "dup-1", NTH_WAIT_MS, &seq1, &mid1, NULL, 0), 1);
    CHECK_EQ_INT(seq1, last_seq + 1);
    /* The retry, as after a lost ack. */
    CHECK_EQ_INT(nth_send(a, "dup-2", chat_id, "sent twice", cid), 0);
    CHECK_EQ_INT(nth_wait_ack(a, "dup-2", NTH_WAIT_MS, &seq2, &mid2, NULL, 0), 1);
    CHECK_EQ_INT(seq2, seq1);
    CHECK_EQ_INT(mid2, mid1);
    /* The same client_id over REST returns the first message again (200). */
    char path[96], body[160];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    snprintf(body, sizeof body, "{\"text\":\"sent twice\",\"client_id\":\"%s\"}", cid);
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(nth_api(srv, "POST", path, alice.s.access_token, body, &resp), 200);
    int64_t v = -1;
    CHECK_EQ_INT(ntc_json_int(resp.data, resp.len, "id", &v), 0);
    CHECK_EQ_INT(v, mid1);
    CHECK_EQ_INT(ntc_json_int(resp.data, resp.len, "seq", &v), 0);
    CHECK_EQ_INT(v, seq1);
    last_seq = seq1;

    /* A new message afterwards takes the very next seq... */
    int64_t seq3 = send_checked(a, "after the retry", NULL);
    CHECK_EQ_INT(seq3, seq1 + 1);
    /* ...and bob saw the retried message once: the next message of the
     * chat after it is the new one (one chat's messages arrive in order). */
    int64_t got = -1;
    char text[64] = "";
    CHECK_EQ_INT(nth_wait_message(b, chat_id, 0, NTH_WAIT_MS, &got, text, sizeof text), 1);
    CHECK_EQ_INT(got, seq1);
    CHECK_STR_EQ(text, "sent twice");
    CHECK_EQ_INT(nth_wait_message(b, chat_id, 0, NTH_WAIT_MS, &got, text, sizeof text), 1);
    CHECK_EQ_INT(got, seq1 + 1);
    CHECK_STR_EQ(text, "after the retry");

    /* The history holds it once. */
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld", (long long)chat_id,
             (long long)(seq1 - 1));
    CHECK_EQ_INT(nth_api(srv, "GET", path, bob.s.access_token, NULL, &resp), 200);
    CHECK_EQ_INT(ntc_json_count(resp.data, resp.len, "messages"), 2);
    nt_buf_free(&resp);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);
}

static void case_catch_up(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a && b);
    int64_t seen = last_seq; /* bob's last seq before going offline */
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);

    const char *missed[3] = {"while you were away 1", "while you were away 2",
                             "while you were away 3"};
    for (int i = 0; i < 3; i++)
        send_checked(a, missed[i], NULL);

    b = nth_connect(srv, &bob);
    REQUIRE(b);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld", (long long)chat_id,
             (long long)seen);
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(nth_api(srv, "GET", path, bob.s.access_token, NULL, &resp), 200);
    CHECK_EQ_INT(ntc_json_count(resp.data, resp.len, "messages"), 3);
    for (int i = 0; i < 3; i++) {
        char key[32], text[64] = "";
        int64_t seq = -1;
        snprintf(key, sizeof key, "messages.%d.seq", i);
        CHECK_EQ_INT(ntc_json_int(resp.data, resp.len, key, &seq), 0);
        CHECK_EQ_INT(seq, seen + 1 + i);
        snprintf(key, sizeof key, "messages.%d.text", i);
        CHECK(ntc_json_str(resp.data, resp.len, key, text, sizeof text) >= 0);
        CHECK_STR_EQ(text, missed[i]);
    }
    /* And live delivery resumes on the new connection. */
    int64_t seq = send_checked(a, "welcome back", NULL);
    expect_message(b, seq, "welcome back", &alice, 0);
    nt_buf_free(&resp);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);
}

/* The whole history as "seq:id:text\n" lines, or -1. */
static int history_lines(nt_server *srv, const char *token, nt_buf *out, int64_t *count)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=0&limit=200",
             (long long)chat_id);
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, "GET", path, token, NULL, &resp);
    nt_buf_reset(out);
    *count = 0;
    int n = status == 200 ? ntc_json_count(resp.data, resp.len, "messages") : -1;
    for (int i = 0; i < n; i++) {
        char key[32], text[256] = "";
        int64_t seq = -1, id = -1;
        snprintf(key, sizeof key, "messages.%d.seq", i);
        ntc_json_int(resp.data, resp.len, key, &seq);
        snprintf(key, sizeof key, "messages.%d.id", i);
        ntc_json_int(resp.data, resp.len, key, &id);
        snprintf(key, sizeof key, "messages.%d.text", i);
        ntc_json_str(resp.data, resp.len, key, text, sizeof text);
        nt_buf_appendf(out, "%lld:%lld:%s\n", (long long)seq, (long long)id, text);
    }
    nt_buf_cstr(out);
    nt_buf_free(&resp);
    *count = n;
    return status;
}

static void case_restart(nt_server *srv)
{
    nt_buf before = NT_BUF_INIT, after = NT_BUF_INIT;
    int64_t n_before = 0, n_after = 0;
    CHECK_EQ_INT(history_lines(srv, alice.s.access_token, &before, &n_before), 200);
    CHECK_EQ_INT(n_before, last_seq);
    /* seq runs 1..N without gaps. */
    const char *line = before.data;
    for (int64_t seq = 1; line && *line && seq <= n_before; seq++) {
        CHECK_EQ_INT(strtoll(line, NULL, 10), seq);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }

    CHECK_EQ_INT(nth_restart(srv), 0);
    REQUIRE(srv->pid > 0);

    /* Tokens issued before the restart still work (the signing key is in
     * the data folder); log in again if not, to still check the history. */
    int status = history_lines(srv, alice.s.access_token, &after, &n_after);
    CHECK_EQ_INT(status, 200);
    if (status == 401) {
        ntc_session s;
        REQUIRE(ntc_login(srv->host, srv->port, alice.email, alice.password, &s) == 0);
        alice.s = s;
        status = history_lines(srv, alice.s.access_token, &after, &n_after);
    }
    CHECK_EQ_INT(n_after, n_before);
    CHECK_STR_EQ(after.data, before.data);

    /* Login works after the restart and the chat goes on at the next seq. */
    ntc_session s;
    CHECK_EQ_INT(ntc_login(srv->host, srv->port, bob.s.nickname, bob.password, &s), 0);
    if (s.access_token[0]) bob.s = s;
    ntc_conn *a = nth_connect(srv, &alice);
    ntc_conn *b = nth_connect(srv, &bob);
    REQUIRE(a && b);
    int64_t seq = send_checked(a, "after the restart", NULL);
    CHECK_EQ_INT(seq, n_before + 1);
    expect_message(b, seq, "after the restart", &alice, 0);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    CHECK_EQ_INT(ntc_conn_close(b, NTH_WAIT_MS), 1000);
    nt_buf_free(&before);
    nt_buf_free(&after);
}

int main(void)
{
    nt_server *srv = nth_start(NULL);
    CHECK(srv != NULL);
    if (!srv) return check_exit();
    CHECK_EQ_INT(nth_register(srv, "alice", &alice), 0);
    CHECK_EQ_INT(nth_register(srv, "bob", &bob), 0);
    chat_id = nth_direct_chat(srv, &alice, &bob);
    CHECK(chat_id > 0);
    if (chat_id > 0) {
        NTH_CASE("two users chat both ways", case_two_users, srv);
        NTH_CASE("one user on three connections gets every event", case_three_devices, srv);
        NTH_CASE("texts at every size edge of the frame cache", case_frame_sizes, srv);
        NTH_CASE("a retried send with the same client_id is stored once", case_retried_send, srv);
        NTH_CASE("a reconnecting client catches up with after_seq", case_catch_up, srv);
        NTH_CASE("history survives a restart", case_restart, srv);
    }
    nth_case_begin("clean shutdown (SIGTERM: WebSockets closed with 1001, exit 0)");
    ntc_conn *open_ws = nth_connect(srv, &alice);
    CHECK(open_ws != NULL);
    CHECK_EQ_INT(nth_stop(srv), 0);
    if (open_ws) {
        CHECK_EQ_INT(ntc_conn_wait_closed(open_ws, NTH_WAIT_MS), 1001);
        ntc_conn_free(open_ws);
    }
    nth_case_end();
    if (check_failures) nth_dump_log(srv, 3000);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
