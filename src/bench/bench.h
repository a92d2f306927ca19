/*
 * natter-bench's shared pieces: the options every scenario reads, the
 * latency histogram, the per-process result that load processes hand back
 * to the coordinating parent through a pipe, the accounts the bench drives
 * (registered or read from a cache file), and the epoll load driver that
 * turns one slice of connections into messages at a set rate.
 *
 * Process model: the parent sets up users and chats over REST, then forks
 * `procs` load processes, each owning a slice of the connections (a whole
 * number of chats), and samples the server while they run. Each child writes
 * one nb_result to its pipe; the parent merges them. All times are
 * CLOCK_MONOTONIC nanoseconds, which every process on the machine shares, so
 * a timestamp written into a message by one process can be read by another.
 */
#ifndef NT_BENCH_BENCH_H
#define NT_BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "client/natter.h"

/* ---- options ---------------------------------------------------------------- */

typedef enum nb_proto { NB_NATTER = 0, NB_MQTT = 1 } nb_proto;

typedef struct nb_opts {
    const char *host;
    int port;
    pid_t server_pid;       /* 0: no server figures */
    const char *users_file; /* cache of registered users, or NULL */
    const char *prefix;     /* nickname prefix of bench users */
    nb_proto proto;
    double duration_s;   /* measured time of a load phase */
    double warmup_s;     /* load before measuring starts */
    double rate;         /* direct/login: per sender; group/ingest: total msgs/s */
    int size;            /* text bytes of each message */
    int pairs;           /* direct, login */
    int groups, members; /* group */
    int senders;         /* ingest */
    int conns;           /* idle */
    int procs;           /* load processes */
    int login_threads;   /* login storm concurrency */
    double max_p99_ms;   /* ingest: p99 send-to-ack bound */
    int tick_us;         /* send scheduler tick */
    int match_waiting;   /* match: users waiting in the queue (joined over REST) */
    int match_arrivals;  /* match: WebSocket connections that join at the rate */
    double match_wait_s; /* match: a queued arrival is cancelled after this */
    const char *rates;   /* match: comma-separated list of rates, or NULL */
    bool quiet;          /* JSON line only */
    int argc;            /* arguments left for a pass-through scenario (pow) */
    char **argv;
} nb_opts;

/* ---- time and process figures ------------------------------------------------- */

uint64_t nb_now_ns(void);
/* CPU seconds (user + system) this process used so far. */
double nb_self_cpu_s(void);
/* CPU seconds (user + system) of pid from /proc/PID/stat, or -1. */
double nb_proc_cpu_s(pid_t pid);
/* VmRSS of pid in bytes from /proc/PID/status, or -1. */
long long nb_proc_rss(pid_t pid);
/* Busy and idle jiffies of each CPU from /proc/stat (busy counts softirq
 * work too, which no process is charged for); returns how many CPUs were
 * read (at most max). */
int nb_cpu_ticks(unsigned long long *busy, unsigned long long *total, int max);
/* Raises RLIMIT_NOFILE to its hard limit; returns the soft limit now. */
long nb_raise_nofile(void);

/* ---- latency histogram --------------------------------------------------------- */

/* Log-linear buckets over microseconds: exact below 64 us, then 32 buckets
 * per power of two (about 3 % resolution) up to 2^40 us. */
#define NB_HIST_SUB 32
#define NB_HIST_BUCKETS (64 + 40 * NB_HIST_SUB)

typedef struct nb_hist {
    uint64_t count;
    uint64_t max_ns;
    double sum_ns;
    uint64_t bucket[NB_HIST_BUCKETS];
} nb_hist;

void nb_hist_add(nb_hist *h, uint64_t ns);
void nb_hist_merge(nb_hist *into, const nb_hist *from);
/* The q-quantile (0..1) in milliseconds (a bucket's upper edge; max for
 * q >= 1), 0 when empty. */
double nb_hist_ms(const nb_hist *h, double q);

/* ---- results ------------------------------------------------------------------- */

typedef struct nb_result {
    uint64_t conns_ok, conns_failed;
    uint64_t sent;       /* sends written in the measured window */
    uint64_t sent_total; /* all sends, warm-up and drain included */
    uint64_t acked, errors, unacked;
    uint64_t deliveries;       /* message frames received in the measured window */
    uint64_t deliveries_total; /* all of them */
    uint64_t lost, duplicated;
    uint64_t out_of_order;
    double window_s; /* measured window */
    double cpu_s;    /* this process's CPU during the load (user + system) */
    nb_hist ack;     /* send to ack */
    nb_hist recv;    /* send to receive, by members other than the sender */
    nb_hist recv2;   /* second phase (login storm), else empty */
    char error[160];
} nb_result;

void nb_result_merge(nb_result *into, const nb_result *from);

/* ---- accounts -------------------------------------------------------------------- */

typedef struct nb_user {
    int64_t id;
    char nick[40];
    char password[24];
    char token[600];    /* access token */
    int64_t token_time; /* unix seconds it was issued */
} nb_user;

/*
 * Returns n users with fresh access tokens: read from opts->users_file when
 * it holds valid ones (tokens older than 10 minutes are renewed by login),
 * registered for the rest, in parallel on `threads` threads; the file is
 * rewritten. NULL after printing why.
 */
nb_user *nb_users_get(const nb_opts *o, int n, int threads);

/* One REST call with the user's token: the HTTP status or a negative errno;
 * body receives the answer. */
int nb_api(const nb_opts *o, const nb_user *u, const char *method, const char *path,
           const char *json, nt_buf *body);

/* Creates a chat with members users[0..n) (users[0] creates it): a direct
 * chat for two with `direct` (an existing one is reused), else a group.
 * Returns the chat id and its last seq in *last_seq, or a negative errno
 * after printing why. */
int64_t nb_make_chat(const nb_opts *o, nb_user *users, int n, bool direct, int64_t *last_seq);

/* ---- many REST calls over keep-alive connections (rest.c) ------------------------- */

/* One request of a batch: method (default POST), path and JSON body ("" for none). */
typedef struct nb_rest_req {
    const char *method;
    char path[96];
    char body[320];
} nb_rest_req;

/* Fills request i of a batch (called from several threads at once). */
typedef void (*nb_rest_fill)(void *arg, int i, nb_rest_req *req);

/* Makes n calls, call i as users[i], over `threads` keep-alive connections;
 * status[i] (if not NULL) receives the HTTP status or a negative errno. A
 * 503 or a broken connection is retried a few times. Returns the number of
 * 2xx answers; prints the first failure. */
long nb_rest_batch(const nb_opts *o, const nb_user *users, int n, int threads, nb_rest_fill fill,
                   void *arg, int *status);

/* ---- scenarios outside main.c -------------------------------------------------------- */

/* The JSON line's opening fields every scenario prints. */
void nb_print_header(FILE *f, const nb_opts *o, const char *scenario);
/* The match scenario (match.c); the process exit code. */
int nb_scenario_match(const nb_opts *o);

/* ---- the load driver -------------------------------------------------------------- */

/* One chat the driver sends in: its members are conns[first..first+n). */
typedef struct nb_chat {
    int64_t chat_id; /* natter chat; for MQTT the group number */
    int first, n;
    int nsenders;     /* the first nsenders members send */
    int64_t base_seq; /* natter: the chat's last seq before the run */
} nb_chat;

typedef struct nb_load {
    const nb_opts *o;
    nb_user *users; /* one per connection */
    int nconns;
    nb_chat *chats;
    int nchats;
    double rate; /* total msgs/s this process sends */
    double warmup_s, duration_s;
    double phase2_s; /* > 0: receive latency after this many seconds of the window goes to recv2 */
    int proc_index;
    bool idle;    /* hold the connections (no sends) until ctl_fd closes */
    int ready_fd; /* one byte is written here once every connection is ready */
    int ctl_fd;   /* then: load waits for one byte here to start; idle for EOF */
} nb_load;

/* Runs one load process: connects every connection (authenticated WebSocket
 * or MQTT with its subscription), sends at the rate, drains, counts. Fills
 * *res. Returns 0, or a negative errno when the connections could not be
 * set up (res->error says why). */
int nb_load_run(const nb_load *l, nb_result *res);

/* ---- MQTT (mqtt.c) ----------------------------------------------------------------- */

typedef struct nb_mqtt nb_mqtt;

/* Starts a non-blocking connect to the broker and queues CONNECT (MQTT
 * 3.1.1, clean session, keep-alive 60 s). NULL with errno set. */
nb_mqtt *nb_mqtt_new(const char *host, int port, const char *client_id);
void nb_mqtt_free(nb_mqtt *m);
int nb_mqtt_fd(const nb_mqtt *m);
bool nb_mqtt_wants_write(const nb_mqtt *m);
/* True once the broker accepted the CONNECT (CONNACK 0). */
bool nb_mqtt_connected(const nb_mqtt *m);
/* Subscriptions acknowledged so far (SUBACK with a granted QoS). */
int nb_mqtt_subacks(const nb_mqtt *m);
/* Queue SUBSCRIBE (QoS 0), PUBLISH (QoS 0) or PINGREQ; 0 or -ENOMEM. */
int nb_mqtt_subscribe(nb_mqtt *m, const char *topic);
int nb_mqtt_publish(nb_mqtt *m, const char *topic, const void *payload, size_t len);
int nb_mqtt_ping(nb_mqtt *m);
/* Writes queued output (one send(2)); 0 or a negative errno. Completes the
 * connect when it is still in progress. */
int nb_mqtt_flush(nb_mqtt *m);
/* Called with every PUBLISH received. */
typedef void (*nb_mqtt_on_publish)(void *arg, const char *topic, size_t topic_len,
                                   const char *payload, size_t len);
/* Reads until the socket is drained, handling partial packets; calls cb for
 * each PUBLISH. 0, or a negative errno once the connection is gone. */
int nb_mqtt_on_readable(nb_mqtt *m, nb_mqtt_on_publish cb, void *arg);

#endif
