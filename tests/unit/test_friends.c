/*
 * Unit test of the friends service (friends.c) and of the block rules the
 * store enforces, driven through the handlers against a real temporary
 * SQLite store and the in-process bus: requests by nickname and by id,
 * crossing requests, accept, reject, remove, every bad input, blocks
 * (friendship and requests gone, no request to the blocker, no message to
 * the blocker in any two-member chat, groups of three untouched, unblock),
 * and presence going to friends but not to blocked users.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "common/json.h"
#include "services/services.h"

/* ---- recorded deliveries (the pattern of test_chats.c) --------------------------- */

static char db_path[700];

#define MAX_FRAMES 1024
#define MAX_RCPT 16

typedef struct rec_frame {
    char *data;
    size_t len;
    int64_t ids[MAX_RCPT];
    size_t n;
} rec_frame;

static rec_frame frames[MAX_FRAMES];
static int nframes;
static uv_loop_t loop;
/* The bus unrefs its own wake-up handle, so without a referenced handle of
 * ours uv_run would return at once and never hand over a delivery queued
 * from another thread. */
static uv_async_t keep_alive;
static nt_ctx ctx;
static nt_reply R;

static void on_delivery(void *arg, nt_shared *frame, const int64_t *user_ids, size_t n)
{
    if (nframes >= MAX_FRAMES) return;
    rec_frame *f = &frames[nframes++];
    f->data = malloc(frame->len + 1);
    memcpy(f->data, frame->data, frame->len);
    f->data[frame->len] = '\0';
    f->len = frame->len;
    f->n = n < MAX_RCPT ? n : MAX_RCPT;
    memcpy(f->ids, user_ids, f->n * sizeof *user_ids);
}

static void drain(void)
{
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void frames_clear(void)
{
    drain();
    for (int i = 0; i < nframes; i++)
        free(frames[i].data);
    nframes = 0;
}

static nt_json_tok jtoks[16384];

/* The token at a dotted path ("chat.members.0.role") or -1. */
static int jfind(nt_json *doc, const char *json, size_t len, const char *path)
{
    if (nt_json_parse(doc, json, len, jtoks, 16384) != 0) return -1;
    int tok = 0;
    char key[64];
    const char *p = path;
    while (*p && tok >= 0) {
        size_t k = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)k, p);
        p += k;
        if (*p == '.') p++;
        if (nt_json_type_of(doc, tok) == NT_JSON_ARRAY) {
            int idx = atoi(key);
            int el = nt_json_first(doc, tok);
            while (el >= 0 && idx-- > 0)
                el = nt_json_next(doc, el);
            tok = el;
        } else {
            tok = nt_json_get(doc, tok, key);
        }
    }
    return tok;
}

static int64_t jint_in(const char *json, const char *path)
{
    nt_json doc;
    int64_t v = -999;
    if (!json) return -999;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0 || nt_json_int(&doc, tok, &v) != 0) return -999;
    return v;
}

/* A string at path (static buffer), "(null)" for JSON null, NULL if absent. */
static const char *jstr_in(const char *json, const char *path)
{
    static char out[8192];
    nt_json doc;
    if (!json) return NULL;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0) return NULL;
    if (nt_json_type_of(&doc, tok) == NT_JSON_NULL) return "(null)";
    if (nt_json_type_of(&doc, tok) == NT_JSON_TRUE) return "(true)";
    if (nt_json_type_of(&doc, tok) == NT_JSON_FALSE) return "(false)";
    if (nt_json_str(&doc, tok, out, sizeof out) < 0) return NULL;
    return out;
}

static int jcount_in(const char *json, const char *path)
{
    nt_json doc;
    if (!json) return -1;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0 || nt_json_type_of(&doc, tok) != NT_JSON_ARRAY) return -1;
    return (int)doc.toks[tok].count;
}

static const char *body(void)
{
    return R.body.data ? nt_buf_cstr(&R.body) : "";
}
#define BINT(path) jint_in(body(), path)
#define BSTR(path) jstr_in(body(), path)

static void reset(void)
{
    nt_reply_free(&R);
    memset(&R, 0, sizeof R);
}

/* Frames that reached `user` and have this "type". */
static int nframes_for(int64_t user, const char *type)
{
    int count = 0;
    drain();
    for (int i = 0; i < nframes; i++) {
        const char *t = jstr_in(frames[i].data, "type");
        if (!t || strcmp(t, type) != 0) continue;
        for (size_t j = 0; j < frames[i].n; j++)
            if (frames[i].ids[j] == user) count++;
    }
    return count;
}

/* The last frame of this type that reached user, or NULL. */
static const char *frame_for(int64_t user, const char *type)
{
    drain();
    for (int i = nframes - 1; i >= 0; i--) {
        const char *t = jstr_in(frames[i].data, "type");
        if (!t || strcmp(t, type) != 0) continue;
        for (size_t j = 0; j < frames[i].n; j++)
            if (frames[i].ids[j] == user) return frames[i].data;
    }
    return NULL;
}

/* Expects a 400 bad_request whose message names `field`. */
#define CHECK_400(field)                                                                           \
    do {                                                                                           \
        CHECK_EQ_INT(R.status, 400);                                                               \
        CHECK_STR_EQ(R.code, "bad_request");                                                       \
        CHECK(strstr(R.message, field) != NULL);                                                   \
        if (!strstr(R.message, field)) fprintf(stderr, "  message: %s\n", R.message);             \
    } while (0)
#define CHECK_ERR(st, cd)                                                                          \
    do {                                                                                           \
        CHECK_EQ_INT(R.status, st);                                                                \
        CHECK_STR_EQ(R.code, cd);                                                                  \
    } while (0)

static int64_t make_user(const char *nick, const char *gender, const char *birth_date)
{
    char email[64];
    nt_user u;
    const char *field = NULL;
    snprintf(email, sizeof email, "%s@example.com", nick);
    nt_user_new in = {.email = email,
                      .nickname = nick,
                      .password_hash = "x",
                      .gender = gender,
                      .birth_date = birth_date,
                      .created_at = 1700000000000};
    int rc = nt_store_user_create(ctx.store, &in, &u, &field);
    CHECK_EQ_INT(rc, 0);
    return u.id;
}

/* Opens a temp store and the local bus into ctx. 0 or 1. */
static int open_ctx(const char *name)
{
    char dir[512], path[700], url[720], err[256];
    const char *tmp = getenv("NT_TEST_TMP");

    snprintf(dir, sizeof dir, "%s", tmp && *tmp ? tmp : "/tmp");
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/%s_%d.db", dir, name, (int)getpid());
    unlink(path);
    snprintf(url, sizeof url, "sqlite:%s", path);

    uv_loop_init(&loop);
    uv_async_init(&loop, &keep_alive, NULL);
    ctx.limits = (nt_limits){.text_max_cp = 4096,
                             .bio_max_cp = 500,
                             .url_max = 1024,
                             .password_min = 8,
                             .password_max = 1024,
                             .title_max_cp = 128,
                             .group_max_members = 1000};
    ctx.store = nt_store_open(url, err, sizeof err);
    if (!ctx.store) {
        fprintf(stderr, "store: %s\n", err);
        return 1;
    }
    ctx.bus = nt_bus_open("local", &loop, err, sizeof err);
    if (!ctx.bus) {
        fprintf(stderr, "bus: %s\n", err);
        return 1;
    }
    nt_bus_set_delivery_handler(ctx.bus, on_delivery, NULL);
    snprintf(db_path, sizeof db_path, "%s", path);
    return 0;
}

static void close_ctx(void)
{
    char side[760];
    frames_clear();
    reset();
    nt_match_shutdown(&ctx);
    nt_bus_close(ctx.bus);
    uv_close((uv_handle_t *)&keep_alive, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    nt_store_close(ctx.store);
    uv_loop_close(&loop);
    unlink(db_path);
    snprintf(side, sizeof side, "%s-wal", db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db_path);
    unlink(side);
}

/* ---- shortcuts ---------------------------------------------------------------------- */

static int64_t ann, ben, cat, dan;
static nt_caller CA, CB, CC, CD;

static void request(const nt_caller *c, const char *json)
{
    reset();
    nt_friends_request(&ctx, c, json, json ? strlen(json) : 0, &R);
}

static void request_nick(const nt_caller *c, const char *nick)
{
    char js[128];
    snprintf(js, sizeof js, "{\"nickname\":\"%s\"}", nick);
    request(c, js);
}

/* Does list `key` of GET /friends as c hold user? */
static bool in_list(const nt_caller *c, const char *key, int64_t user)
{
    char path[64];
    reset();
    nt_friends_list(&ctx, c, &R);
    CHECK_EQ_INT(R.status, 200);
    int n = jcount_in(body(), key);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s.%d.id", key, i);
        if (BINT(path) == user) return true;
    }
    return false;
}

static int64_t direct(const nt_caller *c, int64_t other)
{
    char js[96];
    snprintf(js, sizeof js, "{\"type\":\"direct\",\"user_id\":%" PRId64 "}", other);
    reset();
    nt_chats_create(&ctx, c, js, strlen(js), &R);
    CHECK(R.status == 200 || R.status == 201);
    return BINT("id");
}

static int post(const nt_caller *c, int64_t chat)
{
    reset();
    nt_messages_post(&ctx, c, chat, "{\"text\":\"hi\"}", 13, &R);
    return R.status;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_bad_input(void)
{
    request(&CA, NULL);
    CHECK_400("body");
    request(&CA, "[]");
    CHECK_400("body");
    request(&CA, "{}");
    CHECK_400("nickname");
    request(&CA, "{\"nickname\":5}");
    CHECK_400("nickname");
    request(&CA, "{\"nickname\":\"a b\"}");
    CHECK_400("nickname");
    request(&CA, "{\"nickname\":\"x123456789012345678901234567890123456789\"}");
    CHECK_400("nickname");
    request(&CA, "{\"user_id\":\"2\"}");
    CHECK_400("user_id");
    request(&CA, "{\"user_id\":0}");
    CHECK_400("user_id");
    request_nick(&CA, "ann");
    CHECK_400("nickname");
    CHECK(strstr(R.message, "yourself") != NULL);
    request_nick(&CA, "ANN"); /* nicknames are case-insensitive */
    CHECK_400("nickname");
    char js[64];
    snprintf(js, sizeof js, "{\"user_id\":%" PRId64 "}", ann);
    request(&CA, js);
    CHECK_400("user_id");
    request_nick(&CA, "nobody");
    CHECK_ERR(404, "not_found");
    request(&CA, "{\"user_id\":987654}");
    CHECK_ERR(404, "not_found");

    reset();
    nt_friends_accept(&ctx, &CA, 987654, &R);
    CHECK_ERR(404, "not_found");
    reset();
    nt_friends_accept(&ctx, &CA, ben, &R); /* no request */
    CHECK_ERR(404, "not_found");
    reset();
    nt_friends_reject(&ctx, &CA, 987654, &R);
    CHECK_ERR(404, "not_found");
    reset();
    nt_friends_reject(&ctx, &CA, ben, &R);
    CHECK_ERR(404, "not_found");
    reset();
    nt_friends_remove(&ctx, &CA, 987654, &R);
    CHECK_ERR(404, "not_found");
    reset();
    nt_friends_remove(&ctx, &CA, ben, &R); /* not friends */
    CHECK_ERR(404, "not_found");
    reset();
    nt_blocks_add(&ctx, &CA, 987654, &R);
    CHECK_ERR(404, "not_found");
    reset();
    nt_blocks_add(&ctx, &CA, ann, &R);
    CHECK_400("user_id");
    reset();
    nt_blocks_remove(&ctx, &CA, 987654, &R);
    CHECK_ERR(404, "not_found");
    CHECK_EQ_INT(nframes, 0);
}

static void test_request_accept(void)
{
    frames_clear();
    request_nick(&CA, "ben");
    CHECK_EQ_INT(R.status, 201);
    CHECK_STR_EQ(BSTR("status"), "pending");
    CHECK_EQ_INT(BINT("user.id"), ben);
    CHECK_EQ_INT(nframes_for(ben, "friend_request"), 1);
    CHECK_EQ_INT(jint_in(frame_for(ben, "friend_request"), "user.id"), ann);
    CHECK_EQ_INT(nframes_for(ann, "friend_request"), 0);

    /* Again: 200, still pending, no second event. */
    request_nick(&CA, "Ben");
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("status"), "pending");
    CHECK_EQ_INT(nframes_for(ben, "friend_request"), 1);

    CHECK(in_list(&CA, "outgoing", ben));
    CHECK(in_list(&CB, "incoming", ann));
    CHECK(!in_list(&CA, "friends", ben));
    CHECK_EQ_INT(jcount_in(body(), "friends"), 0);

    reset();
    nt_friends_accept(&ctx, &CB, ann, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("status"), "friends");
    CHECK_EQ_INT(BINT("user.id"), ann);
    CHECK_EQ_INT(nframes_for(ann, "friend"), 1);
    CHECK_EQ_INT(nframes_for(ben, "friend"), 1);
    CHECK_EQ_INT(jint_in(frame_for(ann, "friend"), "user.id"), ben);
    CHECK_EQ_INT(jint_in(frame_for(ben, "friend"), "user.id"), ann);
    CHECK(in_list(&CA, "friends", ben));
    CHECK(in_list(&CB, "friends", ann));
    CHECK(!in_list(&CA, "outgoing", ben));
    CHECK(!in_list(&CB, "incoming", ann));

    /* Accepting twice: there is no request any more. */
    reset();
    nt_friends_accept(&ctx, &CB, ann, &R);
    CHECK_ERR(404, "not_found");
    /* A request between friends changes nothing. */
    request_nick(&CB, "ann");
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("status"), "friends");
}

static void test_crossing_reject_remove(void)
{
    char js[64];
    frames_clear();
    /* cat asks dan by id, dan asks cat by nickname: friends at once. */
    snprintf(js, sizeof js, "{\"user_id\":%" PRId64 "}", dan);
    request(&CC, js);
    CHECK_EQ_INT(R.status, 201);
    request_nick(&CD, "cat");
    CHECK_EQ_INT(R.status, 201);
    CHECK_STR_EQ(BSTR("status"), "friends");
    CHECK_EQ_INT(nframes_for(cat, "friend"), 1);
    CHECK_EQ_INT(nframes_for(dan, "friend"), 1);
    CHECK(in_list(&CC, "friends", dan));
    CHECK(!in_list(&CC, "outgoing", dan));
    CHECK(!in_list(&CD, "incoming", cat));

    /* Remove: both lose the friendship, the other side may not remove again. */
    reset();
    nt_friends_remove(&ctx, &CD, cat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK(!in_list(&CC, "friends", dan));
    CHECK(!in_list(&CD, "friends", cat));
    reset();
    nt_friends_remove(&ctx, &CC, dan, &R);
    CHECK_ERR(404, "not_found");

    /* Reject. */
    request_nick(&CC, "dan");
    CHECK_EQ_INT(R.status, 201);
    reset();
    nt_friends_reject(&ctx, &CD, cat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK(!in_list(&CD, "incoming", cat));
    CHECK(!in_list(&CC, "outgoing", dan));
    /* Withdraw one's own request with DELETE /friends/{id}. */
    request_nick(&CC, "dan");
    CHECK_EQ_INT(R.status, 201);
    reset();
    nt_friends_remove(&ctx, &CC, dan, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK(!in_list(&CD, "incoming", cat));
}

static void test_blocks(void)
{
    /* ann and ben are friends (test_request_accept); cat asked ann. */
    request_nick(&CC, "ann");
    CHECK_EQ_INT(R.status, 201);
    int64_t ab = direct(&CA, ben);
    CHECK_EQ_INT(post(&CB, ab), 201);

    /* ann blocks ben: friendship gone; ben may not write to ann. */
    reset();
    nt_blocks_add(&ctx, &CA, ben, &R);
    CHECK_EQ_INT(R.status, 204);
    reset();
    nt_blocks_add(&ctx, &CA, ben, &R); /* idempotent */
    CHECK_EQ_INT(R.status, 204);
    CHECK(!in_list(&CA, "friends", ben));
    CHECK(!in_list(&CB, "friends", ann));
    reset();
    nt_blocks_list(&ctx, &CA, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "blocks"), 1);
    CHECK_EQ_INT(BINT("blocks.0.id"), ben);
    reset();
    nt_blocks_list(&ctx, &CB, &R);
    CHECK_EQ_INT(jcount_in(body(), "blocks"), 0);

    CHECK_EQ_INT(post(&CB, ab), 403);
    CHECK_STR_EQ(R.code, "forbidden");
    CHECK_EQ_INT(post(&CA, ab), 201); /* the rule is one-way: the blocked may not write */

    /* No friend request either way. */
    request_nick(&CB, "ann");
    CHECK_ERR(403, "forbidden");
    request_nick(&CA, "ben");
    CHECK_ERR(403, "forbidden");
    CHECK(strstr(R.message, "unblock") != NULL);

    /* A two-member group counts; a group of three does not. */
    char js[160];
    snprintf(js, sizeof js, "{\"type\":\"group\",\"title\":\"two\",\"member_ids\":[%" PRId64 "]}",
             ben);
    reset();
    nt_chats_create(&ctx, &CA, js, strlen(js), &R);
    CHECK_EQ_INT(R.status, 201);
    int64_t g2 = BINT("id");
    CHECK_EQ_INT(post(&CB, g2), 403);
    snprintf(js, sizeof js,
             "{\"type\":\"group\",\"title\":\"three\",\"member_ids\":[%" PRId64 ",%" PRId64 "]}",
             ben, cat);
    reset();
    nt_chats_create(&ctx, &CA, js, strlen(js), &R);
    CHECK_EQ_INT(R.status, 201);
    int64_t g3 = BINT("id");
    CHECK_EQ_INT(post(&CB, g3), 201);
    /* The group shrinks to two: the rule applies from then on. */
    reset();
    nt_chats_remove_member(&ctx, &CC, g3, cat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(post(&CB, g3), 403);

    /* Blocking removes pending requests both ways. */
    CHECK(in_list(&CA, "incoming", cat));
    reset();
    nt_blocks_add(&ctx, &CC, ann, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK(!in_list(&CA, "incoming", cat));
    CHECK(!in_list(&CC, "outgoing", ann));

    /* Unblock: ben may write and ask again. */
    reset();
    nt_blocks_remove(&ctx, &CA, ben, &R);
    CHECK_EQ_INT(R.status, 204);
    reset();
    nt_blocks_remove(&ctx, &CA, ben, &R); /* idempotent */
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(post(&CB, ab), 201);
    CHECK_EQ_INT(post(&CB, g2), 201);
    request_nick(&CB, "ann");
    CHECK_EQ_INT(R.status, 201);
    reset();
    nt_friends_accept(&ctx, &CA, ben, &R);
    CHECK_EQ_INT(R.status, 200);
}

static void test_presence(void)
{
    /* ann and ben are friends again; dan is a friend of ann; cat blocked
     * ann. Presence goes to friends (no direct chat needed). */
    request_nick(&CD, "ann");
    reset();
    nt_friends_accept(&ctx, &CA, dan, &R);
    CHECK_EQ_INT(R.status, 200);
    frames_clear();
    nt_users_presence(&ctx, ann, true);
    CHECK_EQ_INT(nframes_for(ben, "presence"), 1);
    CHECK_EQ_INT(nframes_for(dan, "presence"), 1);
    CHECK_EQ_INT(nframes_for(cat, "presence"), 0);
    CHECK_EQ_INT(jint_in(frame_for(dan, "presence"), "user_id"), ann);
    CHECK_STR_EQ(jstr_in(frame_for(dan, "presence"), "online"), "(true)");

    /* cat blocked ann: cat's presence does not go to ann. */
    int64_t ca = direct(&CC, ann);
    CHECK(ca > 0);
    frames_clear();
    nt_users_presence(&ctx, cat, false);
    CHECK_EQ_INT(nframes_for(ann, "presence"), 0);
    /* ann's does go to cat (cat chose not to hear ann only by blocking
     * messages; presence of the blocker is the blocker's to withhold). */
    frames_clear();
    nt_users_presence(&ctx, ann, false);
    CHECK_EQ_INT(nframes_for(cat, "presence"), 1);
    CHECK_STR_EQ(jstr_in(frame_for(ben, "presence"), "online"), "(false)");
    frames_clear();
}

int main(void)
{
    if (open_ctx("test_friends") != 0) return 1;
    ann = make_user("ann", NULL, NULL);
    ben = make_user("ben", NULL, NULL);
    cat = make_user("cat", NULL, NULL);
    dan = make_user("dan", NULL, NULL);
    CA.user_id = ann;
    CB.user_id = ben;
    CC.user_id = cat;
    CD.user_id = dan;
    nt_bus_conn_up(ctx.bus, ann);
    nt_bus_conn_up(ctx.bus, ben);
    nt_bus_conn_up(ctx.bus, cat);
    nt_bus_conn_up(ctx.bus, dan);

    test_bad_input();
    test_request_accept();
    test_crossing_reject_remove();
    test_blocks();
    test_presence();

    close_ctx();
    return check_exit();
}
