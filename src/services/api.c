/*
 * The pieces every service handler shares: error replies in the one shape
 * API.md fixes ({"error":{"code","message"}}), the mapping from store errors
 * to HTTP statuses, and the field validators that turn a parsed JSON body
 * into checked C values or a 400 that names the field at fault. Handlers
 * never format an error body themselves, so the shape cannot drift.
 *
 * Field rules used throughout: a missing field and an explicit null are the
 * same thing (absent); a value of the wrong JSON type is a 400 naming the
 * field, never silently converted.
 */
#include "services/api.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"

void nt_reply_error(nt_reply *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    r->status = status;
    r->content_type = NULL;
    snprintf(r->code, sizeof r->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);

    /* Whatever a handler had started to write is dropped: an error reply
     * carries the error body only. */
    nt_buf_reset(&r->body);
    nt_jw w;
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "error");
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "code", r->code);
    nt_jw_kstr(&w, "message", r->message);
    nt_jw_obj_end(&w);
    nt_jw_obj_end(&w);
    /* Out of memory while writing the error: the status and code still tell
     * the gateway what happened; it sends an empty body. */
    if (nt_jw_error(&w)) nt_buf_reset(&r->body);
}

void nt_reply_store_error(nt_reply *r, int store_rc, const char *what)
{
    if (!what) what = "object";
    switch (store_rc) {
    case NT_STORE_ENOTFOUND:
        nt_reply_error(r, 404, "not_found", "%s not found", what);
        break;
    case NT_STORE_ECONFLICT:
        nt_reply_error(r, 409, "conflict", "%s already exists", what);
        break;
    case NT_STORE_EFORBIDDEN:
        nt_reply_error(r, 403, "forbidden", "%s: not allowed", what);
        break;
    case NT_STORE_EREUSED:
        /* Only refresh-token rotation returns it: the session is gone. */
        nt_reply_error(r, 401, "unauthorized", "%s was already used; the session is revoked", what);
        break;
    case NT_STORE_EINVAL:
        nt_reply_error(r, 400, "bad_request", "%s: invalid value", what);
        break;
    case NT_STORE_EUNAVAILABLE:
        nt_reply_error(r, 503, "unavailable", "storage is unavailable (%s)", what);
        break;
    default:
        nt_reply_error(r, 500, "internal", "internal error (%s, %d)", what, store_rc);
        break;
    }
}

void nt_reply_free(nt_reply *r)
{
    nt_buf_free(&r->body);
}

/* The value token of an optional field, or -1 when missing or null. */
static int api__field_tok(const nt_json *doc, int obj, const char *name)
{
    int tok = nt_json_get(doc, obj, name);
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) return -1;
    return tok;
}

bool nt_field_str(nt_reply *r, const nt_json *doc, int obj, const char *name, bool required,
                  int min_cp, int max_cp, char *out, size_t cap, bool *present)
{
    if (present) *present = false;
    if (cap > 0) out[0] = '\0';

    int tok = api__field_tok(doc, obj, name);
    if (tok < 0) {
        if (!required) return true;
        nt_reply_error(r, 400, "bad_request", "%s is required", name);
        return false;
    }
    if (nt_json_type_of(doc, tok) != NT_JSON_STRING) {
        nt_reply_error(r, 400, "bad_request", "%s must be a string", name);
        return false;
    }
    int n = nt_json_str(doc, tok, out, cap);
    if (n == -3) {
        nt_reply_error(r, 400, "bad_request", "%s must not contain NUL", name);
        return false;
    }
    if (n < 0) {
        if (max_cp > 0)
            nt_reply_error(r, 400, "bad_request", "%s is too long (at most %d characters)", name,
                           max_cp);
        else
            nt_reply_error(r, 400, "bad_request", "%s is too long", name);
        return false;
    }
    size_t cps = nt_utf8_count(out, (size_t)n);
    if ((max_cp > 0 && cps > (size_t)max_cp) || (min_cp > 0 && cps < (size_t)min_cp)) {
        if (max_cp > 0)
            nt_reply_error(r, 400, "bad_request", "%s must be %d..%d characters", name,
                           min_cp > 0 ? min_cp : 0, max_cp);
        else
            nt_reply_error(r, 400, "bad_request", "%s must be at least %d characters", name,
                           min_cp);
        return false;
    }
    if (present) *present = true;
    return true;
}

bool nt_field_int(nt_reply *r, const nt_json *doc, int obj, const char *name, bool required,
                  int64_t min, int64_t max, int64_t *out, bool *present)
{
    if (present) *present = false;

    int tok = api__field_tok(doc, obj, name);
    if (tok < 0) {
        if (!required) return true;
        nt_reply_error(r, 400, "bad_request", "%s is required", name);
        return false;
    }
    int64_t v;
    if (nt_json_type_of(doc, tok) != NT_JSON_NUMBER || nt_json_int(doc, tok, &v) != 0) {
        nt_reply_error(r, 400, "bad_request", "%s must be an integer", name);
        return false;
    }
    if (v < min || v > max) {
        nt_reply_error(r, 400, "bad_request", "%s must be between %" PRId64 " and %" PRId64, name,
                       min, max);
        return false;
    }
    *out = v;
    if (present) *present = true;
    return true;
}

bool nt_body_object(nt_reply *r, const char *body, size_t len, nt_json *doc, nt_json_tok *toks,
                    int cap)
{
    if (!body || len == 0) {
        nt_reply_error(r, 400, "bad_request", "body must be a JSON object");
        return false;
    }
    int rc = nt_json_parse(doc, body, len, toks, cap);
    if (rc == NT_JSON_ERR_TOKENS) {
        nt_reply_error(r, 400, "bad_request", "body has too many values");
        return false;
    }
    if (rc == NT_JSON_ERR_DEPTH) {
        nt_reply_error(r, 400, "bad_request", "body is nested too deeply");
        return false;
    }
    if (rc != 0) {
        nt_reply_error(r, 400, "bad_request", "body is not valid JSON");
        return false;
    }
    if (nt_json_type_of(doc, 0) != NT_JSON_OBJECT) {
        nt_reply_error(r, 400, "bad_request", "body must be a JSON object");
        return false;
    }
    return true;
}
