/*
 * natter-bench's small helpers: the monotonic clock, CPU and memory figures
 * of this process and of the server (from /proc), the latency histogram and
 * the merge of per-process results.
 */
#include "bench/bench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t nb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double nb_self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double nb_proc_cpu_s(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The command name may hold spaces: fields count from the last ')'. */
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    /* after ')': state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

long long nb_proc_rss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

int nb_cpu_ticks(unsigned long long *busy, unsigned long long *total, int max)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        unsigned long long v[10] = {0};
        int cpu;
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) < 9)
            continue;
        unsigned long long all = 0;
        for (int i = 0; i < 8; i++)
            all += v[i];
        total[n] = all;
        busy[n] = all - v[3] - v[4]; /* minus idle and iowait */
        n++;
    }
    fclose(f);
    return n;
}

long nb_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

/* ---- histogram ------------------------------------------------------------ */

static int hist__index(uint64_t us)
{
    if (us < 64) return (int)us;
    int e = 63 - __builtin_clzll(us) - 5; /* us >> e is in [32, 64) */
    if (e >= 40) return NB_HIST_BUCKETS - 1;
    return 64 + (e - 1) * NB_HIST_SUB + (int)((us >> e) - NB_HIST_SUB);
}

/* Upper edge of bucket i, in microseconds. */
static double hist__upper_us(int i)
{
    if (i < 64) return (double)i + 1;
    int e = (i - 64) / NB_HIST_SUB + 1;
    int m = (i - 64) % NB_HIST_SUB + NB_HIST_SUB;
    return (double)((uint64_t)(m + 1) << e);
}

void nb_hist_add(nb_hist *h, uint64_t ns)
{
    h->count++;
    h->sum_ns += (double)ns;
    if (ns > h->max_ns) h->max_ns = ns;
    h->bucket[hist__index(ns / 1000)]++;
}

void nb_hist_merge(nb_hist *into, const nb_hist *from)
{
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns) into->max_ns = from->max_ns;
    for (int i = 0; i < NB_HIST_BUCKETS; i++)
        into->bucket[i] += from->bucket[i];
}

double nb_hist_ms(const nb_hist *h, double q)
{
    if (!h->count) return 0;
    if (q >= 1) return (double)h->max_ns / 1e6;
    uint64_t want = (uint64_t)(q * (double)h->count);
    if (want >= h->count) want = h->count - 1;
    uint64_t seen = 0;
    for (int i = 0; i < NB_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen > want) {
            double ms = hist__upper_us(i) / 1000.0;
            double max_ms = (double)h->max_ns / 1e6;
            return ms < max_ms ? ms : max_ms;
        }
    }
    return (double)h->max_ns / 1e6;
}

void nb_result_merge(nb_result *into, const nb_result *from)
{
    into->conns_ok += from->conns_ok;
    into->conns_failed += from->conns_failed;
    into->sent += from->sent;
    into->sent_total += from->sent_total;
    into->acked += from->acked;
    into->errors += from->errors;
    into->unacked += from->unacked;
    into->deliveries += from->deliveries;
    into->deliveries_total += from->deliveries_total;
    into->lost += from->lost;
    into->duplicated += from->duplicated;
    into->out_of_order += from->out_of_order;
    if (from->window_s > into->window_s) into->window_s = from->window_s;
    into->cpu_s += from->cpu_s;
    nb_hist_merge(&into->ack, &from->ack);
    nb_hist_merge(&into->recv, &from->recv);
    nb_hist_merge(&into->recv2, &from->recv2);
    if (!into->error[0] && from->error[0]) memcpy(into->error, from->error, sizeof into->error);
}
