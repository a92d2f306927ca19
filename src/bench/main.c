/*
 * natter-bench: Natter's load generator (issue 8). Each scenario sets up its
 * users and chats over REST, forks --procs load processes (load.c) that
 * drive the WebSockets with epoll, samples the server (--server-pid) while
 * they run, and prints one JSON line on stdout and a readable summary on
 * stderr, with the bench's own CPU time next to the server's.
 *
 *     natter-bench [options] idle N | direct | group | ingest | login | match | pow [args]
 *
 * See usage() for the options and docs/performance.md for the figures.
 */
#include "bench/bench.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: natter-bench [options] SCENARIO [args]\n"
            "\n"
            "scenarios:\n"
            "  idle N     N idle authenticated WebSockets; server RSS per connection\n"
            "  direct     --pairs P, both members send --rate R msgs/s each\n"
            "  group      --groups G of --members M, --rate R msgs/s in total\n"
            "  ingest     --senders S (one chat each): highest rate with p99 ack < --max-p99\n"
            "  login      a direct load; a login storm runs in the second half\n"
            "  match      --waiting W users queued over REST, --arrivals A WebSockets join at\n"
            "             --rate R/s (or each of --rates R1,R2,..., or a search): pairs/s and\n"
            "             time to match (p99 bound --max-p99)\n"
            "  pow        runs natter-pow-bench (next to natter-bench) with the args\n"
            "\n"
            "options:\n"
            "  --host H --port P     server (default 127.0.0.1:8080; mosquitto for --proto mqtt)\n"
            "  --server-pid PID      server process for CPU and RSS figures\n"
            "  --proto natter|mqtt   group only: mqtt drives an MQTT 3.1.1 broker (QoS 0)\n"
            "  --users FILE          cache of bench users and their tokens\n"
            "  --duration S          measured seconds (default 10)\n"
            "  --warmup S            load before measuring (default 2)\n"
            "  --rate R              see the scenarios (defaults: direct 50, group 1500)\n"
            "  --size B              message text bytes (default 200)\n"
            "  --pairs P             direct/login pairs (default 100)\n"
            "  --groups G --members M  group shape (default 100 x 100)\n"
            "  --senders S           ingest senders (default 200)\n"
            "  --max-p99 MS          ingest: bound on p99 send-to-ack; match: on p99 time to\n"
            "                        match (default 50)\n"
            "  --waiting W           match: users waiting in the queue (default 100000)\n"
            "  --arrivals A          match: arrival connections, at most 19000 (default 2000)\n"
            "  --match-wait S        match: a queued arrival is cancelled (not matched) after\n"
            "                        S seconds (default 1)\n"
            "  --rates R1,R2,...     match: measure each rate in turn\n"
            "  --procs N             load processes (default 1)\n"
            "  --share K             idle: connections per user (default 1)\n"
            "  --hold S              idle: seconds to hold before reading the RSS (default 2)\n"
            "  --login-threads T     login storm concurrency (default 8)\n"
            "  --tick-us U           send scheduler tick (default 250)\n"
            "  --quiet               JSON line only\n");
}

static nb_opts opts = {
    .host = "127.0.0.1",
    .port = 0,
    .prefix = "nb",
    .duration_s = 10,
    .warmup_s = 2,
    .rate = -1,
    .size = 200,
    .pairs = 100,
    .groups = 100,
    .members = 100,
    .senders = 200,
    .procs = 1,
    .login_threads = 8,
    .max_p99_ms = 50,
    .tick_us = 250,
    .match_waiting = 100000,
    .match_arrivals = 2000,
    .match_wait_s = 1,
};
static int share = 1;
static double idle_hold_s = 2;

/* ---- output ------------------------------------------------------------------ */

static void json_hist(FILE *f, const char *name, const nb_hist *h)
{
    fprintf(f,
            ",\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
            "\"p999\":%.3f,\"max\":%.3f}",
            name, h->count, nb_hist_ms(h, 0.5), nb_hist_ms(h, 0.9), nb_hist_ms(h, 0.99),
            nb_hist_ms(h, 0.999), nb_hist_ms(h, 1));
}

static void text_hist(const char *name, const nb_hist *h)
{
    if (!h->count) return;
    fprintf(stderr,
            "  %-16s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms  (%" PRIu64
            " samples)\n",
            name, nb_hist_ms(h, 0.5), nb_hist_ms(h, 0.9), nb_hist_ms(h, 0.99), nb_hist_ms(h, 0.999),
            nb_hist_ms(h, 1), h->count);
}

typedef struct run_figures {
    nb_result res;
    double server_cpu_s; /* over the measured window, -1 unknown */
    double bench_parent_cpu_s;
    double offered_rate;
    int ncpus;
    double cpu_busy_pct[8]; /* each CPU over the measured window, from /proc/stat */
} run_figures;

typedef struct cpu_sample {
    int n;
    unsigned long long busy[8], total[8];
} cpu_sample;

static void cpu_sample_take(cpu_sample *s)
{
    s->n = nb_cpu_ticks(s->busy, s->total, 8);
}

static void cpu_sample_diff(const cpu_sample *a, const cpu_sample *b, run_figures *fig)
{
    fig->ncpus = a->n < b->n ? a->n : b->n;
    for (int i = 0; i < fig->ncpus; i++) {
        unsigned long long t = b->total[i] - a->total[i];
        fig->cpu_busy_pct[i] = t ? 100.0 * (double)(b->busy[i] - a->busy[i]) / (double)t : 0;
    }
}

static void json_cpus(FILE *f, const run_figures *fig)
{
    fprintf(f, ",\"cpu_busy_pct\":[");
    for (int i = 0; i < fig->ncpus; i++)
        fprintf(f, "%s%.1f", i ? "," : "", fig->cpu_busy_pct[i]);
    fprintf(f, "]");
}

/* The fields every load scenario prints. */
static void json_load(FILE *f, const run_figures *fig)
{
    const nb_result *r = &fig->res;
    double w = r->window_s > 0 ? r->window_s : 1;
    fprintf(f,
            ",\"offered_rate\":%.1f,\"sent\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"acked\":%" PRIu64
            ",\"errors\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"deliveries_per_s\":%.1f"
            ",\"lost\":%" PRIu64 ",\"duplicated\":%" PRIu64 ",\"out_of_order\":%" PRIu64
            ",\"unacked\":%" PRIu64,
            fig->offered_rate, r->sent, (double)r->sent / w, r->acked, r->errors, r->deliveries,
            (double)r->deliveries / w, r->lost, r->duplicated, r->out_of_order, r->unacked);
    json_hist(f, "ack_ms", &r->ack);
    json_hist(f, "recv_ms", &r->recv);
    double bench_cpu = r->cpu_s + fig->bench_parent_cpu_s;
    fprintf(f, ",\"window_s\":%.2f,\"bench_cpu_s\":%.3f,\"bench_cpu_pct\":%.1f", w, bench_cpu,
            100 * bench_cpu / w);
    if (fig->server_cpu_s >= 0)
        fprintf(f, ",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f", fig->server_cpu_s,
                100 * fig->server_cpu_s / w);
    json_cpus(f, fig);
}

static void text_load(const char *title, const run_figures *fig)
{
    const nb_result *r = &fig->res;
    double w = r->window_s > 0 ? r->window_s : 1;
    fprintf(stderr, "%s\n", title);
    fprintf(stderr, "  offered %.0f msgs/s; sent %.0f msgs/s, %.0f deliveries/s over %.1f s\n",
            fig->offered_rate, (double)r->sent / w, (double)r->deliveries / w, w);
    fprintf(stderr,
            "  acked %" PRIu64 ", errors %" PRIu64 ", lost %" PRIu64 ", duplicated %" PRIu64
            ", out of order %" PRIu64 "\n",
            r->acked, r->errors, r->lost, r->duplicated, r->out_of_order);
    text_hist("send to ack", &r->ack);
    text_hist("send to receive", &r->recv);
    double bench_cpu = r->cpu_s + fig->bench_parent_cpu_s;
    fprintf(stderr, "  CPU: bench %.2f s (%.0f%% of a core)", bench_cpu, 100 * bench_cpu / w);
    if (fig->server_cpu_s >= 0)
        fprintf(stderr, ", server %.2f s (%.0f%% of a core)", fig->server_cpu_s,
                100 * fig->server_cpu_s / w);
    fprintf(stderr, "\n  CPUs busy (from /proc/stat, softirq included):");
    for (int i = 0; i < fig->ncpus; i++)
        fprintf(stderr, " cpu%d %.0f%%", i, fig->cpu_busy_pct[i]);
    fprintf(stderr, "\n");
    if (r->error[0]) fprintf(stderr, "  error: %s\n", r->error);
}

/* ---- load processes --------------------------------------------------------- */

typedef struct child {
    pid_t pid;
    int from; /* ready byte, then the result */
    int to;   /* go byte, or EOF to stop an idle child */
} child;

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -EIO;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -EIO;
        done += (size_t)n;
    }
    return 0;
}

/* Forks one load process for `l`. */
static int spawn(const nb_load *l, child *ch)
{
    int up[2], down[2];
    if (pipe(up) != 0) return -errno;
    if (pipe(down) != 0) {
        close(up[0]);
        close(up[1]);
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(up[0]), close(up[1]), close(down[0]), close(down[1]);
        return err;
    }
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        nb_load mine = *l;
        mine.ready_fd = up[1];
        mine.ctl_fd = down[0];
        nb_result *res = calloc(1, sizeof *res);
        if (!res) _exit(3);
        int rc = nb_load_run(&mine, res);
        char nope = 0;
        if (rc < 0 && res->conns_ok < (uint64_t)l->nconns)
            (void)!write(up[1], &nope, 1); /* tell the parent setup failed */
        write_full(up[1], res, sizeof *res);
        _exit(rc < 0 ? 1 : 0);
    }
    close(up[1]);
    close(down[0]);
    ch->pid = pid;
    ch->from = up[0];
    ch->to = down[1];
    return 0;
}

/* Waits for every child's ready byte. true if all are ready. */
static bool wait_ready(child *kids, int n)
{
    bool ok = true;
    for (int i = 0; i < n; i++) {
        char b = 0;
        if (read_full(kids[i].from, &b, 1) != 0 || b != 1) ok = false;
    }
    return ok;
}

/* Collects every child's result into *sum and reaps them. */
static void collect(child *kids, int n, nb_result *sum)
{
    memset(sum, 0, sizeof *sum);
    nb_result *r = calloc(1, sizeof *r);
    for (int i = 0; i < n; i++) {
        if (r && read_full(kids[i].from, r, sizeof *r) == 0) {
            nb_result_merge(sum, r);
        } else if (!sum->error[0]) {
            snprintf(sum->error, sizeof sum->error, "load process %d gave no result", i);
        }
        close(kids[i].from);
        if (kids[i].to >= 0) close(kids[i].to);
        waitpid(kids[i].pid, NULL, 0);
    }
    free(r);
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A hook the parent runs at the start of the measured window (the login
 * storm), and the matching stop. */
typedef struct window_hook {
    double start_after_s; /* seconds into the window */
    void (*start)(void *arg);
    void (*stop)(void *arg);
    void *arg;
} window_hook;

/*
 * Splits chats over opts.procs load processes (whole chats each), runs them
 * at `rate` msgs/s in total, and fills *fig.
 */
static int run_load(nb_user *users, nb_chat *chats, int nchats, double rate, double phase2_s,
                    const window_hook *hook, run_figures *fig)
{
    memset(fig, 0, sizeof *fig);
    fig->offered_rate = rate;
    fig->server_cpu_s = -1;
    int procs = opts.procs < nchats ? opts.procs : nchats;
    if (procs < 1) procs = 1;
    child kids[64];
    int nkids = 0;
    int total_senders = 0;
    for (int i = 0; i < nchats; i++)
        total_senders += chats[i].nsenders;
    int rc = 0;
    for (int p = 0; p < procs; p++) {
        int c0 = (int)((long)nchats * p / procs), c1 = (int)((long)nchats * (p + 1) / procs);
        int first = chats[c0].first;
        int last = chats[c1 - 1].first + chats[c1 - 1].n;
        nb_chat *mine = calloc((size_t)(c1 - c0), sizeof *mine);
        if (!mine) {
            rc = -ENOMEM;
            break;
        }
        int senders = 0;
        for (int i = c0; i < c1; i++) {
            mine[i - c0] = chats[i];
            mine[i - c0].first -= first;
            senders += chats[i].nsenders;
        }
        nb_load l = {
            .o = &opts,
            .users = users + first,
            .nconns = last - first,
            .chats = mine,
            .nchats = c1 - c0,
            .rate = total_senders ? rate * senders / total_senders : 0,
            .warmup_s = opts.warmup_s,
            .duration_s = opts.duration_s,
            .phase2_s = phase2_s,
            .proc_index = p,
        };
        rc = spawn(&l, &kids[nkids]);
        free(mine);
        if (rc) break;
        nkids++;
    }
    bool ready = rc == 0 && wait_ready(kids, nkids);
    if (ready) {
        char go = 1;
        for (int i = 0; i < nkids; i++)
            write_full(kids[i].to, &go, 1);
        double parent_cpu0 = nb_self_cpu_s();
        sleep_s(opts.warmup_s);
        double s0 = opts.server_pid ? nb_proc_cpu_s(opts.server_pid) : -1;
        cpu_sample c0, c1;
        cpu_sample_take(&c0);
        if (hook) {
            sleep_s(hook->start_after_s);
            hook->start(hook->arg);
            sleep_s(opts.duration_s - hook->start_after_s);
            hook->stop(hook->arg);
        } else {
            sleep_s(opts.duration_s);
        }
        double s1 = opts.server_pid ? nb_proc_cpu_s(opts.server_pid) : -1;
        cpu_sample_take(&c1);
        cpu_sample_diff(&c0, &c1, fig);
        if (s0 >= 0 && s1 >= 0) fig->server_cpu_s = s1 - s0;
        fig->bench_parent_cpu_s = nb_self_cpu_s() - parent_cpu0;
    } else {
        for (int i = 0; i < nkids; i++) {
            close(kids[i].to);
            kids[i].to = -1;
        }
    }
    collect(kids, nkids, &fig->res);
    if (!ready && !fig->res.error[0])
        snprintf(fig->res.error, sizeof fig->res.error, "load processes did not get ready");
    return ready && !rc ? 0 : -EIO;
}

/* ---- scenarios ----------------------------------------------------------------- */

void nb_print_header(FILE *f, const nb_opts *o, const char *scenario)
{
    fprintf(f,
            "{\"scenario\":\"%s\",\"proto\":\"%s\",\"host\":\"%s\",\"port\":%d,\"procs\":%d,"
            "\"size\":%d,\"time\":%lld",
            scenario, o->proto == NB_MQTT ? "mqtt" : "natter", o->host, o->port, o->procs, o->size,
            (long long)time(NULL));
}

static void print_header(FILE *f, const char *scenario)
{
    nb_print_header(f, &opts, scenario);
}

/* Spawns load processes holding idle connections users[from..to), split
 * over opts.procs; returns how many were spawned into kids. */
static int idle_spawn(nb_user *users, int from, int to, child *kids, int max_kids)
{
    int procs = opts.procs < 1 ? 1 : opts.procs;
    int nkids = 0;
    nb_chat chat = {0};
    for (int p = 0; p < procs && nkids < max_kids; p++) {
        int a = from + (int)((long)(to - from) * p / procs);
        int b = from + (int)((long)(to - from) * (p + 1) / procs);
        if (b <= a) continue;
        chat.first = 0;
        chat.n = b - a;
        nb_load l = {.o = &opts,
                     .users = users + a,
                     .nconns = b - a,
                     .chats = &chat,
                     .nchats = 1,
                     .idle = true,
                     .proc_index = p};
        if (spawn(&l, &kids[nkids]) != 0) break;
        nkids++;
    }
    return nkids;
}

/*
 * Idle connections in two stages: the first quarter warms the server (its
 * SQLite page caches, allocator arenas, registry), then the rest is added.
 * The headline figure is the growth of the second stage per connection
 * (what one more idle connection costs); the growth from before the first
 * stage per connection is printed too.
 */
static int scenario_idle(int n)
{
    if (n <= 0) {
        fprintf(stderr, "natter-bench: idle needs N > 0\n");
        return 2;
    }
    int nusers = (n + share - 1) / share;
    nb_user *base = nb_users_get(&opts, nusers, 8);
    if (!base) return 1;
    nb_user *users = malloc((size_t)n * sizeof *users);
    if (!users) return 1;
    for (int i = 0; i < n; i++)
        users[i] = base[i / share];
    free(base);
    int first = n >= 4 ? n / 4 : 0;
    long long rss0 = opts.server_pid ? nb_proc_rss(opts.server_pid) : -1;
    double cpu0 = opts.server_pid ? nb_proc_cpu_s(opts.server_pid) : -1;
    uint64_t t0 = nb_now_ns();
    child kids[128];
    int nkids = idle_spawn(users, 0, first, kids, 64);
    bool ready = wait_ready(kids, nkids);
    sleep_s(first ? 2 : 0);
    long long rss1 = opts.server_pid ? nb_proc_rss(opts.server_pid) : -1;
    int more = idle_spawn(users, first, n, kids + nkids, 64);
    ready = wait_ready(kids + nkids, more) && ready;
    nkids += more;
    double connect_s = (double)(nb_now_ns() - t0) / 1e9;
    /* Let the server settle (auth jobs, presence) before reading its RSS. */
    sleep_s(idle_hold_s);
    long long rss2 = opts.server_pid ? nb_proc_rss(opts.server_pid) : -1;
    double cpu1 = opts.server_pid ? nb_proc_cpu_s(opts.server_pid) : -1;
    for (int i = 0; i < nkids; i++) {
        close(kids[i].to);
        kids[i].to = -1;
    }
    nb_result sum;
    collect(kids, nkids, &sum);
    double per_conn = rss1 > 0 && rss2 > 0 ? (double)(rss2 - rss1) / (double)(n - first) : -1;
    double per_conn_all = rss0 > 0 && rss2 > 0 ? (double)(rss2 - rss0) / (double)n : -1;
    print_header(stdout, "idle");
    printf(",\"conns\":%d,\"conns_ok\":%" PRIu64 ",\"conns_failed\":%" PRIu64
           ",\"warm_conns\":%d,\"connect_s\":%.2f,\"server_rss_before\":%lld,"
           "\"server_rss_warm\":%lld,\"server_rss_after\":%lld,\"bytes_per_conn\":%.0f,"
           "\"bytes_per_conn_from_start\":%.0f,\"server_cpu_connect_s\":%.3f,"
           "\"bench_cpu_s\":%.3f}\n",
           n, sum.conns_ok, sum.conns_failed, first, connect_s, rss0, rss1, rss2, per_conn,
           per_conn_all, cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1, nb_self_cpu_s());
    fflush(stdout);
    if (!opts.quiet) {
        fprintf(stderr,
                "idle: %d connections (%d users, %d processes), %" PRIu64
                " authenticated in %.1f s\n",
                n, nusers, nkids, sum.conns_ok, connect_s);
        if (per_conn >= 0)
            fprintf(stderr,
                    "  server RSS %.1f MiB, %.1f MiB with %d (warm-up), %.1f MiB with %d:\n"
                    "  %.0f bytes per connection after the warm-up, %.0f from the start\n",
                    (double)rss0 / 1048576, (double)rss1 / 1048576, first, (double)rss2 / 1048576,
                    n, per_conn, per_conn_all);
        if (sum.error[0]) fprintf(stderr, "  error: %s\n", sum.error);
    }
    free(users);
    return ready && sum.conns_ok == (uint64_t)n ? 0 : 1;
}

/* Users and direct chats for P pairs: users[2i], users[2i+1] in chat i. */
static nb_chat *make_pairs(nb_user **users_out, int pairs)
{
    nb_user *users = nb_users_get(&opts, 2 * pairs, 8);
    if (!users) return NULL;
    nb_chat *chats = calloc((size_t)pairs, sizeof *chats);
    for (int i = 0; chats && i < pairs; i++) {
        int64_t last = 0;
        int64_t id = nb_make_chat(&opts, users + 2 * i, 2, true, &last);
        if (id < 0) {
            free(chats);
            chats = NULL;
            break;
        }
        chats[i] =
            (nb_chat){.chat_id = id, .first = 2 * i, .n = 2, .nsenders = 2, .base_seq = last};
    }
    if (!chats) {
        free(users);
        return NULL;
    }
    *users_out = users;
    return chats;
}

static int scenario_direct(void)
{
    double per_sender = opts.rate >= 0 ? opts.rate : 50;
    nb_user *users;
    nb_chat *chats = make_pairs(&users, opts.pairs);
    if (!chats) return 1;
    run_figures fig;
    int rc = run_load(users, chats, opts.pairs, per_sender * 2 * opts.pairs, 0, NULL, &fig);
    print_header(stdout, "direct");
    printf(",\"pairs\":%d,\"rate_per_sender\":%.1f", opts.pairs, per_sender);
    json_load(stdout, &fig);
    printf("}\n");
    fflush(stdout);
    if (!opts.quiet) {
        char title[160];
        snprintf(title, sizeof title, "direct: %d pairs, %.0f msgs/s per sender, %d-byte texts",
                 opts.pairs, per_sender, opts.size);
        text_load(title, &fig);
    }
    free(users);
    free(chats);
    return rc == 0 && fig.res.lost == 0 && fig.res.duplicated == 0 ? 0 : 1;
}

static int scenario_group(void)
{
    double rate = opts.rate >= 0 ? opts.rate : 1500;
    int g = opts.groups, m = opts.members;
    nb_user *users = NULL;
    nb_chat *chats = calloc((size_t)g, sizeof *chats);
    if (!chats) return 1;
    if (opts.proto == NB_NATTER) {
        users = nb_users_get(&opts, g * m, 8);
        if (!users) return 1;
    } else {
        users = calloc((size_t)g * (size_t)m, sizeof *users); /* unused by MQTT */
    }
    for (int i = 0; i < g; i++) {
        int64_t id = i + 1, last = 0;
        if (opts.proto == NB_NATTER &&
            (id = nb_make_chat(&opts, users + i * m, m, false, &last)) < 0)
            return 1;
        chats[i] =
            (nb_chat){.chat_id = id, .first = i * m, .n = m, .nsenders = m, .base_seq = last};
    }
    run_figures fig;
    int rc = run_load(users, chats, g, rate, 0, NULL, &fig);
    print_header(stdout, "group");
    printf(",\"groups\":%d,\"members\":%d", g, m);
    json_load(stdout, &fig);
    printf("}\n");
    fflush(stdout);
    if (!opts.quiet) {
        char title[200];
        snprintf(title, sizeof title,
                 "group (%s): %d groups of %d, %.0f msgs/s in total, %d-byte texts",
                 opts.proto == NB_MQTT ? "mqtt" : "natter", g, m, rate, opts.size);
        text_load(title, &fig);
    }
    free(users);
    free(chats);
    return rc == 0 && fig.res.lost == 0 && fig.res.duplicated == 0 ? 0 : 1;
}

/* One ingest step at `rate`; true when the server kept up within the bound. */
static bool ingest_ok(const run_figures *f)
{
    const nb_result *r = &f->res;
    return r->error[0] == 0 && r->errors == 0 && r->lost == 0 && r->ack.count > 0 &&
           nb_hist_ms(&r->ack, 0.99) < opts.max_p99_ms &&
           (double)r->ack.count >= 0.97 * f->offered_rate * r->window_s;
}

static int scenario_ingest(void)
{
    int s = opts.senders;
    nb_user *users = nb_users_get(&opts, s, 8);
    if (!users) return 1;
    nb_chat *chats = calloc((size_t)s, sizeof *chats);
    if (!chats) return 1;
    double rate = opts.rate > 0 ? opts.rate : 20000;
    double good = 0, bad = 0;
    run_figures best, cur;
    memset(&best, 0, sizeof best);
    print_header(stdout, "ingest");
    printf(",\"senders\":%d,\"max_p99_ms\":%.1f,\"steps\":[", s, opts.max_p99_ms);
    int step = 0;
    for (int iter = 0; iter < 14; iter++) {
        /* Fresh one-member chats for each step, so each starts at seq 0. */
        for (int k = 0; k < s; k++) {
            int64_t last = 0;
            int64_t id = nb_make_chat(&opts, users + k, 1, false, &last);
            if (id < 0) return 1;
            chats[k] =
                (nb_chat){.chat_id = id, .first = k, .n = 1, .nsenders = 1, .base_seq = last};
        }
        run_load(users, chats, s, rate, 0, NULL, &cur);
        bool ok = ingest_ok(&cur);
        printf("%s{\"offered_rate\":%.0f,\"acked_per_s\":%.0f,\"ack_p50\":%.3f,\"ack_p99\":%.3f,"
               "\"server_cpu_pct\":%.1f,\"bench_cpu_pct\":%.1f,\"ok\":%s}",
               step++ ? "," : "", rate, (double)cur.res.ack.count / cur.res.window_s,
               nb_hist_ms(&cur.res.ack, 0.5), nb_hist_ms(&cur.res.ack, 0.99),
               cur.server_cpu_s >= 0 ? 100 * cur.server_cpu_s / cur.res.window_s : -1,
               100 * (cur.res.cpu_s + cur.bench_parent_cpu_s) / cur.res.window_s,
               ok ? "true" : "false");
        fflush(stdout);
        if (!opts.quiet)
            fprintf(stderr, "ingest: %.0f msgs/s offered: ack p99 %.2f ms, %.0f acked/s, %s\n",
                    rate, nb_hist_ms(&cur.res.ack, 0.99),
                    (double)cur.res.ack.count / cur.res.window_s, ok ? "ok" : "too much");
        if (ok) {
            good = rate;
            best = cur;
        } else {
            bad = rate;
        }
        if (bad == 0)
            rate *= 1.5;
        else if (good == 0)
            rate /= 2;
        else if (bad / good < 1.08)
            break;
        else
            rate = (good + bad) / 2;
        if (rate < 100) break;
    }
    printf("]");
    printf(",\"best_rate\":%.0f", good);
    json_load(stdout, &best);
    printf("}\n");
    fflush(stdout);
    if (!opts.quiet && good > 0) {
        char title[160];
        snprintf(title, sizeof title,
                 "ingest: highest durable rate with p99 send-to-ack < %.0f ms, %d senders",
                 opts.max_p99_ms, s);
        text_load(title, &best);
    }
    free(users);
    free(chats);
    return good > 0 ? 0 : 1;
}

/* ---- login storm --------------------------------------------------------------- */

typedef struct storm {
    nb_user *users;
    int nusers;
    int threads;
    pthread_t tids[64];
    atomic_bool stop;
    atomic_long logins, failures;
    atomic_int next;
    uint64_t t0, t1;
    /* The first failure, so a run that fails says why: the client's error
     * (a negative errno) and the HTTP status, 0 if none came back. Written
     * by the one thread that counted it, read after the threads are
     * joined. */
    int first_rc, first_status;
    double first_at_s; /* seconds into the storm */
} storm;

static void *storm_worker(void *arg)
{
    storm *s = arg;
    while (!atomic_load(&s->stop)) {
        int i = atomic_fetch_add(&s->next, 1) % s->nusers;
        ntc_session sess;
        uint64_t t = nb_now_ns();
        int rc = ntc_login(opts.host, opts.port, s->users[i].nick, s->users[i].password, &sess);
        if (rc == 0) {
            atomic_fetch_add(&s->logins, 1);
            continue;
        }
        if (atomic_fetch_add(&s->failures, 1) == 0) {
            s->first_rc = rc;
            s->first_status = sess.http_status;
            s->first_at_s = (double)(t - s->t0) / 1e9;
        }
    }
    return NULL;
}

static void storm_start(void *arg)
{
    storm *s = arg;
    s->t0 = nb_now_ns();
    for (int i = 0; i < s->threads; i++)
        pthread_create(&s->tids[i], NULL, storm_worker, s);
}

static void storm_stop(void *arg)
{
    storm *s = arg;
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->threads; i++)
        pthread_join(s->tids[i], NULL);
    s->t1 = nb_now_ns();
}

static int scenario_login(void)
{
    double per_sender = opts.rate >= 0 ? opts.rate : 50;
    nb_user *users;
    nb_chat *chats = make_pairs(&users, opts.pairs);
    if (!chats) return 1;
    storm *s = calloc(1, sizeof *s);
    s->nusers = 64;
    s->threads = opts.login_threads > 64 ? 64 : opts.login_threads;
    s->users = users; /* log in as the chatting users: their sockets stay open */
    if (s->nusers > 2 * opts.pairs) s->nusers = 2 * opts.pairs;
    double half = opts.duration_s / 2;
    window_hook hook = {.start_after_s = half, .start = storm_start, .stop = storm_stop, .arg = s};
    run_figures fig;
    int rc = run_load(users, chats, opts.pairs, per_sender * 2 * opts.pairs, half, &hook, &fig);
    double storm_s = s->t1 > s->t0 ? (double)(s->t1 - s->t0) / 1e9 : 1;
    double p99_a = nb_hist_ms(&fig.res.recv, 0.99), p99_b = nb_hist_ms(&fig.res.recv2, 0.99);
    print_header(stdout, "login");
    printf(",\"pairs\":%d,\"rate_per_sender\":%.1f,\"login_threads\":%d,\"logins\":%ld,"
           "\"login_failures\":%ld,\"logins_per_s\":%.1f",
           opts.pairs, per_sender, s->threads, atomic_load(&s->logins), atomic_load(&s->failures),
           (double)atomic_load(&s->logins) / storm_s);
    if (atomic_load(&s->failures))
        printf(",\"login_first_failure\":{\"error\":\"%s\",\"http_status\":%d,\"at_s\":%.3f}",
               s->first_rc == -EPROTO ? "unexpected answer" : strerror(-s->first_rc),
               s->first_status, s->first_at_s);
    json_load(stdout, &fig);
    json_hist(stdout, "recv_ms_storm", &fig.res.recv2);
    printf(",\"p99_ratio\":%.2f}\n", p99_a > 0 ? p99_b / p99_a : 0);
    fflush(stdout);
    if (!opts.quiet) {
        char title[200];
        snprintf(title, sizeof title,
                 "login: direct load of %d pairs at %.0f msgs/s per sender; logins in the "
                 "second half",
                 opts.pairs, per_sender);
        text_load(title, &fig);
        fprintf(stderr, "  before the storm:  send to receive p99 %.3f ms\n", p99_a);
        fprintf(stderr,
                "  during the storm:  send to receive p99 %.3f ms (%.2fx), %.0f logins/s"
                " on %d threads, %ld failed\n",
                p99_b, p99_a > 0 ? p99_b / p99_a : 0, (double)atomic_load(&s->logins) / storm_s,
                s->threads, atomic_load(&s->failures));
    }
    free(s);
    free(users);
    free(chats);
    return rc == 0 && fig.res.lost == 0 && fig.res.duplicated == 0 ? 0 : 1;
}

/* Random-chat matching: see match.c. */
static int scenario_match(void)
{
    return nb_scenario_match(&opts);
}

static int scenario_pow(int argc, char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(path, sizeof path, "%s/natter-pow-bench", self);
    if (access(path, X_OK) != 0) {
        print_header(stdout, "pow");
        printf(",\"available\":false}\n");
        if (!opts.quiet) fprintf(stderr, "pow: %s not found; skipped\n", path);
        return 0;
    }
    char **args = calloc((size_t)argc + 2, sizeof *args);
    args[0] = path;
    for (int i = 0; i < argc; i++)
        args[i + 1] = argv[i];
    fflush(NULL);
    execv(path, args);
    fprintf(stderr, "natter-bench: cannot run %s: %s\n", path, strerror(errno));
    return 1;
}

/* ---- main ------------------------------------------------------------------------ */

static bool num_arg(const char *flag, const char *value, double lo, double hi, double *out)
{
    char *end;
    if (!value) {
        fprintf(stderr, "natter-bench: %s needs a value\n", flag);
        return false;
    }
    double v = strtod(value, &end);
    if (*end || end == value || v < lo || v > hi) {
        fprintf(stderr, "natter-bench: %s: %s is not a number in %g..%g\n", flag, value, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    nb_raise_nofile();
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d = 0;
#define NUM(name, lo, hi, dst)                                                                     \
    if (!strcmp(f, name)) {                                                                        \
        if (!num_arg(f, v, lo, hi, &d)) return 2;                                                  \
        dst = d;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(f, "--quiet")) {
            opts.quiet = true;
            continue;
        }
        if (!strcmp(f, "--host") && v) {
            opts.host = v;
            i++;
            continue;
        }
        if (!strcmp(f, "--users") && v) {
            opts.users_file = v;
            i++;
            continue;
        }
        if (!strcmp(f, "--rates") && v) {
            opts.rates = v;
            i++;
            continue;
        }
        if (!strcmp(f, "--prefix") && v) {
            opts.prefix = v;
            i++;
            continue;
        }
        if (!strcmp(f, "--proto") && v) {
            if (!strcmp(v, "mqtt"))
                opts.proto = NB_MQTT;
            else if (!strcmp(v, "natter"))
                opts.proto = NB_NATTER;
            else {
                fprintf(stderr, "natter-bench: --proto is natter or mqtt\n");
                return 2;
            }
            i++;
            continue;
        }
        NUM("--port", 1, 65535, opts.port)
        NUM("--server-pid", 1, 1 << 30, opts.server_pid)
        NUM("--duration", 0.1, 86400, opts.duration_s)
        NUM("--warmup", 0, 3600, opts.warmup_s)
        NUM("--rate", 0, 1e8, opts.rate)
        NUM("--size", 16, 4000, opts.size)
        NUM("--pairs", 1, 1e6, opts.pairs)
        NUM("--groups", 1, 1e6, opts.groups)
        NUM("--members", 1, 1000, opts.members)
        NUM("--senders", 1, 1e6, opts.senders)
        NUM("--max-p99", 0.1, 1e5, opts.max_p99_ms)
        NUM("--procs", 1, 64, opts.procs)
        NUM("--share", 1, 1e6, share)
        NUM("--hold", 0, 86400, idle_hold_s)
        NUM("--login-threads", 1, 64, opts.login_threads)
        NUM("--tick-us", 20, 1e6, opts.tick_us)
        NUM("--waiting", 0, 1e7, opts.match_waiting)
        NUM("--arrivals", 1, 19000, opts.match_arrivals)
        NUM("--match-wait", 0.01, 600, opts.match_wait_s)
#undef NUM
        fprintf(stderr, "natter-bench: unknown option %s\n", f);
        usage(stderr);
        return 2;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (!opts.port) opts.port = opts.proto == NB_MQTT ? 1883 : 8080;
    const char *scenario = argv[i++];
    opts.argc = argc - i;
    opts.argv = argv + i;
    if (opts.proto == NB_MQTT && strcmp(scenario, "group") != 0) {
        fprintf(stderr, "natter-bench: --proto mqtt is for the group scenario only\n");
        return 2;
    }
    if (!strcmp(scenario, "idle")) return scenario_idle(i < argc ? atoi(argv[i]) : 1000);
    if (!strcmp(scenario, "direct")) return scenario_direct();
    if (!strcmp(scenario, "group")) return scenario_group();
    if (!strcmp(scenario, "ingest")) return scenario_ingest();
    if (!strcmp(scenario, "login")) return scenario_login();
    if (!strcmp(scenario, "match")) return scenario_match();
    if (!strcmp(scenario, "pow")) return scenario_pow(opts.argc, opts.argv);
    fprintf(stderr, "natter-bench: unknown scenario %s\n", scenario);
    usage(stderr);
    return 2;
}
