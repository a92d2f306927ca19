/*
 * State shared by the gateway's files (gateway.c, routes.c, ws_session.c,
 * metrics.c, static.c). Not an interface: nothing outside src/gateway/
 * includes it.
 */
#ifndef NT_GATEWAY_INTERNAL_H
#define NT_GATEWAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/config.h"
#include "common/histogram.h"
#include "gateway/gateway.h"
#include "gateway/hash_pool.h"
#include "net/server.h"
#include "services/api.h"

/* Back-pressure: a WebSocket with this many jobs or sends in flight is not
 * read until some finish, so one client cannot flood the workers. */
#define GW_MAX_JOBS_PER_CONN 32
#define GW_MAX_SENDS_PER_CONN 256

typedef struct gw_metrics {
    uint64_t messages_in;  /* sends accepted (stored) */
    uint64_t messages_out; /* message frames written to connections */
    uint64_t deliveries;   /* frames written by fan-out, all event types */
    uint64_t send_errors;
    nt_histogram send_to_ack; /* WebSocket send frame to ack, loop clock */
    nt_histogram request_ms;  /* REST requests */
    _Atomic uint64_t jobs_started, jobs_done;
} gw_metrics;

typedef struct gw_static_file {
    char *path; /* "/index.html" */
    const char *content_type;
    nt_buf body;
} gw_static_file;

/* A user's local connections: open addressing, linear probing. */
typedef struct gw_registry_slot {
    int64_t user_id; /* 0 = empty */
    nt_conn *head;
} gw_registry_slot;

typedef struct gw_send gw_send;
/* A user whose presence change is being told (ws_session.c). */
typedef struct gw_presence_slot gw_presence_slot;

struct nt_gateway {
    uv_loop_t *loop;
    nt_ctx *ctx;
    const nt_config *cfg;
    nt_server *server;
    gw_metrics metrics;
    /* registry */
    gw_registry_slot *slots;
    size_t nslots, nusers;
    /* completed sends, pushed by the store's writer thread */
    pthread_mutex_t done_lock;
    gw_send *done_head, *done_tail;
    uv_async_t done_async;
    size_t sends_in_flight;
    /* finished sends kept for reuse (loop thread only; see send_new) */
    gw_send *send_cache;
    unsigned nsend_cache;
    /* static files and the OpenAPI document */
    gw_static_file *files;
    size_t nfiles;
    /* drain */
    bool draining;
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    void (*drain_done)(void *arg);
    void *drain_arg;
    size_t jobs_in_flight;                /* libuv's pool and the hashing pool together */
    gw_presence_slot *presence_in_flight; /* one presence job per user at a time */
    /* register and login: Argon2id on threads of their own (hash_pool.h) */
    gw_hash_pool *hash_pool;
};

/*
 * A unit of work for the worker threads: `run` executes there (it may call
 * the store and the services), `after` runs back on the loop thread. A job
 * that belongs to a connection holds a reference to it; `after` must check
 * the connection is still open before writing to it.
 */
typedef struct gw_job gw_job;
struct gw_job {
    uv_work_t work;
    nt_gateway *gw;
    nt_conn *conn; /* NULL for jobs of no connection (presence) */
    void (*run)(gw_job *job);
    void (*after)(gw_job *job);
    nt_caller caller;
    nt_reply reply;
    uint64_t started_ns;
    /* REST */
    nt_http_request *req;
    int route;
    int64_t ids[2];
    char arg[72];
    bool auth_failed;
    int64_t revoked_session;
    /* WebSocket */
    char ws_id[72]; /* the request's "id", raw JSON, "" if none */
    int kind;
    int64_t chat_id, seq;
    char *token;
    nt_buf frame;
    bool online;
    gw_job *pool_next; /* the hashing pool's queues */
};

/* Resumes reading a WebSocket once it is under every back-pressure limit
 * (jobs, sends, a pending auth); also lets a closing one read the peer's
 * close frame. */
void gw_conn_maybe_resume(nt_conn *c);

/* Queues a job (calloc'ed by the caller; freed after `after`). */
void gw_job_submit(nt_gateway *gw, gw_job *job);
/* Queues a job that hashes a password on the hashing pool instead of
 * libuv's; accounted, run and finished like gw_job_submit's. 0, or -EAGAIN
 * when the pool's queue is full: the job is then untouched and still the
 * caller's. */
int gw_job_submit_hash(nt_gateway *gw, gw_job *job);
/* Loop thread: runs a finished job's `after`, drops its accounting and
 * frees it. The completion of both pools. */
void gw_job_finish(gw_job *job);

/* registry (gateway.c) */
void gw_registry_add(nt_gateway *gw, nt_conn *c);
void gw_registry_remove(nt_gateway *gw, nt_conn *c);
nt_conn *gw_registry_find(nt_gateway *gw, int64_t user_id);

/* REST (routes.c) */
void gw_on_request(void *arg, nt_conn *c, nt_http_request *req);

/* WebSocket protocol (ws_session.c) */
void gw_on_ws_text(void *arg, nt_conn *c, char *msg, size_t len);
void gw_on_send_done_async(uv_async_t *h);
/* Frees the sends kept for reuse (at gateway free). */
void gw_send_cache_free(nt_gateway *gw);
/* Presence job for a user who came online or went offline. */
void gw_presence(nt_gateway *gw, int64_t user_id, bool online);

/* metrics (metrics.c) */
void gw_metrics_render(nt_gateway *gw, nt_buf *out);

/* static files (static.c) */
int gw_static_load(nt_gateway *gw, const char *web_dir);
const gw_static_file *gw_static_find(nt_gateway *gw, const char *path);
void gw_static_free(nt_gateway *gw);
extern const char gw_openapi_json[];

#endif
