/*
 * What every service handler sees: the shared context (store, bus, settings,
 * token key), the authenticated caller, and a reply to fill.
 *
 * Handlers are plain synchronous functions that run on a worker thread,
 * never on a loop thread: they may call the store (which blocks) and
 * nt_bus_deliver (safe from any thread) to emit events. The gateway calls the
 * same handler for a REST request and for the matching WebSocket frame, so a
 * rule is written once.
 *
 * Bad input: a handler validates everything, answers with nt_reply_error()
 * and a stable code from API.md, and changes nothing.
 */
#ifndef NT_SERVICES_API_H
#define NT_SERVICES_API_H

#include <stdbool.h>
#include <stdint.h>

#include "bus/bus.h"
#include "common/buf.h"
#include "common/json.h"
#include "common/rate_limit.h"
#include "store/store.h"

/* Limits from API.md (defaults; the config may change them). */
typedef struct nt_limits {
    int text_max_cp;       /* 4096 code points */
    int bio_max_cp;        /* 500 */
    int url_max;           /* 1024 bytes */
    int password_min;      /* 8 */
    int password_max;      /* 1024 */
    int title_max_cp;      /* 128 */
    int group_max_members; /* 1000 */
} nt_limits;

typedef struct nt_ctx nt_ctx;
struct nt_ctx {
    nt_store *store;
    nt_bus *bus;
    nt_limits limits;
    uint8_t jwt_key[32];           /* HS256 signing key */
    int access_ttl_s;              /* 900 */
    int64_t refresh_ttl_s;         /* 30 days */
    unsigned long long pwhash_ops; /* Argon2id cost (libsodium opslimit) */
    size_t pwhash_mem;             /* Argon2id memory (libsodium memlimit) */
    /* Called once for every newly stored message (not for repeats), on any
     * thread, after its fan-out: how the bot hears the chats it is in.
     * Must be quick (enqueue, never compute). NULL = nobody listens. */
    void (*message_hook)(struct nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n);
    void *bot; /* the bot service's state, when this process runs it */
    /* Failed logins per account (--login-failures): keyed by a keyed hash
     * of the lowercased login; NULL = no limit. nt_auth_login only. */
    nt_rate_table *login_limit;
    /* Message sends per user (--send-rate, --send-burst), WebSocket and
     * REST alike: nt_messages_send_allowed. NULL = no limit. */
    nt_rate_table *send_limit;
};

typedef struct nt_caller {
    int64_t user_id;
    int64_t session_id;
} nt_caller;

typedef struct nt_reply {
    int status;               /* HTTP status; 0 = not set yet */
    nt_buf body;              /* JSON (or JSON Lines for export) */
    const char *content_type; /* NULL = application/json */
    char headers[128];        /* extra "Name: value\r\n" lines, e.g. Retry-After */
    char code[32];            /* set by nt_reply_error: the stable error code */
    char message[256];        /* set by nt_reply_error: the human message */
} nt_reply;

/* Sets status and the body {"error":{"code","message"}}; the message is
 * printf-formatted and names the field at fault. */
void nt_reply_error(nt_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Maps a store error to 404 not_found / 409 conflict / 403 forbidden / 503
 * unavailable / 500 internal, with `what` in the message. */
void nt_reply_store_error(nt_reply *r, int store_rc, const char *what);
void nt_reply_free(nt_reply *r);

/* ---- validation helpers: on failure they fill the reply with a 400 that
 * names the field and return false. `required` false lets a missing field
 * through (returns true, *present = false). ---- */

/* A string field: valid UTF-8 (guaranteed by the JSON reader), no NUL, at
 * most max_cp code points and cap-1 bytes, at least min_cp code points. */
bool nt_field_str(nt_reply *r, const nt_json *doc, int obj, const char *name, bool required,
                  int min_cp, int max_cp, char *out, size_t cap, bool *present);
/* An integer field in [min, max]. */
bool nt_field_int(nt_reply *r, const nt_json *doc, int obj, const char *name, bool required,
                  int64_t min, int64_t max, int64_t *out, bool *present);

/* Parses the body as a JSON object into toks (400 if not). */
bool nt_body_object(nt_reply *r, const char *body, size_t len, nt_json *doc, nt_json_tok *toks,
                    int cap);

#endif
