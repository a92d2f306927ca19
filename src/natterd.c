/*
 * natterd: the Natter server. Reads the settings (flags and NATTER_*
 * environment), opens the store and the bus, starts the roles it was given
 * (--roles; docs/cluster.md says what each runs) on one libuv loop thread
 * with a pool of worker threads, and on SIGTERM or SIGINT drains: stops
 * accepting, closes WebSockets with 1001, waits for commits, and exits 0.
 *
 *  - gateway: the public HTTP/WebSocket listener and everything behind it
 *    (auth, REST, the send path that stores messages, deliveries);
 *  - bot: the bot's threads (nt_bot_start); no public listener;
 *  - messages, match: accepted so a cluster can be laid out by role, but
 *    in this build they start no work of their own (docs/cluster.md);
 *  - every role: /healthz, /readyz and /metrics on --admin-listen (with
 *    the gateway's connection counts when the process runs one).
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>
#include <uv.h>

#include "bus/bus.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "net/server.h"
#include "services/bot.h"
#include "services/services.h"
#include "store/store.h"

enum {
    ROLE_GATEWAY = 1,
    ROLE_MESSAGES = 2,
    ROLE_MATCH = 4,
    ROLE_BOT = 8,
    ROLE_ALL = 15,
};

static const struct {
    const char *name;
    unsigned bit;
} role_names[] = {
    {"gateway", ROLE_GATEWAY},
    {"messages", ROLE_MESSAGES},
    {"match", ROLE_MATCH},
    {"bot", ROLE_BOT},
};

typedef struct natterd {
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    nt_gateway *gw;   /* NULL without the gateway role */
    nt_server *admin; /* NULL without --admin-listen */
    nt_ctx *ctx;
    unsigned roles;
    const char *roles_text;
    time_t started;
    bool stopping;
} natterd;

/* "all" or a comma list of role names; 0 or -1 with a reason in err. */
static int parse_roles(const char *text, unsigned *out, char *err, size_t err_len)
{
    unsigned roles = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, ",");
        bool known = false;
        if (n == 3 && strncmp(p, "all", 3) == 0) {
            roles |= ROLE_ALL;
            known = true;
        }
        for (size_t i = 0; i < sizeof role_names / sizeof role_names[0] && !known; i++) {
            if (strlen(role_names[i].name) == n && strncmp(p, role_names[i].name, n) == 0) {
                roles |= role_names[i].bit;
                known = true;
            }
        }
        if (!known) {
            snprintf(err, err_len,
                     "--roles: '%.*s' is not a role (all, gateway, messages, match, bot)",
                     (int)(n > 32 ? 32 : n), p);
            return -1;
        }
        p += n + (p[n] == ',');
    }
    if (!roles) {
        snprintf(err, err_len, "--roles: empty");
        return -1;
    }
    *out = roles;
    return 0;
}

/* HOST:PORT into host/port; -1 if it is not that. */
static int split_hostport(const char *text, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(text, ':');
    char *end;
    if (!colon || colon == text || (size_t)(colon - text) >= host_len || !colon[1]) return -1;
    long v = strtol(colon + 1, &end, 10);
    if (*end || v < 0 || v > 65535) return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    *port = (int)v;
    return 0;
}

/* ---- secrets in URLs: never in the log --------------------------------------- */

/* A secret inside a store or bus URL, as offsets into it. */
typedef struct url_secret {
    size_t off, len;
} url_secret;

#define URL_SECRETS_MAX 8

/* True if a parameter name (percent-decoded, any case) holds "password":
 * libpq takes password= and sslpassword= in a URL's query or a conninfo. */
static bool key_is_password(const char *key, size_t len)
{
    char name[64];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof name - 1; i++) {
        int ch = (unsigned char)key[i];
        if (ch == '%' && i + 2 < len && isxdigit((unsigned char)key[i + 1]) &&
            isxdigit((unsigned char)key[i + 2])) {
            char hex[3] = {key[i + 1], key[i + 2], '\0'};
            ch = (int)strtol(hex, NULL, 16);
            i += 2;
        }
        name[n++] = (char)tolower(ch);
    }
    name[n] = '\0';
    return strstr(name, "password") != NULL;
}

/*
 * Finds the secrets in a store or bus URL: the password of
 * scheme://USER:PASSWORD@HOST..., and the value of every parameter named
 * like a password (?password=, &sslpassword=, or password=... in a
 * key=value conninfo, which the store refuses but would print in its
 * error). Errs towards hiding too much: the user part ends at the last '@',
 * so a raw '@', '/' or '?' inside a password is still hidden, and with more
 * than `max` secrets the last span runs to the end. Fills at most `max`
 * spans, in increasing order; returns how many.
 */
static size_t url_secrets(const char *url, url_secret *out, size_t max)
{
    size_t n = 0;
    const char *tail = url;
    const char *authority = strstr(url, "://");
    if (authority) {
        authority += 3;
        const char *at = strrchr(authority, '@');
        tail = authority;
        if (at) {
            const char *colon = memchr(authority, ':', (size_t)(at - authority));
            if (colon && at > colon + 1 && n < max)
                out[n++] = (url_secret){(size_t)(colon + 1 - url), (size_t)(at - colon - 1)};
            tail = at + 1;
        }
    }
    /* A URL's query splits on '&' (as libpq does); a conninfo on blanks. */
    const char *seps = authority ? "&?" : " \t\r\n";
    const char *value_end = authority ? "&" : " \t\r\n";
    const char *p = tail;
    while (*p && n < max) {
        if (strchr(seps, *p)) {
            p++;
            continue;
        }
        const char *key = p;
        size_t key_len = strcspn(p, authority ? "=&?" : "= \t\r\n");
        p += key_len;
        const char *q = p + strspn(p, " \t");
        if (*q != '=') continue;
        q++;
        q += strspn(q, " \t");
        const char *value = q;
        if (!authority && *q == '\'') { /* conninfo quoting: '...' with \ escapes */
            for (q++; *q && *q != '\''; q++)
                if (*q == '\\' && q[1]) q++;
            if (*q) q++;
        } else {
            q += strcspn(q, value_end);
        }
        if (q > value && key_is_password(key, key_len))
            out[n++] = (url_secret){(size_t)(value - url), (size_t)(q - value)};
        p = q;
    }
    /* Out of room with text left: hide all of it rather than miss one. */
    if (*p && n == max) out[n - 1].len = strlen(url) - out[n - 1].off;
    return n;
}

/* Copies url into out (cap bytes, always terminated, cut if need be) with
 * each secret replaced by "***", for the log. */
static const char *url_redact(const char *url, char *out, size_t cap)
{
    url_secret secrets[URL_SECRETS_MAX];
    size_t count = url_secrets(url, secrets, URL_SECRETS_MAX);
    size_t at = 0, used = 0;
    out[0] = '\0';
    for (size_t i = 0; i <= count && used < cap; i++) {
        size_t end = i < count ? secrets[i].off : strlen(url);
        int w = snprintf(out + used, cap - used, "%.*s%s", (int)(end - at), url + at,
                         i < count ? "***" : "");
        if (w < 0) break;
        used += (size_t)w;
        if (i < count) at = secrets[i].off + secrets[i].len;
    }
    return out;
}

/* Copies text (an error that may quote url, or part of it) into out (cap
 * bytes, always terminated) with every occurrence of one of url's secrets
 * replaced by "***". */
static const char *text_redact(const char *text, const char *url, char *out, size_t cap)
{
    url_secret secrets[URL_SECRETS_MAX];
    size_t count = url_secrets(url, secrets, URL_SECRETS_MAX);
    char work[1024], secret[sizeof work];
    snprintf(out, cap, "%s", text);
    for (size_t i = 0; i < count; i++) {
        snprintf(secret, sizeof secret, "%.*s", (int)secrets[i].len, url + secrets[i].off);
        size_t used = 0;
        const char *from = out, *hit;
        work[0] = '\0';
        while (used < sizeof work && (hit = strstr(from, secret)) != NULL) {
            int w = snprintf(work + used, sizeof work - used, "%.*s***", (int)(hit - from), from);
            if (w < 0) break;
            used += (size_t)w;
            from = hit + strlen(secret);
        }
        if (used < sizeof work) snprintf(work + used, sizeof work - used, "%s", from);
        snprintf(out, cap, "%s", work);
    }
    return out;
}

static void on_drained(void *arg)
{
    natterd *d = arg;
    uv_stop(d->loop);
}

/* ---- the admin listener: /healthz, /readyz, /metrics for every role ---------- */

typedef struct admin_job {
    uv_work_t work;
    natterd *d;
    nt_conn *conn;
    bool metrics;
    bool head; /* a HEAD: the GET's Content-Length, no body */
    int status;
    nt_buf body;
} admin_job;

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* Worker thread: the answers that talk to the store and the bus. */
static void admin_work(uv_work_t *w)
{
    admin_job *job = w->data;
    natterd *d = job->d;
    bool store_ok = nt_store_ping(d->ctx->store) == 0;
    bool bus_ok = nt_bus_ping(d->ctx->bus) == 0;
    if (!job->metrics) {
        job->status = store_ok && bus_ok ? 200 : 503;
        nt_buf_appendf(&job->body, "{\"status\":\"%s\",\"store\":%s,\"bus\":%s}",
                       job->status == 200 ? "ready" : "unavailable", store_ok ? "true" : "false",
                       bus_ok ? "true" : "false");
        return;
    }
    job->status = 200;
    nt_buf *b = &job->body;
    nt_buf_appendf(b, "# HELP natter_role Roles this process runs (1 = runs it).\n"
                      "# TYPE natter_role gauge\n");
    for (size_t i = 0; i < sizeof role_names / sizeof role_names[0]; i++)
        nt_buf_appendf(b, "natter_role{role=\"%s\"} %d\n", role_names[i].name,
                       (d->roles & role_names[i].bit) ? 1 : 0);
    nt_buf_appendf(b,
                   "# TYPE natter_store_up gauge\nnatter_store_up %d\n"
                   "# TYPE natter_bus_up gauge\nnatter_bus_up %d\n"
                   "# TYPE natter_uptime_seconds gauge\nnatter_uptime_seconds %lld\n"
                   "# TYPE natter_resident_memory_bytes gauge\nnatter_resident_memory_bytes %ld\n",
                   store_ok, bus_ok, (long long)(time(NULL) - d->started), rss_bytes());
    if (bus_ok && (d->roles & ROLE_BOT)) {
        nt_buf_appendf(b, "# HELP natter_bus_queue_depth Jobs waiting or taken, not acknowledged.\n"
                          "# TYPE natter_bus_queue_depth gauge\n");
        const char *queues[] = {"bot.inbox", "pow"};
        for (size_t i = 0; i < 2; i++)
            nt_buf_appendf(b, "natter_bus_queue_depth{queue=\"%s\"} %zu\n", queues[i],
                           nt_bus_queue_depth(d->ctx->bus, queues[i]));
    }
}

static void admin_after(uv_work_t *w, int status)
{
    admin_job *job = w->data;
    if (nt_conn_is_open(job->conn)) {
        const char *type = job->metrics ? "text/plain; version=0.0.4" : "application/json";
        nt_conn_respond(job->conn, job->status ? job->status : 500, type, NULL,
                        job->head ? NULL : job->body.data, job->body.len, false);
    }
    nt_conn_unref(job->conn);
    nt_buf_free(&job->body);
    free(job);
}

static void admin_request(void *arg, nt_conn *c, nt_http_request *req)
{
    natterd *d = arg;
    /* HEAD is GET without the body: nt_conn_respond with a NULL body sends
     * the GET's Content-Length and nothing after the head. */
    bool head = req->method == NT_HTTP_HEAD;
    bool get = req->method == NT_HTTP_GET || head;
    bool health = strcmp(req->path, "/healthz") == 0;
    bool ready = strcmp(req->path, "/readyz") == 0;
    bool metrics = strcmp(req->path, "/metrics") == 0;
    nt_http_request_free(req);
    free(req);
    if (!get || !(health || ready || metrics)) {
        static const char body[] = "{\"error\":{\"code\":\"not_found\",\"message\":"
                                   "\"the admin port serves /healthz, /readyz, /metrics\"}}";
        nt_conn_respond(c, 404, "application/json", NULL, head ? NULL : body, sizeof body - 1,
                        false);
        return;
    }
    if (health) {
        char body[160];
        int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"roles\":\"%s\"}",
                         d->stopping ? "draining" : "ok", d->roles_text);
        nt_conn_respond(c, 200, "application/json", NULL, head ? NULL : body, (size_t)n, false);
        return;
    }
    admin_job *job = calloc(1, sizeof *job);
    if (!job) {
        nt_conn_respond(c, 503, "application/json", NULL, head ? NULL : "{}", 2, true);
        return;
    }
    job->work.data = job;
    job->d = d;
    job->conn = c;
    job->metrics = metrics;
    job->head = head;
    /* The gateway's counters are loop-thread integers: read here, not in
     * admin_work. */
    if (metrics && d->gw) nt_gateway_metrics_connections(d->gw, &job->body);
    nt_conn_ref(c);
    if (uv_queue_work(d->loop, &job->work, admin_work, admin_after) != 0) {
        nt_conn_unref(c);
        nt_buf_free(&job->body);
        free(job);
        nt_conn_respond(c, 503, "application/json", NULL, head ? NULL : "{}", 2, true);
    }
}

static int admin_upgrade(void *arg, nt_conn *c, const nt_http_request *req)
{
    return 404;
}

static void admin_ws_text(void *arg, nt_conn *c, char *msg, size_t len) {}

static void admin_close(void *arg, nt_conn *c) {}

static int admin_start(natterd *d, const char *listen, char *err, size_t err_len)
{
    char host[64];
    int port;
    if (split_hostport(listen, host, sizeof host, &port) != 0) {
        snprintf(err, err_len, "--admin-listen: '%s' is not HOST:PORT", listen);
        return -1;
    }
    nt_server_opts opts = {.host = host,
                           .port = port,
                           .max_connections = 64,
                           .max_output = 1 << 20,
                           .max_frame = 1024,
                           .max_body = 1024,
                           .auth_timeout_s = 10,
                           .ping_interval_s = 30};
    nt_server_callbacks cb = {.arg = d,
                              .on_request = admin_request,
                              .on_upgrade = admin_upgrade,
                              .on_ws_text = admin_ws_text,
                              .on_close = admin_close};
    d->admin = nt_server_new(d->loop, &opts, &cb);
    if (!d->admin) {
        snprintf(err, err_len, "--admin-listen: out of memory");
        return -1;
    }
    int rc = nt_server_listen(d->admin);
    if (rc != 0) {
        snprintf(err, err_len, "--admin-listen %s: %s", listen, uv_strerror(rc));
        nt_server_free(d->admin);
        d->admin = NULL;
        return -1;
    }
    return 0;
}

/* Signal handlers only set things in motion; libuv delivers them on the
 * loop thread, so this is ordinary code, not an async-signal handler. */
static void on_signal(uv_signal_t *h, int signum)
{
    natterd *d = h->data;
    if (d->stopping) {
        nt_warn("second signal: stopping now");
        uv_stop(d->loop);
        return;
    }
    d->stopping = true;
    nt_info("signal=%d draining", signum);
    if (d->admin) nt_server_drain(d->admin);
    if (d->gw)
        nt_gateway_drain(d->gw, on_drained, d);
    else
        uv_stop(d->loop);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST) return 0;
    return -errno;
}

int main(int argc, char **argv)
{
    nt_config cfg;
    char err[512] = "";
    /* URLs and errors as logged, secrets hidden (url_redact, text_redact). */
    char shown[sizeof cfg.store_url * 2], shown_err[sizeof err * 2];
    int rc = nt_config_load(&cfg, argc, argv, stdout, err, sizeof err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "natterd: %s\n", err);
        return 2;
    }
    nt_log_level = nt_log_level_parse(cfg.log_level);
    natterd d = {0};
    if (parse_roles(cfg.roles, &d.roles, err, sizeof err) != 0) {
        fprintf(stderr, "natterd: %s\n", err);
        return 2;
    }
    d.roles_text = cfg.roles;
    d.started = time(NULL);
    /* The node's name on a redis bus rides on the bus URL. */
    if (cfg.node_id[0] && strncmp(cfg.bus_url, "redis://", 8) == 0 && !strchr(cfg.bus_url, '?')) {
        size_t n = strlen(cfg.bus_url);
        if (n + strlen("?node=") + strlen(cfg.node_id) >= sizeof cfg.bus_url) {
            fprintf(stderr, "natterd: --bus and --node-id: too long together\n");
            return 2;
        }
        snprintf(cfg.bus_url + n, sizeof cfg.bus_url - n, "?node=%s", cfg.node_id);
    }
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        fprintf(stderr, "natterd: libsodium failed to start\n");
        return 1;
    }
    if ((rc = make_dir(cfg.data_dir)) != 0) {
        fprintf(stderr, "natterd: --data %s: %s\n", cfg.data_dir, strerror(-rc));
        return 1;
    }
    /* Worker threads: REST handlers and store reads. Must be set before
     * libuv starts its pool. Argon2id (register, login) has its own pool,
     * --hash-workers, which the gateway starts from cfg. */
    char workers[16];
    snprintf(workers, sizeof workers, "%lld", (long long)cfg.workers);
    setenv("UV_THREADPOOL_SIZE", workers, 1);

    d.loop = uv_default_loop();
    nt_ctx ctx = {
        .limits = {.text_max_cp = (int)cfg.max_text,
                   .bio_max_cp = 500,
                   .url_max = 1024,
                   .password_min = 8,
                   .password_max = 1024,
                   .title_max_cp = 128,
                   .group_max_members = 1000},
        .access_ttl_s = (int)cfg.access_ttl_s,
        .refresh_ttl_s = cfg.refresh_ttl_s,
        .pwhash_ops =
            cfg.argon2_fast ? crypto_pwhash_OPSLIMIT_MIN : crypto_pwhash_OPSLIMIT_INTERACTIVE,
        .pwhash_mem =
            cfg.argon2_fast ? crypto_pwhash_MEMLIMIT_MIN : crypto_pwhash_MEMLIMIT_INTERACTIVE,
    };
    if (cfg.argon2_fast)
        nt_warn("--argon2-fast: passwords are hashed at the minimum cost (tests only)");
    /* Only the gateway checks and signs tokens; other roles do not create
     * or need the key file. */
    if ((d.roles & ROLE_GATEWAY) && (rc = nt_auth_load_key(&ctx, cfg.jwt_key_file)) != 0) {
        fprintf(stderr, "natterd: signing key %s: %s\n", cfg.jwt_key_file, strerror(-rc));
        return 1;
    }
    /* The rate limits (services/api.h), checked where logins and sends
     * arrive: the gateway. --login-failures a minute per account, as many
     * at once, for 65,536 accounts before the stalest go; --send-rate per
     * user with room for two users per allowed connection (a bucket left
     * alone for burst / rate seconds is full anyway, the same as evicted). */
    if (d.roles & ROLE_GATEWAY) {
        int rc_send = 0;
        size_t send_slots = (size_t)cfg.max_connections * 2;
        if (send_slots < 4096) send_slots = 4096;
        if (send_slots > ((size_t)1 << 22)) send_slots = (size_t)1 << 22;
        ctx.login_limit = nt_rate_table_new(65536, (double)cfg.login_failures / 60.0,
                                            (double)cfg.login_failures, &rc);
        ctx.send_limit =
            nt_rate_table_new(send_slots, (double)cfg.send_rate, (double)cfg.send_burst, &rc_send);
        if (rc || rc_send) {
            fprintf(stderr, "natterd: out of memory for the rate limits\n");
            nt_rate_table_free(ctx.login_limit);
            nt_rate_table_free(ctx.send_limit);
            return 1;
        }
    }
    ctx.store = nt_store_open(cfg.store_url, err, sizeof err);
    if (!ctx.store) {
        fprintf(stderr, "natterd: store %s: %s\n", url_redact(cfg.store_url, shown, sizeof shown),
                text_redact(err, cfg.store_url, shown_err, sizeof shown_err));
        nt_rate_table_free(ctx.login_limit);
        nt_rate_table_free(ctx.send_limit);
        return 1;
    }
    ctx.bus = nt_bus_open(cfg.bus_url, d.loop, err, sizeof err);
    if (!ctx.bus) {
        fprintf(stderr, "natterd: bus %s: %s\n", url_redact(cfg.bus_url, shown, sizeof shown),
                text_redact(err, cfg.bus_url, shown_err, sizeof shown_err));
        nt_store_close(ctx.store);
        nt_rate_table_free(ctx.login_limit);
        nt_rate_table_free(ctx.send_limit);
        return 1;
    }
    d.ctx = &ctx;
    nt_bot *bot = NULL;
    if (d.roles & ROLE_GATEWAY) {
        d.gw = nt_gateway_new(d.loop, &ctx, &cfg, err, sizeof err);
        if (!d.gw) {
            fprintf(stderr, "natterd: %s\n", err);
            goto fail;
        }
        if ((rc = nt_gateway_start(d.gw)) != 0) {
            fprintf(stderr, "natterd: --listen %s:%d: %s\n", cfg.listen_host, cfg.listen_port,
                    uv_strerror(rc));
            goto fail;
        }
    }
    if (cfg.admin_listen[0] && admin_start(&d, cfg.admin_listen, err, sizeof err) != 0) {
        fprintf(stderr, "natterd: %s\n", err);
        goto fail;
    }
    if (d.roles & ROLE_BOT) {
        nt_bot_opts bot_opts = {.pow_bits = (int)cfg.pow_bits,
                                .pow_workers = (int)cfg.pow_workers,
                                .pow_max_pending = (int)cfg.pow_max_pending,
                                .pow_visibility_ms = (int)cfg.pow_visibility_ms,
                                .rpc_timeout_ms = (int)cfg.rpc_timeout_ms,
                                .lobby_interval_s = (int)cfg.lobby_interval_s};
        bot = nt_bot_start(&ctx, &bot_opts, err, sizeof err);
        if (!bot) {
            fprintf(stderr, "natterd: %s\n", err);
            goto fail;
        }
        /* Set before the loop runs: no handler can be reading these yet. */
        ctx.bot = bot;
        ctx.message_hook = nt_bot_message_hook;
    } else if (d.roles & ROLE_GATEWAY) {
        /* The bot runs in other processes: hand them its chats' messages. */
        if (nt_bot_relay_init(&ctx) == 0) {
            ctx.message_hook = nt_bot_relay_hook;
        } else {
            nt_warn("no bot user in the store: messages to the bot are not relayed");
        }
    }
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    /* Neither URL's password goes to the log. */
    char shown_bus[sizeof cfg.bus_url * 2];
    url_redact(cfg.store_url, shown, sizeof shown);
    url_redact(cfg.bus_url, shown_bus, sizeof shown_bus);
    if (d.gw)
        nt_info("natterd listening on http://%s:%d roles=%s store=%s bus=%s", cfg.listen_host,
                cfg.listen_port, cfg.roles, shown, shown_bus);
    else
        nt_info("natterd running roles=%s (no public listener) store=%s bus=%s", cfg.roles, shown,
                shown_bus);
    if (d.admin) nt_info("admin endpoints on http://%s", cfg.admin_listen);
    if ((d.roles & (ROLE_MESSAGES | ROLE_MATCH)) && !(d.roles & ROLE_GATEWAY))
        nt_info("roles messages/match start no workers in this build: the gateway's send "
                "path writes messages itself (docs/cluster.md)");

    uv_run(d.loop, UV_RUN_DEFAULT);

    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    /* The admin server's /metrics reads the gateway (d.gw) while the loop
     * runs, as it does inside nt_gateway_free: forget it first. */
    nt_gateway *gw = d.gw;
    d.gw = NULL;
    nt_gateway_free(gw);
    nt_server_free(d.admin);
    ctx.message_hook = NULL;
    nt_bot_stop(bot); /* its workers still post: before the store closes */
    /* The store finishes every queued write before it closes: nothing that
     * was acknowledged is lost, and nothing queued is dropped. */
    nt_store_close(ctx.store);
    /* Run the loop until libuv's pool and handles are quiet. */
    uv_run(d.loop, UV_RUN_DEFAULT);
    nt_bus_close(ctx.bus);
    uv_run(d.loop, UV_RUN_NOWAIT);
    uv_loop_close(d.loop);
    nt_rate_table_free(ctx.login_limit);
    nt_rate_table_free(ctx.send_limit);
    nt_info("natterd stopped");
    return 0;

fail:
    nt_server_free(d.admin);
    nt_gateway_free(d.gw);
    nt_bus_close(ctx.bus);
    nt_store_close(ctx.store);
    nt_rate_table_free(ctx.login_limit);
    nt_rate_table_free(ctx.send_limit);
    return 1;
}
