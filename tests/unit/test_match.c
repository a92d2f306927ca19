/*
 * Unit test of random chats: the match queue of match.h on its own (every
 * pair mutually compatible over 100,000 random users, bounded work per
 * arrival, ranking by shared interests then waiting time, leave, blocks,
 * requeue) and the match service of match.c through its handlers against a
 * real temporary SQLite store and the in-process bus: preferences and all
 * their bad input, joining without gender or birth date, waiting twice,
 * pairing with `matched` events, anonymity of every view until both
 * reveal, reveal, leave with chat_closed, blocks in the queue and in the
 * chat.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <unistd.h>
#include <uv.h>

#include "common/clock.h"
#include "services/match.h"
#include "service_fixture.h"

/* ---- the queue alone ----------------------------------------------------------------- */

static unsigned rng_state = 12345;

static unsigned rnd(unsigned n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

static nt_match_ticket ticket(int64_t id, unsigned gender, int age, unsigned genders, int lo,
                              int hi)
{
    nt_match_ticket t;
    memset(&t, 0, sizeof t);
    t.user_id = id;
    t.gender = gender;
    t.age = age;
    t.genders = genders;
    t.age_min = lo;
    t.age_max = hi;
    return t;
}

static bool accepts(const nt_match_ticket *a, const nt_match_ticket *b)
{
    return (a->genders & b->gender) && b->age >= a->age_min && b->age <= a->age_max;
}

#define BIG 100000

static void test_queue_big(void)
{
    static nt_match_ticket all[BIG + 1];
    static int64_t blocks[BIG + 1];
    static unsigned char paired[BIG + 1];
    nt_matcher *m = nt_matcher_new(0);
    if (!(m != NULL)) {
        CHECK(m != NULL);
        return;
    }
    int pairs = 0, bad = 0;
    uint64_t max_step = 0, prev = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t id = 1; id <= BIG; id++) {
        int lo = 13 + (int)rnd(60), hi = lo + (int)rnd(121 - lo);
        nt_match_ticket t = ticket(id, 1u << rnd(3), 13 + (int)rnd(108), 1 + rnd(7), lo, hi);
        t.ninterests = (int)rnd(11);
        for (int i = 0; i < t.ninterests; i++) {
            char tag[16];
            snprintf(tag, sizeof tag, "tag%u", rnd(40));
            t.interests[i] = nt_match_tag_hash(tag);
        }
        /* One in ten blocks someone who came before. */
        blocks[id] = id > 1 && rnd(10) == 0 ? 1 + (int64_t)rnd((unsigned)id - 1) : 0;
        if (blocks[id]) {
            t.blocks = &blocks[id];
            t.nblocks = 1;
            if (!paired[blocks[id]]) nt_matcher_block(m, id, blocks[id]);
        }
        all[id] = t;
        nt_match_ticket partner;
        int rc = nt_matcher_offer(m, &t, &partner);
        uint64_t examined;
        nt_matcher_stats(m, &examined, NULL);
        if (examined - prev > max_step) max_step = examined - prev;
        prev = examined;
        if (rc == NT_MATCH_PAIRED) {
            free((int64_t *)partner.blocks); /* handed over with the partner */
            int64_t p = partner.user_id;
            const nt_match_ticket *pt = &all[p];
            bool ok = p >= 1 && p < id && !paired[p] && accepts(&t, pt) && accepts(pt, &t) &&
                      blocks[id] != p && blocks[p] != id;
            if (!ok) bad++;
            paired[p] = paired[id] = 1;
            pairs++;
        } else {
            CHECK_EQ_INT(rc, NT_MATCH_WAITING);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_EQ_INT(bad, 0);
    CHECK(pairs > BIG / 4); /* random preferences still pair most users */
    CHECK_EQ_INT(nt_matcher_count(m), BIG - 2 * pairs);
    /* Bounded work: 3 genders x 4 wanted-sets x 108 ages x 32 per bucket. */
    CHECK(max_step <= 3u * 4u * 108u * 32u);
    /* Everyone still waiting is really waiting; a paired one is not. */
    int waiting = 0;
    for (int64_t id = 1; id <= BIG; id++) {
        bool w = nt_matcher_is_waiting(m, id);
        if (w == (paired[id] != 0)) bad++;
        waiting += w;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(waiting, BIG - 2 * pairs);
    printf("queue: %d users, %d pairs, %.0f ms, at most %llu candidates per arrival\n", BIG, pairs,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
           (unsigned long long)max_step);
    nt_matcher_free(m);
}

/* The pairing rule against a brute-force reference: with no scan cap the
 * queue must pick, among all compatible waiting users (each accepts the
 * other, no block either way), the one sharing the most interests, then
 * the one waiting longest, also after partners were put back with
 * nt_matcher_requeue (their old place). Few tags, so that candidates
 * sharing every interest of an arrival are common (mq_search stops early
 * in a bucket there). */
#define RANKED 3000

static int shared_interests(const nt_match_ticket *a, const nt_match_ticket *b)
{
    int n = 0;
    for (int i = 0; i < a->ninterests; i++)
        for (int j = 0; j < b->ninterests; j++)
            n += a->interests[i] == b->interests[j];
    return n;
}

static void test_queue_ranking(void)
{
    static nt_match_ticket all[RANKED + 1];
    static int64_t blocks[RANKED + 1];
    static bool waiting[RANKED + 1];
    nt_matcher *m = nt_matcher_new(1 << 30);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    int pairs = 0, wrong = 0, requeued = 0;
    for (int64_t id = 1; id <= RANKED; id++) {
        int lo = 13 + (int)rnd(40), hi = lo + (int)rnd(60);
        nt_match_ticket t = ticket(id, 1u << rnd(3), 13 + (int)rnd(60), 1 + rnd(7), lo, hi);
        static const char *const tag_names[6] = {"chess", "jazz", "go", "rust", "tea", "film"};
        unsigned tags = rnd(64); /* a subset of the 6 tags, at most 3 */
        for (int i = 0; i < 6 && t.ninterests < 3; i++)
            if (tags & (1u << i)) t.interests[t.ninterests++] = nt_match_tag_hash(tag_names[i]);
        blocks[id] = id > 1 && rnd(10) == 0 ? 1 + (int64_t)rnd((unsigned)id - 1) : 0;
        if (blocks[id]) {
            t.blocks = &blocks[id];
            t.nblocks = 1;
        }
        all[id] = t;

        int64_t expect = 0;
        int expect_shared = -1;
        for (int64_t w = 1; w < id; w++) { /* oldest first */
            if (!waiting[w] || !accepts(&t, &all[w]) || !accepts(&all[w], &t)) continue;
            if (blocks[id] == w || blocks[w] == id) continue;
            int n = shared_interests(&t, &all[w]);
            if (n > expect_shared) expect = w, expect_shared = n;
        }

        nt_match_ticket partner;
        int rc = nt_matcher_offer(m, &t, &partner);
        if (rc == NT_MATCH_PAIRED) {
            if (partner.user_id != expect) wrong++;
            pairs++;
            waiting[partner.user_id] = false;
            if (pairs % 7 == 0) { /* its chat could not be stored: back it goes */
                CHECK_EQ_INT(nt_matcher_requeue(m, &partner), 0);
                waiting[partner.user_id] = true;
                requeued++;
            }
            free((int64_t *)partner.blocks);
        } else {
            CHECK_EQ_INT(rc, NT_MATCH_WAITING);
            if (expect) wrong++;
            waiting[id] = true;
        }
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK(pairs > RANKED / 10 && requeued > 10);
    nt_matcher_free(m);
}

/* A partner put back keeps its place even in a bucket longer than the scan
 * cap: with a cap of 2, the next arrival still finds it first. */
static void test_requeue_place(void)
{
    nt_matcher *m = nt_matcher_new(2);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    nt_match_ticket p;
    for (int64_t id = 1; id <= 4; id++) {
        nt_match_ticket w = ticket(id, NT_GENDER_MALE, 30, NT_GENDER_FEMALE, 18, 40);
        CHECK_EQ_INT(nt_matcher_offer(m, &w, &p), NT_MATCH_WAITING);
    }
    nt_match_ticket f = ticket(10, NT_GENDER_FEMALE, 30, NT_GENDER_MALE, 18, 40);
    CHECK_EQ_INT(nt_matcher_offer(m, &f, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 1);
    CHECK_EQ_INT(nt_matcher_requeue(m, &p), 0);
    f.user_id = 11;
    CHECK_EQ_INT(nt_matcher_offer(m, &f, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 1); /* not 2: 1 is back at the head */
    f.user_id = 12;
    CHECK_EQ_INT(nt_matcher_offer(m, &f, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 2);
    nt_matcher_free(m);
}

static void test_queue_rules(void)
{
    nt_matcher *m = nt_matcher_new(0);
    nt_match_ticket p;
    if (!(m != NULL)) {
        CHECK(m != NULL);
        return;
    }

    /* Interests first, then the longest wait. */
    nt_match_ticket a = ticket(1, NT_GENDER_MALE, 30, NT_GENDER_ALL, 13, 120);
    nt_match_ticket b = ticket(2, NT_GENDER_MALE, 31, NT_GENDER_ALL, 13, 120);
    nt_match_ticket c = ticket(3, NT_GENDER_OTHER, 50, NT_GENDER_ALL, 13, 120);
    b.ninterests = 2;
    b.interests[0] = nt_match_tag_hash("chess");
    b.interests[1] = nt_match_tag_hash("go");
    c.ninterests = 1;
    c.interests[0] = nt_match_tag_hash("chess");
    CHECK_EQ_INT(nt_matcher_offer(m, &a, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer(m, &a, &p), NT_MATCH_ALREADY);
    CHECK_EQ_INT(nt_matcher_count(m), 1);
    /* b and c would accept each other, so give them the same genders... */
    CHECK(nt_matcher_leave(m, 1));
    CHECK(!nt_matcher_leave(m, 1));
    b.genders = NT_GENDER_FEMALE; /* b and c want only women: they wait */
    c.genders = NT_GENDER_FEMALE;
    a.genders = NT_GENDER_FEMALE;
    CHECK_EQ_INT(nt_matcher_offer(m, &a, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer(m, &b, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer(m, &c, &p), NT_MATCH_WAITING);
    nt_match_ticket x = ticket(4, NT_GENDER_FEMALE, 25, NT_GENDER_ALL, 13, 120);
    x.ninterests = 2;
    x.interests[0] = nt_match_tag_hash("go");
    x.interests[1] = nt_match_tag_hash("chess");
    CHECK_EQ_INT(nt_matcher_offer(m, &x, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 2); /* two shared tags beat one and none */
    x.user_id = 5;
    CHECK_EQ_INT(nt_matcher_offer(m, &x, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 3);
    x.user_id = 6;
    x.ninterests = 0;
    CHECK_EQ_INT(nt_matcher_offer(m, &x, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 1);
    CHECK_EQ_INT(nt_matcher_count(m), 0);

    /* Equal interests: whoever waited longest. */
    nt_match_ticket d = ticket(10, NT_GENDER_MALE, 40, NT_GENDER_FEMALE, 13, 120);
    nt_match_ticket e = ticket(11, NT_GENDER_MALE, 20, NT_GENDER_FEMALE, 13, 120);
    CHECK_EQ_INT(nt_matcher_offer(m, &d, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer(m, &e, &p), NT_MATCH_WAITING);
    nt_match_ticket y = ticket(12, NT_GENDER_FEMALE, 30, NT_GENDER_MALE, 13, 120);
    CHECK_EQ_INT(nt_matcher_offer(m, &y, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 10);
    /* Requeue keeps the old place: 10 goes back before 11. */
    CHECK_EQ_INT(nt_matcher_requeue(m, &p), 0);
    y.user_id = 13;
    CHECK_EQ_INT(nt_matcher_offer(m, &y, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 10);

    /* Age ranges both ways. */
    nt_match_ticket old = ticket(20, NT_GENDER_FEMALE, 60, NT_GENDER_MALE, 50, 70);
    CHECK_EQ_INT(nt_matcher_offer(m, &old, &p), NT_MATCH_WAITING);
    nt_match_ticket young = ticket(21, NT_GENDER_MALE, 20, NT_GENDER_FEMALE, 13, 120);
    young.user_id = 21;
    /* 11 (male 20) is waiting and accepts women of any age; 20 wants 50..70. */
    CHECK_EQ_INT(nt_matcher_leave(m, 11), true);
    CHECK_EQ_INT(nt_matcher_offer(m, &young, &p), NT_MATCH_WAITING);
    nt_match_ticket mid = ticket(22, NT_GENDER_MALE, 55, NT_GENDER_FEMALE, 40, 59);
    CHECK_EQ_INT(nt_matcher_offer(m, &mid, &p), NT_MATCH_WAITING); /* 60 is over 59 */
    CHECK(nt_matcher_leave(m, 22));
    mid.age_max = 60;
    CHECK_EQ_INT(nt_matcher_offer(m, &mid, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 20);

    /* Blocks: a block made while waiting, and one carried in the ticket. */
    CHECK(nt_matcher_is_waiting(m, 21));
    nt_matcher_block(m, 30, 21);
    nt_match_ticket z = ticket(30, NT_GENDER_FEMALE, 20, NT_GENDER_MALE, 13, 120);
    CHECK_EQ_INT(nt_matcher_offer(m, &z, &p), NT_MATCH_WAITING);
    nt_matcher_block(m, 21, 30);
    CHECK(nt_matcher_leave(m, 30));
    int64_t blocked = 21;
    z.user_id = 31;
    z.blocks = &blocked;
    z.nblocks = 1;
    CHECK_EQ_INT(nt_matcher_offer(m, &z, &p), NT_MATCH_WAITING);
    z.user_id = 32;
    z.nblocks = 0;
    CHECK_EQ_INT(nt_matcher_offer(m, &z, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 21);
    /* The partner comes with its block list (30, added while it waited),
     * so it can go back as it was when the pair cannot be stored: 30 is
     * still refused, its arrival kept, 32 (its partner a moment ago) is
     * accepted again. */
    CHECK_EQ_INT(p.nblocks, 1);
    CHECK(p.blocks != NULL && p.blocks[0] == 30);
    CHECK_EQ_INT(nt_matcher_requeue(m, &p), 0);
    free((int64_t *)p.blocks);
    CHECK(nt_matcher_is_waiting(m, 21));
    z.user_id = 30;
    CHECK_EQ_INT(nt_matcher_offer(m, &z, &p), NT_MATCH_WAITING);
    CHECK(nt_matcher_leave(m, 30));
    z.user_id = 32;
    CHECK_EQ_INT(nt_matcher_offer(m, &z, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 21);
    free((int64_t *)p.blocks);
    nt_matcher_free(m);
}

/* Holds (nt_matcher_offer_held): a held user that leaves is not put back
 * by nt_matcher_settle; one that offers again waits for its pair's
 * outcome; settling without `back` only ends the hold. */
static void test_queue_holds(void)
{
    nt_matcher *m = nt_matcher_new(0);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    nt_match_ticket a = ticket(1, NT_GENDER_MALE, 30, NT_GENDER_FEMALE, 13, 120);
    nt_match_ticket b = ticket(2, NT_GENDER_FEMALE, 30, NT_GENDER_MALE, 13, 120);
    nt_match_ticket p;
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 1);
    CHECK_EQ_INT(nt_matcher_count(m), 0);
    /* Held: a second offer waits for the outcome, a leave is remembered. */
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_ALREADY);
    CHECK(nt_matcher_leave(m, 1));
    CHECK_EQ_INT(nt_matcher_settle(m, &a, NT_MATCH_FAILED), 0);
    CHECK_EQ_INT(nt_matcher_settle(m, &b, NT_MATCH_FAILED), 0);
    CHECK(!nt_matcher_is_waiting(m, 1)); /* it left */
    CHECK(nt_matcher_is_waiting(m, 2));  /* it went back */
    CHECK(!nt_matcher_leave(m, 1));      /* the hold is over */

    /* Left, then offered again while held: it goes back after all. The
     * arrival was answered the failure itself (REST): it stays out. */
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(p.user_id, 2);
    CHECK(nt_matcher_leave(m, 2));
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_ALREADY);
    CHECK_EQ_INT(nt_matcher_requeue(m, &a), 0); /* held: not queued beside its pair */
    CHECK(!nt_matcher_is_waiting(m, 1));
    CHECK_EQ_INT(nt_matcher_settle(m, &b, NT_MATCH_FAILED), 0);
    CHECK_EQ_INT(nt_matcher_settle(m, &a, NT_MATCH_FAILED_TOLD), 0);
    CHECK(nt_matcher_is_waiting(m, 2));
    CHECK(!nt_matcher_is_waiting(m, 1));

    /* An arrival answered the failure that had joined again meanwhile (and
     * was answered "waiting" then) does go back; a stored pair's user that
     * joined again does not (it has its chat). */
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_ALREADY);
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_ALREADY);
    CHECK_EQ_INT(nt_matcher_settle(m, &a, NT_MATCH_FAILED_TOLD), 0);
    CHECK(nt_matcher_is_waiting(m, 1));
    CHECK_EQ_INT(nt_matcher_leave(m, 1), true);
    CHECK_EQ_INT(nt_matcher_settle(m, &b, NT_MATCH_STORED), 0);
    CHECK(!nt_matcher_is_waiting(m, 2));
    CHECK_EQ_INT(nt_matcher_count(m), 0);

    /* A stored pair: both settle without going back; the next offers are
     * new arrivals. */
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_WAITING);
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_PAIRED);
    CHECK_EQ_INT(nt_matcher_settle(m, &a, NT_MATCH_STORED), 0);
    CHECK_EQ_INT(nt_matcher_settle(m, &b, NT_MATCH_STORED), 0);
    CHECK_EQ_INT(nt_matcher_count(m), 0);
    CHECK_EQ_INT(nt_matcher_offer_held(m, &a, &p), NT_MATCH_WAITING);
    /* A hold never settled is freed with the queue (ASan checks). */
    CHECK_EQ_INT(nt_matcher_offer_held(m, &b, &p), NT_MATCH_PAIRED);
    nt_matcher_free(m);
}

/* ---- the service ------------------------------------------------------------------------ */

static int64_t mo, fa, xm, nog, nob, kid, pm, qf;
static nt_caller CMO, CFA, CXM, CNOG, CNOB, CKID, CPM, CQF;

/* "YYYY-01-01" for someone who is `age` today. */
static const char *born(int age)
{
    static char out[8][32]; /* room for any int year: -Wformat-truncation at -O2 */
    static int i;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    i = (i + 1) % 8;
    snprintf(out[i], sizeof out[i], "%04d-01-01", tm.tm_year + 1900 - age);
    return out[i];
}

static void prefs(const nt_caller *c, const char *json)
{
    reset();
    nt_match_prefs_put(&ctx, c, json, json ? strlen(json) : 0, &R);
}

static void join(const nt_caller *c)
{
    reset();
    nt_match_join(&ctx, c, &R);
}

static int post(const nt_caller *c, int64_t chat, const char *text)
{
    char js[256];
    snprintf(js, sizeof js, "{\"text\":\"%s\"}", text);
    reset();
    nt_messages_post(&ctx, c, chat, js, strlen(js), &R);
    return R.status;
}

/* True if the JSON holds the number id as a value of a "user_id" or
 * "sender_id" key: the anonymity check. */
static bool names_id(const char *json, int64_t id)
{
    char pat[64];
    if (!json) return false;
    snprintf(pat, sizeof pat, "\"user_id\":%" PRId64 ",", id);
    if (strstr(json, pat)) return true;
    snprintf(pat, sizeof pat, "\"sender_id\":%" PRId64 ",", id);
    return strstr(json, pat) != NULL;
}

static void test_prefs(void)
{
    reset();
    nt_match_prefs_get(&ctx, &CMO, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "genders"), 3);
    CHECK_EQ_INT(BINT("age_min"), 13);
    CHECK_EQ_INT(BINT("age_max"), 120);
    CHECK_EQ_INT(jcount_in(body(), "interests"), 0);

    static const struct {
        const char *json, *field;
    } bad[] = {
        {"", "body"},
        {"[]", "body"},
        {"{}", "genders"},
        {"{\"genders\":[],\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":\"male\",\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":[\"males\"],\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":[1],\"age_min\":18,\"age_max\":30}", "genders"},
        {"{\"genders\":[\"male\"],\"age_max\":30}", "age_min"},
        {"{\"genders\":[\"male\"],\"age_min\":18}", "age_max"},
        {"{\"genders\":[\"male\"],\"age_min\":12,\"age_max\":30}", "age_min"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":121}", "age_max"},
        {"{\"genders\":[\"male\"],\"age_min\":\"18\",\"age_max\":30}", "age_min"},
        {"{\"genders\":[\"male\"],\"age_min\":31,\"age_max\":30}", "age_max"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":\"go\"}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":[5]}", "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":[\"\"]}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":[\"a b\"]}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,"
         "\"interests\":[\"abcdefghijklmnopqrstuvwxyz0123456\"]}",
         "interests"},
        {"{\"genders\":[\"male\"],\"age_min\":18,\"age_max\":30,\"interests\":"
         "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\"]}",
         "interests"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        prefs(&CMO, bad[i].json);
        CHECK_400(bad[i].field);
    }
    /* Nothing was stored by the bad ones. */
    reset();
    nt_match_prefs_get(&ctx, &CMO, &R);
    CHECK_EQ_INT(BINT("age_max"), 120);

    prefs(&CMO, "{\"genders\":[\"female\"],\"age_min\":18,\"age_max\":40,"
                "\"interests\":[\"Music\",\"music\",\"Go-lang\",\"a_1\"],\"extra\":1}");
    CHECK_EQ_INT(R.status, 200);
    CHECK_EQ_INT(jcount_in(body(), "genders"), 1);
    CHECK_EQ_INT(jcount_in(body(), "interests"), 3);
    reset();
    nt_match_prefs_get(&ctx, &CMO, &R);
    CHECK_STR_EQ(BSTR("genders.0"), "female");
    CHECK_EQ_INT(BINT("age_min"), 18);
    CHECK_EQ_INT(BINT("age_max"), 40);
    CHECK_STR_EQ(BSTR("interests.0"), "music");
    CHECK_STR_EQ(BSTR("interests.1"), "go-lang");
    CHECK_STR_EQ(BSTR("interests.2"), "a_1");
    /* Ten exactly is fine. */
    prefs(&CXM, "{\"genders\":[\"male\"],\"age_min\":13,\"age_max\":120,\"interests\":"
                "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\"]}");
    CHECK_EQ_INT(R.status, 200);
}

static void test_join_bad(void)
{
    join(&CNOG);
    CHECK_400("gender");
    join(&CNOB);
    CHECK_400("birth_date");
    join(&CKID);
    CHECK_400("birth_date");
    CHECK_EQ_INT(nframes, 0);
}

static int64_t test_pair(void)
{
    frames_clear();
    join(&CMO); /* male 25, wants women 18..40 */
    CHECK_EQ_INT(R.status, 202);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    join(&CMO);
    CHECK_EQ_INT(R.status, 200); /* still one entry */
    join(&CXM);                  /* male 40, wants men: incompatible with mo, waits */
    CHECK_EQ_INT(R.status, 202);
    CHECK_EQ_INT(nframes, 0);

    prefs(&CFA, "{\"genders\":[\"male\"],\"age_min\":20,\"age_max\":30,\"interests\":[\"music\"]}");
    join(&CFA); /* female 30 */
    CHECK_EQ_INT(R.status, 202);
    CHECK_STR_EQ(BSTR("status"), "matched");
    int64_t chat = BINT("chat_id");
    CHECK(chat > 0);
    CHECK_EQ_INT(nframes_for(mo, "matched"), 1);
    CHECK_EQ_INT(nframes_for(fa, "matched"), 1);
    CHECK_EQ_INT(nframes_for(xm, "matched"), 0);
    const char *fm = frame_for(mo, "matched");
    CHECK_EQ_INT(jint_in(fm, "chat.id"), chat);
    CHECK_STR_EQ(jstr_in(fm, "chat.type"), "random");
    CHECK_STR_EQ(jstr_in(fm, "partner.gender"), "female");
    CHECK_EQ_INT(jint_in(fm, "partner.age"), 30);
    char alias_fa[64], alias_mo[64];
    snprintf(alias_fa, sizeof alias_fa, "%s", jstr_in(fm, "partner.alias"));
    CHECK(!names_id(fm, mo) && !names_id(fm, fa));
    CHECK(strstr(fm, "\"nickname\"") == NULL);
    const char *ff = frame_for(fa, "matched");
    CHECK_STR_EQ(jstr_in(ff, "partner.gender"), "male");
    CHECK_EQ_INT(jint_in(ff, "partner.age"), 25);
    snprintf(alias_mo, sizeof alias_mo, "%s", jstr_in(ff, "partner.alias"));
    CHECK(strcmp(alias_mo, alias_fa) != 0);
    CHECK(strchr(alias_mo, ' ') != NULL);
    CHECK_STR_EQ(jstr_in(ff, "chat.members.0.user_id"), "(null)");
    CHECK_STR_EQ(jstr_in(ff, "chat.members.1.user_id"), "(null)");

    /* Every view hides the ids until both reveal. */
    reset();
    nt_chats_get(&ctx, &CMO, chat, &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK(!names_id(body(), mo) && !names_id(body(), fa));
    CHECK_STR_EQ(BSTR("members.0.revealed"), "(false)");
    CHECK(BSTR("members.0.alias") != NULL);
    reset();
    nt_chats_list(&ctx, &CFA, "", &R);
    CHECK(!names_id(body(), mo));
    frames_clear();
    CHECK_EQ_INT(post(&CMO, chat, "hello stranger"), 201);
    CHECK_STR_EQ(BSTR("sender_id"), "(null)");
    CHECK_STR_EQ(BSTR("sender_alias"), alias_mo);
    const char *ev = frame_for(fa, "message");
    CHECK_STR_EQ(jstr_in(ev, "message.sender_alias"), alias_mo);
    CHECK(!names_id(ev, mo));
    reset();
    nt_messages_history(&ctx, &CFA, chat, "", &R);
    CHECK_EQ_INT(R.status, 200);
    CHECK_STR_EQ(BSTR("messages.0.sender_alias"), alias_mo);
    CHECK(!names_id(body(), mo));
    reset();
    nt_messages_export(&ctx, &CFA, chat, &R);
    CHECK(!names_id(body(), mo));
    reset();
    nt_chats_get(&ctx, &CFA, chat, &R);
    CHECK_STR_EQ(BSTR("last_message.sender_id"), "(null)");
    reset();
    nt_chats_mark(&ctx, &CFA, chat, NT_MARK_READ, 1, &R);
    CHECK_EQ_INT(R.status, 204);
    const char *rc = frame_for(mo, "receipt");
    CHECK_STR_EQ(jstr_in(rc, "user_id"), "(null)");
    CHECK_STR_EQ(jstr_in(rc, "alias"), alias_fa);
    reset();
    nt_chats_typing(&ctx, &CFA, chat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_STR_EQ(jstr_in(frame_for(mo, "typing"), "user_id"), "(null)");
    /* No presence between random partners. */
    frames_clear();
    nt_users_presence(&ctx, mo, true);
    CHECK_EQ_INT(nframes_for(fa, "presence"), 0);

    /* Reveal: one consent changes nothing visible. */
    frames_clear();
    reset();
    nt_match_reveal(&ctx, &CMO, chat, &R);
    CHECK_EQ_INT(R.status, 204);
    reset();
    nt_match_reveal(&ctx, &CMO, chat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes, 0);
    reset();
    nt_chats_get(&ctx, &CFA, chat, &R);
    CHECK(!names_id(body(), mo));
    CHECK_EQ_INT(post(&CMO, chat, "still hidden"), 201);
    CHECK_STR_EQ(BSTR("sender_id"), "(null)");
    reset();
    nt_match_reveal(&ctx, &CXM, chat, &R); /* not a member */
    CHECK_ERR(404, "not_found");
    reset();
    nt_match_reveal(&ctx, &CFA, 0, &R);
    CHECK_ERR(404, "not_found");

    frames_clear();
    reset();
    nt_match_reveal(&ctx, &CFA, chat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(mo, "chat"), 1);
    CHECK_EQ_INT(nframes_for(fa, "chat"), 1);
    const char *cv = frame_for(mo, "chat");
    CHECK(names_id(cv, mo) && names_id(cv, fa));
    CHECK(strstr(cv, "\"alias\"") == NULL);
    reset();
    nt_messages_history(&ctx, &CFA, chat, "", &R);
    CHECK_EQ_INT(BINT("messages.0.sender_id"), mo);
    CHECK(BSTR("messages.0.sender_alias") == NULL);
    CHECK_EQ_INT(post(&CFA, chat, "I am fa"), 201);
    CHECK_EQ_INT(BINT("sender_id"), fa);
    reset();
    nt_chats_typing(&ctx, &CFA, chat, &R);
    CHECK_EQ_INT(jint_in(frame_for(mo, "typing"), "user_id"), fa);
    /* A third reveal changes nothing. */
    frames_clear();
    reset();
    nt_match_reveal(&ctx, &CFA, chat, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes, 0);
    return chat;
}

static void test_leave(int64_t chat)
{
    frames_clear();
    reset();
    nt_chats_remove_member(&ctx, &CFA, chat, fa, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(nframes_for(mo, "chat_closed"), 1);
    CHECK_EQ_INT(nframes_for(fa, "chat_closed"), 1);
    CHECK_EQ_INT(jint_in(frame_for(mo, "chat_closed"), "chat_id"), chat);
    CHECK_EQ_INT(post(&CMO, chat, "anyone?"), 403);
    CHECK_STR_EQ(R.code, "forbidden");
    CHECK_EQ_INT(post(&CFA, chat, "bye"), 403);

    /* Reveal is for random chats only. */
    char js[96];
    snprintf(js, sizeof js, "{\"type\":\"direct\",\"user_id\":%" PRId64 "}", fa);
    reset();
    nt_chats_create(&ctx, &CMO, js, strlen(js), &R);
    int64_t direct = BINT("id");
    reset();
    nt_match_reveal(&ctx, &CMO, direct, &R);
    CHECK_400("chat_id");
}

static void test_queue_service(void)
{
    /* "Next": leave, then match again; mo is waiting-free after the pair. */
    frames_clear();
    reset();
    nt_match_leave(&ctx, &CXM, &R); /* xm (a man wanting men) would take pm */
    join(&CMO);
    CHECK_EQ_INT(R.status, 202);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_leave(&ctx, &CMO, &R);
    CHECK_EQ_INT(R.status, 204);
    reset();
    nt_match_leave(&ctx, &CMO, &R);
    CHECK_EQ_INT(R.status, 204);
    join(&CFA); /* fa wants men 20..30; mo left, xm is 40: waits */
    CHECK_EQ_INT(R.status, 202);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    nt_match_disconnect(&ctx, fa);
    join(&CMO);
    CHECK_STR_EQ(BSTR("status"), "waiting"); /* fa is gone */
    CHECK_EQ_INT(nframes_for(mo, "matched"), 0);
    reset();
    nt_match_leave(&ctx, &CMO, &R);

    /* Blocks: pm blocked qf before queueing; they are never paired. */
    reset();
    nt_blocks_add(&ctx, &CPM, qf, &R);
    CHECK_EQ_INT(R.status, 204);
    join(&CPM);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    join(&CQF);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    CHECK_EQ_INT(nframes_for(pm, "matched") + nframes_for(qf, "matched"), 0);
    reset();
    nt_match_leave(&ctx, &CQF, &R);
    reset();
    nt_blocks_remove(&ctx, &CPM, qf, &R);
    /* Unblocked, but pm still waits with the old block: qf queues again and
     * is kept apart until pm queues anew (the safe side). */
    join(&CQF);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_leave(&ctx, &CPM, &R);
    /* A block made while one waits. */
    reset();
    nt_blocks_add(&ctx, &CPM, qf, &R);
    join(&CPM);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_leave(&ctx, &CPM, &R);
    reset();
    nt_blocks_remove(&ctx, &CPM, qf, &R);
    reset();
    nt_match_leave(&ctx, &CQF, &R);
    join(&CQF); /* queued anew: the lifted block is forgotten */
    CHECK_STR_EQ(BSTR("status"), "waiting");
    join(&CPM);
    CHECK_STR_EQ(BSTR("status"), "matched");
    int64_t chat = BINT("chat_id");
    CHECK_EQ_INT(post(&CPM, chat, "hi"), 201);
    /* A block inside the random chat: the blocked one cannot write. */
    reset();
    nt_blocks_add(&ctx, &CQF, pm, &R);
    CHECK_EQ_INT(R.status, 204);
    CHECK_EQ_INT(post(&CPM, chat, "hello?"), 403);
    CHECK_EQ_INT(post(&CQF, chat, "bye"), 201);
}

/* Runs the loop until user has a frame of type, or about 5 s passed (a
 * bound on waiting for the store's writer thread, not a timing check). */
static bool wait_frame(int64_t user, const char *type, int count)
{
    for (int i = 0; i < 5000; i++) {
        drain();
        if (nframes_for(user, type) >= count) return true;
        usleep(1000);
    }
    return false;
}

/* A second connection to the service's SQLite file with a trigger on it
 * that refuses random chats (DROP TRIGGER test_no_random ends it), and with
 * `lock`, SQLite's write lock held until COMMIT; NULL after a failed check. */
static sqlite3 *refuse_random_chats(bool lock)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(sf_db_path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db,
                          "CREATE TRIGGER test_no_random BEFORE INSERT ON chats "
                          "WHEN NEW.type = 'random' BEGIN SELECT RAISE(ABORT, 'no'); END",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK && lock) rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    CHECK_EQ_INT(rc, SQLITE_OK);
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* nt_match_join_async (the WebSocket `match`): the pair is announced once
 * its chat is stored; when it cannot be (a trigger refuses random chats
 * for a while), both wait in the queue again, as `match_queued` told the
 * arrival, and the next pairing of them works. */
static void test_join_async(void)
{
    int64_t am = make_user("am", "male", born(60)), af = make_user("af", "female", born(61));
    nt_caller CAM = {.user_id = am}, CAF = {.user_id = af};
    nt_bus_conn_up(ctx.bus, am);
    nt_bus_conn_up(ctx.bus, af);
    prefs(&CAM, "{\"genders\":[\"female\"],\"age_min\":55,\"age_max\":65}");
    prefs(&CAF, "{\"genders\":[\"male\"],\"age_min\":55,\"age_max\":65}");
    frames_clear();

    join(&CAM);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_join_async(&ctx, &CAF, &R);
    CHECK_EQ_INT(R.status, 202);
    CHECK_STR_EQ(BSTR("status"), "matched");
    CHECK(wait_frame(am, "matched", 1) && wait_frame(af, "matched", 1));
    int64_t chat = jint_in(frame_for(af, "matched"), "chat.id");
    CHECK(chat > 0 && chat == jint_in(frame_for(am, "matched"), "chat.id"));
    reset();
    nt_chats_get(&ctx, &CAM, chat, &R);
    CHECK_EQ_INT(R.status, 200);

    sqlite3 *db = refuse_random_chats(false);
    if (!db) return;
    join(&CAM);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_join_async(&ctx, &CAF, &R);
    CHECK_EQ_INT(R.status, 202);
    /* Once the store has refused it (no pair waits for its chat any more),
     * af waits again: a join answers 200 ("already waiting"), as does am's.
     * No `matched`, no error event. */
    for (int i = 0; i < 5000 && nt_match_storing(&ctx) > 0; i++)
        usleep(1000);
    CHECK_EQ_INT(nt_match_storing(&ctx), 0);
    join(&CAF);
    CHECK_EQ_INT(R.status, 200);
    join(&CAM);
    CHECK_EQ_INT(R.status, 200);
    drain();
    CHECK_EQ_INT(nframes_for(am, "matched"), 1); /* only the first pair */
    CHECK_EQ_INT(nframes_for(af, "matched"), 1);
    CHECK_EQ_INT(nframes_for(af, "error"), 0);
    CHECK(sqlite3_exec(db, "DROP TRIGGER test_no_random", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    /* af leaves and asks again: am waited all along and is its partner. */
    reset();
    nt_match_leave(&ctx, &CAF, &R);
    reset();
    nt_match_join_async(&ctx, &CAF, &R);
    CHECK_STR_EQ(BSTR("status"), "matched");
    CHECK(wait_frame(am, "matched", 2) && wait_frame(af, "matched", 2));

    /* A user that leaves while its pair is being stored stays out of the
     * queue when the store refuses the pair; its partner goes back. The
     * test holds SQLite's write lock so that the pair waits while am
     * leaves, then lets the trigger refuse it. */
    db = refuse_random_chats(true);
    if (!db) return;
    join(&CAM);
    CHECK_STR_EQ(BSTR("status"), "waiting");
    reset();
    nt_match_join_async(&ctx, &CAF, &R);
    CHECK_STR_EQ(BSTR("status"), "matched");
    CHECK_EQ_INT(nt_match_storing(&ctx), 1);
    nt_match_disconnect(&ctx, am);
    CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    for (int i = 0; i < 10000 && nt_match_storing(&ctx) > 0; i++)
        usleep(1000);
    CHECK_EQ_INT(nt_match_storing(&ctx), 0);
    join(&CAF);
    CHECK_EQ_INT(R.status, 200); /* af waits again */
    CHECK(sqlite3_exec(db, "DROP TRIGGER test_no_random", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    /* am did not: its join is an arrival, and af its partner. */
    reset();
    nt_match_join_async(&ctx, &CAM, &R);
    CHECK_STR_EQ(BSTR("status"), "matched");
    CHECK(wait_frame(am, "matched", 3) && wait_frame(af, "matched", 3));
    frames_clear();
}

int main(void)
{
    test_queue_rules();
    test_queue_big();
    test_queue_ranking();
    test_requeue_place();
    test_queue_holds();

    int rc = open_ctx("test_match");
    if (rc != 0) return rc;
    mo = make_user("mo", "male", born(25));
    fa = make_user("fa", "female", born(30));
    xm = make_user("xm", "male", born(40));
    nog = make_user("nog", NULL, born(30));
    nob = make_user("nob", "other", NULL);
    kid = make_user("kid", "female", born(12));
    pm = make_user("pm", "male", born(33));
    qf = make_user("qf", "female", born(33));
    CMO.user_id = mo;
    CFA.user_id = fa;
    CXM.user_id = xm;
    CNOG.user_id = nog;
    CNOB.user_id = nob;
    CKID.user_id = kid;
    CPM.user_id = pm;
    CQF.user_id = qf;
    int64_t all[] = {mo, fa, xm, nog, nob, kid, pm, qf};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        nt_bus_conn_up(ctx.bus, all[i]);

    test_prefs();
    test_join_bad();
    int64_t chat = test_pair();
    test_leave(chat);
    test_queue_service();
    if (!getenv("NT_TEST_STORE")) test_join_async(); /* the trigger is SQLite's */

    close_ctx();
    return check_exit();
}
