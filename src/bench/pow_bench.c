/*
 * natter-pow-bench: how fast the bot proves work (src/services/pow.c), for
 * docs/performance.md. Two figures:
 *  - hashes per second per core: one thread runs nt_pow_search at an
 *    unreachable difficulty for a fixed time (about 2 s) and counts tries;
 *  - the median time to a proof at --bits (default 24) over --runs random
 *    prefixes (default 9), each solved by nt_pow_solve on --threads threads
 *    (default: every online CPU; 1 gives the one-core figure).
 * Prints a readable summary on stderr and one JSON line on stdout.
 *
 *     natter-pow-bench [--bits N] [--runs R] [--threads T]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bench/arg.h"
#include "services/pow.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: natter-pow-bench [--bits N (1..40, default 24)] [--runs R (1..1000, "
               "default 9)] [--threads T (0 = online CPUs, default)]\n");
}

/* A random printable prefix of 8..64 bytes, like a short chat text. */
static size_t random_prefix(char *out, size_t cap)
{
    unsigned char rnd[65];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)rand();
    }
    size_t len = 8 + rnd[0] % 57;
    if (len > cap) len = cap;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(' ' + rnd[i + 1] % 95);
    return len;
}

int main(int argc, char **argv)
{
    long bits = 24, runs = 9, threads = 0;
    for (int i = 1; i < argc; i += 2) { /* flag, value */
        long *target = NULL, min = 0, max = 0;
        if (strcmp(argv[i], "--bits") == 0)
            target = &bits, min = 1, max = 40;
        else if (strcmp(argv[i], "--runs") == 0)
            target = &runs, min = 1, max = 1000;
        else if (strcmp(argv[i], "--threads") == 0)
            target = &threads, min = 0, max = 256;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!target || i + 1 >= argc || !nb_arg_long(argv[i + 1], min, max, target)) {
            usage(stderr);
            return 2;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = threads > 0 ? (int)threads : (int)(cpus > 0 ? cpus : 1);

    /* 1. Raw rate on one core: 64 bits is never reached, the deadline ends it. */
    const char *probe = "natter proof-of-work rate probe";
    nt_pow_result r;
    double t0 = now_s();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t deadline = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 2000000000u;
    nt_pow_search(probe, strlen(probe), 64, 0, 1, NULL, deadline, &r);
    double rate = (double)r.hashes / (now_s() - t0);

    /* 2. Time to a proof. */
    double *times = calloc((size_t)runs, sizeof *times);
    if (!times) return 1;
    uint64_t total_hashes = 0;
    double total_s = 0;
    for (long i = 0; i < runs; i++) {
        char prefix[64];
        size_t len = random_prefix(prefix, sizeof prefix);
        double t = now_s();
        int rc = nt_pow_solve(prefix, len, (int)bits, nthreads, NULL, 0, &r);
        times[i] = now_s() - t;
        if (rc != 1) {
            fprintf(stderr, "natter-pow-bench: no proof (rc=%d)\n", rc);
            return 1;
        }
        uint8_t check[32];
        nt_pow_hash(prefix, len, r.nonce, check);
        if (memcmp(check, r.hash, 32) != 0 || !nt_pow_check(check, (int)bits)) {
            fprintf(stderr, "natter-pow-bench: a wrong proof\n");
            return 1;
        }
        total_hashes += r.hashes;
        total_s += times[i];
    }
    qsort(times, (size_t)runs, sizeof *times, cmp_double);
    double median = runs % 2 ? times[runs / 2] : (times[runs / 2 - 1] + times[runs / 2]) / 2;
    double solve_rate = total_s > 0 ? (double)total_hashes / total_s : 0;

    fprintf(stderr,
            "SHA-256 tries per second on one core: %.2f million\n"
            "proof of %ld bits on %d thread(s), %ld runs: median %.3f s, min %.3f s, "
            "max %.3f s (%.2f million tries/s overall; expected tries 2^%ld = %.1f million)\n",
            rate / 1e6, bits, nthreads, runs, median, times[0], times[runs - 1], solve_rate / 1e6,
            bits, (double)(1ull << bits) / 1e6);
    printf("{\"hashes_per_sec_per_core\":%.0f,\"bits\":%ld,\"threads\":%d,\"runs\":%ld,"
           "\"median_s\":%.4f,\"min_s\":%.4f,\"max_s\":%.4f,\"solve_hashes_per_sec\":%.0f}\n",
           rate, bits, nthreads, runs, median, times[0], times[runs - 1], solve_rate);
    free(times);
    return 0;
}
