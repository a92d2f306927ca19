/*
 * What only the PostgreSQL store back end has to prove (the behaviour it
 * shares with SQLite is covered by test_store, test_chats and test_auth run
 * with NT_TEST_STORE=postgres): on a private server (pg_test_server.h),
 *  - two stores on one database, as two processes would be: membership
 *    changes made by one are seen by the other's next append, appends from
 *    both to one chat get gapless seqs, a direct chat created by both at
 *    once is one chat, blocks made by one stop the other's appends;
 *  - the server stopped: every call fails with EUNAVAILABLE quickly (async
 *    appends too, through done()), ping says no within its deadline, nothing
 *    is half written; started again: the same store works without reopening,
 *    also on connections the restart left stale;
 *  - group-commit throughput with fsync on, printed in messages/s.
 * Exits 77 (skipped) when PostgreSQL is not installed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "store/store.h"
#include "unit/check.h"
#include "unit/pg_test_server.h"

static pg_test_server pg;

static nt_store *open_store(void)
{
    char err[256];
    nt_store *s = nt_store_open(pg.url, err, sizeof(err));
    if (!s) fprintf(stderr, "nt_store_open(%s): %s\n", pg.url, err);
    return s;
}

static int64_t make_user(nt_store *s, const char *nick)
{
    char email[128];
    snprintf(email, sizeof(email), "%s@example.org", nick);
    nt_user_new in = {.email = email, .nickname = nick, .password_hash = "h", .created_at = 1};
    nt_user u;
    int rc = nt_store_user_create(s, &in, &u, NULL);
    CHECK_EQ_INT(rc, 0);
    return rc == 0 ? u.id : 0;
}

static int append(nt_store *s, int64_t chat_id, int64_t sender, const char *text,
                  const char *client_id, nt_append *op)
{
    memset(op, 0, sizeof(*op));
    op->chat_id = chat_id;
    op->sender_id = sender;
    op->text = text;
    op->text_len = strlen(text);
    op->ts = nt_now_ms();
    if (client_id) snprintf(op->client_id, sizeof(op->client_id), "%s", client_id);
    int rc = nt_store_append_wait(s, op);
    return rc;
}

static int export_check(void *arg, const nt_message *m)
{
    int64_t *expect = arg;
    if (m->seq != *expect + 1) return -100;
    *expect = m->seq;
    return 0;
}

/* ---- two stores on one database -------------------------------------------- */

struct both_arg {
    nt_store *s;
    int64_t chat_id, sender;
    int index, failures;
};

static void *both_thread(void *p)
{
    struct both_arg *a = p;
    for (int i = 0; i < 300; i++) {
        nt_append op;
        char cid[32];
        snprintf(cid, sizeof(cid), "both-%d-%d", a->index, i);
        if (append(a->s, a->chat_id, a->sender, "x", cid, &op) != 0 || op.duplicate) a->failures++;
        nt_append_release(&op);
    }
    return NULL;
}

struct direct_arg {
    nt_store *s;
    int64_t a, b, chat_id;
};

static void *direct_thread(void *p)
{
    struct direct_arg *d = p;
    nt_chat c;
    if (nt_store_chat_direct(d->s, d->a, d->b, 1, &c, NULL) == 0) {
        d->chat_id = c.id;
        nt_chat_free(&c);
    }
    return NULL;
}

static void test_two_stores(nt_store *s1, nt_store *s2)
{
    int64_t a = make_user(s1, "two_a"), b = make_user(s1, "two_b"), c = make_user(s1, "two_c");
    int64_t members[2] = {b, c};
    nt_chat g;
    CHECK_EQ_INT(nt_store_chat_create(s1, "group", "two", a, members, 2, 1, &g), 0);

    /* s1's writer caches the members; s2 removes c: s1 must see it. */
    nt_append op;
    CHECK_EQ_INT(append(s1, g.id, c, "hi", NULL, &op), 0);
    CHECK_EQ_INT(op.nmembers, 3);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_member_remove(s2, g.id, c), 0);
    CHECK_EQ_INT(append(s1, g.id, c, "still?", NULL, &op), NT_STORE_EFORBIDDEN);
    nt_append_release(&op);
    CHECK_EQ_INT(append(s1, g.id, b, "b", NULL, &op), 0);
    CHECK_EQ_INT(op.nmembers, 2);
    CHECK_EQ_INT(op.msg.seq, 2);
    nt_append_release(&op);
    /* And back in, through s2 again. */
    CHECK_EQ_INT(nt_store_member_add(s2, g.id, c, NT_ROLE_MEMBER), 0);
    CHECK_EQ_INT(append(s1, g.id, c, "back", NULL, &op), 0);
    CHECK_EQ_INT(op.msg.seq, 3);
    nt_append_release(&op);

    /* Both writers append to one chat at once: one gapless seq order. */
    struct both_arg args[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct both_arg){i % 2 ? s2 : s1, g.id, i % 2 ? b : a, i, 0};
        pthread_create(&t[i], NULL, both_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(args[i].failures, 0);
    }
    int64_t last = 0;
    CHECK_EQ_INT(nt_store_export(s1, g.id, export_check, &last), 0);
    CHECK_EQ_INT(last, 3 + 4 * 300);
    nt_chat got;
    CHECK_EQ_INT(nt_store_chat_get(s2, g.id, a, &got), 0);
    CHECK_EQ_INT(got.last_seq, last);
    nt_chat_free(&got);
    /* The same client_id through the other store is a duplicate. */
    CHECK_EQ_INT(append(s2, g.id, a, "again", "both-0-5", &op), 0);
    CHECK(op.duplicate);
    CHECK_STR_EQ(op.msg.text, "x");
    nt_append_release(&op);

    /* A direct chat created by both stores at once is one chat. */
    int64_t d1 = make_user(s1, "two_d1"), d2 = make_user(s1, "two_d2");
    struct direct_arg da = {s1, d1, d2, 0}, db = {s2, d2, d1, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, direct_thread, &da);
    pthread_create(&tb, NULL, direct_thread, &db);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(da.chat_id > 0);
    CHECK_EQ_INT(da.chat_id, db.chat_id);

    /* A block made through s2 stops s1's appends in the direct chat. */
    CHECK_EQ_INT(append(s1, da.chat_id, d1, "hello", NULL, &op), 0);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_block(s2, d2, d1, 5), 0);
    CHECK_EQ_INT(append(s1, da.chat_id, d1, "hello?", NULL, &op), NT_STORE_EFORBIDDEN);
    nt_append_release(&op);
    CHECK_EQ_INT(append(s1, da.chat_id, d2, "I can", NULL, &op), 0);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_unblock(s2, d2, d1), 0);
    CHECK_EQ_INT(append(s1, da.chat_id, d1, "thanks", NULL, &op), 0);
    nt_append_release(&op);
    nt_chat_free(&g);
}

/* ---- the server goes away and comes back ------------------------------------ */

struct outage_state {
    pthread_mutex_t lock;
    int done, failed;
};

static void outage_done(nt_append *op)
{
    struct outage_state *st = op->user;
    pthread_mutex_lock(&st->lock);
    st->done++;
    if (op->status == NT_STORE_EUNAVAILABLE) st->failed++;
    pthread_mutex_unlock(&st->lock);
    nt_append_release(op);
}

static void test_outage(nt_store *s)
{
    int64_t a = make_user(s, "out_a"), b = make_user(s, "out_b");
    nt_chat c;
    CHECK_EQ_INT(nt_store_chat_direct(s, a, b, 1, &c, NULL), 0);
    nt_append op;
    CHECK_EQ_INT(append(s, c.id, a, "before", NULL, &op), 0);
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_ping(s), 0);

    CHECK_EQ_INT(pgt_stop(&pg), 0);
    int64_t t0 = nt_now_ms();
    CHECK_EQ_INT(nt_store_ping(s), NT_STORE_EUNAVAILABLE);
    CHECK(nt_now_ms() - t0 < 3000);
    CHECK_EQ_INT(append(s, c.id, a, "during", "out-1", &op), NT_STORE_EUNAVAILABLE);
    CHECK(op.msg.text == NULL && op.member_ids == NULL);
    nt_append_release(&op);
    nt_user u;
    CHECK_EQ_INT(nt_store_user_get(s, a, &u), NT_STORE_EUNAVAILABLE);
    CHECK_EQ_INT(nt_store_user_set_last_seen(s, a, 5), NT_STORE_EUNAVAILABLE);
    nt_message *msgs = NULL;
    int n = 0;
    CHECK_EQ_INT(nt_store_messages(s, c.id, 0, -1, 10, &msgs, &n), NT_STORE_EUNAVAILABLE);
    /* Async appends are told too, never dropped. */
    struct outage_state st = {.done = 0};
    pthread_mutex_init(&st.lock, NULL);
    nt_append async_ops[20];
    memset(async_ops, 0, sizeof(async_ops));
    for (int i = 0; i < 20; i++) {
        async_ops[i].chat_id = c.id;
        async_ops[i].sender_id = a;
        async_ops[i].text = "lost";
        async_ops[i].text_len = 4;
        async_ops[i].done = outage_done;
        async_ops[i].user = &st;
        nt_store_append(s, &async_ops[i]);
    }
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&st.lock);
        int done = st.done;
        pthread_mutex_unlock(&st.lock);
        if (done == 20) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK_EQ_INT(st.done, 20);
    CHECK_EQ_INT(st.failed, 20);
    CHECK(nt_now_ms() - t0 < 10000);

    CHECK_EQ_INT(pgt_resume(&pg), 0);
    /* The same store, no reopen: connections come back by themselves. */
    CHECK_EQ_INT(nt_store_ping(s), 0);
    CHECK_EQ_INT(append(s, c.id, a, "after", "out-1", &op), 0);
    CHECK(!op.duplicate);
    CHECK_EQ_INT(op.msg.seq, 2); /* nothing of the outage was written */
    nt_append_release(&op);
    CHECK_EQ_INT(nt_store_user_get(s, a, &u), 0);
    CHECK_EQ_INT(nt_store_messages(s, c.id, 0, -1, 10, &msgs, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) CHECK_STR_EQ(msgs[1].text, "after");
    nt_messages_free(msgs, n);
    pthread_mutex_destroy(&st.lock);

    /* A restart while nobody calls: every kept connection is stale, and the
     * first call on each must still work (reconnect and retry once). */
    CHECK_EQ_INT(pgt_stop(&pg), 0);
    CHECK_EQ_INT(pgt_resume(&pg), 0);
    CHECK_EQ_INT(nt_store_ping(s), 0);
    CHECK_EQ_INT(pgt_stop(&pg), 0);
    CHECK_EQ_INT(pgt_resume(&pg), 0);
    CHECK_EQ_INT(nt_store_user_get(s, a, &u), 0);
    CHECK_EQ_INT(append(s, c.id, b, "after a quiet restart", NULL, &op), 0);
    CHECK_EQ_INT(op.msg.seq, 3);
    nt_append_release(&op);
    nt_chat_free(&c);
}

/* ---- throughput ---------------------------------------------------------------- */

struct bench_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int remaining, failures;
};

static void bench_done(nt_append *op)
{
    struct bench_state *st = op->user;
    if (op->status != 0) __atomic_add_fetch(&st->failures, 1, __ATOMIC_RELAXED);
    nt_append_release(op);
    pthread_mutex_lock(&st->lock);
    if (--st->remaining == 0) pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

struct wait_arg {
    nt_store *s;
    int64_t chat_id, sender;
    int count, failures;
};

static void *wait_thread(void *p)
{
    struct wait_arg *a = p;
    for (int i = 0; i < a->count; i++) {
        nt_append op;
        if (append(a->s, a->chat_id, a->sender, "a synchronous message", NULL, &op) != 0)
            a->failures++;
        nt_append_release(&op);
    }
    return NULL;
}

static void test_throughput(nt_store *s)
{
    enum { SENDERS = 8, CHATS = 64, N = 40000, WAITERS = 32, PER_WAITER = 150 };
    int64_t users[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        char nick[32];
        snprintf(nick, sizeof(nick), "bench_%d", i);
        users[i] = make_user(s, nick);
    }
    int64_t chats[CHATS];
    for (int i = 0; i < CHATS; i++) {
        nt_chat c;
        CHECK_EQ_INT(
            nt_store_chat_create(s, "group", "bench", users[0], users + 1, SENDERS - 1, 1, &c), 0);
        chats[i] = c.id;
        nt_chat_free(&c);
    }

    /* Async: the way the messages service sends. */
    nt_append *ops = calloc(N, sizeof(*ops));
    struct bench_state st = {.remaining = N};
    pthread_mutex_init(&st.lock, NULL);
    pthread_cond_init(&st.cond, NULL);
    nt_store_stats_t before, after;
    nt_store_stats(s, &before);
    uint64_t t0 = nt_mono_ns();
    for (int i = 0; i < N; i++) {
        ops[i].chat_id = chats[i % CHATS];
        ops[i].sender_id = users[i % SENDERS];
        ops[i].text = "a message of a typical length, about sixty bytes long.";
        ops[i].text_len = strlen(ops[i].text);
        ops[i].ts = 1000 + i;
        snprintf(ops[i].client_id, sizeof(ops[i].client_id), "bench-%d", i);
        ops[i].done = bench_done;
        ops[i].user = &st;
        nt_store_append(s, &ops[i]);
    }
    pthread_mutex_lock(&st.lock);
    while (st.remaining > 0)
        pthread_cond_wait(&st.cond, &st.lock);
    pthread_mutex_unlock(&st.lock);
    double secs = (double)(nt_mono_ns() - t0) / 1e9;
    nt_store_stats(s, &after);
    CHECK_EQ_INT(st.failures, 0);
    CHECK_EQ_INT(after.commit.total, after.batches);
    CHECK(after.write.total - before.write.total >= N); /* and any write beside them */
    printf("postgres async appends (fsync on, client_id, %d chats): %d msgs in %.2f s = %.0f "
           "msgs/s, %llu batches\n",
           CHATS, N, secs, N / secs, (unsigned long long)(after.batches - before.batches));

    /* Synchronous: many worker threads each waiting for its commit. */
    struct wait_arg wa[WAITERS];
    pthread_t t[WAITERS];
    nt_store_stats(s, &before);
    t0 = nt_mono_ns();
    for (int i = 0; i < WAITERS; i++) {
        wa[i] = (struct wait_arg){s, chats[i % CHATS], users[i % SENDERS], PER_WAITER, 0};
        pthread_create(&t[i], NULL, wait_thread, &wa[i]);
    }
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(wa[i].failures, 0);
    }
    secs = (double)(nt_mono_ns() - t0) / 1e9;
    nt_store_stats(s, &after);
    printf("postgres append_wait (fsync on, %d threads): %d msgs in %.2f s = %.0f msgs/s, "
           "%llu batches\n",
           WAITERS, WAITERS * PER_WAITER, secs, WAITERS * PER_WAITER / secs,
           (unsigned long long)(after.batches - before.batches));

    int64_t total = 0;
    for (int i = 0; i < CHATS; i++) {
        int64_t last = 0;
        CHECK_EQ_INT(nt_store_export(s, chats[i], export_check, &last), 0);
        total += last;
    }
    CHECK_EQ_INT(total, N + WAITERS * PER_WAITER);
    pthread_cond_destroy(&st.cond);
    pthread_mutex_destroy(&st.lock);
    free(ops);
}

int main(void)
{
    int rc = pgt_start(&pg, true);
    if (rc != 0) return rc == PGT_SKIP ? PGT_SKIP : 1;
    nt_store *s1 = open_store();
    nt_store *s2 = s1 ? open_store() : NULL; /* migrations already done: a no-op */
    if (!s1 || !s2) {
        pgt_destroy(&pg);
        return 1;
    }
    char err[256];
    CHECK(nt_store_open("postgres:nohost", err, sizeof(err)) == NULL);
    CHECK(strlen(err) > 0);

    test_two_stores(s1, s2);
    nt_store_close(s2);
    test_outage(s1);
    test_throughput(s1);
    nt_store_close(s1);
    pgt_destroy(&pg);
    return check_exit();
}
