/*
 * The users of the match benchmarks: natter-bench's `match` scenario (over
 * the API) and natter-matcher-bench (the queue alone) pair the same
 * profiles, from a fixed, seeded distribution:
 *   waiting users: 80 % male, 20 % "other", ages 18-67; a male wants
 *     female (60 %) or female+other (40 %), an "other" wants female;
 *   arrivals: female, ages 18-67, wanting male (50 %), other (10 %) or
 *     both (40 %); every 20th is unmatchable by design (age 90-99 wanting
 *     100..120, older than any waiting user accepts);
 *   everyone: an age range of the own age -0..10 / +0..10 years and 0-3
 *     interests out of 20 ("t0".."t19").
 */
#ifndef NB_MATCH_PROFILE_H
#define NB_MATCH_PROFILE_H

#include <stdbool.h>

enum { NB_MALE = 1, NB_FEMALE = 2, NB_OTHER = 4 };

typedef struct nb_match_profile_t {
    const char *gender;
    const char *wants; /* JSON array body */
    unsigned gbit, wants_mask;
    int age, age_min, age_max;
    int ninterests;
    int interests[3]; /* tag numbers 0..19, possibly repeated */
} nb_match_profile_t;

/* The profile of user i: an arrival or a waiting user (numbered apart). */
void nb_match_profile(int i, bool arrival, nb_match_profile_t *p);

#endif
