/*
 * JSON without a heap. The reader parses strict RFC 8259 text into a
 * caller-provided array of tokens that point into the source (no copies, no
 * allocation), so decoding a WebSocket frame on the hot path costs no malloc.
 * The writer appends compact JSON to an nt_buf and places the commas itself.
 *
 * Every decoder built on this reader is fuzzed (tests/fuzz/fuzz_json.c).
 */
#ifndef NT_JSON_H
#define NT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef enum {
    NT_JSON_OBJECT = 1,
    NT_JSON_ARRAY,
    NT_JSON_STRING,
    NT_JSON_NUMBER,
    NT_JSON_TRUE,
    NT_JSON_FALSE,
    NT_JSON_NULL,
} nt_json_type;

typedef struct nt_json_tok {
    uint8_t type;   /* nt_json_type */
    uint32_t start; /* offset in the source; strings: after the opening quote */
    uint32_t len;   /* strings: raw length between the quotes, still escaped */
    uint32_t count; /* objects: number of key/value pairs; arrays: elements */
    uint32_t end;   /* index of the first token after this value's subtree */
} nt_json_tok;

typedef struct nt_json {
    const char *src;
    size_t src_len;
    nt_json_tok *toks;
    int ntoks;
    int cap;
} nt_json;

#define NT_JSON_MAX_DEPTH 32

enum {
    NT_JSON_ERR_SYNTAX = -1, /* not valid JSON (including invalid UTF-8) */
    NT_JSON_ERR_TOKENS = -2, /* more values than the token array holds */
    NT_JSON_ERR_DEPTH = -3,  /* nested deeper than NT_JSON_MAX_DEPTH */
};

/*
 * Parses `len` bytes of `src` (one JSON value, optional surrounding
 * whitespace, nothing else) into `toks[0..cap)`. Token 0 is the root.
 * Objects are laid out as key, value, key, value... after their token.
 * Returns 0 or an NT_JSON_ERR_* code. The source must outlive the tokens.
 */
int nt_json_parse(nt_json *doc, const char *src, size_t len, nt_json_tok *toks, int cap);

/* The value token for `key` in object token `obj`, or -1 (also if obj is not
 * an object). Keys are compared after unescaping. With duplicate keys the
 * last one wins. */
int nt_json_get(const nt_json *doc, int obj, const char *key);
/* Iteration over array elements / object keys: first child and the next
 * sibling of a child, -1 at the end. For objects the children are the keys;
 * the value of key k is k + 1. */
int nt_json_first(const nt_json *doc, int container);
int nt_json_next(const nt_json *doc, int child);

static inline int nt_json_type_of(const nt_json *doc, int tok)
{
    return tok < 0 ? 0 : doc->toks[tok].type;
}
/* 0 if the token is an integer that fits int64 (no fraction, no exponent). */
int nt_json_int(const nt_json *doc, int tok, int64_t *out);
/* Unescapes a string token into out[0..cap) and NUL-terminates it. Returns
 * the byte length, or -1 if not a string, -2 if it does not fit, -3 if it
 * holds a \u0000 (we never accept NUL in text). */
int nt_json_str(const nt_json *doc, int tok, char *out, size_t cap);
/* True if the string token equals s exactly (after unescaping). */
bool nt_json_str_eq(const nt_json *doc, int tok, const char *s);

/* ---- writer ------------------------------------------------------------ */

typedef struct nt_jw {
    nt_buf *out;
    int depth;
    uint64_t need_comma; /* bit d: the container at depth d has a member */
    bool after_key;
    int err; /* first error (-ENOMEM), sticky */
} nt_jw;

void nt_jw_init(nt_jw *w, nt_buf *out);
void nt_jw_obj(nt_jw *w); /* { */
void nt_jw_obj_end(nt_jw *w);
void nt_jw_arr(nt_jw *w); /* [ */
void nt_jw_arr_end(nt_jw *w);
void nt_jw_key(nt_jw *w, const char *key);
void nt_jw_str(nt_jw *w, const char *s); /* escapes as needed */
void nt_jw_strn(nt_jw *w, const char *s, size_t len);
void nt_jw_str_or_null(nt_jw *w, const char *s); /* NULL or "" -> null */
void nt_jw_int(nt_jw *w, int64_t v);
void nt_jw_bool(nt_jw *w, bool v);
void nt_jw_null(nt_jw *w);
void nt_jw_raw(nt_jw *w, const char *json, size_t len); /* already-encoded value */
/* key + value shorthands */
void nt_jw_kstr(nt_jw *w, const char *key, const char *s);
void nt_jw_kint(nt_jw *w, const char *key, int64_t v);
void nt_jw_kbool(nt_jw *w, const char *key, bool v);
/* 0, or the first error the writer met. */
static inline int nt_jw_error(const nt_jw *w)
{
    return w->err;
}

#endif
