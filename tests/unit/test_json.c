/*
 * Unit tests for the JSON reader and writer (src/common/json.h): every kind of
 * valid document, every malformed input we could think of, the accessors
 * (get, iteration, int, str), the writer's commas and escaping, and round
 * trips from writer to reader.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/buf.h"
#include "common/json.h"

#define NTOKS 64

static nt_json_tok toks[NTOKS];

/* Parses a NUL-terminated document into the shared token array. */
static int parse(nt_json *doc, const char *src)
{
    return nt_json_parse(doc, src, strlen(src), toks, NTOKS);
}

static int parse_len(nt_json *doc, const char *src, size_t len)
{
    return nt_json_parse(doc, src, len, toks, NTOKS);
}

static void test_scalars(void)
{
    nt_json doc;
    int64_t v;
    char out[64];

    CHECK_EQ_INT(parse(&doc, "true"), 0);
    CHECK_EQ_INT(doc.ntoks, 1);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_TRUE);
    CHECK_EQ_INT(parse(&doc, " false "), 0);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_FALSE);
    CHECK_EQ_INT(parse(&doc, "\t\r\n null\n"), 0);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_NULL);

    CHECK_EQ_INT(parse(&doc, "\"hi\""), 0);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_STRING);
    CHECK_EQ_INT(doc.toks[0].start, 1);
    CHECK_EQ_INT(doc.toks[0].len, 2);
    CHECK_EQ_INT(doc.toks[0].end, 1);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 2);
    CHECK_STR_EQ(out, "hi");

    CHECK_EQ_INT(parse(&doc, "\"\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 0);
    CHECK_STR_EQ(out, "");

    CHECK_EQ_INT(parse(&doc, "0"), 0);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_NUMBER);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(parse(&doc, "-0"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(parse(&doc, "12345"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK_EQ_INT(v, 12345);
    CHECK_EQ_INT(parse(&doc, "-987"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK_EQ_INT(v, -987);
}

static void test_numbers(void)
{
    nt_json doc;
    int64_t v = 7;
    static const char *const valid[] = {
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "0.5",
        "-0.5",
        "1.25",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "0e0",
        "-0.0e-0",
        "123.456e789",
        "1.0E+2",
        /* syntactically fine however large: range is nt_json_int's business */
        "123456789012345678901234567890",
        "1e999999",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        int rc = parse(&doc, valid[i]);
        CHECK_EQ_INT(rc, 0);
        if (rc)
            fprintf(stderr, "  valid number rejected: %s\n", valid[i]);
        else
            CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_NUMBER);
    }
    static const char *const invalid[] = {
        "01",  "-01", "00",   "+1",    "-",     "1.",    ".5",       "-.5",       "1e",
        "1e+", "1E-", "1.e5", "0x10",  "NaN",   "nan",   "Infinity", "-Infinity", "inf",
        "1 2", "1,",  "- 1",  "1_000", "1.5.5", "1e5e5", "--1",      "0.",        "٣",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        int rc = parse(&doc, invalid[i]);
        CHECK_EQ_INT(rc, NT_JSON_ERR_SYNTAX);
        if (rc != NT_JSON_ERR_SYNTAX)
            fprintf(stderr, "  invalid number accepted: %s\n", invalid[i]);
    }

    /* nt_json_int: range and integer-ness. */
    CHECK_EQ_INT(parse(&doc, "9223372036854775807"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_EQ_INT(parse(&doc, "-9223372036854775808"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, 0, &v), 0);
    CHECK(v == INT64_MIN);
    v = 7;
    CHECK_EQ_INT(parse(&doc, "9223372036854775808"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "-9223372036854775809"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "18446744073709551616"), 0); /* 2^64 must not wrap */
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "99999999999999999999999999999"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "1.0"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "1e2"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "-5E0"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(v, 7); /* untouched on failure */
    CHECK_EQ_INT(parse(&doc, "\"5\""), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK_EQ_INT(parse(&doc, "true"), 0);
    CHECK(nt_json_int(&doc, 0, &v) < 0);
    CHECK(nt_json_int(&doc, -1, &v) < 0);
    CHECK(nt_json_int(&doc, 5, &v) < 0);
}

static void test_containers(void)
{
    nt_json doc;
    int64_t v;
    char out[64];

    CHECK_EQ_INT(parse(&doc, "{}"), 0);
    CHECK_EQ_INT(doc.ntoks, 1);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_OBJECT);
    CHECK_EQ_INT(doc.toks[0].count, 0);
    CHECK_EQ_INT(doc.toks[0].end, 1);
    CHECK_EQ_INT(nt_json_first(&doc, 0), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "a"), -1);

    CHECK_EQ_INT(parse(&doc, " [ ] "), 0);
    CHECK_EQ_INT(nt_json_type_of(&doc, 0), NT_JSON_ARRAY);
    CHECK_EQ_INT(doc.toks[0].count, 0);
    CHECK_EQ_INT(nt_json_first(&doc, 0), -1);

    const char *src = "{\"type\":\"send\",\"id\":17,\"chat\":{\"id\":5,\"tags\":[]},"
                      "\"list\":[1,[2,3],{\"x\":null},\"s\",true,false],\"last\":-1}";
    CHECK_EQ_INT(parse(&doc, src), 0);
    CHECK_EQ_INT(doc.toks[0].count, 5);
    CHECK_EQ_INT(doc.toks[0].end, doc.ntoks);
    CHECK_EQ_INT(doc.toks[0].start, 0);
    CHECK_EQ_INT(doc.toks[0].len, strlen(src));

    int type = nt_json_get(&doc, 0, "type");
    CHECK(nt_json_str_eq(&doc, type, "send"));
    CHECK(!nt_json_str_eq(&doc, type, "sen"));
    CHECK(!nt_json_str_eq(&doc, type, "sendx"));
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "id"), &v), 0);
    CHECK_EQ_INT(v, 17);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "last"), &v), 0);
    CHECK_EQ_INT(v, -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "missing"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, ""), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "typ"), -1);

    int chat = nt_json_get(&doc, 0, "chat");
    CHECK_EQ_INT(nt_json_type_of(&doc, chat), NT_JSON_OBJECT);
    CHECK_EQ_INT(doc.toks[chat].count, 2);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, chat, "id"), &v), 0);
    CHECK_EQ_INT(v, 5);
    int tags = nt_json_get(&doc, chat, "tags");
    CHECK_EQ_INT(nt_json_type_of(&doc, tags), NT_JSON_ARRAY);
    CHECK_EQ_INT(nt_json_first(&doc, tags), -1);
    /* get on something that is not an object */
    CHECK_EQ_INT(nt_json_get(&doc, tags, "id"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, type, "id"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, -1, "id"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 1000, "id"), -1);
    CHECK_EQ_INT(nt_json_type_of(&doc, -1), 0);

    /* Array iteration sees exactly the six elements, in order. */
    int list = nt_json_get(&doc, 0, "list");
    CHECK_EQ_INT(doc.toks[list].count, 6);
    static const int want[] = {NT_JSON_NUMBER, NT_JSON_ARRAY, NT_JSON_OBJECT,
                               NT_JSON_STRING, NT_JSON_TRUE,  NT_JSON_FALSE};
    int n = 0;
    for (int e = nt_json_first(&doc, list); e >= 0; e = nt_json_next(&doc, e)) {
        if (n < 6) CHECK_EQ_INT(nt_json_type_of(&doc, e), want[n]);
        n++;
    }
    CHECK_EQ_INT(n, 6);
    int inner = nt_json_next(&doc, nt_json_first(&doc, list));
    CHECK_EQ_INT(doc.toks[inner].count, 2);
    CHECK_EQ_INT(nt_json_next(&doc, nt_json_next(&doc, nt_json_first(&doc, inner))), -1);

    /* Object iteration yields the keys; the value of key k is k + 1. */
    static const char *const keys[] = {"type", "id", "chat", "list", "last"};
    n = 0;
    for (int k = nt_json_first(&doc, 0); k >= 0; k = nt_json_next(&doc, k)) {
        CHECK_EQ_INT(nt_json_type_of(&doc, k), NT_JSON_STRING);
        if (n < 5) {
            CHECK_EQ_INT(nt_json_str(&doc, k, out, sizeof out), (int)strlen(keys[n]));
            CHECK_STR_EQ(out, keys[n]);
            CHECK_EQ_INT(nt_json_get(&doc, 0, keys[n]), k + 1);
        }
        n++;
    }
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_INT(nt_json_next(&doc, 0), -1); /* the root has no sibling */
    CHECK_EQ_INT(nt_json_next(&doc, -1), -1);
    CHECK_EQ_INT(nt_json_first(&doc, type), -1);

    /* Whitespace everywhere it is allowed, including around , and : */
    CHECK_EQ_INT(parse(&doc, " { \"a\" : [ 1 , 2 ] , \"b\" :\n\"c\" } "), 0);
    n = 0;
    for (int k = nt_json_first(&doc, 0); k >= 0; k = nt_json_next(&doc, k))
        n++;
    CHECK_EQ_INT(n, 2);
    int a = nt_json_get(&doc, 0, "a");
    n = 0;
    for (int e = nt_json_first(&doc, a); e >= 0; e = nt_json_next(&doc, e))
        n++;
    CHECK_EQ_INT(n, 2);
    CHECK(nt_json_str_eq(&doc, nt_json_get(&doc, 0, "b"), "c"));

    /* An array of strings: a string element followed by ',' is no key. */
    CHECK_EQ_INT(parse(&doc, "[\"a\",\"b\",\"c\"]"), 0);
    n = 0;
    for (int e = nt_json_first(&doc, 0); e >= 0; e = nt_json_next(&doc, e))
        n++;
    CHECK_EQ_INT(n, 3);

    /* Duplicate keys: the last one wins. */
    CHECK_EQ_INT(parse(&doc, "{\"a\":1,\"b\":2,\"a\":3}"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "a"), &v), 0);
    CHECK_EQ_INT(v, 3);

    /* Keys compare after unescaping, both ways. */
    CHECK_EQ_INT(parse(&doc, "{\"t\\u0079pe\":1,\"a\\nb\":2,\"\\u00e9\":3,\"x\\\\y\":4}"), 0);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "type"), &v), 0);
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "a\nb"), &v), 0);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "a\\nb"), -1);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "\xc3\xa9"), &v), 0);
    CHECK_EQ_INT(v, 3);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "x\\y"), &v), 0);
    CHECK_EQ_INT(v, 4);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "x\\\\y"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "typ"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "types"), -1);
    /* A raw key with a backslash must not match the same bytes literally. */
    CHECK_EQ_INT(parse(&doc, "{\"a\\\"b\":1}"), 0);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "a\\\"b"), -1);
    CHECK_EQ_INT(nt_json_get(&doc, 0, "a\"b"), 1 + 1);

    /* Subtree ends */
    CHECK_EQ_INT(parse(&doc, "[[1,[2]],3]"), 0);
    CHECK_EQ_INT(doc.ntoks, 6);
    CHECK_EQ_INT(doc.toks[0].end, 6);
    CHECK_EQ_INT(doc.toks[1].end, 5);
    CHECK_EQ_INT(doc.toks[3].end, 5);
    CHECK_EQ_INT(doc.toks[5].end, 6);
}

static void test_strings(void)
{
    nt_json doc;
    char out[64];

    CHECK_EQ_INT(parse(&doc, "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 15);
    CHECK_STR_EQ(out, "\" \\ / \b \f \n \r \t");
    CHECK(nt_json_str_eq(&doc, 0, "\" \\ / \b \f \n \r \t"));

    /* \u escapes: 1, 2, 3 bytes, a surrogate pair to 4 bytes, hex in any case */
    CHECK_EQ_INT(parse(&doc, "\"\\u0041\\u00E9\\u20ac\\uD83D\\uDE00\\uffff\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 1 + 2 + 3 + 4 + 3);
    CHECK_STR_EQ(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf");
    CHECK_EQ_INT(parse(&doc, "\"\\udbff\\udfff\""), 0); /* U+10FFFF */
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 4);
    CHECK_STR_EQ(out, "\xf4\x8f\xbf\xbf");
    CHECK_EQ_INT(parse(&doc, "\"\\u007f\\u0080\\u07ff\\u0800\""), 0);
    CHECK_STR_EQ((nt_json_str(&doc, 0, out, sizeof out), out), "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80");

    /* Raw UTF-8 passes through. */
    CHECK_EQ_INT(parse(&doc, "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), 14);
    CHECK_STR_EQ(out, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
    /* DEL and U+2028 are fine raw */
    CHECK_EQ_INT(parse(&doc, "\"\x7f\xe2\x80\xa8\""), 0);

    /* \u0000 parses but is never handed out as text. */
    CHECK_EQ_INT(parse(&doc, "\"a\\u0000b\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), -3);
    CHECK(!nt_json_str_eq(&doc, 0, "a"));

    /* Capacity: the NUL needs its byte. */
    CHECK_EQ_INT(parse(&doc, "\"abcd\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 4), -2);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 5), 4);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 0), -2);
    CHECK_EQ_INT(parse(&doc, "\"ab\\n\\u00e9\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 5), -2);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 6), 5);
    CHECK_STR_EQ(out, "ab\n\xc3\xa9");
    CHECK_EQ_INT(parse(&doc, "\"\\nabcdef\""), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 7), -2);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, 8), 7);

    /* Not a string */
    CHECK_EQ_INT(parse(&doc, "[1]"), 0);
    CHECK_EQ_INT(nt_json_str(&doc, 0, out, sizeof out), -1);
    CHECK_EQ_INT(nt_json_str(&doc, 1, out, sizeof out), -1);
    CHECK_EQ_INT(nt_json_str(&doc, 2, out, sizeof out), -1);
    CHECK(!nt_json_str_eq(&doc, 1, "1"));
}

/* Documents that must be rejected, with the error they must give. */
static void test_malformed(void)
{
    nt_json doc;
    static const char *const bad[] = {
        "",
        " ",
        "\n",
        "tru",
        "truee",
        "True",
        "nul",
        "nulll",
        "fals",
        "falsey",
        "undefined",
        "'a'",
        "\"abc",
        "\"abc\\\"",
        "\"\\",
        "\"\\x\"",
        "\"\\a\"",
        "\"\\U0041\"",
        "\"\\u\"",
        "\"\\u12\"",
        "\"\\u123\"",
        "\"\\u12G4\"",
        "\"\\u-123\"",
        "\"\\ \"",
        "\"\\0\"",
        /* lone and misordered surrogates */
        "\"\\uD800\"",
        "\"\\uDBFF\"",
        "\"\\uDC00\"",
        "\"\\uDFFF\"",
        "\"\\uD800x\"",
        "\"\\uD800\\n\"",
        "\"\\uD800\\u0041\"",
        "\"\\uD800\\uD800\"",
        "\"\\uDC00\\uD800\"",
        "\"\\uD800\\u\"",
        "\"\\uD800\\uDC0\"",
        "\"\\uD800\\\"",
        "\"\\uD83D\\uDE0G\"",
        /* raw control characters */
        "\"a\nb\"",
        "\"a\tb\"",
        "\"\x01\"",
        "\"\x1f\"",
        "\"\r\"",
        /* containers */
        "{",
        "}",
        "[",
        "]",
        "[1",
        "[1,",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[,]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "{,\"a\":1}",
        "{\"a\":1 \"b\":2}",
        "{a:1}",
        "{1:1}",
        "{null:1}",
        "{\"a\"::1}",
        "{\"a\":1]",
        "[1}",
        "[}",
        "{]",
        "[[]",
        "[]]",
        "{\"a\":1}}",
        "{\"a\":{}",
        "[\"a\":1]",
        "{\"a\",1}",
        "[1;2]",
        /* trailing garbage and several values */
        "1 2",
        "{} {}",
        "[]x",
        "true false",
        "\"a\"\"b\"",
        "null,",
        "0 0",
        "[] ]",
        "1\x0b",
        "\xef\xbb\xbf{}",
        "/*c*/{}",
        "{}//",
        "\x0c[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(&doc, bad[i]);
        CHECK_EQ_INT(rc, NT_JSON_ERR_SYNTAX);
        if (rc != NT_JSON_ERR_SYNTAX) fprintf(stderr, "  accepted: [%s]\n", bad[i]);
        CHECK_EQ_INT(doc.ntoks, 0);
    }
    /* An embedded NUL where the length says there is more text */
    CHECK_EQ_INT(parse_len(&doc, "{}\0", 3), NT_JSON_ERR_SYNTAX);
    CHECK_EQ_INT(parse_len(&doc, "\"a\0b\"", 5), NT_JSON_ERR_SYNTAX);
    /* The length bounds the text: the parser must not read past it. */
    CHECK_EQ_INT(parse_len(&doc, "[1]", 2), NT_JSON_ERR_SYNTAX);
    CHECK_EQ_INT(parse_len(&doc, "true", 3), NT_JSON_ERR_SYNTAX);
    CHECK_EQ_INT(parse_len(&doc, "\"ab\"", 3), NT_JSON_ERR_SYNTAX);
    CHECK_EQ_INT(parse_len(&doc, "12", 1), 0);
    CHECK_EQ_INT(parse_len(&doc, "\"\\u0041\"", 7), NT_JSON_ERR_SYNTAX);
    CHECK_EQ_INT(parse_len(&doc, "\"\\uD83D\\uDE00\"", 13), NT_JSON_ERR_SYNTAX);

    /* Invalid UTF-8 in strings (raw bytes outside strings are syntax errors). */
    static const char *const bad_utf8[] = {
        "\"\x80\"",                 /* lone continuation */
        "\"\xbf\"",                 /* lone continuation */
        "\"\xc0\xaf\"",             /* overlong '/' */
        "\"\xc1\xbf\"",             /* overlong */
        "\"\xe0\x80\xaf\"",         /* overlong 3-byte */
        "\"\xe0\x9f\xbf\"",         /* overlong 3-byte, top */
        "\"\xf0\x80\x80\xaf\"",     /* overlong 4-byte */
        "\"\xf0\x8f\xbf\xbf\"",     /* overlong 4-byte, top */
        "\"\xed\xa0\x80\"",         /* UTF-16 surrogate D800 */
        "\"\xed\xbf\xbf\"",         /* UTF-16 surrogate DFFF */
        "\"\xf4\x90\x80\x80\"",     /* U+110000 */
        "\"\xf5\x80\x80\x80\"",     /* lead byte past the range */
        "\"\xf8\x88\x80\x80\x80\"", /* 5-byte form */
        "\"\xfe\"",
        "\"\xff\"",
        "\"\xc3\"",         /* truncated by the quote */
        "\"\xe2\x82\"",     /* truncated 3-byte */
        "\"\xf0\x9f\x98\"", /* truncated 4-byte */
        "\"\xc3x\"",        /* bad continuation */
        "\"\xe2\x28\xa1\"", /* bad continuation */
        "\"ok\" \xc3\xa9",  /* valid UTF-8 but outside a string */
        "{\"\xff\":1}",     /* in a key */
    };
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        int rc = parse(&doc, bad_utf8[i]);
        CHECK_EQ_INT(rc, NT_JSON_ERR_SYNTAX);
        if (rc != NT_JSON_ERR_SYNTAX) fprintf(stderr, "  invalid UTF-8 accepted: case %zu\n", i);
    }
    /* Just inside each UTF-8 boundary is fine. */
    static const char *const good_utf8[] = {
        "\"\xc2\x80\"",         "\"\xdf\xbf\"",
        "\"\xe0\xa0\x80\"",     "\"\xed\x9f\xbf\"",
        "\"\xee\x80\x80\"",     "\"\xf0\x90\x80\x80\"",
        "\"\xf4\x8f\xbf\xbf\"", "{\"\xc3\xa9\":[\"\xe2\x82\xac\"]}",
    };
    for (size_t i = 0; i < sizeof good_utf8 / sizeof good_utf8[0]; i++) {
        int rc = parse(&doc, good_utf8[i]);
        CHECK_EQ_INT(rc, 0);
        if (rc) fprintf(stderr, "  valid UTF-8 rejected: case %zu\n", i);
    }
}

static void test_limits(void)
{
    nt_json doc;
    char src[256];

    /* Exactly NT_JSON_MAX_DEPTH levels are fine; one more is not. */
    int d = NT_JSON_MAX_DEPTH;
    memset(src, '[', (size_t)d);
    memset(src + d, ']', (size_t)d);
    CHECK_EQ_INT(parse_len(&doc, src, 2 * (size_t)d), 0);
    CHECK_EQ_INT(doc.ntoks, d);
    d++;
    memset(src, '[', (size_t)d);
    memset(src + d, ']', (size_t)d);
    CHECK_EQ_INT(parse_len(&doc, src, 2 * (size_t)d), NT_JSON_ERR_DEPTH);
    /* Mixed objects and arrays count alike; unterminated deep input too. */
    size_t n = 0;
    for (int i = 0; i < NT_JSON_MAX_DEPTH + 5; i++) {
        memcpy(src + n, i % 2 ? "[" : "{\"k\":", i % 2 ? 1 : 5);
        n += i % 2 ? 1 : 5;
    }
    CHECK_EQ_INT(nt_json_parse(&doc, src, n, toks, NTOKS), NT_JSON_ERR_DEPTH);

    /* A huge depth must not overflow anything either. */
    size_t deep_len = 100000;
    char *deep = malloc(deep_len);
    CHECK(deep != NULL);
    if (deep) {
        memset(deep, '[', deep_len);
        CHECK_EQ_INT(parse_len(&doc, deep, deep_len), NT_JSON_ERR_DEPTH);
        free(deep);
    }

    /* Token capacity: exactly enough, one short, zero. */
    nt_json_tok few[4];
    CHECK_EQ_INT(nt_json_parse(&doc, "[1,2,3]", 7, few, 4), 0);
    CHECK_EQ_INT(doc.ntoks, 4);
    CHECK_EQ_INT(nt_json_parse(&doc, "[1,2,3]", 7, few, 3), NT_JSON_ERR_TOKENS);
    CHECK_EQ_INT(nt_json_parse(&doc, "{\"a\":1}", 7, few, 2), NT_JSON_ERR_TOKENS);
    CHECK_EQ_INT(nt_json_parse(&doc, "{\"a\":1}", 7, few, 3), 0);
    CHECK_EQ_INT(nt_json_parse(&doc, "{\"a\":1,\"b\":2}", 13, few, 4), NT_JSON_ERR_TOKENS);
    CHECK_EQ_INT(nt_json_parse(&doc, "1", 1, few, 0), NT_JSON_ERR_TOKENS);
    CHECK_EQ_INT(nt_json_parse(&doc, "{}", 2, few, 1), 0);

    /* Many tokens */
    size_t big_n = 100000;
    char *big = malloc(big_n * 2 + 2);
    nt_json_tok *many = malloc((big_n + 1) * sizeof *many);
    CHECK(big && many);
    if (big && many) {
        size_t p = 0;
        big[p++] = '[';
        for (size_t i = 0; i < big_n; i++) {
            big[p++] = '0';
            big[p++] = ',';
        }
        big[p - 1] = ']';
        CHECK_EQ_INT(nt_json_parse(&doc, big, p, many, (int)big_n + 1), 0);
        CHECK_EQ_INT(doc.toks[0].count, big_n);
        CHECK_EQ_INT(nt_json_parse(&doc, big, p, many, (int)big_n), NT_JSON_ERR_TOKENS);
        int count = 0;
        for (int e = nt_json_first(&doc, 0); e >= 0; e = nt_json_next(&doc, e))
            count++;
        CHECK_EQ_INT(doc.ntoks, 0); /* the failed parse left no tokens */
        CHECK_EQ_INT(count, 0);
    }
    free(big);
    free(many);
}

/* Writes with the writer, returns the text (owned by b). */
static const char *written(nt_buf *b, nt_jw *w)
{
    CHECK_EQ_INT(nt_jw_error(w), 0);
    return nt_buf_cstr(b);
}

static void test_writer(void)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;

    nt_jw_init(&w, &b);
    nt_jw_obj(&w);
    nt_jw_obj_end(&w);
    CHECK_STR_EQ(written(&b, &w), "{}");

    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "hello");
    nt_jw_kint(&w, "id", 42);
    nt_jw_kbool(&w, "ok", true);
    nt_jw_kbool(&w, "no", false);
    nt_jw_key(&w, "nothing");
    nt_jw_null(&w);
    nt_jw_key(&w, "list");
    nt_jw_arr(&w);
    nt_jw_int(&w, 1);
    nt_jw_arr(&w);
    nt_jw_arr_end(&w);
    nt_jw_obj(&w);
    nt_jw_obj_end(&w);
    nt_jw_str(&w, "x");
    nt_jw_raw(&w, "{\"pre\":1}", 9);
    nt_jw_arr_end(&w);
    nt_jw_key(&w, "e");
    nt_jw_str_or_null(&w, "");
    nt_jw_key(&w, "n");
    nt_jw_str_or_null(&w, NULL);
    nt_jw_key(&w, "s");
    nt_jw_str_or_null(&w, "v");
    nt_jw_key(&w, "sn");
    nt_jw_strn(&w, "abcdef", 3);
    nt_jw_key(&w, "obj");
    nt_jw_obj(&w);
    nt_jw_kint(&w, "a", -1);
    nt_jw_obj_end(&w);
    nt_jw_obj_end(&w);
    CHECK_STR_EQ(written(&b, &w),
                 "{\"type\":\"hello\",\"id\":42,\"ok\":true,\"no\":false,\"nothing\":null,"
                 "\"list\":[1,[],{},\"x\",{\"pre\":1}],\"e\":null,\"n\":null,\"s\":\"v\","
                 "\"sn\":\"abc\",\"obj\":{\"a\":-1}}");

    /* Integers at the edges */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_arr(&w);
    nt_jw_int(&w, 0);
    nt_jw_int(&w, -0);
    nt_jw_int(&w, 9);
    nt_jw_int(&w, 10);
    nt_jw_int(&w, INT64_MAX);
    nt_jw_int(&w, INT64_MIN);
    nt_jw_arr_end(&w);
    CHECK_STR_EQ(written(&b, &w), "[0,0,9,10,9223372036854775807,-9223372036854775808]");

    /* Escaping: quote, backslash, every control character, nothing else. */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_str(&w, "q\" b\\ / \b\f\n\r\t \x01\x1f\x7f caf\xc3\xa9 \xf0\x9f\x98\x80");
    CHECK_STR_EQ(written(&b, &w), "\"q\\\" b\\\\ / \\b\\f\\n\\r\\t \\u0001\\u001f\x7f caf\xc3\xa9 "
                                  "\xf0\x9f\x98\x80\"");
    /* Keys are escaped too; strn takes embedded NULs as \u0000. */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_obj(&w);
    nt_jw_key(&w, "a\"b");
    nt_jw_strn(&w, "x\0y", 3);
    nt_jw_obj_end(&w);
    CHECK_STR_EQ(written(&b, &w), "{\"a\\\"b\":\"x\\u0000y\"}");

    /* Unbalanced ends are errors, and errors are sticky. */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_arr_end(&w);
    CHECK(nt_jw_error(&w) < 0);
    nt_jw_int(&w, 1);
    CHECK_EQ_INT(b.len, 0);
    /* Deep nesting beyond what the writer tracks is an error, not UB. */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    for (int i = 0; i < 100; i++)
        nt_jw_arr(&w);
    CHECK(nt_jw_error(&w) < 0);
    /* 63 levels work. */
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    for (int i = 0; i < 63; i++)
        nt_jw_arr(&w);
    nt_jw_int(&w, 1);
    nt_jw_int(&w, 2);
    for (int i = 0; i < 63; i++)
        nt_jw_arr_end(&w);
    CHECK_EQ_INT(nt_jw_error(&w), 0);
    CHECK_EQ_INT(b.len, 63 * 2 + 3);

    nt_buf_free(&b);
}

/* Every string the writer makes parses back to the same bytes. */
static void test_round_trip(void)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_json doc;
    char out[512];
    char all[256];

    /* Every byte value 1..127 plus valid multi-byte text. */
    size_t n = 0;
    for (int c = 1; c < 128; c++)
        all[n++] = (char)c;
    memcpy(all + n, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
    n += 9;
    all[n] = '\0';

    nt_jw_init(&w, &b);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, all, all);
    nt_jw_kint(&w, "min", INT64_MIN);
    nt_jw_kint(&w, "max", INT64_MAX);
    nt_jw_key(&w, "arr");
    nt_jw_arr(&w);
    nt_jw_str(&w, "");
    nt_jw_bool(&w, true);
    nt_jw_null(&w);
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    CHECK_EQ_INT(nt_jw_error(&w), 0);

    CHECK_EQ_INT(parse_len(&doc, b.data, b.len), 0);
    int v = nt_json_get(&doc, 0, all);
    CHECK(v > 0);
    CHECK_EQ_INT(nt_json_str(&doc, v, out, sizeof out), (int)n);
    CHECK_STR_EQ(out, all);
    CHECK(nt_json_str_eq(&doc, v, all));
    CHECK_EQ_INT(nt_json_str(&doc, v - 1, out, sizeof out), (int)n);
    CHECK_STR_EQ(out, all);
    int64_t i64;
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "min"), &i64), 0);
    CHECK(i64 == INT64_MIN);
    CHECK_EQ_INT(nt_json_int(&doc, nt_json_get(&doc, 0, "max"), &i64), 0);
    CHECK(i64 == INT64_MAX);
    int arr = nt_json_get(&doc, 0, "arr");
    CHECK_EQ_INT(doc.toks[arr].count, 3);
    CHECK_EQ_INT(nt_json_type_of(&doc, arr + 3), NT_JSON_NULL);

    /* Decode then re-encode an escaped document: same text. */
    const char *src = "[\"\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\u001f\"]";
    CHECK_EQ_INT(parse(&doc, src), 0);
    int len = nt_json_str(&doc, 1, out, sizeof out);
    CHECK(len > 0);
    nt_buf_reset(&b);
    nt_jw_init(&w, &b);
    nt_jw_arr(&w);
    nt_jw_strn(&w, out, (size_t)len);
    nt_jw_arr_end(&w);
    CHECK_STR_EQ(nt_buf_cstr(&b), "[\"\xc3\xa9\xf0\x9f\x98\x80\\n\\\"\\\\/\\u001f\"]");
    CHECK_EQ_INT(parse_len(&doc, b.data, b.len), 0);
    CHECK(nt_json_str_eq(&doc, 1, "\xc3\xa9\xf0\x9f\x98\x80\n\"\\/\x1f"));

    nt_buf_free(&b);
}

int main(void)
{
    test_scalars();
    test_numbers();
    test_containers();
    test_strings();
    test_malformed();
    test_limits();
    test_writer();
    test_round_trip();
    return check_exit();
}
