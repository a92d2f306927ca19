/*
 * natterd's settings: one table lists every setting with its flag, its
 * NATTER_* environment twin, default, bounds and help text (config.c), in the
 * manner of Redis's config.c. `--help` and docs/configuration come from it.
 * Precedence: default < environment < command line.
 */
#ifndef NT_CONFIG_H
#define NT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct nt_config {
    char listen_host[64];
    int listen_port;
    char data_dir[512];
    char store_url[600]; /* default: sqlite:<data_dir>/natter.db */
    char bus_url[256];
    char web_dir[512];
    char jwt_key_file[600]; /* default: <data_dir>/jwt.key */
    char log_level[16];
    char roles[64];
    char admin_listen[80]; /* HOST:PORT for /healthz, /readyz, /metrics; "" = none */
    char node_id[48];      /* this process's name on the bus; "" = host-pid-random */
    int64_t access_ttl_s;
    int64_t refresh_ttl_s;
    bool argon2_fast; /* tests and benchmarks only: minimal Argon2id cost */
    int64_t workers;
    int64_t hash_workers; /* register/login hashing threads; 0 = CPUs - 1, at least 1 */
    int64_t max_connections;
    int64_t max_output; /* bytes of unsent output before a slow consumer is cut */
    int64_t max_frame;  /* WebSocket frame and message, bytes */
    int64_t max_body;   /* HTTP request body, bytes */
    int64_t max_text;   /* message text, code points */
    /* rate limits (per process; 0 = none) */
    int64_t send_rate;      /* messages a second per user */
    int64_t send_burst;     /* messages a user may send at once */
    int64_t login_failures; /* failed logins a minute per account, and the burst */
    int64_t auth_timeout_s;
    int64_t ping_interval_s;
    int64_t drain_timeout_s;
    /* the bot */
    int64_t pow_bits;
    int64_t pow_workers; /* 0 = one per core */
    int64_t pow_max_pending;
    int64_t pow_visibility_ms; /* 0 = from the bits (bot.c) */
    int64_t rpc_timeout_ms;
    int64_t lobby_interval_s;
} nt_config;

/* Fills cfg from defaults, then the environment, then argv. On a bad flag
 * or value writes one line to err and returns 2 (the exit code to use);
 * returns 1 if --help or --version was handled (output written to out),
 * 0 to go on. */
int nt_config_load(nt_config *cfg, int argc, char **argv, FILE *out, char *err, size_t err_len);
/* Writes the --help text (generated from the table). */
void nt_config_help(FILE *out);
/* Writes the settings as a Markdown table (docs/configuration.md). */
void nt_config_markdown(FILE *out);

#endif
