/*
 * A latency histogram with fixed buckets in milliseconds, rendered in the
 * Prometheus text format (cumulative `le` buckets in seconds, _sum, _count).
 *
 * Not thread-safe: one thread adds (the loop, or the store's writer), and a
 * reader takes a copy under whatever lock guards the owner's counters.
 * Adding is a short scan of the bounds and three stores: no allocation.
 */
#ifndef NT_HISTOGRAM_H
#define NT_HISTOGRAM_H

#include <stdint.h>

#include "common/buf.h"

/* Upper bounds of the buckets, ms (a last bucket takes the rest: +Inf). */
#define NT_HIST_BUCKETS 17
extern const double nt_hist_bounds_ms[NT_HIST_BUCKETS];

typedef struct nt_histogram {
    uint64_t counts[NT_HIST_BUCKETS + 1]; /* per bucket, last: above every bound */
    uint64_t total;
    double sum_ms;
} nt_histogram;

/* Counts one observation of `ms` milliseconds. */
void nt_histogram_add(nt_histogram *h, double ms);

/* Adds every observation of src to dst. */
void nt_histogram_merge(nt_histogram *dst, const nt_histogram *src);

/* Appends h to out as the histogram `name` (seconds), with its HELP line. */
void nt_histogram_render(nt_buf *out, const char *name, const char *help, const nt_histogram *h);

#endif
