/*
 * The one-shot commands of the terminal client, for people at a shell and
 * for scripts: login, register, logout, send, tail, history, users search and
 * chats. Output meant for programs is JSON, one object a line, flushed per
 * line; everything else goes to stderr. `tail` keeps a WebSocket open and
 * survives dropped connections: it reconnects with backoff and reads what it
 * missed with after_seq, printing each seq exactly once and in order.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "common/json.h"

/* ---- prompts ------------------------------------------------------------------ */

static int script__read(const char *prompt, char *out, size_t cap, bool echo)
{
    FILE *in = stdin;
    bool tty = isatty(STDIN_FILENO);
    if (tty && prompt) {
        fputs(prompt, stderr);
        fflush(stderr);
    }
    struct termios old, quiet;
    bool changed = false;
    if (tty && !echo && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        changed = tcsetattr(STDIN_FILENO, TCSANOW, &quiet) == 0;
    }
    char *got = fgets(out, (int)cap, in);
    if (changed) tcsetattr(STDIN_FILENO, TCSANOW, &old);
    if (!got) return -ENOENT;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

int nt_cli_read_secret(const char *prompt, char *out, size_t cap)
{
    return script__read(prompt, out, cap, false);
}

int nt_cli_read_line(const char *prompt, char *out, size_t cap)
{
    return script__read(prompt, out, cap, true);
}

/* ---- login and register -------------------------------------------------------- */

int nt_cli_sign_in(nt_cli_ctx *ctx, bool register_new, const char *login, const char *password,
                   const char *email)
{
    char login_buf[256], pass_buf[1100], email_buf[256];
    if (!login || !*login) {
        if (nt_cli_read_line(register_new ? "nickname: " : "login (nickname or email): ", login_buf,
                             sizeof login_buf) != 0 ||
            !login_buf[0]) {
            fprintf(stderr, "natter: no login given\n");
            return NT_CLI_USAGE;
        }
        login = login_buf;
    }
    if (register_new && (!email || !*email)) {
        if (nt_cli_read_line("email: ", email_buf, sizeof email_buf) != 0 || !email_buf[0]) {
            fprintf(stderr, "natter: no email given\n");
            return NT_CLI_USAGE;
        }
        email = email_buf;
    }
    if (!password || !*password) password = getenv("NATTER_PASSWORD");
    if (!password || !*password) {
        if (nt_cli_read_secret("password: ", pass_buf, sizeof pass_buf) != 0 || !pass_buf[0]) {
            fprintf(stderr, "natter: no password given\n");
            return NT_CLI_USAGE;
        }
        password = pass_buf;
    }

    ntc_session s;
    memset(&s, 0, sizeof s);
    int rc = register_new ? ntc_register(ctx->host, ctx->port, email, password, login, &s)
                          : ntc_login(ctx->host, ctx->port, login, password, &s);
    if (rc) {
        if (s.http_status == 0) {
            fprintf(stderr, "natter: cannot connect to %s:%d: %s\n", ctx->host, ctx->port,
                    strerror(-rc));
            return NT_CLI_ERR;
        }
        switch (rc) {
        case -EACCES:
            fprintf(stderr, "natter: login rejected: wrong login or password\n");
            return NT_CLI_AUTH;
        case -EEXIST:
            fprintf(stderr, "natter: register rejected: that email or nickname is taken\n");
            return NT_CLI_AUTH;
        case -EINVAL:
            fprintf(stderr,
                    "natter: %s rejected: check the nickname (3-32 of A-Z a-z 0-9 _ . -), "
                    "email and password (at least 8 bytes)\n",
                    register_new ? "register" : "login");
            return NT_CLI_AUTH;
        case -EAGAIN:
            fprintf(stderr, "natter: too many attempts; try again later\n");
            return NT_CLI_ERR;
        default:
            fprintf(stderr, "natter: %s failed (HTTP %d)\n", register_new ? "register" : "login",
                    s.http_status);
            return NT_CLI_ERR;
        }
    }
    memset(&ctx->creds, 0, sizeof ctx->creds);
    snprintf(ctx->creds.server, sizeof ctx->creds.server, "%s", ctx->server);
    ctx->creds.user_id = s.user_id;
    snprintf(ctx->creds.nickname, sizeof ctx->creds.nickname, "%s", s.nickname);
    snprintf(ctx->creds.access_token, sizeof ctx->creds.access_token, "%s", s.access_token);
    snprintf(ctx->creds.refresh_token, sizeof ctx->creds.refresh_token, "%s", s.refresh_token);
    ctx->have_creds = true;
    rc = nt_cli_creds_save(&ctx->creds);
    if (rc) {
        fprintf(stderr, "natter: cannot save credentials: %s\n", strerror(-rc));
        return NT_CLI_ERR;
    }
    return NT_CLI_OK;
}

/* A usage error: one line on stderr. */
static int script__usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "natter %s: %s (see: natter %s --help)\n", cmd, msg, cmd);
    return NT_CLI_USAGE;
}

static const char login_help[] =
    "usage: natter login [--login NICK|EMAIL] [--password PW]\n"
    "Signs in and saves the session to ~/.config/natter/credentials (mode 0600).\n"
    "Without flags it prompts; the password may also come from NATTER_PASSWORD.\n";

static const char register_help[] =
    "usage: natter register [--nickname NICK] [--email EMAIL] [--password PW]\n"
    "Creates an account, signs in and saves the session. Prompts for what is missing;\n"
    "the password may also come from NATTER_PASSWORD.\n";

static int script__sign(int argc, char **argv, const char *server, bool register_new)
{
    static const struct option opts[] = {
        {"login", required_argument, NULL, 'l'}, {"nickname", required_argument, NULL, 'n'},
        {"email", required_argument, NULL, 'e'}, {"password", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    const char *login = NULL, *password = NULL, *email = NULL;
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (ch) {
        case 'l':
        case 'n':
            login = optarg;
            break;
        case 'e':
            email = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 'h':
            fputs(register_new ? register_help : login_help, stdout);
            return NT_CLI_OK;
        default:
            return script__usage(argv[0], "unknown option or missing value");
        }
    }
    if (optind < argc) return script__usage(argv[0], "unexpected argument");
    nt_cli_ctx ctx;
    int code = nt_cli_ctx_init(&ctx, server);
    if (code) return code;
    code = nt_cli_sign_in(&ctx, register_new, login, password, email);
    if (code == NT_CLI_OK)
        fprintf(stderr, "natter: logged in as %s (user %lld) on %s\n", ctx.creds.nickname,
                (long long)ctx.creds.user_id, ctx.server);
    return code;
}

int nt_cli_cmd_login(int argc, char **argv, const char *server)
{
    return script__sign(argc, argv, server, false);
}

int nt_cli_cmd_register(int argc, char **argv, const char *server)
{
    return script__sign(argc, argv, server, true);
}

/* Commands that take no options but --help. Returns -1 to go on, or an
 * exit code. */
static int script__simple_opts(int argc, char **argv, const char *help)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return NT_CLI_OK;
        }
        return script__usage(argv[0], "unknown option");
    }
    return -1;
}

static const char logout_help[] = "usage: natter logout\n"
                                  "Ends the saved session on the server and removes the "
                                  "credentials file.\n";

int nt_cli_cmd_logout(int argc, char **argv, const char *server)
{
    int code = script__simple_opts(argc, argv, logout_help);
    if (code >= 0) return code;
    if (optind < argc) return script__usage(argv[0], "unexpected argument");
    nt_cli_ctx ctx;
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx))) return code;
    nt_buf body = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "refresh_token", ctx.creds.refresh_token);
    nt_jw_obj_end(&w);
    int status = nt_cli_api(&ctx, "POST", "/api/v1/auth/logout", nt_buf_cstr(&body), NULL);
    nt_buf_free(&body);
    if (status < 0)
        fprintf(stderr, "natter: cannot reach the server; removing the local session anyway\n");
    nt_cli_creds_remove();
    return NT_CLI_OK;
}

/* ---- send ------------------------------------------------------------------------------ */

static const char send_help[] =
    "usage: natter send CHAT TEXT...\n"
    "Sends TEXT (the remaining arguments joined by spaces; \"-\" reads stdin) to CHAT:\n"
    "a chat id, @nickname (the direct chat with that user) or #title (your group or\n"
    "channel). Prints the stored message as one JSON line.\n";

static void script__print_line(const char *raw, size_t len, void *arg)
{
    fwrite(raw, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

int nt_cli_cmd_send(int argc, char **argv, const char *server)
{
    int code = script__simple_opts(argc, argv, send_help);
    if (code >= 0) return code;
    if (argc - optind < 2) return script__usage(argv[0], "needs CHAT and TEXT");
    nt_buf text = NT_BUF_INIT, body = NT_BUF_INIT, resp = NT_BUF_INIT, path = NT_BUF_INIT;
    if (!strcmp(argv[optind + 1], "-") && argc - optind == 2) {
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
            nt_buf_append(&text, chunk, n);
        while (text.len && (text.data[text.len - 1] == '\n' || text.data[text.len - 1] == '\r'))
            text.len--;
    } else {
        for (int i = optind + 1; i < argc; i++) {
            if (i > optind + 1) nt_buf_append(&text, " ", 1);
            nt_buf_append_str(&text, argv[i]);
        }
    }
    if (text.len == 0) {
        code = script__usage(argv[0], "empty TEXT");
        goto out;
    }
    nt_cli_ctx ctx;
    int64_t chat_id = 0;
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx)) ||
        (code = nt_cli_resolve_chat(&ctx, argv[optind], &chat_id, NULL, 0)))
        goto out;
    /* A client_id makes a retried send safe (the server returns the first). */
    char client_id[64];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(client_id, sizeof client_id, "cli-%d-%lld%09ld", (int)getpid(), (long long)now.tv_sec,
             now.tv_nsec);
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "text");
    nt_jw_strn(&w, text.data, text.len);
    nt_jw_kstr(&w, "client_id", client_id);
    nt_jw_obj_end(&w);
    nt_buf_appendf(&path, "/api/v1/chats/%lld/messages", (long long)chat_id);
    int status = nt_cli_api(&ctx, "POST", nt_buf_cstr(&path), nt_buf_cstr(&body), &resp);
    if (status < 0 && status != -ECONNREFUSED) /* maybe lost on the way: retry once */
        status = nt_cli_api(&ctx, "POST", nt_buf_cstr(&path), nt_buf_cstr(&body), &resp);
    code = nt_cli_check(&ctx, status, &resp, "send");
    if (code == NT_CLI_OK) script__print_line(resp.data, resp.len, NULL);
    nt_cli_flush_creds(&ctx);
out:
    nt_buf_free(&text);
    nt_buf_free(&body);
    nt_buf_free(&resp);
    nt_buf_free(&path);
    return code;
}

/* ---- history --------------------------------------------------------------------------- */

static const char history_help[] =
    "usage: natter history CHAT [--after SEQ] [--limit N]\n"
    "Prints the messages of CHAT with seq > SEQ (default 0), oldest first, one JSON\n"
    "line each; at most N of them if --limit is given (else all).\n";

static bool script__parse_i64(const char *s, int64_t min, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min) return false;
    *out = v;
    return true;
}

typedef struct page_state {
    int64_t last_seq; /* highest seq printed */
    int64_t left;     /* how many may still be printed; -1 = no limit */
    int64_t printed;
    bool gap; /* a seq other than last_seq + 1 came */
} page_state;

static void script__page_item(const char *raw, size_t len, void *arg)
{
    page_state *ps = arg;
    int64_t seq = 0;
    if (ps->left == 0 || ntc_json_int(raw, len, "seq", &seq) != 0 || seq <= ps->last_seq) return;
    script__print_line(raw, len, NULL);
    ps->last_seq = seq;
    ps->printed++;
    if (ps->left > 0) ps->left--;
}

/* Prints messages after ps->last_seq page by page until none are left (or
 * ps->left reaches 0). Returns the HTTP status of a failed page (or a
 * negative errno), or 200. */
static int script__catch_up(nt_cli_ctx *ctx, int64_t chat_id, page_state *ps, nt_buf *resp)
{
    for (;;) {
        int64_t want = ps->left < 0 || ps->left > 200 ? 200 : ps->left;
        if (want == 0) return 200;
        char path[160];
        /* The server reads after_seq=0 as "no cursor" (the newest page);
         * seqs start at 1 without gaps, so the first page is before_seq. */
        if (ps->last_seq == 0)
            snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?before_seq=%lld&limit=%lld",
                     (long long)chat_id, (long long)want + 1, (long long)want);
        else
            snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld&limit=%lld",
                     (long long)chat_id, (long long)ps->last_seq, (long long)want);
        int status = nt_cli_api(ctx, "GET", path, NULL, resp);
        if (status != 200) return status;
        int n = nt_cli_json_each(resp->data, resp->len, "messages", script__page_item, ps);
        if (n < 0) return -EPROTO;
        if (n < want) return 200;
    }
}

int nt_cli_cmd_history(int argc, char **argv, const char *server)
{
    static const struct option opts[] = {
        {"after", required_argument, NULL, 'a'},
        {"limit", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    page_state ps = {.last_seq = 0, .left = -1};
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            if (!script__parse_i64(optarg, 0, &ps.last_seq))
                return script__usage(argv[0], "--after takes a seq >= 0");
            break;
        case 'n':
            if (!script__parse_i64(optarg, 1, &ps.left))
                return script__usage(argv[0], "--limit takes a number >= 1");
            break;
        case 'h':
            fputs(history_help, stdout);
            return NT_CLI_OK;
        default:
            return script__usage(argv[0], "unknown option or missing value");
        }
    }
    if (argc - optind != 1) return script__usage(argv[0], "needs exactly one CHAT");
    nt_cli_ctx ctx;
    int64_t chat_id = 0;
    int code;
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx)) ||
        (code = nt_cli_resolve_chat(&ctx, argv[optind], &chat_id, NULL, 0)))
        return code;
    nt_buf resp = NT_BUF_INIT;
    int status = script__catch_up(&ctx, chat_id, &ps, &resp);
    code = status == -EPROTO ? NT_CLI_ERR : nt_cli_check(&ctx, status, &resp, "history");
    if (status == -EPROTO)
        fprintf(stderr, "natter: history: the server's answer is not understood\n");
    nt_buf_free(&resp);
    nt_cli_flush_creds(&ctx);
    return code;
}

/* ---- tail ------------------------------------------------------------------------------ */

static const char tail_help[] =
    "usage: natter tail CHAT [--after SEQ] [--count N]\n"
    "Follows CHAT and prints each new message as one JSON line (stdout flushed per\n"
    "line). Starts after the chat's last message, or after SEQ. Reconnects after a\n"
    "dropped connection and catches up, so no message is lost or printed twice.\n"
    "Stops after N messages with --count, else on SIGINT/SIGTERM.\n";

static volatile sig_atomic_t tail_stop;

static void tail__on_signal(int sig)
{
    tail_stop = 1;
}

static void tail__sleep_ms(int ms)
{
    /* In slices so a signal stops the wait soon. */
    while (ms > 0 && !tail_stop) {
        int slice = ms > 100 ? 100 : ms;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* Opens and authenticates a WebSocket; refreshes the token once if the
 * server refuses it. NULL with *why set: -EACCES for a dead session. */
static ntc_conn *tail__connect(nt_cli_ctx *ctx, int *why)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        ntc_conn *c = ntc_conn_connect_blocking(ctx->host, ctx->port, 5000);
        if (!c) {
            *why = -errno;
            return NULL;
        }
        int rc = ntc_conn_auth(c, ctx->creds.access_token, 5000);
        if (rc == 0) return c;
        ntc_conn_free(c);
        *why = rc;
        if (rc != -EACCES || attempt > 0) return NULL;
        rc = nt_cli_refresh(ctx);
        if (rc) {
            *why = rc == -EACCES ? -EACCES : rc;
            return NULL;
        }
    }
    return NULL;
}

int nt_cli_cmd_tail(int argc, char **argv, const char *server)
{
    static const struct option opts[] = {
        {"after", required_argument, NULL, 'a'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    page_state ps = {.last_seq = -1, .left = -1};
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            if (!script__parse_i64(optarg, 0, &ps.last_seq))
                return script__usage(argv[0], "--after takes a seq >= 0");
            break;
        case 'n':
            if (!script__parse_i64(optarg, 1, &ps.left))
                return script__usage(argv[0], "--count takes a number >= 1");
            break;
        case 'h':
            fputs(tail_help, stdout);
            return NT_CLI_OK;
        default:
            return script__usage(argv[0], "unknown option or missing value");
        }
    }
    if (argc - optind != 1) return script__usage(argv[0], "needs exactly one CHAT");
    nt_cli_ctx ctx;
    int64_t chat_id = 0;
    int code;
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx)) ||
        (code = nt_cli_resolve_chat(&ctx, argv[optind], &chat_id, NULL, 0)))
        return code;

    nt_buf resp = NT_BUF_INIT;
    char path[96];
    if (ps.last_seq < 0) {
        snprintf(path, sizeof path, "/api/v1/chats/%lld", (long long)chat_id);
        int status = nt_cli_api(&ctx, "GET", path, NULL, &resp);
        if ((code = nt_cli_check(&ctx, status, &resp, "tail")) != NT_CLI_OK) goto out;
        if (ntc_json_int(resp.data, resp.len, "last_seq", &ps.last_seq) != 0) ps.last_seq = 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tail__on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int backoff_ms = 0;
    while (!tail_stop && ps.left != 0) {
        if (backoff_ms) {
            tail__sleep_ms(backoff_ms + rand() % (backoff_ms / 4 + 1));
            backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
        } else {
            backoff_ms = 200;
        }
        int why = 0;
        ntc_conn *c = tail__connect(&ctx, &why);
        if (!c) {
            if (why == -EACCES) {
                fprintf(stderr, "natter: tail: the session was refused (run: natter login)\n");
                code = NT_CLI_AUTH;
                goto out;
            }
            fprintf(stderr, "natter: tail: cannot connect to %s:%d: %s; retrying\n", ctx.host,
                    ctx.port, strerror(-why));
            continue;
        }
        /* Subscribed now: what was stored before is in the history, what
         * comes after arrives on the socket; seq filters the overlap. */
        int status = script__catch_up(&ctx, chat_id, &ps, &resp);
        if (status != 200) {
            ntc_conn_free(c);
            if (status == 401) {
                code = nt_cli_check(&ctx, status, &resp, "tail");
                goto out;
            }
            continue;
        }
        backoff_ms = 0;
        while (!tail_stop && ps.left != 0) {
            const char *json;
            size_t len;
            int rc = ntc_conn_wait(c, 500, &json, &len);
            if (rc == 0) continue;
            if (rc < 0) break;
            int64_t cid = 0, seq = 0;
            if (!ntc_json_is_type(json, len, "message") ||
                ntc_json_int(json, len, "message.chat_id", &cid) != 0 || cid != chat_id ||
                ntc_json_int(json, len, "message.seq", &seq) != 0 || seq <= ps.last_seq)
                continue;
            if (seq == ps.last_seq + 1) {
                const char *raw;
                size_t raw_len;
                if (nt_cli_json_raw(json, len, "message", &raw, &raw_len) == 0)
                    script__page_item(raw, raw_len, &ps);
            } else if (script__catch_up(&ctx, chat_id, &ps, &resp) != 200) {
                break; /* a gap we cannot fill now: reconnect and retry */
            }
        }
        if (tail_stop || ps.left == 0) {
            ntc_conn_close(c, 1000);
            break;
        }
        ntc_conn_free(c);
        fprintf(stderr, "natter: tail: connection lost; reconnecting\n");
    }
    code = NT_CLI_OK;
out:
    nt_buf_free(&resp);
    nt_cli_flush_creds(&ctx);
    return code;
}

/* ---- users and chats --------------------------------------------------------------- */

static const char users_help[] =
    "usage: natter users search PREFIX [--json]\n"
    "Lists users whose nickname starts with PREFIX (case-insensitive): \"ID NICKNAME\"\n"
    "lines, or the user objects as JSON lines with --json.\n";

typedef struct list_state {
    bool json;
} list_state;

static void script__user_item(const char *raw, size_t len, void *arg)
{
    list_state *ls = arg;
    if (ls->json) {
        script__print_line(raw, len, NULL);
        return;
    }
    int64_t id = 0;
    char nick[64] = "";
    ntc_json_int(raw, len, "id", &id);
    ntc_json_str(raw, len, "nickname", nick, sizeof nick);
    char online[8] = "";
    if (ntc_json_has(raw, len, "online")) {
        /* A boolean: ntc_json_str fails on it, so peek at the text. */
        const char *p = strstr(raw, "\"online\":true");
        snprintf(online, sizeof online, "%s", p && p < raw + len ? " online" : "");
    }
    printf("%lld\t%s%s\n", (long long)id, nick, online);
}

/* Pulls --json out of argv (in place); true if it was there. */
static bool script__take_json_flag(int *argc, char **argv)
{
    bool found = false;
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        if (!strcmp(argv[i], "--json"))
            found = true;
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    return found;
}

int nt_cli_cmd_users(int argc, char **argv, const char *server)
{
    list_state ls = {.json = script__take_json_flag(&argc, argv)};
    int code = script__simple_opts(argc, argv, users_help);
    if (code >= 0) return code;
    if (argc - optind != 2 || strcmp(argv[optind], "search"))
        return script__usage(argv[0], "usage: natter users search PREFIX");
    const char *prefix = argv[optind + 1];
    if (!*prefix) return script__usage(argv[0], "empty PREFIX");
    nt_cli_ctx ctx;
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx))) return code;
    nt_buf path = NT_BUF_INIT, resp = NT_BUF_INIT;
    nt_buf_append_str(&path, "/api/v1/users?limit=200&q=");
    nt_cli_urlenc(&path, prefix);
    int status = nt_cli_api(&ctx, "GET", nt_buf_cstr(&path), NULL, &resp);
    code = nt_cli_check(&ctx, status, &resp, "users search");
    if (code == NT_CLI_OK &&
        nt_cli_json_each(resp.data, resp.len, "users", script__user_item, &ls) < 0) {
        fprintf(stderr, "natter: users search: the server's answer is not understood\n");
        code = NT_CLI_ERR;
    }
    fflush(stdout);
    nt_buf_free(&path);
    nt_buf_free(&resp);
    nt_cli_flush_creds(&ctx);
    return code;
}

static const char chats_help[] =
    "usage: natter chats [--json]\n"
    "Lists your chats, most recent first: \"ID TYPE UNREAD LAST_SEQ NAME\" lines (NAME\n"
    "is the title, or @nickname of the other member of a direct chat), or the chat\n"
    "objects as JSON lines with --json.\n";

typedef struct chats_state {
    bool json;
    nt_cli_ctx *ctx;
} chats_state;

static void script__chat_item(const char *raw, size_t len, void *arg)
{
    chats_state *cs = arg;
    if (cs->json) {
        script__print_line(raw, len, NULL);
        return;
    }
    int64_t id = 0, unread = 0, last_seq = 0;
    char type[32] = "", name[300] = "";
    ntc_json_int(raw, len, "id", &id);
    ntc_json_int(raw, len, "unread", &unread);
    ntc_json_int(raw, len, "last_seq", &last_seq);
    ntc_json_str(raw, len, "type", type, sizeof type);
    if (ntc_json_str(raw, len, "title", name, sizeof name) <= 0 && !strcmp(type, "direct")) {
        int n = ntc_json_count(raw, len, "members");
        for (int i = 0; i < n; i++) {
            char p[64];
            int64_t uid = 0;
            snprintf(p, sizeof p, "members.%d.user_id", i);
            if (ntc_json_int(raw, len, p, &uid) != 0 || uid == cs->ctx->creds.user_id) continue;
            nt_buf resp = NT_BUF_INIT;
            char upath[64], nick[64];
            snprintf(upath, sizeof upath, "/api/v1/users/%lld", (long long)uid);
            if (nt_cli_api(cs->ctx, "GET", upath, NULL, &resp) == 200 &&
                ntc_json_str(resp.data, resp.len, "nickname", nick, sizeof nick) > 0)
                snprintf(name, sizeof name, "@%s", nick);
            else
                snprintf(name, sizeof name, "user %lld", (long long)uid);
            nt_buf_free(&resp);
        }
    }
    printf("%lld\t%s\t%lld\t%lld\t%s\n", (long long)id, type, (long long)unread,
           (long long)last_seq, name);
}

int nt_cli_cmd_chats(int argc, char **argv, const char *server)
{
    nt_cli_ctx ctx;
    chats_state cs = {.json = script__take_json_flag(&argc, argv), .ctx = &ctx};
    int code = script__simple_opts(argc, argv, chats_help);
    if (code >= 0) return code;
    if (optind < argc) return script__usage(argv[0], "unexpected argument");
    if ((code = nt_cli_ctx_init(&ctx, server)) || (code = nt_cli_need_login(&ctx))) return code;
    nt_buf resp = NT_BUF_INIT;
    int status = nt_cli_api(&ctx, "GET", "/api/v1/chats?limit=200", NULL, &resp);
    code = nt_cli_check(&ctx, status, &resp, "chats");
    if (code == NT_CLI_OK &&
        nt_cli_json_each(resp.data, resp.len, "chats", script__chat_item, &cs) < 0) {
        fprintf(stderr, "natter: chats: the server's answer is not understood\n");
        code = NT_CLI_ERR;
    }
    fflush(stdout);
    nt_buf_free(&resp);
    nt_cli_flush_creds(&ctx);
    return code;
}
