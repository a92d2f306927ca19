/*
 * How many connections each user has on this node: an open-addressing table
 * from user id to count, shared by the bus back ends (the in-process one
 * answers presence from it; the Redis one mirrors it into Redis). Not
 * thread-safe: callers hold their own lock.
 */
#ifndef NT_CONN_COUNTS_H
#define NT_CONN_COUNTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct nt_conn_count_slot {
    int64_t user_id;
    uint32_t conns; /* 0: the slot is empty */
} nt_conn_count_slot;

typedef struct nt_conn_counts {
    nt_conn_count_slot *slots; /* cap slots; iterate them to list every user */
    size_t cap;                /* a power of two */
    size_t used;               /* users with at least one connection */
} nt_conn_counts;

/* 0 or -ENOMEM. */
int nt_conn_counts_init(nt_conn_counts *t);
void nt_conn_counts_free(nt_conn_counts *t);
/* The user's count, 0 if none. */
uint32_t nt_conn_counts_get(const nt_conn_counts *t, int64_t user_id);
/* Adds delta (+1 or -1) and returns the count before, or -ENOMEM when the
 * table cannot grow. A -1 for a user with no connection changes nothing. */
int64_t nt_conn_counts_add(nt_conn_counts *t, int64_t user_id, int delta);

#endif
