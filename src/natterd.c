/*
 * natterd: the Natter server. Reads the settings (flags and NATTER_*
 * environment), opens the store and the bus, starts the gateway on one
 * libuv loop thread with a pool of worker threads, and on SIGTERM or SIGINT
 * drains: stops accepting, closes WebSockets with 1001, waits for commits,
 * and exits 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>
#include <uv.h>

#include "bus/bus.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "services/bot.h"
#include "services/services.h"
#include "store/store.h"

typedef struct natterd {
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    nt_gateway *gw;
    bool stopping;
} natterd;

static void on_drained(void *arg)
{
    natterd *d = arg;
    uv_stop(d->loop);
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
    nt_gateway_drain(d->gw, on_drained, d);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

int main(int argc, char **argv)
{
    nt_config cfg;
    char err[512] = "";
    int rc = nt_config_load(&cfg, argc, argv, stdout, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "natterd: %s\n", err);
        return 2;
    }
    nt_log_level = nt_log_level_parse(cfg.log_level);
    if (strcmp(cfg.roles, "all") != 0) {
        fprintf(stderr, "natterd: --roles: only 'all' is available in this build\n");
        return 2;
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
    /* Worker threads: Argon2id and store reads. Must be set before libuv
     * starts its pool. */
    char workers[16];
    snprintf(workers, sizeof workers, "%lld", (long long)cfg.workers);
    setenv("UV_THREADPOOL_SIZE", workers, 1);

    natterd d = {0};
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
        .pwhash_ops = cfg.argon2_fast ? crypto_pwhash_OPSLIMIT_MIN
                                      : crypto_pwhash_OPSLIMIT_INTERACTIVE,
        .pwhash_mem = cfg.argon2_fast ? crypto_pwhash_MEMLIMIT_MIN
                                      : crypto_pwhash_MEMLIMIT_INTERACTIVE,
    };
    if (cfg.argon2_fast)
        nt_warn("--argon2-fast: passwords are hashed at the minimum cost (tests only)");
    if ((rc = nt_auth_load_key(&ctx, cfg.jwt_key_file)) != 0) {
        fprintf(stderr, "natterd: signing key %s: %s\n", cfg.jwt_key_file, strerror(-rc));
        return 1;
    }
    ctx.store = nt_store_open(cfg.store_url, err, sizeof err);
    if (!ctx.store) {
        fprintf(stderr, "natterd: store %s: %s\n", cfg.store_url, err);
        return 1;
    }
    ctx.bus = nt_bus_open(cfg.bus_url, d.loop, err, sizeof err);
    if (!ctx.bus) {
        fprintf(stderr, "natterd: bus %s: %s\n", cfg.bus_url, err);
        nt_store_close(ctx.store);
        return 1;
    }
    d.gw = nt_gateway_new(d.loop, &ctx, &cfg, err, sizeof err);
    if (!d.gw) {
        fprintf(stderr, "natterd: %s\n", err);
        nt_bus_close(ctx.bus);
        nt_store_close(ctx.store);
        return 1;
    }
    if ((rc = nt_gateway_start(d.gw)) != 0) {
        fprintf(stderr, "natterd: --listen %s:%d: %s\n", cfg.listen_host, cfg.listen_port,
                uv_strerror(rc));
        nt_gateway_free(d.gw);
        nt_bus_close(ctx.bus);
        nt_store_close(ctx.store);
        return 1;
    }
    nt_bot_opts bot_opts = {.pow_bits = (int)cfg.pow_bits,
                            .pow_workers = (int)cfg.pow_workers,
                            .pow_max_pending = (int)cfg.pow_max_pending,
                            .rpc_timeout_ms = (int)cfg.rpc_timeout_ms,
                            .lobby_interval_s = (int)cfg.lobby_interval_s};
    nt_bot *bot = nt_bot_start(&ctx, &bot_opts, err, sizeof err);
    if (!bot) {
        fprintf(stderr, "natterd: %s\n", err);
        nt_gateway_free(d.gw);
        nt_bus_close(ctx.bus);
        nt_store_close(ctx.store);
        return 1;
    }
    /* Set before the loop runs: no handler can be reading these yet. */
    ctx.bot = bot;
    ctx.message_hook = nt_bot_message_hook;
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    nt_info("natterd listening on http://%s:%d store=%s bus=%s", cfg.listen_host,
            cfg.listen_port, cfg.store_url, cfg.bus_url);

    uv_run(d.loop, UV_RUN_DEFAULT);

    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    nt_gateway_free(d.gw);
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
    nt_info("natterd stopped");
    return 0;
}
