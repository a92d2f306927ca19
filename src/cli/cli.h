/*
 * natter, the terminal client: the pieces its source files share. main.c
 * parses the command line and dispatches; creds.c keeps the saved session in
 * ~/.config/natter/credentials; api.c talks REST to natterd (refreshing an
 * expired access token on the way) and resolves chat names; script.c holds
 * the one-shot commands (login, send, tail, history...); app.c is the
 * interactive client (slash commands, live events, reconnects) with two faces,
 * a plain line mode (plain.c) and a full-screen ncurses one (tui.c); pow.c
 * checks the bot's proof-of-work replies.
 *
 * Every command returns one of the exit codes below after printing at most
 * one line "natter: ..." on stderr.
 */
#ifndef NT_CLI_H
#define NT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/natter.h"
#include "common/buf.h"

/* Exit codes (documented in docs/cli.md and --help). */
enum {
    NT_CLI_OK = 0,
    NT_CLI_ERR = 1,   /* server or runtime error (server down, 5xx, 404...) */
    NT_CLI_USAGE = 2, /* bad arguments */
    NT_CLI_AUTH = 3,  /* login rejected, or not logged in */
};

#define NT_CLI_DEFAULT_SERVER "http://127.0.0.1:8080"

/* ---- credentials (creds.c) ------------------------------------------------ */

typedef struct nt_cli_creds {
    char server[256]; /* URL as given, e.g. http://127.0.0.1:8080 */
    int64_t user_id;
    char nickname[64];
    char access_token[1024];
    char refresh_token[512];
} nt_cli_creds;

/* Path of the credentials file ($XDG_CONFIG_HOME or ~/.config, then
 * natter/credentials) into out[0..cap). 0 or -ENOENT (no HOME), -ENAMETOOLONG. */
int nt_cli_creds_path(char *out, size_t cap);

/* Reads the saved credentials. 0, -ENOENT if there are none, -EINVAL if the
 * file is not understood, or another negative errno. */
int nt_cli_creds_load(nt_cli_creds *out);

/* Writes them (folder 0700, file 0600, replaced atomically). 0 or -errno. */
int nt_cli_creds_save(const nt_cli_creds *c);

/* Removes the file; 0 or -errno (-ENOENT if there was none). */
int nt_cli_creds_remove(void);

/* ---- talking to the server (api.c) ------------------------------------------ */

typedef struct nt_cli_ctx {
    char server[256]; /* the URL in use */
    char host[200];
    int port;
    bool have_creds;  /* creds hold a session for this server */
    bool creds_dirty; /* tokens were rotated: save them */
    nt_cli_creds creds;
} nt_cli_ctx;

/* Splits "http://host:port[/]" (scheme optional, port default 80) into
 * ctx->host / ctx->port and copies the URL. 0 or -EINVAL (printed). */
int nt_cli_set_server(nt_cli_ctx *ctx, const char *url);

/* The server named by --server (may be NULL), else NATTER_SERVER, else the
 * saved credentials' server, else the default; loads the saved session if it
 * is for that server. Returns an exit code (NT_CLI_OK or NT_CLI_USAGE). */
int nt_cli_ctx_init(nt_cli_ctx *ctx, const char *server_flag);

/* NT_CLI_OK if ctx holds a session, else prints "not logged in" and returns
 * NT_CLI_AUTH. */
int nt_cli_need_login(nt_cli_ctx *ctx);

/*
 * One authenticated REST call (JSON body or NULL). On 401 it refreshes the
 * access token with the refresh token once, saves the rotated tokens and
 * retries. Returns the HTTP status (>= 100), or a negative errno when no
 * answer came. resp (may be NULL) receives the body, NUL-terminated.
 */
int nt_cli_api(nt_cli_ctx *ctx, const char *method, const char *path, const char *body,
               nt_buf *resp);

/*
 * Turns the outcome of nt_cli_api into an exit code, printing one line when
 * it is not a 2xx: "cannot connect to HOST:PORT: ..." for transport errors,
 * "WHAT: <server message> (HTTP n)" otherwise, with a hint for 404/405/503
 * ("the server does not offer this yet"). 401 maps to NT_CLI_AUTH.
 * what may be NULL.
 */
int nt_cli_check(nt_cli_ctx *ctx, int status, const nt_buf *resp, const char *what);

/* Same as nt_cli_check but writes the message into msg (for the interactive
 * client) instead of stderr; returns true when the status was 2xx. */
bool nt_cli_describe(nt_cli_ctx *ctx, int status, const nt_buf *resp, char *msg, size_t cap);

/* Refreshes the access token now. 0, -EACCES if the refresh token was
 * refused, or another negative errno. */
int nt_cli_refresh(nt_cli_ctx *ctx);

/* Saves rotated tokens if any; call before exit. */
void nt_cli_flush_creds(nt_cli_ctx *ctx);

/* Looks a user up by nickname (a leading '@' is skipped): *user_id and, if
 * nick is not NULL, the canonical nickname. HTTP status or negative errno;
 * resp receives the body. */
int nt_cli_user_by_nick(nt_cli_ctx *ctx, const char *nickname, int64_t *user_id, char *nick,
                        size_t nick_cap, nt_buf *resp);

/*
 * Resolves a CHAT argument: a chat id, "@nickname" (the direct chat with that
 * user, created if needed) or "#title" (a group or channel of the user, by
 * title, case-insensitively). On success *chat_id is set and NT_CLI_OK
 * returned; otherwise the error is printed (or, if msg is not NULL, written
 * there) and an exit code returned.
 */
int nt_cli_resolve_chat(nt_cli_ctx *ctx, const char *spec, int64_t *chat_id, char *msg, size_t cap);

/* Calls fn with the raw JSON text of each element of the array under the
 * top-level `key` (or of the root array when key is NULL). Returns the
 * number of elements, or a negative errno if the text is not such JSON. */
int nt_cli_json_each(const char *json, size_t len, const char *key,
                     void (*fn)(const char *raw, size_t raw_len, void *arg), void *arg);

/* Finds the raw JSON text of the value under the top-level `key`. 0 or
 * -ENOENT / -EINVAL. */
int nt_cli_json_raw(const char *json, size_t len, const char *key, const char **raw,
                    size_t *raw_len);

/* Percent-encodes s for a URL path segment or query value. */
void nt_cli_urlenc(nt_buf *out, const char *s);

/* ---- script commands (script.c) ----------------------------------------------- */

/* Each takes the arguments after the command name (argv[0] is the command)
 * and the global --server flag, and returns an exit code. */
int nt_cli_cmd_login(int argc, char **argv, const char *server);
int nt_cli_cmd_register(int argc, char **argv, const char *server);
int nt_cli_cmd_logout(int argc, char **argv, const char *server);
int nt_cli_cmd_send(int argc, char **argv, const char *server);
int nt_cli_cmd_tail(int argc, char **argv, const char *server);
int nt_cli_cmd_history(int argc, char **argv, const char *server);
int nt_cli_cmd_users(int argc, char **argv, const char *server);
int nt_cli_cmd_chats(int argc, char **argv, const char *server);

/* Reads a password from the terminal without echo (or a line from stdin
 * when it is not a terminal). 0, or -EIO / -ENOENT on end of input. */
int nt_cli_read_secret(const char *prompt, char *out, size_t cap);

/* Reads one line from the terminal / stdin after printing the prompt on
 * stderr. 0 or -ENOENT at end of input. */
int nt_cli_read_line(const char *prompt, char *out, size_t cap);

/* Signs in (login or register) and saves the session; used by `natter login`,
 * `natter register` and the interactive start. Prints errors. Exit code. */
int nt_cli_sign_in(nt_cli_ctx *ctx, bool register_new, const char *login, const char *password,
                   const char *email);

/* ---- proof of work (pow.c) ------------------------------------------------------- */

/* Reverses UTF-8 text by code point into out (replacing its content).
 * 0 or -ENOMEM / -EINVAL (not UTF-8). */
int nt_cli_reverse_utf8(const char *s, size_t len, nt_buf *out);

/* Checks a bot reply: `original` (the text without its !pow suffix), the
 * decimal nonce, the claimed lowercase hex hash and bits. True if
 * SHA-256(original || nonce) equals hash and its first `bits` bits are 0. */
bool nt_cli_pow_verify(const char *original, size_t len, const char *nonce, const char *hash,
                       int bits);

/* ---- interactive client (app.c, plain.c, tui.c) ------------------------------------- */

/* Runs the interactive client: full screen if `tui`, else line mode.
 * Returns an exit code. */
int nt_cli_interactive(int argc, char **argv, const char *server, bool force_plain);

#endif
