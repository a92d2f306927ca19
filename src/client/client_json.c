/*
 * libnatter's JSON conveniences (see natter.h): look a value up by a dotted
 * path in one call, for tests and the CLI that read a field or two out of an
 * answer. Built on the no-allocation reader of common/json.h; the token
 * array lives on the stack for ordinary documents and on the heap for big
 * ones.
 */
#include "client/natter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

#define JSON_STACK_TOKENS 512

typedef struct json_doc {
    nt_json doc;
    nt_json_tok stack[JSON_STACK_TOKENS];
    nt_json_tok *heap;
} json_doc;

static int json__open(json_doc *d, const char *json, size_t len)
{
    d->heap = NULL;
    int rc = nt_json_parse(&d->doc, json, len, d->stack, JSON_STACK_TOKENS);
    if (rc == NT_JSON_ERR_TOKENS) {
        /* A value takes at least two bytes of text (with its separator), so
         * len / 2 + 2 tokens always suffice. */
        size_t cap = len / 2 + 2;
        if (cap > (size_t)1 << 30) return -EINVAL;
        d->heap = malloc(cap * sizeof *d->heap);
        if (!d->heap) return -ENOMEM;
        rc = nt_json_parse(&d->doc, json, len, d->heap, (int)cap);
    }
    return rc ? -EINVAL : 0;
}

static void json__close(json_doc *d)
{
    free(d->heap);
}

/* The token at `path` (see natter.h), -ENOENT or -EINVAL. */
static int json__find(const nt_json *doc, const char *path)
{
    int tok = 0;
    const char *seg = path;
    while (*seg) {
        const char *dot = strchr(seg, '.');
        size_t seg_len = dot ? (size_t)(dot - seg) : strlen(seg);
        char key[128];
        if (seg_len >= sizeof key) return -ENOENT;
        memcpy(key, seg, seg_len);
        key[seg_len] = '\0';
        int type = nt_json_type_of(doc, tok);
        if (type == NT_JSON_OBJECT) {
            tok = nt_json_get(doc, tok, key);
        } else if (type == NT_JSON_ARRAY) {
            char *end;
            long index = strtol(key, &end, 10);
            if (seg_len == 0 || *end || index < 0) return -ENOENT;
            tok = nt_json_first(doc, tok);
            while (tok >= 0 && index-- > 0)
                tok = nt_json_next(doc, tok);
        } else {
            return -ENOENT;
        }
        if (tok < 0) return -ENOENT;
        seg = dot ? dot + 1 : seg + seg_len;
    }
    return tok;
}

int ntc_json_int(const char *json, size_t len, const char *path, int64_t *out)
{
    json_doc d;
    int rc = json__open(&d, json, len);
    if (rc == 0) {
        int tok = json__find(&d.doc, path);
        rc = tok < 0 ? tok : nt_json_int(&d.doc, tok, out) == 0 ? 0 : -EINVAL;
    }
    json__close(&d);
    return rc;
}

int ntc_json_str(const char *json, size_t len, const char *path, char *out, size_t cap)
{
    json_doc d;
    int rc = json__open(&d, json, len);
    if (rc == 0) {
        int tok = json__find(&d.doc, path);
        if (tok < 0) {
            rc = tok;
        } else {
            rc = nt_json_str(&d.doc, tok, out, cap);
            if (rc == -2)
                rc = -ENOSPC;
            else if (rc < 0)
                rc = -EINVAL;
        }
    }
    json__close(&d);
    return rc;
}

bool ntc_json_has(const char *json, size_t len, const char *path)
{
    json_doc d;
    bool found = json__open(&d, json, len) == 0 && json__find(&d.doc, path) >= 0;
    json__close(&d);
    return found;
}

int ntc_json_count(const char *json, size_t len, const char *path)
{
    json_doc d;
    int rc = json__open(&d, json, len);
    if (rc == 0) {
        int tok = json__find(&d.doc, path);
        int type = nt_json_type_of(&d.doc, tok);
        if (tok < 0)
            rc = tok;
        else if (type != NT_JSON_OBJECT && type != NT_JSON_ARRAY)
            rc = -EINVAL;
        else
            rc = (int)d.doc.toks[tok].count;
    }
    json__close(&d);
    return rc;
}

bool ntc_json_is_type(const char *json, size_t len, const char *type)
{
    json_doc d;
    bool same = false;
    if (json__open(&d, json, len) == 0) {
        int tok = nt_json_get(&d.doc, 0, "type");
        same = tok >= 0 && nt_json_str_eq(&d.doc, tok, type);
    }
    json__close(&d);
    return same;
}
