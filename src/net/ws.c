/*
 * WebSocket framing (RFC 6455): see ws.h. The parser works on whatever bytes
 * the connection has buffered and decides on every limit as early as the
 * header allows, so a peer can never make us wait for (or buffer) a payload
 * we are going to refuse. The assembler joins fragmented data messages and
 * checks text as it arrives; single-frame messages, the common case, are
 * handed back without a copy.
 */
#include "net/ws.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/utf8.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static bool ws__known_opcode(uint8_t opcode)
{
    switch (opcode) {
    case NT_WS_OP_CONT:
    case NT_WS_OP_TEXT:
    case NT_WS_OP_BINARY:
    case NT_WS_OP_CLOSE:
    case NT_WS_OP_PING:
    case NT_WS_OP_PONG:
        return true;
    default:
        return false;
    }
}

/* XORs the payload with the 4-byte key, eight bytes at a time. memcpy keeps
 * the word accesses legal at any alignment; compilers turn it into plain
 * loads and stores. */
static void ws__mask(uint8_t *payload, size_t len, const uint8_t key[4])
{
    uint8_t key8[8];
    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    uint64_t word_key;
    memcpy(&word_key, key8, 8);

    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, payload + i, 8);
        word ^= word_key;
        memcpy(payload + i, &word, 8);
    }
    for (; i < len; i++)
        payload[i] ^= key[i & 3];
}

ssize_t nt_ws_parse(uint8_t *in, size_t len, size_t max_payload, bool from_client,
                    nt_ws_frame *frame)
{
    if (len < 1) return 0;
    /* The first byte alone can already be refused. */
    uint8_t b0 = in[0];
    bool fin = (b0 & 0x80) != 0;
    uint8_t opcode = b0 & 0x0F;
    bool control = (opcode & 0x08) != 0;
    if (b0 & 0x70) /* RSV1-3: we negotiate no extension */
        return -NT_WS_CLOSE_PROTOCOL;
    if (!ws__known_opcode(opcode)) return -NT_WS_CLOSE_PROTOCOL;
    if (control && !fin) return -NT_WS_CLOSE_PROTOCOL;
    if (len < 2) return 0;

    uint8_t b1 = in[1];
    bool masked = (b1 & 0x80) != 0;
    if (masked != from_client) return -NT_WS_CLOSE_PROTOCOL;
    uint64_t plen = b1 & 0x7F;
    if (control && plen > 125) return -NT_WS_CLOSE_PROTOCOL;

    size_t hdr = 2;
    if (plen == 126) {
        if (len < 4) return 0;
        plen = (uint64_t)in[2] << 8 | in[3];
        hdr = 4;
    } else if (plen == 127) {
        if (len < 10) return 0;
        plen = 0;
        for (int k = 0; k < 8; k++)
            plen = plen << 8 | in[2 + k];
        if (plen >> 63) return -NT_WS_CLOSE_PROTOCOL;
        hdr = 10;
    }
    /* Known before the mask key and the payload: refuse now. */
    if (plen > max_payload) return -NT_WS_CLOSE_TOO_BIG;

    const uint8_t *key = NULL;
    if (masked) {
        if (len < hdr + 4) return 0;
        key = in + hdr;
        hdr += 4;
    }
    if (plen > len - hdr) return 0;
    if (plen > (uint64_t)SSIZE_MAX - hdr) /* only with an absurd max_payload */
        return -NT_WS_CLOSE_TOO_BIG;

    uint8_t *payload = in + hdr;
    if (key) ws__mask(payload, (size_t)plen, key);
    frame->fin = fin;
    frame->opcode = opcode;
    frame->payload = payload;
    frame->len = (size_t)plen;
    return (ssize_t)(hdr + plen);
}

/* Header bytes for a final frame, mask bit as asked (the key is not written
 * here). Returns the length written, at most 10. */
static size_t ws__header(uint8_t out[10], uint8_t opcode, size_t payload_len, bool masked)
{
    uint8_t mask_bit = masked ? 0x80 : 0x00;
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (payload_len < 126) {
        out[1] = (uint8_t)(mask_bit | payload_len);
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = mask_bit | 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = mask_bit | 127;
    uint64_t n = payload_len;
    for (int k = 7; k >= 0; k--) {
        out[2 + k] = (uint8_t)n;
        n >>= 8;
    }
    return 10;
}

size_t nt_ws_header(uint8_t out[10], uint8_t opcode, size_t payload_len)
{
    return ws__header(out, opcode, payload_len, false);
}

/* Fills `out` with unpredictable bytes: the kernel first, OpenSSL if the
 * kernel call fails (it should not for short reads once booted). Masking
 * keys only need to be unguessable by scripts in a browser, but the same
 * helper makes Sec-WebSocket-Key. */
static void ws__random(void *out, size_t len)
{
    uint8_t *bytes = out;
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(bytes + got, len - got, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        got += (size_t)n;
    }
    if (got == len) return;
    if (RAND_bytes(bytes, (int)len) == 1) return;
    /* Last resort so we never send a predictable all-zero key. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)out;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes[i] = (uint8_t)x;
    }
}

int nt_ws_append_frame(nt_buf *out, uint8_t opcode, const void *payload, size_t len, bool masked)
{
    uint8_t hdr[14];
    size_t hlen = ws__header(hdr, opcode, len, masked);
    uint8_t key[4];
    if (masked) {
        ws__random(key, sizeof key);
        memcpy(hdr + hlen, key, 4);
        hlen += 4;
    }
    if (len > SIZE_MAX - hlen) return -ENOMEM;
    int rc = nt_buf_reserve(out, hlen + len);
    if (rc) return rc;
    uint8_t *dst = (uint8_t *)out->data + out->len;
    memcpy(dst, hdr, hlen);
    if (len) {
        memcpy(dst + hlen, payload, len);
        if (masked) ws__mask(dst + hlen, len, key);
    }
    out->len += hlen + len;
    return 0;
}

/* The longest prefix of s[0..len) that does not end inside a UTF-8
 * sequence, judged from lead bytes only (validity is checked elsewhere). */
static size_t ws__utf8_whole_prefix(const uint8_t *s, size_t len)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        uint8_t c = s[len - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: look further back */
        if (c < 0x80) return len;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        return k < need ? len - k : len;
    }
    return len;
}

int nt_ws_append_close(nt_buf *out, uint16_t code, const char *reason, bool masked)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123) /* cut at a character boundary so the reason stays UTF-8 */
        rlen = ws__utf8_whole_prefix((const uint8_t *)reason, 123);
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen) memcpy(payload + 2, reason, rlen);
    return nt_ws_append_frame(out, NT_WS_OP_CLOSE, payload, 2 + rlen, masked);
}

int nt_ws_close_check(const uint8_t *payload, size_t len, uint16_t *code)
{
    if (len == 0) {
        *code = 1005; /* "no status received" */
        return 0;
    }
    if (len == 1) return -NT_WS_CLOSE_PROTOCOL;
    uint16_t c = (uint16_t)(payload[0] << 8 | payload[1]);
    bool ok = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
    if (!ok) return -NT_WS_CLOSE_PROTOCOL;
    if (!nt_utf8_valid((const char *)payload + 2, len - 2)) return -NT_WS_CLOSE_BAD_DATA;
    *code = c;
    return 0;
}

/* Appends one fragment, checking text as far as it is complete so invalid
 * UTF-8 is refused as soon as it arrives, not at the end of the message.
 * Bytes before the last partial character were checked by earlier calls. */
static int ws__take_fragment(nt_ws_assembler *a, const nt_ws_frame *frame, size_t max_message)
{
    size_t old_len = a->msg.len;
    if (frame->len > max_message || old_len > max_message - frame->len) return -NT_WS_CLOSE_TOO_BIG;
    if (nt_buf_append(&a->msg, frame->payload, frame->len) != 0) return -NT_WS_CLOSE_INTERNAL;
    if (a->opcode != NT_WS_OP_TEXT) return 0;
    const uint8_t *s = (const uint8_t *)a->msg.data;
    size_t from = ws__utf8_whole_prefix(s, old_len);
    size_t to = frame->fin ? a->msg.len : ws__utf8_whole_prefix(s, a->msg.len);
    if (to > from && !nt_utf8_valid((const char *)s + from, to - from))
        return -NT_WS_CLOSE_BAD_DATA;
    return 0;
}

int nt_ws_assemble(nt_ws_assembler *a, const nt_ws_frame *frame, size_t max_message,
                   const uint8_t **msg, size_t *msg_len, uint8_t *opcode)
{
    int rc;
    /* A message handed out by the previous call is no longer needed. */
    if (!a->active && a->msg.data) nt_buf_free(&a->msg);

    switch (frame->opcode) {
    case NT_WS_OP_TEXT:
    case NT_WS_OP_BINARY:
        if (a->active) return -NT_WS_CLOSE_PROTOCOL;
        if (frame->fin) {
            /* Whole message in one frame: no copy. */
            if (frame->len > max_message) return -NT_WS_CLOSE_TOO_BIG;
            if (frame->opcode == NT_WS_OP_TEXT &&
                !nt_utf8_valid((const char *)frame->payload, frame->len))
                return -NT_WS_CLOSE_BAD_DATA;
            *msg = frame->len ? frame->payload : (const uint8_t *)"";
            *msg_len = frame->len;
            *opcode = frame->opcode;
            return 1;
        }
        a->active = true;
        a->opcode = frame->opcode;
        a->msg.len = 0;
        rc = ws__take_fragment(a, frame, max_message);
        if (rc) goto fail;
        return 0;
    case NT_WS_OP_CONT:
        if (!a->active) return -NT_WS_CLOSE_PROTOCOL;
        rc = ws__take_fragment(a, frame, max_message);
        if (rc) goto fail;
        if (!frame->fin) return 0;
        a->active = false; /* the buffer is freed on the next call */
        *msg = a->msg.data ? (const uint8_t *)a->msg.data : (const uint8_t *)"";
        *msg_len = a->msg.len;
        *opcode = a->opcode;
        return 1;
    default:
        return -NT_WS_CLOSE_PROTOCOL; /* control frames are the caller's */
    }

fail:
    /* The connection is closing; drop the partial message now. */
    nt_ws_assembler_free(a);
    return rc;
}

void nt_ws_assembler_free(nt_ws_assembler *a)
{
    nt_buf_free(&a->msg);
    a->active = false;
    a->opcode = 0;
}

int nt_ws_accept_key(const char *client_key, size_t key_len, char out[29])
{
    /* 16 bytes in base64 are 22 significant characters and "==". */
    if (key_len != 24 || client_key[22] != '=' || client_key[23] != '=') return -EINVAL;
    for (size_t i = 0; i < 22; i++) {
        char c = client_key[i];
        bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '+' || c == '/';
        if (!b64) return -EINVAL;
    }
    unsigned char joined[24 + sizeof WS_GUID - 1];
    memcpy(joined, client_key, 24);
    memcpy(joined + 24, WS_GUID, sizeof WS_GUID - 1);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(joined, sizeof joined, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH); /* 28 chars + NUL */
    return 0;
}

void nt_ws_client_key(char out[25])
{
    unsigned char nonce[16];
    ws__random(nonce, sizeof nonce);
    EVP_EncodeBlock((unsigned char *)out, nonce, sizeof nonce); /* 24 chars + NUL */
}
