/*
 * Byte buffers. nt_buf is a growable, owned buffer that always carries its
 * length; nt_shared is an immutable, reference-counted block used to encode a
 * frame once and hand the same bytes to every connection that sends it.
 *
 * Error convention for the whole project: 0 on success, a negative errno-style
 * code on failure (-ENOMEM here).
 */
#ifndef NT_BUF_H
#define NT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nt_buf {
    char *data; /* NULL until the first append: idle buffers cost nothing */
    size_t len;
    size_t cap;
} nt_buf;

#define NT_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes room for `extra` more bytes; the content is kept. */
int nt_buf_reserve(nt_buf *b, size_t extra);
int nt_buf_append(nt_buf *b, const void *bytes, size_t len);
int nt_buf_append_str(nt_buf *b, const char *s);
int nt_buf_appendf(nt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int nt_buf_vappendf(nt_buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes (n <= len). */
void nt_buf_consume(nt_buf *b, size_t n);
/* Empties the buffer but keeps its memory. */
static inline void nt_buf_reset(nt_buf *b)
{
    b->len = 0;
}
/* Gives the memory back; the buffer is empty and reusable afterwards. */
void nt_buf_free(nt_buf *b);
/* Returns a NUL-terminated view (appends a NUL after len, not counted). */
const char *nt_buf_cstr(nt_buf *b);

/*
 * A per-thread buffer for encoding something that is copied or sent before
 * the thread encodes the next one (an event frame before nt_bus_deliver
 * copies it), so the send path does not allocate per message.
 * nt_buf_scratch_take returns it empty; nt_buf_scratch_give takes it back
 * (and frees its memory if it grew past 64 KiB). A take while this thread
 * already holds it returns a fresh buffer that give frees. Give it back
 * on the thread that took it, before that thread ends. NULL when out of
 * memory.
 */
nt_buf *nt_buf_scratch_take(void);
void nt_buf_scratch_give(nt_buf *b);

/*
 * An immutable block shared by reference count. Not thread-safe by design:
 * shared blocks live on one loop thread. The creator holds one reference.
 * Blocks of up to 1 KiB are recycled through a small per-thread cache
 * (freed when the thread exits): a frame, an ack or an event costs no
 * malloc once the cache is warm.
 */
typedef struct nt_shared {
    uint32_t refs;
    uint32_t len;
    char data[];
} nt_shared;

nt_shared *nt_shared_new(const void *bytes, size_t len);
/* Allocates `len` uninitialised bytes for the caller to fill once. */
nt_shared *nt_shared_alloc(size_t len);
static inline nt_shared *nt_shared_ref(nt_shared *s)
{
    s->refs++;
    return s;
}
void nt_shared_unref(nt_shared *s);

#endif
