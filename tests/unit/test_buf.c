/*
 * Unit tests for src/common/buf.h (growable buffers and shared blocks) and
 * src/common/utf8.h (RFC 3629 validation: overlongs, surrogates, code points
 * above U+10FFFF, truncated sequences, the eight-byte ASCII fast path).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/buf.h"
#include "common/utf8.h"

/* The huge-reservation checks below must see realloc fail, not have ASan
 * abort the test for asking. Harmless when built without ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static void test_buf_basics(void)
{
    nt_buf b = NT_BUF_INIT;
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    CHECK_STR_EQ(nt_buf_cstr(&b), "");
    CHECK_EQ_INT(b.len, 0);

    CHECK_EQ_INT(nt_buf_append(&b, "abc", 3), 0);
    CHECK_EQ_INT(nt_buf_append(&b, NULL, 0), 0);
    CHECK_EQ_INT(nt_buf_append_str(&b, "def"), 0);
    CHECK_EQ_INT(b.len, 6);
    CHECK_STR_EQ(nt_buf_cstr(&b), "abcdef");
    CHECK_EQ_INT(b.len, 6); /* the NUL is not counted */

    CHECK_EQ_INT(nt_buf_appendf(&b, "-%d-%s", 42, "x"), 0);
    CHECK_STR_EQ(nt_buf_cstr(&b), "abcdef-42-x");

    /* A formatted append larger than the stack buffer inside appendf */
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_EQ_INT(nt_buf_appendf(&b, "[%s]", big), 0);
    CHECK_EQ_INT(b.len, 11 + 1 + 999 + 1);
    CHECK(b.data[11] == '[' && b.data[12] == 'z' && b.data[b.len - 1] == ']');
    CHECK(b.data[b.len - 2] == 'z');
    CHECK_EQ_INT(strlen(nt_buf_cstr(&b)), b.len);

    /* consume: part, exactly all, more than all */
    nt_buf_reset(&b);
    nt_buf_append_str(&b, "hello world");
    nt_buf_consume(&b, 6);
    CHECK_STR_EQ(nt_buf_cstr(&b), "world");
    nt_buf_consume(&b, 0);
    CHECK_STR_EQ(nt_buf_cstr(&b), "world");
    nt_buf_consume(&b, 5);
    CHECK_EQ_INT(b.len, 0);
    nt_buf_append_str(&b, "ab");
    nt_buf_consume(&b, 100);
    CHECK_EQ_INT(b.len, 0);

    /* reset keeps the memory; free gives it back and leaves it reusable */
    nt_buf_append_str(&b, "x");
    size_t cap = b.cap;
    nt_buf_reset(&b);
    CHECK_EQ_INT(b.cap, cap);
    CHECK(b.data != NULL);
    nt_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    CHECK_EQ_INT(nt_buf_append_str(&b, "again"), 0);
    CHECK_STR_EQ(nt_buf_cstr(&b), "again");
    nt_buf_free(&b);
    nt_buf_free(&b); /* twice is fine */
}

static void test_buf_growth(void)
{
    nt_buf b = NT_BUF_INIT;
    /* Grow byte by byte across several doublings; content must survive. */
    for (int i = 0; i < 10000; i++) {
        char c = (char)('a' + i % 26);
        CHECK_EQ_INT(nt_buf_append(&b, &c, 1), 0);
    }
    CHECK_EQ_INT(b.len, 10000);
    CHECK(b.cap > b.len);
    int ok = 1;
    for (int i = 0; i < 10000; i++)
        ok &= b.data[i] == (char)('a' + i % 26);
    CHECK(ok);

    /* reserve guarantees room for extra plus the NUL of cstr */
    nt_buf_reset(&b);
    CHECK_EQ_INT(nt_buf_reserve(&b, b.cap - 1), 0);
    size_t cap = b.cap;
    CHECK_EQ_INT(nt_buf_reserve(&b, cap - 1), 0);
    CHECK_EQ_INT(b.cap, cap); /* already enough: no realloc */
    CHECK_EQ_INT(nt_buf_reserve(&b, cap), 0);
    CHECK(b.cap >= cap + 1);
    nt_buf_free(&b);

    /* Exactly filling the buffer, then cstr, must not write out of bounds. */
    CHECK_EQ_INT(nt_buf_reserve(&b, 10), 0);
    size_t fill = b.cap - 1;
    char *junk = malloc(fill);
    CHECK(junk != NULL);
    if (junk) {
        memset(junk, 'q', fill);
        CHECK_EQ_INT(nt_buf_append(&b, junk, fill), 0);
        CHECK_EQ_INT(strlen(nt_buf_cstr(&b)), fill);
        free(junk);
    }
    nt_buf_free(&b);

    /* Sizes that cannot exist fail cleanly instead of wrapping or looping. */
    CHECK_EQ_INT(nt_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    nt_buf_append_str(&b, "0123456789");
    CHECK_EQ_INT(nt_buf_reserve(&b, SIZE_MAX - 10), -ENOMEM);
    CHECK_EQ_INT(nt_buf_reserve(&b, SIZE_MAX - 5), -ENOMEM);
    CHECK_EQ_INT(nt_buf_reserve(&b, SIZE_MAX / 2 + 10), -ENOMEM); /* doubling would wrap */
    CHECK_EQ_INT(nt_buf_append(&b, "x", SIZE_MAX), -ENOMEM);
    CHECK_STR_EQ(nt_buf_cstr(&b), "0123456789"); /* untouched */
    nt_buf_free(&b);
}

static void test_shared(void)
{
    nt_shared *s = nt_shared_new("frame", 5);
    CHECK(s != NULL);
    if (!s) return;
    CHECK_EQ_INT(s->refs, 1);
    CHECK_EQ_INT(s->len, 5);
    CHECK(memcmp(s->data, "frame", 5) == 0);
    CHECK(s->data[5] == '\0');
    CHECK(nt_shared_ref(s) == s);
    CHECK_EQ_INT(s->refs, 2);
    nt_shared_unref(s);
    CHECK_EQ_INT(s->refs, 1);
    nt_shared_unref(s); /* freed here; ASan would catch a leak or double free */
    nt_shared_unref(NULL);

    nt_shared *empty = nt_shared_new(NULL, 0);
    CHECK(empty != NULL);
    if (empty) {
        CHECK_EQ_INT(empty->len, 0);
        CHECK(empty->data[0] == '\0');
        nt_shared_unref(empty);
    }

    nt_shared *a = nt_shared_alloc(3);
    CHECK(a != NULL);
    if (a) {
        memcpy(a->data, "xyz", 3);
        CHECK_EQ_INT(a->len, 3);
        CHECK(a->data[3] == '\0');
        nt_shared_unref(a);
    }
    CHECK(nt_shared_alloc((size_t)UINT32_MAX + 1) == NULL);
}

/* Small blocks come back from the thread's cache: the size classes (a
 * block is reused only for a length of its class), every byte of a reused
 * block writable up to its class, the cache's bound, and blocks freed on
 * another thread (its cache is freed at its exit; ASan sees a leak or a
 * bad access otherwise). */
static void *shared_on_other_thread(void *arg)
{
    nt_shared **blocks = arg;
    for (int i = 0; i < 4; i++)
        nt_shared_unref(blocks[i]);
    nt_shared *mine = nt_shared_alloc(100);
    nt_shared_unref(mine);
    return NULL;
}

static void test_shared_cache(void)
{
    nt_shared *a = nt_shared_alloc(100);
    CHECK(a != NULL);
    if (!a) return;
    nt_shared_unref(a);
    nt_shared *b = nt_shared_alloc(120); /* same class (up to 127 bytes) */
    CHECK(b == a);
    CHECK_EQ_INT(b->refs, 1);
    CHECK_EQ_INT(b->len, 120);
    memset(b->data, 'x', 120);
    CHECK(b->data[120] == '\0');
    nt_shared *c = nt_shared_alloc(128); /* the next class */
    CHECK(c != NULL && c != a);
    if (c) memset(c->data, 'y', 128);
    nt_shared_unref(b);
    nt_shared_unref(c);

    /* Every length at the edges of the classes, the largest cached one
     * (1,023) and the first one not cached (1,024 needs 1,025 bytes with
     * its NUL) included, twice each so the second comes from the cache. */
    static const size_t edges[] = {0, 126, 127, 128, 255, 256, 511, 512, 1022, 1023, 1024, 1025};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
            nt_shared *e = nt_shared_alloc(edges[i]);
            CHECK(e != NULL);
            if (!e) continue;
            CHECK_EQ_INT(e->len, edges[i]);
            memset(e->data, 'e', edges[i]);
            CHECK(e->data[edges[i]] == '\0');
            nt_shared_unref(e);
        }
    }

    /* Past 1 KiB nothing is cached; far more than the bound is freed. */
    nt_shared *big[300];
    for (int i = 0; i < 300; i++) {
        big[i] = nt_shared_alloc(i % 2 ? 2000 : 900);
        CHECK(big[i] != NULL);
    }
    for (int i = 0; i < 300; i++)
        nt_shared_unref(big[i]);

    nt_shared *other[4];
    for (int i = 0; i < 4; i++)
        other[i] = nt_shared_new("moved", 5);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, shared_on_other_thread, other) == 0);
    pthread_join(t, NULL);
}

static void test_scratch(void)
{
    nt_buf *a = nt_buf_scratch_take();
    CHECK(a != NULL);
    if (!a) return;
    CHECK_EQ_INT(a->len, 0);
    CHECK_EQ_INT(nt_buf_append_str(a, "first"), 0);
    nt_buf *nested = nt_buf_scratch_take(); /* held: a fresh one */
    CHECK(nested != NULL && nested != a);
    if (nested) {
        CHECK_EQ_INT(nested->len, 0);
        CHECK_EQ_INT(nt_buf_append_str(nested, "second"), 0);
    }
    nt_buf_scratch_give(nested);
    CHECK(a->len == 5 && memcmp(a->data, "first", 5) == 0);
    nt_buf_scratch_give(a);
    nt_buf *again = nt_buf_scratch_take(); /* the same, emptied */
    CHECK(again == a);
    if (!again) return;
    CHECK_EQ_INT(again->len, 0);
    /* Grown past 64 KiB, its memory is given back. */
    CHECK_EQ_INT(nt_buf_reserve(again, 100 * 1024), 0);
    nt_buf_scratch_give(again);
    CHECK(a->data == NULL && a->cap == 0);
    nt_buf_scratch_give(NULL);
}

static bool valid(const char *s)
{
    return nt_utf8_valid(s, strlen(s));
}

static void test_utf8(void)
{
    /* valid */
    CHECK(nt_utf8_valid("", 0));
    CHECK(nt_utf8_valid(NULL, 0));
    CHECK(valid("plain ascii, longer than eight bytes"));
    CHECK(nt_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8; policy is elsewhere */
    CHECK(valid("\x7f"));
    CHECK(valid("\xc2\x80"));         /* U+0080, smallest 2-byte */
    CHECK(valid("\xdf\xbf"));         /* U+07FF */
    CHECK(valid("\xe0\xa0\x80"));     /* U+0800, smallest 3-byte */
    CHECK(valid("\xed\x9f\xbf"));     /* U+D7FF, just below the surrogates */
    CHECK(valid("\xee\x80\x80"));     /* U+E000, just above */
    CHECK(valid("\xef\xbf\xbf"));     /* U+FFFF */
    CHECK(valid("\xf0\x90\x80\x80")); /* U+10000, smallest 4-byte */
    CHECK(valid("\xf4\x8f\xbf\xbf")); /* U+10FFFF, the largest */
    CHECK(valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xd0\x9f\xd1\x80\xd0\xb8"));

    /* overlongs */
    CHECK(!valid("\xc0\x80"));
    CHECK(!valid("\xc0\xaf"));
    CHECK(!valid("\xc1\xbf"));
    CHECK(!valid("\xe0\x80\x80"));
    CHECK(!valid("\xe0\x9f\xbf"));
    CHECK(!valid("\xf0\x80\x80\x80"));
    CHECK(!valid("\xf0\x8f\xbf\xbf"));
    /* surrogates */
    CHECK(!valid("\xed\xa0\x80"));
    CHECK(!valid("\xed\xaf\xbf"));
    CHECK(!valid("\xed\xb0\x80"));
    CHECK(!valid("\xed\xbf\xbf"));
    CHECK(!valid("\xed\xa0\xbd\xed\xb8\x80")); /* CESU-8 pair */
    /* above U+10FFFF and impossible lead bytes */
    CHECK(!valid("\xf4\x90\x80\x80"));
    CHECK(!valid("\xf4\xbf\xbf\xbf"));
    CHECK(!valid("\xf5\x80\x80\x80"));
    CHECK(!valid("\xf7\xbf\xbf\xbf"));
    CHECK(!valid("\xf8\x88\x80\x80\x80"));
    CHECK(!valid("\xfc\x84\x80\x80\x80\x80"));
    CHECK(!valid("\xfe"));
    CHECK(!valid("\xff"));
    /* lone continuations */
    CHECK(!valid("\x80"));
    CHECK(!valid("\xbf"));
    CHECK(!valid("a\x80"));
    /* truncated sequences, at the end and before another character */
    CHECK(!valid("\xc3"));
    CHECK(!valid("\xe2\x82"));
    CHECK(!valid("\xe2"));
    CHECK(!valid("\xf0\x9f\x98"));
    CHECK(!valid("\xf0\x9f"));
    CHECK(!valid("\xf0"));
    CHECK(!valid("\xc3"
                 "a"));
    CHECK(!valid("\xe2\x82"
                 "a"));
    CHECK(!valid("\xf0\x9f\x98"
                 "a"));
    CHECK(!valid("\xe2"
                 "ab"));
    /* bad continuation in the 3rd and 4th position */
    CHECK(!valid("\xe2\x82\x2c"));
    CHECK(!valid("\xf0\x9f\x98\x20"));
    CHECK(!valid("\xf0\x9f\xc0\x80"));
    /* The length bounds the check: a sequence cut by len is invalid even if
     * the bytes after len would complete it. */
    CHECK(!nt_utf8_valid("\xc3\xa9", 1));
    CHECK(!nt_utf8_valid("\xf0\x9f\x98\x80", 3));
    CHECK(nt_utf8_valid("ab\xc3\xa9", 2));

    /* Errors at every offset around the 8-byte fast path. */
    char text[40];
    for (size_t at = 0; at < 32; at++) {
        memset(text, 'a', sizeof text);
        text[at] = (char)0x80;
        CHECK(!nt_utf8_valid(text, sizeof text));
        text[at] = (char)0xc3;
        text[at + 1] = (char)0xa9;
        CHECK(nt_utf8_valid(text, sizeof text));
        CHECK(!nt_utf8_valid(text, at + 1)); /* cut after the lead byte */
    }

    /* Every 2-byte lead/continuation combination against a reference. */
    int mismatches = 0;
    for (int lead = 0x80; lead <= 0xff; lead++) {
        for (int cont = 0; cont <= 0xff; cont++) {
            char two[2] = {(char)lead, (char)cont};
            bool want = lead >= 0xc2 && lead <= 0xdf && cont >= 0x80 && cont <= 0xbf;
            mismatches += nt_utf8_valid(two, 2) != want;
        }
    }
    CHECK_EQ_INT(mismatches, 0);

    /* counting code points */
    CHECK_EQ_INT(nt_utf8_count("", 0), 0);
    CHECK_EQ_INT(nt_utf8_count("abc", 3), 3);
    const char *mixed = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    CHECK_EQ_INT(nt_utf8_count(mixed, strlen(mixed)), 5);
}

int main(void)
{
    test_buf_basics();
    test_buf_growth();
    test_shared();
    test_shared_cache();
    test_scratch();
    test_utf8();
    return check_exit();
}
