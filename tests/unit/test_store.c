/*
 * Unit tests of the store (src/store/store.h) on its SQLite back end, through
 * the public interface only: a fresh database file in $NT_TEST_TMP (or /tmp),
 * removed at the end. Covers migrations and reopen, users, sessions, chats
 * and members, the append path (seq order, idempotency, permissions, group
 * commit under concurrency), history, edit and delete, export, receipt
 * markers and the chat list, and the member sets appends share with the
 * writer's cache (reference counts: run under ASan to catch misuse).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "unit/check.h"
#include "unit/pg_test_server.h"

static char db_path[512];
static char db_url[600];

static nt_store *open_store(void)
{
    char err[256];
    nt_store *s = nt_store_open(db_url, err, sizeof(err));
    if (!s) fprintf(stderr, "nt_store_open(%s): %s\n", db_url, err);
    return s;
}

static int64_t make_user(nt_store *s, const char *nick)
{
    char email[128];
    snprintf(email, sizeof(email), "%s@example.org", nick);
    nt_user_new in = {
        .email = email, .nickname = nick, .password_hash = "$argon2id$x", .created_at = 1000};
    nt_user u;
    const char *field = NULL;
    int rc = nt_store_user_create(s, &in, &u, &field);
    CHECK_EQ_INT(rc, 0);
    return rc == 0 ? u.id : 0;
}

static int append_text(nt_store *s, int64_t chat_id, int64_t sender, const char *text,
                       const char *client_id, nt_append *op)
{
    memset(op, 0, sizeof(*op));
    op->chat_id = chat_id;
    op->sender_id = sender;
    op->text = text;
    op->text_len = strlen(text);
    op->ts = 5000;
    if (client_id) snprintf(op->client_id, sizeof(op->client_id), "%s", client_id);
    return nt_store_append_wait(s, op);
}

/* ---- migrations, bot and lobby ------------------------------------------- */

static void test_fresh(nt_store *s)
{
    int64_t lobby = 0;
    CHECK_EQ_INT(nt_store_channel_by_title(s, "lobby", &lobby), 0);
    CHECK(lobby > 0);
    CHECK_EQ_INT(nt_store_channel_by_title(s, "nope", &lobby), NT_STORE_ENOTFOUND);

    nt_user bot;
    char hash[128];
    CHECK_EQ_INT(nt_store_user_by_nickname(s, "bot", &bot), 0);
    CHECK_EQ_INT(nt_store_user_for_login(s, "bot@natter.invalid", &bot, hash, sizeof(hash)), 0);
    CHECK_STR_EQ(hash, "!");
    CHECK_STR_EQ(bot.nickname, "bot");
    CHECK_EQ_INT(nt_store_ping(s), 0);
}

/* ---- users ---------------------------------------------------------------- */

static void test_users(nt_store *s)
{
    nt_user_new in = {.email = "Alice@Example.org",
                      .nickname = "Alice",
                      .password_hash = "$argon2id$v=19$abc",
                      .gender = "female",
                      .birth_date = "1990-02-03",
                      .created_at = 1234};
    nt_user alice, u;
    const char *field = NULL;
    CHECK_EQ_INT(nt_store_user_create(s, &in, &alice, &field), 0);
    CHECK(alice.id > 0);
    CHECK_STR_EQ(alice.nickname, "Alice");
    CHECK_STR_EQ(alice.email, "Alice@Example.org");
    CHECK_STR_EQ(alice.gender, "female");
    CHECK_STR_EQ(alice.birth_date, "1990-02-03");
    CHECK_STR_EQ(alice.bio, "");
    CHECK_EQ_INT(alice.created_at, 1234);
    CHECK_EQ_INT(alice.last_seen, 0);

    /* Conflicts are case-insensitive and name the field. */
    nt_user_new dup_email = {
        .email = "alice@EXAMPLE.org", .nickname = "other", .password_hash = "h", .created_at = 1};
    CHECK_EQ_INT(nt_store_user_create(s, &dup_email, &u, &field), NT_STORE_ECONFLICT);
    CHECK_STR_EQ(field, "email");
    nt_user_new dup_nick = {
        .email = "x@y.z", .nickname = "aLiCe", .password_hash = "h", .created_at = 1};
    CHECK_EQ_INT(nt_store_user_create(s, &dup_nick, &u, &field), NT_STORE_ECONFLICT);
    CHECK_STR_EQ(field, "nickname");

    CHECK_EQ_INT(nt_store_user_get(s, alice.id, &u), 0);
    CHECK_STR_EQ(u.nickname, "Alice");
    CHECK_EQ_INT(nt_store_user_get(s, 999999, &u), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_user_by_nickname(s, "ALICE", &u), 0);
    CHECK_EQ_INT(u.id, alice.id);
    CHECK_EQ_INT(nt_store_user_by_nickname(s, "nobody", &u), NT_STORE_ENOTFOUND);

    char hash[128];
    CHECK_EQ_INT(nt_store_user_for_login(s, "ALICE@example.ORG", &u, hash, sizeof(hash)), 0);
    CHECK_EQ_INT(u.id, alice.id);
    CHECK_STR_EQ(hash, "$argon2id$v=19$abc");
    CHECK_EQ_INT(nt_store_user_for_login(s, "alice", &u, hash, sizeof(hash)), 0);
    CHECK_EQ_INT(u.id, alice.id);
    CHECK_EQ_INT(nt_store_user_for_login(s, "al", &u, hash, sizeof(hash)), NT_STORE_ENOTFOUND);

    /* Partial update: NULL leaves alone, "" clears. */
    nt_user_patch p = {.bio = "hello", .avatar_url = "https://a/b.png"};
    CHECK_EQ_INT(nt_store_user_update(s, alice.id, &p, &u), 0);
    CHECK_STR_EQ(u.bio, "hello");
    CHECK_STR_EQ(u.avatar_url, "https://a/b.png");
    CHECK_STR_EQ(u.gender, "female");
    nt_user_patch p2 = {.gender = "", .birth_date = "", .nickname = "alice2"};
    CHECK_EQ_INT(nt_store_user_update(s, alice.id, &p2, &u), 0);
    CHECK_STR_EQ(u.gender, "");
    CHECK_STR_EQ(u.birth_date, "");
    CHECK_STR_EQ(u.nickname, "alice2");
    CHECK_STR_EQ(u.bio, "hello");
    nt_user_patch p3 = {.nickname = "Alice2"}; /* own nickname, other case: fine */
    CHECK_EQ_INT(nt_store_user_update(s, alice.id, &p3, &u), 0);
    CHECK_STR_EQ(u.nickname, "Alice2");
    nt_user_patch p4 = {.nickname = "BOT"};
    CHECK_EQ_INT(nt_store_user_update(s, alice.id, &p4, &u), NT_STORE_ECONFLICT);
    CHECK_EQ_INT(nt_store_user_update(s, 999999, &p, &u), NT_STORE_ENOTFOUND);

    CHECK_EQ_INT(nt_store_user_set_last_seen(s, alice.id, 777), 0);
    CHECK_EQ_INT(nt_store_user_get(s, alice.id, &u), 0);
    CHECK_EQ_INT(u.last_seen, 777);
    CHECK_EQ_INT(nt_store_user_set_last_seen(s, 999999, 1), NT_STORE_ENOTFOUND);

    /* Search: prefix, case-insensitive, by id, paginated; '_' is literal. */
    int64_t ids[5];
    const char *nicks[5] = {"srch_a", "SRCH_b", "srch_c", "srchXd", "other_e"};
    for (int i = 0; i < 5; i++)
        ids[i] = make_user(s, nicks[i]);
    nt_user found[3];
    int n = 0;
    CHECK_EQ_INT(nt_store_user_search(s, "Srch_", 0, 2, found, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(found[0].id, ids[0]);
    CHECK_EQ_INT(found[1].id, ids[1]);
    CHECK_EQ_INT(nt_store_user_search(s, "Srch_", found[1].id, 2, found, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(found[0].id, ids[2]);
    CHECK_EQ_INT(nt_store_user_search(s, "srch", 0, 3, found, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(nt_store_user_search(s, "zzz", 0, 3, found, &n), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(nt_store_user_search(s, "%", 0, 3, found, &n), 0);
    CHECK_EQ_INT(n, 0);
}

/* ---- sessions ------------------------------------------------------------- */

static void fill_hash(uint8_t h[32], int v)
{
    for (int i = 0; i < 32; i++)
        h[i] = (uint8_t)(v * 31 + i);
}

static void test_sessions(nt_store *s)
{
    int64_t uid = make_user(s, "sessuser");
    uint8_t h1[32], h2[32], h3[32], h4[32], h5[32];
    fill_hash(h1, 1);
    fill_hash(h2, 2);
    fill_hash(h3, 3);
    fill_hash(h4, 4);
    fill_hash(h5, 5);
    nt_session sess, got;
    CHECK_EQ_INT(nt_store_session_create(s, uid, h1, 10000, 100, &sess), 0);
    CHECK(sess.id > 0);
    CHECK_EQ_INT(sess.user_id, uid);
    CHECK_EQ_INT(nt_store_session_active(s, sess.id), 0);
    CHECK_EQ_INT(nt_store_session_create(s, 999999, h5, 10000, 100, &got), NT_STORE_ENOTFOUND);

    /* Rotate h1 -> h2, then h2 -> h3. */
    CHECK_EQ_INT(nt_store_session_rotate(s, h1, h2, 20000, 200, &got), 0);
    CHECK_EQ_INT(got.id, sess.id);
    CHECK_EQ_INT(got.user_id, uid);
    CHECK_EQ_INT(nt_store_session_rotate(s, h2, h3, 20000, 300, &got), 0);
    /* Unknown and expired tokens. */
    CHECK_EQ_INT(nt_store_session_rotate(s, h5, h4, 20000, 300, &got), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_rotate(s, h3, h4, 20000, 30000, &got), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_active(s, sess.id), 0);
    /* Reuse of h1: the session is revoked, durably, and h3 stops working. */
    CHECK_EQ_INT(nt_store_session_rotate(s, h1, h4, 20000, 400, &got), NT_STORE_EREUSED);
    CHECK_EQ_INT(got.id, sess.id);
    CHECK_EQ_INT(nt_store_session_active(s, sess.id), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_rotate(s, h3, h4, 20000, 400, &got), NT_STORE_ENOTFOUND);

    /* Logout. */
    nt_session s2;
    CHECK_EQ_INT(nt_store_session_create(s, uid, h5, 10000, 100, &s2), 0);
    CHECK(s2.id != sess.id);
    CHECK_EQ_INT(nt_store_session_revoke(s, h5, &got), 0);
    CHECK_EQ_INT(got.id, s2.id);
    CHECK_EQ_INT(nt_store_session_active(s, s2.id), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_rotate(s, h5, h4, 20000, 200, &got), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_revoke(s, h4, &got), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_active(s, 999999), NT_STORE_ENOTFOUND);

    /* Used tokens are forgotten once expired: replaying one is then just an
     * unknown token and does not end the session. */
    uint8_t k1[32], k2[32], k3[32], k4[32];
    fill_hash(k1, 11);
    fill_hash(k2, 12);
    fill_hash(k3, 13);
    fill_hash(k4, 14);
    nt_session s3;
    CHECK_EQ_INT(nt_store_session_create(s, uid, k1, 100, 10, &s3), 0);
    CHECK_EQ_INT(nt_store_session_rotate(s, k1, k2, 10000, 50, &got), 0);
    CHECK_EQ_INT(nt_store_session_rotate(s, k2, k3, 20000, 200, &got), 0);
    CHECK_EQ_INT(nt_store_session_rotate(s, k1, k4, 20000, 300, &got), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_session_active(s, s3.id), 0);
}

/* Writes racing for the same nickname: one wins, the others get ECONFLICT,
 * and a failing write in a batch does not undo its neighbours. */
#define RACE_THREADS 8
#define RACE_NAMES 50

static void *race_thread(void *p)
{
    nt_store *s = p;
    for (int i = 0; i < RACE_NAMES; i++) {
        char nick[32], email[64];
        snprintf(nick, sizeof(nick), "race%d", i);
        snprintf(email, sizeof(email), "race%d-%p@x.org", i, (void *)&nick);
        nt_user_new in = {.email = email, .nickname = nick, .password_hash = "h", .created_at = 1};
        nt_user u;
        const char *field = NULL;
        int rc = nt_store_user_create(s, &in, &u, &field);
        if (rc != 0 && (rc != NT_STORE_ECONFLICT || !field || strcmp(field, "nickname") != 0))
            return p;
    }
    return NULL;
}

static void test_races(nt_store *s)
{
    pthread_t t[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&t[i], NULL, race_thread, s);
    for (int i = 0; i < RACE_THREADS; i++) {
        void *res = (void *)1;
        pthread_join(t[i], &res);
        CHECK(res == NULL);
    }
    nt_user found[RACE_NAMES + 10];
    int n = 0;
    CHECK_EQ_INT(nt_store_user_search(s, "race", 0, RACE_NAMES + 10, found, &n), 0);
    CHECK_EQ_INT(n, RACE_NAMES);
}

/* ---- chats and members ---------------------------------------------------- */

static int find_member(const nt_chat *c, int64_t uid)
{
    for (int i = 0; i < c->nmembers; i++)
        if (c->members[i].user_id == uid) return i;
    return -1;
}

/* What an nt_store_chat_random_async callback saw (writer thread). */
typedef struct random_seen {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int calls, rc;
    nt_chat chat;
} random_seen;

static void on_random(void *arg, int rc, nt_chat *chat)
{
    random_seen *r = arg;
    pthread_mutex_lock(&r->lock);
    r->calls++;
    r->rc = rc;
    if (chat) r->chat = *chat; /* ours now */
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* A random chat, waited for and not: both give the chat as a sees it, with
 * the aliases; the async one calls back exactly once, also on failure. */
static void test_chat_random(nt_store *s)
{
    int64_t a = make_user(s, "rnd_a"), b = make_user(s, "rnd_b");
    nt_chat c;
    CHECK_EQ_INT(nt_store_chat_random(s, a, b, "Brave Otter", "Calm Heron", 100, &c), 0);
    CHECK_STR_EQ(c.type, "random");
    CHECK_EQ_INT(c.nmembers, 2);
    nt_chat_free(&c);

    random_seen r = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    CHECK_EQ_INT(
        nt_store_chat_random_async(s, a, b, "Quiet Lynx", "Bold Finch", 200, on_random, &r), 0);
    pthread_mutex_lock(&r.lock);
    while (r.calls == 0)
        pthread_cond_wait(&r.cond, &r.lock);
    pthread_mutex_unlock(&r.lock);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.rc, 0);
    CHECK_STR_EQ(r.chat.type, "random");
    CHECK_EQ_INT(r.chat.nmembers, 2);
    CHECK(r.chat.id > 0);
    nt_chat got;
    CHECK_EQ_INT(nt_store_chat_get(s, r.chat.id, a, &got), 0); /* stored */
    nt_chat_free(&got);
    nt_chat_free(&r.chat);

    /* No such user: the callback gets the error and no chat. */
    memset(&r.chat, 0, sizeof r.chat);
    r.calls = 0;
    CHECK_EQ_INT(
        nt_store_chat_random_async(s, a, 999999, "Quiet Lynx", "Bold Finch", 300, on_random, &r),
        0);
    pthread_mutex_lock(&r.lock);
    while (r.calls == 0)
        pthread_cond_wait(&r.cond, &r.lock);
    pthread_mutex_unlock(&r.lock);
    CHECK_EQ_INT(r.rc, NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(r.chat.id, 0);
    /* Refused before queueing: no callback. */
    CHECK_EQ_INT(nt_store_chat_random_async(s, a, a, "X Y", "Z W", 300, on_random, &r),
                 NT_STORE_EINVAL);
    CHECK_EQ_INT(nt_store_chat_random_async(s, a, b, "", "Z W", 300, on_random, &r),
                 NT_STORE_EINVAL);
    CHECK_EQ_INT(r.calls, 1);
}

static void test_chats(nt_store *s)
{
    int64_t a = make_user(s, "chat_a"), b = make_user(s, "chat_b"), c = make_user(s, "chat_c");
    nt_chat d1, d2;
    bool created = false;
    CHECK_EQ_INT(nt_store_chat_direct(s, a, b, 100, &d1, &created), 0);
    CHECK(created);
    CHECK_STR_EQ(d1.type, "direct");
    CHECK_EQ_INT(d1.nmembers, 2);
    CHECK(find_member(&d1, a) >= 0 && find_member(&d1, b) >= 0);
    CHECK_EQ_INT(nt_store_chat_direct(s, b, a, 200, &d2, &created), 0);
    CHECK(!created);
    CHECK_EQ_INT(d2.id, d1.id);
    nt_chat_free(&d2);
    CHECK_EQ_INT(nt_store_chat_direct(s, a, 999999, 200, &d2, &created), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_chat_direct(s, a, a, 200, &d2, &created), NT_STORE_EINVAL);

    int64_t *partners = NULL;
    int np = 0;
    CHECK_EQ_INT(nt_store_user_partners(s, a, &partners, &np), 0);
    CHECK_EQ_INT(np, 1);
    if (np == 1) CHECK_EQ_INT(partners[0], b);
    free(partners);

    int64_t members[3] = {b, c, a}; /* the owner again is ignored */
    nt_chat g;
    CHECK_EQ_INT(nt_store_chat_create(s, "group", "Friends", a, members, 3, 300, &g), 0);
    CHECK_STR_EQ(g.type, "group");
    CHECK_STR_EQ(g.title, "Friends");
    CHECK_EQ_INT(g.nmembers, 3);
    int ia = find_member(&g, a), ib = find_member(&g, b);
    CHECK(ia >= 0 && ib >= 0);
    if (ia >= 0 && ib >= 0) {
        CHECK_EQ_INT(g.members[ia].role, NT_ROLE_OWNER);
        CHECK_EQ_INT(g.members[ib].role, NT_ROLE_MEMBER);
    }
    int64_t bad[1] = {999999};
    nt_chat g2;
    CHECK_EQ_INT(nt_store_chat_create(s, "group", "x", a, bad, 1, 300, &g2), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_chat_create(s, "weird", "x", a, NULL, 0, 300, &g2), NT_STORE_EINVAL);

    int role = -1;
    CHECK_EQ_INT(nt_store_member_role(s, g.id, a, &role), 0);
    CHECK_EQ_INT(role, NT_ROLE_OWNER);
    CHECK_EQ_INT(nt_store_member_remove(s, g.id, c), 0);
    CHECK_EQ_INT(nt_store_member_role(s, g.id, c, &role), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_member_remove(s, g.id, c), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_member_add(s, g.id, c, NT_ROLE_MEMBER), 0);
    CHECK_EQ_INT(nt_store_member_add(s, g.id, c, NT_ROLE_MEMBER), NT_STORE_ECONFLICT);
    CHECK_EQ_INT(nt_store_member_add(s, 999999, c, NT_ROLE_MEMBER), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_member_add(s, g.id, 999999, NT_ROLE_MEMBER), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_member_role(s, g.id, c, &role), 0);
    CHECK_EQ_INT(role, NT_ROLE_MEMBER);

    int64_t *ids = NULL;
    int n = 0;
    CHECK_EQ_INT(nt_store_chat_member_ids(s, g.id, &ids, &n), 0);
    CHECK_EQ_INT(n, 3);
    free(ids);

    /* Users join the lobby like any channel. */
    int64_t lobby;
    CHECK_EQ_INT(nt_store_channel_by_title(s, "lobby", &lobby), 0);
    CHECK_EQ_INT(nt_store_member_add(s, lobby, a, NT_ROLE_MEMBER), 0);

    nt_chat got;
    CHECK_EQ_INT(nt_store_chat_get(s, g.id, a, &got), 0);
    CHECK_EQ_INT(got.nmembers, 3);
    CHECK_EQ_INT(got.last_seq, 0);
    CHECK(!got.has_last_message);
    nt_chat_free(&got);
    CHECK_EQ_INT(nt_store_chat_get(s, 999999, a, &got), NT_STORE_ENOTFOUND);

    nt_chat_free(&d1);
    nt_chat_free(&g);
}

/* ---- appends, history, edit, export, markers ------------------------------ */

static int export_cb(void *arg, const nt_message *m)
{
    int64_t *expect = arg;
    if (m->seq != *expect + 1) return -100;
    *expect = m->seq;
    return 0;
}

static int export_stop_cb(void *arg, const nt_message *m)
{
    int *count = arg;
    return ++*count == 3 ? 42 : 0;
}

static void test_messages(nt_store *s)
{
    int64_t a = make_user(s, "msg_a"), b = make_user(s, "msg_b"), x = make_user(s, "msg_x");
    nt_chat chat;
    bool created;
    CHECK_EQ_INT(nt_store_chat_direct(s, a, b, 100, &chat, &created), 0);
    nt_chat_free(&chat);

    nt_append op;
    int64_t first_id = 0;
    for (int i = 1; i <= 3; i++) {
        char cid[16];
        snprintf(cid, sizeof(cid), "c%d", i);
        CHECK_EQ_INT(append_text(s, chat.id, a, "hi", cid, &op), 0);
        CHECK_EQ_INT(op.msg.seq, i);
        CHECK(!op.duplicate);
        CHECK_EQ_INT(op.nmembers, 2);
        CHECK_STR_EQ(op.msg.text, "hi");
        CHECK_STR_EQ(op.msg.client_id, cid);
        if (i == 1) first_id = op.msg.id;
        nt_append_release(&op);
    }
    /* Same client_id again: the first message, nothing new. */
    CHECK_EQ_INT(append_text(s, chat.id, a, "other text", "c1", &op), 0);
    CHECK(op.duplicate);
    CHECK_EQ_INT(op.msg.id, first_id);
    CHECK_EQ_INT(op.msg.seq, 1);
    CHECK_STR_EQ(op.msg.text, "hi");
    CHECK_EQ_INT(op.nmembers, 2);
    nt_append_release(&op);
    /* The same client_id from someone else is a different message. */
    CHECK_EQ_INT(append_text(s, chat.id, b, "from b", "c1", &op), 0);
    CHECK(!op.duplicate);
    CHECK_EQ_INT(op.msg.seq, 4);
    nt_append_release(&op);
    /* No client_id: never deduplicated. */
    CHECK_EQ_INT(append_text(s, chat.id, b, "plain", NULL, &op), 0);
    CHECK_EQ_INT(op.msg.seq, 5);
    CHECK_STR_EQ(op.msg.client_id, "");
    nt_append_release(&op);

    CHECK_EQ_INT(append_text(s, chat.id, x, "intruder", NULL, &op), NT_STORE_EFORBIDDEN);
    CHECK(op.member_ids == NULL && op.msg.text == NULL);
    nt_append_release(&op);
    CHECK_EQ_INT(append_text(s, 999999, a, "nowhere", NULL, &op), NT_STORE_ENOTFOUND);
    nt_append_release(&op);
    memset(&op, 0, sizeof(op));
    op.chat_id = chat.id;
    op.sender_id = a;
    CHECK_EQ_INT(nt_store_append_wait(s, &op), NT_STORE_EINVAL); /* no text */

    /* extra_json is kept as given. */
    memset(&op, 0, sizeof(op));
    op.chat_id = chat.id;
    op.sender_id = b;
    op.text = "olleh";
    op.text_len = 5;
    op.extra_json = "\"pow\":{\"nonce\":1}";
    op.ts = 6000;
    CHECK_EQ_INT(nt_store_append_wait(s, &op), 0);
    CHECK_EQ_INT(op.msg.seq, 6);
    CHECK_STR_EQ(op.msg.extra_json, "\"pow\":{\"nonce\":1}");
    nt_append_release(&op);

    /* Fill up to seq 20 for history paging. */
    for (int i = 7; i <= 20; i++) {
        CHECK_EQ_INT(append_text(s, chat.id, i % 2 ? a : b, "m", NULL, &op), 0);
        CHECK_EQ_INT(op.msg.seq, i);
        nt_append_release(&op);
    }

    nt_message *msgs = NULL;
    int n = 0;
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 0, -1, 5, &msgs, &n), 0);
    CHECK_EQ_INT(n, 5);
    if (n == 5) {
        CHECK_EQ_INT(msgs[0].seq, 16);
        CHECK_EQ_INT(msgs[4].seq, 20);
    }
    nt_messages_free(msgs, n);
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 10, -1, 3, &msgs, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_INT(msgs[0].seq, 7);
        CHECK_EQ_INT(msgs[2].seq, 9);
    }
    nt_messages_free(msgs, n);
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 0, 4, 3, &msgs, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_INT(msgs[0].seq, 5);
        CHECK_EQ_INT(msgs[2].seq, 7);
        CHECK_STR_EQ(msgs[1].extra_json, "\"pow\":{\"nonce\":1}");
    }
    nt_messages_free(msgs, n);
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 8, 4, 100, &msgs, &n), 0);
    CHECK_EQ_INT(n, 3); /* 5, 6, 7 */
    nt_messages_free(msgs, n);
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 0, 20, 100, &msgs, &n), 0);
    CHECK_EQ_INT(n, 0);
    nt_messages_free(msgs, n);
    /* after_seq 0 is a cursor too: everything from the first message. */
    CHECK_EQ_INT(nt_store_messages(s, chat.id, 0, 0, 3, &msgs, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_INT(msgs[0].seq, 1);
        CHECK_EQ_INT(msgs[2].seq, 3);
    }
    nt_messages_free(msgs, n);

    /* Edit and delete: sender only, not twice deleted. */
    nt_message m;
    CHECK_EQ_INT(nt_store_message_edit(s, chat.id, 2, a, "edited", 9000, &m), 0);
    CHECK_STR_EQ(m.text, "edited");
    CHECK_EQ_INT(m.edited_at, 9000);
    CHECK_EQ_INT(m.seq, 2);
    nt_message_free(&m);
    CHECK_EQ_INT(nt_store_message_edit(s, chat.id, 2, b, "nope", 9000, &m), NT_STORE_EFORBIDDEN);
    CHECK(m.text == NULL);
    CHECK_EQ_INT(nt_store_message_edit(s, chat.id, 99, a, "nope", 9000, &m), NT_STORE_ENOTFOUND);
    CHECK_EQ_INT(nt_store_message_delete(s, chat.id, 2, b, 9100, &m), NT_STORE_EFORBIDDEN);
    CHECK_EQ_INT(nt_store_message_delete(s, chat.id, 2, a, 9100, &m), 0);
    CHECK(m.deleted);
    CHECK_STR_EQ(m.text, "");
    nt_message_free(&m);
    CHECK_EQ_INT(nt_store_message_edit(s, chat.id, 2, a, "again", 9200, &m), NT_STORE_EFORBIDDEN);
    CHECK_EQ_INT(nt_store_message_delete(s, chat.id, 2, a, 9200, &m), NT_STORE_EFORBIDDEN);

    /* Export in seq order, and early stop. */
    int64_t last = 0;
    CHECK_EQ_INT(nt_store_export(s, chat.id, export_cb, &last), 0);
    CHECK_EQ_INT(last, 20);
    int count = 0;
    CHECK_EQ_INT(nt_store_export(s, chat.id, export_stop_cb, &count), 42);
    CHECK_EQ_INT(count, 3);
    CHECK_EQ_INT(nt_store_export(s, 999999, export_cb, &last), NT_STORE_ENOTFOUND);

    /* Markers: forward only, clamped, read implies delivered. */
    int64_t dseq, rseq;
    bool moved;
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_DELIVERED, 5, &dseq, &rseq, &moved), 0);
    CHECK(moved);
    CHECK_EQ_INT(dseq, 5);
    CHECK_EQ_INT(rseq, 0);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_DELIVERED, 3, &dseq, &rseq, &moved), 0);
    CHECK(!moved);
    CHECK_EQ_INT(dseq, 5);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_READ, 8, &dseq, &rseq, &moved), 0);
    CHECK(moved);
    CHECK_EQ_INT(dseq, 8);
    CHECK_EQ_INT(rseq, 8);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_READ, 1000, &dseq, &rseq, &moved), 0);
    CHECK_EQ_INT(rseq, 20);
    CHECK_EQ_INT(dseq, 20);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_READ, 4, &dseq, &rseq, &moved), 0);
    CHECK(!moved);
    CHECK_EQ_INT(rseq, 20);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, x, NT_MARK_READ, 4, &dseq, &rseq, &moved),
                 NT_STORE_ENOTFOUND);

    /* Unread for a: messages after a's read marker (0) not sent by a.
     * b sent seqs 4, 5, 6 and the even ones of 8..20 (7 of them). */
    nt_chat got;
    CHECK_EQ_INT(nt_store_chat_get(s, chat.id, a, &got), 0);
    CHECK_EQ_INT(got.last_seq, 20);
    CHECK_EQ_INT(got.unread, 10);
    CHECK(got.has_last_message);
    CHECK_EQ_INT(got.last_message.seq, 20);
    CHECK_EQ_INT(got.last_activity, 6000); /* the newest ts */
    nt_chat_free(&got);
    CHECK_EQ_INT(nt_store_chat_get(s, chat.id, b, &got), 0);
    CHECK_EQ_INT(got.unread, 0);
    nt_chat_free(&got);
    CHECK_EQ_INT(nt_store_mark(s, chat.id, a, NT_MARK_READ, 10, &dseq, &rseq, &moved), 0);
    CHECK_EQ_INT(nt_store_chat_get(s, chat.id, a, &got), 0);
    CHECK_EQ_INT(got.unread, 5); /* 12, 14, 16, 18, 20 */
    nt_chat_free(&got);

    /* A closed chat takes no more messages. */
    nt_chat r;
    int64_t pair[2] = {a, b};
    CHECK_EQ_INT(nt_store_chat_create(s, "random", NULL, 0, pair, 2, 100, &r), 0);
    CHECK_EQ_INT(append_text(s, r.id, a, "hey", NULL, &op), 0);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_chat_close(s, r.id), 0);
    CHECK_EQ_INT(append_text(s, r.id, a, "hey", NULL, &op), NT_STORE_EFORBIDDEN);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_chat_close(s, 999999), NT_STORE_ENOTFOUND);
    nt_chat_free(&r);

    /* Membership changes take effect on the very next append. */
    nt_chat g;
    int64_t one[1] = {b};
    CHECK_EQ_INT(nt_store_chat_create(s, "group", "cache", a, one, 1, 100, &g), 0);
    CHECK_EQ_INT(append_text(s, g.id, b, "in", NULL, &op), 0);
    CHECK_EQ_INT(op.nmembers, 2);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_member_remove(s, g.id, b), 0);
    CHECK_EQ_INT(append_text(s, g.id, b, "out", NULL, &op), NT_STORE_EFORBIDDEN);
    nt_append_release(&op);
    CHECK_EQ_INT(append_text(s, g.id, a, "alone", NULL, &op), 0);
    CHECK_EQ_INT(op.nmembers, 1);
    CHECK_EQ_INT(op.msg.seq, 2);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_member_add(s, g.id, x, NT_ROLE_MEMBER), 0);
    CHECK_EQ_INT(append_text(s, g.id, x, "new here", NULL, &op), 0);
    CHECK_EQ_INT(op.nmembers, 2);
    CHECK_EQ_INT(op.msg.seq, 3);
    nt_append_release(&op);
    nt_chat_free(&g);
}

/* ---- member sets -------------------------------------------------------- */

static void test_member_set(void)
{
    int64_t ids[] = {30, 10, 20, 10};
    nt_member_set *set = nt_member_set_new(ids, 4);
    CHECK(set != NULL);
    if (!set) return;
    CHECK_EQ_INT(set->n, 3); /* sorted, the repeat dropped */
    CHECK_EQ_INT(set->ids[0], 10);
    CHECK_EQ_INT(set->ids[1], 20);
    CHECK_EQ_INT(set->ids[2], 30);
    CHECK(nt_member_set_contains(set, 10) && nt_member_set_contains(set, 30));
    CHECK(!nt_member_set_contains(set, 15) && !nt_member_set_contains(set, 31));
    CHECK(!nt_member_set_contains(NULL, 10));
    ids[0] = 99; /* a copy: the set does not change with its source */
    CHECK(!nt_member_set_contains(set, 99));

    CHECK(nt_member_set_ref(set) == set);
    nt_member_set_unref(set); /* one reference left */
    CHECK_EQ_INT(set->ids[2], 30);
    nt_member_set_unref(set); /* freed (ASan would flag a later use) */
    nt_member_set_unref(NULL);
    CHECK(nt_member_set_ref(NULL) == NULL);

    nt_member_set *empty = nt_member_set_new(NULL, 0);
    CHECK(empty != NULL && empty->n == 0 && !nt_member_set_contains(empty, 1));
    nt_member_set_unref(empty);
    CHECK(nt_member_set_new(NULL, -1) == NULL);
    CHECK(nt_member_set_new(NULL, 2) == NULL);
}

/* Appends share the cache's member set by reference; a result keeps its set
 * alive after the cache dropped it because membership changed. */
/* Holders on other threads read the set and drop their reference while
 * the creator drops its own: whoever drops the last one frees it. Run
 * under ThreadSanitizer, a read ordered after the free is a report. */
static void *member_set_holder(void *arg)
{
    nt_member_set *set = arg;
    int64_t sum = 0;
    for (int i = 0; i < set->n; i++)
        sum += set->ids[i];
    nt_member_set_unref(set);
    return (void *)(intptr_t)(sum == 4950);
}

static void test_member_set_threads(void)
{
    int64_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = i;
    for (int round = 0; round < 50; round++) {
        nt_member_set *set = nt_member_set_new(ids, 100);
        CHECK(set != NULL);
        if (!set) return;
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, member_set_holder, nt_member_set_ref(set));
        nt_member_set_unref(set);
        for (int i = 0; i < 4; i++) {
            void *ok = NULL;
            pthread_join(t[i], &ok);
            CHECK(ok == (void *)1);
        }
    }
}

static void test_member_set_shared(nt_store *s)
{
    int64_t a = make_user(s, "set_a"), b = make_user(s, "set_b"), x = make_user(s, "set_x");
    int64_t one[1] = {b};
    nt_chat g;
    CHECK_EQ_INT(nt_store_chat_create(s, "group", "sets", a, one, 1, 100, &g), 0);
    nt_append first, second, dup, after;
    CHECK_EQ_INT(append_text(s, g.id, a, "one", "set1", &first), 0);
    CHECK_EQ_INT(append_text(s, g.id, b, "two", NULL, &second), 0);
    CHECK(first.members != NULL && first.members == second.members); /* shared, not copied */
    CHECK(first.member_ids == first.members->ids);
    CHECK_EQ_INT(append_text(s, g.id, a, "again", "set1", &dup), 0);
    CHECK(dup.duplicate && dup.members == first.members);
    nt_append_release(&dup);
    CHECK(dup.members == NULL && dup.member_ids == NULL && dup.nmembers == 0);

    /* Membership changes: the cache drops its set and loads a new one. */
    CHECK_EQ_INT(nt_store_member_remove(s, g.id, b), 0);
    CHECK_EQ_INT(nt_store_member_add(s, g.id, x, NT_ROLE_MEMBER), 0);
    CHECK_EQ_INT(append_text(s, g.id, a, "three", NULL, &after), 0);
    CHECK(after.members != first.members);
    CHECK_EQ_INT(after.nmembers, 2);
    CHECK(nt_member_set_contains(after.members, x) && !nt_member_set_contains(after.members, b));
    /* The old results still read the members they were sent to. */
    CHECK_EQ_INT(first.nmembers, 2);
    CHECK_EQ_INT(first.member_ids[0], a < b ? a : b);
    CHECK_EQ_INT(first.member_ids[1], a < b ? b : a);
    nt_append_release(&first);
    CHECK_EQ_INT(second.member_ids[0] + second.member_ids[1], a + b);
    nt_append_release(&second); /* the last reference: the old set goes */
    CHECK_EQ_INT(after.member_ids[0] + after.member_ids[1], a + x);
    nt_append_release(&after);
    nt_chat_free(&g);
}

/* A write queued behind async appends sees their seqs (the writer keeps
 * chat counters in memory during a batch and must write them out first). */
static int async_count;
static void count_done(nt_append *op)
{
    __atomic_add_fetch(&async_count, op->status == 0 ? 1 : 1000, __ATOMIC_SEQ_CST);
    nt_append_release(op);
}

static void test_counters_flushed(nt_store *s)
{
    int64_t a = make_user(s, "flush_a"), b = make_user(s, "flush_b");
    nt_chat chat;
    bool created;
    CHECK_EQ_INT(nt_store_chat_direct(s, a, b, 100, &chat, &created), 0);
    nt_chat_free(&chat);
    enum { N = 200 };
    static nt_append ops[N];
    for (int i = 0; i < N; i++) {
        memset(&ops[i], 0, sizeof(ops[i]));
        ops[i].chat_id = chat.id;
        ops[i].sender_id = a;
        ops[i].text = "x";
        ops[i].text_len = 1;
        ops[i].ts = 7000 + i;
        ops[i].done = count_done;
        nt_store_append(s, &ops[i]);
    }
    int64_t dseq, rseq;
    bool moved;
    CHECK_EQ_INT(nt_store_mark(s, chat.id, b, NT_MARK_READ, 1000000, &dseq, &rseq, &moved), 0);
    CHECK_EQ_INT(rseq, N);
    CHECK_EQ_INT(__atomic_load_n(&async_count, __ATOMIC_SEQ_CST), N);
    CHECK_EQ_INT(nt_store_chat_get(s, chat.id, b, &chat), 0);
    CHECK_EQ_INT(chat.last_seq, N);
    CHECK_EQ_INT(chat.last_activity, 7000 + N - 1);
    CHECK_EQ_INT(chat.unread, 0);
    nt_chat_free(&chat);
}

static void test_chat_list(nt_store *s)
{
    int64_t u = make_user(s, "list_u"), v = make_user(s, "list_v"), w = make_user(s, "list_w");
    nt_chat c1, c2, c3;
    bool created;
    CHECK_EQ_INT(nt_store_chat_direct(s, u, v, 100, &c1, &created), 0);
    CHECK_EQ_INT(nt_store_chat_direct(s, u, w, 200, &c2, &created), 0);
    int64_t mem[1] = {v};
    CHECK_EQ_INT(nt_store_chat_create(s, "group", "g", u, mem, 1, 300, &c3), 0);

    nt_append op;
    memset(&op, 0, sizeof(op));
    op.chat_id = c1.id;
    op.sender_id = v;
    op.text = "newest";
    op.text_len = 6;
    op.ts = 1000;
    CHECK_EQ_INT(nt_store_append_wait(s, &op), 0);
    nt_append_release(&op);
    memset(&op, 0, sizeof(op));
    op.chat_id = c1.id;
    op.sender_id = u;
    op.text = "mine";
    op.text_len = 4;
    op.ts = 1001;
    CHECK_EQ_INT(nt_store_append_wait(s, &op), 0);
    nt_append_release(&op);

    nt_chat *list = NULL;
    int n = 0;
    CHECK_EQ_INT(nt_store_chat_list(s, u, 10, &list, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_INT(list[0].id, c1.id); /* last activity 1001 */
        CHECK_EQ_INT(list[1].id, c3.id); /* created 300 */
        CHECK_EQ_INT(list[2].id, c2.id); /* created 200 */
        CHECK_EQ_INT(list[0].unread, 1);
        CHECK_EQ_INT(list[0].nmembers, 2);
        CHECK(list[0].has_last_message);
        CHECK_STR_EQ(list[0].last_message.text, "mine");
        CHECK_EQ_INT(list[1].unread, 0);
        CHECK(!list[1].has_last_message);
    }
    nt_chats_free(list, n);
    CHECK_EQ_INT(nt_store_chat_list(s, u, 2, &list, &n), 0);
    CHECK_EQ_INT(n, 2);
    nt_chats_free(list, n);
    CHECK_EQ_INT(nt_store_chat_list(s, 999999, 2, &list, &n), 0);
    CHECK_EQ_INT(n, 0);
    CHECK(list == NULL);
    nt_chat_free(&c1);
    nt_chat_free(&c2);
    nt_chat_free(&c3);
}

/* ---- concurrency and group commit ----------------------------------------- */

#define CONC_THREADS 8
#define CONC_PER_THREAD 500
#define CONC_CHATS 4

struct conc_arg {
    nt_store *s;
    int64_t sender;
    int64_t chats[CONC_CHATS];
    int index;
    int failures;
};

static void *conc_thread(void *p)
{
    struct conc_arg *a = p;
    for (int i = 0; i < CONC_PER_THREAD; i++) {
        nt_append op;
        char text[32];
        snprintf(text, sizeof(text), "t%d m%d", a->index, i);
        memset(&op, 0, sizeof(op));
        op.chat_id = a->chats[(i + a->index) % CONC_CHATS];
        op.sender_id = a->sender;
        op.text = text;
        op.text_len = strlen(text);
        op.ts = 10000 + i;
        snprintf(op.client_id, sizeof(op.client_id), "t%d-%d", a->index, i);
        if (nt_store_append_wait(a->s, &op) != 0 || op.duplicate) a->failures++;
        nt_append_release(&op);
        /* Readers run alongside the writer on their own connections. */
        if (i % 100 == 0) {
            nt_message *m = NULL;
            int n = 0;
            if (nt_store_messages(a->s, a->chats[0], 0, -1, 10, &m, &n) != 0) a->failures++;
            nt_messages_free(m, n);
        }
    }
    return NULL;
}

/* Async appends: done() runs on the writer thread. */
struct async_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int remaining;
    int failures;
    int64_t last_seq;
    bool out_of_order;
};

static void async_done(nt_append *op)
{
    struct async_state *st = op->user;
    int status = op->status;
    int64_t seq = op->msg.seq;
    /* Release before telling the waiter: once remaining hits 0 it frees the
     * ops (and the lock). */
    nt_append_release(op);
    pthread_mutex_lock(&st->lock);
    if (status != 0) st->failures++;
    if (seq <= st->last_seq) st->out_of_order = true;
    st->last_seq = seq;
    st->remaining--;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

static void test_concurrency(nt_store *s)
{
    int64_t owner = make_user(s, "conc_owner");
    int64_t senders[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++) {
        char nick[32];
        snprintf(nick, sizeof(nick), "conc_%d", i);
        senders[i] = make_user(s, nick);
    }
    int64_t chats[CONC_CHATS];
    for (int c = 0; c < CONC_CHATS; c++) {
        nt_chat chat;
        CHECK_EQ_INT(
            nt_store_chat_create(s, "group", "conc", owner, senders, CONC_THREADS, 1, &chat), 0);
        chats[c] = chat.id;
        nt_chat_free(&chat);
    }

    nt_store_stats_t before, after;
    nt_store_stats(s, &before);
    struct conc_arg args[CONC_THREADS];
    pthread_t threads[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++) {
        args[i] = (struct conc_arg){.s = s, .sender = senders[i], .index = i};
        memcpy(args[i].chats, chats, sizeof(chats));
        pthread_create(&threads[i], NULL, conc_thread, &args[i]);
    }
    for (int i = 0; i < CONC_THREADS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(args[i].failures, 0);
    }
    nt_store_stats(s, &after);
    uint64_t ops = after.ops - before.ops, batches = after.batches - before.batches;
    CHECK_EQ_INT(ops, CONC_THREADS * CONC_PER_THREAD);
    CHECK(batches < ops);
    printf("concurrent appends: %llu ops in %llu batches\n", (unsigned long long)ops,
           (unsigned long long)batches);

    /* Gapless, unique seqs per chat. */
    int total = 0;
    for (int c = 0; c < CONC_CHATS; c++) {
        int64_t expect = 0;
        CHECK_EQ_INT(nt_store_export(s, chats[c], export_cb, &expect), 0);
        total += (int)expect;
        nt_chat chat;
        CHECK_EQ_INT(nt_store_chat_get(s, chats[c], owner, &chat), 0);
        CHECK_EQ_INT(chat.last_seq, expect);
        nt_chat_free(&chat);
    }
    CHECK_EQ_INT(total, CONC_THREADS * CONC_PER_THREAD);

    /* A burst of async appends from one thread lands in few batches, in
     * order, and each op is told exactly once. */
    enum { NASYNC = 2000 };
    nt_append *ops_arr = calloc(NASYNC, sizeof(*ops_arr));
    struct async_state st = {.remaining = NASYNC};
    pthread_mutex_init(&st.lock, NULL);
    pthread_cond_init(&st.cond, NULL);
    nt_store_stats(s, &before);
    for (int i = 0; i < NASYNC; i++) {
        ops_arr[i].chat_id = chats[0];
        ops_arr[i].sender_id = senders[0];
        ops_arr[i].text = "async";
        ops_arr[i].text_len = 5;
        ops_arr[i].ts = 20000;
        ops_arr[i].done = async_done;
        ops_arr[i].user = &st;
        nt_store_append(s, &ops_arr[i]);
    }
    pthread_mutex_lock(&st.lock);
    while (st.remaining > 0)
        pthread_cond_wait(&st.cond, &st.lock);
    pthread_mutex_unlock(&st.lock);
    nt_store_stats(s, &after);
    CHECK_EQ_INT(st.failures, 0);
    CHECK(!st.out_of_order);
    CHECK(after.batches - before.batches < NASYNC / 2);
    printf("async appends: %d ops in %llu batches\n", NASYNC,
           (unsigned long long)(after.batches - before.batches));
    uint64_t hist_total = 0;
    for (int i = 0; i < NT_STORE_HIST_BUCKETS; i++)
        hist_total += after.hist[i];
    CHECK_EQ_INT(hist_total, after.batches);
    /* Every batch and every write is timed. */
    CHECK_EQ_INT(after.commit.total, after.batches);
    CHECK_EQ_INT(after.write.total, after.ops);
    CHECK_EQ_INT(after.write.total - before.write.total, NASYNC);
    CHECK(after.commit.sum_ms > before.commit.sum_ms);
    CHECK(after.write.sum_ms - before.write.sum_ms >= after.commit.sum_ms - before.commit.sum_ms);
    pthread_cond_destroy(&st.cond);
    pthread_mutex_destroy(&st.lock);
    free(ops_arr);
}

/* A reader thread that exits before the store closes gives its connection
 * back (checked under ASan/LSan). */
static void *short_reader(void *p)
{
    nt_user u;
    if (nt_store_user_by_nickname(p, "bot", &u) != 0) return p;
    return NULL;
}

static void cleanup_files(void)
{
    char name[600];
    unlink(db_path);
    snprintf(name, sizeof(name), "%s-wal", db_path);
    unlink(name);
    snprintf(name, sizeof(name), "%s-shm", db_path);
    unlink(name);
}

int main(void)
{
    const char *dir = getenv("NT_TEST_TMP");
    if (!dir || !dir[0]) dir = "/tmp";
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    snprintf(db_path, sizeof(db_path), "%s/test_store_%d_%ld.db", dir, (int)getpid(),
             (long)random());
    snprintf(db_url, sizeof(db_url), "sqlite:%s", db_path);
    cleanup_files();

    /* NT_TEST_STORE=postgres: the same tests on a private PostgreSQL. */
    static pg_test_server pg;
    const char *backend = getenv("NT_TEST_STORE");
    if (backend && strcmp(backend, "postgres") == 0) {
        int rc = pgt_start(&pg, false);
        if (rc != 0) return rc == PGT_SKIP ? PGT_SKIP : 1;
        snprintf(db_url, sizeof(db_url), "%s", pg.url);
    }

    char err[256];
    CHECK(nt_store_open("mysql:x", err, sizeof(err)) == NULL);
    CHECK(strlen(err) > 0);

    nt_store *s = open_store();
    if (!s) return 1;
    test_fresh(s);
    test_users(s);
    test_sessions(s);
    test_races(s);
    test_chats(s);
    test_chat_random(s);
    test_messages(s);
    test_chat_list(s);
    test_counters_flushed(s);
    test_member_set();
    test_member_set_threads();
    test_member_set_shared(s);

    pthread_t t;
    void *res = (void *)1;
    pthread_create(&t, NULL, short_reader, s);
    pthread_join(t, &res);
    CHECK(res == NULL);

    nt_user before;
    CHECK_EQ_INT(nt_store_user_by_nickname(s, "msg_a", &before), 0);
    nt_store_close(s);

    /* Reopen: migrations do not run again and the data is all there. */
    s = open_store();
    CHECK(s != NULL);
    if (s) {
        nt_user after, found[4];
        int n = 0;
        CHECK_EQ_INT(nt_store_user_by_nickname(s, "msg_a", &after), 0);
        CHECK_EQ_INT(after.id, before.id);
        CHECK_EQ_INT(nt_store_user_search(s, "bot", 0, 4, found, &n), 0);
        CHECK_EQ_INT(n, 1); /* one bot, not one per open */
        test_fresh(s);
        test_concurrency(s);
        nt_store_close(s);
    }
    cleanup_files();
    pgt_destroy(&pg);
    return check_exit();
}
