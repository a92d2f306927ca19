/* The match benchmarks' users: see match_profile.h. */
#include "bench/match_profile.h"

#include <stdint.h>
#include <string.h>

static uint64_t mb_hash(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void nb_match_profile(int i, bool arrival, nb_match_profile_t *p)
{
    uint64_t h = mb_hash((uint64_t)i * 2 + (arrival ? 1 : 0));
    memset(p, 0, sizeof *p);
    if (arrival) {
        p->gender = "female";
        p->gbit = NB_FEMALE;
        int w = (int)(h % 10);
        p->wants = w < 5 ? "\"male\"" : w < 6 ? "\"other\"" : "\"male\",\"other\"";
        p->wants_mask = w < 5 ? NB_MALE : w < 6 ? NB_OTHER : NB_MALE | NB_OTHER;
        if (i % 20 == 19) {
            p->wants = "\"male\"";
            p->wants_mask = NB_MALE;
            p->age = 90 + i % 10;
            p->age_min = 100;
            p->age_max = 120;
            return;
        }
        p->age = 18 + (int)((h >> 8) % 50);
    } else {
        bool male = h % 10 < 8;
        p->gender = male ? "male" : "other";
        p->gbit = male ? NB_MALE : NB_OTHER;
        bool both = male && (h >> 4) % 10 >= 6;
        p->wants = both ? "\"female\",\"other\"" : "\"female\"";
        p->wants_mask = both ? NB_FEMALE | NB_OTHER : NB_FEMALE;
        p->age = 18 + (int)((h >> 8) % 50);
    }
    int d1 = (int)((h >> 16) % 11), d2 = (int)((h >> 24) % 11);
    p->age_min = p->age - d1 < 13 ? 13 : p->age - d1;
    p->age_max = p->age + d2 > 120 ? 120 : p->age + d2;
    p->ninterests = (int)((h >> 32) % 4);
    for (int k = 0; k < p->ninterests; k++)
        p->interests[k] = (int)((h >> (36 + 5 * k)) % 20);
}
