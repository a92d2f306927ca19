/*
 * The contract between bus.c and the bus back ends, private to src/bus/.
 * Each back end fills one nt_bus_ops table; bus.c picks the table from the
 * URL given to nt_bus_open and forwards every public call through it, the
 * way Redis's connection.h hides TCP and TLS behind one ConnectionType. A
 * back end allocates its own state with `struct nt_bus` as its first member,
 * so the public handle and the back end's state are the same pointer.
 * Services never include this header.
 */
#ifndef NT_BUS_BACKEND_H
#define NT_BUS_BACKEND_H

#include "bus/bus.h"

typedef struct nt_bus_ops nt_bus_ops;

/* The Redis back end: presence and flush events its registry thread may
 * have told the loop before the loop takes them; past this the thread
 * waits for the loop instead of growing the list (bus_redis.c, rb__post).
 * Here so that its test can fill exactly that many. */
#define NT_BUS_REDIS_EVENTS_MAX ((size_t)65536)

/* The part of every bus that bus.c owns; first member of each back end's
 * state. */
struct nt_bus {
    const nt_bus_ops *ops;
    uv_loop_t *loop;
    nt_bus_delivery_fn delivery_fn; /* read on the loop thread only */
    void *delivery_arg;
    nt_bus_presence_fn presence_fn; /* read on the loop thread only */
    void *presence_arg;
};

/*
 * One back end. Every function has the contract of the public function of
 * the same name in bus.h; bus.c has already checked that `b` is not NULL.
 * `open` returns the back end's state (with `base.ops` and `base.loop` set)
 * or NULL with a one-line reason in err.
 */
struct nt_bus_ops {
    const char *name;
    nt_bus *(*open)(const char *url, uv_loop_t *loop, char *err, size_t err_len);
    void (*close)(nt_bus *b);
    int (*ping)(nt_bus *b);

    int (*deliver)(nt_bus *b, const int64_t *user_ids, size_t n, const char *frame, size_t len);

    int (*conn_up)(nt_bus *b, int64_t user_id);
    int (*conn_down)(nt_bus *b, int64_t user_id);
    int (*registry_flush)(nt_bus *b, void (*fn)(void *arg), void *arg);
    bool (*online)(nt_bus *b, int64_t user_id);

    int (*queue_push)(nt_bus *b, const char *queue, const void *payload, size_t len);
    int (*queue_pop)(nt_bus *b, const char *queue, int timeout_ms, int visibility_ms,
                     nt_bus_job *job);
    int (*queue_ack)(nt_bus *b, const char *queue, uint64_t job_id);
    size_t (*queue_depth)(nt_bus *b, const char *queue);

    int (*request)(nt_bus *b, const char *service, const void *payload, size_t len, int timeout_ms,
                   char **reply, size_t *reply_len);
    int (*serve)(nt_bus *b, const char *service, int timeout_ms, nt_bus_call *call);
    int (*reply)(nt_bus *b, const nt_bus_call *call, const void *payload, size_t len);

    bool (*leader)(nt_bus *b, const char *name, int ttl_ms);

    /* Optional (NULL: NT_BUS_ENOTSUP). */
    int (*match_join)(nt_bus *b, const nt_bus_match_entry *me, int scan_cap,
                      nt_bus_match_entry *partner);
    int (*match_leave)(nt_bus *b, int64_t user_id);
};

/* The in-process back end (bus_local.c), URL "local". */
extern const nt_bus_ops nt_bus_local_ops;
/* The Redis back end (bus_redis.c), URL "redis://HOST:PORT[?node=NAME]". */
extern const nt_bus_ops nt_bus_redis_ops;

#endif
