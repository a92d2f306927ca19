/*
 * libFuzzer target for the JSON reader and writer (src/common/json.h).
 *
 * Parses the input; when it parses, walks every token and checks the
 * reader's promises against each other: subtree ends nest, iteration with
 * first/next visits exactly `count` children, decoded strings are valid UTF-8
 * without NUL, nt_json_str_eq and nt_json_get agree with nt_json_str, and a
 * string re-encoded by the writer parses back to the same text. Any broken
 * promise aborts, which libFuzzer reports as a crash.
 *
 * clang -g -fsanitize=fuzzer,address,undefined -Isrc -D_GNU_SOURCE \
 *     tests/fuzz/fuzz_json.c src/common/json.c src/common/utf8.c src/common/buf.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_TOKS 512

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Re-encodes a decoded string and checks it parses back to the same bytes. */
static void check_reencode(const char *text, size_t len)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &b);
    nt_jw_arr(&w);
    nt_jw_strn(&w, text, len);
    nt_jw_arr_end(&w);
    REQUIRE(nt_jw_error(&w) == 0);

    nt_json_tok toks[2];
    nt_json doc;
    REQUIRE(nt_json_parse(&doc, b.data, b.len, toks, 2) == 0);
    REQUIRE(nt_json_type_of(&doc, 1) == NT_JSON_STRING);
    char *back = malloc(len + 1);
    REQUIRE(back != NULL);
    REQUIRE(nt_json_str(&doc, 1, back, len + 1) == (int)len);
    REQUIRE(memcmp(back, text, len) == 0);
    free(back);
    nt_buf_free(&b);
}

static void check_token(const nt_json *doc, int i, char *scratch, size_t scratch_cap)
{
    const nt_json_tok *t = &doc->toks[i];
    REQUIRE(t->type >= NT_JSON_OBJECT && t->type <= NT_JSON_NULL);
    REQUIRE((int)t->end > i && (int)t->end <= doc->ntoks);
    REQUIRE((size_t)t->start + t->len <= doc->src_len);

    int64_t v;
    int rc = nt_json_int(doc, i, &v);
    if (t->type != NT_JSON_NUMBER) REQUIRE(rc < 0);
    if (rc == 0) {
        /* The writer must print the same integer back (modulo "-0"). */
        nt_buf b = NT_BUF_INIT;
        nt_jw w;
        nt_jw_init(&w, &b);
        nt_jw_int(&w, v);
        REQUIRE(nt_jw_error(&w) == 0);
        bool minus_zero = t->len == 2 && memcmp(doc->src + t->start, "-0", 2) == 0;
        if (!minus_zero)
            REQUIRE(b.len == t->len && memcmp(b.data, doc->src + t->start, b.len) == 0);
        nt_buf_free(&b);
    }

    int len = nt_json_str(doc, i, scratch, scratch_cap);
    if (t->type != NT_JSON_STRING) {
        REQUIRE(len == -1);
        REQUIRE(!nt_json_str_eq(doc, i, ""));
    } else {
        /* Unescaping never lengthens, so the scratch always fits. */
        REQUIRE(len >= 0 || len == -3);
        if (len >= 0) {
            REQUIRE((size_t)len <= t->len);
            REQUIRE(scratch[len] == '\0');
            REQUIRE(strlen(scratch) == (size_t)len);
            REQUIRE(nt_utf8_valid(scratch, (size_t)len));
            REQUIRE(nt_json_str_eq(doc, i, scratch));
            check_reencode(scratch, (size_t)len);
            /* A buffer one byte short must be refused, not overrun. */
            if (len > 0) REQUIRE(nt_json_str(doc, i, scratch, (size_t)len) == -2);
        }
    }

    if (t->type == NT_JSON_OBJECT || t->type == NT_JSON_ARRAY) {
        uint32_t n = 0;
        for (int c = nt_json_first(doc, i); c >= 0; c = nt_json_next(doc, c)) {
            REQUIRE(c > i && c < (int)t->end);
            n++;
            REQUIRE(n <= t->count);
            if (t->type == NT_JSON_OBJECT) {
                REQUIRE(nt_json_type_of(doc, c) == NT_JSON_STRING);
                int klen = nt_json_str(doc, c, scratch, scratch_cap);
                if (klen >= 0) {
                    /* The last key with this text wins; it is at or after c. */
                    int found = nt_json_get(doc, i, scratch);
                    REQUIRE(found > c && found < (int)t->end);
                    REQUIRE(nt_json_str_eq(doc, found - 1, scratch));
                }
            }
        }
        REQUIRE(n == t->count);
    } else {
        REQUIRE(nt_json_first(doc, i) == -1);
        REQUIRE(nt_json_get(doc, i, "") == -1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static nt_json_tok toks[FUZZ_TOKS];
    nt_json doc;
    int rc = nt_json_parse(&doc, (const char *)data, size, toks, FUZZ_TOKS);
    REQUIRE(rc == 0 || rc == NT_JSON_ERR_SYNTAX || rc == NT_JSON_ERR_TOKENS ||
            rc == NT_JSON_ERR_DEPTH);
    if (rc != 0) {
        REQUIRE(doc.ntoks == 0);
        return 0;
    }
    REQUIRE(doc.ntoks > 0 && (int)doc.toks[0].end == doc.ntoks);
    /* Whatever parses is text: the whole input is valid UTF-8. */
    REQUIRE(nt_utf8_valid((const char *)data, size));

    char *scratch = malloc(size + 1);
    REQUIRE(scratch != NULL);
    for (int i = 0; i < doc.ntoks; i++)
        check_token(&doc, i, scratch, size + 1);
    REQUIRE(nt_json_next(&doc, 0) == -1);
    free(scratch);
    return 0;
}
