/*
 * WebSocket framing (RFC 6455), shared by the server and libnatter. Pure
 * functions over byte buffers: no sockets, no allocation except inside the
 * message assembler, so every path is easy to unit test and fuzz.
 *
 * The server parses masked client frames (an unmasked one is a protocol
 * error, 1002) and writes unmasked frames; the client does the opposite.
 */
#ifndef NT_WS_H
#define NT_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"

enum {
    NT_WS_OP_CONT = 0x0,
    NT_WS_OP_TEXT = 0x1,
    NT_WS_OP_BINARY = 0x2,
    NT_WS_OP_CLOSE = 0x8,
    NT_WS_OP_PING = 0x9,
    NT_WS_OP_PONG = 0xA,
};

/* Close codes we send. */
enum {
    NT_WS_CLOSE_NORMAL = 1000,
    NT_WS_CLOSE_GOING_AWAY = 1001,
    NT_WS_CLOSE_PROTOCOL = 1002,
    NT_WS_CLOSE_BAD_DATA = 1007, /* e.g. text that is not UTF-8 */
    NT_WS_CLOSE_POLICY = 1008,   /* e.g. slow consumer */
    NT_WS_CLOSE_TOO_BIG = 1009,
    NT_WS_CLOSE_INTERNAL = 1011,
    NT_WS_CLOSE_TRY_AGAIN = 1013, /* a backing service is down */
    NT_WS_CLOSE_AUTH = 4001,      /* API.md: no or bad auth frame */
};

typedef struct nt_ws_frame {
    bool fin;
    uint8_t opcode;
    uint8_t *payload; /* points into the parsed input, already unmasked */
    size_t len;
} nt_ws_frame;

/*
 * Parses one frame at the start of in[0..len). Unmasks the payload in place.
 *   > 0: a whole frame was parsed; returns the bytes it took.
 *   = 0: more bytes are needed.
 *   < 0: minus the close code to send (-1002 protocol error: bad opcode,
 *        reserved bits, masking wrong for the side, control frame that is
 *        fragmented or over 125 bytes, non-minimal length is allowed;
 *        -1009: payload longer than max_payload).
 * `from_client`: true on the server (frames must be masked), false in the
 * client (frames must not be masked).
 */
ssize_t nt_ws_parse(uint8_t *in, size_t len, size_t max_payload, bool from_client,
                    nt_ws_frame *frame);

/* Writes the header of a final, unmasked frame (server to client) into
 * out[0..10) and returns its length. */
size_t nt_ws_header(uint8_t out[10], uint8_t opcode, size_t payload_len);

/* Appends a whole final frame to `out`; masked with a random key when
 * `masked` (client to server). Returns 0 or -ENOMEM. */
int nt_ws_append_frame(nt_buf *out, uint8_t opcode, const void *payload, size_t len, bool masked);

/* Appends a close frame with a status code and a reason (<= 123 bytes). */
int nt_ws_append_close(nt_buf *out, uint16_t code, const char *reason, bool masked);

/*
 * Reassembles fragmented data messages. Control frames must be handled by
 * the caller and never passed here.
 *   1: a whole message is ready in *msg / *msg_len (valid until the next
 *      call), its opcode in *opcode; text has been checked to be UTF-8.
 *   0: a fragment was taken; more are needed.
 *  <0: minus the close code (-1002 continuation without start or new start
 *      inside a message, -1007 invalid UTF-8, -1009 message over max_message).
 */
typedef struct nt_ws_assembler {
    nt_buf msg; /* only used for fragmented messages */
    uint8_t opcode;
    bool active;
} nt_ws_assembler;

int nt_ws_assemble(nt_ws_assembler *a, const nt_ws_frame *frame, size_t max_message,
                   const uint8_t **msg, size_t *msg_len, uint8_t *opcode);
void nt_ws_assembler_free(nt_ws_assembler *a);
/* (Addition) Memory: a fragmented message stays in a->msg until the next
 * nt_ws_assemble call, which frees it. To give it back as soon as it is
 * handled, call nt_ws_assembler_free; the assembler stays usable. */

/*
 * Checks the payload of a received close frame (RFC 6455 5.5.1, 7.4).
 *   0:  acceptable; *code is the peer's status, or 1005 when it sent none.
 *  <0:  minus the close code to answer with: -1002 for a 1-byte payload or a
 *       status that must not be sent on the wire (e.g. 1005, 1006, 999),
 *       -1007 when the reason is not UTF-8.
 */
int nt_ws_close_check(const uint8_t *payload, size_t len, uint16_t *code);

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)), 28
 * characters plus NUL. Returns 0, or -EINVAL if the key is not 24 base64
 * characters that decode to 16 bytes. */
int nt_ws_accept_key(const char *client_key, size_t key_len, char out[29]);

/* A random Sec-WebSocket-Key for the client side (24 chars + NUL). */
void nt_ws_client_key(char out[25]);

#endif
