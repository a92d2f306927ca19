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

#include "service_fixture.h"

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
    int rc = open_ctx("test_friends");
    if (rc != 0) return rc;
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
