/*
 * Integration test of natter, the terminal client, against a real natterd.
 * Script mode end to end (register, login, send, history --after, users
 * search, chats, tail following another user's messages and surviving a
 * server restart without losing or repeating one, token refresh, exit codes
 * 1/2/3, the credentials file's mode) and the full-screen mode driven in
 * tmux: sign in through the prompts, /chat NICK, send, and see the other
 * side's reply on the screen.
 *
 * natter is found next to natterd (dirname of $NATTERD). Every child is
 * handled by pid; the tmux session runs on a private tmux server (-L) under
 * a unique name and is killed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "integration/harness.h"

static char natter_bin[1024];
static char base_dir[512];  /* temp folder for config dirs */
static char cfg_alice[600]; /* XDG_CONFIG_HOME of alice's natter */
static char cfg_empty[600]; /* one with no session */
static char server_url[128];
static nth_user bob; /* the other side, driven over libnatter */
static char alice_nick[40], alice_pass[40] = "alice-secret-pw";

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- running natter ----------------------------------------------------------------- */

typedef struct run_result {
    int code; /* exit code, or -1 if killed / not run */
    nt_buf out, err;
} run_result;

static void run_free(run_result *r)
{
    nt_buf_free(&r->out);
    nt_buf_free(&r->err);
}

/* Forks natter with args (NULL-terminated) and config dir cfg; its stdin is
 * `input` (NULL: /dev/null) and stdout/stderr pipes if the fds are given.
 * Returns the pid or -1. */
static pid_t spawn_natter(const char *cfg, const char *const *args, int *out_fd, int *err_fd,
                          int *in_fd)
{
    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, in_pipe[2] = {-1, -1};
    if ((out_fd && pipe2(out_pipe, O_CLOEXEC)) || (err_fd && pipe2(err_pipe, O_CLOEXEC)) ||
        (in_fd && pipe2(in_pipe, O_CLOEXEC)))
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        if (out_fd) dup2(out_pipe[1], STDOUT_FILENO);
        if (err_fd) dup2(err_pipe[1], STDERR_FILENO);
        if (in_fd) {
            dup2(in_pipe[0], STDIN_FILENO);
        } else {
            int null_fd = open("/dev/null", O_RDONLY);
            dup2(null_fd, STDIN_FILENO);
        }
        setenv("XDG_CONFIG_HOME", cfg, 1);
        setenv("HOME", base_dir, 1);
        unsetenv("NATTER_SERVER");
        unsetenv("NATTER_PASSWORD");
        const char *argv[40];
        int argc = 0;
        argv[argc++] = natter_bin;
        for (int i = 0; args[i] && argc < 39; i++)
            argv[argc++] = args[i];
        argv[argc] = NULL;
        execv(natter_bin, (char *const *)argv);
        _exit(127);
    }
    if (out_fd) {
        close(out_pipe[1]);
        *out_fd = out_pipe[0];
    }
    if (err_fd) {
        close(err_pipe[1]);
        *err_fd = err_pipe[0];
    }
    if (in_fd) {
        close(in_pipe[0]);
        *in_fd = in_pipe[1];
    }
    return pid;
}

/* Runs natter to the end (20 s at most) and collects its output. */
static run_result run_natter(const char *cfg, const char *input, const char *const *args)
{
    run_result r = {.code = -1, .out = NT_BUF_INIT, .err = NT_BUF_INIT};
    int out_fd = -1, err_fd = -1, in_fd = -1;
    pid_t pid = spawn_natter(cfg, args, &out_fd, &err_fd, input ? &in_fd : NULL);
    if (pid < 0) return r;
    if (input) {
        ssize_t w = write(in_fd, input, strlen(input));
        (void)w;
        close(in_fd);
    }
    uint64_t deadline = nt_mono_ns() + 20000000000ull;
    int open_fds = 2;
    while (open_fds > 0 && nt_mono_ns() < deadline) {
        struct pollfd p[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
        if (poll(p, 2, 200) <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents) continue;
            char chunk[4096];
            ssize_t n = read(p[i].fd, chunk, sizeof chunk);
            if (n > 0) {
                nt_buf_append(i ? &r.err : &r.out, chunk, (size_t)n);
            } else {
                close(p[i].fd);
                if (i)
                    err_fd = -1;
                else
                    out_fd = -1;
                open_fds--;
            }
        }
    }
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    int status = 0;
    if (open_fds > 0) kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && open_fds == 0) r.code = WEXITSTATUS(status);
    nt_buf_cstr(&r.out);
    nt_buf_cstr(&r.err);
    if (r.code != 0 && getenv("NT_TEST_VERBOSE"))
        fprintf(stderr, "  natter %s exited %d: %s", args[0] ? args[0] : "", r.code, r.err.data);
    return r;
}

/* Reads one line from fd within timeout_ms into line (without '\n'); keeps
 * what follows in *pending. 1, 0 on timeout, -1 at end of stream. */
static int read_line(int fd, nt_buf *pending, char *line, size_t cap, int timeout_ms)
{
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        char *nl = pending->len ? memchr(pending->data, '\n', pending->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - pending->data);
            snprintf(line, cap, "%.*s", (int)n, pending->data);
            nt_buf_consume(pending, n + 1);
            return 1;
        }
        uint64_t now = nt_mono_ns();
        if (now >= deadline) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - now) / 1000000u) + 1) <= 0) continue;
        char chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0) return -1;
        nt_buf_append(pending, chunk, (size_t)n);
    }
}

static void stop_child(pid_t pid, int *status)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, status, WNOHANG) == pid) return;
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    *status = -1;
}

/* ---- cases ----------------------------------------------------------------------------- */

static int64_t alice_id, chat_id;

static void case_register_login(nt_server *srv)
{
    const char *reg[] = {"--server",
                         server_url,
                         "register",
                         "--nickname",
                         alice_nick,
                         "--email",
                         "alice-cli@example.test",
                         NULL};
    char input[64];
    snprintf(input, sizeof input, "%s\n", alice_pass); /* the password from stdin */
    run_result r = run_natter(cfg_alice, input, reg);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.err.data, "logged in as") != NULL);
    run_free(&r);

    /* The credentials: folder 0700, file 0600, holding the session. */
    char path[700];
    struct stat st;
    snprintf(path, sizeof path, "%s/natter", cfg_alice);
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/natter/credentials", cfg_alice);
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    char text[4096] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    CHECK(ntc_json_int(text, n, "user_id", &alice_id) == 0 && alice_id > 0);
    CHECK(strstr(text, "refresh_token") != NULL);
    CHECK(strstr(text, server_url) != NULL);

    /* Login again with flags: a new session replaces the file. */
    const char *login[] = {"--server", server_url,   "login",    "--login",
                           alice_nick, "--password", alice_pass, NULL};
    r = run_natter(cfg_alice, NULL, login);
    CHECK_EQ_INT(r.code, 0);
    run_free(&r);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* A wrong password: exit 3 and one line on stderr. */
    const char *bad[] = {"--server",   server_url,         "login", "--login", alice_nick,
                         "--password", "not-the-password", NULL};
    r = run_natter(cfg_empty, NULL, bad);
    CHECK_EQ_INT(r.code, 3);
    CHECK(strstr(r.err.data, "natter: login rejected") != NULL);
    run_free(&r);
}

static void case_send_history(nt_server *srv)
{
    char to_bob[80];
    snprintf(to_bob, sizeof to_bob, "@%s", bob.s.nickname);
    for (int i = 1; i <= 3; i++) {
        char text[32];
        snprintf(text, sizeof text, "hello %d", i);
        const char *args[] = {"--server", server_url, "send", to_bob, text, NULL};
        run_result r = run_natter(cfg_alice, NULL, args);
        CHECK_EQ_INT(r.code, 0);
        int64_t seq = 0;
        CHECK(ntc_json_int(r.out.data, r.out.len, "seq", &seq) == 0);
        CHECK_EQ_INT(seq, i);
        if (i == 1) ntc_json_int(r.out.data, r.out.len, "chat_id", &chat_id);
        run_free(&r);
    }
    REQUIRE(chat_id > 0);
    /* Bob sees them over the API. */
    char path[96];
    nt_buf resp = NT_BUF_INIT;
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=2", (long long)chat_id);
    CHECK_EQ_INT(nth_api(srv, "GET", path, bob.s.access_token, NULL, &resp), 200);
    CHECK(strstr(resp.data, "hello 3") && !strstr(resp.data, "hello 2"));
    nt_buf_free(&resp);

    /* history --after 1: seq 2 and 3, one JSON line each, by chat id too. */
    char id_arg[32];
    snprintf(id_arg, sizeof id_arg, "%lld", (long long)chat_id);
    const char *hist[] = {"--server", server_url, "history", id_arg, "--after", "1", NULL};
    run_result r = run_natter(cfg_alice, NULL, hist);
    CHECK_EQ_INT(r.code, 0);
    char *second = strchr(r.out.data, '\n');
    CHECK(second && strchr(second + 1, '\n') && !strchr(second + 1, '\n')[1]);
    int64_t seq = 0;
    CHECK(ntc_json_int(r.out.data, second ? (size_t)(second - r.out.data) : 0, "seq", &seq) == 0);
    CHECK_EQ_INT(seq, 2);
    CHECK(strstr(r.out.data, "\"hello 3\"") != NULL);
    run_free(&r);

    /* history --limit from the start (after_seq 0). */
    const char *first[] = {"--server", server_url, "history", to_bob, "--limit", "1", NULL};
    r = run_natter(cfg_alice, NULL, first);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, "\"hello 1\"") && !strstr(r.out.data, "hello 2"));
    run_free(&r);

    /* users search by prefix, and the chat list. */
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%.5s", bob.s.nickname);
    const char *users[] = {"--server", server_url, "users", "search", prefix, NULL};
    r = run_natter(cfg_alice, NULL, users);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, bob.s.nickname) != NULL);
    run_free(&r);
    const char *users_json[] = {"--server", server_url, "users", "search", prefix, "--json", NULL};
    r = run_natter(cfg_alice, NULL, users_json);
    CHECK_EQ_INT(r.code, 0);
    CHECK(r.out.data[0] == '{' && strstr(r.out.data, "\"nickname\""));
    run_free(&r);
    const char *chats[] = {"--server", server_url, "chats", NULL};
    r = run_natter(cfg_alice, NULL, chats);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, to_bob) && strstr(r.out.data, "lobby"));
    run_free(&r);

    /* #title: the lobby channel. */
    const char *lobby[] = {"--server", server_url, "send", "#lobby", "hi", "all", NULL};
    r = run_natter(cfg_alice, NULL, lobby);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, "\"hi all\"") != NULL);
    run_free(&r);
}

/* Bob sends `text` in the chat over REST; returns the seq. */
static int64_t bob_sends(nt_server *srv, const char *text)
{
    char path[96], body[160];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    snprintf(body, sizeof body, "{\"text\":\"%s\"}", text);
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, "POST", path, bob.s.access_token, body, &resp);
    int64_t seq = -1;
    if (status != 201 || ntc_json_int(resp.data, resp.len, "seq", &seq) != 0)
        fprintf(stderr, "  bob's send failed: %d %s\n", status, resp.data ? resp.data : "");
    nt_buf_free(&resp);
    return seq;
}

static void case_tail(nt_server *srv)
{
    REQUIRE(chat_id > 0);
    char id_arg[32];
    snprintf(id_arg, sizeof id_arg, "%lld", (long long)chat_id);
    const char *args[] = {"--server", server_url, "tail", id_arg, NULL};
    int out_fd = -1, err_fd = -1;
    pid_t pid = spawn_natter(cfg_alice, args, &out_fd, &err_fd, NULL);
    REQUIRE(pid > 0);
    nt_buf pending = NT_BUF_INIT;
    char line[2048];
    int64_t want = 0, seq = 0;
    sleep_ms(500); /* let it subscribe (messages before that are skipped) */

    /* A message from the other user shows up as one JSON line. */
    want = bob_sends(srv, "bob live 1");
    CHECK(want > 0);
    CHECK_EQ_INT(read_line(out_fd, &pending, line, sizeof line, NTH_WAIT_MS), 1);
    CHECK(ntc_json_int(line, strlen(line), "seq", &seq) == 0 && seq == want);
    CHECK(strstr(line, "\"bob live 1\"") != NULL);

    /* The server restarts: tail reconnects and catches up. One message is
     * sent at once after the restart, likely before tail is back. */
    CHECK_EQ_INT(nth_restart(srv), 0);
    int64_t a = bob_sends(srv, "after restart 1");
    int64_t b = bob_sends(srv, "after restart 2");
    CHECK(a == want + 1 && b == want + 2);
    for (int64_t expect = want + 1; expect <= want + 2; expect++) {
        CHECK_EQ_INT(read_line(out_fd, &pending, line, sizeof line, 15000), 1);
        seq = 0;
        CHECK(ntc_json_int(line, strlen(line), "seq", &seq) == 0);
        CHECK_EQ_INT(seq, expect);
    }
    /* Live again, and nothing doubled. */
    sleep_ms(300);
    int64_t c = bob_sends(srv, "live again");
    CHECK_EQ_INT(read_line(out_fd, &pending, line, sizeof line, NTH_WAIT_MS), 1);
    seq = 0;
    CHECK(ntc_json_int(line, strlen(line), "seq", &seq) == 0 && seq == c);
    CHECK_EQ_INT(read_line(out_fd, &pending, line, sizeof line, 500), 0); /* no extra line */

    int status = 0;
    stop_child(pid, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(out_fd);
    close(err_fd);
    nt_buf_free(&pending);

    /* tail --count with --after reads from the history and stops. */
    const char *count[] = {"--server", server_url, "tail", id_arg, "--after",
                           "1",        "--count",  "2",    NULL};
    run_result r = run_natter(cfg_alice, NULL, count);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, "\"seq\":2") && strstr(r.out.data, "\"seq\":3") &&
          !strstr(r.out.data, "\"seq\":4"));
    run_free(&r);
}

static void case_refresh(nt_server *srv)
{
    /* Spoil the access token: the next call gets 401, refreshes, retries,
     * and saves the rotated tokens. */
    char path[700];
    snprintf(path, sizeof path, "%s/natter/credentials", cfg_alice);
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char old_refresh[512];
    REQUIRE(ntc_json_str(text, n, "refresh_token", old_refresh, sizeof old_refresh) > 0);
    char *tok = strstr(text, "\"access_token\":\"");
    REQUIRE(tok);
    tok += strlen("\"access_token\":\"");
    tok[0] = tok[0] == 'x' ? 'y' : 'x'; /* breaks the JWT header */
    f = fopen(path, "w");
    REQUIRE(f);
    fwrite(text, 1, n, f);
    fclose(f);

    const char *chats[] = {"--server", server_url, "chats", NULL};
    run_result r = run_natter(cfg_alice, NULL, chats);
    CHECK_EQ_INT(r.code, 0);
    run_free(&r);
    f = fopen(path, "r");
    REQUIRE(f);
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char new_refresh[512];
    CHECK(ntc_json_str(text, n, "refresh_token", new_refresh, sizeof new_refresh) > 0);
    CHECK(strcmp(new_refresh, old_refresh) != 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
}

static void case_exit_codes(nt_server *srv)
{
    static const char *const bad_args[][8] = {
        {"frobnicate", NULL},
        {"--bogus", NULL},
        {"send", NULL},
        {"send", "@x", NULL},
        {"history", NULL},
        {"history", "5", "--after", "minus", NULL},
        {"tail", "5", "--count", "0", NULL},
        {"users", "find", "x", NULL},
        {"--server", NULL},
    };
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        run_result r = run_natter(cfg_alice, NULL, (const char *const *)bad_args[i]);
        CHECK_EQ_INT(r.code, 2);
        CHECK(r.err.len > 0 && strchr(r.err.data, '\n') == r.err.data + r.err.len - 1);
        run_free(&r);
    }
    /* A bad CHAT argument is a usage error too. */
    const char *bad_chat[] = {"--server", server_url, "send", "not-a-chat", "x", NULL};
    run_result r = run_natter(cfg_alice, NULL, bad_chat);
    CHECK_EQ_INT(r.code, 2);
    run_free(&r);

    /* Help is exit 0. */
    const char *help[] = {"--help", NULL};
    r = run_natter(cfg_alice, NULL, help);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, "Exit codes") != NULL);
    run_free(&r);
    const char *cmd_help[] = {"tail", "--help", NULL};
    r = run_natter(cfg_alice, NULL, cmd_help);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(r.out.data, "usage: natter tail") != NULL);
    run_free(&r);

    /* Not logged in: 3. */
    const char *chats[] = {"--server", server_url, "chats", NULL};
    r = run_natter(cfg_empty, NULL, chats);
    CHECK_EQ_INT(r.code, 3);
    CHECK(strstr(r.err.data, "not logged in") != NULL);
    run_free(&r);

    /* The server is down: 1, "cannot connect to HOST:PORT: ...". */
    nth_stop(srv);
    char expect[128];
    snprintf(expect, sizeof expect, "natter: cannot connect to 127.0.0.1:%d: Connection refused",
             srv->port);
    r = run_natter(cfg_alice, NULL, chats);
    CHECK_EQ_INT(r.code, 1);
    CHECK(strstr(r.err.data, expect) != NULL);
    if (!strstr(r.err.data, expect)) fprintf(stderr, "  got: %s\n", r.err.data);
    run_free(&r);
    const char *login[] = {"--server", server_url,   "login",       "--login",
                           "x",        "--password", "whatever-pw", NULL};
    r = run_natter(cfg_empty, NULL, login);
    CHECK_EQ_INT(r.code, 1);
    CHECK(strstr(r.err.data, "cannot connect") != NULL);
    run_free(&r);
    CHECK_EQ_INT(nth_restart(srv), 0);
}

/* ---- tmux ------------------------------------------------------------------------------ */

static char tmux_socket[64], tmux_session[64];

/* Runs tmux -L SOCKET args...; returns its exit status. Output into out if
 * not NULL. */
static int tmux(nt_buf *out, const char *const *args)
{
    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(out_pipe[1], STDOUT_FILENO);
        int null_fd = open("/dev/null", O_RDWR);
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDERR_FILENO);
        const char *argv[32];
        int argc = 0;
        argv[argc++] = "tmux";
        argv[argc++] = "-u";
        argv[argc++] = "-L";
        argv[argc++] = tmux_socket;
        for (int i = 0; args[i] && argc < 31; i++)
            argv[argc++] = args[i];
        argv[argc] = NULL;
        execvp("tmux", (char *const *)argv);
        _exit(127);
    }
    close(out_pipe[1]);
    char chunk[4096];
    ssize_t n;
    while ((n = read(out_pipe[0], chunk, sizeof chunk)) > 0)
        if (out) nt_buf_append(out, chunk, (size_t)n);
    close(out_pipe[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out) nt_buf_cstr(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void tmux_keys(const char *keys, bool enter)
{
    const char *args[] = {"send-keys", "-t", tmux_session, "-l", keys, NULL};
    tmux(NULL, args);
    if (enter) {
        const char *e[] = {"send-keys", "-t", tmux_session, "Enter", NULL};
        tmux(NULL, e);
    }
}

/* Waits until the screen shows `text`; true if it did. */
static bool tmux_wait_screen(const char *text, int timeout_ms, nt_buf *screen)
{
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    do {
        nt_buf_reset(screen);
        const char *args[] = {"capture-pane", "-p", "-t", tmux_session, NULL};
        if (tmux(screen, args) == 0 && screen->data && strstr(screen->data, text)) return true;
        sleep_ms(100);
    } while (nt_mono_ns() < deadline);
    fprintf(stderr, "  the screen never showed '%s'; it shows:\n%s\n", text,
            screen->data ? screen->data : "");
    return false;
}

static void tmux_kill(void)
{
    const char *args[] = {"kill-session", "-t", tmux_session, NULL};
    tmux(NULL, args);
}

static void case_tui(nt_server *srv)
{
    const char *version[] = {"-V", NULL};
    snprintf(tmux_socket, sizeof tmux_socket, "natter-it-%d", (int)getpid());
    snprintf(tmux_session, sizeof tmux_session, "natter-it-%d", (int)getpid());
    if (tmux(NULL, version) != 0) {
        printf("SKIP tmux is not installed (apt-get install tmux)\n");
        return;
    }
    /* A fresh config dir: the client must sign in through its prompts. */
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/tui-config", base_dir);
    char command[4096];
    snprintf(command, sizeof command,
             "env LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=screen XDG_CONFIG_HOME='%s' HOME='%s' "
             "NATTER_SERVER='%s' '%s'; sleep 10",
             cfg, base_dir, server_url, natter_bin);
    const char *start[] = {"new-session", "-d", "-s", tmux_session, "-x",
                           "120",         "-y", "30", command,      NULL};
    REQUIRE(tmux(NULL, start) == 0);
    atexit(tmux_kill);

    ntc_conn *bob_ws = nth_connect(srv, &bob);
    nt_buf screen = NT_BUF_INIT;
    if (!bob_ws) goto out;

    CHECK(tmux_wait_screen("sign in (i) or sign up (u)?", NTH_WAIT_MS, &screen));
    tmux_keys("i", true);
    CHECK(tmux_wait_screen("login", NTH_WAIT_MS, &screen));
    tmux_keys(alice_nick, true);
    CHECK(tmux_wait_screen("password:", NTH_WAIT_MS, &screen));
    tmux_keys(alice_pass, true);
    CHECK(tmux_wait_screen("signed in as", NTH_WAIT_MS, &screen));

    char cmd[80];
    snprintf(cmd, sizeof cmd, "/chat %s", bob.s.nickname);
    tmux_keys(cmd, true);
    char opened[96];
    snprintf(opened, sizeof opened, "opened @%s", bob.s.nickname);
    CHECK(tmux_wait_screen(opened, NTH_WAIT_MS, &screen));
    CHECK(tmux_wait_screen("hello 3", NTH_WAIT_MS, &screen)); /* recent history */

    tmux_keys("hi bob from the terminal, caf\xc3\xa9", true);
    int64_t seq = 0;
    char text[128] = "";
    CHECK_EQ_INT(nth_wait_message(bob_ws, chat_id, 0, NTH_WAIT_MS, &seq, text, sizeof text), 1);
    CHECK_STR_EQ(text, "hi bob from the terminal, caf\xc3\xa9");
    CHECK(tmux_wait_screen("me: hi bob from the terminal, caf\xc3\xa9", NTH_WAIT_MS, &screen));

    /* Bob answers over the WebSocket: it appears on alice's screen. */
    CHECK_EQ_INT(nth_send(bob_ws, "r1", chat_id, "reply from bob over ws", NULL), 0);
    CHECK_EQ_INT(nth_wait_ack(bob_ws, "r1", NTH_WAIT_MS, NULL, NULL, NULL, 0), 1);
    char shown[128];
    snprintf(shown, sizeof shown, "%s: reply from bob over ws", bob.s.nickname);
    CHECK(tmux_wait_screen(shown, NTH_WAIT_MS, &screen));

    /* Alice's client marks it read: bob gets the receipt. */
    nth_filter f = {.type = "receipt",
                    .int_path = "chat_id",
                    .int_value = chat_id,
                    .int_path2 = "user_id",
                    .int_value2 = alice_id};
    const char *json;
    size_t len;
    CHECK_EQ_INT(nth_wait_for(bob_ws, &f, NTH_WAIT_MS, &json, &len), 1);

    /* /quit ends the client: the shell's sleep is what remains. */
    tmux_keys("/quit", true);
    sleep_ms(300);
    ntc_conn_close(bob_ws, NTH_WAIT_MS);
out:
    nt_buf_free(&screen);
    tmux_kill();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

int main(void)
{
    const char *natterd = getenv("NATTERD");
    if (!natterd || !*natterd) {
        fprintf(stderr, "it_cli: NATTERD is not set\n");
        return 1;
    }
    snprintf(natter_bin, sizeof natter_bin, "%s", natterd);
    char *slash = strrchr(natter_bin, '/');
    snprintf(slash ? slash + 1 : natter_bin,
             sizeof natter_bin - (size_t)(slash ? slash + 1 - natter_bin : 0), "natter");
    if (access(natter_bin, X_OK) != 0) {
        fprintf(stderr, "it_cli: %s is not there (build the natter target)\n", natter_bin);
        return 1;
    }
    const char *tmp = getenv("NT_TEST_TMP");
    if (!tmp || !*tmp) tmp = "/tmp";
    mkdir(tmp, 0755);
    snprintf(base_dir, sizeof base_dir, "%s/it_cli-XXXXXX", tmp);
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cfg_alice, sizeof cfg_alice, "%s/alice-config", base_dir);
    snprintf(cfg_empty, sizeof cfg_empty, "%s/empty-config", base_dir);
    snprintf(alice_nick, sizeof alice_nick, "alice%d", (int)getpid() % 100000);

    nt_server *srv = nth_start(NULL);
    if (!srv) return 1;
    snprintf(server_url, sizeof server_url, "http://%s:%d", srv->host, srv->port);
    if (nth_register(srv, "bob", &bob) != 0) {
        nth_free(srv, false);
        return 1;
    }

    NTH_CASE("register, login, credentials file, wrong password", case_register_login, srv);
    NTH_CASE("send, history --after, users search, chats", case_send_history, srv);
    NTH_CASE("tail: live, across a restart, no loss or repeat", case_tail, srv);
    NTH_CASE("expired access token refreshed and saved", case_refresh, srv);
    NTH_CASE("exit codes 1, 2, 3 and help", case_exit_codes, srv);
    NTH_CASE("interactive mode in tmux", case_tui, srv);

    bool ok = check_failures == 0;
    nth_free(srv, ok);
    if (ok) nftw(base_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_exit();
}
