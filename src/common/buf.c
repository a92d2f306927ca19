/* Growable buffers and shared blocks: see buf.h. */
#include "common/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nt_buf_reserve(nt_buf *b, size_t extra)
{
    /* Room for extra bytes plus one, kept for nt_buf_cstr's NUL. Written
     * so that neither extra + 1 nor the doubling below can wrap around. */
    if (extra < b->cap - b->len) return 0;
    if (extra > SIZE_MAX - b->len - 1) return -ENOMEM;
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *data = realloc(b->data, cap);
    if (!data) return -ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

int nt_buf_append(nt_buf *b, const void *bytes, size_t len)
{
    if (len == 0) return 0;
    int rc = nt_buf_reserve(b, len);
    if (rc) return rc;
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
    return 0;
}

int nt_buf_append_str(nt_buf *b, const char *s)
{
    return nt_buf_append(b, s, strlen(s));
}

int nt_buf_vappendf(nt_buf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    int rc = 0;
    if (n < 0) {
        rc = -EINVAL;
    } else if ((size_t)n < sizeof small) {
        rc = nt_buf_append(b, small, (size_t)n);
    } else if ((rc = nt_buf_reserve(b, (size_t)n)) == 0) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
    return rc;
}

int nt_buf_appendf(nt_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = nt_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void nt_buf_consume(nt_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void nt_buf_free(nt_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

const char *nt_buf_cstr(nt_buf *b)
{
    if (nt_buf_reserve(b, 0) != 0) return "";
    b->data[b->len] = '\0';
    return b->data;
}

nt_shared *nt_shared_alloc(size_t len)
{
    if (len > UINT32_MAX) return NULL;
    nt_shared *s = malloc(sizeof *s + len + 1);
    if (!s) return NULL;
    s->refs = 1;
    s->len = (uint32_t)len;
    s->data[len] = '\0';
    return s;
}

nt_shared *nt_shared_new(const void *bytes, size_t len)
{
    nt_shared *s = nt_shared_alloc(len);
    if (s && len) memcpy(s->data, bytes, len);
    return s;
}

void nt_shared_unref(nt_shared *s)
{
    if (s && --s->refs == 0) free(s);
}
