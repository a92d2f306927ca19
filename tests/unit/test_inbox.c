/*
 * Unit tests for src/bus/inbox.h, the loop's inbox of deliveries made on
 * other threads that both bus back ends use: items keep their recipients
 * and frame, come out oldest first, the byte bound refuses an item without
 * taking it, taking empties the inbox and frees the room, and sizes that do
 * not fit are refused rather than wrapped.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/inbox.h"
#include "check.h"

static void test_order_and_content(void)
{
    nt_inbox q = {.max_bytes = 1 << 20};
    int64_t ids[3] = {7, 8, 9};
    nt_inbox_item *a = nt_inbox_item_new(ids, 3, "{\"a\":1}", 7);
    nt_inbox_item *b = nt_inbox_item_new(ids + 1, 1, "", 0);
    CHECK(a && b);
    if (!a || !b) return;
    CHECK_EQ_INT(nt_inbox_push(&q, a), 0);
    CHECK_EQ_INT(nt_inbox_push(&q, b), 0);
    CHECK(q.bytes > 0);

    nt_inbox_item *all = nt_inbox_take(&q);
    CHECK(all == a && a->next == b && b->next == NULL);
    CHECK(q.head == NULL && q.tail == NULL && q.bytes == 0);
    CHECK_EQ_INT(a->n, 3);
    CHECK(a->ids[0] == 7 && a->ids[2] == 9);
    CHECK_EQ_INT(a->len, 7);
    CHECK(memcmp(nt_inbox_frame(a), "{\"a\":1}", 7) == 0);
    CHECK(b->n == 1 && b->ids[0] == 8 && b->len == 0);
    nt_inbox_free_chain(all);
    CHECK(nt_inbox_take(&q) == NULL);
}

static void test_bound(void)
{
    int64_t id = 1;
    char frame[100];
    memset(frame, 'x', sizeof frame);
    nt_inbox_item *first = nt_inbox_item_new(&id, 1, frame, sizeof frame);
    CHECK(first);
    if (!first) return;
    size_t one = sizeof(nt_inbox_item) + sizeof(int64_t) + sizeof frame;
    nt_inbox q = {.max_bytes = 2 * one};
    CHECK_EQ_INT(nt_inbox_push(&q, first), 0);
    nt_inbox_item *second = nt_inbox_item_new(&id, 1, frame, sizeof frame);
    nt_inbox_item *third = nt_inbox_item_new(&id, 1, frame, sizeof frame);
    CHECK(second && third);
    if (!second || !third) return;
    CHECK_EQ_INT(nt_inbox_push(&q, second), 0); /* exactly at the bound */
    CHECK_EQ_INT(nt_inbox_push(&q, third), -ENOSPC);
    CHECK(third->next == NULL && q.tail == second); /* refused: untouched */
    CHECK_EQ_INT(q.bytes, 2 * one);

    nt_inbox_free_chain(nt_inbox_take(&q)); /* the loop drained it: room again */
    CHECK_EQ_INT(nt_inbox_push(&q, third), 0);
    nt_inbox_free_chain(nt_inbox_take(&q));
}

static void test_sizes_that_do_not_fit(void)
{
    int64_t id = 1;
    CHECK(nt_inbox_item_new(&id, SIZE_MAX / 4, "x", 1) == NULL);
    CHECK(nt_inbox_item_new(&id, 1, "x", SIZE_MAX - 8) == NULL);
}

int main(void)
{
    test_order_and_content();
    test_bound();
    test_sizes_that_do_not_fit();
    return check_exit();
}
