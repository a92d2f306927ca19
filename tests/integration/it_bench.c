/*
 * natter-bench runs against a harness-started natterd: direct, group, idle
 * and login for about two seconds each at a low rate, and ingest as a short
 * search, each printing a JSON line that parses, with nothing lost or
 * duplicated; the match scenario at a tiny size (a few dozen waiting users,
 * two rates) pairs arrivals with waiting users and counts them; pow hands
 * over to natter-pow-bench for tiny proofs; natter-matcher-bench pairs at a
 * tiny size, the same way twice. No timing is asserted: benchmarks report,
 * tests do not judge speed. natter-bench is looked up next to the natterd
 * named by NATTERD.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "integration/harness.h"

static char bench_path[PATH_MAX], matcher_path[PATH_MAX];

/* Runs the program at path with the arguments in `args` (a shell-free
 * argv, NULL terminated) and returns its exit status; its stdout goes to
 * out. */
static int run_program(const char *path, const char *const *args, nt_buf *out)
{
    int fds[2];
    if (pipe(fds) != 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)args);
        _exit(127);
    }
    close(fds[1]);
    char chunk[4096];
    ssize_t n;
    while ((n = read(fds[0], chunk, sizeof chunk)) > 0)
        nt_buf_append(out, chunk, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    nt_buf_cstr(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_bench(const char *const *args, nt_buf *out)
{
    return run_program(bench_path, args, out);
}

static int64_t json_int(const nt_buf *b, const char *path)
{
    int64_t v = -1;
    if (ntc_json_int(b->data, b->len, path, &v) != 0) return -1;
    return v;
}

/* Checks the fields every load scenario must print. */
static void check_load_line(const nt_buf *out, int status)
{
    CHECK_EQ_INT(status, 0);
    REQUIRE(out->len > 0);
    REQUIRE(ntc_json_count(out->data, out->len, "") > 0); /* one JSON object */
    CHECK(json_int(out, "sent") > 0);
    CHECK(json_int(out, "acked") >= json_int(out, "sent"));
    CHECK(json_int(out, "deliveries") > 0);
    CHECK_EQ_INT(json_int(out, "errors"), 0);
    CHECK_EQ_INT(json_int(out, "lost"), 0);
    CHECK_EQ_INT(json_int(out, "duplicated"), 0);
    CHECK(ntc_json_has(out->data, out->len, "recv_ms.p99"));
    CHECK(ntc_json_has(out->data, out->len, "ack_ms.p99"));
    CHECK(ntc_json_has(out->data, out->len, "server_cpu_s"));
    CHECK(ntc_json_has(out->data, out->len, "bench_cpu_s"));
}

static char port_arg[16], pid_arg[16];

static void case_direct(nt_server *srv)
{
    const char *args[] = {bench_path, "--port",     port_arg, "--server-pid",
                          pid_arg,    "--duration", "2",      "--warmup",
                          "0.5",      "--pairs",    "4",      "--rate",
                          "20",       "--quiet",    "direct", NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    check_load_line(&out, status);
    nt_buf_free(&out);
}

static void case_group(nt_server *srv)
{
    const char *args[] = {bench_path,   "--port",    port_arg,   "--server-pid", pid_arg,
                          "--duration", "2",         "--warmup", "0.5",          "--groups",
                          "3",          "--members", "5",        "--rate",       "60",
                          "--procs",    "2",         "--quiet",  "group",        NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    check_load_line(&out, status);
    /* every member of a group gets every message of it */
    CHECK_EQ_INT(json_int(&out, "deliveries"), 5 * json_int(&out, "sent"));
    nt_buf_free(&out);
}

static void case_idle(nt_server *srv)
{
    const char *args[] = {bench_path, "--port", port_arg, "--server-pid", pid_arg, "--quiet",
                          "idle",     "20",     NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    CHECK_EQ_INT(status, 0);
    REQUIRE(out.len > 0);
    CHECK_EQ_INT(json_int(&out, "conns_ok"), 20);
    CHECK(ntc_json_has(out.data, out.len, "bytes_per_conn"));
    nt_buf_free(&out);
}

/* Tiny match runs: 60 users wait, 8 arrival connections join at 10 and 20
 * per second. Every arrival of the distribution is compatible with some of
 * the waiting users except the unmatchable ones by design (every 20th:
 * none of the 8 here), and 60 outlast the ~40 pairs of the two steps. */
static void case_match(nt_server *srv)
{
    const char *args[] = {bench_path,   "--port",     port_arg,   "--server-pid", pid_arg,
                          "--duration", "1.5",        "--warmup", "0.3",          "--waiting",
                          "60",         "--arrivals", "8",        "--match-wait", "0.5",
                          "--rates",    "10,20",      "--quiet",  "match",        NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    CHECK_EQ_INT(status, 0);
    REQUIRE(out.len > 0);
    REQUIRE(ntc_json_count(out.data, out.len, "") > 0);
    CHECK_EQ_INT(json_int(&out, "waiting"), 60);
    CHECK_EQ_INT(ntc_json_count(out.data, out.len, "steps"), 2);
    for (int i = 0; i < 2; i++) {
        char k[64];
#define STEP(field) (snprintf(k, sizeof k, "steps.%d.%s", i, field), k)
        CHECK(json_int(&out, STEP("joins")) > 0);
        CHECK(json_int(&out, STEP("matched")) > 0);
        CHECK(json_int(&out, STEP("matched")) + json_int(&out, STEP("unmatched")) <=
              json_int(&out, STEP("joins")));
        CHECK_EQ_INT(json_int(&out, STEP("errors")), 0);
        CHECK_EQ_INT(json_int(&out, STEP("unanswered")), 0);
        CHECK_EQ_INT(json_int(&out, STEP("waiting_start")), 60);
        CHECK(json_int(&out, STEP("pairs_total")) <= 60);
        CHECK(ntc_json_has(out.data, out.len, STEP("ttm_ms.p99")));
        CHECK(ntc_json_has(out.data, out.len, STEP("server_cpu_s")));
#undef STEP
    }
    nt_buf_free(&out);
}

/* ingest at a small size: the search steps up from 200 msgs/s until the
 * (generous) bound fails or 14 steps have run; the best step's load line is
 * whole and lost nothing. */
static void case_ingest(nt_server *srv)
{
    (void)srv;
    const char *args[] = {bench_path, "--port",    port_arg, "--server-pid", pid_arg,  "--duration",
                          "0.5",      "--warmup",  "0.2",    "--senders",    "4",      "--rate",
                          "200",      "--max-p99", "2000",   "--quiet",      "ingest", NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    check_load_line(&out, status);
    CHECK(json_int(&out, "best_rate") >= 200);
    CHECK(ntc_json_has(out.data, out.len, "steps.0.ack_p99"));
    nt_buf_free(&out);
}

/* login: a direct load with a login storm in its second half; every login
 * works and the load loses nothing. */
static void case_login(nt_server *srv)
{
    (void)srv;
    const char *args[] = {
        bench_path, "--port",          port_arg, "--server-pid", pid_arg, "--duration",
        "2",        "--warmup",        "0.5",    "--pairs",      "4",     "--rate",
        "20",       "--login-threads", "2",      "--quiet",      "login", NULL};
    nt_buf out = NT_BUF_INIT;
    int status = run_bench(args, &out);
    printf("%s", out.data ? out.data : "(no output)\n");
    check_load_line(&out, status);
    CHECK(json_int(&out, "logins") > 0);
    CHECK_EQ_INT(json_int(&out, "login_failures"), 0);
    nt_buf_free(&out);
}

/* pow: natter-bench hands over to natter-pow-bench (tiny proofs). */
static void case_pow(void *arg)
{
    (void)arg;
    const char *args[] = {bench_path, "--quiet", "pow",       "--bits", "8",
                          "--runs",   "3",       "--threads", "1",      NULL};
    nt_buf out = NT_BUF_INIT;
    CHECK_EQ_INT(run_bench(args, &out), 0);
    REQUIRE(out.len > 0);
    CHECK(json_int(&out, "hashes_per_sec_per_core") > 0);
    CHECK_EQ_INT(json_int(&out, "runs"), 3);
    CHECK_EQ_INT(json_int(&out, "bits"), 8);
    nt_buf_free(&out);
}

/* natter-matcher-bench at a tiny size: it pairs, and says how much it
 * examined. The same users twice give the same pairs (the checksum). */
static void case_matcher(void *arg)
{
    (void)arg;
    const char *args[] = {"natter-matcher-bench", "--waiting", "2000", "--arrivals", "400", NULL};
    nt_buf a = NT_BUF_INIT, b = NT_BUF_INIT;
    CHECK_EQ_INT(run_program(matcher_path, args, &a), 0);
    CHECK_EQ_INT(run_program(matcher_path, args, &b), 0);
    REQUIRE(a.len > 0);
    CHECK(strstr(a.data, "\"scenario\":\"matcher\"") != NULL);
    CHECK_EQ_INT(json_int(&a, "waiting"), 2000);
    int64_t paired = json_int(&a, "paired");
    CHECK(paired > 0 && paired <= 400);
    CHECK(strstr(a.data, "\"examined_per_offer\":") != NULL);
    const char *ca = strstr(a.data, "\"checksum\":"),
               *cb = b.data ? strstr(b.data, "\"checksum\":") : NULL;
    CHECK(ca && cb && strncmp(ca, cb, 30) == 0);
    const char *bad[] = {"natter-matcher-bench", "--waiting", "0", NULL};
    nt_buf c = NT_BUF_INIT;
    CHECK_EQ_INT(run_program(matcher_path, bad, &c), 2);
    nt_buf_free(&a);
    nt_buf_free(&b);
    nt_buf_free(&c);
}

int main(void)
{
    const char *natterd = getenv("NATTERD");
    if (!natterd) {
        fprintf(stderr, "NATTERD is not set\n");
        return 1;
    }
    snprintf(bench_path, sizeof bench_path, "%s", natterd);
    char *slash = strrchr(bench_path, '/');
    snprintf(slash ? slash + 1 : bench_path,
             sizeof bench_path - (size_t)(slash ? slash + 1 - bench_path : 0), "natter-bench");
    if (access(bench_path, X_OK) != 0) {
        fprintf(stderr, "%s not found next to natterd\n", bench_path);
        return 1;
    }
    snprintf(matcher_path, sizeof matcher_path, "%s", bench_path);
    slash = strrchr(matcher_path, '/');
    snprintf(slash ? slash + 1 : matcher_path,
             sizeof matcher_path - (size_t)(slash ? slash + 1 - matcher_path : 0),
             "natter-matcher-bench");
    /* --argon2-fast: the match case registers 68 users; no rate limits:
     * ingest steps far past --send-rate's default per sender, and the
     * bench measures the server, not the limiter */
    nt_server *srv = nth_start("--lobby-interval 0 --argon2-fast --send-rate 0 --login-failures 0");
    if (!srv) return 1;
    snprintf(port_arg, sizeof port_arg, "%d", srv->port);
    snprintf(pid_arg, sizeof pid_arg, "%d", (int)srv->pid);
    NTH_CASE("bench direct", case_direct, srv);
    NTH_CASE("bench group", case_group, srv);
    NTH_CASE("bench idle", case_idle, srv);
    NTH_CASE("bench match", case_match, srv);
    NTH_CASE("bench ingest", case_ingest, srv);
    NTH_CASE("bench login", case_login, srv);
    NTH_CASE("bench pow", case_pow, NULL);
    NTH_CASE("matcher bench", case_matcher, NULL);
    CHECK(nth_healthy(srv));
    nth_free(srv, check_failures == 0);
    return check_exit();
}
