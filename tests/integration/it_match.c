/*
 * Integration test: random chats against a real natterd over real sockets.
 * Four users with crossing preferences end up in exactly the compatible
 * pairs (each told by a `matched` event with the partner's alias, gender and
 * age); an incompatible user waits with no event; matching twice keeps one
 * entry; blocked users are never paired; a user whose last connection
 * closes leaves the queue; anonymity holds on every endpoint and event until
 * both reveal, after which both get a `chat` event with real ids; leaving
 * gives `chat_closed` and further sends get `forbidden`; every bad input
 * gets its 400 naming the field, or 404.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "integration/harness.h"

static int api(nt_server *srv, const char *method, const char *path, const nth_user *u,
               const char *body, nt_buf *resp)
{
    if (resp) nt_buf_reset(resp);
    return nth_api(srv, method, path, u ? u->s.access_token : NULL, body, resp);
}

static void expect(nt_server *srv, const char *method, const char *path, const nth_user *u,
                   const char *body, int status, const char *field)
{
    nt_buf resp = NT_BUF_INIT;
    int got = api(srv, method, path, u, body, &resp);
    CHECK_EQ_INT(got, status);
    if (got != status)
        fprintf(stderr, "  %s %s %s -> %d %s\n", method, path, body ? body : "", got,
                resp.data ? resp.data : "");
    if (field) {
        char msg[256] = "";
        ntc_json_str(resp.data ? resp.data : "", resp.len, "error.message", msg, sizeof msg);
        CHECK(strstr(msg, field) != NULL);
        if (!strstr(msg, field)) fprintf(stderr, "  message '%s' lacks '%s'\n", msg, field);
    }
    nt_buf_free(&resp);
}

/* A registered user with a gender, an age (born on 1 January) and
 * preferences (raw JSON, or NULL for the defaults). */
static void make(nt_server *srv, nth_user *u, const char *prefix, const char *gender, int age,
                 const char *prefs)
{
    char js[256];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    CHECK_EQ_INT(nth_register(srv, prefix, u), 0);
    snprintf(js, sizeof js, "{\"gender\":\"%s\",\"birth_date\":\"%04d-01-01\"}", gender,
             tm.tm_year + 1900 - age);
    expect(srv, "PATCH", "/api/v1/users/me", u, js, 200, NULL);
    if (prefs) expect(srv, "PUT", "/api/v1/match/preferences", u, prefs, 200, NULL);
}

/* POST /match: returns the status; *chat gets chat_id when matched at once. */
static int join(nt_server *srv, const nth_user *u, int64_t *chat)
{
    nt_buf resp = NT_BUF_INIT;
    int st = api(srv, "POST", "/api/v1/match", u, NULL, &resp);
    if (chat) {
        *chat = 0;
        ntc_json_int(resp.data ? resp.data : "", resp.len, "chat_id", chat);
    }
    nt_buf_free(&resp);
    return st;
}

static void leave(nt_server *srv, const nth_user *u)
{
    expect(srv, "DELETE", "/api/v1/match", u, NULL, 204, NULL);
}

/* Waits for `matched` on c: fills chat id, partner alias, gender and age. */
static bool wait_matched(ntc_conn *c, int ms, int64_t *chat, char *alias, char *gender,
                         int64_t *age)
{
    nth_filter f = {.type = "matched"};
    const char *json;
    size_t len;
    if (nth_wait_for(c, &f, ms, &json, &len) != 1) return false;
    ntc_json_int(json, len, "chat.id", chat);
    ntc_json_str(json, len, "partner.alias", alias, 64);
    ntc_json_str(json, len, "partner.gender", gender, 16);
    ntc_json_int(json, len, "partner.age", age);
    return true;
}

/* True if the text names this user id in a "user_id"/"sender_id", or the
 * nickname. */
static bool leaks(const char *json, const nth_user *u)
{
    char pat[96];
    if (!json) return false;
    snprintf(pat, sizeof pat, "\"user_id\":%" PRId64 ",", u->s.user_id);
    if (strstr(json, pat)) return true;
    snprintf(pat, sizeof pat, "\"sender_id\":%" PRId64 ",", u->s.user_id);
    if (strstr(json, pat)) return true;
    snprintf(pat, sizeof pat, "\"%s\"", u->s.nickname);
    return strstr(json, pat) != NULL;
}

static bool get_leaks(nt_server *srv, const char *path, const nth_user *as, const nth_user *who)
{
    nt_buf resp = NT_BUF_INIT;
    int st = api(srv, "GET", path, as, NULL, &resp);
    CHECK_EQ_INT(st, 200);
    bool leaked = leaks(resp.data, who);
    if (leaked)
        fprintf(stderr, "  %s leaks user %" PRId64 ": %s\n", path, who->s.user_id, resp.data);
    nt_buf_free(&resp);
    return leaked;
}

/* In GET /chats as u, the entry of `chat` names nobody: null member ids and
 * a null last_message.sender_id. */
static bool list_anonymous(nt_server *srv, const nth_user *u, int64_t chat)
{
    nt_buf resp = NT_BUF_INIT;
    bool seen = false, ok = true;
    CHECK_EQ_INT(api(srv, "GET", "/api/v1/chats", u, NULL, &resp), 200);
    int n = ntc_json_count(resp.data ? resp.data : "", resp.len, "chats");
    for (int i = 0; i < n; i++) {
        char path[96];
        int64_t id = 0, v;
        snprintf(path, sizeof path, "chats.%d.id", i);
        if (ntc_json_int(resp.data, resp.len, path, &id) != 0 || id != chat) continue;
        seen = true;
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "chats.%d.members.%d.user_id", i, k);
            if (!ntc_json_has(resp.data, resp.len, path) ||
                ntc_json_int(resp.data, resp.len, path, &v) == 0)
                ok = false;
        }
        snprintf(path, sizeof path, "chats.%d.last_message.sender_id", i);
        if (ntc_json_int(resp.data, resp.len, path, &v) == 0) ok = false;
        if (strstr(resp.data, u->s.nickname)) ok = false;
    }
    nt_buf_free(&resp);
    return seen && ok;
}

static nth_user ua, ub, uc, ud, ue;
static int64_t chat_ad, chat_cb;

static void case_bad_input(nt_server *srv)
{
    nth_user none, nobirth;
    CHECK_EQ_INT(nth_register(srv, "nog", &none), 0);
    expect(srv, "POST", "/api/v1/match", &none, NULL, 400, "gender");
    expect(srv, "PATCH", "/api/v1/users/me", &none, "{\"gender\":\"other\"}", 200, NULL);
    expect(srv, "POST", "/api/v1/match", &none, NULL, 400, "birth_date");
    CHECK_EQ_INT(nth_register(srv, "nob", &nobirth), 0);
    expect(srv, "PATCH", "/api/v1/users/me", &nobirth, "{\"birth_date\":\"2000-02-29\"}", 200,
           NULL);
    expect(srv, "POST", "/api/v1/match", &nobirth, NULL, 400, "gender");
    expect(srv, "POST", "/api/v1/match", NULL, NULL, 401, NULL);

    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{}", "genders"},
        {"{\"genders\":[],\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":[\"robot\"],\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":[\"male\"],\"age_min\":12,\"age_max\":30}", "age_min"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":121}", "age_max"},
        {"{\"genders\":[\"male\"],\"age_min\":40,\"age_max\":30}", "age_max"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":"
         "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":"
         "[\"abcdefghijklmnopqrstuvwxyz0123456789\"]}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":[\"!\"]}",
         "interests"},
        {"not json", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect(srv, "PUT", "/api/v1/match/preferences", &none, bad[i].body, 400, bad[i].field);
    expect(srv, "PUT", "/api/v1/match/preferences", &none,
           "{\"genders\":[\"other\",\"female\"],\"age_min\":20,\"age_max\":20,"
           "\"interests\":[\"Chess\"]}",
           200, NULL);
    nt_buf resp = NT_BUF_INIT;
    CHECK_EQ_INT(api(srv, "GET", "/api/v1/match/preferences", &none, NULL, &resp), 200);
    char tag[32] = "";
    ntc_json_str(resp.data, resp.len, "interests.0", tag, sizeof tag);
    CHECK_STR_EQ(tag, "chess");
    CHECK_EQ_INT(ntc_json_count(resp.data, resp.len, "genders"), 2);
    nt_buf_free(&resp);

    expect(srv, "POST", "/api/v1/chats/999999999/reveal", &none, NULL, 404, NULL);
    int64_t direct = nth_direct_chat(srv, &none, &nobirth);
    char path[96];
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/reveal", direct);
    expect(srv, "POST", path, &none, NULL, 400, "chat_id");
    expect(srv, "POST", path, &ua, NULL, 404, NULL); /* not a member */
}

static void case_pairs(nt_server *srv)
{
    ntc_conn *a = nth_connect(srv, &ua), *b = nth_connect(srv, &ub), *c = nth_connect(srv, &uc),
             *d = nth_connect(srv, &ud), *e = nth_connect(srv, &ue);
    REQUIRE(a && b && c && d && e);
    /* a waits; b is incompatible with a; matching twice keeps one entry. */
    CHECK_EQ_INT(join(srv, &ua, NULL), 202);
    CHECK_EQ_INT(join(srv, &ua, NULL), 200);
    /* b asks over WebSocket. */
    CHECK_EQ_INT(ntc_conn_send_text(b, "{\"type\":\"match\",\"id\":\"m1\"}"), 0);
    nth_filter queued = {.type = "match_queued", .str_path = "id", .str_value = "m1"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(b, &queued, NTH_WAIT_MS, &json, &len), 1);
    /* e fits nobody: waits. */
    CHECK_EQ_INT(join(srv, &ue, NULL), 202);
    /* c pairs with b, d with a. */
    int64_t got = 0;
    CHECK_EQ_INT(join(srv, &uc, &got), 202);
    CHECK(got > 0);
    CHECK_EQ_INT(join(srv, &ud, &got), 202);
    CHECK(got > 0);

    char alias[64] = "", gender[16] = "";
    int64_t age = 0, ca = 0, cb = 0, cc = 0, cd = 0;
    CHECK(wait_matched(a, NTH_WAIT_MS, &ca, alias, gender, &age));
    CHECK_STR_EQ(gender, "female");
    CHECK_EQ_INT(age, 28);
    CHECK(alias[0] != '\0' && strcmp(alias, ud.s.nickname) != 0);
    CHECK(wait_matched(d, NTH_WAIT_MS, &cd, alias, gender, &age));
    CHECK_STR_EQ(gender, "male");
    CHECK_EQ_INT(age, 25);
    CHECK(wait_matched(b, NTH_WAIT_MS, &cb, alias, gender, &age));
    CHECK_STR_EQ(gender, "male");
    CHECK_EQ_INT(age, 35);
    CHECK(wait_matched(c, NTH_WAIT_MS, &cc, alias, gender, &age));
    CHECK_EQ_INT(age, 25);
    CHECK(ca > 0 && ca == cd);
    CHECK(cb > 0 && cb == cc);
    CHECK(ca != cb);
    chat_ad = ca;
    chat_cb = cb;
    /* Exactly one matched each; e got none. */
    CHECK(!wait_matched(a, 300, &ca, alias, gender, &age));
    CHECK(!wait_matched(e, 700, &ca, alias, gender, &age));
    leave(srv, &ue);
    CHECK_EQ_INT(ntc_conn_send_text(e, "{\"type\":\"match_cancel\",\"id\":7}"), 0);
    nth_filter cancelled = {.type = "match_cancelled", .int_path = "id", .int_value = 7};
    CHECK_EQ_INT(nth_wait_for(e, &cancelled, NTH_WAIT_MS, &json, &len), 1);
    ntc_conn_free(a);
    ntc_conn_free(b);
    ntc_conn_free(c);
    ntc_conn_free(d);
    ntc_conn_free(e);
}

static void case_anonymity_and_reveal(nt_server *srv)
{
    char path[128];
    REQUIRE(chat_ad > 0);
    ntc_conn *a = nth_connect(srv, &ua), *d = nth_connect(srv, &ud);
    REQUIRE(a && d);
    /* A message both ways, a receipt and a typing notice. */
    int64_t seq = 0;
    CHECK_EQ_INT(nth_send(a, "s1", chat_ad, "hi stranger", "anon-1"), 0);
    CHECK_EQ_INT(nth_wait_ack(a, "s1", NTH_WAIT_MS, &seq, NULL, NULL, 0), 1);
    nth_filter msg = {.type = "message", .int_path = "message.chat_id", .int_value = chat_ad};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(d, &msg, NTH_WAIT_MS, &json, &len), 1);
    CHECK(!leaks(json, &ua));
    CHECK(ntc_json_has(json, len, "message.sender_alias"));
    char rd[96];
    snprintf(rd, sizeof rd, "{\"type\":\"read\",\"chat_id\":%" PRId64 ",\"seq\":%" PRId64 "}",
             chat_ad, seq);
    CHECK_EQ_INT(ntc_conn_send_text(d, rd), 0);
    CHECK_EQ_INT(ntc_conn_flush_blocking(d, NTH_WAIT_MS), 0);
    nth_filter receipt = {.type = "receipt", .int_path = "chat_id", .int_value = chat_ad};
    CHECK_EQ_INT(nth_wait_for(a, &receipt, NTH_WAIT_MS, &json, &len), 1);
    CHECK(!leaks(json, &ud));
    snprintf(rd, sizeof rd, "{\"type\":\"typing\",\"chat_id\":%" PRId64 "}", chat_ad);
    CHECK_EQ_INT(ntc_conn_send_text(d, rd), 0);
    CHECK_EQ_INT(ntc_conn_flush_blocking(d, NTH_WAIT_MS), 0);
    nth_filter typing = {.type = "typing", .int_path = "chat_id", .int_value = chat_ad};
    CHECK_EQ_INT(nth_wait_for(a, &typing, NTH_WAIT_MS, &json, &len), 1);
    CHECK(!leaks(json, &ud));

    /* Every endpoint, as each side. */
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64, chat_ad);
    CHECK(!get_leaks(srv, path, &ud, &ua));
    CHECK(!get_leaks(srv, path, &ua, &ud));
    /* The list holds the lobby too, whose members are public: look at the
     * random chat's entry only. */
    CHECK(list_anonymous(srv, &ud, chat_ad));
    CHECK(list_anonymous(srv, &ua, chat_ad));
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/messages?after_seq=0", chat_ad);
    CHECK(!get_leaks(srv, path, &ud, &ua));
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/export", chat_ad);
    CHECK(!get_leaks(srv, path, &ud, &ua));
    CHECK(!get_leaks(srv, "/api/v1/friends", &ud, &ua));

    /* No presence between the partners: a goes offline and back. */
    ntc_conn_drain(d);
    CHECK_EQ_INT(ntc_conn_close(a, NTH_WAIT_MS), 1000);
    a = nth_connect(srv, &ua);
    REQUIRE(a);
    nth_filter presence = {.type = "presence"};
    CHECK_EQ_INT(nth_wait_for(d, &presence, 700, &json, &len), 0);

    /* Reveal: one side changes nothing. */
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/reveal", chat_ad);
    expect(srv, "POST", path, &ua, NULL, 204, NULL);
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64, chat_ad);
    CHECK(!get_leaks(srv, path, &ud, &ua));
    nth_filter chat_ev = {.type = "chat", .int_path = "chat.id", .int_value = chat_ad};
    CHECK_EQ_INT(nth_wait_for(d, &chat_ev, 300, &json, &len), 0);
    /* Both: a `chat` event with real ids to both. */
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/reveal", chat_ad);
    expect(srv, "POST", path, &ud, NULL, 204, NULL);
    CHECK_EQ_INT(nth_wait_for(d, &chat_ev, NTH_WAIT_MS, &json, &len), 1);
    char pat[64];
    snprintf(pat, sizeof pat, "\"user_id\":%" PRId64 ",", ua.s.user_id);
    CHECK(json && strstr(json, pat) != NULL);
    CHECK_EQ_INT(nth_wait_for(a, &chat_ev, NTH_WAIT_MS, &json, &len), 1);
    snprintf(pat, sizeof pat, "\"user_id\":%" PRId64 ",", ud.s.user_id);
    CHECK(json && strstr(json, pat) != NULL);
    /* History now names the sender, and they can become friends. */
    nt_buf resp = NT_BUF_INIT;
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/messages?after_seq=0", chat_ad);
    CHECK_EQ_INT(api(srv, "GET", path, &ud, NULL, &resp), 200);
    int64_t sender = 0;
    CHECK_EQ_INT(ntc_json_int(resp.data, resp.len, "messages.0.sender_id", &sender), 0);
    CHECK_EQ_INT(sender, ua.s.user_id);
    nt_buf_free(&resp);
    char js[64];
    snprintf(js, sizeof js, "{\"user_id\":%" PRId64 "}", ua.s.user_id);
    expect(srv, "POST", "/api/v1/friends/requests", &ud, js, 201, NULL);
    ntc_conn_free(a);
    ntc_conn_free(d);
}

static void case_leave(nt_server *srv)
{
    char path[128], code[64] = "";
    REQUIRE(chat_cb > 0);
    ntc_conn *c = nth_connect(srv, &uc);
    REQUIRE(c);
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/members/%" PRId64, chat_cb,
             ub.s.user_id);
    expect(srv, "DELETE", path, &ub, NULL, 204, NULL);
    nth_filter closed = {.type = "chat_closed", .int_path = "chat_id", .int_value = chat_cb};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(c, &closed, NTH_WAIT_MS, &json, &len), 1);
    CHECK(!leaks(json, &ub));
    CHECK_EQ_INT(nth_send(c, "late", chat_cb, "anyone?", NULL), 0);
    CHECK_EQ_INT(nth_wait_ack(c, "late", NTH_WAIT_MS, NULL, NULL, code, sizeof code), 2);
    CHECK_STR_EQ(code, "forbidden");
    snprintf(path, sizeof path, "/api/v1/chats/%" PRId64 "/messages", chat_cb);
    expect(srv, "POST", path, &ub, "{\"text\":\"back\"}", 403, NULL);
    ntc_conn_free(c);
}

static void case_blocked_never_paired(nt_server *srv)
{
    nth_user f, g;
    char path[96];
    const char *prefs = "{\"genders\":[\"other\"],\"age_min\":70,\"age_max\":71}";
    make(srv, &f, "blk_f", "other", 70, prefs);
    make(srv, &g, "blk_g", "other", 71, prefs);
    snprintf(path, sizeof path, "/api/v1/blocks/%" PRId64, g.s.user_id);
    expect(srv, "POST", path, &f, NULL, 204, NULL);
    ntc_conn *cg = nth_connect(srv, &g);
    REQUIRE(cg);
    CHECK_EQ_INT(join(srv, &f, NULL), 202);
    CHECK_EQ_INT(join(srv, &g, NULL), 202);
    char alias[64], gender[16];
    int64_t chat, age;
    CHECK(!wait_matched(cg, 700, &chat, alias, gender, &age));
    leave(srv, &f);
    leave(srv, &g);
    /* Unblocked and queued anew: they pair. */
    expect(srv, "DELETE", path, &f, NULL, 204, NULL);
    CHECK_EQ_INT(join(srv, &f, NULL), 202);
    CHECK_EQ_INT(join(srv, &g, &chat), 202);
    CHECK(chat > 0);
    CHECK(wait_matched(cg, NTH_WAIT_MS, &chat, alias, gender, &age));
    ntc_conn_free(cg);
}

/* A WebSocket arrival that pairs at once is answered without waiting for
 * the chat to be stored (nt_match_join_async): `match_queued`, then
 * `matched` to both with the same chat, which is stored and works. */
static void case_ws_arrival_pairs(nt_server *srv)
{
    nth_user w, m;
    make(srv, &w, "wsa_w", "male", 70, "{\"genders\":[\"female\"],\"age_min\":70,\"age_max\":72}");
    make(srv, &m, "wsa_m", "female", 71, "{\"genders\":[\"male\"],\"age_min\":69,\"age_max\":71}");
    ntc_conn *cw = nth_connect(srv, &w), *cm = nth_connect(srv, &m);
    REQUIRE(cw && cm);
    CHECK_EQ_INT(join(srv, &w, NULL), 202);
    CHECK_EQ_INT(ntc_conn_send_text(cm, "{\"type\":\"match\",\"id\":\"w1\"}"), 0);
    nth_filter queued = {.type = "match_queued", .str_path = "id", .str_value = "w1"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(cm, &queued, NTH_WAIT_MS, &json, &len), 1);
    char alias[64], gender[16];
    int64_t chat_m = 0, chat_w = 0, age = 0;
    CHECK(wait_matched(cm, NTH_WAIT_MS, &chat_m, alias, gender, &age));
    CHECK_STR_EQ(gender, "male");
    CHECK_EQ_INT(age, 70);
    CHECK(wait_matched(cw, NTH_WAIT_MS, &chat_w, alias, gender, &age));
    CHECK_EQ_INT(age, 71);
    CHECK(chat_m > 0 && chat_m == chat_w);
    CHECK_EQ_INT(nth_send(cm, "x1", chat_m, "hello from the queue", "wsa-1"), 0);
    CHECK_EQ_INT(nth_wait_ack(cm, "x1", NTH_WAIT_MS, NULL, NULL, NULL, 0), 1);
    nth_filter msg = {.type = "message", .int_path = "message.chat_id", .int_value = chat_m};
    CHECK_EQ_INT(nth_wait_for(cw, &msg, NTH_WAIT_MS, &json, &len), 1);
    /* Neither waits any more. */
    int64_t chat = -1;
    CHECK_EQ_INT(join(srv, &w, &chat), 202);
    CHECK_EQ_INT(chat, 0);
    leave(srv, &w);
    ntc_conn_free(cw);
    ntc_conn_free(cm);
}

static void case_disconnect_leaves(nt_server *srv)
{
    nth_user h, i;
    const char *prefs = "{\"genders\":[\"female\"],\"age_min\":90,\"age_max\":91}";
    make(srv, &h, "dis_h", "female", 90, prefs);
    make(srv, &i, "dis_i", "female", 91, prefs);
    ntc_conn *ch = nth_connect(srv, &h);
    REQUIRE(ch);
    CHECK_EQ_INT(ntc_conn_send_text(ch, "{\"type\":\"match\",\"id\":\"q\"}"), 0);
    nth_filter queued = {.type = "match_queued"};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(ch, &queued, NTH_WAIT_MS, &json, &len), 1);
    CHECK_EQ_INT(ntc_conn_close(ch, NTH_WAIT_MS), 1000);
    /* The leave runs as a job after the close; give it a moment. */
    usleep(300 * 1000);
    int64_t chat = -1;
    CHECK_EQ_INT(join(srv, &i, &chat), 202);
    CHECK_EQ_INT(chat, 0); /* h is gone: i waits */
    leave(srv, &i);
}

int main(void)
{
    nt_server *srv = nth_start(NULL);
    CHECK(srv != NULL);
    if (!srv) return check_exit();
    /* a: man 25 wanting women 20..30; b: woman 25 wanting men 30..40;
     * c: man 35 wanting women 20..30; d: woman 28 wanting men 20..30;
     * e: other 60 wanting others. Compatible: a-d and c-b only. */
    make(srv, &ua, "ua", "male", 25, "{\"genders\":[\"female\"],\"age_min\":20,\"age_max\":30}");
    make(srv, &ub, "ub", "female", 25,
         "{\"genders\":[\"male\"],\"age_min\":30,\"age_max\":40,\"interests\":[\"go\"]}");
    make(srv, &uc, "uc", "male", 35,
         "{\"genders\":[\"female\"],\"age_min\":20,\"age_max\":30,\"interests\":[\"go\"]}");
    make(srv, &ud, "ud", "female", 28, "{\"genders\":[\"male\"],\"age_min\":20,\"age_max\":30}");
    make(srv, &ue, "ue", "other", 60, "{\"genders\":[\"other\"],\"age_min\":13,\"age_max\":120}");
    NTH_CASE("match: every bad input", case_bad_input, srv);
    NTH_CASE("match: crossing preferences give exactly the compatible pairs", case_pairs, srv);
    NTH_CASE("match: anonymous on every endpoint until both reveal", case_anonymity_and_reveal,
             srv);
    NTH_CASE("match: leaving closes the chat for both", case_leave, srv);
    NTH_CASE("match: blocked users are never paired", case_blocked_never_paired, srv);
    NTH_CASE("match: a WebSocket arrival pairs without waiting for the store",
             case_ws_arrival_pairs, srv);
    NTH_CASE("match: the last connection closing leaves the queue", case_disconnect_leaves, srv);
    if (check_failures) nth_dump_log(srv, 4000);
    CHECK_EQ_INT(nth_stop(srv), 0);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
