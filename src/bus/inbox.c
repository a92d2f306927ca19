/* The loop's inbox of deliveries from other threads: see inbox.h. */
#include "bus/inbox.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t inbox__size(size_t n, size_t len)
{
    return sizeof(nt_inbox_item) + n * sizeof(int64_t) + len;
}

nt_inbox_item *nt_inbox_item_new(const int64_t *ids, size_t n, const char *frame, size_t len)
{
    if (len > SIZE_MAX - sizeof(nt_inbox_item) ||
        n > (SIZE_MAX - sizeof(nt_inbox_item) - len) / sizeof(int64_t))
        return NULL;
    nt_inbox_item *item = malloc(inbox__size(n, len));
    if (!item) return NULL;
    item->next = NULL;
    item->n = n;
    item->len = len;
    memcpy(item->ids, ids, n * sizeof(int64_t));
    memcpy(item->ids + n, frame, len);
    return item;
}

int nt_inbox_push(nt_inbox *q, nt_inbox_item *item)
{
    size_t size = inbox__size(item->n, item->len);
    if (q->bytes + size > q->max_bytes) return -ENOSPC;
    item->next = NULL;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->bytes += size;
    return 0;
}

nt_inbox_item *nt_inbox_take(nt_inbox *q)
{
    nt_inbox_item *all = q->head;
    q->head = q->tail = NULL;
    q->bytes = 0;
    return all;
}

void nt_inbox_free_chain(nt_inbox_item *item)
{
    while (item) {
        nt_inbox_item *next = item->next;
        free(item);
        item = next;
    }
}
