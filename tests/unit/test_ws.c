/*
 * Unit tests for the WebSocket framer (src/net/ws.c): frame parsing on both
 * sides with every protocol error, lengths in all three encodings, input
 * split at every byte, masking, close frames, the fragment assembler with
 * interleaved control frames and UTF-8 split across fragments, and the
 * handshake keys (RFC 6455 section 1.3 example).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "net/ws.h"

#define BIG (1u << 20)

/* Writes a frame by hand: first byte b0, payload masked with `key` when
 * given, length in the shortest encoding unless `len_bytes` forces 2 or 8. */
static size_t put_frame(uint8_t *out, uint8_t b0, const void *payload, size_t len,
                        const uint8_t *key, int len_bytes)
{
    size_t n = 0;
    uint8_t mask = key ? 0x80 : 0;
    out[n++] = b0;
    if (len_bytes == 0 && len < 126) {
        out[n++] = (uint8_t)(mask | len);
    } else if (len_bytes == 2 || (len_bytes == 0 && len <= 0xFFFF)) {
        out[n++] = mask | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = mask | 127;
        for (int k = 7; k >= 0; k--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * k));
    }
    if (key) {
        memcpy(out + n, key, 4);
        n += 4;
    }
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        out[n + i] = key ? (uint8_t)(src[i] ^ key[i & 3]) : src[i];
    return n + len;
}

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

static void test_roundtrip_lengths(void)
{
    static const size_t lens[] = {0, 1, 7, 8, 9, 125, 126, 127, 200, 65535, 65536, 70001};
    uint8_t *payload = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li];
        size_t want_hdr = len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
        for (int masked = 0; masked <= 1; masked++) {
            nt_buf out = NT_BUF_INIT;
            CHECK_EQ_INT(nt_ws_append_frame(&out, NT_WS_OP_BINARY, payload, len, masked), 0);
            CHECK_EQ_INT(out.len, want_hdr + (masked ? 4 : 0) + len);
            nt_ws_frame f;
            ssize_t n = nt_ws_parse((uint8_t *)out.data, out.len, BIG, masked, &f);
            CHECK_EQ_INT(n, out.len);
            CHECK(f.fin);
            CHECK_EQ_INT(f.opcode, NT_WS_OP_BINARY);
            CHECK_EQ_INT(f.len, len);
            CHECK(len == 0 || memcmp(f.payload, payload, len) == 0);
            /* The wrong side refuses it. */
            nt_ws_frame g;
            CHECK_EQ_INT(nt_ws_parse((uint8_t *)out.data, out.len, BIG, !masked, &g),
                         -NT_WS_CLOSE_PROTOCOL);
            nt_buf_free(&out);
        }
        uint8_t hdr[10];
        CHECK_EQ_INT(nt_ws_header(hdr, NT_WS_OP_TEXT, len), want_hdr);
        CHECK_EQ_INT(hdr[0], 0x81);
        CHECK_EQ_INT(hdr[1] & 0x80, 0);
    }
    free(payload);
}

static void test_header_bytes(void)
{
    uint8_t h[10];
    CHECK_EQ_INT(nt_ws_header(h, NT_WS_OP_TEXT, 5), 2);
    CHECK(h[0] == 0x81 && h[1] == 5);
    CHECK_EQ_INT(nt_ws_header(h, NT_WS_OP_BINARY, 300), 4);
    CHECK(h[0] == 0x82 && h[1] == 126 && h[2] == 0x01 && h[3] == 0x2C);
    CHECK_EQ_INT(nt_ws_header(h, NT_WS_OP_PING, 0x10000), 10);
    CHECK(h[0] == 0x89 && h[1] == 127);
    CHECK(h[2] == 0 && h[3] == 0 && h[4] == 0 && h[5] == 0);
    CHECK(h[6] == 0 && h[7] == 1 && h[8] == 0 && h[9] == 0);
}

/* Every proper prefix needs more bytes and leaves the input untouched; the
 * whole frame parses to the original payload. */
static void split_everywhere(const uint8_t *frame, size_t total, bool from_client,
                             const uint8_t *want, size_t want_len)
{
    uint8_t *copy = malloc(total);
    int bad = 0;
    for (size_t cut = 0; cut < total; cut++) {
        memcpy(copy, frame, total);
        nt_ws_frame f;
        if (nt_ws_parse(copy, cut, BIG, from_client, &f) != 0 || memcmp(copy, frame, total) != 0)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    memcpy(copy, frame, total);
    nt_ws_frame f;
    CHECK_EQ_INT(nt_ws_parse(copy, total, BIG, from_client, &f), total);
    CHECK_EQ_INT(f.len, want_len);
    CHECK(want_len == 0 || memcmp(f.payload, want, want_len) == 0);
    free(copy);
}

static void test_split_every_byte(void)
{
    static const size_t lens[] = {0, 5, 125, 126, 300, 65536};
    uint8_t *payload = malloc(70000);
    uint8_t *frame = malloc(70100);
    for (size_t i = 0; i < 70000; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = put_frame(frame, 0x82, payload, lens[li], KEY, 0);
        split_everywhere(frame, n, true, payload, lens[li]);
        n = put_frame(frame, 0x82, payload, lens[li], NULL, 0);
        split_everywhere(frame, n, false, payload, lens[li]);
    }
    /* Non-minimal encodings are allowed. */
    size_t n = put_frame(frame, 0x81, "hello", 5, KEY, 2);
    split_everywhere(frame, n, true, (const uint8_t *)"hello", 5);
    n = put_frame(frame, 0x81, "hello", 5, KEY, 8);
    split_everywhere(frame, n, true, (const uint8_t *)"hello", 5);
    free(payload);
    free(frame);
}

/* Two frames back to back: parse returns exactly the first one's size. */
static void test_back_to_back(void)
{
    uint8_t buf[64];
    size_t a = put_frame(buf, 0x81, "abc", 3, KEY, 0);
    size_t b = put_frame(buf + a, 0x8A, "xy", 2, KEY, 0);
    nt_ws_frame f;
    CHECK_EQ_INT(nt_ws_parse(buf, a + b, 100, true, &f), a);
    CHECK(f.len == 3 && memcmp(f.payload, "abc", 3) == 0);
    CHECK_EQ_INT(nt_ws_parse(buf + a, b, 100, true, &f), b);
    CHECK(f.opcode == NT_WS_OP_PONG && f.len == 2 && memcmp(f.payload, "xy", 2) == 0);
}

/* Unmasking at every alignment and length around the 8-byte step. */
static void test_unmask_alignment(void)
{
    uint8_t buf[128], want[64];
    for (size_t i = 0; i < sizeof want; i++)
        want[i] = (uint8_t)(0xA5 ^ i);
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 40; len++) {
            size_t n = put_frame(buf + off, 0x82, want, len, KEY, 0);
            nt_ws_frame f;
            ssize_t got = nt_ws_parse(buf + off, n, 100, true, &f);
            if (got != (ssize_t)n || f.len != len || (len && memcmp(f.payload, want, len) != 0)) {
                CHECK(!"unmask mismatch");
                fprintf(stderr, "  offset %zu length %zu\n", off, len);
            }
        }
    }
}

static void test_errors(void)
{
    uint8_t buf[256];
    nt_ws_frame f;

    /* Reserved bits: refused from the first byte on. */
    static const uint8_t rsv[] = {0x40, 0x20, 0x10};
    for (size_t i = 0; i < 3; i++) {
        size_t n = put_frame(buf, (uint8_t)(0x81 | rsv[i]), "a", 1, KEY, 0);
        CHECK_EQ_INT(nt_ws_parse(buf, n, 100, true, &f), -NT_WS_CLOSE_PROTOCOL);
        CHECK_EQ_INT(nt_ws_parse(buf, 1, 100, true, &f), -NT_WS_CLOSE_PROTOCOL);
    }
    /* Unknown opcodes. */
    for (uint8_t op = 0; op < 16; op++) {
        size_t n = put_frame(buf, (uint8_t)(0x80 | op), "", 0, KEY, 0);
        ssize_t want = (op <= 2 || (op >= 8 && op <= 10)) ? (ssize_t)n : -NT_WS_CLOSE_PROTOCOL;
        CHECK_EQ_INT(nt_ws_parse(buf, n, 100, true, &f), want);
    }
    /* Fragmented control frames. */
    for (uint8_t op = 8; op <= 10; op++) {
        size_t n = put_frame(buf, op, "", 0, KEY, 0);
        CHECK_EQ_INT(nt_ws_parse(buf, n, 100, true, &f), -NT_WS_CLOSE_PROTOCOL);
    }
    /* Control frames: 125 bytes fine, 126 not (even with a 16-bit length). */
    uint8_t big[200] = {0};
    size_t n = put_frame(buf, 0x89, big, 125, KEY, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, n, 1000, true, &f), n);
    n = put_frame(buf, 0x89, big, 126, KEY, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, n, 1000, true, &f), -NT_WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(nt_ws_parse(buf, 2, 1000, true, &f), -NT_WS_CLOSE_PROTOCOL);
    n = put_frame(buf, 0x88, big, 5, KEY, 2);
    CHECK_EQ_INT(nt_ws_parse(buf, n, 1000, true, &f), -NT_WS_CLOSE_PROTOCOL);
    /* Masking on the wrong side, decided from the second byte. */
    n = put_frame(buf, 0x81, "hi", 2, NULL, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, 2, 100, true, &f), -NT_WS_CLOSE_PROTOCOL);
    n = put_frame(buf, 0x81, "hi", 2, KEY, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, 2, 100, false, &f), -NT_WS_CLOSE_PROTOCOL);
    /* 64-bit length with the top bit set. */
    uint8_t huge[14] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    CHECK_EQ_INT(nt_ws_parse(huge, 10, SIZE_MAX, true, &f), -NT_WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(nt_ws_parse(huge, 9, SIZE_MAX, true, &f), 0);
    /* Over max_payload: refused once the length is known, before the key. */
    n = put_frame(buf, 0x82, big, 101, KEY, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, 2, 100, true, &f), -NT_WS_CLOSE_TOO_BIG);
    CHECK_EQ_INT(nt_ws_parse(buf, n, 101, true, &f), n);
    n = put_frame(buf, 0x82, big, 150, KEY, 0);
    CHECK_EQ_INT(nt_ws_parse(buf, 3, 149, true, &f), 0);
    CHECK_EQ_INT(nt_ws_parse(buf, 4, 149, true, &f), -NT_WS_CLOSE_TOO_BIG);
    uint8_t len64[10] = {0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0}; /* 4 GiB */
    CHECK_EQ_INT(nt_ws_parse(len64, 10, 65536, true, &f), -NT_WS_CLOSE_TOO_BIG);
    CHECK_EQ_INT(nt_ws_parse(len64, 9, 65536, true, &f), 0);
    /* Nothing at all. */
    CHECK_EQ_INT(nt_ws_parse(buf, 0, 100, true, &f), 0);
}

static void test_masked_output(void)
{
    nt_buf a = NT_BUF_INIT, b = NT_BUF_INIT;
    const char *text = "the same payload twice";
    size_t len = strlen(text);
    CHECK_EQ_INT(nt_ws_append_frame(&a, NT_WS_OP_TEXT, text, len, true), 0);
    CHECK_EQ_INT(nt_ws_append_frame(&b, NT_WS_OP_TEXT, text, len, true), 0);
    CHECK_EQ_INT(a.len, 2 + 4 + len);
    CHECK((uint8_t)a.data[1] & 0x80);
    /* Random keys: two frames of the same text differ (2^-32 to fail). */
    CHECK(memcmp(a.data + 2, b.data + 2, 4) != 0);
    CHECK(memcmp(a.data + 6, text, len) != 0);
    nt_ws_frame f;
    CHECK_EQ_INT(nt_ws_parse((uint8_t *)a.data, a.len, 100, true, &f), a.len);
    CHECK(f.len == len && memcmp(f.payload, text, len) == 0);
    /* Appending keeps what was there. */
    CHECK_EQ_INT(nt_ws_append_frame(&a, NT_WS_OP_PING, NULL, 0, false), 0);
    CHECK_EQ_INT(a.len, 2 + 4 + len + 2);
    CHECK((uint8_t)a.data[6 + len] == 0x89 && a.data[7 + len] == 0);
    nt_buf_free(&a);
    nt_buf_free(&b);
}

static void test_close_frames(void)
{
    nt_buf out = NT_BUF_INIT;
    nt_ws_frame f;
    uint16_t code = 0;
    CHECK_EQ_INT(nt_ws_append_close(&out, NT_WS_CLOSE_AUTH, "no auth", false), 0);
    CHECK_EQ_INT(nt_ws_parse((uint8_t *)out.data, out.len, 125, false, &f), out.len);
    CHECK(f.opcode == NT_WS_OP_CLOSE && f.len == 9);
    CHECK(f.payload[0] == 4001 >> 8 && f.payload[1] == (4001 & 0xFF));
    CHECK(memcmp(f.payload + 2, "no auth", 7) == 0);
    CHECK_EQ_INT(nt_ws_close_check(f.payload, f.len, &code), 0);
    CHECK_EQ_INT(code, 4001);
    nt_buf_reset(&out);

    CHECK_EQ_INT(nt_ws_append_close(&out, 1000, NULL, true), 0);
    CHECK_EQ_INT(nt_ws_parse((uint8_t *)out.data, out.len, 125, true, &f), out.len);
    CHECK_EQ_INT(f.len, 2);
    nt_buf_reset(&out);

    /* A long reason is cut to 123 bytes without splitting a character. */
    char reason[300] = "";
    for (int i = 0; i < 70; i++)
        strcat(reason, "\xC3\xA9"); /* 140 bytes */
    CHECK_EQ_INT(nt_ws_append_close(&out, 1001, reason, false), 0);
    CHECK_EQ_INT(nt_ws_parse((uint8_t *)out.data, out.len, 125, false, &f), out.len);
    CHECK_EQ_INT(f.len, 2 + 122);
    CHECK_EQ_INT(nt_ws_close_check(f.payload, f.len, &code), 0);
    nt_buf_reset(&out);
    memset(reason, 'r', 200);
    reason[200] = '\0';
    CHECK_EQ_INT(nt_ws_append_close(&out, 1001, reason, false), 0);
    CHECK_EQ_INT(nt_ws_parse((uint8_t *)out.data, out.len, 125, false, &f), out.len);
    CHECK_EQ_INT(f.len, 125);
    nt_buf_free(&out);

    /* Close payload rules. */
    uint8_t p[8];
    CHECK_EQ_INT(nt_ws_close_check(p, 0, &code), 0);
    CHECK_EQ_INT(code, 1005);
    p[0] = 0x03;
    CHECK_EQ_INT(nt_ws_close_check(p, 1, &code), -NT_WS_CLOSE_PROTOCOL);
    static const struct {
        uint16_t code;
        int ok;
    } codes[] = {{0, 0},    {999, 0},  {1000, 1}, {1001, 1}, {1002, 1}, {1003, 1}, {1004, 0},
                 {1005, 0}, {1006, 0}, {1007, 1}, {1011, 1}, {1015, 0}, {1016, 0}, {2999, 0},
                 {3000, 1}, {4001, 1}, {4999, 1}, {5000, 0}, {65535, 0}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        p[0] = (uint8_t)(codes[i].code >> 8);
        p[1] = (uint8_t)codes[i].code;
        int rc = nt_ws_close_check(p, 2, &code);
        if (rc != (codes[i].ok ? 0 : -NT_WS_CLOSE_PROTOCOL)) {
            CHECK(!"close code judged wrongly");
            fprintf(stderr, "  code %u -> %d\n", codes[i].code, rc);
        }
    }
    p[0] = 0x03;
    p[1] = 0xE8;
    memcpy(p + 2, "ok\xFF", 3);
    CHECK_EQ_INT(nt_ws_close_check(p, 5, &code), -NT_WS_CLOSE_BAD_DATA);
    memcpy(p + 2, "\xE2\x82\xAC", 3);
    CHECK_EQ_INT(nt_ws_close_check(p, 5, &code), 0);
}

static nt_ws_frame frame_of(uint8_t opcode, bool fin, const char *payload, size_t len)
{
    nt_ws_frame f = {fin, opcode, (uint8_t *)payload, len};
    return f;
}

static void test_assembler_single(void)
{
    nt_ws_assembler a = {NT_BUF_INIT, 0, false};
    const uint8_t *msg;
    size_t len;
    uint8_t op;
    char text[] = "caf\xC3\xA9";
    nt_ws_frame f = frame_of(NT_WS_OP_TEXT, true, text, 5);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 1);
    CHECK(msg == (const uint8_t *)text); /* no copy */
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(op, NT_WS_OP_TEXT);
    CHECK(a.msg.data == NULL);

    f = frame_of(NT_WS_OP_TEXT, true, "", 0);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 1);
    CHECK(msg != NULL && len == 0);

    char bad[] = "caf\xC3";
    f = frame_of(NT_WS_OP_TEXT, true, bad, 4);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_BAD_DATA);
    f = frame_of(NT_WS_OP_BINARY, true, bad, 4); /* binary is not checked */
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 1);
    CHECK_EQ_INT(op, NT_WS_OP_BINARY);

    f = frame_of(NT_WS_OP_TEXT, true, "0123456789", 10);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 9, &msg, &len, &op), -NT_WS_CLOSE_TOO_BIG);

    f = frame_of(NT_WS_OP_CONT, true, "x", 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_PROTOCOL);
    f = frame_of(NT_WS_OP_PING, true, "x", 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_PROTOCOL);
    nt_ws_assembler_free(&a);
}

static void test_assembler_fragments(void)
{
    nt_ws_assembler a = {NT_BUF_INIT, 0, false};
    const uint8_t *msg;
    size_t len;
    uint8_t op;
    nt_ws_frame f;

    /* "€" (E2 82 AC) split over three fragments: valid only as a whole. */
    const char *parts[] = {"price: \xE2", "\x82", "\xAC!"};
    f = frame_of(NT_WS_OP_TEXT, false, parts[0], strlen(parts[0]));
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, false, parts[1], 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, true, parts[2], 2);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 1);
    CHECK_EQ_INT(len, 11);
    CHECK(memcmp(msg, "price: \xE2\x82\xAC!", 11) == 0);
    CHECK_EQ_INT(op, NT_WS_OP_TEXT);
    CHECK(!a.active);
    /* The memory goes back with the next call. */
    f = frame_of(NT_WS_OP_BINARY, true, "z", 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 1);
    CHECK(a.msg.data == NULL);

    /* New start inside a message. */
    f = frame_of(NT_WS_OP_BINARY, false, "ab", 2);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_TEXT, true, "cd", 2);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_PROTOCOL);
    nt_ws_assembler_free(&a);

    /* Invalid UTF-8 is refused at the fragment that brings it. */
    f = frame_of(NT_WS_OP_TEXT, false, "ok", 2);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, false, "\xC0\xAF more", 7);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_BAD_DATA);
    CHECK(a.msg.data == NULL && !a.active);

    /* A truncated character at the end of the message. */
    f = frame_of(NT_WS_OP_TEXT, false, "ab\xE2", 3);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, true, "\x82", 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 100, &msg, &len, &op), -NT_WS_CLOSE_BAD_DATA);

    /* Binary fragments are not checked; the total is capped. */
    f = frame_of(NT_WS_OP_BINARY, false, "\xFF\xFF\xFF\xFF", 4);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, false, "\xFF\xFF\xFF\xFF", 4);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, true, "\xFF\xFF\xFF", 3);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), -NT_WS_CLOSE_TOO_BIG);
    CHECK(a.msg.data == NULL);

    /* Empty fragments make an empty message. */
    f = frame_of(NT_WS_OP_TEXT, false, "", 0);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 0);
    f = frame_of(NT_WS_OP_CONT, true, "", 0);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 1);
    CHECK(msg != NULL && len == 0 && op == NT_WS_OP_TEXT);

    /* Each byte of a 4-byte character in its own fragment. */
    const char *emoji = "\xF0\x9F\x98\x80";
    f = frame_of(NT_WS_OP_TEXT, false, emoji, 1);
    CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), 0);
    for (int i = 1; i < 4; i++) {
        f = frame_of(NT_WS_OP_CONT, i == 3, emoji + i, 1);
        CHECK_EQ_INT(nt_ws_assemble(&a, &f, 10, &msg, &len, &op), i == 3);
    }
    CHECK(len == 4 && memcmp(msg, emoji, 4) == 0);
    nt_ws_assembler_free(&a);
    CHECK(a.msg.data == NULL && !a.active);
}

/* A server-side read loop over a byte stream delivered one byte at a time:
 * text fragment, ping, continuation, close. */
static void test_stream_with_ping(void)
{
    uint8_t wire[256];
    size_t n = 0;
    n += put_frame(wire + n, 0x01, "Hello, ", 7, KEY, 0);
    n += put_frame(wire + n, 0x89, "are you there", 13, KEY, 0);
    n += put_frame(wire + n, 0x00, "w\xC3", 2, KEY, 0);
    n += put_frame(wire + n, 0x80, "\xB6rld", 4, KEY, 0);
    n += put_frame(wire + n, 0x88, "\x03\xE8", 2, KEY, 0);

    uint8_t inbuf[256];
    size_t have = 0;
    nt_ws_assembler a = {NT_BUF_INIT, 0, false};
    int pings = 0, messages = 0, closes = 0, errors = 0;
    for (size_t i = 0; i < n; i++) {
        inbuf[have++] = wire[i];
        for (;;) {
            nt_ws_frame f;
            ssize_t used = nt_ws_parse(inbuf, have, 1000, true, &f);
            if (used < 0) errors++;
            if (used <= 0) break;
            if (f.opcode == NT_WS_OP_PING) {
                pings++;
                CHECK(f.len == 13 && memcmp(f.payload, "are you there", 13) == 0);
                CHECK(a.active); /* arrived inside the fragmented message */
            } else if (f.opcode == NT_WS_OP_CLOSE) {
                uint16_t code;
                closes++;
                CHECK_EQ_INT(nt_ws_close_check(f.payload, f.len, &code), 0);
                CHECK_EQ_INT(code, 1000);
            } else {
                const uint8_t *msg;
                size_t len;
                uint8_t op;
                int rc = nt_ws_assemble(&a, &f, 1000, &msg, &len, &op);
                CHECK(rc >= 0);
                if (rc == 1) {
                    messages++;
                    CHECK(len == 13 && memcmp(msg, "Hello, w\xC3\xB6rld", 13) == 0);
                }
            }
            memmove(inbuf, inbuf + used, have - (size_t)used);
            have -= (size_t)used;
        }
    }
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(pings, 1);
    CHECK_EQ_INT(messages, 1);
    CHECK_EQ_INT(closes, 1);
    CHECK_EQ_INT(have, 0);
    nt_ws_assembler_free(&a);
}

static void test_keys(void)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ_INT(nt_ws_accept_key(key, strlen(key), out), 0);
    CHECK_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 1.3 */
    CHECK_EQ_INT(strlen(out), 28);

    CHECK_EQ_INT(nt_ws_accept_key(key, 23, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("", 0, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ===", 25, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=A", 24, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub25j ZQ=", 24, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub2-jZQ==", 24, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQQ=", 24, out), -EINVAL);
    CHECK_EQ_INT(nt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ\0=", 24, out), -EINVAL);

    char k1[25], k2[25];
    nt_ws_client_key(k1);
    nt_ws_client_key(k2);
    CHECK_EQ_INT(strlen(k1), 24);
    CHECK(k1[22] == '=' && k1[23] == '=');
    CHECK(strcmp(k1, k2) != 0);
    CHECK_EQ_INT(nt_ws_accept_key(k1, 24, out), 0);
}

int main(void)
{
    test_roundtrip_lengths();
    test_header_bytes();
    test_split_every_byte();
    test_back_to_back();
    test_unmask_alignment();
    test_errors();
    test_masked_output();
    test_close_frames();
    test_assembler_single();
    test_assembler_fragments();
    test_stream_with_ping();
    test_keys();
    return check_exit();
}
