/*
 * The cluster of the fault tests (see cluster.h): redis-server, PostgreSQL
 * (tests/unit/pg_test_server.h), natterd gateway nodes through the
 * integration harness, and nginx configured from deploy/nginx/natter.conf.
 */
#include "cluster/cluster.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit/pg_test_server.h"
#include "unit/reaper.h"

static pg_test_server cluster_pg;
static nct_cluster *cluster_live; /* for the exit hook */

static void nct__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool nct__on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[1024];
    const char *extra[] = {"/usr/sbin", "/sbin"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(buf, sizeof buf, "%s/%s", extra[i], prog);
        if (access(buf, X_OK) == 0) return true;
    }
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* Runs argv and waits; the exit status or -1. Output goes to log_path. */
static int nct__run(const char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        FILE *log = fopen(log_path, "a");
        if (log) {
            dup2(fileno(log), 1);
            dup2(fileno(log), 2);
        }
        setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static pid_t nct__read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* SIGTERM to pid (not our child: daemonized), waits until it is gone. */
static void nct__stop_pid(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000 && kill(pid, 0) == 0; i++)
        nct__sleep_ms(10);
    if (kill(pid, 0) == 0) kill(pid, SIGKILL);
}

static int nct__free_port(void)
{
    return pgt_free_port();
}

/* ---- redis ------------------------------------------------------------------- */

int nct_redis_start(nct_cluster *c)
{
    char log[700];
    snprintf(log, sizeof log, "%s/redis.out", c->dir);
    const char *argv[] = {"redis-server", c->redis_conf, NULL};
    if (nct__run(argv, log) != 0) return -1;
    char port[16];
    snprintf(port, sizeof port, "%d", c->redis_port);
    for (int i = 0; i < 300; i++) {
        const char *ping[] = {"redis-cli", "-p", port, "ping", NULL};
        if (nct__read_pid(c->redis_pidfile) > 0 && nct__run(ping, log) == 0) {
            reaper_watch(nct__read_pid(c->redis_pidfile), SIGTERM);
            return 0;
        }
        nct__sleep_ms(10);
    }
    return -1;
}

int nct_redis_stop(nct_cluster *c)
{
    pid_t pid = nct__read_pid(c->redis_pidfile);
    if (pid <= 0) return -1;
    nct__stop_pid(pid);
    reaper_forget(pid);
    unlink(c->redis_pidfile);
    return 0;
}

/* ---- nginx ------------------------------------------------------------------- */

/* deploy/nginx/natter.conf with our gateways and port in it. */
static int nct__nginx_conf(nct_cluster *c)
{
    const char *src = getenv("NT_SOURCE_DIR");
    char path[700], line[512];
    if (!src || !*src) {
        fprintf(stderr, "cluster: NT_SOURCE_DIR is not set (where deploy/nginx is)\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/deploy/nginx/natter.conf", src);
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(stderr, "cluster: cannot read %s\n", path);
        return -1;
    }
    snprintf(path, sizeof path, "%s/natter.conf", c->nginx_dir);
    FILE *out = fopen(path, "w");
    if (!out) {
        fclose(in);
        return -1;
    }
    bool gateways_written = false;
    while (fgets(line, sizeof line, in)) {
        if (strstr(line, "# @gateway")) {
            for (int i = 0; i < c->ngateways && !gateways_written; i++)
                fprintf(out, "    server 127.0.0.1:%d max_fails=1 fail_timeout=5s;\n",
                        c->gateways[i]->port);
            gateways_written = true;
        } else if (strstr(line, "# @listen")) {
            fprintf(out, "    listen 127.0.0.1:%d;\n", c->nginx_port);
        } else {
            fputs(line, out);
        }
    }
    fclose(in);
    fclose(out);

    snprintf(path, sizeof path, "%s/nginx.conf", c->nginx_dir);
    out = fopen(path, "w");
    if (!out) return -1;
    fprintf(out,
            "%s"
            "worker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    access_log off;\n"
            "    client_body_temp_path %s/tmp_body;\n"
            "    proxy_temp_path %s/tmp_proxy;\n"
            "    fastcgi_temp_path %s/tmp_fastcgi;\n"
            "    uwsgi_temp_path %s/tmp_uwsgi;\n"
            "    scgi_temp_path %s/tmp_scgi;\n"
            "    include %s/natter.conf;\n"
            "}\n",
            geteuid() == 0 ? "user root;\n" : "", c->nginx_dir, c->nginx_dir, c->nginx_dir,
            c->nginx_dir, c->nginx_dir, c->nginx_dir, c->nginx_dir, c->nginx_dir);
    fclose(out);
    return 0;
}

static int nct__nginx_start(nct_cluster *c)
{
    char conf[700], log[700];
    snprintf(conf, sizeof conf, "%s/nginx.conf", c->nginx_dir);
    snprintf(log, sizeof log, "%s/nginx.out", c->dir);
    const char *argv[] = {"nginx", "-p", c->nginx_dir, "-c", conf, NULL};
    if (nct__run(argv, log) != 0) {
        fprintf(stderr, "cluster: nginx did not start (see %s)\n", log);
        return -1;
    }
    for (int i = 0; i < 300; i++) {
        if (nth_healthy(&c->front)) {
            /* Its pid file is written by the daemon, surely by now. */
            char pidfile[700];
            snprintf(pidfile, sizeof pidfile, "%s/nginx.pid", c->nginx_dir);
            reaper_watch(nct__read_pid(pidfile), SIGTERM);
            return 0;
        }
        nct__sleep_ms(10);
    }
    fprintf(stderr, "cluster: nginx does not answer /healthz\n");
    return -1;
}

/* ---- the whole cluster --------------------------------------------------------- */

static int nct__rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void nct__atexit(void)
{
    if (cluster_live) nct_stop(cluster_live, false);
}

nt_server *nct_front(nct_cluster *c)
{
    return &c->front;
}

int nct_start(nct_cluster *c, int ngateways)
{
    memset(c, 0, sizeof *c);
    const char *need[] = {"redis-server", "redis-cli", "nginx"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (!nct__on_path(need[i])) {
            printf("SKIP: %s is not installed (scripts/setup installs it)\n", need[i]);
            return NCT_SKIP;
        }
    }
    if (ngateways < 1 || ngateways > NCT_MAX_GATEWAYS) return -1;
    const char *base = getenv("NT_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(c->dir, sizeof c->dir, "%s/cluster-XXXXXX", base);
    if (!mkdtemp(c->dir)) {
        fprintf(stderr, "cluster: mkdtemp %s: %s\n", c->dir, strerror(errno));
        return -1;
    }
    chmod(c->dir, 0755);
    cluster_live = c;
    static bool hooked;
    if (!hooked) {
        atexit(nct__atexit);
        hooked = true;
    }

    /* Redis. */
    c->redis_port = nct__free_port();
    snprintf(c->redis_conf, sizeof c->redis_conf, "%s/redis.conf", c->dir);
    snprintf(c->redis_pidfile, sizeof c->redis_pidfile, "%s/redis.pid", c->dir);
    FILE *f = fopen(c->redis_conf, "w");
    if (!f) return -1;
    fprintf(f,
            "bind 127.0.0.1\nport %d\ndaemonize yes\npidfile %s\nsave \"\"\nappendonly no\n"
            "dir %s\nlogfile %s/redis.log\n",
            c->redis_port, c->redis_pidfile, c->dir, c->dir);
    fclose(f);
    if (nct_redis_start(c) != 0) {
        fprintf(stderr, "cluster: redis-server did not start (see %s)\n", c->dir);
        return -1;
    }

    /* PostgreSQL: the shared store of every node. */
    int rc = pgt_start(&cluster_pg, false);
    if (rc == PGT_SKIP) {
        printf("SKIP: PostgreSQL is not installed (scripts/setup installs it)\n");
        return NCT_SKIP;
    }
    if (rc != 0) return -1;
    snprintf(c->pg_url, sizeof c->pg_url, "%s", cluster_pg.url);

    /* Gateways, one after the other: the first creates the shared signing
     * key and runs the migrations. */
    snprintf(c->key_file, sizeof c->key_file, "%s/jwt.key", c->dir);
    for (int i = 0; i < ngateways; i++) {
        char args[1024];
        snprintf(args, sizeof args,
                 "--roles gateway --node-id gw%d --bus redis://127.0.0.1:%d --store %s "
                 "--jwt-key-file %s --drain-timeout 1",
                 i + 1, c->redis_port, c->pg_url, c->key_file);
        c->gateways[i] = nth_start(args);
        if (!c->gateways[i]) {
            fprintf(stderr, "cluster: gateway %d did not start\n", i + 1);
            return -1;
        }
        c->ngateways++;
    }

    /* nginx in front. */
    snprintf(c->nginx_dir, sizeof c->nginx_dir, "%s/nginx", c->dir);
    mkdir(c->nginx_dir, 0755);
    c->nginx_port = nct__free_port();
    snprintf(c->front.host, sizeof c->front.host, "127.0.0.1");
    c->front.port = c->nginx_port;
    if (nct__nginx_conf(c) != 0 || nct__nginx_start(c) != 0) return -1;
    printf("cluster: redis :%d, postgres %s, %d gateways, nginx :%d in %s\n", c->redis_port,
           c->pg_url, c->ngateways, c->nginx_port, c->dir);
    fflush(stdout);
    return 0;
}

void nct_stop(nct_cluster *c, bool remove_dir)
{
    if (!c->dir[0]) return;
    if (c->nginx_dir[0]) {
        char pidfile[700];
        snprintf(pidfile, sizeof pidfile, "%s/nginx.pid", c->nginx_dir);
        pid_t pid = nct__read_pid(pidfile);
        nct__stop_pid(pid);
        reaper_forget(pid);
    }
    for (int i = 0; i < c->ngateways; i++) {
        if (c->gateways[i] && c->gateways[i]->pid > 0) nth_stop(c->gateways[i]);
        nth_free(c->gateways[i], remove_dir);
        c->gateways[i] = NULL;
    }
    c->ngateways = 0;
    pgt_destroy(&cluster_pg);
    nct_redis_stop(c);
    if (remove_dir)
        nftw(c->dir, nct__rm, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "cluster: kept %s for inspection\n", c->dir);
    c->dir[0] = '\0';
    if (cluster_live == c) cluster_live = NULL;
}

int nct_readyz(const nt_server *node)
{
    return nth_api(node, "GET", "/readyz", NULL, NULL, NULL);
}

long long nct_metric(const nt_server *node, const char *name)
{
    nt_buf body = NT_BUF_INIT;
    long long value = -1;
    if (nth_api(node, "GET", "/metrics", NULL, NULL, &body) == 200 && body.data) {
        size_t n = strlen(name);
        for (const char *p = body.data; (p = strstr(p, name)) != NULL; p += n) {
            if ((p == body.data || p[-1] == '\n') && p[n] == ' ') {
                value = strtoll(p + n + 1, NULL, 10);
                break;
            }
        }
    }
    nt_buf_free(&body);
    return value;
}
