/*
 * libFuzzer target for the HTTP request reader (src/net/http.h).
 *
 * The first input byte seeds the sizes of the pieces the rest is fed in, as
 * a socket would deliver it; requests are read one after another
 * (pipelining) with small caps. The same bytes are also fed all at once,
 * and both runs must see the same requests and end in an error or not
 * alike: the reader's answer may not depend on how the bytes were split. It also checks
 * each finished request against the caps and its own fields, and runs the
 * query lookup over every query. A broken promise aborts.
 *
 * clang -g -fsanitize=fuzzer,address,undefined -Isrc -D_GNU_SOURCE \
 *     tests/fuzz/fuzz_http.c src/net/http.c src/common/buf.c -lhttp_parser
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "net/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const nt_http_limits LIMITS = {512, 128, 256};

/* A running digest of everything a run saw, to compare two runs. */
static uint64_t mix(uint64_t h, const void *bytes, size_t len)
{
    const uint8_t *b = bytes;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    REQUIRE(s != NULL);
    return mix(h, s, strlen(s) + 1);
}

static uint64_t check_request(uint64_t h, nt_http_request *r)
{
    REQUIRE(r->body.len <= LIMITS.max_body);
    REQUIRE(strlen(r->target) <= LIMITS.max_url);
    REQUIRE(strlen(r->path) <= strlen(r->target) + 1);
    h = mix(h, &r->method, sizeof r->method);
    h = mix_str(h, r->target);
    h = mix_str(h, r->path);
    h = mix_str(h, r->query);
    h = mix_str(h, r->authorization);
    h = mix_str(h, r->content_type);
    h = mix_str(h, r->upgrade);
    h = mix_str(h, r->connection);
    h = mix_str(h, r->ws_key);
    h = mix_str(h, r->ws_version);
    h = mix_str(h, r->x_forwarded_for);
    h = mix(h, r->body.data ? r->body.data : "", r->body.len);
    uint8_t flags = (uint8_t)(r->keep_alive | r->is_upgrade << 1);
    h = mix(h, &flags, 1);

    char out[64];
    static const char *const names[] = {"q", "limit", "a", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int n = nt_http_query_get(r->query, names[i], out, sizeof out);
        REQUIRE(n >= -2 && n < (int)sizeof out);
        if (n >= 0) REQUIRE(out[n] == '\0');
    }
    return h;
}

/* Feeds everything; piece sizes come from `seed` (0: all at once). */
static uint64_t run(const char *data, size_t size, uint32_t seed)
{
    nt_http_parser *p = nt_http_parser_new(&LIMITS);
    REQUIRE(p != NULL);
    uint64_t h = 0xcbf29ce484222325ull;
    uint32_t rng = seed;
    size_t off = 0;
    int requests = 0;
    while (off < size) {
        size_t piece = size - off;
        if (seed) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            size_t want = 1 + rng % 24;
            if (piece > want) piece = want;
        }
        bool done = false;
        ssize_t n = nt_http_parser_feed(p, data + off, piece, &done);
        if (n < 0) {
            REQUIRE(n == -400 || n == -413 || n == -431);
            /* Only that it failed: with two faults in one input, which one
             * is reported first can depend on the split, because
             * http_parser hands over a partial header name or body piece
             * only at the end of a successful call. */
            h = mix(h, "E", 1);
            /* The error sticks. */
            REQUIRE(nt_http_parser_feed(p, data + off, piece, &done) == n && !done);
            break;
        }
        REQUIRE((size_t)n <= piece);
        off += (size_t)n;
        if (done) {
            h = check_request(h, nt_http_parser_request(p));
            h = mix(h, &off, sizeof off); /* where it ended */
            nt_http_parser_reset(p);
            if (++requests > 64) break;
            continue;
        }
        REQUIRE((size_t)n == piece);
    }
    nt_http_parser_free(p);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint32_t seed = (uint32_t)data[0] * 2654435761u | 1u;
    /* An exact-size copy so ASan sees any read past the end. */
    char *copy = malloc(size - 1 ? size - 1 : 1);
    if (!copy) return 0;
    memcpy(copy, data + 1, size - 1);
    uint64_t split = run(copy, size - 1, seed);
    uint64_t whole = run(copy, size - 1, 0);
    REQUIRE(split == whole);
    free(copy);
    return 0;
}
