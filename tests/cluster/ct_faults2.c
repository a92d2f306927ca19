/*
 * More cluster faults over real processes (issue 6), beside ct_faults.c:
 * redis-server, PostgreSQL, three natterd gateway nodes and nginx from
 * tests/cluster/cluster.h, plus bot-only processes (--roles bot, no public
 * port, /healthz on --admin-listen) that this file starts and stops by pid.
 *
 *  1. PostgreSQL stopped: sends fail with `unavailable` (WebSocket error
 *     frame, REST 503) while a second client keeps sending through the
 *     stop and the start; afterwards the history holds exactly the acked
 *     messages with gapless seqs, and sending works again on the same
 *     processes and sockets.
 *  2. A `pow` worker SIGKILLed mid-job (two bot processes, one worker
 *     each, --pow-bits 28 so a job takes seconds, --pow-visibility-ms 4000):
 *     the process holding the job (the consumer in XPENDING) dies, the
 *     other takes the job over and the answer arrives once, with a proof
 *     that checks out (SHA-256 recomputed here).
 *  3. The lobby cron with three bot processes (--lobby-interval 1) posts
 *     once per interval, not three times; after the leader (the token in
 *     the lock key) is SIGKILLed another bot posts within the lock TTL
 *     (3 intervals) plus one interval, and then once per interval again.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/json.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"
#define MAX_BOTS 4
#define POW_BITS 28
#define POW_VISIBILITY_MS 4000
#define LOBBY_TTL_MS 3000 /* bot.c: three intervals of 1 s */
#define HIST_CAP 4096

static nct_cluster cluster;
static nth_user alice, bob;
static int64_t chat_id;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- small process helpers ------------------------------------------------------- */

/* Runs a shell command line (constant text and numbers only) and keeps its
 * first output line in out. 0 if it exited 0. */
static int run_line(const char *cmd, char *out, size_t cap)
{
    if (out && cap) out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    bool first = true;
    while (fgets(line, sizeof line, p)) {
        if (first && out && cap) {
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(out, cap, "%s", line);
        }
        first = false;
    }
    int status = pclose(p);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* redis-cli against the cluster's Redis; the whole output in out. */
static int redis_cmd(nct_cluster *c, const char *args, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d %s 2>/dev/null", c->redis_port, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    if (cap) out[0] = '\0';
    while (n + 1 < cap) {
        size_t got = fread(out + n, 1, cap - 1 - n, p);
        if (got == 0) break;
        n += got;
    }
    if (cap) out[n] = '\0';
    char sink[256];
    while (fread(sink, 1, sizeof sink, p) > 0)
        ;
    int status = pclose(p);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static long long redis_int(nct_cluster *c, const char *args)
{
    char out[64];
    if (redis_cmd(c, args, out, sizeof out) != 0) return -1;
    return strtoll(out, NULL, 10);
}

/* ---- PostgreSQL stop and start ------------------------------------------------------ */

/* The cluster's PostgreSQL (cluster.c keeps its pg_test_server private):
 * its port from the URL, its data folder from the server itself. */
static struct {
    int port;
    char data[512];
    char dir[512]; /* the folder above data: socket, log */
    bool stopped;
} pg;

static int pg_run(const char *action_args)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s%s/pg_ctl -D %s %s >>%s/log 2>&1",
             geteuid() == 0 ? "/usr/sbin/runuser -u postgres -- " : "", PG_BIN, pg.data,
             action_args, pg.dir);
    return run_line(cmd, NULL, 0);
}

static int pg_find(nct_cluster *c)
{
    const char *p = strstr(c->pg_url, "@127.0.0.1:");
    if (!p) return -1;
    pg.port = atoi(p + strlen("@127.0.0.1:"));
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "%s/psql -X -A -t -h 127.0.0.1 -p %d -U postgres -d natter "
             "-c 'SHOW data_directory' 2>/dev/null",
             PG_BIN, pg.port);
    if (run_line(cmd, pg.data, sizeof pg.data) != 0 || pg.data[0] != '/') return -1;
    snprintf(pg.dir, sizeof pg.dir, "%s", pg.data);
    char *slash = strrchr(pg.dir, '/');
    if (!slash || slash == pg.dir) return -1;
    *slash = '\0';
    return 0;
}

static int pg_stop(void)
{
    int rc = pg_run("-m fast -w -t 30 stop");
    if (rc == 0) pg.stopped = true;
    return rc;
}

/* The same options as tests/unit/pg_test_server.h starts it with. */
static int pg_start(void)
{
    char args[900];
    snprintf(args, sizeof args,
             "-w -t 30 -o \"-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off "
             "-c max_connections=200\" start",
             pg.port, pg.dir);
    int rc = pg_run(args);
    if (rc == 0) pg.stopped = false;
    return rc;
}

/* ---- bot-only processes ------------------------------------------------------------ */

typedef struct bot_proc {
    char name[16];
    pid_t pid;       /* 0 when not running */
    nt_server admin; /* host and admin port, for nth_api */
    char log[700];
} bot_proc;

static bot_proc bots[MAX_BOTS];

/* A loopback port nobody listens on right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* SIGTERM and wait (10 s), else SIGKILL. */
static void bot_stop(bot_proc *b)
{
    if (b->pid <= 0) return;
    kill(b->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
            b->pid = 0;
            return;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "%s (pid %d) ignored SIGTERM for 10 s: SIGKILL\n", b->name, (int)b->pid);
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
}

static void bot_kill(bot_proc *b)
{
    if (b->pid <= 0) return;
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
}

static void bots_atexit(void)
{
    for (int i = 0; i < MAX_BOTS; i++)
        bot_kill(&bots[i]);
    /* Leave PostgreSQL running for nct_stop (pg_ctl stop) if a case died
     * while it was down: nothing to do, pgt_destroy removes the folder. */
}

/* Starts `natterd --roles bot` named `name` with extra arguments (split on
 * spaces); waits for its admin /healthz. 0 or -1 (printed). */
static int bot_start(nct_cluster *c, bot_proc *b, const char *name, const char *extra)
{
    const char *natterd = getenv("NATTERD");
    if (!natterd || !*natterd) {
        fprintf(stderr, "NATTERD is not set\n");
        return -1;
    }
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->admin.host, sizeof b->admin.host, "127.0.0.1");
    b->admin.port = free_port();
    snprintf(b->log, sizeof b->log, "%s/%s.log", c->dir, name);
    char data[700], admin[64], bus[64], args[512];
    snprintf(data, sizeof data, "%s/%s.data", c->dir, name);
    mkdir(data, 0700);
    snprintf(admin, sizeof admin, "127.0.0.1:%d", b->admin.port);
    snprintf(bus, sizeof bus, "redis://127.0.0.1:%d", c->redis_port);
    snprintf(args, sizeof args, "%s", extra ? extra : "");

    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)natterd;
    argv[argc++] = "--roles";
    argv[argc++] = "bot";
    argv[argc++] = "--node-id";
    argv[argc++] = b->name;
    argv[argc++] = "--admin-listen";
    argv[argc++] = admin;
    argv[argc++] = "--bus";
    argv[argc++] = bus;
    argv[argc++] = "--store";
    argv[argc++] = c->pg_url;
    argv[argc++] = "--data";
    argv[argc++] = data;
    char *save = NULL;
    for (char *tok = strtok_r(args, " ", &save); tok && argc < 46; tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;

    int log_fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        execv(natterd, argv);
        _exit(127);
    }
    close(log_fd);
    b->pid = pid;
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            b->pid = 0;
            break;
        }
        if (nth_api(&b->admin, "GET", "/healthz", NULL, NULL, NULL) == 200) return 0;
        sleep_ms(20);
    }
    fprintf(stderr, "%s did not come up (log %s)\n", name, b->log);
    bot_kill(b);
    return -1;
}

/* ---- REST helpers ----------------------------------------------------------------- */

typedef struct hist_msg {
    int64_t seq;
    int64_t sender_id;
    int64_t ts;
    char text[128];
    char client_id[64];
    bool has_pow;
    int64_t pow_nonce;
    int64_t pow_bits;
    char pow_hash[72];
} hist_msg;

/* Every message of chat after after_seq (paging by 200), in order, into
 * out (room for cap). The count, or -1. */
static int history(const nt_server *node, const nth_user *u, int64_t chat, int64_t after_seq,
                   hist_msg *out, int cap)
{
    static nt_json_tok toks[200 * 40 + 16];
    int n = 0;
    for (;;) {
        char path[160];
        snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld&limit=200",
                 (long long)chat, (long long)after_seq);
        nt_buf body = NT_BUF_INIT;
        int status = nth_api(node, "GET", path, u->s.access_token, NULL, &body);
        nt_json doc;
        if (status != 200 || !body.data ||
            nt_json_parse(&doc, body.data, body.len, toks, (int)(sizeof toks / sizeof toks[0])) !=
                0) {
            fprintf(stderr, "history: HTTP %d\n", status);
            nt_buf_free(&body);
            return -1;
        }
        int page = 0;
        int arr = nt_json_get(&doc, 0, "messages");
        for (int m = arr >= 0 ? nt_json_first(&doc, arr) : -1; m >= 0; m = nt_json_next(&doc, m)) {
            page++;
            if (n >= cap) continue;
            hist_msg *h = &out[n++];
            memset(h, 0, sizeof *h);
            nt_json_int(&doc, nt_json_get(&doc, m, "seq"), &h->seq);
            nt_json_int(&doc, nt_json_get(&doc, m, "sender_id"), &h->sender_id);
            nt_json_int(&doc, nt_json_get(&doc, m, "ts"), &h->ts);
            nt_json_str(&doc, nt_json_get(&doc, m, "text"), h->text, sizeof h->text);
            nt_json_str(&doc, nt_json_get(&doc, m, "client_id"), h->client_id, sizeof h->client_id);
            int pow = nt_json_get(&doc, m, "pow");
            if (pow >= 0 && nt_json_type_of(&doc, pow) == NT_JSON_OBJECT) {
                h->has_pow = true;
                nt_json_int(&doc, nt_json_get(&doc, pow, "nonce"), &h->pow_nonce);
                nt_json_int(&doc, nt_json_get(&doc, pow, "bits"), &h->pow_bits);
                nt_json_str(&doc, nt_json_get(&doc, pow, "hash"), h->pow_hash, sizeof h->pow_hash);
            }
            after_seq = h->seq;
        }
        nt_buf_free(&body);
        if (page < 200) return n;
    }
}

static bool all_alive(nct_cluster *c)
{
    for (int i = 0; i < c->ngateways; i++)
        if (!(c->gateways[i]->pid > 0 && waitpid(c->gateways[i]->pid, NULL, WNOHANG) == 0))
            return false;
    return true;
}

static bool all_ready(nct_cluster *c, int want_status)
{
    for (int i = 0; i < c->ngateways; i++)
        if (nct_readyz(c->gateways[i]) != want_status) return false;
    return true;
}

/* ---- 1. PostgreSQL stopped ------------------------------------------------------------ */

#define SENDER_MAX 2000

/* A client that keeps sending (one at a time, waiting for each answer)
 * while PostgreSQL stops and starts again. */
static struct {
    ntc_conn *conn;
    atomic_int stop;
    int sent, acked, refused, silent, other;
    int64_t acked_seqs[SENDER_MAX];
    char last_other[48];
} sender;

static void *sender_main(void *arg)
{
    while (!atomic_load(&sender.stop) && sender.sent < SENDER_MAX) {
        char id[32], client_id[48], text[64];
        int k = sender.sent++;
        snprintf(id, sizeof id, "s%d", k);
        snprintf(client_id, sizeof client_id, "ct2-s-%d-%d", (int)getpid(), k);
        snprintf(text, sizeof text, "through the outage %d", k);
        if (nth_send(sender.conn, id, chat_id, text, client_id) != 0) {
            sender.other++;
            break;
        }
        int64_t seq = -1;
        char code[32] = "";
        int rc = nth_wait_ack(sender.conn, id, NTH_WAIT_MS, &seq, NULL, code, sizeof code);
        if (rc == 1) {
            sender.acked_seqs[sender.acked++] = seq;
        } else if (rc == 2 && strcmp(code, "unavailable") == 0) {
            sender.refused++;
        } else if (rc == 0) {
            sender.silent++;
        } else {
            sender.other++;
            snprintf(sender.last_other, sizeof sender.last_other, "%d/%s", rc, code);
            if (rc < 0) break;
        }
        sleep_ms(15);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void case_pg_stopped(nct_cluster *c)
{
    REQUIRE(pg_find(c) == 0);
    REQUIRE(nth_register(nct_front(c), "alice", &alice) == 0);
    REQUIRE(nth_register(nct_front(c), "bob", &bob) == 0);
    chat_id = nth_direct_chat(nct_front(c), &alice, &bob);
    REQUIRE(chat_id > 0);

    ntc_conn *a = nth_connect(c->gateways[0], &alice);
    ntc_conn *b = nth_connect(c->gateways[1], &bob);
    sender.conn = nth_connect(c->gateways[2], &alice);
    REQUIRE(a && b && sender.conn);
    int64_t base = -1;
    REQUIRE(nth_send(a, "before", chat_id, "before the outage", "ct2-before") == 0);
    REQUIRE(nth_wait_ack(a, "before", NTH_WAIT_MS, &base, NULL, NULL, 0) == 1);

    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, sender_main, NULL) == 0);
    sleep_ms(500);

    CHECK_EQ_INT(pg_stop(), 0);
    bool not_ready = false;
    for (int i = 0; i < 50 && !(not_ready = all_ready(c, 503)); i++)
        sleep_ms(100);
    CHECK(not_ready);

    /* While it is down: a plain `unavailable`, on the WebSocket and REST. */
    CHECK_EQ_INT(nth_send(a, "out", chat_id, "during the outage", "ct2-outage-ws"), 0);
    char code[32] = "";
    uint64_t t0 = nt_mono_ns();
    CHECK_EQ_INT(nth_wait_ack(a, "out", NTH_WAIT_MS, NULL, NULL, code, sizeof code), 2);
    CHECK_STR_EQ(code, "unavailable");
    printf("ws send refused in %.0f ms\n", (double)(nt_mono_ns() - t0) / 1e6);
    char path[96];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    nt_buf resp = NT_BUF_INIT;
    int rest =
        nth_api(c->gateways[1], "POST", path, alice.s.access_token,
                "{\"text\":\"posted during the outage\",\"client_id\":\"ct2-outage-rest\"}", &resp);
    /* A valid token during an outage is `unavailable`, never `unauthorized`:
     * the session check could not be made. */
    CHECK_EQ_INT(rest, 503);
    CHECK(resp.data && strstr(resp.data, "\"unavailable\""));
    nt_buf_free(&resp);
    sleep_ms(1000);

    CHECK_EQ_INT(pg_start(), 0);
    bool ready = false;
    for (int i = 0; i < 100 && !(ready = all_ready(c, 200)); i++)
        sleep_ms(100);
    CHECK(ready);
    /* The second client keeps going a little after the return. */
    sleep_ms(1500);
    atomic_store(&sender.stop, 1);
    pthread_join(th, NULL);
    printf("sender: %d sent, %d acked, %d unavailable, %d unanswered, %d other (%s)\n", sender.sent,
           sender.acked, sender.refused, sender.silent, sender.other, sender.last_other);
    CHECK(sender.refused > 0);      /* it did run into the outage */
    CHECK(sender.acked > 0);        /* and got through before or after it */
    CHECK_EQ_INT(sender.silent, 0); /* never a silent drop */
    CHECK_EQ_INT(sender.other, 0);

    /* Sending works again, on the same processes and sockets, and reaches
     * the other node. */
    int64_t after = -1;
    CHECK_EQ_INT(nth_send(a, "after", chat_id, "after the outage", "ct2-after"), 0);
    CHECK_EQ_INT(nth_wait_ack(a, "after", NTH_WAIT_MS, &after, NULL, NULL, 0), 1);
    char text[64] = "";
    CHECK_EQ_INT(nth_wait_message(b, chat_id, after, NTH_WAIT_MS, NULL, text, sizeof text), 1);
    CHECK_STR_EQ(text, "after the outage");
    CHECK_EQ_INT(nth_api(c->gateways[2], "POST", path, alice.s.access_token,
                         "{\"text\":\"posted after the outage\"}", NULL),
                 201);
    CHECK(all_alive(c));

    /* Nothing half-written: after `base` the history is exactly the acked
     * messages (the sender's, "after" and the REST post), seqs gapless. */
    static hist_msg hist[HIST_CAP];
    static int64_t want[SENDER_MAX + 4];
    int nwant = 0;
    for (int i = 0; i < sender.acked; i++)
        want[nwant++] = sender.acked_seqs[i];
    want[nwant++] = after;
    qsort(want, (size_t)nwant, sizeof want[0], cmp_i64);
    int n = history(c->gateways[0], &alice, chat_id, base, hist, HIST_CAP);
    CHECK_EQ_INT(n, nwant + 1); /* + the REST post */
    int gapless = 0, matching = 0, refused_stored = 0;
    for (int i = 0; i < n && i < HIST_CAP; i++) {
        gapless += hist[i].seq == base + 1 + i;
        if (i < nwant && hist[i].seq == want[i]) matching++;
        if (strstr(hist[i].client_id, "outage")) refused_stored++;
    }
    CHECK_EQ_INT(gapless, n);
    CHECK_EQ_INT(matching, nwant);
    CHECK_EQ_INT(refused_stored, 0);
    ntc_conn_free(a);
    ntc_conn_free(b);
    ntc_conn_free(sender.conn);
    sender.conn = NULL;
}

/* ---- 2. a pow worker killed mid-job ------------------------------------------------------- */

static int64_t bot_user_id(nct_cluster *c)
{
    nt_buf body = NT_BUF_INIT;
    int64_t id = -1;
    nt_json_tok toks[64];
    nt_json doc;
    if (nth_api(nct_front(c), "GET", "/api/v1/users/by-nickname/bot", alice.s.access_token, NULL,
                &body) == 200 &&
        body.data && nt_json_parse(&doc, body.data, body.len, toks, 64) == 0)
        nt_json_int(&doc, nt_json_get(&doc, 0, "id"), &id);
    nt_buf_free(&body);
    return id;
}

/* Which bot holds the one pending "pow" job (the consumer name is
 * "<node>-<token>"), or NULL. */
static bot_proc *pow_holder(nct_cluster *c, int nbots)
{
    char out[1024];
    if (redis_cmd(c, "XPENDING natter:q:pow workers - + 10", out, sizeof out) != 0) return NULL;
    /* One entry: id, consumer, idle ms, deliveries, a line each. */
    char *save = NULL;
    char *id = strtok_r(out, "\n", &save);
    char *consumer = id ? strtok_r(NULL, "\n", &save) : NULL;
    if (!consumer || strtok_r(NULL, "\n", &save) == NULL) return NULL;
    for (int i = 0; i < nbots; i++) {
        size_t len = strlen(bots[i].name);
        if (strncmp(consumer, bots[i].name, len) == 0 && consumer[len] == '-') return &bots[i];
    }
    return NULL;
}

static bool proof_valid(const char *prefix, size_t len, int64_t nonce, int bits,
                        const char *hash_hex)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%.*s%lld", (int)len, prefix, (long long)nonce);
    if (n <= 0 || (size_t)n >= sizeof buf) return false;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, (size_t)n, digest);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (strcmp(hex, hash_hex) != 0) {
        fprintf(stderr, "proof: hash %s, recomputed %s\n", hash_hex, hex);
        return false;
    }
    for (int i = 0; i < bits; i++)
        if (digest[i / 8] & (0x80 >> (i % 8))) return false;
    return true;
}

static void case_pow_worker_killed(nct_cluster *c)
{
    char extra[256];
    snprintf(extra, sizeof extra,
             "--pow-bits %d --pow-workers 1 --pow-visibility-ms %d --lobby-interval 0 "
             "--pow-max-pending 20",
             POW_BITS, POW_VISIBILITY_MS);
    REQUIRE(bot_start(c, &bots[0], "powa", extra) == 0);
    REQUIRE(bot_start(c, &bots[1], "powb", extra) == 0);

    nth_user botu;
    memset(&botu, 0, sizeof botu);
    botu.s.user_id = bot_user_id(c);
    REQUIRE(botu.s.user_id > 0);
    int64_t chat = nth_direct_chat(nct_front(c), &alice, &botu);
    REQUIRE(chat > 0);
    ntc_conn *a = nth_connect(nct_front(c), &alice);
    REQUIRE(a);

    /* A job may end before we can kill its worker (the search time is
     * random): then try again with another text and a fresh bot. */
    bool killed_mid_job = false;
    for (int attempt = 1; attempt <= 4 && !killed_mid_job; attempt++) {
        char text[80], prefix[64], id[16];
        snprintf(prefix, sizeof prefix, "killed worker %d-%d ", (int)getpid(), attempt);
        snprintf(text, sizeof text, "%s!pow", prefix);
        snprintf(id, sizeof id, "pow%d", attempt);
        int64_t seq = -1;
        REQUIRE(nth_send(a, id, chat, text, NULL) == 0);
        REQUIRE(nth_wait_ack(a, id, NTH_WAIT_MS, &seq, NULL, NULL, 0) == 1);

        bot_proc *holder = NULL;
        for (int i = 0; i < 100 && !(holder = pow_holder(c, 2)); i++)
            sleep_ms(100);
        REQUIRE(holder);
        sleep_ms(300);
        /* Still pending with the same worker, no answer yet: kill it. */
        int64_t early = -1;
        if (pow_holder(c, 2) != holder ||
            nth_wait_message(a, chat, seq + 1, 1, &early, NULL, 0) == 1) {
            printf("attempt %d: the job ended within 300 ms; again\n", attempt);
            continue;
        }
        bot_proc *other = holder == &bots[0] ? &bots[1] : &bots[0];
        pid_t victim = holder->pid;
        uint64_t t_kill = nt_mono_ns();
        bot_kill(holder);
        killed_mid_job = true;
        printf("attempt %d: SIGKILLed %s (pid %d) holding the job; %s must finish it\n", attempt,
               holder->name, (int)victim, other->name);

        /* The other worker takes it after the visibility timeout and
         * answers; bounded by the timeout plus a long search. */
        char got[128] = "";
        int64_t answer = -1;
        CHECK_EQ_INT(nth_wait_message(a, chat, seq + 1, 100000, &answer, got, sizeof got), 1);
        printf("answered %.1f s after the kill\n", (double)(nt_mono_ns() - t_kill) / 1e9);

        /* Exactly once: nothing more comes, even after another visibility
         * timeout, and the queue is empty. */
        sleep_ms(POW_VISIBILITY_MS + 1500);
        CHECK_EQ_INT(redis_int(c, "XLEN natter:q:pow"), 0);
        hist_msg hist[8];
        int n = history(nct_front(c), &alice, chat, seq, hist, 8);
        CHECK_EQ_INT(n, 1);
        if (n >= 1) {
            char reversed[64];
            size_t len = strlen(prefix);
            for (size_t i = 0; i < len; i++)
                reversed[i] = prefix[len - 1 - i];
            reversed[len] = '\0';
            CHECK_EQ_INT(hist[0].sender_id, botu.s.user_id);
            CHECK_STR_EQ(hist[0].text, reversed);
            CHECK(hist[0].has_pow);
            CHECK_EQ_INT(hist[0].pow_bits, POW_BITS);
            CHECK(proof_valid(prefix, len, hist[0].pow_nonce, POW_BITS, hist[0].pow_hash));
        }
        /* The survivor did it, not a ghost: it still runs. */
        CHECK(other->pid > 0 && waitpid(other->pid, NULL, WNOHANG) == 0);
    }
    CHECK(killed_mid_job);
    ntc_conn_free(a);
    for (int i = 0; i < MAX_BOTS; i++)
        bot_stop(&bots[i]);
}

/* ---- 3. the lobby cron ----------------------------------------------------------------- */

static int64_t lobby_id(nct_cluster *c, int64_t *last_seq)
{
    nt_buf body = NT_BUF_INIT;
    static nt_json_tok toks[4096];
    nt_json doc;
    int64_t id = -1;
    if (nth_api(nct_front(c), "GET", "/api/v1/chats?limit=200", alice.s.access_token, NULL,
                &body) == 200 &&
        body.data && nt_json_parse(&doc, body.data, body.len, toks, 4096) == 0) {
        int arr = nt_json_get(&doc, 0, "chats");
        for (int ch = arr >= 0 ? nt_json_first(&doc, arr) : -1; ch >= 0;
             ch = nt_json_next(&doc, ch)) {
            if (nt_json_str_eq(&doc, nt_json_get(&doc, ch, "title"), "lobby")) {
                nt_json_int(&doc, nt_json_get(&doc, ch, "id"), &id);
                nt_json_int(&doc, nt_json_get(&doc, ch, "last_seq"), last_seq);
                break;
            }
        }
    }
    nt_buf_free(&body);
    return id;
}

/* The bots' "Hello world!" posts in the lobby after seq `after`, their ts
 * into ts (room for cap). The count, or -1. */
static int lobby_posts(nct_cluster *c, int64_t lobby, int64_t bot_id, int64_t after, int64_t *ts,
                       int cap)
{
    static hist_msg hist[HIST_CAP];
    int n = history(nct_front(c), &alice, lobby, after, hist, HIST_CAP);
    if (n < 0) return -1;
    int k = 0;
    for (int i = 0; i < n && i < HIST_CAP; i++)
        if (hist[i].sender_id == bot_id && strcmp(hist[i].text, "Hello world!") == 0 && k < cap)
            ts[k++] = hist[i].ts;
    return k;
}

/* Posts between from_ms and to_ms (wall clock, ms) are one per interval:
 * checks the count and that no two came together. */
static void check_once_per_interval(const int64_t *ts, int n, int64_t from_ms, int64_t to_ms)
{
    int in = 0, close_pairs = 0;
    int64_t prev = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i] < from_ms || ts[i] > to_ms) continue;
        if (in > 0 && ts[i] - prev < 500) close_pairs++;
        prev = ts[i];
        in++;
    }
    int seconds = (int)((to_ms - from_ms) / 1000);
    printf("lobby: %d posts in %d s\n", in, seconds);
    CHECK(in >= seconds - 2);
    CHECK(in <= seconds + 1);
    CHECK_EQ_INT(close_pairs, 0);
}

/* The inode of the TCP socket bound to 127.0.0.1:port, or 0. */
static unsigned long socket_inode(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f) return 0;
    char line[512], want[32];
    snprintf(want, sizeof want, "0100007F:%04X", port);
    unsigned long inode = 0;
    while (!inode && fgets(line, sizeof line, f)) {
        char local[64];
        unsigned long ino;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, " %*s %63s %*s %*s %*s %*s %*s %*s %*s %lu", local, &ino) == 2 &&
            strcmp(local, want) == 0)
            inode = ino;
    }
    fclose(f);
    return inode;
}

static bool pid_has_socket(pid_t pid, unsigned long inode)
{
    char dir[64], want[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    for (int fd = 0; fd < 1024; fd++) {
        char path[96], target[96];
        snprintf(path, sizeof path, "%s/%d", dir, fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strcmp(target, want) == 0) return true;
    }
    return false;
}

/*
 * The bot holding the lobby lock. The lock's value is the holder's bus
 * token, which names no process, so: watch Redis (MONITOR) for the renewal
 * that carries that token (every bot tries the lock each interval with its
 * own), take the client's port from it, and find the process that owns
 * the socket on that port.
 */
static bot_proc *lobby_leader(nct_cluster *c, int nbots, bool verbose)
{
    char token[128];
    if (redis_cmd(c, "GET natter:leader:lobby.cron", token, sizeof token) != 0) return NULL;
    token[strcspn(token, "\r\n")] = '\0';
    if (!token[0]) {
        if (verbose) fprintf(stderr, "lobby: nobody holds natter:leader:lobby.cron\n");
        return NULL;
    }
    char cmd[128], needle[200], line[1024];
    snprintf(cmd, sizeof cmd, "timeout 2.5 redis-cli -p %d MONITOR 2>/dev/null", c->redis_port);
    snprintf(needle, sizeof needle, "\"natter:leader:lobby.cron\" \"%s\"", token);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    int port = 0;
    while (fgets(line, sizeof line, p)) {
        /* 1700000000.123456 [0 127.0.0.1:54321] "EVALSHA" "..." "1" "natter:leader:..." */
        const char *addr = strstr(line, " 127.0.0.1:");
        if (!port && addr && strstr(line, needle)) port = atoi(addr + strlen(" 127.0.0.1:"));
    }
    pclose(p);
    unsigned long inode = port > 0 ? socket_inode(port) : 0;
    for (int i = 0; inode && i < nbots; i++)
        if (bots[i].pid > 0 && pid_has_socket(bots[i].pid, inode)) return &bots[i];
    if (verbose)
        fprintf(stderr, "lobby: token %s, client port %d, inode %lu: no live bot owns it\n", token,
                port, inode);
    return NULL;
}

static void case_lobby_leader(nct_cluster *c)
{
    int64_t base = 0;
    int64_t lobby = lobby_id(c, &base);
    REQUIRE(lobby > 0);
    int64_t bot_id = bot_user_id(c);
    REQUIRE(bot_id > 0);
    const char *names[3] = {"lobbya", "lobbyb", "lobbyc"};
    for (int i = 0; i < 3; i++)
        REQUIRE(bot_start(c, &bots[i], names[i], "--lobby-interval 1 --pow-workers 1") == 0);

    /* Three crons, one poster: about one post a second. */
    int64_t start = nt_now_ms();
    sleep_ms(8000);
    int64_t end = nt_now_ms();
    static int64_t ts[HIST_CAP];
    int n = lobby_posts(c, lobby, bot_id, base, ts, HIST_CAP);
    REQUIRE(n >= 0);
    check_once_per_interval(ts, n, start + 1000, end);

    /* Kill the leader; another takes over once the lock expires. */
    bot_proc *leader = NULL;
    for (int i = 0; i < 6 && !(leader = lobby_leader(c, 3, i == 5)); i++)
        sleep_ms(100);
    REQUIRE(leader);
    printf("lobby: the leader is %s (pid %d): SIGKILL\n", leader->name, (int)leader->pid);
    bot_kill(leader);
    int64_t killed = nt_now_ms();
    int64_t first_after = 0;
    while (nt_now_ms() - killed < LOBBY_TTL_MS + 1000 + 5000 && !first_after) {
        sleep_ms(200);
        n = lobby_posts(c, lobby, bot_id, base, ts, HIST_CAP);
        for (int i = 0; i < n; i++)
            if (ts[i] > killed + 100) {
                first_after = ts[i];
                break;
            }
    }
    REQUIRE(first_after > 0);
    printf("lobby: next post %lld ms after the kill\n", (long long)(first_after - killed));
    /* The lock's TTL plus one interval, plus a little for the store. */
    CHECK(first_after - killed <= LOBBY_TTL_MS + 1000 + 1000);
    bot_proc *next = NULL;
    for (int i = 0; i < 6 && !(next = lobby_leader(c, 3, i == 5)); i++)
        sleep_ms(100);
    CHECK(next && next != leader);

    /* And once per interval again with the two that are left. */
    sleep_ms(6000);
    int64_t end2 = nt_now_ms();
    n = lobby_posts(c, lobby, bot_id, base, ts, HIST_CAP);
    REQUIRE(n >= 0);
    check_once_per_interval(ts, n, first_after + 1, end2);
    for (int i = 0; i < MAX_BOTS; i++)
        bot_stop(&bots[i]);
}

int main(void)
{
    alarm(280);
    int rc = nct_start(&cluster, 3);
    if (rc == NCT_SKIP) return 77;
    if (rc != 0) {
        nct_stop(&cluster, false);
        return 1;
    }
    /* After nct_start's hook, so it runs first: bots before their Redis
     * and PostgreSQL. */
    atexit(bots_atexit);
    NTH_CASE("PostgreSQL stopped: sends unavailable, nothing half-written, then sending works",
             case_pg_stopped, &cluster);
    if (pg.stopped && pg_start() != 0) fprintf(stderr, "PostgreSQL did not start again\n");
    NTH_CASE("a pow worker SIGKILLed mid-job: the other finishes it, once", case_pow_worker_killed,
             &cluster);
    NTH_CASE("the lobby cron: once per interval with three bots, again after the leader dies",
             case_lobby_leader, &cluster);
    for (int i = 0; i < MAX_BOTS; i++)
        bot_stop(&bots[i]);
    nct_stop(&cluster, check_failures == 0);
    return check_exit();
}
