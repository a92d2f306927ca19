/*
 * Random chats: the match queue (the index declared in match.h) and the
 * match service behind PUT /match/preferences, POST and DELETE /match, the
 * WebSocket `match`/`match_cancel` frames and POST /chats/{id}/reveal.
 *
 * Pairing runs in the handler that received the request, on a worker
 * thread, under the queue's mutex (never on a loop thread). A pair gets a
 * new chat of type "random" in which each member is known by a generated
 * alias ("Brave Otter") until both reveal; each side gets a `matched` event
 * with the chat and the partner's alias, gender and age only.
 *
 * Where the waiting users live depends on the bus: with the in-process bus
 * the queue is here (one per nt_ctx, created on first use, see
 * match__queue); with the Redis bus it is shared by every node
 * (nt_bus_match_join/leave in bus.h, one Lua script per pairing, ranked the
 * same way), so users waiting on different gateways are paired.
 */
#include "services/match.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/log.h"
#include "services/services.h"
#include "services/validate.h"
#include "services/views.h"

/* ---- the queue ------------------------------------------------------------------ */

#define MQ_AGES (NT_MATCH_AGE_MAX - NT_MATCH_AGE_MIN + 1) /* 108 */
#define MQ_MASKS 7                                        /* non-empty subsets of 3 genders */
#define MQ_BUCKETS (3 * MQ_MASKS * MQ_AGES)
#define MQ_WORDS ((MQ_AGES + 63) / 64)
#define MQ_SCAN_CAP_DEFAULT 32

typedef struct mq_entry {
    nt_match_ticket t; /* t.blocks points at blocks */
    int64_t *blocks;   /* sorted, heap */
    int nblocks, blocks_cap;
    int bucket;
    struct mq_entry *prev, *next; /* the bucket's FIFO */
    struct mq_entry *hnext;       /* the user_id hash chain */
} mq_entry;

/* A user taken out of the queue by nt_matcher_offer_held, whose pair is
 * not settled yet (its chat is being stored). */
typedef struct mq_held {
    int64_t user_id;
    bool left;     /* left or disconnected meanwhile: never back into the queue */
    bool rejoined; /* offered again meanwhile, not left since: told "waiting" */
    struct mq_held *next;
} mq_held;

#define MQ_HELD_BUCKETS 256

struct nt_matcher {
    pthread_mutex_t lock;
    int scan_cap;
    mq_held *held[MQ_HELD_BUCKETS]; /* by mq_hash(user_id, MQ_HELD_BUCKETS) */
    mq_entry *head[MQ_BUCKETS], *tail[MQ_BUCKETS];
    /* bit (age - 13) set when bucket (gender, mask, age) is non-empty */
    uint64_t nonempty[3][MQ_MASKS][MQ_WORDS];
    mq_entry **table;
    size_t table_cap, count;
    uint64_t clock;
    uint64_t examined, offers;
};

static int mq_gender_index(unsigned gender_bit)
{
    return gender_bit == NT_GENDER_MALE ? 0 : gender_bit == NT_GENDER_FEMALE ? 1 : 2;
}

static int mq_bucket(int gender_idx, unsigned mask, int age)
{
    return (gender_idx * MQ_MASKS + (int)(mask - 1)) * MQ_AGES + (age - NT_MATCH_AGE_MIN);
}

static size_t mq_hash(int64_t user_id, size_t cap)
{
    return (size_t)(((uint64_t)user_id * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static mq_entry *mq_find(nt_matcher *m, int64_t user_id)
{
    if (!m->table_cap) return NULL;
    for (mq_entry *e = m->table[mq_hash(user_id, m->table_cap)]; e; e = e->hnext)
        if (e->t.user_id == user_id) return e;
    return NULL;
}

static mq_held **mq_held_slot(nt_matcher *m, int64_t user_id)
{
    mq_held **slot = &m->held[mq_hash(user_id, MQ_HELD_BUCKETS)];
    while (*slot && (*slot)->user_id != user_id)
        slot = &(*slot)->next;
    return slot;
}

static int mq_table_grow(nt_matcher *m)
{
    size_t cap = m->table_cap ? m->table_cap * 2 : 64;
    mq_entry **table = calloc(cap, sizeof *table);
    if (!table) return -ENOMEM;
    for (size_t i = 0; i < m->table_cap; i++) {
        for (mq_entry *e = m->table[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = mq_hash(e->t.user_id, cap);
            e->hnext = table[h];
            table[h] = e;
        }
    }
    free(m->table);
    m->table = table;
    m->table_cap = cap;
    return 0;
}

static bool mq_has(const int64_t *sorted, int n, int64_t id)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (sorted[mid] < id)
            lo = mid + 1;
        else if (sorted[mid] > id)
            hi = mid;
        else
            return true;
    }
    return false;
}

static int mq_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int mq_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Shared tags of two sorted hash lists. */
static int mq_shared(const nt_match_ticket *a, const nt_match_ticket *b)
{
    int i = 0, j = 0, n = 0;
    while (i < a->ninterests && j < b->ninterests) {
        if (a->interests[i] < b->interests[j])
            i++;
        else if (a->interests[i] > b->interests[j])
            j++;
        else
            n++, i++, j++;
    }
    return n;
}

static void mq_unlink(nt_matcher *m, mq_entry *e)
{
    int b = e->bucket;
    if (e->prev)
        e->prev->next = e->next;
    else
        m->head[b] = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        m->tail[b] = e->prev;
    if (!m->head[b]) {
        int gi = b / (MQ_MASKS * MQ_AGES), mi = (b / MQ_AGES) % MQ_MASKS, ai = b % MQ_AGES;
        m->nonempty[gi][mi][ai / 64] &= ~(1ull << (ai % 64));
    }
    mq_entry **pp = &m->table[mq_hash(e->t.user_id, m->table_cap)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    m->count--;
}

static void mq_entry_free(mq_entry *e)
{
    free(e->blocks);
    free(e);
}

/* A new entry for t (blocks and interests copied and sorted), or NULL. */
static mq_entry *mq_entry_new(const nt_match_ticket *t)
{
    mq_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->t = *t;
    if (t->nblocks > 0) {
        e->blocks = malloc((size_t)t->nblocks * sizeof *e->blocks);
        if (!e->blocks) {
            free(e);
            return NULL;
        }
        memcpy(e->blocks, t->blocks, (size_t)t->nblocks * sizeof *e->blocks);
        qsort(e->blocks, (size_t)t->nblocks, sizeof *e->blocks, mq_cmp_i64);
        e->nblocks = e->blocks_cap = t->nblocks;
    }
    e->t.blocks = e->blocks;
    e->t.nblocks = e->nblocks;
    qsort(e->t.interests, (size_t)e->t.ninterests, sizeof e->t.interests[0], mq_cmp_u64);
    return e;
}

/* Puts e into its bucket, in arrival order, and the hash table. A new
 * arrival goes to the tail; a requeued entry (an older arrival) back to its
 * old place, which mq_search relies on: a bucket is always oldest first. */
static int mq_insert(nt_matcher *m, mq_entry *e)
{
    if (m->count + 1 > m->table_cap && mq_table_grow(m) != 0) return -ENOMEM;
    int gi = mq_gender_index(e->t.gender);
    int b = mq_bucket(gi, e->t.genders, e->t.age);
    e->bucket = b;
    mq_entry *before = m->tail[b]; /* e goes right after it (NULL: at the head) */
    while (before && before->t.arrival > e->t.arrival)
        before = before->prev;
    e->prev = before;
    e->next = before ? before->next : m->head[b];
    if (e->next)
        e->next->prev = e;
    else
        m->tail[b] = e;
    if (before)
        before->next = e;
    else
        m->head[b] = e;
    int ai = e->t.age - NT_MATCH_AGE_MIN;
    m->nonempty[gi][e->t.genders - 1][ai / 64] |= 1ull << (ai % 64);
    size_t h = mq_hash(e->t.user_id, m->table_cap);
    e->hnext = m->table[h];
    m->table[h] = e;
    m->count++;
    return 0;
}

nt_matcher *nt_matcher_new(int scan_cap)
{
    nt_matcher *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->scan_cap = scan_cap > 0 ? scan_cap : MQ_SCAN_CAP_DEFAULT;
    return m;
}

void nt_matcher_free(nt_matcher *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->table_cap; i++) {
        for (mq_entry *e = m->table[i], *next; e; e = next) {
            next = e->hnext;
            mq_entry_free(e);
        }
    }
    free(m->table);
    for (size_t i = 0; i < MQ_HELD_BUCKETS; i++) {
        for (mq_held *h = m->held[i], *next; h; h = next) {
            next = h->next;
            free(h);
        }
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Does candidate c accept the arrival t and may they meet? The bucket
 * already guarantees gender on both sides and c's age for t. */
static bool mq_compatible(const nt_match_ticket *t, const mq_entry *c)
{
    if (c->t.user_id == t->user_id) return false;
    if (t->age < c->t.age_min || t->age > c->t.age_max) return false;
    if (mq_has(c->blocks, c->nblocks, t->user_id)) return false;
    /* The arrival's list is unsorted (the caller's); it is short. */
    for (int i = 0; i < t->nblocks; i++)
        if (t->blocks[i] == c->t.user_id) return false;
    return true;
}

/* The best partner for t among the examined candidates, or NULL. */
static mq_entry *mq_search(nt_matcher *m, const nt_match_ticket *t)
{
    mq_entry *best = NULL;
    int best_shared = -1;
    int lo = t->age_min - NT_MATCH_AGE_MIN, hi = t->age_max - NT_MATCH_AGE_MIN;

    for (int gi = 0; gi < 3; gi++) {
        if (!(t->genders & (1u << gi))) continue;
        for (unsigned mask = 1; mask <= MQ_MASKS; mask++) {
            if (!(mask & t->gender)) continue; /* they would not want t */
            const uint64_t *bits = m->nonempty[gi][mask - 1];
            for (int w = lo / 64; w <= hi / 64; w++) {
                uint64_t word = bits[w];
                if (w == lo / 64) word &= ~0ull << (lo % 64);
                if (w == hi / 64 && hi % 64 != 63) word &= (1ull << (hi % 64 + 1)) - 1;
                while (word) {
                    int ai = w * 64 + __builtin_ctzll(word);
                    word &= word - 1;
                    int examined = 0;
                    for (mq_entry *c = m->head[mq_bucket(gi, mask, ai + NT_MATCH_AGE_MIN)];
                         c && examined < m->scan_cap; c = c->next) {
                        /* Once the best shares every interest of t, only an
                         * older candidate could beat it, and the rest of
                         * this bucket is younger (oldest first): the same
                         * choice, without examining them. */
                        if (best_shared == t->ninterests && c->t.arrival > best->t.arrival) break;
                        examined++;
                        if (!mq_compatible(t, c)) continue;
                        int shared = mq_shared(t, &c->t);
                        if (shared > best_shared ||
                            (shared == best_shared && c->t.arrival < best->t.arrival)) {
                            best = c;
                            best_shared = shared;
                        }
                    }
                    m->examined += (uint64_t)examined;
                }
            }
        }
    }
    return best;
}

/* nt_matcher_offer and nt_matcher_offer_held: with `hold`, a pair's users
 * are held until settled. */
static int mq_offer(nt_matcher *m, const nt_match_ticket *t, nt_match_ticket *partner, bool hold)
{
    int rc;
    nt_match_ticket sorted = *t;
    qsort(sorted.interests, (size_t)sorted.ninterests, sizeof sorted.interests[0], mq_cmp_u64);

    pthread_mutex_lock(&m->lock);
    m->offers++;
    mq_held *held = *mq_held_slot(m, t->user_id);
    if (held) { /* back before its pair is settled: it waits for that */
        held->left = false;
        held->rejoined = true;
        rc = NT_MATCH_ALREADY;
        goto out;
    }
    if (mq_find(m, t->user_id)) {
        rc = NT_MATCH_ALREADY;
        goto out;
    }
    mq_entry *best = mq_search(m, &sorted);
    if (best) {
        /* The holds are made before the partner leaves the queue, so that
         * a pair is never made and then dropped for want of memory. */
        mq_held *holds[2] = {NULL, NULL};
        if (hold && (!(holds[0] = calloc(1, sizeof(mq_held))) ||
                     !(holds[1] = calloc(1, sizeof(mq_held))))) {
            free(holds[0]);
            rc = -ENOMEM;
            goto out;
        }
        mq_unlink(m, best);
        *partner = best->t; /* blocks and nblocks: handed over with it */
        free(best);
        int64_t ids[2] = {t->user_id, partner->user_id};
        for (int i = 0; hold && i < 2; i++) {
            mq_held **slot = mq_held_slot(m, ids[i]); /* empty: neither is held */
            holds[i]->user_id = ids[i];
            *slot = holds[i];
        }
        rc = NT_MATCH_PAIRED;
        goto out;
    }
    mq_entry *e = mq_entry_new(&sorted);
    if (!e) {
        rc = -ENOMEM;
        goto out;
    }
    e->t.arrival = ++m->clock;
    if (mq_insert(m, e) != 0) {
        mq_entry_free(e);
        rc = -ENOMEM;
        goto out;
    }
    rc = NT_MATCH_WAITING;
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int nt_matcher_offer(nt_matcher *m, const nt_match_ticket *t, nt_match_ticket *partner)
{
    return mq_offer(m, t, partner, false);
}

int nt_matcher_offer_held(nt_matcher *m, const nt_match_ticket *t, nt_match_ticket *partner)
{
    return mq_offer(m, t, partner, true);
}

/* Inserts a copy of t (arrival 0: a new arrival) unless t's user waits
 * already or is held (its pair's outcome decides). Called with the lock
 * held. */
static int mq_requeue(nt_matcher *m, const nt_match_ticket *t)
{
    if (mq_find(m, t->user_id) || *mq_held_slot(m, t->user_id)) return 0;
    mq_entry *e = mq_entry_new(t);
    /* Its old place: a later arrival than everyone it waited before would
     * be unfair, so keep the arrival it had. */
    if (e && !e->t.arrival) e->t.arrival = ++m->clock;
    if (!e || mq_insert(m, e) != 0) {
        if (e) mq_entry_free(e);
        return -ENOMEM;
    }
    return 0;
}

int nt_matcher_settle(nt_matcher *m, const nt_match_ticket *t, int outcome)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    mq_held **slot = mq_held_slot(m, t->user_id), *held = *slot;
    if (held) *slot = held->next;
    bool back = outcome == NT_MATCH_FAILED        ? !(held && held->left)
                : outcome == NT_MATCH_FAILED_TOLD ? held && held->rejoined
                                                  : false;
    if (back) rc = mq_requeue(m, t);
    pthread_mutex_unlock(&m->lock);
    free(held);
    return rc;
}

int nt_matcher_requeue(nt_matcher *m, const nt_match_ticket *t)
{
    pthread_mutex_lock(&m->lock);
    int rc = mq_requeue(m, t);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

bool nt_matcher_leave(nt_matcher *m, int64_t user_id)
{
    pthread_mutex_lock(&m->lock);
    mq_entry *e = mq_find(m, user_id);
    if (e) {
        mq_unlink(m, e);
        mq_entry_free(e);
    }
    mq_held *held = *mq_held_slot(m, user_id);
    if (held) {
        held->left = true;
        held->rejoined = false;
    }
    pthread_mutex_unlock(&m->lock);
    return e != NULL || held != NULL;
}

/* Adds id to e's sorted block list (no duplicates). */
static void mq_add_block(mq_entry *e, int64_t id)
{
    if (mq_has(e->blocks, e->nblocks, id)) return;
    if (e->nblocks == e->blocks_cap) {
        int cap = e->blocks_cap ? e->blocks_cap * 2 : 4;
        int64_t *grown = realloc(e->blocks, (size_t)cap * sizeof *grown);
        if (!grown) {
            /* Cannot remember the block: stop waiting rather than risk the pair. */
            e->t.age_min = NT_MATCH_AGE_MAX + 1;
            return;
        }
        e->blocks = grown;
        e->blocks_cap = cap;
    }
    int i = e->nblocks;
    while (i > 0 && e->blocks[i - 1] > id) {
        e->blocks[i] = e->blocks[i - 1];
        i--;
    }
    e->blocks[i] = id;
    e->nblocks++;
    e->t.blocks = e->blocks;
    e->t.nblocks = e->nblocks;
}

void nt_matcher_block(nt_matcher *m, int64_t a, int64_t b)
{
    pthread_mutex_lock(&m->lock);
    mq_entry *ea = mq_find(m, a), *eb = mq_find(m, b);
    if (ea) mq_add_block(ea, b);
    if (eb) mq_add_block(eb, a);
    pthread_mutex_unlock(&m->lock);
}

bool nt_matcher_is_waiting(nt_matcher *m, int64_t user_id)
{
    pthread_mutex_lock(&m->lock);
    bool waiting = mq_find(m, user_id) != NULL;
    pthread_mutex_unlock(&m->lock);
    return waiting;
}

size_t nt_matcher_count(nt_matcher *m)
{
    pthread_mutex_lock(&m->lock);
    size_t n = m->count;
    pthread_mutex_unlock(&m->lock);
    return n;
}

void nt_matcher_stats(nt_matcher *m, uint64_t *examined, uint64_t *offers)
{
    pthread_mutex_lock(&m->lock);
    if (examined) *examined = m->examined;
    if (offers) *offers = m->offers;
    pthread_mutex_unlock(&m->lock);
}

uint64_t nt_match_tag_hash(const char *tag)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)tag; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- one queue per context ------------------------------------------------------ */

/* nt_ctx has no slot for the match service, so the queue of each context
 * is kept here, created on first use. A process has one or two contexts. */
#define MATCH_MAX_CTX 8

static pthread_mutex_t match_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t match_registry_idle = PTHREAD_COND_INITIALIZER;
static struct {
    nt_ctx *ctx;
    nt_matcher *queue;
    int storing; /* pairs whose chat is being stored (match__pair_async) */
} match_registry[MATCH_MAX_CTX];

/* The queue of ctx; created when `create`. NULL if none (or no memory). */
static nt_matcher *match__queue(nt_ctx *ctx, bool create)
{
    nt_matcher *q = NULL;
    pthread_mutex_lock(&match_registry_lock);
    int free_slot = -1;
    for (int i = 0; i < MATCH_MAX_CTX; i++) {
        if (match_registry[i].ctx == ctx) {
            q = match_registry[i].queue;
            break;
        }
        if (!match_registry[i].ctx && free_slot < 0) free_slot = i;
    }
    if (!q && create && free_slot >= 0 && (q = nt_matcher_new(0)) != NULL) {
        match_registry[free_slot].ctx = ctx;
        match_registry[free_slot].queue = q;
    }
    pthread_mutex_unlock(&match_registry_lock);
    return q;
}

/* Counts a pair of ctx whose chat is being stored up (+1) or down (-1). */
static void match__storing(nt_ctx *ctx, int delta)
{
    pthread_mutex_lock(&match_registry_lock);
    for (int i = 0; i < MATCH_MAX_CTX; i++) {
        if (match_registry[i].ctx == ctx) {
            match_registry[i].storing += delta;
            if (match_registry[i].storing == 0) pthread_cond_broadcast(&match_registry_idle);
            break;
        }
    }
    pthread_mutex_unlock(&match_registry_lock);
}

int nt_match_storing(nt_ctx *ctx)
{
    int n = 0;
    pthread_mutex_lock(&match_registry_lock);
    for (int i = 0; i < MATCH_MAX_CTX; i++)
        if (match_registry[i].ctx == ctx) n = match_registry[i].storing;
    pthread_mutex_unlock(&match_registry_lock);
    return n;
}

void nt_match_shutdown(nt_ctx *ctx)
{
    pthread_mutex_lock(&match_registry_lock);
    for (int i = 0; i < MATCH_MAX_CTX; i++) {
        if (match_registry[i].ctx == ctx) {
            /* Pairs being stored put their partner back on failure. */
            while (match_registry[i].storing > 0)
                pthread_cond_wait(&match_registry_idle, &match_registry_lock);
            nt_matcher_free(match_registry[i].queue);
            match_registry[i].ctx = NULL;
            match_registry[i].queue = NULL;
        }
    }
    pthread_mutex_unlock(&match_registry_lock);
}

/* ---- helpers ---------------------------------------------------------------------- */

static const char *const match_genders[3] = {"male", "female", "other"};

static unsigned match__gender_bit(const char *g)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(g, match_genders[i]) == 0) return 1u << i;
    return 0;
}

static const char *match__gender_name(unsigned bit)
{
    return bit == NT_GENDER_MALE ? "male" : bit == NT_GENDER_FEMALE ? "female" : "other";
}

/* Full years from a "YYYY-MM-DD" birth date to today (UTC); -1 if bad. */
static int match__age(const char *birth_date)
{
    int y, mo, d;
    if (sscanf(birth_date, "%4d-%2d-%2d", &y, &mo, &d) != 3) return -1;
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    int age = tm.tm_year + 1900 - y;
    if (tm.tm_mon + 1 < mo || (tm.tm_mon + 1 == mo && tm.tm_mday < d)) age--;
    return age;
}

static void match__defaults(nt_match_prefs *p)
{
    memset(p, 0, sizeof *p);
    p->genders = NT_GENDER_ALL;
    p->age_min = NT_MATCH_AGE_MIN;
    p->age_max = NT_MATCH_AGE_MAX;
}

static void match__reply_empty(nt_reply *r, int status)
{
    nt_buf_reset(&r->body);
    r->status = status;
    r->content_type = NULL;
}

/* {"status": status}: status is a constant word. */
static void match__reply_status(nt_reply *r, int http_status, const char *status)
{
    nt_buf_reset(&r->body);
    nt_buf_appendf(&r->body, "{\"status\":\"%s\"}", status);
    r->status = http_status;
    r->content_type = NULL;
}

static void match__reply_prefs(nt_reply *r, const nt_match_prefs *p)
{
    nt_jw w;
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "genders");
    nt_jw_arr(&w);
    for (int i = 0; i < 3; i++)
        if (p->genders & (1u << i)) nt_jw_str(&w, match_genders[i]);
    nt_jw_arr_end(&w);
    nt_jw_kint(&w, "age_min", p->age_min);
    nt_jw_kint(&w, "age_max", p->age_max);
    nt_jw_key(&w, "interests");
    nt_jw_arr(&w);
    for (int i = 0; i < p->ninterests; i++)
        nt_jw_str(&w, p->interests[i]);
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = 200;
    r->content_type = NULL;
}

/* ---- preferences ------------------------------------------------------------------ */

void nt_match_prefs_get(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    nt_match_prefs p;
    int rc = nt_store_match_prefs_get(ctx->store, c->user_id, &p);
    if (rc == NT_STORE_ENOTFOUND) {
        match__defaults(&p);
        rc = 0;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "preferences");
        return;
    }
    match__reply_prefs(r, &p);
}

/* Reads "genders": a non-empty array of distinct known genders. */
static bool match__read_genders(const nt_json *doc, unsigned *out, nt_reply *r)
{
    int tok = nt_json_get(doc, 0, "genders");
    *out = 0;
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) {
        nt_reply_error(r, 400, "bad_request", "genders is required");
        return false;
    }
    if (nt_json_type_of(doc, tok) != NT_JSON_ARRAY || doc->toks[tok].count == 0) {
        nt_reply_error(r, 400, "bad_request",
                       "genders must be a non-empty array of \"male\", \"female\", \"other\"");
        return false;
    }
    for (int el = nt_json_first(doc, tok); el >= 0; el = nt_json_next(doc, el)) {
        char g[16];
        unsigned bit = 0;
        if (nt_json_type_of(doc, el) == NT_JSON_STRING && nt_json_str(doc, el, g, sizeof g) >= 0)
            bit = match__gender_bit(g);
        if (!bit) {
            nt_reply_error(r, 400, "bad_request",
                           "genders must hold only \"male\", \"female\" or \"other\"");
            return false;
        }
        *out |= bit;
    }
    return true;
}

/* Reads "interests": up to 10 tags of 1..32 characters of [a-z0-9_-]
 * (upper case is lowered), duplicates dropped. Absent or null: none. */
static bool match__read_interests(const nt_json *doc, nt_match_prefs *p, nt_reply *r)
{
    int tok = nt_json_get(doc, 0, "interests");
    p->ninterests = 0;
    if (tok < 0 || nt_json_type_of(doc, tok) == NT_JSON_NULL) return true;
    if (nt_json_type_of(doc, tok) != NT_JSON_ARRAY) {
        nt_reply_error(r, 400, "bad_request", "interests must be an array of strings");
        return false;
    }
    if (doc->toks[tok].count > NT_INTERESTS_MAX) {
        nt_reply_error(r, 400, "bad_request", "interests: at most %d tags", NT_INTERESTS_MAX);
        return false;
    }
    for (int el = nt_json_first(doc, tok); el >= 0; el = nt_json_next(doc, el)) {
        char tag[NT_INTEREST_MAX];
        int n = -1;
        if (nt_json_type_of(doc, el) == NT_JSON_STRING) n = nt_json_str(doc, el, tag, sizeof tag);
        bool ok = n >= 1 && n <= NT_INTEREST_MAX - 1;
        for (int i = 0; ok && i < n; i++) {
            char ch = tag[i];
            if (ch >= 'A' && ch <= 'Z') tag[i] = (char)(ch - 'A' + 'a');
            ch = tag[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
                ok = false;
        }
        if (!ok) {
            nt_reply_error(r, 400, "bad_request",
                           "interests: each tag must be 1..%d characters of a-z 0-9 _ -",
                           NT_INTEREST_MAX - 1);
            return false;
        }
        bool dup = false;
        for (int i = 0; i < p->ninterests && !dup; i++)
            dup = strcmp(p->interests[i], tag) == 0;
        if (!dup) memcpy(p->interests[p->ninterests++], tag, (size_t)n + 1);
    }
    return true;
}

void nt_match_prefs_put(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r)
{
    nt_json_tok toks[96];
    nt_json doc;
    nt_match_prefs p;
    int64_t age_min, age_max;

    memset(&p, 0, sizeof p);
    if (!nt_body_object(r, body, len, &doc, toks, 96)) return;
    if (!match__read_genders(&doc, &p.genders, r)) return;
    if (!nt_field_int(r, &doc, 0, "age_min", true, NT_MATCH_AGE_MIN, NT_MATCH_AGE_MAX, &age_min,
                      NULL) ||
        !nt_field_int(r, &doc, 0, "age_max", true, NT_MATCH_AGE_MIN, NT_MATCH_AGE_MAX, &age_max,
                      NULL))
        return;
    if (age_min > age_max) {
        nt_reply_error(r, 400, "bad_request", "age_max must not be below age_min");
        return;
    }
    p.age_min = (int)age_min;
    p.age_max = (int)age_max;
    if (!match__read_interests(&doc, &p, r)) return;
    int rc = nt_store_match_prefs_set(ctx->store, c->user_id, &p, nt_now_ms());
    if (rc != 0) {
        nt_reply_store_error(r, rc, "preferences");
        return;
    }
    match__reply_prefs(r, &p);
}

/* ---- pairing -------------------------------------------------------------------------- */

static const char *const match_adjectives[] = {
    "Brave", "Calm",   "Clever", "Cosy",   "Curious", "Eager",  "Gentle", "Happy",
    "Jolly", "Kind",   "Lively", "Lucky",  "Merry",   "Mighty", "Nimble", "Polite",
    "Quiet", "Quick",  "Sunny",  "Swift",  "Witty",   "Wise",   "Bold",   "Bright",
    "Fuzzy", "Golden", "Proud",  "Silver", "Sleepy",  "Zesty",
};
static const char *const match_animals[] = {
    "Otter",  "Fox",  "Panda",   "Koala",  "Falcon",   "Badger", "Heron",    "Lynx",
    "Marten", "Owl",  "Penguin", "Puffin", "Raven",    "Seal",   "Tiger",    "Walrus",
    "Wolf",   "Yak",  "Zebra",   "Beaver", "Dolphin",  "Gecko",  "Hedgehog", "Lemur",
    "Moose",  "Orca", "Quokka",  "Robin",  "Squirrel", "Turtle",
};
#define MATCH_NADJ (sizeof match_adjectives / sizeof match_adjectives[0])
#define MATCH_NANIMAL (sizeof match_animals / sizeof match_animals[0])

/* A random "Adjective Animal" alias, different from `other` (may be NULL). */
static void match__alias(char out[NT_ALIAS_MAX], const char *other)
{
    do {
        snprintf(out, NT_ALIAS_MAX, "%s %s",
                 match_adjectives[randombytes_uniform((uint32_t)MATCH_NADJ)],
                 match_animals[randombytes_uniform((uint32_t)MATCH_NANIMAL)]);
    } while (other && strcmp(out, other) == 0);
}

/* The caller's ticket from their profile, preferences and blocks. On bad
 * input or a store failure the reply is filled and false returned; on
 * success *blocks is heap (free()). */
static bool match__ticket(nt_ctx *ctx, int64_t user_id, nt_match_ticket *t, int64_t **blocks,
                          nt_reply *r)
{
    nt_user u;
    nt_match_prefs p;
    int n = 0;

    memset(t, 0, sizeof *t);
    *blocks = NULL;
    int rc = nt_store_user_get(ctx->store, user_id, &u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return false;
    }
    t->gender = match__gender_bit(u.gender);
    if (!t->gender) {
        nt_reply_error(r, 400, "bad_request",
                       "gender is required for random chats: set it with PATCH /users/me");
        return false;
    }
    if (!u.birth_date[0]) {
        nt_reply_error(r, 400, "bad_request",
                       "birth_date is required for random chats: set it with PATCH /users/me");
        return false;
    }
    t->age = match__age(u.birth_date);
    if (t->age < NT_MATCH_AGE_MIN || t->age > NT_MATCH_AGE_MAX) {
        nt_reply_error(r, 400, "bad_request", "birth_date: random chats are for ages %d..%d",
                       NT_MATCH_AGE_MIN, NT_MATCH_AGE_MAX);
        return false;
    }
    rc = nt_store_match_prefs_get(ctx->store, user_id, &p);
    if (rc == NT_STORE_ENOTFOUND) {
        match__defaults(&p);
        rc = 0;
    }
    if (rc == 0) rc = nt_store_block_peers(ctx->store, user_id, blocks, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "preferences");
        return false;
    }
    t->user_id = user_id;
    t->genders = p.genders;
    t->age_min = p.age_min;
    t->age_max = p.age_max;
    t->ninterests = p.ninterests;
    for (int i = 0; i < p.ninterests; i++)
        t->interests[i] = nt_match_tag_hash(p.interests[i]);
    t->blocks = *blocks;
    t->nblocks = n;
    return true;
}

/* {"type":"matched","chat":{chat_json},"partner":{"alias","gender","age"}} to user. */
static void match__send_matched(nt_ctx *ctx, int64_t user, const nt_buf *chat_json,
                                const char *partner_alias, const nt_match_ticket *partner)
{
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "matched");
    nt_jw_key(&w, "chat");
    nt_jw_raw(&w, chat_json->data, chat_json->len);
    nt_jw_key(&w, "partner");
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "alias", partner_alias);
    nt_jw_kstr(&w, "gender", match__gender_name(partner->gender));
    nt_jw_kint(&w, "age", partner->age);
    nt_jw_obj_end(&w);
    nt_jw_obj_end(&w);
    if (!nt_jw_error(&w)) nt_bus_deliver(ctx->bus, &user, 1, frame.data, frame.len);
    nt_buf_free(&frame);
}

/* A ticket as the shared (bus) queue takes it. */
static void match__entry(const nt_match_ticket *t, nt_bus_match_entry *e)
{
    memset(e, 0, sizeof *e);
    e->user_id = t->user_id;
    e->gender = t->gender;
    e->age = t->age;
    e->genders = t->genders;
    e->age_min = t->age_min;
    e->age_max = t->age_max;
    e->interests = t->interests;
    e->ninterests = t->ninterests;
    e->blocks = t->blocks;
    e->nblocks = t->nblocks;
}

_Static_assert(NT_INTERESTS_MAX <= NT_BUS_MATCH_INTERESTS_MAX,
               "the shared queue must hold every interest of a ticket");
/* match__offer_shared hands the shared queue's answers on as the matcher's. */
_Static_assert((int)NT_BUS_MATCH_WAITING == (int)NT_MATCH_WAITING &&
                   (int)NT_BUS_MATCH_ALREADY == (int)NT_MATCH_ALREADY &&
                   (int)NT_BUS_MATCH_PAIRED == (int)NT_MATCH_PAIRED,
               "the shared queue and the matcher answer alike");

/* Through the bus's shared queue (Redis: any node's waiting users):
 * NT_MATCH_* with *partner (no blocks) and *other (the partner's entry as
 * the queue kept it, to put it back) set when paired, or NT_BUS_ENOTSUP
 * (in-process bus: use the local queue) or another error. */
static int match__offer_shared(nt_ctx *ctx, const nt_match_ticket *t, nt_match_ticket *partner,
                               nt_bus_match_entry *other)
{
    nt_bus_match_entry me;
    match__entry(t, &me);
    int rc = nt_bus_match_join(ctx->bus, &me, MQ_SCAN_CAP_DEFAULT, other);
    if (rc != NT_BUS_MATCH_PAIRED) return rc;
    memset(partner, 0, sizeof *partner);
    partner->user_id = other->user_id;
    partner->gender = other->gender;
    partner->age = other->age;
    partner->genders = other->genders;
    partner->age_min = other->age_min;
    partner->age_max = other->age_max;
    partner->ninterests = other->ninterests;
    memcpy(partner->interests, other->interests,
           (size_t)other->ninterests * sizeof partner->interests[0]);
    partner->arrival = other->arrival;
    return NT_MATCH_PAIRED;
}

/* Ends the hold on t's user (nt_matcher_settle with `outcome`), or a line
 * says why it could not go back into q. */
static void match__settle(nt_matcher *q, const nt_match_ticket *t, int outcome)
{
    if (nt_matcher_settle(q, t, outcome) != 0)
        nt_warn("match: user %" PRId64 " could not go back into the queue (out of memory)",
                t->user_id);
}

/* Tells both of a stored pair: `matched` with the chat and the partner. */
static void match__announce(nt_ctx *ctx, const nt_match_ticket *me, const nt_match_ticket *partner,
                            const char *alias_me, const char *alias_partner, const nt_chat *ch)
{
    nt_buf *chat_json = nt_buf_scratch_take();
    if (!chat_json) return;
    nt_jw w;
    nt_jw_init(&w, chat_json);
    nt_view_chat(&w, ch);
    if (!nt_jw_error(&w)) {
        match__send_matched(ctx, me->user_id, chat_json, alias_partner, partner);
        match__send_matched(ctx, partner->user_id, chat_json, alias_me, me);
    }
    nt_buf_scratch_give(chat_json);
    nt_info("match: paired users %" PRId64 " and %" PRId64 " in chat %" PRId64, me->user_id,
            partner->user_id, ch->id);
}

/* The pair is out of the queue (q, or the bus's shared one when q is NULL;
 * `shared` is then the partner's entry from it): make their chat and tell
 * them. On failure the partner goes back as it waited (preferences,
 * interests, place) and the caller gets the error. */
static void match__pair(nt_ctx *ctx, nt_matcher *q, const nt_match_ticket *me,
                        const nt_match_ticket *partner, const nt_bus_match_entry *shared,
                        nt_reply *r)
{
    char alias_me[NT_ALIAS_MAX], alias_partner[NT_ALIAS_MAX];
    nt_chat ch;
    nt_jw w;

    match__alias(alias_me, NULL);
    match__alias(alias_partner, alias_me);
    int rc = nt_store_chat_random(ctx->store, me->user_id, partner->user_id, alias_me,
                                  alias_partner, nt_now_ms(), &ch);
    if (rc != 0) {
        if (q) {
            /* Its blocks as of now if the store answers (one may have been
             * made meanwhile), else the list it waited with: back either
             * way, in its old place. */
            int64_t *blocks = NULL;
            int n = 0;
            nt_match_ticket back = *partner;
            if (nt_store_block_peers(ctx->store, partner->user_id, &blocks, &n) == 0) {
                back.blocks = blocks;
                back.nblocks = n;
            }
            match__settle(q, &back, NT_MATCH_FAILED);
            match__settle(q, me, NT_MATCH_FAILED_TOLD); /* it has the error */
            free(blocks);
        } else {
            /* The entry as the shared queue kept it (preferences, interests,
             * place, node); scan_cap 0 only queues it. No blocks needed: the
             * shared queue checks only an arrival's blocks, which cover both
             * directions, so this works with the store down too. */
            nt_bus_match_entry e = *shared, unused;
            e.interests = e.interest_buf;
            nt_bus_match_join(ctx->bus, &e, 0, &unused);
        }
        nt_reply_error(r, 503, "unavailable", "the random chat could not be stored; try again");
        return;
    }
    if (q) {
        match__settle(q, me, NT_MATCH_STORED);
        match__settle(q, partner, NT_MATCH_STORED);
    }
    match__announce(ctx, me, partner, alias_me, alias_partner, &ch);
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "status", "matched");
    nt_jw_kint(&w, "chat_id", ch.id);
    nt_jw_obj_end(&w);
    r->status = nt_jw_error(&w) ? 500 : 202;
    r->content_type = NULL;
    nt_chat_free(&ch);
}

/* ---- pairing without waiting for the store (WebSocket joins) ------------------------ */

/*
 * A pair out of the in-process queue whose chat is being stored. The
 * worker that paired them does not wait for the commit (a worker held per
 * pair capped the pairs per second at workers / commit time): the store
 * calls match__stored on its writer thread, which only announces the pair
 * through the in-process bus (a queue hand-over) or, on failure, puts both
 * back into the queue with the block lists they came with (no store read
 * on the writer thread): the arrival was told `match_queued`, and now it
 * is.
 */
typedef struct match_pending {
    nt_ctx *ctx;
    nt_matcher *q;
    nt_match_ticket me, partner; /* blocks: heap, both (match__pair_async) */
    char alias_me[NT_ALIAS_MAX], alias_partner[NT_ALIAS_MAX];
} match_pending;

/* The store's writer thread, once the pair's chat is stored or not. */
static void match__stored(void *arg, int rc, nt_chat *chat)
{
    match_pending *p = arg;
    if (rc == 0) {
        match__settle(p->q, &p->me, NT_MATCH_STORED);
        match__settle(p->q, &p->partner, NT_MATCH_STORED);
        match__announce(p->ctx, &p->me, &p->partner, p->alias_me, p->alias_partner, chat);
        nt_chat_free(chat);
    } else {
        nt_warn("match: the chat of users %" PRId64 " and %" PRId64
                " could not be stored; both wait again unless they left",
                p->me.user_id, p->partner.user_id);
        match__settle(p->q, &p->partner, NT_MATCH_FAILED);
        match__settle(p->q, &p->me, NT_MATCH_FAILED);
    }
    nt_ctx *ctx = p->ctx;
    free((int64_t *)p->me.blocks);
    free((int64_t *)p->partner.blocks);
    free(p);
    match__storing(ctx, -1);
}

/* Stores the pair's chat without waiting; 202 {"status":"matched"} (the
 * chat comes with the `matched` events). Takes both block lists (heap).
 * If the chat cannot even be queued, the partner goes back and the caller
 * gets 503. */
static void match__pair_async(nt_ctx *ctx, nt_matcher *q, const nt_match_ticket *me,
                              const nt_match_ticket *partner, nt_reply *r)
{
    match_pending *p = calloc(1, sizeof *p);
    if (p) {
        p->ctx = ctx;
        p->q = q;
        p->me = *me;
        p->me.arrival = 0; /* if it goes back: as a new arrival */
        p->partner = *partner;
        match__alias(p->alias_me, NULL);
        match__alias(p->alias_partner, p->alias_me);
        match__storing(ctx, +1);
        if (nt_store_chat_random_async(ctx->store, me->user_id, partner->user_id, p->alias_me,
                                       p->alias_partner, nt_now_ms(), match__stored, p) == 0) {
            match__reply_status(r, 202, "matched");
            return;
        }
        match__storing(ctx, -1);
        free(p);
    }
    match__settle(q, partner, NT_MATCH_FAILED);
    match__settle(q, me, NT_MATCH_FAILED_TOLD); /* it has the error */
    free((int64_t *)me->blocks);
    free((int64_t *)partner->blocks);
    nt_reply_error(r, 503, "unavailable", "the random chat could not be stored; try again");
}

/* nt_match_join and nt_match_join_async: `wait` says whether a pair made
 * here waits for its chat (the shared queue's pairs always do). */
static void match__join(nt_ctx *ctx, const nt_caller *c, nt_reply *r, bool wait)
{
    nt_match_ticket t, partner;
    nt_bus_match_entry shared;
    int64_t *blocks = NULL;

    if (!match__ticket(ctx, c->user_id, &t, &blocks, r)) return;
    nt_matcher *q = NULL;
    int rc = match__offer_shared(ctx, &t, &partner, &shared);
    if (rc == NT_BUS_ENOTSUP) {
        q = match__queue(ctx, true);
        rc = q ? nt_matcher_offer_held(q, &t, &partner) : -ENOMEM;
    }
    if (rc == NT_MATCH_PAIRED && q && !wait) {
        match__pair_async(ctx, q, &t, &partner, r); /* takes blocks and partner.blocks */
        return;
    }
    if (rc == NT_MATCH_PAIRED) {
        /* t keeps its blocks: it goes back with them if it joined again
         * while its pair was being stored and the pair fails. */
        match__pair(ctx, q, &t, &partner, &shared, r);
        if (q) free((int64_t *)partner.blocks); /* handed over by nt_matcher_offer */
        free(blocks);
        return;
    }
    free(blocks);
    if (rc < 0) {
        nt_reply_error(r, 503, "unavailable", "the match queue is unavailable");
        return;
    }
    match__reply_status(r, rc == NT_MATCH_ALREADY ? 200 : 202, "waiting");
}

void nt_match_join(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    match__join(ctx, c, r, true);
}

void nt_match_join_async(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    match__join(ctx, c, r, false);
}

void nt_match_leave(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    nt_match_disconnect(ctx, c->user_id);
    match__reply_empty(r, 204);
}

void nt_match_disconnect(nt_ctx *ctx, int64_t user_id)
{
    if (nt_bus_match_leave(ctx->bus, user_id) != NT_BUS_ENOTSUP) return;
    nt_matcher *q = match__queue(ctx, false);
    if (q) nt_matcher_leave(q, user_id);
}

void nt_match_block_changed(nt_ctx *ctx, int64_t a, int64_t b, bool blocked)
{
    /* An unblock is not applied to users already waiting: keeping them
     * apart until they queue again is the safe side (the other direction
     * may still be blocked). */
    nt_matcher *q = match__queue(ctx, false);
    if (q && blocked) nt_matcher_block(q, a, b);
}

/* ---- reveal --------------------------------------------------------------------------- */

void nt_match_reveal(nt_ctx *ctx, const nt_caller *c, int64_t chat_id, nt_reply *r)
{
    nt_chat ch;
    bool member = false;

    if (chat_id <= 0) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    memset(&ch, 0, sizeof ch);
    int rc = nt_store_chat_get(ctx->store, chat_id, c->user_id, &ch);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    for (int i = 0; i < ch.nmembers; i++)
        if (ch.members[i].user_id == c->user_id) member = true;
    bool random = strcmp(ch.type, "random") == 0;
    nt_chat_free(&ch);
    if (!member) {
        nt_reply_error(r, 404, "not_found", "chat not found");
        return;
    }
    if (!random) {
        nt_reply_error(r, 400, "bad_request", "chat_id: only a random chat can be revealed");
        return;
    }
    bool shown_now = false;
    rc = nt_store_chat_reveal(ctx->store, chat_id, c->user_id, &shown_now);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "chat");
        return;
    }
    match__reply_empty(r, 204);
    if (!shown_now) return;

    /* Both agreed: both see the chat again, now with real ids. */
    memset(&ch, 0, sizeof ch);
    if (nt_store_chat_get(ctx->store, chat_id, c->user_id, &ch) != 0) return;
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "chat");
    nt_jw_key(&w, "chat");
    nt_view_chat(&w, &ch);
    nt_jw_obj_end(&w);
    int64_t ids[2];
    int n = 0;
    for (int i = 0; i < ch.nmembers && n < 2; i++)
        ids[n++] = ch.members[i].user_id;
    if (!nt_jw_error(&w) && n > 0) nt_bus_deliver(ctx->bus, ids, (size_t)n, frame.data, frame.len);
    nt_buf_free(&frame);
    nt_chat_free(&ch);
}
