/*
 * libFuzzer target for the WebSocket framer (src/net/ws.h).
 *
 * Treats the input as bytes a client sent to the server and runs the
 * server's read loop over it with small caps: parse a frame, answer control
 * frames (checking close payloads), feed data frames to the assembler. It
 * checks the framer's promises: a parsed frame lies inside the input and
 * within max_payload, control frames are final and short, a finished text
 * message is valid UTF-8 and within max_message, and a message re-encoded
 * with nt_ws_append_frame parses back to the same bytes on both sides. The
 * same input is also parsed as a client would (unmasked frames). A broken
 * promise aborts, which libFuzzer reports as a crash.
 *
 * clang -g -fsanitize=fuzzer,address,undefined -Isrc -D_GNU_SOURCE \
 *     tests/fuzz/fuzz_ws.c src/net/ws.c src/common/buf.c src/common/utf8.c -lcrypto
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/utf8.h"
#include "net/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PAYLOAD 300
#define MAX_MESSAGE 700

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Encodes a message both ways and parses it back. */
static void check_roundtrip(uint8_t opcode, const uint8_t *msg, size_t len)
{
    for (int masked = 0; masked <= 1; masked++) {
        nt_buf out = NT_BUF_INIT;
        REQUIRE(nt_ws_append_frame(&out, opcode, msg, len, masked) == 0);
        nt_ws_frame f;
        ssize_t n = nt_ws_parse((uint8_t *)out.data, out.len, MAX_MESSAGE, masked, &f);
        REQUIRE(n == (ssize_t)out.len);
        REQUIRE(f.fin && f.opcode == opcode && f.len == len);
        REQUIRE(len == 0 || memcmp(f.payload, msg, len) == 0);
        nt_buf_free(&out);
    }
}

static void check_frame(const uint8_t *buf, size_t have, ssize_t n, const nt_ws_frame *f)
{
    REQUIRE((size_t)n <= have);
    REQUIRE(f->len <= MAX_PAYLOAD);
    REQUIRE(f->payload >= buf && f->payload + f->len == buf + n);
    if (f->opcode & 0x08) REQUIRE(f->fin && f->len <= 125);
}

static void run_server(uint8_t *buf, size_t size)
{
    nt_ws_assembler a = {NT_BUF_INIT, 0, false};
    size_t off = 0;
    while (off < size) {
        nt_ws_frame f;
        ssize_t n = nt_ws_parse(buf + off, size - off, MAX_PAYLOAD, true, &f);
        if (n <= 0) {
            REQUIRE(n == 0 || n == -NT_WS_CLOSE_PROTOCOL || n == -NT_WS_CLOSE_TOO_BIG);
            break;
        }
        check_frame(buf + off, size - off, n, &f);
        off += (size_t)n;

        if (f.opcode == NT_WS_OP_CLOSE) {
            uint16_t code = 0;
            int rc = nt_ws_close_check(f.payload, f.len, &code);
            REQUIRE(rc == 0 || rc == -NT_WS_CLOSE_PROTOCOL || rc == -NT_WS_CLOSE_BAD_DATA);
            nt_buf reply = NT_BUF_INIT;
            REQUIRE(nt_ws_append_close(&reply, rc ? (uint16_t)-rc : code, "bye", false) == 0);
            nt_buf_free(&reply);
            break;
        }
        if (f.opcode == NT_WS_OP_PING || f.opcode == NT_WS_OP_PONG) {
            check_roundtrip(NT_WS_OP_PONG, f.payload, f.len);
            continue;
        }
        const uint8_t *msg;
        size_t len;
        uint8_t op;
        int rc = nt_ws_assemble(&a, &f, MAX_MESSAGE, &msg, &len, &op);
        if (rc < 0) {
            REQUIRE(rc == -NT_WS_CLOSE_PROTOCOL || rc == -NT_WS_CLOSE_BAD_DATA ||
                    rc == -NT_WS_CLOSE_TOO_BIG);
            break;
        }
        if (rc == 1) {
            REQUIRE(len <= MAX_MESSAGE);
            REQUIRE(op == NT_WS_OP_TEXT || op == NT_WS_OP_BINARY);
            if (op == NT_WS_OP_TEXT) REQUIRE(nt_utf8_valid((const char *)msg, len));
            check_roundtrip(op, msg, len);
        }
    }
    nt_ws_assembler_free(&a);
}

static void run_client(uint8_t *buf, size_t size)
{
    size_t off = 0;
    while (off < size) {
        nt_ws_frame f;
        ssize_t n = nt_ws_parse(buf + off, size - off, MAX_PAYLOAD, false, &f);
        if (n <= 0) break;
        check_frame(buf + off, size - off, n, &f);
        off += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The parser unmasks in place: work on copies of exactly `size` bytes so
     * ASan sees any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    run_server(buf, size);
    memcpy(buf, data, size);
    run_client(buf, size);
    free(buf);

    /* The handshake key check on the input's first bytes. */
    char accept[29];
    if (size >= 24 && nt_ws_accept_key((const char *)data, 24, accept) == 0)
        REQUIRE(strlen(accept) == 28);
    return 0;
}
