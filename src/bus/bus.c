/*
 * The public face of the bus (bus.h): picks a back end from the URL given to
 * nt_bus_open and forwards every call through its nt_bus_ops table
 * (bus_backend.h). Adding a back end (Redis) means one more row in
 * bus__backends and one more .c file; no service changes. The few things
 * that do not depend on the back end (the delivery and presence handler slots, freeing
 * jobs and calls) live here.
 */
#include "bus/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_backend.h"

static const struct {
    const char *scheme; /* "local" matches "local" and "local:..." */
    const nt_bus_ops *ops;
} bus__backends[] = {
    {"local", &nt_bus_local_ops},
    {"redis", &nt_bus_redis_ops},
};

/* True if url is `scheme` alone or `scheme:` followed by anything. */
static bool bus__scheme_matches(const char *url, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncmp(url, scheme, n) == 0 && (url[n] == '\0' || url[n] == ':');
}

nt_bus *nt_bus_open(const char *url, uv_loop_t *loop, char *err, size_t err_len)
{
    if (!url || !*url) url = "local";
    if (!loop) {
        snprintf(err, err_len, "bus: no event loop given");
        return NULL;
    }
    for (size_t i = 0; i < sizeof bus__backends / sizeof bus__backends[0]; i++) {
        if (bus__scheme_matches(url, bus__backends[i].scheme))
            return bus__backends[i].ops->open(url, loop, err, err_len);
    }
    size_t scheme_len = strcspn(url, ":");
    snprintf(err, err_len, "bus: no back end for \"%.*s\" in this build (known: local, redis)",
             (int)(scheme_len > 32 ? 32 : scheme_len), url);
    return NULL;
}

void nt_bus_close(nt_bus *b)
{
    if (b) b->ops->close(b);
}

int nt_bus_ping(nt_bus *b)
{
    return b ? b->ops->ping(b) : NT_BUS_EUNAVAILABLE;
}

void nt_bus_set_delivery_handler(nt_bus *b, nt_bus_delivery_fn fn, void *arg)
{
    b->delivery_fn = fn;
    b->delivery_arg = arg;
}

int nt_bus_deliver(nt_bus *b, const int64_t *user_ids, size_t n, const char *frame, size_t len)
{
    if (n == 0) return 0;
    return b->ops->deliver(b, user_ids, n, frame, len);
}

void nt_bus_set_presence_handler(nt_bus *b, nt_bus_presence_fn fn, void *arg)
{
    b->presence_fn = fn;
    b->presence_arg = arg;
}

int nt_bus_conn_up(nt_bus *b, int64_t user_id)
{
    return b->ops->conn_up(b, user_id);
}

int nt_bus_conn_down(nt_bus *b, int64_t user_id)
{
    return b->ops->conn_down(b, user_id);
}

int nt_bus_registry_flush(nt_bus *b, void (*fn)(void *arg), void *arg)
{
    return b->ops->registry_flush(b, fn, arg);
}

bool nt_bus_online(nt_bus *b, int64_t user_id)
{
    return b->ops->online(b, user_id);
}

int nt_bus_queue_push(nt_bus *b, const char *queue, const void *payload, size_t len)
{
    return b->ops->queue_push(b, queue, payload, len);
}

int nt_bus_queue_pop(nt_bus *b, const char *queue, int timeout_ms, int visibility_ms,
                     nt_bus_job *job)
{
    job->id = 0;
    job->payload = NULL;
    job->len = 0;
    return b->ops->queue_pop(b, queue, timeout_ms, visibility_ms, job);
}

int nt_bus_queue_ack(nt_bus *b, const char *queue, uint64_t job_id)
{
    return b->ops->queue_ack(b, queue, job_id);
}

size_t nt_bus_queue_depth(nt_bus *b, const char *queue)
{
    return b->ops->queue_depth(b, queue);
}

void nt_bus_job_free(nt_bus_job *job)
{
    if (!job) return;
    free(job->payload);
    job->payload = NULL;
    job->len = 0;
}

int nt_bus_request(nt_bus *b, const char *service, const void *payload, size_t len, int timeout_ms,
                   char **reply, size_t *reply_len)
{
    *reply = NULL;
    if (reply_len) *reply_len = 0;
    return b->ops->request(b, service, payload, len, timeout_ms, reply, reply_len);
}

int nt_bus_serve(nt_bus *b, const char *service, int timeout_ms, nt_bus_call *call)
{
    memset(call, 0, sizeof *call);
    return b->ops->serve(b, service, timeout_ms, call);
}

int nt_bus_reply(nt_bus *b, const nt_bus_call *call, const void *payload, size_t len)
{
    return b->ops->reply(b, call, payload, len);
}

void nt_bus_call_free(nt_bus_call *call)
{
    if (!call) return;
    free(call->payload);
    call->payload = NULL;
    call->len = 0;
}

bool nt_bus_leader(nt_bus *b, const char *name, int ttl_ms)
{
    return b->ops->leader(b, name, ttl_ms);
}

int nt_bus_match_join(nt_bus *b, const nt_bus_match_entry *me, int scan_cap,
                      nt_bus_match_entry *partner)
{
    if (!b->ops->match_join) return NT_BUS_ENOTSUP;
    return b->ops->match_join(b, me, scan_cap, partner);
}

int nt_bus_match_leave(nt_bus *b, int64_t user_id)
{
    if (!b->ops->match_leave) return NT_BUS_ENOTSUP;
    return b->ops->match_leave(b, user_id);
}
