/*
 * The fixture shared by the unit tests that drive the service handlers
 * (test_chats.c, test_friends.c, test_match.c): an nt_ctx with a temporary
 * store and the in-process bus, a delivery handler that records every frame
 * with its recipients, JSON lookups into replies and frames, and the small
 * shortcuts those tests all need.
 *
 *     #include "service_fixture.h"
 *     int main(void)
 *     {
 *         int rc = open_ctx("test_things");
 *         if (rc != 0) return rc;
 *         int64_t ann = make_user("ann", NULL, NULL);
 *         ...
 *         close_ctx();
 *         return check_exit();
 *     }
 *
 * The store is an SQLite file in $NT_TEST_TMP (or /tmp), or, with
 * NT_TEST_STORE=postgres, a private PostgreSQL (pg_test_server.h).
 *
 * Define SF_MAX_FRAMES before including to change how many frames are kept
 * (1024 by default; later ones are dropped). Everything here is static and
 * each test is its own executable, so the globals are the test's own.
 */
#ifndef NT_TEST_SERVICE_FIXTURE_H
#define NT_TEST_SERVICE_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "pg_test_server.h"
#include "common/json.h"
#include "services/services.h"

/* ---- recorded deliveries -------------------------------------------------------------- */

#ifndef SF_MAX_FRAMES
#define SF_MAX_FRAMES 1024
#endif
#define SF_MAX_RCPT 16

typedef struct rec_frame {
    char *data;
    size_t len;
    int64_t ids[SF_MAX_RCPT];
    size_t n;
} rec_frame;

static rec_frame frames[SF_MAX_FRAMES];
static int nframes;
static uv_loop_t loop;
/* The bus unrefs its own wake-up handle (the server's listeners keep the
 * loop alive), so without a referenced handle of ours uv_run would return
 * at once and never hand over a delivery queued from another thread. */
static uv_async_t keep_alive;
static nt_ctx ctx;
static nt_reply R;

static char sf_db_path[700]; /* the SQLite file, removed by close_ctx */
static pg_test_server sf_pg; /* started only with NT_TEST_STORE=postgres */

static void on_delivery(void *arg, nt_shared *frame, const int64_t *user_ids, size_t n)
{
    if (nframes >= SF_MAX_FRAMES) return;
    rec_frame *f = &frames[nframes++];
    f->data = malloc(frame->len + 1);
    memcpy(f->data, frame->data, frame->len);
    f->data[frame->len] = '\0';
    f->len = frame->len;
    f->n = n < SF_MAX_RCPT ? n : SF_MAX_RCPT;
    memcpy(f->ids, user_ids, f->n * sizeof *user_ids);
}

/* Runs the loop until the deliveries queued from this thread are handed over. */
static inline void drain(void)
{
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

/* Drains, then forgets every recorded frame. */
static inline void frames_clear(void)
{
    drain();
    for (int i = 0; i < nframes; i++)
        free(frames[i].data);
    nframes = 0;
}

/* Every frame delivered so far, after draining what is still queued. */
static inline int frames_total(void)
{
    drain();
    return nframes;
}

/* ---- JSON lookups ----------------------------------------------------------------------- */

static nt_json_tok jtoks[16384];

/* The token at a dotted path ("chat.members.0.role") or -1. */
static inline int jfind(nt_json *doc, const char *json, size_t len, const char *path)
{
    if (nt_json_parse(doc, json, len, jtoks, 16384) != 0) return -1;
    int tok = 0;
    char key[64];
    const char *p = path;
    while (*p && tok >= 0) {
        size_t k = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)k, p);
        p += k;
        if (*p == '.') p++;
        if (nt_json_type_of(doc, tok) == NT_JSON_ARRAY) {
            int idx = atoi(key);
            int el = nt_json_first(doc, tok);
            while (el >= 0 && idx-- > 0)
                el = nt_json_next(doc, el);
            tok = el;
        } else {
            tok = nt_json_get(doc, tok, key);
        }
    }
    return tok;
}

/* The integer at path, -999 if absent or not an integer. */
static inline int64_t jint_in(const char *json, const char *path)
{
    nt_json doc;
    int64_t v = -999;
    if (!json) return -999;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0 || nt_json_int(&doc, tok, &v) != 0) return -999;
    return v;
}

/* A string at path (static buffer), "(null)" for JSON null, "(true)" and
 * "(false)" for booleans, NULL if absent. */
static inline const char *jstr_in(const char *json, const char *path)
{
    static char out[8192];
    nt_json doc;
    if (!json) return NULL;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0) return NULL;
    if (nt_json_type_of(&doc, tok) == NT_JSON_NULL) return "(null)";
    if (nt_json_type_of(&doc, tok) == NT_JSON_TRUE) return "(true)";
    if (nt_json_type_of(&doc, tok) == NT_JSON_FALSE) return "(false)";
    if (nt_json_str(&doc, tok, out, sizeof out) < 0) return NULL;
    return out;
}

/* The length of the array at path, -1 if absent or not an array. */
static inline int jcount_in(const char *json, const char *path)
{
    nt_json doc;
    if (!json) return -1;
    int tok = jfind(&doc, json, strlen(json), path);
    if (tok < 0 || nt_json_type_of(&doc, tok) != NT_JSON_ARRAY) return -1;
    return (int)doc.toks[tok].count;
}

/* The body of the last reply R, "" if none. */
static inline const char *body(void)
{
    return R.body.data ? nt_buf_cstr(&R.body) : "";
}
#define BINT(path) jint_in(body(), path)
#define BSTR(path) jstr_in(body(), path)

/* Frees R and clears it for the next handler call. */
static inline void reset(void)
{
    nt_reply_free(&R);
    memset(&R, 0, sizeof R);
}

/* Frames that reached `user` and have this "type". */
static inline int nframes_for(int64_t user, const char *type)
{
    int count = 0;
    drain();
    for (int i = 0; i < nframes; i++) {
        const char *t = jstr_in(frames[i].data, "type");
        if (!t || strcmp(t, type) != 0) continue;
        for (size_t j = 0; j < frames[i].n; j++)
            if (frames[i].ids[j] == user) count++;
    }
    return count;
}

/* The last frame of this type that reached user, or NULL. */
static inline const char *frame_for(int64_t user, const char *type)
{
    drain();
    for (int i = nframes - 1; i >= 0; i--) {
        const char *t = jstr_in(frames[i].data, "type");
        if (!t || strcmp(t, type) != 0) continue;
        for (size_t j = 0; j < frames[i].n; j++)
            if (frames[i].ids[j] == user) return frames[i].data;
    }
    return NULL;
}

/* ---- reply checks ----------------------------------------------------------------------- */

/* Expects a 400 bad_request whose message names `field` (printed if not). */
#define CHECK_400(field)                                                                           \
    do {                                                                                           \
        CHECK_EQ_INT(R.status, 400);                                                               \
        CHECK_STR_EQ(R.code, "bad_request");                                                       \
        CHECK(strstr(R.message, field) != NULL);                                                   \
        if (!strstr(R.message, field)) fprintf(stderr, "  message: %s\n", R.message);              \
    } while (0)
/* Expects this status and error code in R. */
#define CHECK_ERR(st, cd)                                                                          \
    do {                                                                                           \
        CHECK_EQ_INT(R.status, st);                                                                \
        CHECK_STR_EQ(R.code, cd);                                                                  \
    } while (0)

/* ---- users and the context ------------------------------------------------------------ */

/* Creates a user nick@example.com (gender and birth_date may be NULL) and
 * returns its id; a failure counts as a failed check. */
static inline int64_t make_user(const char *nick, const char *gender, const char *birth_date)
{
    char email[64];
    nt_user u;
    const char *field = NULL;
    snprintf(email, sizeof email, "%s@example.com", nick);
    nt_user_new in = {.email = email,
                      .nickname = nick,
                      .password_hash = "x",
                      .gender = gender,
                      .birth_date = birth_date,
                      .created_at = 1700000000000};
    int rc = nt_store_user_create(ctx.store, &in, &u, &field);
    CHECK_EQ_INT(rc, 0);
    return u.id;
}

/* Opens a temporary store (the SQLite file NAME_PID.db, or PostgreSQL with
 * NT_TEST_STORE=postgres), the loop, the local bus with on_delivery, and
 * the default limits into ctx. 0, PGT_SKIP when PostgreSQL is wanted but
 * not installed, or 1. */
static inline int open_ctx(const char *name)
{
    char dir[512], url[720], err[256];
    const char *tmp = getenv("NT_TEST_TMP");

    snprintf(dir, sizeof dir, "%s", tmp && *tmp ? tmp : "/tmp");
    mkdir(dir, 0700);
    snprintf(sf_db_path, sizeof sf_db_path, "%s/%s_%d.db", dir, name, (int)getpid());
    unlink(sf_db_path);
    snprintf(url, sizeof url, "sqlite:%s", sf_db_path);

    const char *backend = getenv("NT_TEST_STORE");
    if (backend && strcmp(backend, "postgres") == 0) {
        int rc = pgt_start(&sf_pg, false);
        if (rc != 0) return rc == PGT_SKIP ? PGT_SKIP : 1;
        snprintf(url, sizeof url, "%s", sf_pg.url);
    }

    uv_loop_init(&loop);
    uv_async_init(&loop, &keep_alive, NULL);
    ctx.limits = (nt_limits){.text_max_cp = 4096,
                             .bio_max_cp = 500,
                             .url_max = 1024,
                             .password_min = 8,
                             .password_max = 1024,
                             .title_max_cp = 128,
                             .group_max_members = 1000};
    ctx.store = nt_store_open(url, err, sizeof err);
    if (!ctx.store) {
        fprintf(stderr, "store: %s\n", err);
        return 1;
    }
    ctx.bus = nt_bus_open("local", &loop, err, sizeof err);
    if (!ctx.bus) {
        fprintf(stderr, "bus: %s\n", err);
        return 1;
    }
    nt_bus_set_delivery_handler(ctx.bus, on_delivery, NULL);
    return 0;
}

/* Frees the recorded frames and R, stops the match service (it waits for
 * pairs whose chat is being stored, which need the store and the bus),
 * closes the bus, loop and store, and removes the store. */
static inline void close_ctx(void)
{
    char side[760];
    frames_clear();
    reset();
    nt_match_shutdown(&ctx);
    nt_bus_close(ctx.bus);
    uv_close((uv_handle_t *)&keep_alive, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    nt_store_close(ctx.store);
    uv_loop_close(&loop);
    unlink(sf_db_path);
    snprintf(side, sizeof side, "%s-wal", sf_db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", sf_db_path);
    unlink(side);
    pgt_destroy(&sf_pg);
}

#endif
