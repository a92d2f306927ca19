/* Connections per user on this node: see conn_counts.h. */
#include "bus/conn_counts.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define COUNTS_MIN_CAP 64

static size_t counts_hash(int64_t user_id)
{
    uint64_t x = (uint64_t)user_id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* The slot holding user_id, or the empty slot where it would go. */
static size_t counts_find(const nt_conn_counts *t, int64_t user_id)
{
    size_t mask = t->cap - 1;
    size_t i = counts_hash(user_id) & mask;
    while (t->slots[i].conns && t->slots[i].user_id != user_id)
        i = (i + 1) & mask;
    return i;
}

static int counts_grow(nt_conn_counts *t)
{
    size_t old_cap = t->cap;
    nt_conn_count_slot *old = t->slots;
    nt_conn_count_slot *slots = calloc(old_cap * 2, sizeof *slots);
    if (!slots) return -ENOMEM;
    t->slots = slots;
    t->cap = old_cap * 2;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].conns) t->slots[counts_find(t, old[i].user_id)] = old[i];
    free(old);
    return 0;
}

/* Empties slot i and shifts later members of its probe run back, so lookups
 * never need tombstones. */
static void counts_remove(nt_conn_counts *t, size_t i)
{
    size_t mask = t->cap - 1;
    for (;;) {
        t->slots[i].conns = 0;
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!t->slots[j].conns) return;
            size_t home = counts_hash(t->slots[j].user_id) & mask;
            /* Slot j may stay unless its home lies cyclically in (i, j]. */
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) break;
        }
        t->slots[i] = t->slots[j];
        i = j;
    }
}

int nt_conn_counts_init(nt_conn_counts *t)
{
    t->cap = COUNTS_MIN_CAP;
    t->used = 0;
    t->slots = calloc(t->cap, sizeof *t->slots);
    return t->slots ? 0 : -ENOMEM;
}

void nt_conn_counts_free(nt_conn_counts *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

uint32_t nt_conn_counts_get(const nt_conn_counts *t, int64_t user_id)
{
    return t->slots[counts_find(t, user_id)].conns;
}

int64_t nt_conn_counts_add(nt_conn_counts *t, int64_t user_id, int delta)
{
    size_t i = counts_find(t, user_id);
    int64_t before = t->slots[i].conns;
    if (delta > 0) {
        if (before) {
            if (t->slots[i].conns < UINT32_MAX) t->slots[i].conns++;
            return before;
        }
        /* Keep the load under 3/4 so probe runs stay short. */
        if ((t->used + 1) * 4 > t->cap * 3) {
            if (counts_grow(t) != 0) return -ENOMEM;
            i = counts_find(t, user_id);
        }
        t->slots[i].user_id = user_id;
        t->slots[i].conns = 1;
        t->used++;
    } else if (before && --t->slots[i].conns == 0) {
        counts_remove(t, i);
        t->used--;
    }
    return before;
}
