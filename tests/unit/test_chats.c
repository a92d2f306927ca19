/*
 * Unit test of the chats and messages services, driven through their
 * handlers against a real temporary SQLite store and the in-process bus.
 * Every rule of API.md "Chats and messages" and every kind of bad input is
 * tried; the events the handlers emit are caught by a delivery handler that
 * records each frame with its recipients.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#define SF_MAX_FRAMES 512
#include "service_fixture.h"

/* ---- shortcuts -------------------------------------------------------------------- */

#define S(lit) lit, strlen(lit)

static int64_t alice, bob, carol, dave, eve;
static int hook_calls;
static int64_t hook_last_seq;
static int hook_last_n;

/* Stands in for the bot: hears every new message once. */
static void on_message(nt_ctx *c, const nt_message *m, const int64_t *member_ids, int n)
{
    hook_calls++;
    hook_last_seq = m->seq;
    hook_last_n = n;
}
static nt_caller CA, CB, CC, CD, CE;

/* CHECK_400 and CHECK_ERR of service_fixture.h, and the reply body's error
 * envelope carries the same code. */
#define CHECK_400_BODY(field)                                                                      \
    do {                                                                                           \
        CHECK_400(field);                                                                          \
        CHECK_STR_EQ(BSTR("error.code"), "bad_request");                                           \
    } while (0)
#define CHECK_ERR_BODY(st, cd)                                                                     \
    do {                                                                                           \
        CHECK_ERR(st, cd);                                                                         \
        CHECK_STR_EQ(BSTR("error.code"), cd);                                                      \
    } while (0)

static void create(const nt_caller *c, const char *json)
{
    reset();
    nt_chats_create(&ctx, c, json, strlen(json), &R);
}

/* Creates a chat and returns its id (0 on failure). */
static int64_t create_ok(const nt_caller *c, const char *json, int status)
{
    create(c, json);
    CHECK_EQ_INT(R.status, status);
    return R.status == status ? BINT("id") : 0;
}

/* The role string of user in the chat JSON, or NULL. */
static const char *role_of(const char *json, const char *prefix, int64_t user)
{
    char path[64];
    for (int i = 0; i < 64; i++) {
        snprintf(path, sizeof path, "%smembers.%d.user_id", prefix, i);
        int64_t id = jint_in(json, path);
        if (id == -999) return NULL;
        if (id == user) {
            snprintf(path, sizeof path, "%smembers.%d.role", prefix, i);
            return jstr_in(json, path);
        }
    }
    return NULL;
}

static int64_t post(const nt_caller *c, int64_t chat, const char *json, int status)
{
    reset();
    nt_messages_post(&ctx, c, chat, json, strlen(json), &R);
    CHECK_EQ_INT(R.status, status);
    return R.status == status ? BINT("seq") : 0;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_create_bad(void)
{
    static const char *bad[] = {
        "",
        "nope",
        "[]",
        "42",
        "{}",
        "{\"type\":5}",
        "{\"type\":null}",
        "{\"type\":\"random\",\"title\":\"x\"}",
        "{\"type\":\"Direct\",\"user_id\":2}",
        "{\"type\":\"supergroup\",\"title\":\"x\"}",
        "{\"type\":[\"group\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        create(&CA, bad[i]);
        CHECK_EQ_INT(R.status, 400);
        CHECK_STR_EQ(R.code, "bad_request");
        if (i >= 4) CHECK(strstr(R.message, "type") != NULL);
    }
    /* Body not JSON at all. */
    reset();
    nt_chats_create(&ctx, &CA, NULL, 0, &R);
    CHECK_400_BODY("body");
}

static void test_direct(void)
{
    char js[128];

    create(&CA, "{\"type\":\"direct\"}");
    CHECK_400_BODY("user_id");
    create(&CA, "{\"type\":\"direct\",\"user_id\":\"2\"}");
    CHECK_400_BODY("user_id");
    create(&CA, "{\"type\":\"direct\",\"user_id\":0}");
    CHECK_400_BODY("user_id");
    create(&CA, "{\"type\":\"direct\",\"user_id\":-3}");
    CHECK_400_BODY("user_id");
    create(&CA, "{\"type\":\"direct\",\"user_id\":1.5}");
    CHECK_400_BODY("user_id");
    snprintf(js, sizeof js, "{\"type\":\"direct\",\"user_id\":%" PRId64 "}", alice);
    create(&CA, js);
    CHECK_400_BODY("user_id");
    create(&CA, "{\"type\":\"direct\",\"user_id\":987654}");
    CHECK_ERR_BODY(404, "not_found");

    frames_clear();
    snprintf(js, sizeof js, "{\"type\":\"direct\",\"user_id\":%" PRId64 ",\"x\":[1,2]}", bob);
    int64_t id = create_ok(&CA, js, 201);
    CHECK(id > 0);
    CHECK_STR_EQ(BSTR("type"), "direct");
    CHECK_EQ_INT(jcount_in(body(), "members"), 2);
    CHECK_EQ_INT(nframes_for(alice, "chat"), 1);
    CHECK_EQ_INT(nframes_for(bob, "chat"), 1);
    CHECK_EQ_INT(jint_in(frame_for(bob, "chat"), "chat.id"), id);

    /* Again, either way round: the same chat, 200, no event. */
    frames_clear();
    CHECK_EQ_INT(create_ok(&CA, js, 200), id);
    snprintf(js, sizeof js, "{\"type\":\"direct\",\"user_id\":%" PRId64 "}", alice);
    CHECK_EQ_INT(create_ok(&CB, js, 200), id);
    CHECK_EQ_INT(frames_total(), 0);
}

static int64_t test_group(void)
{
    char js[512];
    char title[2048];

    create(&CA, "{\"type\":\"group\"}");
    CHECK_400_BODY("title");
    create(&CA, "{\"type\":\"group\",\"title\":\"\"}");
    CHECK_400_BODY("title");
    create(&CA, "{\"type\":\"group\",\"title\":7}");
    CHECK_400_BODY("title");
    create(&CA, "{\"type\":\"group\",\"title\":\"a\\u0000b\"}");
    CHECK_400_BODY("title");
    /* 129 code points (two bytes each) is one too many, 128 is fine. */
    strcpy(title, "{\"type\":\"group\",\"title\":\"");
    for (int i = 0; i < 129; i++)
        strcat(title, "\xc3\xa9");
    strcat(title, "\"}");
    create(&CA, title);
    CHECK_400_BODY("title");
    strcpy(title, "{\"type\":\"channel\",\"title\":\"");
    for (int i = 0; i < 128; i++)
        strcat(title, "\xc3\xa9");
    strcat(title, "\"}");
    CHECK(create_ok(&CA, title, 201) > 0);
    CHECK_EQ_INT((int64_t)strlen(BSTR("title")), 256);

    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":5}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":{}}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[\"2\"]}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[0]}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[-1]}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[2.5]}");
    CHECK_400_BODY("member_ids");
    create(&CA, "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[null]}");
    CHECK_400_BODY("member_ids");
    snprintf(js, sizeof js,
             "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[%" PRId64 ",777777]}", bob);
    create(&CA, js);
    CHECK_ERR_BODY(404, "not_found");

    /* The size limit counts the owner and ignores duplicates. */
    ctx.limits.group_max_members = 3;
    snprintf(js, sizeof js,
             "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[%" PRId64 ",%" PRId64 ",%" PRId64
             "]}",
             bob, carol, dave);
    create(&CA, js);
    CHECK_400_BODY("member_ids");
    snprintf(js, sizeof js,
             "{\"type\":\"group\",\"title\":\"g\",\"member_ids\":[%" PRId64 ",%" PRId64 ",%" PRId64
             ",%" PRId64 ",%" PRId64 "]}",
             bob, carol, bob, alice, carol);
    int64_t small = create_ok(&CA, js, 201);
    CHECK(small > 0);
    CHECK_EQ_INT(jcount_in(body(), "members"), 3);
    ctx.limits.group_max_members = 1000;

    /* The real group of this test: alice owns, bob is a member. */
    frames_clear();
    snprintf(js, sizeof js,
             "{\"type\":\"group\",\"title\":\"friends\",\"member_ids\":[%" PRId64 ",%" PRId64 "]}",
             bob, bob);
    int64_t g = create_ok(&CA, js, 201);
    CHECK(g > 0);
    CHECK_STR_EQ(BSTR("type"), "group");
    CHECK_STR_EQ(BSTR("title"), "friends");
    CHECK_EQ_INT(jcount_in(body(), "members"), 2);
    CHECK_STR_EQ(role_of(body(), "", alice), "owner");
    CHECK_STR_EQ(role_of(body(), "", bob), "member");
    CHECK_EQ_INT(nframes_for(alice, "chat"), 1);
    CHECK_EQ_INT(nframes_for(bob, "chat"), 1);
    CHECK_EQ_INT(nframes_for(dave, "chat"), 0);
    CHECK_STR_EQ(jstr_in(frame_for(bob, "chat"), "chat.title"), "friends");

    /* No member list: just the owner. */
    CHECK(create_ok(&CB, "{\"type\":\"group\",\"title\":\"solo\",\"member_ids\":[]}", 201) > 0);
    CHECK_EQ_INT(jcount_in(body(), "members"), 1);
    CHECK(create_ok(&CB, "{\"type\":\"group\",\"title\":\"solo2\",\"member_ids\":null}", 201) > 0);
    return g;
}

static void test_list_get(int64_t g, int64_t ch)
{
    static const char *bad[] = {"limit=0",
                                "limit=201",
                                "limit=abc",
                                "limit=-1",
                                "limit=",
                                "limit=1e2",
                                "limit=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reset();
        nt_chats_list(&ctx, &CA, bad[i], &R);
        CHECK_400_BODY("limit");
    }
    reset();
    nt_chats_list(&ctx, &CA, "", &R);
    CHECK_EQ_INT(R.status, 200);
    int all = jcount_in(body(), "chats");
    CHECK(all >= 4);
    reset();
    nt_chats_list(&ctx, &CA, NULL, &R);
    CHECK_EQ_INT(jcount_in(body(), "chats"), all);
    reset();
    nt_chats_list(&ctx, &CA, "limit=1", &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "chats"), 1);
    reset();
    nt_chats_list(&ctx, &CE, "limit=200", &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "chats"), 0);

    reset();
    nt_chats_get(&ctx, &CB, g, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(BINT("id"), g);
    reset();
    nt_chats_get(&ctx, &CE, g, &R); /* not a member of a group */
    CHECK_ERR_BODY(404, "not_found");
    reset();
    nt_chats_get(&ctx, &CE, ch, &R); /* a channel is public */
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("type"), "channel");
    reset();
    nt_chats_get(&ctx, &CA, 555555, &R);
    CHECK_ERR_BODY(404, "not_found");
    reset();
    nt_chats_get(&ctx, &CA, 0, &R);
    CHECK_ERR_BODY(404, "not_found");
}

static void add(const nt_caller *c, int64_t chat, const char *json)
{
    reset();
    nt_chats_add_member(&ctx, c, chat, json, strlen(json), &R);
}

static void add_id(const nt_caller *c, int64_t chat, int64_t user)
{
    char js[64];
    snprintf(js, sizeof js, "{\"user_id\":%" PRId64 "}", user);
    add(c, chat, js);
}

static void rm(const nt_caller *c, int64_t chat, int64_t user)
{
    reset();
    nt_chats_remove_member(&ctx, c, chat, user, &R);
}

static int nmembers(const nt_caller *viewer, int64_t chat)
{
    nt_reply keep = R;
    memset(&R, 0, sizeof R);
    nt_chats_get(&ctx, viewer, chat, &R);
    int n = jcount_in(body(), "members");
    nt_reply_free(&R);
    R = keep;
    return n;
}

static void test_members(int64_t g, int64_t ch, int64_t direct)
{
    /* Bad bodies. */
    add(&CA, g, "");
    CHECK_400_BODY("body");
    add(&CA, g, "{}");
    CHECK_400_BODY("user_id");
    add(&CA, g, "{\"user_id\":\"3\"}");
    CHECK_400_BODY("user_id");
    add(&CA, g, "{\"user_id\":0}");
    CHECK_400_BODY("user_id");

    /* Group: only the owner adds. */
    add_id(&CB, g, carol);
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CE, g, carol); /* not a member: the group does not exist for eve */
    CHECK_ERR_BODY(404, "not_found");
    add_id(&CA, 555555, carol);
    CHECK_ERR_BODY(404, "not_found");
    add_id(&CA, g, 888888);
    CHECK_ERR_BODY(404, "not_found");
    CHECK_EQ_INT(nmembers(&CA, g), 2);

    frames_clear();
    add_id(&CA, g, dave);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(R.body.len, 0);
    CHECK_EQ_INT(nmembers(&CA, g), 3);
    CHECK_EQ_INT(nframes_for(alice, "chat"), 1);
    CHECK_EQ_INT(nframes_for(bob, "chat"), 1);
    CHECK_EQ_INT(nframes_for(dave, "chat"), 1);
    CHECK_EQ_INT(nframes_for(eve, "chat"), 0);
    CHECK_EQ_INT(jcount_in(frame_for(dave, "chat"), "chat.members"), 3);

    /* Already a member: idempotent 204 and no event. */
    frames_clear();
    add_id(&CA, g, dave);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 0);

    /* A full group. */
    ctx.limits.group_max_members = 3;
    add_id(&CA, g, eve);
    CHECK_ERR_BODY(403, "forbidden");
    ctx.limits.group_max_members = 1000;

    /* Channel: join yourself only. */
    frames_clear();
    add_id(&CD, ch, dave);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(dave, "chat"), 1);
    CHECK_EQ_INT(nframes_for(alice, "chat"), 1);
    add_id(&CD, ch, dave);
    CHECK_EQ_INT(R.status, 204);
    add_id(&CD, ch, eve);
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CA, ch, eve); /* the owner cannot draft people either */
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CE, ch, bob);
    CHECK_ERR_BODY(403, "forbidden");

    /* Direct chats never change. */
    add_id(&CA, direct, carol);
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CA, direct, alice);
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CE, direct, eve); /* not a member: 404 */
    CHECK_ERR_BODY(404, "not_found");

    /* Removing. */
    rm(&CA, g, 0);
    CHECK_400_BODY("user_id");
    rm(&CB, g, dave); /* not the owner */
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CE, g, dave); /* not a member */
    CHECK_ERR_BODY(404, "not_found");
    rm(&CA, g, eve); /* not in the group */
    CHECK_ERR_BODY(404, "not_found");
    rm(&CA, 555555, bob);
    CHECK_ERR_BODY(404, "not_found");
    frames_clear();
    rm(&CA, g, dave); /* the owner removes */
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nmembers(&CA, g), 2);
    CHECK_EQ_INT(nframes_for(dave, "chat"), 1);
    CHECK_EQ_INT(nframes_for(bob, "chat"), 1);
    CHECK_EQ_INT(jcount_in(frame_for(dave, "chat"), "chat.members"), 2);
    reset();
    nt_chats_get(&ctx, &CD, g, &R);
    CHECK_ERR_BODY(404, "not_found");

    add_id(&CA, g, dave);
    CHECK_EQ_INT(R.status, 204);
    frames_clear();
    rm(&CD, g, dave); /* dave leaves */
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(dave, "chat"), 1);
    CHECK_EQ_INT(nframes_for(alice, "chat"), 1);
    CHECK_EQ_INT(nmembers(&CA, g), 2);

    /* Channel: leave yourself; nobody removes others. */
    add_id(&CE, ch, eve);
    CHECK_EQ_INT(R.status, 204);
    rm(&CA, ch, eve);
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CB, ch, eve); /* bob is not even a member */
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CB, ch, bob);
    CHECK_ERR_BODY(404, "not_found");
    rm(&CE, ch, eve);
    CHECK_EQ_INT(R.status, 204);
    reset();
    nt_chats_get(&ctx, &CE, ch, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK(role_of(body(), "", eve) == NULL);

    /* Direct chats cannot be left. */
    rm(&CA, direct, alice);
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CA, direct, bob);
    CHECK_ERR_BODY(403, "forbidden");
}

static void test_random(void)
{
    int64_t ids[2] = {alice, bob};
    nt_chat rc;
    memset(&rc, 0, sizeof rc);
    CHECK_EQ_INT(nt_store_chat_create(ctx.store, "random", "", 0, ids, 2, 1700000000000, &rc), 0);
    int64_t chat = rc.id;
    nt_chat_free(&rc);

    post(&CB, chat, "{\"text\":\"hi stranger\"}", 201);
    add_id(&CA, chat, carol);
    CHECK_ERR_BODY(403, "forbidden");
    add_id(&CA, chat, alice);
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CB, chat, alice);
    CHECK_ERR_BODY(403, "forbidden");
    rm(&CC, chat, carol);
    CHECK_ERR_BODY(404, "not_found");

    frames_clear();
    rm(&CA, chat, alice);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(bob, "chat_closed"), 1);
    CHECK_EQ_INT(jint_in(frame_for(bob, "chat_closed"), "chat_id"), chat);
    /* Closed: no more messages, leaving again changes nothing. */
    post(&CB, chat, "{\"text\":\"hello?\"}", 403);
    CHECK_STR_EQ(R.code, "forbidden");
    frames_clear();
    rm(&CB, chat, bob);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 0);
    /* The history stays readable. */
    reset();
    nt_messages_history(&ctx, &CB, chat, "", &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "messages"), 1);
}

static void test_post(int64_t g, int64_t ch)
{
    char big[5000];
    static const char *bad_text[] = {
        "{}",
        "{\"text\":null}",
        "{\"text\":5}",
        "{\"text\":[\"a\"]}",
        "{\"text\":\"\"}",
        "{\"text\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof bad_text / sizeof *bad_text; i++) {
        post(&CA, g, bad_text[i], 400);
        CHECK(strstr(R.message, "text") != NULL);
    }
    static const char *bad_cid[] = {
        "{\"text\":\"x\",\"client_id\":5}",
        "{\"text\":\"x\",\"client_id\":\"\"}",
        "{\"text\":\"x\",\"client_id\":\"a\\u0001\"}",
        "{\"text\":\"x\",\"client_id\":\"caf\xc3\xa9\"}",
        "{\"text\":\"x\",\"client_id\":\"a\\nb\"}",
        "{\"text\":\"x\",\"client_id\":"
        "\"0123456789012345678901234567890123456789012345678901234567890123X\"}",
    };
    for (size_t i = 0; i < sizeof bad_cid / sizeof *bad_cid; i++) {
        post(&CA, g, bad_cid[i], 400);
        CHECK(strstr(R.message, "client_id") != NULL);
    }
    post(&CA, g, "not json", 400);
    post(&CA, g, "[\"text\"]", 400);

    /* 4097 code points is one too many; 4096 is fine. */
    strcpy(big, "{\"text\":\"");
    size_t at = strlen(big);
    memset(big + at, 'a', 4097);
    strcpy(big + at + 4097, "\"}");
    post(&CA, g, big, 400);
    CHECK(strstr(R.message, "text") != NULL);
    strcpy(big + at + 4096, "\"}");
    frames_clear();
    int64_t s1 = post(&CA, g, big, 201);
    CHECK_EQ_INT(s1, 1);
    CHECK_EQ_INT((int64_t)strlen(BSTR("text")), 4096);

    /* Who may post. */
    post(&CE, g, "{\"text\":\"let me in\"}", 403);
    CHECK_STR_EQ(R.code, "forbidden");
    post(&CE, ch, "{\"text\":\"not joined\"}", 403);
    post(&CA, 555555, "{\"text\":\"x\"}", 404);
    CHECK_STR_EQ(R.code, "not_found");

    /* A normal send: 201, one `message` event to every member. */
    frames_clear();
    ctx.message_hook = on_message;
    hook_calls = 0;
    int64_t s2 = post(&CB, g, "{\"text\":\"h\xc3\xa9llo \\\"you\\\"\",\"client_id\":\"c-1\"}", 201);
    CHECK_EQ_INT(s2, 2);
    int64_t mid = BINT("id");
    CHECK_EQ_INT(BINT("chat_id"), g);
    CHECK_EQ_INT(BINT("sender_id"), bob);
    CHECK_STR_EQ(BSTR("text"), "h\xc3\xa9llo \"you\"");
    CHECK_STR_EQ(BSTR("client_id"), "c-1");
    CHECK(BINT("ts") > 1700000000000);
    CHECK_EQ_INT(nframes_for(alice, "message"), 1);
    CHECK_EQ_INT(nframes_for(bob, "message"), 1); /* the sender's other devices */
    CHECK_EQ_INT(nframes_for(eve, "message"), 0);
    CHECK_EQ_INT(jint_in(frame_for(alice, "message"), "message.seq"), 2);
    CHECK_STR_EQ(jstr_in(frame_for(alice, "message"), "message.client_id"), "c-1");

    /* A retry with the same client_id: 200, the first message, no event. */
    frames_clear();
    post(&CB, g, "{\"text\":\"different\",\"client_id\":\"c-1\"}", 200);
    CHECK_EQ_INT(BINT("id"), mid);
    CHECK_EQ_INT(BINT("seq"), 2);
    CHECK_STR_EQ(BSTR("text"), "h\xc3\xa9llo \"you\"");
    CHECK_EQ_INT(frames_total(), 0);
    CHECK_EQ_INT(hook_calls, 1); /* the new message only, not the repeat */
    CHECK_EQ_INT(hook_last_seq, 2);
    CHECK_EQ_INT(hook_last_n, 2);
    ctx.message_hook = NULL;

    /* Same client_id from another sender is a new message. */
    CHECK_EQ_INT(post(&CA, g, "{\"text\":\"three\",\"client_id\":\"c-1\"}", 201), 3);
    CHECK_EQ_INT(post(&CA, g, "{\"text\":\"four\",\"client_id\":null}", 201), 4);
    CHECK_STR_EQ(BSTR("client_id"), "(null)");
    CHECK_EQ_INT(post(&CB, g, "{\"text\":\"five\"}", 201), 5);
    CHECK_EQ_INT(post(&CA, ch, "{\"text\":\"channel news\"}", 201), 1);
}

static void history(const nt_caller *c, int64_t chat, const char *query)
{
    reset();
    nt_messages_history(&ctx, c, chat, query, &R);
}

static void test_history(int64_t g, int64_t ch)
{
    static const char *bad[] = {"before_seq=-1",  "after_seq=x", "limit=0", "limit=201",
                                "before_seq=1.0", "after_seq=",  "limit=+5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        history(&CA, g, bad[i]);
        CHECK_EQ_INT(R.status, 400);
        CHECK_STR_EQ(R.code, "bad_request");
    }
    history(&CA, g, "before_seq=-1");
    CHECK_400_BODY("before_seq");
    history(&CA, g, "limit=201");
    CHECK_400_BODY("limit");

    history(&CA, g, "");
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "messages"), 5);
    CHECK_EQ_INT(BINT("messages.0.seq"), 1);
    CHECK_EQ_INT(BINT("messages.4.seq"), 5);
    history(&CB, g, "after_seq=2&limit=2");
    CHECK_EQ_INT(jcount_in(body(), "messages"), 2);
    CHECK_EQ_INT(BINT("messages.0.seq"), 3);
    CHECK_EQ_INT(BINT("messages.1.seq"), 4);
    history(&CB, g, "before_seq=5&limit=2");
    CHECK_EQ_INT(jcount_in(body(), "messages"), 2);
    CHECK_EQ_INT(BINT("messages.0.seq"), 3);
    CHECK_EQ_INT(BINT("messages.1.seq"), 4);
    history(&CB, g, "after_seq=5");
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "messages"), 0);
    history(&CB, g, "after_seq=0&before_seq=0");
    CHECK_EQ_INT(jcount_in(body(), "messages"), 5);

    history(&CE, g, ""); /* not a member of a group */
    CHECK_ERR_BODY(404, "not_found");
    history(&CA, 555555, "");
    CHECK_ERR_BODY(404, "not_found");
    history(&CE, ch, ""); /* anyone reads a channel */
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "messages"), 1);
}

static void edit(const nt_caller *c, int64_t chat, int64_t seq, const char *json)
{
    reset();
    nt_messages_edit(&ctx, c, chat, seq, json, strlen(json), &R);
}

static void del(const nt_caller *c, int64_t chat, int64_t seq)
{
    reset();
    nt_messages_delete(&ctx, c, chat, seq, &R);
}

static void test_edit_delete(int64_t g, int64_t ch)
{
    edit(&CB, g, 2, "{}");
    CHECK_400_BODY("text");
    edit(&CB, g, 2, "{\"text\":\"\"}");
    CHECK_400_BODY("text");
    edit(&CB, g, 2, "{\"text\":false}");
    CHECK_400_BODY("text");
    edit(&CB, g, 2, "oops");
    CHECK_EQ_INT(R.status, 400);
    edit(&CB, g, 0, "{\"text\":\"x\"}");
    CHECK_400_BODY("seq");
    edit(&CB, g, 99, "{\"text\":\"x\"}");
    CHECK_ERR_BODY(404, "not_found");
    edit(&CA, g, 2, "{\"text\":\"not mine\"}"); /* alice did not send seq 2 */
    CHECK_ERR_BODY(403, "forbidden");
    edit(&CE, g, 2, "{\"text\":\"x\"}"); /* not a member */
    CHECK_ERR_BODY(404, "not_found");
    edit(&CE, ch, 1, "{\"text\":\"x\"}"); /* a channel eve is not in */
    CHECK_ERR_BODY(403, "forbidden");

    frames_clear();
    edit(&CB, g, 2, "{\"text\":\"fixed\"}");
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("text"), "fixed");
    CHECK_EQ_INT(BINT("seq"), 2);
    CHECK(BINT("edited_at") > 0);
    CHECK_EQ_INT(nframes_for(alice, "message_edited"), 1);
    CHECK_EQ_INT(nframes_for(bob, "message_edited"), 1);
    CHECK_STR_EQ(jstr_in(frame_for(alice, "message_edited"), "message.text"), "fixed");
    history(&CA, g, "after_seq=1&limit=1");
    CHECK_STR_EQ(BSTR("messages.0.text"), "fixed");

    del(&CA, g, 2);
    CHECK_ERR_BODY(403, "forbidden");
    del(&CB, g, 99);
    CHECK_ERR_BODY(404, "not_found");
    del(&CB, g, -1);
    CHECK_400_BODY("seq");
    del(&CE, g, 2);
    CHECK_ERR_BODY(404, "not_found");
    frames_clear();
    del(&CB, g, 2);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(R.body.len, 0);
    CHECK_EQ_INT(nframes_for(alice, "message_deleted"), 1);
    CHECK_EQ_INT(nframes_for(bob, "message_deleted"), 1);
    CHECK_STR_EQ(jstr_in(frame_for(alice, "message_deleted"), "message.deleted"), "(true)");
    history(&CA, g, "after_seq=1&limit=1");
    CHECK_STR_EQ(BSTR("messages.0.deleted"), "(true)");

    /* A deleted message stays deleted (store: EFORBIDDEN). */
    edit(&CB, g, 2, "{\"text\":\"back\"}");
    CHECK_ERR_BODY(403, "forbidden");
    del(&CB, g, 2);
    CHECK_ERR_BODY(403, "forbidden");
}

static void test_export(int64_t g, int64_t ch)
{
    reset();
    nt_messages_export(&ctx, &CE, g, &R);
    CHECK_ERR_BODY(404, "not_found");
    reset();
    nt_messages_export(&ctx, &CE, ch, &R); /* channels too: members only */
    CHECK_ERR_BODY(403, "forbidden");
    reset();
    nt_messages_export(&ctx, &CA, 555555, &R);
    CHECK_ERR_BODY(404, "not_found");

    reset();
    nt_messages_export(&ctx, &CA, g, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(R.content_type, "application/x-ndjson");
    int lines = 0;
    const char *p = body();
    int64_t want = 1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        char line[8192];
        size_t n = (size_t)(nl - p);
        CHECK(n < sizeof line);
        if (n >= sizeof line) break;
        memcpy(line, p, n);
        line[n] = '\0';
        CHECK_EQ_INT(jint_in(line, "seq"), want++);
        CHECK_EQ_INT(jint_in(line, "chat_id"), g);
        lines++;
        p = nl + 1;
    }
    CHECK_EQ_INT(lines, 5);
    reset();
    nt_messages_export(&ctx, &CA, ch, &R);
    CHECK_EQ_INT(R.status, 200);
}

static void test_marks(int64_t g)
{
    reset();
    nt_chats_read(&ctx, &CA, g, S("{}"), &R);
    CHECK_400_BODY("seq");
    reset();
    nt_chats_read(&ctx, &CA, g, S("{\"seq\":0}"), &R);
    CHECK_400_BODY("seq");
    reset();
    nt_chats_read(&ctx, &CA, g, S("{\"seq\":\"3\"}"), &R);
    CHECK_400_BODY("seq");
    reset();
    nt_chats_read(&ctx, &CA, g, S("[]"), &R);
    CHECK_EQ_INT(R.status, 400);
    reset();
    nt_chats_read(&ctx, &CE, g, S("{\"seq\":1}"), &R);
    CHECK_ERR_BODY(404, "not_found");
    reset();
    nt_chats_read(&ctx, &CA, 555555, S("{\"seq\":1}"), &R);
    CHECK_ERR_BODY(404, "not_found");

    frames_clear();
    reset();
    nt_chats_read(&ctx, &CA, g, S("{\"seq\":3}"), &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(bob, "receipt"), 1);
    CHECK_EQ_INT(nframes_for(alice, "receipt"), 1);
    const char *f = frame_for(bob, "receipt");
    CHECK_EQ_INT(jint_in(f, "chat_id"), g);
    CHECK_EQ_INT(jint_in(f, "user_id"), alice);
    CHECK_EQ_INT(jint_in(f, "read_seq"), 3);
    CHECK_EQ_INT(jint_in(f, "delivered_seq"), 3);

    /* Never back, and nothing moved: no event. */
    frames_clear();
    reset();
    nt_chats_read(&ctx, &CA, g, S("{\"seq\":2}"), &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 0);
    reset();
    nt_chats_mark(&ctx, &CA, g, NT_MARK_DELIVERED, 3, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 0);

    /* Delivered moves alone; capped at last_seq. */
    frames_clear();
    reset();
    nt_chats_mark(&ctx, &CA, g, NT_MARK_DELIVERED, 1000, &R);
    CHECK_EQ_INT(R.status, 204);
    f = frame_for(bob, "receipt");
    CHECK_EQ_INT(jint_in(f, "delivered_seq"), 5);
    CHECK_EQ_INT(jint_in(f, "read_seq"), 3);

    reset();
    nt_chats_mark(&ctx, &CA, g, 7, 1, &R);
    CHECK_EQ_INT(R.status, 400);
    reset();
    nt_chats_mark(&ctx, &CA, g, NT_MARK_READ, 0, &R);
    CHECK_400_BODY("seq");
    reset();
    nt_chats_mark(&ctx, &CE, g, NT_MARK_READ, 1, &R);
    CHECK_ERR_BODY(404, "not_found");

    /* The chat view shows the markers. */
    reset();
    nt_chats_get(&ctx, &CB, g, &R);
    for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "members.%d.user_id", i);
        if (BINT(path) == alice) {
            snprintf(path, sizeof path, "members.%d.read_seq", i);
            CHECK_EQ_INT(BINT(path), 3);
            snprintf(path, sizeof path, "members.%d.delivered_seq", i);
            CHECK_EQ_INT(BINT(path), 5);
        }
    }
}

static void test_typing(int64_t g)
{
    /* carol (member, offline) and dave (member, online) join. */
    add_id(&CA, g, carol);
    CHECK_EQ_INT(R.status, 204);
    add_id(&CA, g, dave);
    CHECK_EQ_INT(R.status, 204);

    reset();
    nt_chats_typing(&ctx, &CE, g, &R);
    CHECK_ERR_BODY(404, "not_found");
    reset();
    nt_chats_typing(&ctx, &CA, 555555, &R);
    CHECK_ERR_BODY(404, "not_found");

    frames_clear();
    reset();
    nt_chats_typing(&ctx, &CA, g, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 1);
    CHECK_EQ_INT(nframes_for(bob, "typing"), 1);
    CHECK_EQ_INT(nframes_for(dave, "typing"), 1);
    CHECK_EQ_INT(nframes_for(alice, "typing"), 0);
    CHECK_EQ_INT(nframes_for(carol, "typing"), 0);
    const char *f = frame_for(bob, "typing");
    CHECK_EQ_INT(jint_in(f, "chat_id"), g);
    CHECK_EQ_INT(jint_in(f, "user_id"), alice);

    /* Nobody else online: no delivery at all. */
    int64_t ids[1] = {carol};
    nt_chat c1;
    memset(&c1, 0, sizeof c1);
    CHECK_EQ_INT(nt_store_chat_create(ctx.store, "group", "quiet", alice, ids, 1, 1, &c1), 0);
    frames_clear();
    reset();
    nt_chats_typing(&ctx, &CA, c1.id, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(frames_total(), 0);
    nt_chat_free(&c1);
}

typedef struct worker_job {
    int64_t chat;
    nt_reply reply;
} worker_job;

static void worker_post(void *arg)
{
    worker_job *job = arg;
    nt_messages_post(&ctx, &CA, job->chat, S("{\"text\":\"from a worker\"}"), &job->reply);
}

/* As in production: the handler runs on another thread, the bus queues the
 * delivery and the loop hands it over on its next turn. */
static void test_worker_thread(int64_t g)
{
    worker_job job;
    uv_thread_t th;

    memset(&job, 0, sizeof job);
    job.chat = g;
    frames_clear();
    CHECK_EQ_INT(uv_thread_create(&th, worker_post, &job), 0);
    uv_thread_join(&th);
    CHECK_EQ_INT(job.reply.status, 201);
    for (int i = 0; i < 100 && frames_total() == 0; i++)
        uv_sleep(10);
    CHECK_EQ_INT(nframes_for(bob, "message"), 1);
    CHECK_STR_EQ(jstr_in(frame_for(bob, "message"), "message.text"), "from a worker");
    nt_reply_free(&job.reply);
}

static void test_check_text(void)
{
    CHECK(nt_messages_check_text(&ctx, "a", 1) == NULL);
    CHECK(nt_messages_check_text(&ctx, "", 0) != NULL);
    CHECK(nt_messages_check_text(&ctx, "a\0b", 3) != NULL);
    CHECK(strstr(nt_messages_check_text(&ctx, "a\0b", 3), "text") != NULL);
    ctx.limits.text_max_cp = 3;
    CHECK(nt_messages_check_text(&ctx, "\xc3\xa9\xc3\xa9\xc3\xa9", 6) == NULL);
    CHECK(nt_messages_check_text(&ctx, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8) != NULL);
    CHECK(nt_messages_check_text(&ctx, "abcd", 4) != NULL);
    CHECK(strstr(nt_messages_check_text(&ctx, "abcd", 4), "text") != NULL);
    ctx.limits.text_max_cp = 4096;
}

int main(void)
{
    int rc = open_ctx("test_chats");
    if (rc != 0) return rc;

    alice = make_user("alice", NULL, NULL);
    bob = make_user("bob", NULL, NULL);
    carol = make_user("carol", NULL, NULL);
    dave = make_user("dave", NULL, NULL);
    eve = make_user("eve", NULL, NULL);
    CA.user_id = alice;
    CB.user_id = bob;
    CC.user_id = carol;
    CD.user_id = dave;
    CE.user_id = eve;
    /* Everyone but carol holds a connection, so deliveries reach them. */
    nt_bus_conn_up(ctx.bus, alice);
    nt_bus_conn_up(ctx.bus, bob);
    nt_bus_conn_up(ctx.bus, dave);
    nt_bus_conn_up(ctx.bus, eve);

    test_check_text();
    test_create_bad();
    test_direct();
    int64_t g = test_group();
    int64_t ch = create_ok(&CA, "{\"type\":\"channel\",\"title\":\"news\"}", 201);
    CHECK_STR_EQ(role_of(body(), "", alice), "owner");
    reset();
    nt_chats_list(&ctx, &CA, "", &R);
    int64_t direct = 0;
    for (int i = 0; i < 64; i++) {
        char p[64];
        snprintf(p, sizeof p, "chats.%d.type", i);
        const char *t = BSTR(p);
        if (!t) break;
        if (strcmp(t, "direct") == 0) {
            snprintf(p, sizeof p, "chats.%d.id", i);
            direct = BINT(p);
        }
    }
    CHECK(direct > 0);
    test_list_get(g, ch);
    test_members(g, ch, direct);
    test_random();
    test_post(g, ch);
    test_history(g, ch);
    test_edit_delete(g, ch);
    test_export(g, ch);
    test_marks(g);
    test_typing(g);
    test_worker_thread(g);

    close_ctx();
    return check_exit();
}
