/*
 * Unit tests for src/common/rate_limit.h: a bucket's burst, refill (capped
 * at the burst), retry_after, give_back, rate 0 as no limit, and the keyed
 * table's independence of keys and eviction of the stalest bucket. Every
 * time is an explicit nanosecond value, never the clock.
 */
#include <stdint.h>

#include "check.h"
#include "common/rate_limit.h"

#define S 1000000000ull /* one second in ns */
#define MS 1000000ull

static void test_burst_and_refill(void)
{
    nt_bucket b;
    uint32_t retry = 0;
    nt_bucket_init(&b, 3, 10 * S);
    for (int i = 0; i < 3; i++)
        CHECK(nt_bucket_take(&b, 2, 3, 10 * S, &retry));
    CHECK(!nt_bucket_take(&b, 2, 3, 10 * S, &retry));
    CHECK_EQ_INT(retry, 500); /* 2 a second: one token in 500 ms */
    /* 250 ms later half a token is there: 250 ms to go. */
    CHECK(!nt_bucket_take(&b, 2, 3, 10 * S + 250 * MS, &retry));
    CHECK_EQ_INT(retry, 250);
    CHECK(nt_bucket_take(&b, 2, 3, 10 * S + 500 * MS, &retry));
    CHECK(!nt_bucket_take(&b, 2, 3, 10 * S + 500 * MS, NULL)); /* NULL retry is fine */

    /* A long pause refills to the burst, not beyond it. */
    uint64_t later = 1000 * S;
    for (int i = 0; i < 3; i++)
        CHECK(nt_bucket_take(&b, 2, 3, later, &retry));
    CHECK(!nt_bucket_take(&b, 2, 3, later, &retry));
}

static void test_retry_after_rounding(void)
{
    nt_bucket b;
    uint32_t retry = 0;
    /* 10 a minute: one token every 6 s. */
    double rate = 10.0 / 60.0;
    nt_bucket_init(&b, 10, 0);
    for (int i = 0; i < 10; i++)
        CHECK(nt_bucket_take(&b, rate, 10, 0, &retry));
    CHECK(!nt_bucket_take(&b, rate, 10, 0, &retry));
    CHECK_EQ_INT(retry, 6000);
    /* Nearly a whole token: still at least 1 ms. */
    CHECK(!nt_bucket_take(&b, rate, 10, 6 * S - MS / 2, &retry));
    CHECK_EQ_INT(retry, 1);
    CHECK(nt_bucket_take(&b, rate, 10, 6 * S, &retry));
    /* A huge wait at a tiny rate is clamped, not wrapped. */
    nt_bucket_init(&b, 1, 0);
    CHECK(nt_bucket_take(&b, 1e-9, 1, 0, &retry));
    CHECK(!nt_bucket_take(&b, 1e-9, 1, 0, &retry));
    CHECK_EQ_INT(retry, UINT32_MAX);
}

static void test_unlimited_and_clock(void)
{
    nt_bucket b;
    uint32_t retry = 7;
    nt_bucket_init(&b, 1, 5 * S);
    for (int i = 0; i < 1000; i++)
        CHECK(nt_bucket_take(&b, 0, 1, 5 * S, &retry));
    CHECK(b.tokens == 1 && b.last_ns == 5 * S); /* untouched */
    CHECK_EQ_INT(retry, 7);
    /* A time before the last one counts as no time passed. */
    CHECK(nt_bucket_take(&b, 1, 1, 5 * S, &retry));
    CHECK(!nt_bucket_take(&b, 1, 1, 1 * S, &retry));
    CHECK_EQ_INT(retry, 1000);
    CHECK(b.last_ns == 5 * S);
    /* give_back puts a token back, capped at the burst. */
    nt_bucket_give_back(&b, 1);
    nt_bucket_give_back(&b, 1);
    CHECK(b.tokens == 1);
    CHECK(nt_bucket_take(&b, 1, 1, 5 * S, &retry));
    CHECK(!nt_bucket_take(&b, 1, 1, 5 * S, &retry));
}

static void test_table_keys(void)
{
    int err = 1;
    CHECK(nt_rate_table_new(64, 0, 10, &err) == NULL); /* rate 0: no table, no error */
    CHECK_EQ_INT(err, 0);
    for (int i = 0; i < 100; i++)
        CHECK(nt_rate_table_take(NULL, 42, 0, NULL));
    nt_rate_table_give_back(NULL, 42);

    nt_rate_table *t = nt_rate_table_new(1000, 1, 2, &err);
    CHECK(t != NULL);
    CHECK_EQ_INT(err, 0);
    if (!t) return;
    uint32_t retry = 0;
    /* Each key has its own bucket, new ones start full; key 0 is a key. */
    for (uint64_t key = 0; key < 50; key++) {
        CHECK(nt_rate_table_take(t, key, S, &retry));
        CHECK(nt_rate_table_take(t, key, S, &retry));
        CHECK(!nt_rate_table_take(t, key, S, &retry));
        CHECK_EQ_INT(retry, 1000);
    }
    CHECK(nt_rate_table_take(t, 7, 2 * S, &retry)); /* refilled one */
    CHECK(!nt_rate_table_take(t, 7, 2 * S, &retry));
    /* give_back undoes a take; for a key never seen it does nothing. */
    nt_rate_table_give_back(t, 7);
    CHECK(nt_rate_table_take(t, 7, 2 * S, &retry));
    CHECK(!nt_rate_table_take(t, 7, 2 * S, &retry));
    nt_rate_table_give_back(t, 999999);
    /* Many more keys than slots: no failure, every new key allowed. */
    for (uint64_t key = 1000; key < 20000; key++)
        CHECK(nt_rate_table_take(t, key, 3 * S + key, &retry));
    nt_rate_table_free(t);
    nt_rate_table_free(NULL);
}

/* A table of 8 slots: every key's probe window is the whole table, so the
 * ninth key must evict, and it must be the bucket touched longest ago. */
static void test_table_eviction(void)
{
    int err;
    double rate = 1e-3; /* one token per 1000 s: nothing refills here */
    nt_rate_table *t = nt_rate_table_new(8, rate, 1, &err);
    CHECK(t != NULL);
    if (!t) return;
    uint32_t retry;
    for (uint64_t key = 1; key <= 8; key++) {
        CHECK(nt_rate_table_take(t, key, key * S, &retry));
        CHECK(!nt_rate_table_take(t, key, key * S, &retry));
    }
    CHECK(nt_rate_table_take(t, 9, 9 * S, &retry)); /* evicts key 1 (t = 1 s) */
    CHECK(!nt_rate_table_take(t, 8, 10 * S, &retry));
    CHECK(!nt_rate_table_take(t, 9, 10 * S, &retry));
    /* Key 1 was forgotten: it starts full again, evicting key 2 (t = 2 s). */
    CHECK(nt_rate_table_take(t, 1, 11 * S, &retry));
    CHECK(!nt_rate_table_take(t, 1, 11 * S, &retry));
    CHECK(nt_rate_table_take(t, 2, 12 * S, &retry)); /* evicts key 3 */
    CHECK(nt_rate_table_take(t, 3, 13 * S, &retry)); /* evicts key 4 */
    /* Keys touched since stayed: 5..8 are still empty. */
    for (uint64_t key = 5; key <= 8; key++)
        CHECK(!nt_rate_table_take(t, key, 14 * S, &retry));
    nt_rate_table_free(t);
}

int main(void)
{
    test_burst_and_refill();
    test_retry_after_rounding();
    test_unlimited_and_clock();
    test_table_keys();
    test_table_eviction();
    return check_exit();
}
