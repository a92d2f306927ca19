/* Latency histograms (see histogram.h). */
#include "common/histogram.h"

/* Fine between 0.5 and 2.5 ms, where a durable commit on a local disk
 * lands, and wide enough above for a stalled disk or a slow REST call. */
const double nt_hist_bounds_ms[NT_HIST_BUCKETS] = {0.1, 0.25, 0.5, 0.75, 1,   1.5, 2,    2.5, 5,
                                                   10,  25,   50,  100,  250, 500, 1000, 5000};

void nt_histogram_add(nt_histogram *h, double ms)
{
    int i = 0;
    while (i < NT_HIST_BUCKETS && ms > nt_hist_bounds_ms[i])
        i++;
    h->counts[i]++;
    h->total++;
    h->sum_ms += ms;
}

void nt_histogram_merge(nt_histogram *dst, const nt_histogram *src)
{
    for (int i = 0; i <= NT_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum_ms += src->sum_ms;
}

void nt_histogram_render(nt_buf *out, const char *name, const char *help, const nt_histogram *h)
{
    nt_buf_appendf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (int i = 0; i < NT_HIST_BUCKETS; i++) {
        cumulative += h->counts[i];
        nt_buf_appendf(out, "%s_bucket{le=\"%g\"} %llu\n", name, nt_hist_bounds_ms[i] / 1000,
                       (unsigned long long)cumulative);
    }
    nt_buf_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                   (unsigned long long)h->total, name, h->sum_ms / 1000, name,
                   (unsigned long long)h->total);
}
