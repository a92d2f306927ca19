/*
 * Unit tests for src/common/histogram.h: which bucket an observation lands
 * in (bounds are inclusive upper bounds, beyond the last is +Inf), the sum,
 * and the Prometheus text (cumulative buckets in seconds, _sum, _count).
 */
#include <string.h>

#include "check.h"
#include "common/histogram.h"

static void test_buckets(void)
{
    nt_histogram h;
    memset(&h, 0, sizeof h);
    nt_histogram_add(&h, 0);    /* first bucket */
    nt_histogram_add(&h, 0.1);  /* on a bound: that bucket */
    nt_histogram_add(&h, 0.11); /* just above: the next */
    nt_histogram_add(&h, 1.2);  /* (1, 1.5] */
    nt_histogram_add(&h, 5000); /* the last bound */
    nt_histogram_add(&h, 1e6);  /* above every bound */
    CHECK_EQ_INT(h.total, 6);
    CHECK_EQ_INT(h.counts[0], 2);
    CHECK_EQ_INT(h.counts[1], 1);
    int i15 = 0;
    while (nt_hist_bounds_ms[i15] != 1.5)
        i15++;
    CHECK_EQ_INT(h.counts[i15], 1);
    CHECK_EQ_INT(h.counts[NT_HIST_BUCKETS - 1], 1);
    CHECK_EQ_INT(h.counts[NT_HIST_BUCKETS], 1);
    CHECK(h.sum_ms > 1e6 + 5001 && h.sum_ms < 1e6 + 5002);
    for (int b = 1; b < NT_HIST_BUCKETS; b++)
        CHECK(nt_hist_bounds_ms[b] > nt_hist_bounds_ms[b - 1]);
}

static void test_render(void)
{
    nt_histogram h;
    memset(&h, 0, sizeof h);
    nt_histogram_add(&h, 0.2);
    nt_histogram_add(&h, 2);
    nt_buf out = NT_BUF_INIT;
    nt_histogram_render(&out, "x_seconds", "Help text.", &h);
    const char *text = nt_buf_cstr(&out);
    CHECK(strstr(text, "# HELP x_seconds Help text.\n# TYPE x_seconds histogram\n") == text);
    CHECK(strstr(text, "x_seconds_bucket{le=\"0.0001\"} 0\n") != NULL);
    CHECK(strstr(text, "x_seconds_bucket{le=\"0.00025\"} 1\n") != NULL);
    CHECK(strstr(text, "x_seconds_bucket{le=\"0.0015\"} 1\n") != NULL);
    CHECK(strstr(text, "x_seconds_bucket{le=\"0.002\"} 2\n") != NULL);
    CHECK(strstr(text, "x_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(text, "x_seconds_sum 0.002200\n") != NULL);
    CHECK(strstr(text, "x_seconds_count 2\n") != NULL);
    nt_buf_free(&out);

    nt_histogram sum = h;
    nt_histogram_merge(&sum, &h);
    CHECK_EQ_INT(sum.total, 4);
    CHECK_EQ_INT(sum.counts[1], 2);
    CHECK(sum.sum_ms > 4.39 && sum.sum_ms < 4.41);
}

int main(void)
{
    test_buckets();
    test_render();
    return check_exit();
}
