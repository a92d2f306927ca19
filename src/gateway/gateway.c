/*
 * The gateway's core: wiring the server's callbacks, the registry of local
 * connections per user, deliveries from the bus, and the SIGTERM drain.
 */
#include "gateway/gateway_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "services/services.h"

/* ---- registry ------------------------------------------------------------ */

static size_t slot_of(const nt_gateway *gw, int64_t user_id)
{
    uint64_t h = (uint64_t)user_id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (gw->nslots - 1);
}

static int registry_grow(nt_gateway *gw)
{
    size_t old_n = gw->nslots;
    gw_registry_slot *old = gw->slots;
    size_t n = old_n ? old_n * 2 : 1024;
    gw_registry_slot *slots = calloc(n, sizeof *slots);
    if (!slots) return -1;
    gw->slots = slots;
    gw->nslots = n;
    for (size_t i = 0; i < old_n; i++) {
        if (!old[i].user_id) continue;
        size_t j = slot_of(gw, old[i].user_id);
        while (slots[j].user_id)
            j = (j + 1) & (n - 1);
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

static gw_registry_slot *registry_lookup(nt_gateway *gw, int64_t user_id)
{
    if (!gw->nslots) return NULL;
    for (size_t i = slot_of(gw, user_id);; i = (i + 1) & (gw->nslots - 1)) {
        if (gw->slots[i].user_id == user_id) return &gw->slots[i];
        if (!gw->slots[i].user_id) return NULL;
    }
}

nt_conn *gw_registry_find(nt_gateway *gw, int64_t user_id)
{
    gw_registry_slot *slot = registry_lookup(gw, user_id);
    return slot ? slot->head : NULL;
}

void gw_registry_add(nt_gateway *gw, nt_conn *c)
{
    int64_t uid = c->session.user_id;
    gw_registry_slot *slot = registry_lookup(gw, uid);
    if (!slot) {
        if ((gw->nusers + 1) * 2 > gw->nslots && registry_grow(gw) != 0) return;
        size_t i = slot_of(gw, uid);
        while (gw->slots[i].user_id)
            i = (i + 1) & (gw->nslots - 1);
        slot = &gw->slots[i];
        slot->user_id = uid;
        slot->head = NULL;
        gw->nusers++;
    }
    c->session.prev_of_user = NULL;
    c->session.next_of_user = slot->head;
    if (slot->head) slot->head->session.prev_of_user = c;
    slot->head = c;
}

/* Deletes a slot and shifts the probe chain back so lookups stay correct
 * without tombstones. */
static void registry_delete_slot(nt_gateway *gw, gw_registry_slot *slot)
{
    size_t mask = gw->nslots - 1;
    size_t hole = (size_t)(slot - gw->slots);
    for (size_t i = (hole + 1) & mask; gw->slots[i].user_id; i = (i + 1) & mask) {
        size_t home = slot_of(gw, gw->slots[i].user_id);
        /* move i into the hole if its home is not between hole and i */
        bool between = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!between) {
            gw->slots[hole] = gw->slots[i];
            hole = i;
        }
    }
    gw->slots[hole].user_id = 0;
    gw->slots[hole].head = NULL;
    gw->nusers--;
}

void gw_registry_remove(nt_gateway *gw, nt_conn *c)
{
    gw_registry_slot *slot = registry_lookup(gw, c->session.user_id);
    if (!slot) return;
    if (c->session.prev_of_user)
        c->session.prev_of_user->session.next_of_user = c->session.next_of_user;
    else
        slot->head = c->session.next_of_user;
    if (c->session.next_of_user)
        c->session.next_of_user->session.prev_of_user = c->session.prev_of_user;
    c->session.next_of_user = c->session.prev_of_user = NULL;
    if (!slot->head) registry_delete_slot(gw, slot);
}

/* ---- deliveries from the bus ------------------------------------------------ */

/* One frame for many users: framed once, queued by reference on each of
 * their local connections. */
static void on_delivery(void *arg, nt_shared *payload, const int64_t *user_ids, size_t n)
{
    nt_gateway *gw = arg;
    nt_shared *frame = NULL;
    bool is_message = payload->len > 16 && memcmp(payload->data, "{\"type\":\"message\"", 17) == 0;
    for (size_t i = 0; i < n; i++) {
        nt_conn *next;
        for (nt_conn *c = gw_registry_find(gw, user_ids[i]); c; c = next) {
            next = c->session.next_of_user; /* the send may cut c and unlink it */
            /* Not before its `ready` (sent once the bus registry holds it). */
            if (c->state != NT_CONN_WS || c->session.auth_pending) continue;
            if (!frame && !(frame = nt_ws_frame_text(payload->data, payload->len))) return;
            nt_conn_send_frame(c, frame);
            gw->metrics.deliveries++;
            if (is_message) gw->metrics.messages_out++;
        }
    }
    if (frame) nt_shared_unref(frame);
}

/* ---- server callbacks ---------------------------------------------------------- */

static int on_upgrade(void *arg, nt_conn *c, const nt_http_request *req)
{
    nt_gateway *gw = arg;
    if (strcmp(req->path, "/ws") != 0) return 404;
    if (gw->draining) return 503;
    return 0;
}

/* The last connection of a user closed: out of the match queue, on a
 * worker (the queue's mutex is never taken on the loop thread). */
static void run_match_leave(gw_job *job)
{
    nt_match_disconnect(job->gw->ctx, job->caller.user_id);
}

static void after_match_leave(gw_job *job) {}

static void on_close(void *arg, nt_conn *c)
{
    nt_gateway *gw = arg;
    if (!c->session.user_id) return;
    gw_registry_remove(gw, c);
    /* Whether this was the user's last connection anywhere comes later, to
     * on_presence: the loop does not wait for the bus's registry. */
    nt_bus_conn_down(gw->ctx->bus, c->session.user_id);
}

/* Loop thread, from the bus: a user's first connection anywhere opened, or
 * the last one closed; per user in the order it happened. */
static void on_presence(void *arg, int64_t user_id, bool online)
{
    nt_gateway *gw = arg;
    if (online) {
        gw_presence(gw, user_id, true);
        return;
    }
    /* A drain closes every socket and their clients reconnect to another
     * node: no offline flicker to friends, and they keep their place in
     * the match queue. */
    if (gw->draining) return;
    gw_presence(gw, user_id, false);
    gw_job *job = calloc(1, sizeof *job);
    if (job) {
        job->caller.user_id = user_id;
        job->run = run_match_leave;
        job->after = after_match_leave;
        gw_job_submit(gw, job);
    }
}

nt_gateway *nt_gateway_new(uv_loop_t *loop, nt_ctx *ctx, const nt_config *cfg, char *err,
                           size_t err_len)
{
    nt_gateway *gw = calloc(1, sizeof *gw);
    if (!gw) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    gw->loop = loop;
    gw->ctx = ctx;
    gw->cfg = cfg;
    pthread_mutex_init(&gw->done_lock, NULL);
    uv_async_init(loop, &gw->done_async, gw_on_send_done_async);
    gw->done_async.data = gw;
    uv_timer_init(loop, &gw->drain_timer);
    gw->drain_timer.data = gw;
    gw->hash_pool = gw_hash_pool_new(loop, (int)cfg->hash_workers, 0, gw_job_finish, err, err_len);
    if (!gw->hash_pool) {
        nt_gateway_free(gw);
        return NULL;
    }
    int nhash = gw_hash_pool_threads(gw->hash_pool);
    nt_info("password hashing: %d thread%s of its own, each with a helper process at idle "
            "priority",
            nhash, nhash == 1 ? "" : "s");
    if (gw_static_load(gw, cfg->web_dir) != 0)
        nt_warn("web client folder %s could not be read; / will answer 404", cfg->web_dir);

    nt_server_opts opts = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .max_connections = (size_t)cfg->max_connections,
        .max_output = (size_t)cfg->max_output,
        .max_frame = (size_t)cfg->max_frame,
        .max_body = (size_t)cfg->max_body,
        .auth_timeout_s = (int)cfg->auth_timeout_s,
        .ping_interval_s = (int)cfg->ping_interval_s,
    };
    nt_server_callbacks cb = {
        .arg = gw,
        .on_request = gw_on_request,
        .on_upgrade = on_upgrade,
        .on_ws_text = gw_on_ws_text,
        .on_close = on_close,
    };
    gw->server = nt_server_new(loop, &opts, &cb);
    if (!gw->server) {
        snprintf(err, err_len, "out of memory");
        nt_gateway_free(gw);
        return NULL;
    }
    nt_bus_set_delivery_handler(ctx->bus, on_delivery, gw);
    nt_bus_set_presence_handler(ctx->bus, on_presence, gw);
    return gw;
}

int nt_gateway_start(nt_gateway *gw)
{
    return nt_server_listen(gw->server);
}

static bool drain_finished(nt_gateway *gw)
{
    return nt_server_connection_count(gw->server) == 0 && gw->jobs_in_flight == 0 &&
           gw->sends_in_flight == 0;
}

/* Draining: a WebSocket is closed with 1001 once every send it made is
 * acknowledged, so a client never misses the ack of a stored message, and
 * (on_drain_tick) once no random pair waits for its chat, so both get
 * their `matched`. */
static void close_when_idle(void *arg, nt_conn *c)
{
    if (c->session.sends == 0 && c->session.jobs == 0) {
        nt_conn_close_ws(c, NT_WS_CLOSE_GOING_AWAY, "server shutting down");
        nt_conn_resume(c); /* read the peer's close frame */
    }
}

static void on_drain_tick(uv_timer_t *t)
{
    nt_gateway *gw = t->data;
    if (nt_match_storing(gw->ctx) == 0) nt_server_each_ws(gw->server, close_when_idle, gw);
    if (drain_finished(gw) || uv_now(gw->loop) >= gw->drain_deadline) {
        if (!drain_finished(gw))
            nt_warn("drain timeout: %zu connections, %zu jobs, %zu sends still open",
                    nt_server_connection_count(gw->server), gw->jobs_in_flight,
                    gw->sends_in_flight);
        uv_timer_stop(t);
        if (gw->drain_done) gw->drain_done(gw->drain_arg);
    }
}

void nt_gateway_drain(nt_gateway *gw, void (*done)(void *arg), void *arg)
{
    if (gw->draining) return;
    gw->draining = true;
    gw->drain_done = done;
    gw->drain_arg = arg;
    gw->drain_deadline = uv_now(gw->loop) + (uint64_t)gw->cfg->drain_timeout_s * 1000;
    nt_server_drain(gw->server);
    uv_timer_start(&gw->drain_timer, on_drain_tick, 0, 20);
}

void nt_gateway_free(nt_gateway *gw)
{
    if (!gw) return;
    /* Jobs, sends and `ready`s waiting for the bus registry (counted as
     * jobs) call back into the gateway: let them land first. */
    while (gw->jobs_in_flight || gw->sends_in_flight)
        uv_run(gw->loop, UV_RUN_ONCE);
    /* Every hashing job came back (jobs_in_flight counts them): the pool's
     * threads are idle and stop at once. */
    gw_hash_pool_free(gw->hash_pool);
    nt_bus_set_delivery_handler(gw->ctx->bus, NULL, NULL); /* the bot may still deliver */
    nt_bus_set_presence_handler(gw->ctx->bus, NULL, NULL);
    nt_server_free(gw->server);
    uv_close((uv_handle_t *)&gw->done_async, NULL);
    uv_close((uv_handle_t *)&gw->drain_timer, NULL);
    uv_run(gw->loop, UV_RUN_NOWAIT);
    gw_static_free(gw);
    free(gw->slots);
    gw_send_cache_free(gw);
    pthread_mutex_destroy(&gw->done_lock);
    free(gw);
}
