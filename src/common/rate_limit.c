/* Token buckets and the keyed table of them: see rate_limit.h. */
#include "common/rate_limit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

/* Slots looked at for one key: a key lives in one of the RL_WINDOW slots
 * from its home slot on. Short, so a probe is a couple of cache lines. */
#define RL_WINDOW 8
#define RL_EPSILON 1e-6

typedef struct rl_slot {
    uint64_t key;
    nt_bucket bucket;
    bool used;
} rl_slot;

struct nt_rate_table {
    pthread_mutex_t lock;
    double rate_per_s, burst;
    size_t mask; /* capacity - 1, capacity a power of two */
    rl_slot *slots;
};

void nt_bucket_init(nt_bucket *b, double burst, uint64_t now_ns)
{
    b->tokens = burst;
    b->last_ns = now_ns;
}

bool nt_bucket_take(nt_bucket *b, double rate_per_s, double burst, uint64_t now_ns,
                    uint32_t *retry_after_ms)
{
    if (!(rate_per_s > 0)) return true;
    if (burst < 1) burst = 1; /* a bucket that cannot hold one token would refuse all */
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * rate_per_s / 1e9;
        if (b->tokens > burst) b->tokens = burst;
        b->last_ns = now_ns;
    }
    /* Refills are sums of products of doubles: 6 s at 10 a minute may come
     * to 0.9999999999. A millionth of a token is no one's gain. */
    if (b->tokens >= 1 - RL_EPSILON) {
        b->tokens = b->tokens > 1 ? b->tokens - 1 : 0;
        return true;
    }
    if (retry_after_ms) {
        double ms = (1 - b->tokens) * 1000 / rate_per_s;
        if (ms >= UINT32_MAX) {
            *retry_after_ms = UINT32_MAX;
        } else {
            uint32_t whole = (uint32_t)ms; /* rounded up by hand: no libm here */
            *retry_after_ms = whole < ms ? whole + 1 : whole < 1 ? 1 : whole;
        }
    }
    return false;
}

void nt_bucket_give_back(nt_bucket *b, double burst)
{
    b->tokens += 1;
    if (b->tokens > burst) b->tokens = burst;
}

nt_rate_table *nt_rate_table_new(size_t capacity, double rate_per_s, double burst, int *err)
{
    *err = 0;
    if (!(rate_per_s > 0)) return NULL;
    size_t cap = RL_WINDOW;
    while (cap < capacity && cap < ((size_t)1 << 40))
        cap <<= 1;
    nt_rate_table *t = calloc(1, sizeof *t);
    if (!t) goto fail;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots) goto fail;
    if (pthread_mutex_init(&t->lock, NULL) != 0) goto fail;
    t->rate_per_s = rate_per_s;
    t->burst = burst < 1 ? 1 : burst;
    t->mask = cap - 1;
    return t;
fail:
    if (t) free(t->slots);
    free(t);
    *err = -ENOMEM;
    return NULL;
}

/* The home slot: user ids are small and consecutive, so mix them (the
 * splitmix64 finaliser) before they pick a slot. */
static size_t rl__home(const nt_rate_table *t, uint64_t key)
{
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebull;
    key ^= key >> 31;
    return (size_t)key & t->mask;
}

/* Under the lock: key's slot, or NULL. */
static rl_slot *rl__find(nt_rate_table *t, uint64_t key)
{
    size_t home = rl__home(t, key);
    for (size_t i = 0; i < RL_WINDOW; i++) {
        rl_slot *s = &t->slots[(home + i) & t->mask];
        if (s->used && s->key == key) return s;
    }
    return NULL;
}

/* Under the lock: key's slot, made (full) if it has none: the first free
 * slot of the window, else the one touched longest ago. */
static rl_slot *rl__get(nt_rate_table *t, uint64_t key, uint64_t now_ns)
{
    size_t home = rl__home(t, key);
    rl_slot *free_slot = NULL, *stalest = NULL;
    for (size_t i = 0; i < RL_WINDOW; i++) {
        rl_slot *s = &t->slots[(home + i) & t->mask];
        if (!s->used) {
            if (!free_slot) free_slot = s;
        } else if (s->key == key) {
            return s;
        } else if (!stalest || s->bucket.last_ns < stalest->bucket.last_ns) {
            stalest = s;
        }
    }
    rl_slot *s = free_slot ? free_slot : stalest;
    s->used = true;
    s->key = key;
    nt_bucket_init(&s->bucket, t->burst, now_ns);
    return s;
}

bool nt_rate_table_take(nt_rate_table *t, uint64_t key, uint64_t now_ns, uint32_t *retry_after_ms)
{
    if (!t) return true;
    pthread_mutex_lock(&t->lock);
    rl_slot *s = rl__get(t, key, now_ns);
    bool ok = nt_bucket_take(&s->bucket, t->rate_per_s, t->burst, now_ns, retry_after_ms);
    pthread_mutex_unlock(&t->lock);
    return ok;
}

void nt_rate_table_give_back(nt_rate_table *t, uint64_t key)
{
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    rl_slot *s = rl__find(t, key);
    if (s) nt_bucket_give_back(&s->bucket, t->burst);
    pthread_mutex_unlock(&t->lock);
}

void nt_rate_table_free(nt_rate_table *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->lock);
    free(t->slots);
    free(t);
}
