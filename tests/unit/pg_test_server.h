/*
 * A private PostgreSQL server for one test process: a temporary folder in
 * /tmp, initdb, pg_ctl start on a free loopback port (its socket in the same
 * folder), createdb natter; pgt_stop() stops it with pg_ctl and
 * pgt_destroy() also removes the folder. PostgreSQL refuses to run as root,
 * so when the test runs as root every PostgreSQL program is run through
 * `runuser -u postgres` and the folder is given to that user. An atexit hook
 * stops a server the test forgot (or left behind by failing early), and the
 * reaper (reaper.h) stops it with SIGQUIT if the test dies without running
 * its exit hooks (abort, a sanitizer report, alarm, SIGKILL).
 *
 *     pg_test_server pg;
 *     int rc = pgt_start(&pg, false);   // false: fsync off (faster tests)
 *     if (rc == PGT_SKIP) return 77;    // no PostgreSQL installed
 *     ... nt_store_open(pg.url, ...) ...
 *     pgt_destroy(&pg);
 *
 * Everything is static so any test may include it.
 */
#ifndef NT_PG_TEST_SERVER_H
#define NT_PG_TEST_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reaper.h"

#define PGT_BIN "/usr/lib/postgresql/15/bin"
#define PGT_SKIP 77 /* CTest's SKIP_RETURN_CODE for these tests */

typedef struct pg_test_server {
    char dir[128]; /* the temporary folder; data in dir/data, log in dir/log */
    char data[160];
    int port;
    bool durable; /* fsync on */
    bool running;
    pid_t pid;     /* the postmaster while running (0 if unknown) */
    char url[256]; /* postgres://postgres@127.0.0.1:PORT/natter */
} pg_test_server;

static pg_test_server *pgt_live; /* for the atexit hook */

/* Runs argv (PostgreSQL's bin folder for argv[0] without a '/'), as the
 * postgres user when we are root, with output appended to dir/log. Returns
 * the exit status, or -1. */
static int pgt_run(const pg_test_server *pg, const char *const argv[])
{
    char prog[256], logpath[192];
    if (strchr(argv[0], '/'))
        snprintf(prog, sizeof(prog), "%s", argv[0]);
    else
        snprintf(prog, sizeof(prog), "%s/%s", PGT_BIN, argv[0]);
    snprintf(logpath, sizeof(logpath), "%s/log", pg->dir);
    const char *full[32];
    int n = 0;
    if (geteuid() == 0) {
        full[n++] = "/usr/sbin/runuser";
        full[n++] = "-u";
        full[n++] = "postgres";
        full[n++] = "--";
    }
    full[n++] = prog;
    for (int i = 1; argv[i] && n < 31; i++)
        full[n++] = argv[i];
    full[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            if (geteuid() == 0) {
                struct passwd *pw = getpwnam("postgres");
                if (pw && fchown(fd, pw->pw_uid, pw->pw_gid) != 0) _exit(126);
            }
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (chdir(pg->dir) != 0) _exit(126);
        execv(full[0], (char *const *)full);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int pgt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Starts the (already initialized) server again, e.g. after pgt_stop. */
static int pgt_resume(pg_test_server *pg)
{
    char opts[384];
    snprintf(opts, sizeof(opts),
             "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=%s -c max_connections=200",
             pg->port, pg->dir, pg->durable ? "on" : "off");
    const char *start[] = {"pg_ctl", "-D", pg->data, "-w", "-t", "30", "-o", opts, "start", NULL};
    if (pgt_run(pg, start) != 0) {
        fprintf(stderr, "pg_test_server: pg_ctl start failed (see %s/log)\n", pg->dir);
        return -1;
    }
    pg->running = true;
    /* The postmaster's pid: the first line of data/postmaster.pid. */
    char path[192];
    snprintf(path, sizeof(path), "%s/postmaster.pid", pg->data);
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1) pid = 0;
        fclose(f);
    }
    pg->pid = (pid_t)pid;
    reaper_watch(pg->pid, SIGQUIT); /* immediate shutdown */
    return 0;
}

/* Stops the server (fast shutdown: open sessions are ended). */
static int pgt_stop(pg_test_server *pg)
{
    if (!pg->running) return 0;
    const char *stop[] = {"pg_ctl", "-D", pg->data, "-m", "fast", "-w", "stop", NULL};
    int rc = pgt_run(pg, stop);
    if (rc == 0) {
        pg->running = false;
        reaper_forget(pg->pid);
        pg->pid = 0;
    }
    return rc == 0 ? 0 : -1;
}

/* Stops the server and removes its folder. */
static void pgt_destroy(pg_test_server *pg)
{
    if (!pg->dir[0]) return;
    pgt_stop(pg);
    const char *rm[] = {"/bin/rm", "-rf", pg->dir, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        execv(rm[0], (char *const *)rm);
        _exit(127);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0)
            ;
    pg->dir[0] = '\0';
    if (pgt_live == pg) pgt_live = NULL;
}

static void pgt_atexit(void)
{
    if (pgt_live) pgt_destroy(pgt_live);
}

/* Creates, starts and fills in pg. 0, PGT_SKIP when PostgreSQL is not
 * installed, or -1. */
static int pgt_start(pg_test_server *pg, bool durable)
{
    memset(pg, 0, sizeof(*pg));
    pg->durable = durable;
    if (access(PGT_BIN "/initdb", X_OK) != 0) {
        fprintf(stderr, "pg_test_server: no %s/initdb, skipping\n", PGT_BIN);
        return PGT_SKIP;
    }
    snprintf(pg->dir, sizeof(pg->dir), "/tmp/nt_pg_XXXXXX");
    if (!mkdtemp(pg->dir)) {
        perror("mkdtemp");
        pg->dir[0] = '\0';
        return -1;
    }
    pgt_live = pg;
    static bool hooked;
    if (!hooked) {
        atexit(pgt_atexit);
        hooked = true;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw || chown(pg->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "pg_test_server: no postgres user to run the server as\n");
            pgt_destroy(pg);
            return -1;
        }
    }
    snprintf(pg->data, sizeof(pg->data), "%s/data", pg->dir);
    const char *initdb[] = {"initdb", "-D", pg->data, "-U",        "postgres",   "-A",
                            "trust",  "-E", "UTF8",   "--no-sync", "--locale=C", NULL};
    if (pgt_run(pg, initdb) != 0) {
        fprintf(stderr, "pg_test_server: initdb failed (see %s/log)\n", pg->dir);
        return -1;
    }
    if ((pg->port = pgt_free_port()) <= 0 || pgt_resume(pg) != 0) return -1;
    char port[16];
    snprintf(port, sizeof(port), "%d", pg->port);
    const char *createdb[] = {"createdb", "-h",       "127.0.0.1", "-p", port,
                              "-U",       "postgres", "natter",    NULL};
    if (pgt_run(pg, createdb) != 0) {
        fprintf(stderr, "pg_test_server: createdb failed (see %s/log)\n", pg->dir);
        return -1;
    }
    snprintf(pg->url, sizeof(pg->url), "postgres://postgres@127.0.0.1:%d/natter", pg->port);
    return 0;
}

#endif
