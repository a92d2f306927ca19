/* Growable buffers and shared blocks: see buf.h. */
#include "common/buf.h"

#include "common/asan.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
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

/* ---- the per-thread cache: small shared blocks and the scratch buffer ---- */

/* Cached blocks come in four sizes (data bytes, with the NUL after them):
 * 128, 256, 512 and 1,024, so a block wastes at most half its memory. */
#define SHARED_CLASSES 4
#define SHARED_CLASS_MIN 128
/* The largest cached size (with the NUL after the data): blocks of up to
 * SHARED_SMALL - 1 data bytes are cached. */
#define SHARED_SMALL (SHARED_CLASS_MIN << (SHARED_CLASSES - 1)) /* 1,024 */
#define SHARED_CACHE_MAX 128                                    /* blocks a thread keeps per size */
#define SCRATCH_KEEP (64 * 1024)

/* The bytes of a cached block of class k. */
#define SHARED_CLASS_BYTES(k) (sizeof(nt_shared) + ((size_t)SHARED_CLASS_MIN << (k)))

/* Poisons a cached block (see common/asan.h) but for its link to the next
 * one, which leak checking must still see (it skips poisoned memory). */
static void cached_poison(nt_shared *s, int k)
{
    char *link = s->data;
    NT_ASAN_POISON(s, (size_t)(link - (char *)s));
    NT_ASAN_POISON(link + sizeof(nt_shared *),
                   SHARED_CLASS_BYTES(k) - sizeof(nt_shared) - sizeof(nt_shared *));
}

typedef struct buf_cache {
    nt_shared *free[SHARED_CLASSES]; /* linked through the first bytes of data */
    unsigned nfree[SHARED_CLASSES];
    nt_buf scratch;
    bool scratch_taken;
} buf_cache;

static __thread buf_cache *tl_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_made;

/* Thread exit: the thread's cache goes back to malloc. */
static void cache_destroy(void *arg)
{
    buf_cache *c = arg;
    tl_cache = NULL;
    for (int i = 0; i < SHARED_CLASSES; i++) {
        while (c->free[i]) {
            nt_shared *s = c->free[i];
            NT_ASAN_UNPOISON(s, SHARED_CLASS_BYTES(i));
            memcpy(&c->free[i], s->data, sizeof c->free[i]);
            free(s);
        }
    }
    nt_buf_free(&c->scratch);
    free(c);
}

static void cache_key_make(void)
{
    cache_key_made = pthread_key_create(&cache_key, cache_destroy) == 0;
}

/* This thread's cache, made on first use; NULL when out of memory. */
static buf_cache *cache_get(void)
{
    if (tl_cache) return tl_cache;
    pthread_once(&cache_once, cache_key_make);
    if (!cache_key_made) return NULL;
    buf_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_setspecific(cache_key, c) != 0) {
        free(c);
        return NULL;
    }
    return tl_cache = c;
}

/* The size class of a block of len data bytes (len < SHARED_SMALL). */
static int shared_class(size_t len)
{
    int k = 0;
    while ((size_t)(SHARED_CLASS_MIN << k) < len + 1)
        k++;
    return k;
}

nt_buf *nt_buf_scratch_take(void)
{
    buf_cache *c = cache_get();
    if (c && !c->scratch_taken) {
        c->scratch_taken = true;
        c->scratch.len = 0;
        return &c->scratch;
    }
    return calloc(1, sizeof(nt_buf));
}

void nt_buf_scratch_give(nt_buf *b)
{
    if (!b) return;
    buf_cache *c = tl_cache;
    if (c && b == &c->scratch) {
        if (b->cap > SCRATCH_KEEP) nt_buf_free(b);
        c->scratch_taken = false;
        return;
    }
    nt_buf_free(b);
    free(b);
}

nt_shared *nt_shared_alloc(size_t len)
{
    if (len > UINT32_MAX) return NULL;
    nt_shared *s = NULL;
    if (len < SHARED_SMALL) {
        int k = shared_class(len);
        buf_cache *c = cache_get();
        if (c && c->free[k]) {
            s = c->free[k];
            NT_ASAN_UNPOISON(s, SHARED_CLASS_BYTES(k));
            memcpy(&c->free[k], s->data, sizeof c->free[k]);
            c->nfree[k]--;
        } else {
            s = malloc(SHARED_CLASS_BYTES(k));
        }
    } else {
        s = malloc(sizeof *s + len + 1);
    }
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
    if (!s || --s->refs > 0) return;
    if (s->len < SHARED_SMALL) {
        int k = shared_class(s->len);
        buf_cache *c = cache_get();
        if (c && c->nfree[k] < SHARED_CACHE_MAX) {
            memcpy(s->data, &c->free[k], sizeof c->free[k]);
            c->free[k] = s;
            c->nfree[k]++;
            cached_poison(s, k);
            return;
        }
    }
    free(s);
}
