/*
 * Passwords in the store and bus URLs never reach natterd's log: the
 * password of postgres://USER:PASSWORD@HOST/DB and a ?password= parameter
 * are shown as ***, in the error that ends a start whose store or bus cannot
 * be opened (a closed port, a URL the store or libpq refuses and quotes) and
 * in the start line of a server that came up on a private PostgreSQL (that
 * part is skipped when PostgreSQL is not installed). The rest of the URL is
 * still shown, so the log says where natterd tried to go.
 */
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "integration/harness.h"
#include "unit/pg_test_server.h"

extern char **environ;

#define SECRET "s3cr3t-pw"
#define QUERY_SECRET "qu3ry-pw"

/* Runs natterd with args (NULL-terminated) and --data DIR; captures stderr
 * into err. Returns the exit code, or -1. */
static int run(const char *data_dir, const char *const *args, char *err, size_t err_cap)
{
    char tmpl_err[] = "/tmp/natter-secrets-errXXXXXX";
    int fe = mkstemp(tmpl_err);
    int devnull = open("/dev/null", O_WRONLY);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 1);
    posix_spawn_file_actions_adddup2(&fa, fe, 2);
    const char *argv[16];
    int n = 0;
    argv[n++] = getenv("NATTERD");
    argv[n++] = "--data";
    argv[n++] = data_dir;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid;
    int status = -1;
    if (posix_spawn(&pid, argv[0], &fa, NULL, (char **)argv, environ) == 0)
        waitpid(pid, &status, 0);
    posix_spawn_file_actions_destroy(&fa);
    ssize_t k = pread(fe, err, err_cap - 1, 0);
    err[k > 0 ? k : 0] = '\0';
    close(fe);
    close(devnull);
    unlink(tmpl_err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

/* Checks that text holds neither secret and holds `shown`. */
static void check_hidden(const char *what, const char *text, const char *shown)
{
    bool leaked = strstr(text, SECRET) || strstr(text, QUERY_SECRET);
    if (leaked || !strstr(text, shown))
        fprintf(stderr, "%s: expected \"%s\", no password; got:\n%s\n", what, shown, text);
    CHECK(!leaked);
    CHECK(strstr(text, shown) != NULL);
}

static char data_dir[512];
static char err[65536];

/* Starts whose store or bus cannot be opened: natterd exits 1 and names
 * the URL without its passwords. */
static void case_failed_starts(void)
{
    int closed = nth_free_port();
    REQUIRE(closed > 0);
    char url[512], shown[512];

    /* A PostgreSQL that does not answer. */
    snprintf(url, sizeof url,
             "postgres://natter:" SECRET
             "@127.0.0.1:%d/natterdb?sslmode=disable&password=" QUERY_SECRET,
             closed);
    snprintf(shown, sizeof shown,
             "postgres://natter:***@127.0.0.1:%d/natterdb?sslmode=disable&password=***", closed);
    const char *pg_closed[] = {"--store", url, NULL};
    CHECK_EQ_INT(run(data_dir, pg_closed, err, sizeof err), 1);
    check_hidden("store on a closed port", err, shown);

    /* libpq refuses the URL and quotes all of it in its error. */
    const char *pg_bad[] = {"--store", "postgres://natter:" SECRET "@[::1/natterdb", NULL};
    CHECK_EQ_INT(run(data_dir, pg_bad, err, sizeof err), 1);
    check_hidden("URL libpq refuses", err, "postgres://natter:***@[::1/natterdb");

    /* A scheme the store does not know: its error quotes the URL too. */
    const char *unknown[] = {"--store", "mysql://natter:" SECRET "@127.0.0.1/natterdb", NULL};
    CHECK_EQ_INT(run(data_dir, unknown, err, sizeof err), 1);
    check_hidden("unknown store scheme", err, "mysql://natter:***@127.0.0.1/natterdb");

    /* A conninfo-style password (the store takes only URLs). */
    const char *conninfo[] = {"--store", "host=127.0.0.1 password=" SECRET " dbname=x", NULL};
    CHECK_EQ_INT(run(data_dir, conninfo, err, sizeof err), 1);
    check_hidden("conninfo store", err, "host=127.0.0.1 password=*** dbname=x");

    /* A password-bearing Redis URL (the bus refuses user info). */
    snprintf(url, sizeof url, "redis://:" SECRET "@127.0.0.1:%d", closed);
    snprintf(shown, sizeof shown, "redis://:***@127.0.0.1:%d", closed);
    const char *bus[] = {"--bus", url, NULL};
    CHECK_EQ_INT(run(data_dir, bus, err, sizeof err), 1);
    check_hidden("redis bus", err, shown);
}

/* A store that opens (a private PostgreSQL, which trusts every client and
 * ignores the password): the start line shows the URL without them. */
static void case_start_line(void)
{
    pg_test_server pg;
    int rc = pgt_start(&pg, false);
    if (rc == PGT_SKIP) {
        printf("no PostgreSQL: skipped\n");
        return;
    }
    REQUIRE(rc == 0);
    char args[1024], shown[512];
    snprintf(args, sizeof args,
             "--store postgres://postgres:" SECRET "@127.0.0.1:%d/natter?password=" QUERY_SECRET,
             pg.port);
    nt_server *srv = nth_start(args);
    if (!srv) pgt_destroy(&pg);
    REQUIRE(srv != NULL);
    CHECK_EQ_INT(nth_stop(srv), 0);
    static char log[65536];
    FILE *f = fopen(srv->log_path, "r");
    size_t n = f ? fread(log, 1, sizeof log - 1, f) : 0;
    log[n] = '\0';
    if (f) fclose(f);
    snprintf(shown, sizeof shown, "store=postgres://postgres:***@127.0.0.1:%d/natter?password=***",
             pg.port);
    check_hidden("start line", log, shown);
    nth_free(srv, check_failures == 0);
    pgt_destroy(&pg);
}

int main(void)
{
    if (!getenv("NATTERD")) {
        fprintf(stderr, "NATTERD is not set\n");
        return 1;
    }
    const char *tmp = getenv("NT_TEST_TMP") ? getenv("NT_TEST_TMP") : "/tmp";
    mkdir(tmp, 0700);
    snprintf(data_dir, sizeof data_dir, "%s/it_log_secrets-XXXXXX", tmp);
    if (!mkdtemp(data_dir)) {
        perror("mkdtemp");
        return 1;
    }

    nth_case_begin("a failed start names the store or bus URL without its passwords");
    case_failed_starts();
    nth_case_end();
    nth_case_begin("the start line names the store URL without its passwords");
    case_start_line();
    nth_case_end();

    /* natterd wrote its key and a SQLite store there. */
    if (check_failures == 0) nftw(data_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_exit();
}
