/* The settings table and its loader: see config.h. */
#include "common/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* SET_HOSTPORT fills listen_host and listen_port; SET_ADDR keeps the text
 * of an optional HOST:PORT ("" = off) after the same check. */
typedef enum { SET_STRING, SET_INT, SET_BOOL, SET_HOSTPORT, SET_ADDR, SET_LEVEL } setting_kind;

typedef struct setting {
    const char *flag; /* without the leading "--" */
    const char *env;
    setting_kind kind;
    size_t offset; /* into nt_config; for SET_HOSTPORT the host field */
    size_t size;   /* strings: capacity */
    const char *def;
    int64_t min, max;
    const char *help;
} setting;

#define STR(field) SET_STRING, offsetof(nt_config, field), sizeof(((nt_config *)0)->field)
#define INT(field) SET_INT, offsetof(nt_config, field), sizeof(int64_t)
#define BOOL(field) SET_BOOL, offsetof(nt_config, field), sizeof(bool)

static const setting settings[] = {
    {"listen", "NATTER_LISTEN", SET_HOSTPORT, offsetof(nt_config, listen_host), 64,
     "127.0.0.1:8080", 0, 0, "HOST:PORT to serve HTTP and WebSocket on"},
    {"data", "NATTER_DATA", STR(data_dir), "./natter-data", 0, 0,
     "folder for the SQLite file and the token signing key"},
    {"store", "NATTER_STORE", STR(store_url), "", 0, 0,
     "store URL: sqlite:PATH (default sqlite:DATA/natter.db) or "
     "postgres://[USER@]HOST[:PORT]/DB (needed by a cluster)"},
    {"bus", "NATTER_BUS", STR(bus_url), "local", 0, 0,
     "bus URL: local (in-process) or redis://HOST:PORT (a cluster)"},
    {"web", "NATTER_WEB", STR(web_dir), "./web", 0, 0, "folder of the web client served at /"},
    {"jwt-key-file", "NATTER_JWT_KEY_FILE", STR(jwt_key_file), "", 0, 0,
     "HS256 signing key file, 32 bytes (default DATA/jwt.key, created if missing)"},
    {"log-level", "NATTER_LOG_LEVEL", SET_LEVEL, offsetof(nt_config, log_level), 16, "info", 0, 0,
     "debug, info, warn or error"},
    {"roles", "NATTER_ROLES", STR(roles), "all", 0, 0,
     "services this process runs: all, or a comma list of gateway, messages, match, bot "
     "(docs/cluster.md)"},
    {"admin-listen", "NATTER_ADMIN_LISTEN", SET_ADDR, offsetof(nt_config, admin_listen),
     sizeof(((nt_config *)0)->admin_listen), "", 0, 0,
     "HOST:PORT for /healthz, /readyz and /metrics of any role (default: none)"},
    {"node-id", "NATTER_NODE_ID", STR(node_id), "", 0, 0,
     "this process's name on a redis bus, unique in the cluster (default: host-pid-random)"},
    {"access-ttl", "NATTER_ACCESS_TTL", INT(access_ttl_s), "900", 10, 86400,
     "access token lifetime, seconds"},
    {"refresh-ttl", "NATTER_REFRESH_TTL", INT(refresh_ttl_s), "2592000", 60, 31536000,
     "refresh token lifetime, seconds"},
    {"argon2-fast", "NATTER_ARGON2_FAST", BOOL(argon2_fast), "false", 0, 0,
     "minimal Argon2id cost, for tests and benchmarks only; never in production"},
    {"workers", "NATTER_WORKERS", INT(workers), "4", 1, 128,
     "worker threads for REST handlers and WebSocket jobs that read the store"},
    {"hash-workers", "NATTER_HASH_WORKERS", INT(hash_workers), "0", 0, 64,
     "threads that run register and login, each hashing in a helper process at idle CPU "
     "priority (0: one per CPU minus one, at least one); 16 requests per thread may wait, more "
     "get 503"},
    {"max-connections", "NATTER_MAX_CONNECTIONS", INT(max_connections), "19000", 1, 1000000,
     "open connections before new ones are refused"},
    {"max-output", "NATTER_MAX_OUTPUT", INT(max_output), "4194304", 65536, 1073741824,
     "unsent bytes after which a slow consumer is disconnected (1008)"},
    {"max-frame", "NATTER_MAX_FRAME", INT(max_frame), "65536", 1024, 16777216,
     "largest WebSocket frame or message, bytes (1009 above)"},
    {"max-body", "NATTER_MAX_BODY", INT(max_body), "65536", 1024, 16777216,
     "largest HTTP request body, bytes (413 above)"},
    {"max-text", "NATTER_MAX_TEXT", INT(max_text), "4096", 1, 65536,
     "longest message text, Unicode code points"},
    {"send-rate", "NATTER_SEND_RATE", INT(send_rate), "100", 0, 1000000,
     "messages a second one user may send (WebSocket and REST together), per process; over it "
     "a send gets rate_limited (429) and is not stored (0: no limit)"},
    {"send-burst", "NATTER_SEND_BURST", INT(send_burst), "1000", 1, 1000000,
     "messages one user may send at once above --send-rate before the limit applies"},
    {"login-failures", "NATTER_LOGIN_FAILURES", INT(login_failures), "10", 0, 1000000,
     "failed logins a minute one account may have (also the burst), per process; past it every "
     "login to it, right password or not, gets 429 until the minute refills (0: no limit)"},
    {"auth-timeout", "NATTER_AUTH_TIMEOUT", INT(auth_timeout_s), "10", 1, 3600,
     "seconds a WebSocket may take to send its auth frame (4001 after)"},
    {"ping-interval", "NATTER_PING_INTERVAL", INT(ping_interval_s), "30", 1, 3600,
     "seconds of silence before the server pings; no answer for as long again closes"},
    {"drain-timeout", "NATTER_DRAIN_TIMEOUT", INT(drain_timeout_s), "5", 0, 600,
     "seconds SIGTERM waits for connections and commits to finish"},
    {"pow-bits", "NATTER_POW_BITS", INT(pow_bits), "24", 1, 40,
     "leading zero bits the bot's proof of work must find"},
    {"pow-workers", "NATTER_POW_WORKERS", INT(pow_workers), "0", 0, 256,
     "proof-of-work worker threads (0: one per core)"},
    {"pow-max-pending", "NATTER_POW_MAX_PENDING", INT(pow_max_pending), "3", 1, 1000,
     "proof-of-work jobs one user may have waiting"},
    {"pow-visibility-ms", "NATTER_POW_VISIBILITY_MS", INT(pow_visibility_ms), "0", 0, 86400000,
     "milliseconds a taken !pow job stays hidden before another worker may take it over "
     "(0: 60 s, doubled per bit above 28)"},
    {"rpc-timeout", "NATTER_RPC_TIMEOUT", INT(rpc_timeout_ms), "10000", 10, 600000,
     "milliseconds the bot waits for a worker's answer to !rpc"},
    {"lobby-interval", "NATTER_LOBBY_INTERVAL", INT(lobby_interval_s), "60", 0, 86400,
     "seconds between the bot's Hello world! in lobby (0: off)"},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

/* True if value is HOST:PORT with a host of 1..host_cap-1 bytes and a port
 * in 0..65535; fills *host_len and *port. The one rule for every listen
 * address, so a bad one stops the start with exit 2 before anything is set
 * up. */
static bool parse_hostport(const char *value, size_t host_cap, size_t *host_len, int *port)
{
    const char *colon = strrchr(value, ':');
    if (!colon || colon == value || (size_t)(colon - value) >= host_cap || colon[1] == '\0')
        return false;
    char *end;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || *end || v < 0 || v > 65535) return false;
    *host_len = (size_t)(colon - value);
    *port = (int)v;
    return true;
}

static int set_value(nt_config *cfg, const setting *s, const char *value, char *err, size_t err_len)
{
    char *field = (char *)cfg + s->offset;
    switch (s->kind) {
    case SET_STRING:
    case SET_LEVEL:
        if (strlen(value) >= s->size) {
            snprintf(err, err_len, "--%s: value too long (at most %zu bytes)", s->flag,
                     s->size - 1);
            return -1;
        }
        if (s->kind == SET_LEVEL && strcmp(value, "debug") && strcmp(value, "info") &&
            strcmp(value, "warn") && strcmp(value, "error")) {
            snprintf(err, err_len, "--%s: '%s' is not one of debug, info, warn, error", s->flag,
                     value);
            return -1;
        }
        strcpy(field, value);
        return 0;
    case SET_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < s->min || v > s->max) {
            snprintf(err, err_len, "--%s: '%s' is not an integer in %lld..%lld", s->flag, value,
                     (long long)s->min, (long long)s->max);
            return -1;
        }
        memcpy(field, &(int64_t){v}, sizeof(int64_t));
        return 0;
    }
    case SET_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) {
            *(bool *)field = true;
        } else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) {
            *(bool *)field = false;
        } else {
            snprintf(err, err_len, "--%s: '%s' is not true or false", s->flag, value);
            return -1;
        }
        return 0;
    case SET_HOSTPORT: {
        size_t host_len;
        int port;
        if (!parse_hostport(value, sizeof cfg->listen_host, &host_len, &port)) {
            snprintf(err, err_len, "--%s: '%s' is not HOST:PORT", s->flag, value);
            return -1;
        }
        memcpy(cfg->listen_host, value, host_len);
        cfg->listen_host[host_len] = '\0';
        cfg->listen_port = port;
        return 0;
    }
    case SET_ADDR: {
        size_t host_len;
        int port;
        /* The host part must fit where natterd copies it (a listen_host). */
        if (value[0] && (strlen(value) >= s->size ||
                         !parse_hostport(value, sizeof cfg->listen_host, &host_len, &port))) {
            snprintf(err, err_len, "--%s: '%s' is not HOST:PORT", s->flag, value);
            return -1;
        }
        strcpy(field, value);
        return 0;
    }
    }
    return -1;
}

static const setting *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].flag) == len && !strncmp(settings[i].flag, name, len))
            return &settings[i];
    return NULL;
}

int nt_config_load(nt_config *cfg, int argc, char **argv, FILE *out, char *err, size_t err_len)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NSETTINGS; i++)
        if (set_value(cfg, &settings[i], settings[i].def, err, err_len))
            return 2; /* a broken default is a bug; say so rather than crash */
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v && set_value(cfg, &settings[i], v, err, err_len)) {
            size_t n = strlen(err);
            snprintf(err + n, err_len - n, " (from %s)", settings[i].env);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            nt_config_help(out);
            return 1;
        }
        if (!strcmp(arg, "--version")) {
            fprintf(out, "natterd 0.1.0\n");
            return 1;
        }
        if (!strcmp(arg, "--help-markdown")) { /* docs/configuration.md */
            nt_config_markdown(out);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, err_len, "unexpected argument '%s' (see --help)", arg);
            return 2;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const setting *s = find_flag(name, name_len);
        if (!s) {
            snprintf(err, err_len, "unknown flag '--%.*s' (see --help)", (int)name_len, name);
            return 2;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && s->kind == SET_BOOL) {
            value = "true";
        } else if (!value) {
            if (i + 1 >= argc) {
                snprintf(err, err_len, "--%s needs a value", s->flag);
                return 2;
            }
            value = argv[++i];
        }
        if (set_value(cfg, s, value, err, err_len)) return 2;
    }
    if (!cfg->store_url[0])
        snprintf(cfg->store_url, sizeof cfg->store_url, "sqlite:%s/natter.db", cfg->data_dir);
    if (!cfg->jwt_key_file[0])
        snprintf(cfg->jwt_key_file, sizeof cfg->jwt_key_file, "%s/jwt.key", cfg->data_dir);
    return 0;
}

void nt_config_help(FILE *out)
{
    fprintf(out, "usage: natterd [--flag VALUE | --flag=VALUE]...\n\n"
                 "Natter messenger server. Every flag has an environment twin;\n"
                 "flags win over the environment.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s", s->flag, s->kind == SET_BOOL ? "" : " VALUE");
        fprintf(out, "  %-28s %s\n  %-28s [env %s, default %s]\n", left, s->help, "", s->env,
                s->def[0] ? s->def : "see text");
    }
    fprintf(out, "  %-28s %s\n  %-28s %s\n", "--help", "this text", "--version",
            "print the version");
}

void nt_config_markdown(FILE *out)
{
    fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NSETTINGS; i++)
        fprintf(out, "| `--%s` | `%s` | %s%s%s | %s |\n", settings[i].flag, settings[i].env,
                settings[i].def[0] ? "`" : "", settings[i].def[0] ? settings[i].def : "see meaning",
                settings[i].def[0] ? "`" : "", settings[i].help);
}
