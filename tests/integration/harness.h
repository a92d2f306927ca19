/*
 * Integration test harness: starts the real natterd (the binary named by the
 * NATTERD environment variable) on a free loopback port with its own fresh
 * data folder under NT_TEST_TMP, and gives the tests short helpers to
 * register users, open authenticated WebSockets, call the REST API and wait
 * for particular events, all through libnatter.
 *
 * Servers are always handled by pid, never by name. A server still running
 * when the test exits (or crashes: the child asks the kernel to kill it when
 * its parent dies) is killed.
 *
 * Checks come from tests/unit/check.h (CHECK, CHECK_EQ_INT, CHECK_STR_EQ,
 * check_exit); REQUIRE and the case markers below add what black-box tests
 * need. Each it_*.c file is one program whose main() returns check_exit().
 */
#ifndef NT_TEST_HARNESS_H
#define NT_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "client/natter.h"
#include "unit/check.h"

typedef struct nt_server {
    char host[64];
    int port;
    pid_t pid;     /* 0 when not running */
    char dir[512]; /* the server's temp folder: data/ and natterd.log */
    char data_dir[600];
    char log_path[600];
    char extra_args[1024];
} nt_server;

/*
 * Starts natterd with --listen 127.0.0.1:PORT --data DIR plus extra_args
 * (split on spaces; may be NULL) and NATTER_ARGON2_FAST=1 in its
 * environment, and waits until GET /healthz answers 200 (10 s at most).
 * Returns the server (free it with nth_free), or NULL after printing why
 * (and the server's log).
 */
nt_server *nth_start(const char *extra_args);

/* SIGTERM, then waits up to 10 s for the exit. Returns the exit status
 * (0..255), 128 + the signal if a signal ended it, or -1 if it had to be
 * killed with SIGKILL after the timeout (a failure). -ESRCH if not running. */
int nth_stop(nt_server *srv);

/* A loopback port the kernel just gave out and that is free again (another
 * process may still take it before it is bound; -1 on failure). */
int nth_free_port(void);

/* Stops the server (as nth_stop) and starts it again on the same port and
 * data folder. Returns nth_stop's status if that was not 0, -1 if the new
 * process did not come up, else 0. */
int nth_restart(nt_server *srv);

/* SIGKILL and reap, at once. */
void nth_kill(nt_server *srv);

/* Kills the server if it still runs and frees it; removes its temp folder
 * only when `remove_dir` (pass check_failures == 0 to keep the logs of a
 * failed run; its last 4,000 bytes are printed then, since a CI run keeps
 * only its output). NULL is a no-op. */
void nth_free(nt_server *srv, bool remove_dir);

/* Prints the last `bytes` of the server's log to stderr. */
void nth_dump_log(const nt_server *srv, size_t bytes);

/* True if GET /healthz answers 200 within 5 s. */
bool nth_healthy(const nt_server *srv);

/* ---- REST and accounts ------------------------------------------------------ */

/* One REST call; returns the HTTP status, or a negative errno if no answer
 * came. resp (may be NULL) receives the body, NUL-terminated. */
int nth_api(const nt_server *srv, const char *method, const char *path, const char *token,
            const char *body, nt_buf *resp);

typedef struct nth_user {
    ntc_session s; /* user_id, nickname, access_token, refresh_token */
    char email[128];
    char password[64];
} nth_user;

/* Registers a fresh user with a unique nickname that starts with `prefix`
 * (at most 12 characters, may be NULL). 0 or a negative errno. */
int nth_register(const nt_server *srv, const char *prefix, nth_user *out);

/* Opens a WebSocket and authenticates as u; NULL on failure (printed). */
ntc_conn *nth_connect(const nt_server *srv, const nth_user *u);

/* POST /api/v1/chats {"type":"direct","user_id": b} as a; the chat id, or
 * a negative number on failure. */
int64_t nth_direct_chat(const nt_server *srv, const nth_user *a, const nth_user *b);

/* ---- WebSocket conveniences --------------------------------------------------- */

/* Queues {"type":"send","id":req_id,"chat_id","text","client_id"} (client_id
 * and req_id may be NULL: then they are left out). 0 or a negative errno. */
int nth_send(ntc_conn *c, const char *req_id, int64_t chat_id, const char *text,
             const char *client_id);

/* What a received frame must look like to be picked (see nth_wait_for). */
typedef struct nth_filter {
    const char *type;     /* top-level "type", or NULL for any */
    const char *int_path; /* if set, the integer at this path must be int_value */
    int64_t int_value;
    const char *int_path2; /* a second integer condition, if set */
    int64_t int_value2;
    const char *str_path; /* if set, the string at this path must be str_value */
    const char *str_value;
} nth_filter;

bool nth_filter_match(const char *json, size_t len, void *filter);

/* Waits for the first frame that matches; others stay queued (see
 * ntc_conn_wait_match). 1, 0 on timeout, or a negative errno. */
int nth_wait_for(ntc_conn *c, const nth_filter *f, int timeout_ms, const char **json, size_t *len);

/* Waits for the ack (or error) answering request req_id. Returns 1 for an
 * ack (seq and message_id filled when not NULL), 2 for an error frame (its
 * code copied to err_code when not NULL), 0 on timeout, <0 if closed. */
int nth_wait_ack(ntc_conn *c, const char *req_id, int timeout_ms, int64_t *seq, int64_t *message_id,
                 char *err_code, size_t err_cap);

/* Waits for a "message" event of chat_id (with seq want_seq, or any seq if
 * want_seq is 0); fills seq (and text when not NULL). 1, 0 on timeout, <0
 * if closed. */
int nth_wait_message(ntc_conn *c, int64_t chat_id, int64_t want_seq, int timeout_ms, int64_t *seq,
                     char *text, size_t text_cap);

/* ---- test structure -------------------------------------------------------------- */

/* The default wait for anything the server should do promptly. */
#define NTH_WAIT_MS 10000

/* Like CHECK, but returns from the (void) calling function when it fails:
 * for steps the rest of a case depends on. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Marks the start and the end of a named case; the end prints PASS or FAIL
 * by whether any check failed in between. */
static int nth_case_failures_;
static const char *nth_case_name_;

static inline void nth_case_begin(const char *name)
{
    nth_case_name_ = name;
    nth_case_failures_ = check_failures;
    printf("--- %s\n", name);
    fflush(stdout);
}

static inline bool nth_case_end(void)
{
    bool ok = check_failures == nth_case_failures_;
    printf("%s %s\n", ok ? "PASS" : "FAIL", nth_case_name_);
    fflush(stdout);
    return ok;
}

/* Runs `fn(srv)` as a named case. */
#define NTH_CASE(name, fn, srv)                                                                    \
    do {                                                                                           \
        nth_case_begin(name);                                                                      \
        fn(srv);                                                                                   \
        nth_case_end();                                                                            \
    } while (0)

#endif
