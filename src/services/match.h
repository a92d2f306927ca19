/*
 * The match queue: users waiting for a random chat, and the pairing rule.
 * This is the small interface the match service (match.c) talks to, so the
 * in-process queue here can later be replaced by one shared through Redis
 * without touching the handlers: a ticket in, a partner (or "wait") out.
 *
 * Index. Waiting users sit in FIFO buckets keyed by (own gender, own age,
 * set of genders wanted): 3 x 108 x 7 buckets, plus one bit per non-empty
 * bucket so empty ones cost nothing. An arrival looks only at the buckets
 * of the genders and ages it wants and whose wanted set holds its own
 * gender; inside a bucket only the candidate's age range and blocks remain
 * to check, and at most `scan_cap` candidates per bucket are examined. The
 * work per arrival is bounded by 3 x 108 x 4 x scan_cap whatever the queue
 * length (see docs/decisions.md for the trade-off).
 *
 * Thread-safe: every call takes the queue's mutex; none blocks otherwise.
 */
#ifndef NT_SERVICES_MATCH_H
#define NT_SERVICES_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define NT_MATCH_AGE_MIN 13
#define NT_MATCH_AGE_MAX 120

typedef struct nt_matcher nt_matcher;

/* A user entering the queue. gender is one NT_GENDER_* bit; genders the
 * NT_GENDER_* set the user wants; interests are tag hashes (any order);
 * blocks the users this one blocked or was blocked by (any order; copied). */
typedef struct nt_match_ticket {
    int64_t user_id;
    unsigned gender;
    int age;
    unsigned genders;
    int age_min, age_max;
    int ninterests;
    uint64_t interests[NT_INTERESTS_MAX];
    const int64_t *blocks;
    int nblocks;
    uint64_t arrival; /* set by the queue; kept by nt_matcher_requeue */
} nt_match_ticket;

enum { NT_MATCH_WAITING = 0, NT_MATCH_ALREADY = 1, NT_MATCH_PAIRED = 2 };

/* A new empty queue; scan_cap <= 0 takes the default (32). NULL on ENOMEM. */
nt_matcher *nt_matcher_new(int scan_cap);
void nt_matcher_free(nt_matcher *m);

/*
 * Offers t (fields checked by the caller: ages within 13..120, gender one
 * bit, genders non-empty). If t->user_id is already waiting: NT_MATCH_ALREADY
 * and nothing changes. If a compatible waiting user exists (each inside the
 * other's genders and age range, no block either way), the best one (most
 * shared interests, then longest wait, among those examined) leaves the
 * queue and is copied into *partner with its block list, now the
 * caller's (heap, free(partner->blocks); NULL when it had none), so that
 * it can go back as it was (nt_matcher_requeue) without reading the store:
 * NT_MATCH_PAIRED. Otherwise t waits: NT_MATCH_WAITING. -ENOMEM on failure.
 */
int nt_matcher_offer(nt_matcher *m, const nt_match_ticket *t, nt_match_ticket *partner);
/*
 * nt_matcher_offer for a pair whose chat is stored after it is made: on
 * NT_MATCH_PAIRED both users are held until nt_matcher_settle is called
 * for each. A held user that leaves (nt_matcher_leave) is marked so, and
 * a held user that offers again gets NT_MATCH_ALREADY (and no longer
 * counts as left): it waits for its pair's outcome.
 */
int nt_matcher_offer_held(nt_matcher *m, const nt_match_ticket *t, nt_match_ticket *partner);
/* How a held user's pair ended (nt_matcher_settle). */
enum {
    NT_MATCH_STORED = 0,      /* the chat exists: the user stays out of the queue */
    NT_MATCH_FAILED = 1,      /* not stored: back into the queue unless it left */
    NT_MATCH_FAILED_TOLD = 2, /* not stored, and the user was answered so (REST):
                                 back only if it joined again while held (it
                                 was answered "waiting" then) */
};
/* Ends the hold on t's user after its pair's outcome; going back is as
 * nt_matcher_requeue puts it (t's blocks, arrival). 0 or -ENOMEM. */
int nt_matcher_settle(nt_matcher *m, const nt_match_ticket *t, int outcome);
/* Puts a ticket back with its old arrival (a pairing that could not be
 * stored), without looking for a partner; arrival 0 queues it as a new
 * arrival. Nothing changes if the user is waiting already or held. 0 or
 * -ENOMEM. */
int nt_matcher_requeue(nt_matcher *m, const nt_match_ticket *t);
/* Takes user_id out of the queue; true if it was waiting or held (a held
 * user is only marked: it will not go back). */
bool nt_matcher_leave(nt_matcher *m, int64_t user_id);
/* a and b must never be paired from now on (a block between them). */
void nt_matcher_block(nt_matcher *m, int64_t a, int64_t b);
bool nt_matcher_is_waiting(nt_matcher *m, int64_t user_id);
size_t nt_matcher_count(nt_matcher *m);
/* Counters for tests and metrics: candidates examined in all, offers made. */
void nt_matcher_stats(nt_matcher *m, uint64_t *examined, uint64_t *offers);

/* The tag hash used for interests (FNV-1a, 64 bits). */
uint64_t nt_match_tag_hash(const char *tag);

#endif
