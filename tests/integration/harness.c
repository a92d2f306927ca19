/*
 * Integration test harness (see harness.h): spawning natterd on a free port
 * with a fresh data folder, stopping it by pid, and the REST and WebSocket
 * helpers the it_*.c tests share.
 */
#include "integration/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"

#define HARNESS_MAX_SERVERS 32
#define HARNESS_START_MS 10000
#define HARNESS_STOP_MS 10000

/* Every server started and not yet freed, for the exit hook. */
static nt_server *harness_live[HARNESS_MAX_SERVERS];
static bool harness_hooked;

static void harness__kill_all(void)
{
    for (int i = 0; i < HARNESS_MAX_SERVERS; i++)
        if (harness_live[i] && harness_live[i]->pid > 0) nth_kill(harness_live[i]);
}

static void harness__track(nt_server *srv, bool add)
{
    if (!harness_hooked) {
        atexit(harness__kill_all);
        harness_hooked = true;
    }
    for (int i = 0; i < HARNESS_MAX_SERVERS; i++) {
        if (add && !harness_live[i]) {
            harness_live[i] = srv;
            return;
        }
        if (!add && harness_live[i] == srv) {
            harness_live[i] = NULL;
            return;
        }
    }
}

static void harness__sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int nth_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* The source tree's web/ folder, found from this file's path, if present. */
static bool harness__web_dir(char *out, size_t cap)
{
    const char *me = __FILE__;
    const char *tail = strstr(me, "tests/integration/harness.c");
    if (!tail || me[0] != '/') return false;
    snprintf(out, cap, "%.*sweb", (int)(tail - me), me);
    struct stat st;
    return stat(out, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Forks and execs natterd; the child's output goes to the log. */
static int harness__spawn(nt_server *srv)
{
    const char *natterd = getenv("NATTERD");
    if (!natterd || !*natterd) {
        fprintf(stderr, "harness: NATTERD is not set (path of the natterd binary)\n");
        return -EINVAL;
    }
    char listen_arg[96];
    snprintf(listen_arg, sizeof listen_arg, "%s:%d", srv->host, srv->port);
    char web_dir[512];
    bool has_web = harness__web_dir(web_dir, sizeof web_dir);

    char args_copy[sizeof srv->extra_args];
    snprintf(args_copy, sizeof args_copy, "%s", srv->extra_args);
    char *argv[80];
    int argc = 0;
    argv[argc++] = (char *)natterd;
    argv[argc++] = "--listen";
    argv[argc++] = listen_arg;
    argv[argc++] = "--data";
    argv[argc++] = srv->data_dir;
    if (has_web) {
        argv[argc++] = "--web";
        argv[argc++] = web_dir;
    }
    char *save = NULL;
    for (char *tok = strtok_r(args_copy, " ", &save); tok && argc < 78;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;

    int log_fd = open(srv->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(log_fd);
        return err;
    }
    if (pid == 0) {
        /* If the test dies without its exit hook, the kernel kills us. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
        setenv("NATTER_ARGON2_FAST", "1", 1);
        execv(natterd, argv);
        fprintf(stderr, "harness: exec %s: %s\n", natterd, strerror(errno));
        _exit(127);
    }
    close(log_fd);
    srv->pid = pid;
    return 0;
}

/* Waits for /healthz; 0, or -1 if the process died or never answered. */
static int harness__wait_ready(nt_server *srv)
{
    uint64_t deadline = nt_mono_ns() + (uint64_t)HARNESS_START_MS * 1000000u;
    while (nt_mono_ns() < deadline) {
        int wstatus;
        pid_t done = waitpid(srv->pid, &wstatus, WNOHANG);
        if (done == srv->pid) {
            fprintf(stderr, "harness: natterd exited during start (status 0x%x)\n", wstatus);
            srv->pid = 0;
            return -1;
        }
        int status = 0;
        ntc_http_req req = {.method = "GET", .path = "/healthz", .timeout_ms = 1000};
        if (ntc_http_do(srv->host, srv->port, &req, &status, NULL, NULL) == 0 && status == 200)
            return 0;
        harness__sleep_ms(20);
    }
    fprintf(stderr, "harness: natterd did not answer /healthz within %d ms\n", HARNESS_START_MS);
    return -1;
}

nt_server *nth_start(const char *extra_args)
{
    nt_server *srv = calloc(1, sizeof *srv);
    if (!srv) return NULL;
    const char *base = getenv("NT_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(srv->dir, sizeof srv->dir, "%s/natterd-XXXXXX", base);
    if (!mkdtemp(srv->dir)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", srv->dir, strerror(errno));
        free(srv);
        return NULL;
    }
    snprintf(srv->data_dir, sizeof srv->data_dir, "%s/data", srv->dir);
    snprintf(srv->log_path, sizeof srv->log_path, "%s/natterd.log", srv->dir);
    mkdir(srv->data_dir, 0700);
    snprintf(srv->host, sizeof srv->host, "127.0.0.1");
    snprintf(srv->extra_args, sizeof srv->extra_args, "%s", extra_args ? extra_args : "");
    harness__track(srv, true);

    /* Another process may take the port between our probe and natterd's
     * bind: try a few ports. */
    for (int attempt = 0; attempt < 3; attempt++) {
        srv->port = nth_free_port();
        if (srv->port > 0 && harness__spawn(srv) == 0) {
            if (harness__wait_ready(srv) == 0) return srv;
            if (srv->pid > 0) nth_kill(srv);
        }
    }
    fprintf(stderr, "harness: could not start natterd\n");
    nth_free(srv, false);
    return NULL;
}

int nth_stop(nt_server *srv)
{
    if (srv->pid <= 0) return -ESRCH;
    kill(srv->pid, SIGTERM);
    uint64_t deadline = nt_mono_ns() + (uint64_t)HARNESS_STOP_MS * 1000000u;
    int wstatus = 0;
    for (;;) {
        pid_t done = waitpid(srv->pid, &wstatus, WNOHANG);
        if (done == srv->pid) break;
        if (done < 0 && errno != EINTR) {
            srv->pid = 0;
            return -1;
        }
        if (nt_mono_ns() >= deadline) {
            fprintf(stderr, "harness: natterd (pid %d) ignored SIGTERM for %d ms; killing it\n",
                    (int)srv->pid, HARNESS_STOP_MS);
            nth_kill(srv);
            return -1;
        }
        harness__sleep_ms(10);
    }
    srv->pid = 0;
    if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
    return -1;
}

int nth_restart(nt_server *srv)
{
    if (srv->pid > 0) {
        int status = nth_stop(srv);
        if (status != 0) return status;
    }
    if (harness__spawn(srv) != 0 || harness__wait_ready(srv) != 0) {
        fprintf(stderr, "harness: natterd did not come back; its log (%s):\n", srv->log_path);
        nth_dump_log(srv, 4000);
        if (srv->pid > 0) nth_kill(srv);
        return -1;
    }
    return 0;
}

void nth_kill(nt_server *srv)
{
    if (srv->pid <= 0) return;
    kill(srv->pid, SIGKILL);
    while (waitpid(srv->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    srv->pid = 0;
}

static int harness__rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

void nth_free(nt_server *srv, bool remove_dir)
{
    if (!srv) return;
    nth_kill(srv);
    harness__track(srv, false);
    if (remove_dir && srv->dir[0])
        nftw(srv->dir, harness__rm, 16, FTW_DEPTH | FTW_PHYS);
    else if (srv->dir[0]) {
        /* A CI run keeps only what is printed: the end of the log too. */
        fprintf(stderr, "harness: kept %s for inspection; the end of its log:\n", srv->dir);
        nth_dump_log(srv, 4000);
    }
    free(srv);
}

void nth_dump_log(const nt_server *srv, size_t bytes)
{
    FILE *f = fopen(srv->log_path, "r");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    if (size > (long)bytes)
        fseek(f, size - (long)bytes, SEEK_SET);
    else
        fseek(f, 0, SEEK_SET);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, stderr);
    fclose(f);
}

bool nth_healthy(const nt_server *srv)
{
    int status = 0;
    ntc_http_req req = {.method = "GET", .path = "/healthz", .timeout_ms = 5000};
    return ntc_http_do(srv->host, srv->port, &req, &status, NULL, NULL) == 0 && status == 200;
}

/* ---- REST and accounts ---------------------------------------------------------- */

int nth_api(const nt_server *srv, const char *method, const char *path, const char *token,
            const char *body, nt_buf *resp)
{
    int status = 0;
    ntc_http_req req = {.method = method, .path = path, .bearer = token, .body = body};
    int rc = ntc_http_do(srv->host, srv->port, &req, &status, NULL, resp);
    if (resp) nt_buf_cstr(resp);
    return rc ? rc : status;
}

int nth_register(const nt_server *srv, const char *prefix, nth_user *out)
{
    static unsigned counter;
    memset(out, 0, sizeof *out);
    char nickname[33];
    snprintf(nickname, sizeof nickname, "%.12s%u_%u", prefix ? prefix : "u",
             (unsigned)getpid() % 100000u, ++counter);
    snprintf(out->email, sizeof out->email, "%s@example.test", nickname);
    snprintf(out->password, sizeof out->password, "pw-%s-secret", nickname);
    int rc = ntc_register(srv->host, srv->port, out->email, out->password, nickname, &out->s);
    if (rc)
        fprintf(stderr, "harness: register %s failed: %d (HTTP %d)\n", nickname, rc,
                out->s.http_status);
    return rc;
}

ntc_conn *nth_connect(const nt_server *srv, const nth_user *u)
{
    ntc_conn *c = ntc_conn_connect_blocking(srv->host, srv->port, NTH_WAIT_MS);
    if (!c) {
        fprintf(stderr, "harness: WebSocket connect failed: %s\n", strerror(errno));
        return NULL;
    }
    int rc = ntc_conn_auth(c, u->s.access_token, NTH_WAIT_MS);
    if (rc) {
        fprintf(stderr, "harness: auth of %s failed: %d (close %d)\n", u->s.nickname, rc,
                ntc_conn_close_code(c));
        ntc_conn_free(c);
        return NULL;
    }
    return c;
}

int64_t nth_direct_chat(const nt_server *srv, const nth_user *a, const nth_user *b)
{
    char body[96];
    snprintf(body, sizeof body, "{\"type\":\"direct\",\"user_id\":%lld}", (long long)b->s.user_id);
    nt_buf resp = NT_BUF_INIT;
    int status = nth_api(srv, "POST", "/api/v1/chats", a->s.access_token, body, &resp);
    int64_t id = -1;
    if ((status != 200 && status != 201) || ntc_json_int(resp.data, resp.len, "id", &id) != 0) {
        fprintf(stderr, "harness: direct chat failed: HTTP %d %s\n", status,
                resp.data ? resp.data : "");
        id = -1;
    }
    nt_buf_free(&resp);
    return id;
}

/* ---- WebSocket conveniences ---------------------------------------------------------- */

int nth_send(ntc_conn *c, const char *req_id, int64_t chat_id, const char *text,
             const char *client_id)
{
    nt_buf frame = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &frame);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "send");
    if (req_id) nt_jw_kstr(&w, "id", req_id);
    nt_jw_kint(&w, "chat_id", chat_id);
    nt_jw_kstr(&w, "text", text);
    if (client_id) nt_jw_kstr(&w, "client_id", client_id);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0) rc = ntc_conn_send_textn(c, frame.data, frame.len);
    nt_buf_free(&frame);
    return rc;
}

bool nth_filter_match(const char *json, size_t len, void *arg)
{
    const nth_filter *f = arg;
    if (f->type && !ntc_json_is_type(json, len, f->type)) return false;
    if (f->int_path) {
        int64_t v;
        if (ntc_json_int(json, len, f->int_path, &v) != 0 || v != f->int_value) return false;
    }
    if (f->int_path2) {
        int64_t v;
        if (ntc_json_int(json, len, f->int_path2, &v) != 0 || v != f->int_value2) return false;
    }
    if (f->str_path) {
        char s[256];
        if (ntc_json_str(json, len, f->str_path, s, sizeof s) < 0 || strcmp(s, f->str_value))
            return false;
    }
    return true;
}

int nth_wait_for(ntc_conn *c, const nth_filter *f, int timeout_ms, const char **json, size_t *len)
{
    return ntc_conn_wait_match(c, nth_filter_match, (void *)f, timeout_ms, json, len);
}

/* An ack or an error frame whose "id" is the request id. */
static bool harness__is_answer(const char *json, size_t len, void *arg)
{
    char id[128];
    if (!ntc_json_is_type(json, len, "ack") && !ntc_json_is_type(json, len, "error")) return false;
    return ntc_json_str(json, len, "id", id, sizeof id) >= 0 && strcmp(id, arg) == 0;
}

int nth_wait_ack(ntc_conn *c, const char *req_id, int timeout_ms, int64_t *seq, int64_t *message_id,
                 char *err_code, size_t err_cap)
{
    const char *json;
    size_t len;
    int rc = ntc_conn_wait_match(c, harness__is_answer, (void *)req_id, timeout_ms, &json, &len);
    if (rc <= 0) return rc;
    if (ntc_json_is_type(json, len, "error")) {
        if (err_code && ntc_json_str(json, len, "code", err_code, err_cap) < 0 && err_cap)
            err_code[0] = '\0';
        return 2;
    }
    if (seq && ntc_json_int(json, len, "seq", seq) != 0) *seq = -1;
    if (message_id && ntc_json_int(json, len, "message_id", message_id) != 0) *message_id = -1;
    return 1;
}

int nth_wait_message(ntc_conn *c, int64_t chat_id, int64_t want_seq, int timeout_ms, int64_t *seq,
                     char *text, size_t text_cap)
{
    nth_filter f = {.type = "message", .int_path = "message.chat_id", .int_value = chat_id};
    if (want_seq > 0) {
        f.int_path2 = "message.seq";
        f.int_value2 = want_seq;
    }
    const char *json;
    size_t len;
    int rc = nth_wait_for(c, &f, timeout_ms, &json, &len);
    if (rc <= 0) return rc;
    if (seq && ntc_json_int(json, len, "message.seq", seq) != 0) *seq = -1;
    if (text && ntc_json_str(json, len, "message.text", text, text_cap) < 0 && text_cap)
        text[0] = '\0';
    return 1;
}
