/*
 * natter-bench match: random-chat matching under load (issue 8: "users
 * joining the random-chat queue at a rate; pairs per second and time to
 * match", target 50,000 pairs/s with 100,000 users waiting).
 *
 *  1. Users: --arrivals A users that will join over WebSocket and --waiting
 *     W users that wait in the queue; each gets a gender, a birth date and
 *     match preferences from a fixed, seeded distribution (below). Profiles
 *     are set over REST once per users cache (a marker file FILE.match
 *     remembers it).
 *  2. The pool: the W waiting users join with POST /api/v1/match over
 *     keep-alive REST (rest.c). They need not be connected: a user leaves
 *     the queue only when their last WebSocket closes or they cancel, and
 *     one process could not hold 100,000 sockets anyway. The pool is
 *     designed so that no two of its users accept each other (they never
 *     pair among themselves), so after the fill W users wait.
 *  3. Arrivals: A authenticated WebSockets; at the offered rate (open loop,
 *     a timerfd tick) an idle one sends {"type":"match","id":N}. Time to
 *     match is from that send to the `matched` event on the same
 *     connection. An arrival the server queued (it answered match_queued
 *     and no `matched` came) is cancelled after --match-wait seconds and
 *     counted as not matched; its connection is then reused. Arrivals are
 *     designed never to accept each other either, so every pair is one
 *     arrival and one waiting user, and the pool shrinks by one per pair.
 *  4. Counting: joins sent in the measured window (after the warm-up) give
 *     the latency histogram and the matched / not matched counts; `matched`
 *     events received in the window give pairs per second.
 *
 * Distribution (user index i, deterministic hash h of i):
 *   waiting: gender male 80 %, other 20 %; age 18..67 uniform; a male
 *     wants female (60 %) or female+other (40 %), an "other" wants female;
 *     age range own age -d1..+d2, d1, d2 in 0..10; 0-3 interests of 20.
 *   arrivals: gender female; wants male (50 %), other (10 %) or
 *     male+other (40 %); age 18..67 uniform, range -d1..+d2 as above, 0-3
 *     interests; every 20th arrival user (5 %) is unmatchable by design:
 *     age 90-99 wanting 100..120, older than any waiting user accepts.
 * So an arrival is compatible with a part of the pool that depends on its
 * age and wanted genders (a few hundred to a few thousand of 100,000), and
 * the matcher must look through incompatible candidates to find them.
 */
#include "bench/bench.h"
#include "bench/match_profile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MB_CONNECT_WINDOW 256
#define MB_EVENTS 512
#define MB_EV_TIMER UINT64_MAX
#define MB_DRAIN_S 10.0
#define MB_PROFILE_VERSION "v2"
#define MB_DISTURBED_PCT 25.0 /* % of a CPU used by others: a step is disturbed */

/* ---- the distribution: match_profile.h ------------------------------------------- */

typedef struct mb_ctx {
    const nb_opts *o;
    int A, W;
    int year;
} mb_ctx;

static void mb_fill_profile(void *arg, int i, nb_rest_req *r)
{
    mb_ctx *m = arg;
    nb_match_profile_t p;
    nb_match_profile(i, i < m->A, &p);
    r->method = "PATCH";
    snprintf(r->path, sizeof r->path, "/api/v1/users/me");
    snprintf(r->body, sizeof r->body, "{\"gender\":\"%s\",\"birth_date\":\"%04d-01-01\"}", p.gender,
             m->year - p.age);
}

static void mb_fill_prefs(void *arg, int i, nb_rest_req *r)
{
    mb_ctx *m = arg;
    nb_match_profile_t p;
    nb_match_profile(i, i < m->A, &p);
    char tags[64] = "";
    size_t n = 0;
    for (int k = 0; k < p.ninterests; k++) {
        bool dup = false;
        for (int j = 0; j < k; j++)
            dup |= p.interests[j] == p.interests[k];
        if (!dup)
            n += (size_t)snprintf(tags + n, sizeof tags - n, "%s\"t%d\"", n ? "," : "",
                                  p.interests[k]);
    }
    r->method = "PUT";
    snprintf(r->path, sizeof r->path, "/api/v1/match/preferences");
    snprintf(r->body, sizeof r->body,
             "{\"genders\":[%s],\"age_min\":%d,\"age_max\":%d,\"interests\":[%s]}", p.wants,
             p.age_min, p.age_max, tags);
}

static void mb_fill_join(void *arg, int i, nb_rest_req *r)
{
    (void)arg;
    (void)i;
    r->method = "POST";
    snprintf(r->path, sizeof r->path, "/api/v1/match");
}

/* Sets every user's profile and preferences unless the marker says this
 * cache already has them for this A and W. 0 or -EIO. */
static int mb_profiles(mb_ctx *m, nb_user *users)
{
    const nb_opts *o = m->o;
    int n = m->A + m->W;
    char marker[1100], want[200], have[200] = "";
    snprintf(want, sizeof want, "%s %s %" PRId64 " %d %d", MB_PROFILE_VERSION, users[0].nick,
             users[0].id, m->A, m->W);
    if (o->users_file) {
        snprintf(marker, sizeof marker, "%s.match", o->users_file);
        FILE *f = fopen(marker, "r");
        if (f) {
            if (!fgets(have, sizeof have, f)) have[0] = '\0';
            fclose(f);
            have[strcspn(have, "\n")] = '\0';
        }
        if (!strcmp(have, want)) return 0;
    }
    uint64_t t0 = nb_now_ns();
    if (!o->quiet) fprintf(stderr, "natter-bench: setting %d profiles and preferences...\n", n);
    long ok = nb_rest_batch(o, users, n, 16, mb_fill_profile, m, NULL);
    if (ok == n) ok = nb_rest_batch(o, users, n, 16, mb_fill_prefs, m, NULL);
    if (ok != n) {
        fprintf(stderr, "natter-bench: %ld of %d profile calls succeeded\n", ok, n);
        return -EIO;
    }
    if (!o->quiet)
        fprintf(stderr, "natter-bench: profiles set in %.1f s\n", (double)(nb_now_ns() - t0) / 1e9);
    if (o->users_file) {
        FILE *f = fopen(marker, "w");
        if (f) {
            fprintf(f, "%s\n", want);
            fclose(f);
        }
    }
    return 0;
}

/* Would the server pair these two (genders and ages both ways; the bench
 * users block no one)? */
static bool mb_compatible(const nb_match_profile_t *a, const nb_match_profile_t *b)
{
    return (a->wants_mask & b->gbit) && (b->wants_mask & a->gbit) && a->age >= b->age_min &&
           a->age <= b->age_max && b->age >= a->age_min && b->age <= a->age_max;
}

/* For each arrival, how many waiting users it is compatible with (the
 * waiting users folded into their few thousand distinct profiles first). */
static int mb_compat_counts(const mb_ctx *m, int *counts)
{
    enum { CELLS = 2 * 50 * 11 * 11 };
    int *cell = calloc(CELLS, sizeof *cell);
    nb_match_profile_t *rep = calloc(CELLS, sizeof *rep);
    if (!cell || !rep) {
        free(cell);
        free(rep);
        return -ENOMEM;
    }
    for (int i = m->A; i < m->A + m->W; i++) {
        nb_match_profile_t p;
        nb_match_profile(i, false, &p);
        int k =
            (((p.gbit == NB_MALE ? 0 : 1) * 50 + (p.age - 18)) * 11 + (p.age - p.age_min)) * 11 +
            (p.age_max - p.age);
        if (k < 0 || k >= CELLS) continue; /* not reached: ages 18..67, d <= 10 */
        if (!cell[k]++) rep[k] = p;
    }
    for (int a = 0; a < m->A; a++) {
        nb_match_profile_t pa;
        nb_match_profile(a, true, &pa);
        int n = 0;
        for (int k = 0; k < CELLS; k++)
            if (cell[k] && mb_compatible(&pa, &rep[k])) n += cell[k];
        counts[a] = n;
    }
    free(cell);
    free(rep);
    return 0;
}

/* ---- the arrivals ------------------------------------------------------------------ */

enum { MC_IDLE, MC_JOINING, MC_QUEUED, MC_CANCELLING };

typedef struct mconn {
    ntc_conn *ws;
    int state;
    uint32_t join_id; /* the id of the current join (and cancel) */
    uint64_t t_join, t_queued;
    bool ready, dead, dirty, unmatchable, counted;
} mconn;

typedef struct mb_step {
    double rate, window_s;
    uint64_t joins, joins_unmatchable; /* sent in the window; of them with no compatible
                                          waiting user at the start */
    uint64_t matched, unmatched, unmatched_compatible, errors, unanswered, late_matched;
    uint64_t skipped; /* due in the window, but every arrival connection was busy */
    uint64_t pairs_in_window, pairs_total;
    long pool_joined, pool_new; /* pool fill: 2xx answers, of which 202 (newly queued) */
    double fill_s;
    nb_hist ttm; /* join sent -> matched received */
    double server_cpu_s, bench_cpu_s;
    int ncpus;
    double cpu_busy_pct[8];
    char error[160];
} mb_step;

typedef struct mb_run {
    const nb_opts *o;
    mconn *c;
    int n;
    int *idle; /* FIFO ring of idle connection indices */
    int idle_head, idle_count;
    int *dirty;
    int ndirty;
    int epfd, timer_fd;
    mb_step *st;
    uint64_t win_start, win_end;
    bool first_error_printed;
} mb_run;

static void mb_idle_push(mb_run *r, int i)
{
    r->idle[(r->idle_head + r->idle_count) % r->n] = i;
    r->idle_count++;
}

static int mb_idle_pop(mb_run *r)
{
    if (!r->idle_count) return -1;
    int i = r->idle[r->idle_head];
    r->idle_head = (r->idle_head + 1) % r->n;
    r->idle_count--;
    return i;
}

static void mb_dirty(mb_run *r, int i)
{
    if (!r->c[i].dirty) {
        r->c[i].dirty = true;
        r->dirty[r->ndirty++] = i;
    }
}

static void mb_flush(mb_run *r)
{
    for (int k = 0; k < r->ndirty; k++) {
        mconn *c = &r->c[r->dirty[k]];
        c->dirty = false;
        if (!c->dead) ntc_conn_flush(c->ws);
    }
    r->ndirty = 0;
}

static bool mb_in_window(const mb_run *r, uint64_t t)
{
    return t >= r->win_start && t < r->win_end;
}

static void mb_send(mb_run *r, int i, const char *type)
{
    char frame[96];
    snprintf(frame, sizeof frame, "{\"type\":\"%s\",\"id\":%u}", type, r->c[i].join_id);
    ntc_conn_send_text(r->c[i].ws, frame);
    mb_dirty(r, i);
}

static void mb_join(mb_run *r, int i, uint64_t now)
{
    mconn *c = &r->c[i];
    c->join_id++;
    c->state = MC_JOINING;
    c->t_join = now;
    c->counted = mb_in_window(r, now);
    if (c->counted) {
        r->st->joins++;
        if (c->unmatchable) r->st->joins_unmatchable++;
    }
    mb_send(r, i, "match");
}

/* The join of c is over (matched, cancelled or refused): c is idle again. */
static void mb_done(mb_run *r, int i)
{
    r->c[i].state = MC_IDLE;
    mb_idle_push(r, i);
}

static uint32_t mb_frame_id(const char *js, size_t len)
{
    const char *p = memmem(js, len, "\"id\":", 5);
    return p ? (uint32_t)strtoul(p + 5, NULL, 10) : 0;
}

static void mb_frame_in(mb_run *r, int i, const char *js, size_t len, uint64_t now)
{
    mconn *c = &r->c[i];
    mb_step *st = r->st;
    if (len > 17 && !memcmp(js, "{\"type\":\"matched\"", 17)) {
        if (mb_in_window(r, now)) st->pairs_in_window++;
        st->pairs_total++;
        if (c->state == MC_JOINING || c->state == MC_QUEUED) {
            if (c->counted) {
                st->matched++;
                nb_hist_add(&st->ttm, now - c->t_join);
            }
            mb_done(r, i);
        } else {
            st->late_matched++; /* after its cancel was sent */
        }
    } else if (len > 22 && !memcmp(js, "{\"type\":\"match_queued\"", 22)) {
        if (c->state == MC_JOINING && mb_frame_id(js, len) == c->join_id) {
            c->state = MC_QUEUED;
            c->t_queued = now;
        }
    } else if (len > 25 && !memcmp(js, "{\"type\":\"match_cancelled\"", 25)) {
        if (c->state == MC_CANCELLING && mb_frame_id(js, len) == c->join_id) mb_done(r, i);
    } else if (len > 15 && !memcmp(js, "{\"type\":\"error\"", 15)) {
        if (c->counted) st->errors++;
        if (!r->first_error_printed) {
            r->first_error_printed = true;
            fprintf(stderr, "natter-bench: server error: %.*s\n", (int)(len > 300 ? 300 : len), js);
        }
        if ((c->state == MC_JOINING || c->state == MC_CANCELLING) &&
            mb_frame_id(js, len) == c->join_id)
            mb_done(r, i);
    } else if (len > 15 && !memcmp(js, "{\"type\":\"ready\"", 15)) {
        c->ready = true;
    }
}

static void mb_dead(mb_run *r, mconn *c, int err)
{
    if (c->dead) return;
    c->dead = true;
    if (!r->st->error[0])
        snprintf(r->st->error, sizeof r->st->error, "arrival connection %d closed (%s, code %d)",
                 (int)(c - r->c), strerror(err < 0 ? -err : ECONNRESET),
                 ntc_conn_close_code(c->ws));
}

static void mb_event(mb_run *r, int i, uint32_t events)
{
    mconn *c = &r->c[i];
    if (c->dead) return;
    uint64_t now = nb_now_ns();
    if ((events & EPOLLOUT) && ntc_conn_on_writable(c->ws) < 0) {
        mb_dead(r, c, ntc_conn_error(c->ws));
        return;
    }
    int rc = 0;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) rc = ntc_conn_on_readable(c->ws);
    const char *js;
    size_t len;
    while (ntc_conn_next(c->ws, &js, &len) == 1)
        mb_frame_in(r, i, js, len, now);
    if (rc < 0 || ntc_conn_state(c->ws) == NTC_CLOSED) {
        mb_dead(r, c, rc ? rc : ntc_conn_error(c->ws));
        return;
    }
    if (ntc_conn_wants_write(c->ws)) ntc_conn_flush(c->ws);
}

static int mb_poll(mb_run *r, int timeout_ms)
{
    struct epoll_event evs[MB_EVENTS];
    int n = epoll_wait(r->epfd, evs, MB_EVENTS, timeout_ms);
    for (int k = 0; k < n; k++) {
        if (evs[k].data.u64 == MB_EV_TIMER) {
            uint64_t exp;
            if (read(r->timer_fd, &exp, sizeof exp) < 0) continue;
        } else {
            mb_event(r, (int)evs[k].data.u64, evs[k].events);
        }
    }
    return n;
}

/* Connects and authenticates the A arrival connections. */
static int mb_connect(mb_run *r, nb_user *users, char *err, size_t errlen)
{
    int next = 0, ready = 0, failed = 0;
    uint64_t deadline = nb_now_ns() + (uint64_t)(60 + r->n / 200) * 1000000000ull;
    while (ready + failed < r->n) {
        while (next < r->n && next - ready - failed < MB_CONNECT_WINDOW) {
            mconn *c = &r->c[next];
            c->ws = ntc_conn_new(r->o->host, r->o->port);
            if (!c->ws) {
                c->dead = true;
                failed++;
                next++;
                continue;
            }
            char auth[700];
            snprintf(auth, sizeof auth, "{\"type\":\"auth\",\"token\":\"%s\"}", users[next].token);
            ntc_conn_send_text(c->ws, auth);
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                                     .data.u64 = (uint64_t)next};
            epoll_ctl(r->epfd, EPOLL_CTL_ADD, ntc_conn_fd(c->ws), &ev);
            next++;
        }
        mb_poll(r, 10);
        ready = failed = 0;
        for (int k = 0; k < next; k++) {
            ready += r->c[k].ready && !r->c[k].dead;
            failed += r->c[k].dead;
        }
        if (nb_now_ns() > deadline) break;
    }
    if (ready < r->n) {
        snprintf(err, errlen, "%d of %d arrival connections failed (%s)", r->n - ready, r->n,
                 r->st && r->st->error[0] ? r->st->error : "setup");
        return -ECONNREFUSED;
    }
    return 0;
}

static void mb_cpus(unsigned long long *busy, unsigned long long *total, int *n)
{
    *n = nb_cpu_ticks(busy, total, 8);
}

/* One measured step at `rate` joins/s; the pool must be full. */
static void mb_step_run(mb_run *r, double rate, mb_step *st)
{
    const nb_opts *o = r->o;
    r->st = st;
    st->rate = rate;
    st->window_s = o->duration_s;
    uint64_t t0 = nb_now_ns();
    r->win_start = t0 + (uint64_t)(o->warmup_s * 1e9);
    r->win_end = r->win_start + (uint64_t)(o->duration_s * 1e9);
    uint64_t wait_ns = (uint64_t)(o->match_wait_s * 1e9);
    int tick_us = o->tick_us > 0 ? o->tick_us : 250;
    struct itimerspec its = {.it_interval = {0, tick_us * 1000L}, .it_value = {0, tick_us * 1000L}};
    timerfd_settime(r->timer_fd, 0, &its, NULL);
    uint64_t scheduled = 0;
    double s0 = -1, cpu0 = -1;
    unsigned long long b0[8], tt0[8], b1[8], tt1[8];
    int n0 = 0, n1 = 0;
    bool in_window = false;
    uint64_t drain_end = 0, last_scan = 0;
    for (;;) {
        mb_poll(r, 50);
        uint64_t now = nb_now_ns();
        if (!in_window && now >= r->win_start && s0 < 0) {
            in_window = true;
            s0 = o->server_pid ? nb_proc_cpu_s(o->server_pid) : -1;
            cpu0 = nb_self_cpu_s();
            mb_cpus(b0, tt0, &n0);
        }
        if (in_window && now >= r->win_end) {
            in_window = false;
            double s1 = o->server_pid ? nb_proc_cpu_s(o->server_pid) : -1;
            st->server_cpu_s = s0 >= 0 && s1 >= 0 ? s1 - s0 : -1;
            st->bench_cpu_s = nb_self_cpu_s() - cpu0;
            mb_cpus(b1, tt1, &n1);
            st->ncpus = n0 < n1 ? n0 : n1;
            for (int k = 0; k < st->ncpus; k++) {
                unsigned long long t = tt1[k] - tt0[k];
                st->cpu_busy_pct[k] = t ? 100.0 * (double)(b1[k] - b0[k]) / (double)t : 0;
            }
            drain_end = now + (uint64_t)((MB_DRAIN_S + 2 * o->match_wait_s) * 1e9);
        }
        if (now < r->win_end) {
            uint64_t due = (uint64_t)((double)(now - t0) / 1e9 * rate);
            uint64_t cap = (uint64_t)(rate * 0.1) + 1; /* no burst beyond 100 ms after a stall */
            if (due > scheduled + cap) scheduled = due - cap;
            for (; scheduled < due; scheduled++) {
                int i = mb_idle_pop(r);
                if (i < 0) {
                    if (mb_in_window(r, now)) st->skipped++;
                    continue;
                }
                mb_join(r, i, now);
            }
        }
        /* Queued without a partner for match_wait: not matched; cancel. A
         * scan of every connection each 5 ms is plenty for that. */
        if (now - last_scan < 5000000ull && now < r->win_end) {
            mb_flush(r);
            continue;
        }
        last_scan = now;
        bool busy = false;
        for (int i = 0; i < r->n; i++) {
            mconn *c = &r->c[i];
            if (c->dead) continue;
            if (c->state == MC_QUEUED && now - c->t_queued >= wait_ns) {
                c->state = MC_CANCELLING;
                if (c->counted) {
                    st->unmatched++;
                    if (!c->unmatchable) st->unmatched_compatible++;
                }
                mb_send(r, i, "match_cancel");
            }
            busy |= c->state != MC_IDLE;
        }
        mb_flush(r);
        if (now >= r->win_end && drain_end && (!busy || now >= drain_end)) break;
    }
    struct itimerspec off = {0};
    timerfd_settime(r->timer_fd, 0, &off, NULL);
    /* Whatever is still out had no answer: cancel it so the next step
     * starts with every connection idle and out of the queue. */
    for (int i = 0; i < r->n; i++) {
        mconn *c = &r->c[i];
        if (c->dead || c->state == MC_IDLE) continue;
        if (c->counted && c->state == MC_JOINING) st->unanswered++;
        c->join_id++;
        mb_send(r, i, "match_cancel");
        c->state = MC_CANCELLING;
    }
    mb_flush(r);
    uint64_t end = nb_now_ns() + 5000000000ull;
    for (;;) {
        bool busy = false;
        for (int i = 0; i < r->n; i++)
            busy |= !r->c[i].dead && r->c[i].state != MC_IDLE;
        if (!busy || nb_now_ns() > end) break;
        mb_poll(r, 20);
    }
    /* Drop any left in the idle ring and rebuild it. */
    r->idle_head = r->idle_count = 0;
    for (int i = 0; i < r->n; i++) {
        r->c[i].state = MC_IDLE;
        if (!r->c[i].dead) mb_idle_push(r, i);
    }
}

/* ---- output ------------------------------------------------------------------------- */

/* CPU time of the measured window not spent by the server or the bench,
 * in % of one CPU: other processes on a shared machine (and softirq work
 * nobody is charged for). */
static double mb_other_cpu_pct(const mb_step *s)
{
    double w = s->window_s > 0 ? s->window_s : 1, busy = 0;
    for (int k = 0; k < s->ncpus; k++)
        busy += s->cpu_busy_pct[k];
    double server = s->server_cpu_s >= 0 ? 100 * s->server_cpu_s / w : 0;
    return busy - server - 100 * s->bench_cpu_s / w;
}

static void mb_json_step(FILE *f, const mb_step *s)
{
    double w = s->window_s > 0 ? s->window_s : 1;
    fprintf(f,
            "\"offered_rate\":%.1f,\"joins\":%" PRIu64 ",\"joins_per_s\":%.1f"
            ",\"joins_unmatchable\":%" PRIu64 ",\"matched\":%" PRIu64 ",\"unmatched\":%" PRIu64
            ",\"unmatched_compatible\":%" PRIu64 ",\"late_matched\":%" PRIu64 ",\"errors\":%" PRIu64
            ",\"unanswered\":%" PRIu64 ",\"skipped\":%" PRIu64
            ",\"pairs_per_s\":%.1f,\"pairs_total\":%" PRIu64 ",\"waiting_start\":%ld"
            ",\"waiting_end\":%ld,\"pool_rejoined\":%ld,\"fill_s\":%.2f",
            s->rate, s->joins, (double)s->joins / w, s->joins_unmatchable, s->matched, s->unmatched,
            s->unmatched_compatible, s->late_matched, s->errors, s->unanswered, s->skipped,
            (double)s->pairs_in_window / w, s->pairs_total, s->pool_joined,
            s->pool_joined - (long)s->pairs_total, s->pool_new, s->fill_s);
    const nb_hist *h = &s->ttm;
    fprintf(f,
            ",\"ttm_ms\":{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
            "\"p999\":%.3f,\"max\":%.3f}",
            h->count, nb_hist_ms(h, 0.5), nb_hist_ms(h, 0.9), nb_hist_ms(h, 0.99),
            nb_hist_ms(h, 0.999), nb_hist_ms(h, 1));
    fprintf(f, ",\"window_s\":%.2f,\"bench_cpu_s\":%.3f,\"bench_cpu_pct\":%.1f", w, s->bench_cpu_s,
            100 * s->bench_cpu_s / w);
    if (s->server_cpu_s >= 0)
        fprintf(f, ",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f", s->server_cpu_s,
                100 * s->server_cpu_s / w);
    fprintf(f, ",\"cpu_busy_pct\":[");
    for (int k = 0; k < s->ncpus; k++)
        fprintf(f, "%s%.1f", k ? "," : "", s->cpu_busy_pct[k]);
    fprintf(f, "],\"other_cpu_pct\":%.1f", mb_other_cpu_pct(s));
    if (s->error[0]) fprintf(f, ",\"error\":\"%s\"", s->error);
}

static void mb_text_step(const mb_step *s)
{
    double w = s->window_s > 0 ? s->window_s : 1;
    fprintf(stderr,
            "  %.0f joins/s offered: %.0f pairs/s; time to match p50 %.3f  p90 %.3f  p99 %.3f  "
            "max %.3f ms\n",
            s->rate, (double)s->pairs_in_window / w, nb_hist_ms(&s->ttm, 0.5),
            nb_hist_ms(&s->ttm, 0.9), nb_hist_ms(&s->ttm, 0.99), nb_hist_ms(&s->ttm, 1));
    fprintf(stderr,
            "    of %" PRIu64 " joins in the window: %" PRIu64 " matched, %" PRIu64
            " not matched (%" PRIu64 " with no compatible waiting user, %" PRIu64 " others)"
            ", %" PRIu64 " errors, %" PRIu64 " unanswered, %" PRIu64
            " skipped (no idle arrival connection)\n",
            s->joins, s->matched, s->unmatched, s->unmatched - s->unmatched_compatible,
            s->unmatched_compatible, s->errors, s->unanswered, s->skipped);
    long end = s->pool_joined - (long)s->pairs_total;
    fprintf(stderr, "    waiting: %ld at the start, %ld at the end (pool fill %.1f s)%s\n",
            s->pool_joined, end, s->fill_s,
            end < s->pool_joined / 2 ? "; the pool ran low: a larger --waiting or a shorter "
                                       "--duration keeps it near W"
                                     : "");
    fprintf(stderr, "    CPU: server %.0f %%, bench %.0f %% of a core;", 100 * s->server_cpu_s / w,
            100 * s->bench_cpu_s / w);
    for (int k = 0; k < s->ncpus; k++)
        fprintf(stderr, " cpu%d %.0f %%", k, s->cpu_busy_pct[k]);
    fprintf(stderr, " busy (%.0f %% of a CPU by others)\n", mb_other_cpu_pct(s));
    if (s->error[0]) fprintf(stderr, "    error: %s\n", s->error);
}

/* A step kept up: every join answered, no errors, no arrival skipped, the
 * compatible ones (nearly) all matched, p99 under the bound. */
static bool mb_ok(const nb_opts *o, const mb_step *s)
{
    uint64_t compatible = s->joins - s->joins_unmatchable;
    return !s->error[0] && s->errors == 0 && s->unanswered == 0 && s->skipped == 0 &&
           s->ttm.count > 0 && (double)s->matched >= 0.97 * (double)compatible &&
           nb_hist_ms(&s->ttm, 0.99) < o->max_p99_ms &&
           (double)s->joins >= 0.97 * s->rate * s->window_s;
}

static int mb_cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* ---- the scenario ------------------------------------------------------------------ */

/* Fills the pool: every waiting user joins (again). */
static void mb_fill(const nb_opts *o, mb_ctx *m, nb_user *users, int *status, mb_step *st)
{
    uint64_t t0 = nb_now_ns();
    st->pool_joined = nb_rest_batch(o, users + m->A, m->W, 16, mb_fill_join, m, status);
    st->pool_new = 0;
    for (int i = 0; i < m->W; i++)
        st->pool_new += status[i] == 202;
    st->fill_s = (double)(nb_now_ns() - t0) / 1e9;
}

int nb_scenario_match(const nb_opts *o)
{
    mb_ctx m = {.o = o, .A = o->match_arrivals, .W = o->match_waiting};
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    m.year = tm.tm_year + 1900;
    if (m.A < 1 || m.A > 19000) {
        fprintf(stderr, "natter-bench: --arrivals must be 1..19000 (one process, 20,000 files)\n");
        return 2;
    }
    nb_user *users = nb_users_get(o, m.A + m.W, 16);
    if (!users) return 1;
    int *status = calloc((size_t)m.W + 1, sizeof *status);
    mb_run r = {.o = o, .n = m.A, .epfd = -1, .timer_fd = -1};
    r.c = calloc((size_t)m.A, sizeof *r.c);
    r.idle = calloc((size_t)m.A, sizeof *r.idle);
    r.dirty = calloc((size_t)m.A, sizeof *r.dirty);
    r.epfd = epoll_create1(EPOLL_CLOEXEC);
    r.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    mb_step setup = {0};
    int rc = 1;
    char err[400] = "";
    if (!status || !r.c || !r.idle || !r.dirty || r.epfd < 0 || r.timer_fd < 0) {
        fprintf(stderr, "natter-bench: out of memory or descriptors\n");
        goto out;
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = MB_EV_TIMER};
    epoll_ctl(r.epfd, EPOLL_CTL_ADD, r.timer_fd, &tev);
    if (mb_profiles(&m, users) != 0) goto out;
    r.st = &setup;
    int *compat = calloc((size_t)m.A, sizeof *compat);
    if (!compat || mb_compat_counts(&m, compat) != 0) {
        free(compat);
        goto out;
    }
    int nunmatchable = 0;
    for (int i = 0; i < m.A; i++) {
        r.c[i].unmatchable = compat[i] == 0;
        nunmatchable += compat[i] == 0;
    }
    qsort(compat, (size_t)m.A, sizeof *compat, mb_cmp_int);
    double compat_p50 = m.W ? 100.0 * compat[m.A / 2] / m.W : 0;
    double compat_p10 = m.W ? 100.0 * compat[m.A / 10] / m.W : 0;
    double compat_p90 = m.W ? 100.0 * compat[m.A * 9 / 10] / m.W : 0;
    free(compat);
    if (mb_connect(&r, users, err, sizeof err) != 0) {
        fprintf(stderr, "natter-bench: %s\n", err);
        goto out;
    }
    for (int i = 0; i < m.A; i++)
        mb_idle_push(&r, i);

    /* The rates: --rates list, else --rate, else a search like ingest's. */
    double list[32];
    int nlist = 0;
    if (o->rates) {
        for (const char *p = o->rates; *p && nlist < 32;) {
            char *end;
            double v = strtod(p, &end);
            if (end == p || v <= 0) {
                fprintf(stderr, "natter-bench: --rates: bad list %s\n", o->rates);
                rc = 2;
                goto out;
            }
            list[nlist++] = v;
            p = *end == ',' ? end + 1 : end;
        }
    } else if (o->rate > 0) {
        list[nlist++] = o->rate;
    }
    bool search = nlist == 0;
    double rate = search ? 2000 : list[0];
    double good = 0, bad = 0;
    mb_step *steps = calloc(40, sizeof *steps);
    int nsteps = 0, best = -1, retries = 0;
    if (!steps) goto out;
    nb_print_header(stdout, o, "match");
    printf(",\"waiting\":%d,\"arrivals\":%d,\"match_wait_s\":%.2f,\"max_p99_ms\":%.1f"
           ",\"distribution\":\"v2: waiting male 80%%/other 20%%, ages 18-67, want female "
           "(+other 40%% of males), range -0..10/+0..10; arrivals female ages 18-67 want "
           "male 50%%/other 10%%/both 40%%, 5%% unmatchable (age 90-99 wanting 100-120)\""
           ",\"arrivals_unmatchable\":%d,\"compatible_pct_p10\":%.2f,\"compatible_pct_p50\":%.2f"
           ",\"compatible_pct_p90\":%.2f,\"steps\":[",
           m.W, m.A, o->match_wait_s, o->max_p99_ms, nunmatchable, compat_p10, compat_p50,
           compat_p90);
    fflush(stdout);
    if (!o->quiet)
        fprintf(stderr,
                "match: %d waiting users (joined over REST), %d arrival connections; "
                "%.1f s warm-up, %.1f s measured per step\n"
                "  an arrival is compatible with %.2f %% of the waiting users (median; "
                "p10 %.2f %%, p90 %.2f %%);\n  %d of the %d arrival users with none\n",
                m.W, m.A, o->warmup_s, o->duration_s, compat_p50, compat_p10, compat_p90,
                nunmatchable, m.A);
    for (int iter = 0; iter < (search ? 12 : nlist); iter++) {
        mb_step *st = &steps[nsteps];
        mb_fill(o, &m, users, status, st);
        if (st->pool_joined < m.W) {
            snprintf(st->error, sizeof st->error, "only %ld of %d waiting users joined",
                     st->pool_joined, m.W);
            fprintf(stderr, "natter-bench: %s\n", st->error);
        }
        mb_step_run(&r, rate, st);
        bool ok = mb_ok(o, st);
        printf("%s{", nsteps ? "," : "");
        mb_json_step(stdout, st);
        printf(",\"ok\":%s}", ok ? "true" : "false");
        fflush(stdout);
        if (!o->quiet) mb_text_step(st);
        nsteps++;
        /* A search step that failed while something else used the CPUs
         * is measured again (at most twice): on a shared machine one
         * disturbed step would otherwise end the search low. */
        if (search && !ok && mb_other_cpu_pct(st) > MB_DISTURBED_PCT && retries < 2 &&
            nsteps < 40) {
            retries++;
            iter--;
            if (!o->quiet)
                fprintf(stderr,
                        "    (disturbed: %.0f %% of the CPUs busy with other work; again)\n",
                        mb_other_cpu_pct(st));
            continue;
        }
        retries = 0;
        if (!search) {
            if (iter + 1 < nlist) rate = list[iter + 1];
            if (ok && (best < 0 || st->rate > steps[best].rate)) best = nsteps - 1;
            continue;
        }
        if (ok) {
            good = rate;
            best = nsteps - 1;
        } else {
            bad = rate;
        }
        if (bad == 0)
            rate *= 2;
        else if (good == 0)
            rate /= 2;
        else if (bad / good < 1.1)
            break;
        else
            rate = (good + bad) / 2;
        if (rate < 50) break;
    }
    printf("]");
    if (best >= 0) {
        printf(",\"best_rate\":%.0f,\"best\":{", steps[best].rate);
        mb_json_step(stdout, &steps[best]);
        printf("}");
    } else {
        printf(",\"best_rate\":0");
    }
    printf("}\n");
    fflush(stdout);
    if (!o->quiet && best >= 0 && nsteps > 1) {
        fprintf(stderr, "match: highest rate that kept up (p99 time to match < %.0f ms):\n",
                o->max_p99_ms);
        mb_text_step(&steps[best]);
    }
    /* A search fails only when no step kept up (like ingest's); a list of
     * rates fails when a step had errors or measured nothing. Whether a
     * rate kept up is in the figures. */
    rc = 0;
    if (search)
        rc = best >= 0 ? 0 : 1;
    else
        for (int k = 0; k < nsteps; k++)
            if (steps[k].error[0] || steps[k].errors || steps[k].ttm.count == 0) rc = 1;
    free(steps);
out:
    if (r.c)
        for (int i = 0; i < m.A; i++)
            ntc_conn_free(r.c[i].ws);
    free(r.c);
    free(r.idle);
    free(r.dirty);
    free(status);
    if (r.epfd >= 0) close(r.epfd);
    if (r.timer_fd >= 0) close(r.timer_fd);
    free(users);
    return rc;
}
