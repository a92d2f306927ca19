/*
 * The loop's inbox: deliveries made on other threads, waiting for the loop
 * thread to hand them to the gateway. Shared by the bus back ends. Each item
 * is one allocation holding the recipients and then the frame's bytes; the
 * inbox is bounded in bytes (a stuck loop must not let it grow without
 * end). Not thread-safe: callers hold their own mutex around push and take
 * (bus_redis.c shares it with its presence events); items are made and
 * freed outside it.
 */
#ifndef NT_BUS_INBOX_H
#define NT_BUS_INBOX_H

#include <stddef.h>
#include <stdint.h>

typedef struct nt_inbox_item {
    struct nt_inbox_item *next;
    size_t n;      /* recipients in ids */
    size_t len;    /* frame bytes after them */
    int64_t ids[]; /* then the frame (nt_inbox_frame) */
} nt_inbox_item;

typedef struct nt_inbox {
    nt_inbox_item *head, *tail;
    size_t bytes;     /* of the items queued */
    size_t max_bytes; /* set once by the owner */
} nt_inbox;

static inline const char *nt_inbox_frame(const nt_inbox_item *item)
{
    return (const char *)(item->ids + item->n);
}

/* A copy of the recipients and the frame; NULL when out of memory or when
 * the sizes do not fit a size_t. Any thread. */
nt_inbox_item *nt_inbox_item_new(const int64_t *ids, size_t n, const char *frame, size_t len);
/* Appends item: 0, or -ENOSPC (item still the caller's) when the inbox
 * would then hold more than max_bytes. */
int nt_inbox_push(nt_inbox *q, nt_inbox_item *item);
/* Takes every item, oldest first, as a chain by `next`; the inbox is empty
 * after. */
nt_inbox_item *nt_inbox_take(nt_inbox *q);
/* Frees a chain of items (NULL: nothing). */
void nt_inbox_free_chain(nt_inbox_item *item);

#endif
