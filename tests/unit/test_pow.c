/*
 * Unit tests of the proof-of-work search (src/services/pow.c). Every proof
 * the search returns is checked against OpenSSL's one-shot SHA256() of
 * prefix || decimal nonce, so the midstate and hand-padding tricks are
 * tested against the plain definition: bits 0..20, prefixes whose length
 * sits on each side of the 55/56/64-byte block boundaries, the nonce digit
 * count growing mid-search, strided and multi-threaded searches, and the
 * stop flag and deadline.
 */
#include "services/pow.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#include "unit/check.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The definition, with nothing clever: SHA256(prefix || "%llu"). */
static void reference_hash(const char *prefix, size_t len, uint64_t nonce, uint8_t out[32])
{
    char *msg = malloc(len + 24);
    memcpy(msg, prefix, len);
    int n = snprintf(msg + len, 24, "%" PRIu64, nonce);
    SHA256((const unsigned char *)msg, len + (size_t)n, out);
    free(msg);
}

static int leading_zero_bits(const uint8_t d[32])
{
    int bits = 0;
    for (int i = 0; i < 32; i++) {
        if (d[i] == 0) {
            bits += 8;
            continue;
        }
        for (int b = 7; b >= 0 && !(d[i] >> b & 1); b--)
            bits++;
        break;
    }
    return bits;
}

/* A proof must hash right, have the zeros, and be the smallest nonce for a
 * single-threaded search from 0 (checked for small bits only). */
static void check_proof(const char *prefix, size_t len, int bits, const nt_pow_result *r,
                        bool smallest)
{
    uint8_t want[32];
    reference_hash(prefix, len, r->nonce, want);
    CHECK(memcmp(want, r->hash, 32) == 0);
    CHECK(leading_zero_bits(r->hash) >= bits);
    CHECK(nt_pow_check(r->hash, bits));
    if (smallest && bits <= 12) {
        for (uint64_t n = 0; n < r->nonce; n++) {
            uint8_t d[32];
            reference_hash(prefix, len, n, d);
            if (leading_zero_bits(d) >= bits) {
                fprintf(stderr, "nonce %" PRIu64 " < %" PRIu64 " also works (len %zu bits %d)\n", n,
                        r->nonce, len, bits);
                CHECK(0);
                break;
            }
        }
    }
}

static void test_check_and_hex(void)
{
    uint8_t d[32] = {0};
    CHECK(nt_pow_check(d, 0));
    CHECK(nt_pow_check(d, 64));
    d[0] = 0x01; /* 7 zero bits */
    CHECK(nt_pow_check(d, 7));
    CHECK(!nt_pow_check(d, 8));
    d[0] = 0;
    d[2] = 0x10; /* 19 zero bits */
    CHECK(nt_pow_check(d, 19));
    CHECK(!nt_pow_check(d, 20));
    d[2] = 0x80;
    CHECK(nt_pow_check(d, 16));
    CHECK(!nt_pow_check(d, 17));

    uint8_t h[32];
    char hex[65];
    nt_pow_hash("abc", 3, 42, h); /* SHA-256("abc42") */
    uint8_t want[32];
    SHA256((const unsigned char *)"abc42", 5, want);
    CHECK(memcmp(h, want, 32) == 0);
    nt_pow_hex(want, hex);
    CHECK_EQ_INT(strlen(hex), 64);
    SHA256((const unsigned char *)"abc", 3, want);
    nt_pow_hex(want, hex);
    CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_bits_and_lengths(void)
{
    static const size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 200};
    char prefix[256];
    for (size_t i = 0; i < sizeof prefix; i++)
        prefix[i] = (char)('a' + i % 26);
    prefix[10] = (char)0xd0; /* bytes, not text: any value must work */
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (int bits = 0; bits <= 20; bits++) {
            nt_pow_result r;
            int rc = nt_pow_search(prefix, lens[li], bits, 0, 1, NULL, 0, &r);
            CHECK_EQ_INT(rc, 1);
            if (rc != 1) continue;
            check_proof(prefix, lens[li], bits, &r, true);
            CHECK(r.hashes == r.nonce + 1);
        }
    }
}

/* Starting at 99990 crosses 5 -> 6 digits (and, with a 54-byte prefix, one
 * block -> two blocks of padded tail) inside the search. */
static void test_digit_growth(void)
{
    char prefix[54];
    memset(prefix, 'x', sizeof prefix);
    for (uint64_t start = 99990; start < 99995; start++) {
        nt_pow_result r;
        CHECK_EQ_INT(nt_pow_search(prefix, sizeof prefix, 10, start, 1, NULL, 0, &r), 1);
        CHECK(r.nonce >= start);
        check_proof(prefix, sizeof prefix, 10, &r, false);
        for (uint64_t n = start; n < r.nonce; n++) {
            uint8_t d[32];
            reference_hash(prefix, sizeof prefix, n, d);
            CHECK(leading_zero_bits(d) < 10);
        }
    }
    /* Near the top of the nonce space: 20 digits, then it runs out. */
    nt_pow_result r;
    uint64_t start = UINT64_MAX - 5;
    int rc = nt_pow_search("p", 1, 0, start, 1, NULL, 0, &r);
    CHECK_EQ_INT(rc, 1);
    CHECK(r.nonce == start);
    check_proof("p", 1, 0, &r, false);
    rc = nt_pow_search("p", 1, 64, start, 1, NULL, 0, &r);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.hashes, 6);
}

static void test_stride(void)
{
    const char *p = "stride test";
    for (uint64_t stride = 2; stride <= 7; stride++) {
        for (uint64_t start = 0; start < 3; start++) {
            nt_pow_result r;
            CHECK_EQ_INT(nt_pow_search(p, strlen(p), 12, start, stride, NULL, 0, &r), 1);
            CHECK_EQ_INT(r.nonce % stride, start % stride);
            CHECK(r.nonce >= start);
            check_proof(p, strlen(p), 12, &r, false);
        }
    }
    nt_pow_result r;
    CHECK_EQ_INT(nt_pow_search(p, strlen(p), 12, 0, 0, NULL, 0, &r), -EINVAL);
    CHECK_EQ_INT(nt_pow_search(p, strlen(p), 65, 0, 1, NULL, 0, &r), -EINVAL);
    CHECK_EQ_INT(nt_pow_search(p, strlen(p), -1, 0, 1, NULL, 0, &r), -EINVAL);
    CHECK_EQ_INT(nt_pow_solve(NULL, 3, 12, 1, NULL, 0, &r), -EINVAL);
}

static void test_solve_threads(void)
{
    const char *p = "Привет, мир! 🌍";
    for (int threads = 1; threads <= 4; threads++) {
        for (int bits = 14; bits <= 18; bits += 2) {
            nt_pow_result r;
            CHECK_EQ_INT(nt_pow_solve(p, strlen(p), bits, threads, NULL, 0, &r), 1);
            check_proof(p, strlen(p), bits, &r, false);
            CHECK(r.hashes >= 1);
        }
    }
    nt_pow_result r;
    CHECK_EQ_INT(nt_pow_solve(p, strlen(p), 16, 0, NULL, 0, &r), 1); /* 0 = online CPUs */
    check_proof(p, strlen(p), 16, &r, false);
}

static void test_stop_and_deadline(void)
{
    nt_pow_result r;
    atomic_int stop;
    atomic_init(&stop, 1);
    /* 64 bits: never found; a set flag stops it after one round of tries. */
    CHECK_EQ_INT(nt_pow_search("x", 1, 64, 0, 1, &stop, 0, &r), 0);
    CHECK(r.hashes > 0 && r.hashes < 100000);
    CHECK_EQ_INT(nt_pow_solve("x", 1, 64, 3, &stop, 0, &r), 0);

    uint64_t t0 = mono_ns();
    CHECK_EQ_INT(nt_pow_search("x", 1, 64, 0, 1, NULL, t0 + 50000000u, &r), 0);
    uint64_t took = mono_ns() - t0;
    CHECK(took >= 50000000u && took < 1000000000u);

    t0 = mono_ns();
    CHECK_EQ_INT(nt_pow_solve("x", 1, 64, 2, NULL, t0 + 50000000u, &r), 0);
    took = mono_ns() - t0;
    CHECK(took >= 50000000u && took < 1000000000u);
}

int main(void)
{
    test_check_and_hex();
    test_bits_and_lengths();
    test_digit_growth();
    test_stride();
    test_solve_threads();
    test_stop_and_deadline();
    return check_exit();
}
