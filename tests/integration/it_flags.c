/*
 * natterd's command line: --help lists every flag, and unknown flags or bad
 * values (from flags or from NATTER_* variables) stop it at once with a
 * one-line error and exit code 2, before it touches the data folder.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit/check.h"

extern char **environ;

/* Runs natterd with args (NULL-terminated) and an optional extra
 * environment entry; captures stdout and stderr. Returns the exit code. */
static int run(const char *const *args, const char *env_entry, char *out, size_t out_cap, char *err,
               size_t err_cap)
{
    char tmpl_out[] = "/tmp/natter-flags-outXXXXXX", tmpl_err[] = "/tmp/natter-flags-errXXXXXX";
    int fo = mkstemp(tmpl_out), fe = mkstemp(tmpl_err);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fo, 1);
    posix_spawn_file_actions_adddup2(&fa, fe, 2);
    const char *argv[16];
    int n = 0;
    argv[n++] = getenv("NATTERD");
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **envp = calloc(nenv + 2, sizeof *envp);
    memcpy(envp, environ, nenv * sizeof *envp);
    if (env_entry) envp[nenv++] = (char *)env_entry;
    pid_t pid;
    int status = -1;
    if (posix_spawn(&pid, argv[0], &fa, NULL, (char **)argv, envp) == 0) waitpid(pid, &status, 0);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    ssize_t k = pread(fo, out, out_cap - 1, 0);
    out[k > 0 ? k : 0] = '\0';
    k = pread(fe, err, err_cap - 1, 0);
    err[k > 0 ? k : 0] = '\0';
    close(fo);
    close(fe);
    unlink(tmpl_out);
    unlink(tmpl_err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

int main(void)
{
    static char out[65536], err[65536];
    if (!getenv("NATTERD")) {
        fprintf(stderr, "NATTERD is not set\n");
        return 1;
    }

    const char *help[] = {"--help", NULL};
    CHECK_EQ_INT(run(help, NULL, out, sizeof out, err, sizeof err), 0);
    static const char *flags[] = {"--listen",
                                  "--data",
                                  "--log-level",
                                  "--store",
                                  "--bus",
                                  "--web",
                                  "--jwt-key-file",
                                  "--max-frame",
                                  "--max-body",
                                  "NATTER_LISTEN",
                                  "NATTER_DATA",
                                  "NATTER_LOG_LEVEL",
                                  "--send-rate",
                                  "--send-burst",
                                  "--login-failures",
                                  "NATTER_SEND_RATE",
                                  "NATTER_SEND_BURST",
                                  "NATTER_LOGIN_FAILURES"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!strstr(out, flags[i])) fprintf(stderr, "--help does not mention %s\n", flags[i]);
        CHECK(strstr(out, flags[i]) != NULL);
    }

    /* docs/configuration.md is generated from the same table: it must hold
     * exactly what natterd prints today (run `make docs` after a change). */
    const char *md[] = {"--help-markdown", NULL};
    CHECK_EQ_INT(run(md, NULL, out, sizeof out, err, sizeof err), 0);
    const char *src = getenv("NT_SOURCE_DIR");
    if (src) {
        static char doc[65536];
        char path[1024];
        snprintf(path, sizeof path, "%s/docs/configuration.md", src);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(doc, 1, sizeof doc - 1, f) : 0;
        doc[n] = '\0';
        if (f) fclose(f);
        if (!strstr(doc, out)) fprintf(stderr, "docs/configuration.md is stale: run make docs\n");
        CHECK(strstr(doc, out) != NULL);
    }

    struct {
        const char *name;
        const char *args[4];
        const char *env;
        const char *says;
    } bad[] = {
        {"unknown flag", {"--bogus", NULL}, NULL, "--bogus"},
        {"listen without a port", {"--listen", "127.0.0.1", NULL}, NULL, "--listen"},
        {"listen with a bad port", {"--listen", "127.0.0.1:99999", NULL}, NULL, "--listen"},
        {"bad log level", {"--log-level=loud", NULL}, NULL, "--log-level"},
        {"integer out of range", {"--max-frame", "12", NULL}, NULL, "--max-frame"},
        {"not an integer", {"--workers", "many", NULL}, NULL, "--workers"},
        {"flag without value", {"--data", NULL}, NULL, "--data"},
        {"stray argument", {"serve", NULL}, NULL, "serve"},
        {"bad environment value", {NULL}, "NATTER_LISTEN=nowhere", "NATTER_LISTEN"},
        {"bad environment bool", {NULL}, "NATTER_ARGON2_FAST=maybe", "NATTER_ARGON2_FAST"},
        {"admin-listen not HOST:PORT", {"--admin-listen", "nope", NULL}, NULL, "--admin-listen"},
        {"admin-listen without a port",
         {"--admin-listen=127.0.0.1:", NULL},
         NULL,
         "--admin-listen"},
        {"admin-listen with a bad port",
         {"--admin-listen", "127.0.0.1:65536", NULL},
         NULL,
         "--admin-listen"},
        {"bad environment admin-listen",
         {NULL},
         "NATTER_ADMIN_LISTEN=:9090",
         "NATTER_ADMIN_LISTEN"},
        {"negative send-rate", {"--send-rate", "-1", NULL}, NULL, "--send-rate"},
        {"send-rate not a number", {"--send-rate=fast", NULL}, NULL, "--send-rate"},
        {"send-burst of zero", {"--send-burst", "0", NULL}, NULL, "--send-burst"},
        {"send-burst not a number", {"--send-burst", "10x", NULL}, NULL, "--send-burst"},
        {"negative login-failures", {"--login-failures", "-5", NULL}, NULL, "--login-failures"},
        {"login-failures not a number",
         {"--login-failures", "ten", NULL},
         NULL,
         "--login-failures"},
        {"bad environment send-rate", {NULL}, "NATTER_SEND_RATE=-3", "NATTER_SEND_RATE"},
        {"bad environment login-failures",
         {NULL},
         "NATTER_LOGIN_FAILURES=lots",
         "NATTER_LOGIN_FAILURES"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int code = run(bad[i].args, bad[i].env, out, sizeof out, err, sizeof err);
        printf("case %-26s exit=%d stderr=%s", bad[i].name, code, err);
        CHECK_EQ_INT(code, 2);
        CHECK_EQ_INT(count_lines(err), 1);
        CHECK(strstr(err, bad[i].says) != NULL);
    }

    /* A bad --admin-listen stops natterd before it makes its data folder;
     * a well-formed one that cannot be bound (here: a port another socket
     * listens on) is found only when natterd listens, after the store is
     * open, and ends it with exit 1. */
    const char *tmp = getenv("NT_TEST_TMP") ? getenv("NT_TEST_TMP") : "/tmp";
    mkdir(tmp, 0700);
    char dir[512], data[600];
    snprintf(dir, sizeof dir, "%s/it_flags-XXXXXX", tmp);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(data, sizeof data, "%s/data", dir);
    const char *bad_admin[] = {"--data", data, "--admin-listen", "nope", NULL};
    CHECK_EQ_INT(run(bad_admin, NULL, out, sizeof out, err, sizeof err), 2);
    CHECK(strstr(err, "--admin-listen") != NULL);
    CHECK(access(data, F_OK) != 0);

    int taken = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    CHECK(taken >= 0 && bind(taken, (struct sockaddr *)&addr, sizeof addr) == 0 &&
          listen(taken, 1) == 0 && getsockname(taken, (struct sockaddr *)&addr, &addr_len) == 0);
    char admin[64];
    snprintf(admin, sizeof admin, "127.0.0.1:%d", ntohs(addr.sin_port));
    const char *busy_admin[] = {"--data",         data,  "--listen", "127.0.0.1:0",
                                "--admin-listen", admin, NULL};
    int code = run(busy_admin, NULL, out, sizeof out, err, sizeof err);
    printf("case %-26s exit=%d stderr=%s", "admin-listen port in use", code, err);
    CHECK_EQ_INT(code, 1);
    CHECK(strstr(err, "--admin-listen") != NULL);
    close(taken);
    if (check_failures == 0) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_exit();
}
