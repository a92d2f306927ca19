/*
 * Token buckets, in the manner of nginx's limit_req: a bucket holds up to
 * `burst` tokens and refills at `rate` tokens a second; an action that
 * finds a whole token takes it, one that does not is refused and told how
 * long until one is there. The keyed table holds one bucket per 64-bit key
 * (a user id, a hash of a login) in a fixed array taken once at start:
 * open addressing over a short probe window, and when the window is full
 * the stalest bucket in it (the one least recently touched) is given to the
 * newcomer. A bucket nobody touched for burst / rate seconds is full again,
 * the same as a new one, so evicting it forgets nothing; the table only
 * loses a partly drained bucket once its window is crowded with keys that
 * are all more recent.
 *
 * Nothing here allocates or blocks after nt_rate_table_new; the table's
 * mutex is held for one probe of a few slots, so the loop thread may use it
 * as well as worker threads. Times are monotonic nanoseconds passed in by
 * the caller (nt_mono_ns in the server, fixed values in tests).
 */
#ifndef NT_RATE_LIMIT_H
#define NT_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nt_bucket {
    double tokens;    /* whole and partial tokens at last_ns */
    uint64_t last_ns; /* when tokens was last brought up to date */
} nt_bucket;

/* Sets b full (burst tokens) as of now_ns. */
void nt_bucket_init(nt_bucket *b, double burst, uint64_t now_ns);

/* Refills b for the time since its last use (never above burst), then takes
 * one token if there is a whole one: true. Otherwise false, nothing taken,
 * and *retry_after_ms (may be NULL) gets the milliseconds until a whole
 * token is there, rounded up, at least 1. rate_per_s <= 0 means no limit:
 * always true and b is not touched. A now_ns before b->last_ns (a caller's
 * clock is not ours to trust) counts as no time passed. */
bool nt_bucket_take(nt_bucket *b, double rate_per_s, double burst, uint64_t now_ns,
                    uint32_t *retry_after_ms);

/* Puts back one token taken by nt_bucket_take (never above burst). */
void nt_bucket_give_back(nt_bucket *b, double burst);

/* A Retry-After header's seconds for retry_after_ms: rounded up, at least 1. */
static inline unsigned nt_retry_after_s(uint32_t retry_after_ms)
{
    unsigned s = retry_after_ms / 1000 + (retry_after_ms % 1000 != 0);
    return s ? s : 1;
}

typedef struct nt_rate_table nt_rate_table;

/* A table of `capacity` buckets (rounded up to a power of two, at least the
 * probe window) sharing one rate and burst. rate_per_s <= 0 means no limit:
 * returns NULL with *err left 0 (nt_rate_table_take on NULL always allows),
 * so an unlimited setting costs neither memory nor a lock. NULL with *err
 * set to -ENOMEM when the memory cannot be had. burst is at least 1. */
nt_rate_table *nt_rate_table_new(size_t capacity, double rate_per_s, double burst, int *err);

/* Takes one token from key's bucket (a new key starts full): true if
 * allowed, false with *retry_after_ms (may be NULL) as nt_bucket_take says.
 * A NULL table always allows. Any thread. */
bool nt_rate_table_take(nt_rate_table *t, uint64_t key, uint64_t now_ns, uint32_t *retry_after_ms);

/* Puts back the token a successful nt_rate_table_take of key took (e.g. a
 * login that turned out right, when only failures should count). Nothing
 * if the key's bucket has been evicted since. NULL table: nothing. */
void nt_rate_table_give_back(nt_rate_table *t, uint64_t key);

/* Frees the table (NULL is fine). */
void nt_rate_table_free(nt_rate_table *t);

#endif
