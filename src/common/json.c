/*
 * Strict JSON reader and compact JSON writer: see json.h.
 *
 * The reader is one forward pass with an explicit stack of open containers
 * (no recursion, so the depth limit is the only bound on nesting). Tokens are
 * laid out in document order; a token's `end` is the index just past its
 * subtree. Besides what json.h promises, every token's `start`/`len` span its
 * text in the source: for strings the raw bytes between the quotes, for
 * numbers and literals the value itself, for objects and arrays everything
 * from the opening to the closing bracket inclusive. nt_json_next uses that
 * span to look at the byte after a value (',' or a closing bracket) instead
 * of keeping parent links in the tokens.
 *
 * Strings are validated once at parse time (escapes, surrogate pairs, UTF-8,
 * no raw control characters), so the accessors may trust every string token
 * they are handed and only decode.
 */
#include "common/json.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "common/utf8.h"

/* ---- reader ------------------------------------------------------------ */

/* Byte classes inside a string: 0 ordinary ASCII, 1 quote, 2 backslash,
 * 3 control character (forbidden raw), 4 start of a multi-byte sequence. */
enum { SC_PLAIN, SC_QUOTE, SC_ESCAPE, SC_CONTROL, SC_HIGH };

static const uint8_t json__str_class[256] = {
    [0x00] = SC_CONTROL, [0x01] = SC_CONTROL, [0x02] = SC_CONTROL,       [0x03] = SC_CONTROL,
    [0x04] = SC_CONTROL, [0x05] = SC_CONTROL, [0x06] = SC_CONTROL,       [0x07] = SC_CONTROL,
    [0x08] = SC_CONTROL, [0x09] = SC_CONTROL, [0x0A] = SC_CONTROL,       [0x0B] = SC_CONTROL,
    [0x0C] = SC_CONTROL, [0x0D] = SC_CONTROL, [0x0E] = SC_CONTROL,       [0x0F] = SC_CONTROL,
    [0x10] = SC_CONTROL, [0x11] = SC_CONTROL, [0x12] = SC_CONTROL,       [0x13] = SC_CONTROL,
    [0x14] = SC_CONTROL, [0x15] = SC_CONTROL, [0x16] = SC_CONTROL,       [0x17] = SC_CONTROL,
    [0x18] = SC_CONTROL, [0x19] = SC_CONTROL, [0x1A] = SC_CONTROL,       [0x1B] = SC_CONTROL,
    [0x1C] = SC_CONTROL, [0x1D] = SC_CONTROL, [0x1E] = SC_CONTROL,       [0x1F] = SC_CONTROL,
    ['"'] = SC_QUOTE,    ['\\'] = SC_ESCAPE,  [0x80 ... 0xFF] = SC_HIGH,
};

static inline bool json__is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool json__is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int json__hex(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20; /* fold to lower case */
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Four hex digits at s (the caller checked they are in bounds), or -1. */
static int32_t json__hex4(const unsigned char *s)
{
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = json__hex(s[i]);
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

/*
 * Scans a string whose opening quote is at s[pos - 1]. On success returns
 * the offset of the closing quote; on failure -1.
 */
static ptrdiff_t json__scan_string(const unsigned char *s, size_t len, size_t pos)
{
    size_t begin = pos;
    bool high = false;
    for (;;) {
        /* Hot loop: skip ordinary ASCII. */
        while (pos < len && json__str_class[s[pos]] == SC_PLAIN)
            pos++;
        if (pos >= len) return -1;
        switch (json__str_class[s[pos]]) {
        case SC_QUOTE:
            /* Escapes are ASCII, so validating the raw span validates the
             * text; only strings that hold non-ASCII bytes pay for it. */
            if (high && !nt_utf8_valid((const char *)s + begin, pos - begin)) return -1;
            return (ptrdiff_t)pos;
        case SC_HIGH:
            high = true;
            pos++;
            break;
        case SC_CONTROL:
            return -1;
        case SC_ESCAPE:
            if (++pos >= len) return -1;
            switch (s[pos]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                pos++;
                break;
            case 'u': {
                if (len - pos < 5) return -1;
                int32_t cp = json__hex4(s + pos + 1);
                pos += 5;
                if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
                    return -1; /* bad hex or a lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    /* A high surrogate must be followed by \u and a low one. */
                    if (len - pos < 6 || s[pos] != '\\' || s[pos + 1] != 'u') return -1;
                    int32_t lo = json__hex4(s + pos + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                    pos += 6;
                }
                break;
            }
            default:
                return -1;
            }
            break;
        }
    }
}

/* Scans a number starting at s[pos]; returns the offset just past it or -1. */
static ptrdiff_t json__scan_number(const unsigned char *s, size_t len, size_t pos)
{
    if (pos < len && s[pos] == '-') pos++;
    if (pos >= len) return -1;
    if (s[pos] == '0') {
        pos++; /* no leading zeros: a 0 stands alone before . or e */
    } else if (s[pos] >= '1' && s[pos] <= '9') {
        while (pos < len && json__is_digit(s[pos]))
            pos++;
    } else {
        return -1;
    }
    if (pos < len && s[pos] == '.') {
        pos++;
        if (pos >= len || !json__is_digit(s[pos])) return -1;
        while (pos < len && json__is_digit(s[pos]))
            pos++;
    }
    if (pos < len && (s[pos] == 'e' || s[pos] == 'E')) {
        pos++;
        if (pos < len && (s[pos] == '+' || s[pos] == '-')) pos++;
        if (pos >= len || !json__is_digit(s[pos])) return -1;
        while (pos < len && json__is_digit(s[pos]))
            pos++;
    }
    return (ptrdiff_t)pos;
}

int nt_json_parse(nt_json *doc, const char *src, size_t len, nt_json_tok *toks, int cap)
{
    const unsigned char *s = (const unsigned char *)src;
    int stack[NT_JSON_MAX_DEPTH]; /* token indices of the open containers */
    int depth = 0;
    int n = 0;
    size_t pos = 0;
    int rc = NT_JSON_ERR_SYNTAX;

    doc->src = src;
    doc->src_len = len;
    doc->toks = toks;
    doc->ntoks = 0;
    doc->cap = cap;
    if (len >= UINT32_MAX) /* offsets are 32-bit */
        goto fail;

    while (pos < len && json__is_ws(s[pos]))
        pos++;

value:
    /* Here pos is at the first byte of a value (whitespace skipped). */
    if (pos >= len) goto fail;
    if (n >= cap) {
        rc = NT_JSON_ERR_TOKENS;
        goto fail;
    }
    {
        nt_json_tok *t = &toks[n];
        t->start = (uint32_t)pos;
        t->count = 0;
        unsigned char c = s[pos];
        switch (c) {
        case '{':
        case '[':
            if (depth == NT_JSON_MAX_DEPTH) {
                rc = NT_JSON_ERR_DEPTH;
                goto fail;
            }
            t->type = c == '{' ? NT_JSON_OBJECT : NT_JSON_ARRAY;
            stack[depth++] = n++;
            pos++;
            while (pos < len && json__is_ws(s[pos]))
                pos++;
            if (pos >= len) goto fail;
            if (s[pos] == (c == '{' ? '}' : ']')) goto close;
            t->count = 1;
            if (c == '{') goto key;
            goto value;
        case '"': {
            ptrdiff_t q = json__scan_string(s, len, pos + 1);
            if (q < 0) goto fail;
            t->type = NT_JSON_STRING;
            t->start = (uint32_t)(pos + 1);
            t->len = (uint32_t)((size_t)q - pos - 1);
            pos = (size_t)q + 1;
            break;
        }
        case 't':
            if (len - pos < 4 || memcmp(s + pos, "true", 4) != 0) goto fail;
            t->type = NT_JSON_TRUE;
            t->len = 4;
            pos += 4;
            break;
        case 'f':
            if (len - pos < 5 || memcmp(s + pos, "false", 5) != 0) goto fail;
            t->type = NT_JSON_FALSE;
            t->len = 5;
            pos += 5;
            break;
        case 'n':
            if (len - pos < 4 || memcmp(s + pos, "null", 4) != 0) goto fail;
            t->type = NT_JSON_NULL;
            t->len = 4;
            pos += 4;
            break;
        default: {
            ptrdiff_t e = json__scan_number(s, len, pos);
            if (e < 0) goto fail;
            t->type = NT_JSON_NUMBER;
            t->len = (uint32_t)((size_t)e - pos);
            pos = (size_t)e;
            break;
        }
        }
        n++;
        t->end = (uint32_t)n;
    }

after:
    /* A value just ended; what may follow depends on the container. */
    while (pos < len && json__is_ws(s[pos]))
        pos++;
    if (depth == 0) {
        if (pos != len) goto fail; /* trailing garbage */
        doc->ntoks = n;
        return 0;
    }
    if (pos >= len) goto fail;
    {
        nt_json_tok *parent = &toks[stack[depth - 1]];
        bool in_object = parent->type == NT_JSON_OBJECT;
        if (s[pos] == ',') {
            pos++;
            while (pos < len && json__is_ws(s[pos]))
                pos++;
            parent->count++;
            if (in_object) goto key;
            goto value;
        }
        if (s[pos] != (in_object ? '}' : ']')) goto fail;
    }

close:
    /* pos is at the closing bracket of the innermost container. */
    {
        nt_json_tok *t = &toks[stack[--depth]];
        t->len = (uint32_t)(pos + 1 - t->start);
        t->end = (uint32_t)n;
        pos++;
    }
    goto after;

key:
    /* pos is at an object key (whitespace skipped). */
    if (pos >= len || s[pos] != '"') goto fail;
    if (n >= cap) {
        rc = NT_JSON_ERR_TOKENS;
        goto fail;
    }
    {
        ptrdiff_t q = json__scan_string(s, len, pos + 1);
        if (q < 0) goto fail;
        nt_json_tok *t = &toks[n++];
        t->type = NT_JSON_STRING;
        t->start = (uint32_t)(pos + 1);
        t->len = (uint32_t)((size_t)q - pos - 1);
        t->count = 0;
        t->end = (uint32_t)n;
        pos = (size_t)q + 1;
    }
    while (pos < len && json__is_ws(s[pos]))
        pos++;
    if (pos >= len || s[pos] != ':') goto fail;
    pos++;
    while (pos < len && json__is_ws(s[pos]))
        pos++;
    goto value;

fail:
    doc->ntoks = 0;
    return rc;
}

static inline bool json__valid_tok(const nt_json *doc, int tok)
{
    return tok >= 0 && tok < doc->ntoks;
}

/*
 * Decodes one character of a validated raw string at raw[*i] into utf8[],
 * advances *i and returns the number of bytes written (1..4). An escaped
 * U+0000 comes out as a single NUL byte.
 */
static int json__decode_char(const char *raw, size_t *i, char utf8[4])
{
    const unsigned char *s = (const unsigned char *)raw;
    size_t p = *i;
    if (s[p] != '\\') {
        utf8[0] = (char)s[p];
        *i = p + 1;
        return 1;
    }
    unsigned char e = s[p + 1];
    *i = p + 2;
    switch (e) {
    case 'b':
        utf8[0] = '\b';
        return 1;
    case 'f':
        utf8[0] = '\f';
        return 1;
    case 'n':
        utf8[0] = '\n';
        return 1;
    case 'r':
        utf8[0] = '\r';
        return 1;
    case 't':
        utf8[0] = '\t';
        return 1;
    case 'u':
        break;
    default:
        utf8[0] = (char)e;
        return 1; /* " \ / */
    }
    uint32_t cp = (uint32_t)json__hex4(s + p + 2);
    *i = p + 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t lo = (uint32_t)json__hex4(s + p + 8);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        *i = p + 12;
    }
    if (cp < 0x80) {
        utf8[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        utf8[0] = (char)(0xC0 | cp >> 6);
        utf8[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        utf8[0] = (char)(0xE0 | cp >> 12);
        utf8[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        utf8[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    utf8[0] = (char)(0xF0 | cp >> 18);
    utf8[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    utf8[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    utf8[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Compares the raw (escaped) string text with s[0..slen) after unescaping. */
static bool json__raw_eq(const char *raw, size_t raw_len, const char *s, size_t slen)
{
    /* Unescaping only ever shortens the text, so with equal lengths the
     * text matches only if the bytes do and there is no escape; a shorter
     * raw text never matches. This keeps the common lookups to a length
     * test and a memcmp. */
    if (raw_len == slen) return memcmp(raw, s, slen) == 0 && !memchr(raw, '\\', raw_len);
    if (raw_len < slen || !memchr(raw, '\\', raw_len)) return false;
    size_t i = 0, j = 0;
    while (i < raw_len) {
        char utf8[4];
        int k = json__decode_char(raw, &i, utf8);
        if (slen - j < (size_t)k || memcmp(s + j, utf8, (size_t)k) != 0) return false;
        j += (size_t)k;
    }
    return j == slen;
}

int nt_json_get(const nt_json *doc, int obj, const char *key)
{
    if (!json__valid_tok(doc, obj) || doc->toks[obj].type != NT_JSON_OBJECT) return -1;
    size_t key_len = strlen(key);
    int found = -1;
    int k = obj + 1;
    for (uint32_t i = 0; i < doc->toks[obj].count; i++) {
        const nt_json_tok *t = &doc->toks[k];
        if (json__raw_eq(doc->src + t->start, t->len, key, key_len))
            found = k + 1; /* keep looking: the last duplicate wins */
        k = (int)doc->toks[k + 1].end;
    }
    return found;
}

int nt_json_first(const nt_json *doc, int container)
{
    if (!json__valid_tok(doc, container)) return -1;
    const nt_json_tok *t = &doc->toks[container];
    if ((t->type != NT_JSON_OBJECT && t->type != NT_JSON_ARRAY) || t->count == 0) return -1;
    return container + 1;
}

int nt_json_next(const nt_json *doc, int child)
{
    if (!json__valid_tok(doc, child)) return -1;
    /* For an object key the sibling comes after its value. */
    int last = child;
    const char *s = doc->src;
    const nt_json_tok *t = &doc->toks[child];
    if (t->type == NT_JSON_STRING && child + 1 < doc->ntoks) {
        /* A string followed by ':' is a key. */
        size_t p = (size_t)t->start + t->len + 1;
        while (p < doc->src_len && json__is_ws((unsigned char)s[p]))
            p++;
        if (p < doc->src_len && s[p] == ':') last = child + 1;
    }
    t = &doc->toks[last];
    /* Past the value's text; strings also have their closing quote. */
    size_t p = (size_t)t->start + t->len + (t->type == NT_JSON_STRING);
    while (p < doc->src_len && json__is_ws((unsigned char)s[p]))
        p++;
    if (p < doc->src_len && s[p] == ',') return (int)t->end;
    return -1;
}

int nt_json_int(const nt_json *doc, int tok, int64_t *out)
{
    if (!json__valid_tok(doc, tok) || doc->toks[tok].type != NT_JSON_NUMBER) return -1;
    const unsigned char *s = (const unsigned char *)doc->src + doc->toks[tok].start;
    size_t len = doc->toks[tok].len;
    size_t i = 0;
    bool neg = false;
    if (s[0] == '-') {
        neg = true;
        i = 1;
    }
    /* The limit on the magnitude: 2^63 - 1, or 2^63 for negatives. */
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (!json__is_digit(s[i])) return -1; /* a fraction or an exponent */
        unsigned d = s[i] - '0';
        if (v > (limit - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

int nt_json_str(const nt_json *doc, int tok, char *out, size_t cap)
{
    if (!json__valid_tok(doc, tok) || doc->toks[tok].type != NT_JSON_STRING) return -1;
    const char *raw = doc->src + doc->toks[tok].start;
    size_t raw_len = doc->toks[tok].len;
    if (cap == 0) return -2;
    size_t room = cap - 1; /* keep one byte for the NUL */
    if (room > INT_MAX) room = INT_MAX;
    const char *esc = memchr(raw, '\\', raw_len);
    if (!esc) {
        if (raw_len > room) return -2;
        memcpy(out, raw, raw_len);
        out[raw_len] = '\0';
        return (int)raw_len;
    }
    /* Copy the plain prefix in one go, then decode character by character. */
    size_t i = (size_t)(esc - raw), j = i;
    if (j > room) return -2;
    memcpy(out, raw, j);
    while (i < raw_len) {
        if (raw[i] != '\\') {
            const char *next = memchr(raw + i, '\\', raw_len - i);
            size_t chunk = (next ? (size_t)(next - raw) : raw_len) - i;
            if (room - j < chunk) return -2;
            memcpy(out + j, raw + i, chunk);
            i += chunk;
            j += chunk;
            continue;
        }
        char utf8[4];
        int k = json__decode_char(raw, &i, utf8);
        if (k == 1 && utf8[0] == '\0') return -3;
        if (room - j < (size_t)k) return -2;
        memcpy(out + j, utf8, (size_t)k);
        j += (size_t)k;
    }
    out[j] = '\0';
    return (int)j;
}

bool nt_json_str_eq(const nt_json *doc, int tok, const char *s)
{
    if (!json__valid_tok(doc, tok) || doc->toks[tok].type != NT_JSON_STRING) return false;
    const nt_json_tok *t = &doc->toks[tok];
    return json__raw_eq(doc->src + t->start, t->len, s, strlen(s));
}

/* ---- writer ------------------------------------------------------------ */

/*
 * Besides -ENOMEM from the buffer, the writer records -EOVERFLOW for nesting
 * deeper than need_comma has bits and -EINVAL for an end without its start.
 * After the first error every call does nothing.
 */
#define JW_MAX_DEPTH 63

static void jw__append(nt_jw *w, const char *bytes, size_t len)
{
    int rc = nt_buf_append(w->out, bytes, len);
    if (rc && !w->err) w->err = rc;
}

/* Everything a value needs before its first byte: the comma, if any. */
static bool jw__begin_value(nt_jw *w)
{
    if (w->err) return false;
    if (w->after_key) {
        w->after_key = false;
        return true;
    }
    uint64_t bit = (uint64_t)1 << w->depth;
    if (w->need_comma & bit) jw__append(w, ",", 1);
    w->need_comma |= bit;
    return !w->err;
}

void nt_jw_init(nt_jw *w, nt_buf *out)
{
    w->out = out;
    w->depth = 0;
    w->need_comma = 0;
    w->after_key = false;
    w->err = 0;
}

static void jw__open(nt_jw *w, char bracket)
{
    if (!jw__begin_value(w)) return;
    if (w->depth >= JW_MAX_DEPTH) {
        w->err = -EOVERFLOW;
        return;
    }
    jw__append(w, &bracket, 1);
    w->depth++;
    w->need_comma &= ~((uint64_t)1 << w->depth);
}

static void jw__close(nt_jw *w, char bracket)
{
    if (w->err) return;
    if (w->depth == 0 || w->after_key) {
        w->err = -EINVAL;
        return;
    }
    jw__append(w, &bracket, 1);
    w->depth--;
}

void nt_jw_obj(nt_jw *w)
{
    jw__open(w, '{');
}

void nt_jw_obj_end(nt_jw *w)
{
    jw__close(w, '}');
}

void nt_jw_arr(nt_jw *w)
{
    jw__open(w, '[');
}

void nt_jw_arr_end(nt_jw *w)
{
    jw__close(w, ']');
}

/* Bytes that cannot appear raw in a JSON string: controls, quote, backslash. */
static inline bool jw__needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* Appends s as a quoted JSON string. Non-ASCII bytes pass through as is. */
static void jw__quoted(nt_jw *w, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* Reserve for the common case (nothing to escape) in one go. */
    int rc = nt_buf_reserve(w->out, len + 2);
    if (rc) {
        w->err = rc;
        return;
    }
    jw__append(w, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!jw__needs_escape(c)) continue;
        jw__append(w, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t esc_len = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xF];
            esc_len = 6;
            break;
        }
        jw__append(w, esc, esc_len);
    }
    jw__append(w, s + run, len - run);
    jw__append(w, "\"", 1);
}

void nt_jw_key(nt_jw *w, const char *key)
{
    if (!jw__begin_value(w)) return;
    jw__quoted(w, key, strlen(key));
    jw__append(w, ":", 1);
    w->after_key = true;
}

void nt_jw_strn(nt_jw *w, const char *s, size_t len)
{
    if (!jw__begin_value(w)) return;
    jw__quoted(w, s, len);
}

void nt_jw_str(nt_jw *w, const char *s)
{
    if (!s) {
        nt_jw_null(w);
        return;
    }
    nt_jw_strn(w, s, strlen(s));
}

void nt_jw_str_or_null(nt_jw *w, const char *s)
{
    if (!s || !*s)
        nt_jw_null(w);
    else
        nt_jw_strn(w, s, strlen(s));
}

void nt_jw_int(nt_jw *w, int64_t v)
{
    if (!jw__begin_value(w)) return;
    char digits[20];
    size_t n = 0;
    /* Work on the magnitude as unsigned so INT64_MIN needs no special case. */
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (v < 0) jw__append(w, "-", 1);
    jw__append(w, digits + sizeof digits - n, n);
}

void nt_jw_bool(nt_jw *w, bool v)
{
    if (!jw__begin_value(w)) return;
    if (v)
        jw__append(w, "true", 4);
    else
        jw__append(w, "false", 5);
}

void nt_jw_null(nt_jw *w)
{
    if (!jw__begin_value(w)) return;
    jw__append(w, "null", 4);
}

void nt_jw_raw(nt_jw *w, const char *json, size_t len)
{
    if (!jw__begin_value(w)) return;
    jw__append(w, json, len);
}

void nt_jw_kstr(nt_jw *w, const char *key, const char *s)
{
    nt_jw_key(w, key);
    nt_jw_str(w, s);
}

void nt_jw_kint(nt_jw *w, const char *key, int64_t v)
{
    nt_jw_key(w, key);
    nt_jw_int(w, v);
}

void nt_jw_kbool(nt_jw *w, const char *key, bool v)
{
    nt_jw_key(w, key);
    nt_jw_bool(w, v);
}
