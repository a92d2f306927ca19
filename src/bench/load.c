/*
 * The load driver of one natter-bench process: an epoll loop over a slice
 * of connections (libnatter WebSockets, or MQTT for --proto mqtt) that
 *  1. connects and authenticates (or subscribes) every connection, a few
 *     hundred at a time;
 *  2. sends messages at a fixed total rate, spread round-robin over the
 *     senders, on a timerfd tick (open loop: a slow server does not slow the
 *     offered rate);
 *  3. stops sending after warm-up + duration and waits until every send is
 *     acknowledged and every member holds every message (or a timeout);
 *  4. counts: latencies of messages sent in the measured window, deliveries,
 *     lost and duplicated ones.
 *
 * A message's text starts with "T.S.C." (send time in monotonic ns, the
 * sender's member index, the sender's counter) padded with 'x' to --size;
 * the send's "id" is the send time as well, so an ack carries its own
 * start. Natter deliveries are checked by the chat's seq (each member must
 * see base+1 .. last acked seq exactly once, in order), MQTT deliveries by
 * the per-sender counter.
 *
 * Frames are masked with a key from a xorshift generator instead of
 * libnatter's getrandom(2) per frame: a bench does not need unguessable keys
 * and should not pay a system call per send.
 */
#include "bench/bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define LOAD_CONNECT_WINDOW 256 /* connections in setup at once */
#define LOAD_EVENTS 512
#define LOAD_DRAIN_S 10.0
#define LOAD_EV_TIMER UINT64_MAX
#define LOAD_EV_STOP (UINT64_MAX - 1)

typedef struct lconn {
    ntc_conn *ws;
    nb_mqtt *mq;
    int chat;         /* index into load chats */
    int member;       /* index among the chat's members */
    int64_t last_seq; /* natter: last seq seen */
    uint64_t distinct;
    uint32_t sent_ctr;
    bool started, ready, dead, dirty;
} lconn;

typedef struct lchat {
    int64_t max_seq;   /* natter: highest acked seq */
    uint64_t sent;     /* messages sent in this chat */
    uint32_t *mq_last; /* mqtt: [receiver][sender] last counter */
    char topic[32];
} lchat;

typedef struct load {
    const nb_load *l;
    nb_result *res;
    lconn *conns;
    lchat *chats;
    int *senders;
    int nsenders;
    int *dirty;
    int ndirty;
    int epfd;
    uint64_t mask_state;
    uint32_t run_tag;
    uint64_t win_start, win_end, phase2_at;
    char *text; /* scratch for one text */
    char *frame;
    size_t frame_cap;
    int cur; /* the connection being read (MQTT callbacks) */
    bool first_error_printed;
} load;

/* ---- sending -------------------------------------------------------------- */

static uint32_t load__mask_key(load *ld)
{
    uint64_t x = ld->mask_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ld->mask_state = x;
    return (uint32_t)(x >> 16);
}

/* Writes a masked text frame of payload into ld->frame; returns its length. */
static size_t load__ws_frame(load *ld, const char *payload, size_t len)
{
    uint8_t *f = (uint8_t *)ld->frame;
    size_t h = 0;
    f[h++] = 0x81;
    if (len < 126) {
        f[h++] = 0x80 | (uint8_t)len;
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(len >> 8);
        f[h++] = (uint8_t)len;
    }
    uint32_t key32 = load__mask_key(ld);
    uint8_t key[4];
    memcpy(key, &key32, 4);
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        f[h + i] = (uint8_t)payload[i] ^ key[i & 3];
    return h + len;
}

static void load__mark_dirty(load *ld, int idx)
{
    if (!ld->conns[idx].dirty) {
        ld->conns[idx].dirty = true;
        ld->dirty[ld->ndirty++] = idx;
    }
}

static void load__flush_dirty(load *ld)
{
    for (int i = 0; i < ld->ndirty; i++) {
        lconn *c = &ld->conns[ld->dirty[i]];
        c->dirty = false;
        if (c->ws)
            ntc_conn_flush(c->ws);
        else if (c->mq)
            nb_mqtt_flush(c->mq);
    }
    ld->ndirty = 0;
}

static void load__send_one(load *ld, int idx, uint64_t now)
{
    lconn *c = &ld->conns[idx];
    if (!c->ready || c->dead) return;
    const nb_chat *ch = &ld->l->chats[c->chat];
    int size = ld->l->o->size;
    uint32_t ctr = ++c->sent_ctr;
    int n = snprintf(ld->text, (size_t)size + 64, "%" PRIu64 ".%d.%u.", now, c->member, ctr);
    if (n < size) {
        memset(ld->text + n, 'x', (size_t)(size - n));
        n = size;
    }
    ld->text[n] = '\0';
    ld->chats[c->chat].sent++;
    ld->res->sent_total++;
    if (now >= ld->win_start && now < ld->win_end) ld->res->sent++;
    if (c->mq) {
        nb_mqtt_publish(c->mq, ld->chats[c->chat].topic, ld->text, (size_t)n);
    } else {
        char *json = ld->frame + ld->frame_cap / 2;
        int jn = snprintf(json, ld->frame_cap / 2,
                          "{\"type\":\"send\",\"id\":%" PRIu64 ",\"chat_id\":%" PRId64
                          ",\"client_id\":\"%08x-%d-%d-%u\",\"text\":\"%s\"}",
                          now, ch->chat_id, ld->run_tag, ld->l->proc_index, idx, ctr, ld->text);
        size_t flen = load__ws_frame(ld, json, (size_t)jn);
        ntc_conn_send_raw(c->ws, ld->frame, flen);
    }
    load__mark_dirty(ld, idx);
}

/* ---- receiving ------------------------------------------------------------- */

static const char *load__after(const char *s, size_t len, const char *key)
{
    const char *p = memmem(s, len, key, strlen(key));
    return p ? p + strlen(key) : NULL;
}

/* A message text "T.S.C.xxx": send time, sender's member index, counter. */
static bool load__parse_text(const char *p, const char *end, uint64_t *t, int *sender,
                             uint32_t *ctr)
{
    char *q;
    *t = strtoull(p, &q, 10);
    if (q >= end || *q != '.') return false;
    *sender = (int)strtol(q + 1, &q, 10);
    if (q >= end || *q != '.') return false;
    *ctr = (uint32_t)strtoul(q + 1, &q, 10);
    return q < end && *q == '.';
}

static void load__delivery(load *ld, lconn *c, uint64_t t_sent, int sender, uint64_t now)
{
    nb_result *res = ld->res;
    res->deliveries_total++;
    if (t_sent < ld->win_start || t_sent >= ld->win_end) return;
    res->deliveries++;
    if (sender == c->member) return; /* the sender's own copy: counted, but no latency */
    if (ld->phase2_at && t_sent >= ld->phase2_at)
        nb_hist_add(&res->recv2, now - t_sent);
    else
        nb_hist_add(&res->recv, now - t_sent);
}

static void load__ws_frame_in(load *ld, int idx, const char *js, size_t len, uint64_t now)
{
    lconn *c = &ld->conns[idx];
    nb_result *res = ld->res;
    if (len > 17 && !memcmp(js, "{\"type\":\"message\"", 17)) {
        const char *p = load__after(js, len, "\"chat_id\":");
        int64_t chat_id = p ? strtoll(p, NULL, 10) : 0;
        if (chat_id != ld->l->chats[c->chat].chat_id)
            return; /* another chat (the lobby): not ours */
        p = load__after(p, len - (size_t)(p - js), "\"seq\":");
        int64_t seq = p ? strtoll(p, NULL, 10) : 0;
        if (seq <= c->last_seq) {
            res->duplicated++;
            return;
        }
        if (seq != c->last_seq + 1) res->out_of_order++;
        c->last_seq = seq;
        c->distinct++;
        p = load__after(p, len - (size_t)(p - js), "\"text\":\"");
        uint64_t t;
        int sender;
        uint32_t ctr;
        if (p && load__parse_text(p, js + len, &t, &sender, &ctr))
            load__delivery(ld, c, t, sender, now);
    } else if (len > 13 && !memcmp(js, "{\"type\":\"ack\"", 13)) {
        const char *p = load__after(js, len, "\"id\":");
        uint64_t t = p ? strtoull(p, NULL, 10) : 0;
        p = load__after(js, len, "\"seq\":");
        int64_t seq = p ? strtoll(p, NULL, 10) : 0;
        lchat *ch = &ld->chats[c->chat];
        if (seq > ch->max_seq) ch->max_seq = seq;
        res->acked++;
        if (t >= ld->win_start && t < ld->win_end) nb_hist_add(&res->ack, now - t);
    } else if (len > 15 && !memcmp(js, "{\"type\":\"error\"", 15)) {
        res->errors++;
        if (!ld->first_error_printed) {
            ld->first_error_printed = true;
            fprintf(stderr, "natter-bench: server error: %.*s\n", (int)(len > 300 ? 300 : len), js);
        }
    } else if (len > 15 && !memcmp(js, "{\"type\":\"ready\"", 15)) {
        c->ready = true;
    }
}

static void load__mqtt_publish(void *arg, const char *topic, size_t topic_len, const char *payload,
                               size_t len)
{
    load *ld = arg;
    lconn *c = &ld->conns[ld->cur];
    uint64_t t;
    int sender;
    uint32_t ctr;
    if (!load__parse_text(payload, payload + len, &t, &sender, &ctr)) return;
    const nb_chat *ch = &ld->l->chats[c->chat];
    if (sender < 0 || sender >= ch->nsenders) return;
    uint32_t *last =
        &ld->chats[c->chat].mq_last[(size_t)c->member * (size_t)ch->nsenders + (size_t)sender];
    if (ctr <= *last) {
        ld->res->duplicated++;
        return;
    }
    if (ctr != *last + 1) ld->res->out_of_order++;
    *last = ctr;
    c->distinct++;
    load__delivery(ld, c, t, sender, nb_now_ns());
}

/* ---- connections -------------------------------------------------------------- */

static int load__start_conn(load *ld, int idx)
{
    lconn *c = &ld->conns[idx];
    const nb_opts *o = ld->l->o;
    c->started = true;
    int fd;
    if (o->proto == NB_MQTT) {
        char id[48];
        snprintf(id, sizeof id, "nb-%08x-%d-%d", ld->run_tag, ld->l->proc_index, idx);
        c->mq = nb_mqtt_new(o->host, o->port, id);
        if (!c->mq) return -errno;
        nb_mqtt_subscribe(c->mq, ld->chats[c->chat].topic);
        fd = nb_mqtt_fd(c->mq);
    } else {
        c->ws = ntc_conn_new(o->host, o->port);
        if (!c->ws) return -errno;
        char auth[700];
        snprintf(auth, sizeof auth, "{\"type\":\"auth\",\"token\":\"%s\"}",
                 ld->l->users[idx].token);
        ntc_conn_send_text(c->ws, auth);
        fd = ntc_conn_fd(c->ws);
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                             .data.u64 = (uint64_t)idx};
    if (epoll_ctl(ld->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
    return 0;
}

static void load__conn_dead(load *ld, lconn *c, int err)
{
    if (c->dead) return;
    c->dead = true;
    if (!c->ready) ld->res->conns_failed++;
    if (!ld->res->error[0]) {
        int code = c->ws ? ntc_conn_close_code(c->ws) : 0;
        snprintf(ld->res->error, sizeof ld->res->error, "connection %d closed (%s, close code %d)",
                 (int)(c - ld->conns), strerror(err < 0 ? -err : ECONNRESET), code);
    }
}

static void load__on_event(load *ld, int idx, uint32_t events)
{
    lconn *c = &ld->conns[idx];
    if (c->dead) return;
    uint64_t now = nb_now_ns();
    if (c->mq) {
        if (events & EPOLLOUT) nb_mqtt_flush(c->mq);
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            ld->cur = idx;
            int rc = nb_mqtt_on_readable(c->mq, load__mqtt_publish, ld);
            if (rc < 0) {
                load__conn_dead(ld, c, rc);
                return;
            }
        }
        if (!c->ready && nb_mqtt_connected(c->mq) && nb_mqtt_subacks(c->mq) > 0) c->ready = true;
        if (nb_mqtt_wants_write(c->mq)) nb_mqtt_flush(c->mq);
        return;
    }
    if (events & EPOLLOUT) {
        if (ntc_conn_on_writable(c->ws) < 0) {
            load__conn_dead(ld, c, ntc_conn_error(c->ws));
            return;
        }
    }
    int rc = 0;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) rc = ntc_conn_on_readable(c->ws);
    const char *js;
    size_t len;
    while (ntc_conn_next(c->ws, &js, &len) == 1)
        load__ws_frame_in(ld, idx, js, len, now);
    if (rc < 0 || ntc_conn_state(c->ws) == NTC_CLOSED) {
        load__conn_dead(ld, c, rc ? rc : ntc_conn_error(c->ws));
        return;
    }
    if (ntc_conn_wants_write(c->ws)) ntc_conn_flush(c->ws);
}

/* Waits for events at most timeout_ms and handles them; returns the number
 * of timer expirations seen. */
static int load__poll(load *ld, int timeout_ms, int timer_fd, bool *stop)
{
    struct epoll_event evs[LOAD_EVENTS];
    int n = epoll_wait(ld->epfd, evs, LOAD_EVENTS, timeout_ms);
    int ticks = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == LOAD_EV_TIMER) {
            uint64_t exp;
            if (read(timer_fd, &exp, sizeof exp) == sizeof exp) ticks += (int)exp;
        } else if (evs[i].data.u64 == LOAD_EV_STOP) {
            *stop = true;
        } else {
            load__on_event(ld, (int)evs[i].data.u64, evs[i].events);
        }
    }
    return ticks;
}

static bool load__drained(load *ld)
{
    const nb_load *l = ld->l;
    if (ld->res->acked + ld->res->errors < ld->res->sent_total && l->o->proto == NB_NATTER)
        return false;
    for (int i = 0; i < l->nconns; i++) {
        lconn *c = &ld->conns[i];
        if (c->dead) continue;
        lchat *ch = &ld->chats[c->chat];
        uint64_t want = l->o->proto == NB_MQTT
                            ? ch->sent
                            : (uint64_t)(ch->max_seq - l->chats[c->chat].base_seq);
        if (c->distinct < want) return false;
    }
    return true;
}

int nb_load_run(const nb_load *l, nb_result *res)
{
    memset(res, 0, sizeof *res);
    load ld = {.l = l, .res = res, .epfd = -1};
    int timer_fd = -1, rc = 0;
    const nb_opts *o = l->o;
    ld.mask_state = nb_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    ld.run_tag = (uint32_t)(ld.mask_state >> 7);
    ld.conns = calloc((size_t)l->nconns + 1, sizeof *ld.conns);
    ld.chats = calloc((size_t)l->nchats + 1, sizeof *ld.chats);
    ld.senders = calloc((size_t)l->nconns + 1, sizeof *ld.senders);
    ld.dirty = calloc((size_t)l->nconns + 1, sizeof *ld.dirty);
    ld.text = malloc((size_t)o->size + 64);
    ld.frame_cap = 2 * ((size_t)o->size * 2 + 512);
    ld.frame = malloc(ld.frame_cap);
    if (!ld.conns || !ld.chats || !ld.senders || !ld.dirty || !ld.text || !ld.frame) {
        snprintf(res->error, sizeof res->error, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < l->nchats; i++) {
        const nb_chat *ch = &l->chats[i];
        snprintf(ld.chats[i].topic, sizeof ld.chats[i].topic, "nb/g%" PRId64, ch->chat_id);
        ld.chats[i].max_seq = ch->base_seq;
        if (o->proto == NB_MQTT) {
            ld.chats[i].mq_last = calloc((size_t)ch->n * (size_t)(ch->nsenders ? ch->nsenders : 1),
                                         sizeof *ld.chats[i].mq_last);
            if (!ld.chats[i].mq_last) {
                rc = -ENOMEM;
                goto out;
            }
        }
        for (int m = 0; m < ch->n; m++) {
            lconn *c = &ld.conns[ch->first + m];
            c->chat = i;
            c->member = m;
            c->last_seq = ch->base_seq;
            if (m < ch->nsenders) ld.senders[ld.nsenders++] = ch->first + m;
        }
    }
    ld.epfd = epoll_create1(EPOLL_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ld.epfd < 0 || timer_fd < 0) {
        rc = -errno;
        snprintf(res->error, sizeof res->error, "epoll/timerfd: %s", strerror(errno));
        goto out;
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = LOAD_EV_TIMER};
    epoll_ctl(ld.epfd, EPOLL_CTL_ADD, timer_fd, &tev);

    /* 1. connect, LOAD_CONNECT_WINDOW at a time */
    bool stop = false;
    int next = 0, ready = 0;
    uint64_t setup_deadline = nb_now_ns() + (uint64_t)(60 + l->nconns / 200) * 1000000000ull;
    while (ready + (int)res->conns_failed < l->nconns) {
        while (next < l->nconns && next - ready - (int)res->conns_failed < LOAD_CONNECT_WINDOW) {
            int err = load__start_conn(&ld, next);
            if (err < 0) {
                ld.conns[next].dead = true;
                res->conns_failed++;
                if (!res->error[0])
                    snprintf(res->error, sizeof res->error, "connect %d: %s", next, strerror(-err));
            }
            next++;
        }
        load__poll(&ld, 10, timer_fd, &stop);
        ready = 0;
        for (int i = 0; i < next; i++) {
            lconn *c = &ld.conns[i];
            if (c->ready && !c->dead) ready++;
        }
        if (nb_now_ns() > setup_deadline) {
            snprintf(res->error, sizeof res->error, "setup timed out: %d of %d ready", ready,
                     l->nconns);
            break;
        }
    }
    res->conns_ok = (uint64_t)ready;
    if (ready < l->nconns) {
        if (!res->error[0])
            snprintf(res->error, sizeof res->error, "%d of %d connections failed",
                     l->nconns - ready, l->nconns);
        rc = -ECONNREFUSED;
        goto out;
    }

    char one = 1;
    if (write(l->ready_fd, &one, 1) != 1) {
        rc = -EIO;
        goto out;
    }
    if (l->idle) {
        /* Hold the connections until the parent closes our control pipe. */
        struct epoll_event sev = {.events = EPOLLIN, .data.u64 = LOAD_EV_STOP};
        if (epoll_ctl(ld.epfd, EPOLL_CTL_ADD, l->ctl_fd, &sev) != 0) {
            rc = -EIO;
            goto out;
        }
        while (!stop) {
            load__poll(&ld, 1000, timer_fd, &stop);
            load__flush_dirty(&ld);
        }
        goto out;
    }
    if (read(l->ctl_fd, &one, 1) != 1) {
        rc = -ECANCELED;
        goto out;
    }

    /* 2. send at the rate */
    double cpu0 = -1;
    uint64_t t0 = nb_now_ns();
    ld.win_start = t0 + (uint64_t)(l->warmup_s * 1e9);
    ld.win_end = ld.win_start + (uint64_t)(l->duration_s * 1e9);
    if (l->phase2_s > 0) ld.phase2_at = ld.win_start + (uint64_t)(l->phase2_s * 1e9);
    res->window_s = l->duration_s;
    int tick_us = o->tick_us > 0 ? o->tick_us : 250;
    struct itimerspec its = {.it_interval = {0, tick_us * 1000L}, .it_value = {0, tick_us * 1000L}};
    timerfd_settime(timer_fd, 0, &its, NULL);
    uint64_t scheduled = 0;
    int rr = 0;
    uint64_t last_ping = t0;
    while (!stop) {
        load__poll(&ld, 100, timer_fd, &stop);
        uint64_t now = nb_now_ns();
        if (cpu0 < 0 && now >= ld.win_start) cpu0 = nb_self_cpu_s();
        if (now >= ld.win_end) {
            res->cpu_s = nb_self_cpu_s() - (cpu0 < 0 ? 0 : cpu0);
            break;
        }
        if (ld.nsenders > 0 && l->rate > 0) {
            uint64_t due = (uint64_t)((double)(now - t0) / 1e9 * l->rate);
            /* Never burst more than 100 ms worth after a stall. */
            uint64_t cap = (uint64_t)(l->rate * 0.1) + 1;
            if (due > scheduled + cap) scheduled = due - cap;
            for (; scheduled < due; scheduled++) {
                load__send_one(&ld, ld.senders[rr], now);
                if (++rr == ld.nsenders) rr = 0;
            }
        }
        if (o->proto == NB_MQTT && now - last_ping > 30000000000ull) {
            last_ping = now;
            for (int i = 0; i < l->nconns; i++)
                if (ld.conns[i].mq) {
                    nb_mqtt_ping(ld.conns[i].mq);
                    load__mark_dirty(&ld, i);
                }
        }
        load__flush_dirty(&ld);
    }
    struct itimerspec off = {0};
    timerfd_settime(timer_fd, 0, &off, NULL);

    /* 3. drain */
    uint64_t drain_end = nb_now_ns() + (uint64_t)(LOAD_DRAIN_S * 1e9);
    while (!load__drained(&ld) && nb_now_ns() < drain_end) {
        load__poll(&ld, 20, timer_fd, &stop);
        load__flush_dirty(&ld);
    }

    /* 4. count */
    if (o->proto == NB_NATTER) {
        uint64_t answered = res->acked + res->errors;
        res->unacked = res->sent_total > answered ? res->sent_total - answered : 0;
    }
    for (int i = 0; i < l->nconns; i++) {
        lconn *c = &ld.conns[i];
        lchat *ch = &ld.chats[c->chat];
        uint64_t want;
        if (o->proto == NB_MQTT)
            want = ch->sent;
        else
            want = (uint64_t)(ch->max_seq - l->chats[c->chat].base_seq);
        if (c->distinct < want) res->lost += want - c->distinct;
    }
    if (o->proto == NB_NATTER) res->lost += res->unacked;

out:
    if (ld.conns) {
        for (int i = 0; i < l->nconns; i++) {
            ntc_conn_free(ld.conns[i].ws);
            nb_mqtt_free(ld.conns[i].mq);
        }
    }
    if (ld.chats)
        for (int i = 0; i < l->nchats; i++)
            free(ld.chats[i].mq_last);
    free(ld.conns);
    free(ld.chats);
    free(ld.senders);
    free(ld.dirty);
    free(ld.text);
    free(ld.frame);
    if (timer_fd >= 0) close(timer_fd);
    if (ld.epfd >= 0) close(ld.epfd);
    return rc;
}
