/*
 * natter-matcher-bench: the random-chat queue alone (src/services/match.c,
 * nt_matcher_*), in process on one thread, with the users of natter-bench's
 * `match` scenario (match_profile.h), for docs/performance.md. It fills the
 * queue with --waiting users, then offers --arrivals arrivals one after the
 * other; a paired arrival takes its partner out, an arrival left waiting is
 * taken out again, so every offer meets the same kind of queue. Reports
 * offers per second, candidates examined per offer and a checksum of who
 * was paired with whom (equal checksums: the same choices), as a readable
 * summary on stderr and one JSON line on stdout.
 *
 *     natter-matcher-bench [--waiting W] [--arrivals A] [--scan-cap N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/arg.h"
#include "bench/match_profile.h"
#include "common/clock.h"
#include "services/match.h"

/* The queue's ticket of profile p for user_id. */
static nt_match_ticket ticket_of(int64_t user_id, const nb_match_profile_t *p)
{
    nt_match_ticket t;
    memset(&t, 0, sizeof t);
    t.user_id = user_id;
    t.gender = p->gbit == NB_MALE     ? NT_GENDER_MALE
               : p->gbit == NB_FEMALE ? NT_GENDER_FEMALE
                                      : NT_GENDER_OTHER;
    t.genders = ((p->wants_mask & NB_MALE) ? NT_GENDER_MALE : 0) |
                ((p->wants_mask & NB_FEMALE) ? NT_GENDER_FEMALE : 0) |
                ((p->wants_mask & NB_OTHER) ? NT_GENDER_OTHER : 0);
    t.age = p->age;
    t.age_min = p->age_min;
    t.age_max = p->age_max;
    /* As the server stores them: distinct tags, hashed. */
    for (int k = 0; k < p->ninterests; k++) {
        bool dup = false;
        for (int j = 0; j < k; j++)
            dup |= p->interests[j] == p->interests[k];
        if (dup) continue;
        char tag[8];
        snprintf(tag, sizeof tag, "t%d", p->interests[k]);
        t.interests[t.ninterests++] = nt_match_tag_hash(tag);
    }
    return t;
}

int main(int argc, char **argv)
{
    long waiting = 100000, arrivals = 40000, scan_cap = 0;
    for (int i = 1; i < argc; i++) {
        bool ok = i + 1 < argc;
        if (!strcmp(argv[i], "--waiting"))
            ok = ok && nb_arg_long(argv[++i], 1, 10000000, &waiting);
        else if (!strcmp(argv[i], "--arrivals"))
            ok = ok && nb_arg_long(argv[++i], 1, 10000000, &arrivals);
        else if (!strcmp(argv[i], "--scan-cap"))
            ok = ok && nb_arg_long(argv[++i], 0, 1 << 20, &scan_cap);
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "usage: natter-matcher-bench [--waiting W (default 100000)] "
                            "[--arrivals A (default 40000)] [--scan-cap N (0: the default)]\n");
            return 2;
        }
    }
    nt_matcher *m = nt_matcher_new((int)scan_cap);
    if (!m) return 1;
    nb_match_profile_t p;
    nt_match_ticket t, partner;
    /* natter-bench's numbering: arrivals 0..A-1, waiting users A..A+W-1. */
    for (long i = arrivals; i < arrivals + waiting; i++) {
        nb_match_profile((int)i, false, &p);
        t = ticket_of(i + 1, &p);
        if (nt_matcher_offer(m, &t, &partner) < 0) return 1;
    }
    uint64_t examined0, offers0, examined1, offers1;
    nt_matcher_stats(m, &examined0, &offers0);
    long paired = 0;
    unsigned long long checksum = 0;
    uint64_t t0 = nt_mono_ns();
    for (long i = 0; i < arrivals; i++) {
        nb_match_profile((int)i, true, &p);
        t = ticket_of(i + 1, &p);
        int rc = nt_matcher_offer(m, &t, &partner);
        if (rc == NT_MATCH_PAIRED) {
            paired++;
            checksum = checksum * 1000003u + (unsigned long long)partner.user_id;
            free((int64_t *)partner.blocks);
        } else if (rc == NT_MATCH_WAITING) {
            nt_matcher_leave(m, t.user_id);
        } else {
            return 1;
        }
    }
    double elapsed = (double)(nt_mono_ns() - t0) / 1e9;
    nt_matcher_stats(m, &examined1, &offers1);
    double per_offer = (double)(examined1 - examined0) / (double)(offers1 - offers0);
    fprintf(stderr,
            "matcher: %ld waiting, %ld arrivals, %ld paired: %.0f offers/s, %.2f us per offer, "
            "%.1f candidates examined per offer (checksum %016llx)\n",
            waiting, arrivals, paired, (double)arrivals / elapsed, elapsed * 1e6 / (double)arrivals,
            per_offer, checksum);
    printf("{\"scenario\":\"matcher\",\"waiting\":%ld,\"arrivals\":%ld,\"paired\":%ld,"
           "\"offers_per_s\":%.0f,\"us_per_offer\":%.3f,\"examined_per_offer\":%.1f,"
           "\"checksum\":\"%016llx\"}\n",
           waiting, arrivals, paired, (double)arrivals / elapsed, elapsed * 1e6 / (double)arrivals,
           per_offer, checksum);
    nt_matcher_free(m);
    return 0;
}
