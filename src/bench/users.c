/*
 * The accounts and chats natter-bench drives. Registration costs an
 * Argon2id hash on the server, so users are registered once in parallel
 * (run natterd with --argon2-fast for benchmarks) and may be kept in a
 * cache file (--users FILE) with their access tokens; tokens older than ten
 * minutes are renewed by logging in. A cache that belongs to another server
 * (its first user cannot log in) is thrown away.
 */
#include "bench/bench.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define USERS_TOKEN_MAX_AGE 600
#define USERS_PASSWORD "bench-pass-1"

typedef struct users_job {
    const nb_opts *o;
    nb_user *users;
    int n;
    atomic_int next;
    atomic_int failed;
    bool login; /* login (renew) instead of register */
    char run_tag[12];
} users_job;

static int users__fill(nb_user *u, const ntc_session *s)
{
    size_t len = strnlen(s->access_token, sizeof s->access_token);
    if (len >= sizeof u->token) return -ENOSPC;
    u->id = s->user_id;
    memcpy(u->token, s->access_token, len + 1);
    u->token_time = (int64_t)time(NULL);
    return 0;
}

static void *users__worker(void *arg)
{
    users_job *job = arg;
    for (;;) {
        int i = atomic_fetch_add(&job->next, 1);
        if (i >= job->n) break;
        nb_user *u = &job->users[i];
        ntc_session s;
        int rc = -EIO;
        for (int attempt = 0; attempt < 5; attempt++) {
            if (job->login) {
                rc = ntc_login(job->o->host, job->o->port, u->nick, u->password, &s);
            } else {
                char email[96];
                snprintf(email, sizeof email, "%s@bench.invalid", u->nick);
                rc = ntc_register(job->o->host, job->o->port, email, u->password, u->nick, &s);
            }
            if (rc != -EAGAIN && rc != -ETIMEDOUT && rc != -ECONNREFUSED && rc != -ECONNRESET)
                break;
            struct timespec ts = {0, 50000000L * (attempt + 1)};
            nanosleep(&ts, NULL);
        }
        if (rc == 0) rc = users__fill(u, &s);
        if (rc != 0) {
            if (atomic_fetch_add(&job->failed, 1) == 0)
                fprintf(stderr, "natter-bench: %s of %s failed: %s (HTTP %d)\n",
                        job->login ? "login" : "registration", u->nick, strerror(-rc),
                        s.http_status);
        }
    }
    return NULL;
}

/* Registers or logs in users[0..n) on `threads` threads. 0 or -EIO. */
static int users__run(const nb_opts *o, nb_user *users, int n, int threads, bool login)
{
    if (n <= 0) return 0;
    users_job job = {.o = o, .users = users, .n = n, .login = login};
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    if (threads > n) threads = n;
    pthread_t tids[64];
    if (threads > 64) threads = 64;
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tids[started], NULL, users__worker, &job) != 0) break;
    if (started == 0) users__worker(&job);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return atomic_load(&job.failed) ? -EIO : 0;
}

/* Reads up to n users from the cache; returns how many. */
static int users__load(const char *path, nb_user *users, int n)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int got = 0;
    while (got < n) {
        nb_user *u = &users[got];
        long long id, t;
        if (fscanf(f, "%lld %39s %23s %lld %599s", &id, u->nick, u->password, &t, u->token) != 5)
            break;
        u->id = id;
        u->token_time = t;
        got++;
    }
    fclose(f);
    return got;
}

static void users__save(const char *path, const nb_user *users, int n)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "natter-bench: cannot write %s: %s\n", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < n; i++)
        fprintf(f, "%" PRId64 " %s %s %" PRId64 " %s\n", users[i].id, users[i].nick,
                users[i].password, users[i].token_time, users[i].token);
    if (fclose(f) == 0) rename(tmp, path);
}

nb_user *nb_users_get(const nb_opts *o, int n, int threads)
{
    nb_user *users = calloc((size_t)(n > 0 ? n : 1), sizeof *users);
    if (!users) {
        fprintf(stderr, "natter-bench: out of memory for %d users\n", n);
        return NULL;
    }
    int cached = o->users_file ? users__load(o->users_file, users, n) : 0;
    if (cached > 0) {
        /* Does the cache belong to this server? Its first user must log in. */
        nb_user probe = users[0];
        ntc_session s;
        if (ntc_login(o->host, o->port, probe.nick, probe.password, &s) != 0) {
            if (!o->quiet)
                fprintf(stderr, "natter-bench: %s is not for this server; registering anew\n",
                        o->users_file);
            memset(users, 0, (size_t)cached * sizeof *users);
            cached = 0;
        } else {
            users__fill(&users[0], &s);
        }
    }
    /* Renew old tokens. */
    int64_t now = (int64_t)time(NULL);
    int first_old = -1;
    for (int i = 0; i < cached; i++) {
        if (now - users[i].token_time > USERS_TOKEN_MAX_AGE) {
            first_old = i;
            break;
        }
    }
    if (first_old >= 0 && users__run(o, users + first_old, cached - first_old, threads, true))
        goto fail;
    /* Register the rest under a fresh run tag so names never collide. */
    uint32_t tag = 0;
    if (getrandom(&tag, sizeof tag, 0) != sizeof tag) tag = (uint32_t)nb_now_ns();
    for (int i = cached; i < n; i++) {
        snprintf(users[i].nick, sizeof users[i].nick, "%s%08x_%d", o->prefix, tag, i);
        snprintf(users[i].password, sizeof users[i].password, "%s", USERS_PASSWORD);
    }
    if (n > cached) {
        uint64_t t0 = nb_now_ns();
        if (!o->quiet) fprintf(stderr, "natter-bench: registering %d users...\n", n - cached);
        if (users__run(o, users + cached, n - cached, threads, false)) goto fail;
        if (!o->quiet)
            fprintf(stderr, "natter-bench: registered %d users in %.1f s\n", n - cached,
                    (double)(nb_now_ns() - t0) / 1e9);
    }
    if (o->users_file) {
        /* Keep users the file had beyond n, too. */
        int total = n;
        nb_user *all = users;
        FILE *f = fopen(o->users_file, "r");
        if (f) {
            int lines = 0, ch;
            while ((ch = fgetc(f)) != EOF)
                lines += ch == '\n';
            fclose(f);
            if (lines > n && cached == n) {
                nb_user *more = calloc((size_t)lines, sizeof *more);
                if (more && users__load(o->users_file, more, lines) == lines) {
                    memcpy(more, users, (size_t)n * sizeof *users);
                    all = more;
                    total = lines;
                } else {
                    free(more);
                }
            }
        }
        users__save(o->users_file, all, total);
        if (all != users) free(all);
    }
    return users;
fail:
    free(users);
    return NULL;
}

int nb_api(const nb_opts *o, const nb_user *u, const char *method, const char *path,
           const char *json, nt_buf *body)
{
    int status = 0;
    int rc = ntc_http(o->host, o->port, method, path, u ? u->token : NULL, json, &status, body);
    return rc < 0 ? rc : status;
}

int64_t nb_make_chat(const nb_opts *o, nb_user *users, int n, bool direct, int64_t *last_seq)
{
    nt_buf req = NT_BUF_INIT, body = NT_BUF_INIT;
    int64_t chat_id = -EIO;
    int rc;
    if (direct) {
        rc = nt_buf_appendf(&req, "{\"type\":\"direct\",\"user_id\":%" PRId64 "}", users[1].id);
    } else {
        rc = nt_buf_appendf(&req, "{\"type\":\"group\",\"title\":\"bench\",\"member_ids\":[");
        for (int i = 1; i < n && rc == 0; i++)
            rc = nt_buf_appendf(&req, "%s%" PRId64, i > 1 ? "," : "", users[i].id);
        if (rc == 0) rc = nt_buf_append_str(&req, "]}");
    }
    if (rc != 0) {
        chat_id = -ENOMEM;
        goto out;
    }
    int status = nb_api(o, &users[0], "POST", "/api/v1/chats", nt_buf_cstr(&req), &body);
    if (status != 200 && status != 201) {
        fprintf(stderr, "natter-bench: POST /api/v1/chats answered %d: %.200s\n", status,
                body.len ? nt_buf_cstr(&body) : "");
        goto out;
    }
    int64_t id, seq = 0;
    if (ntc_json_int(body.data, body.len, "id", &id) == 0) chat_id = id;
    ntc_json_int(body.data, body.len, "last_seq", &seq);
    *last_seq = seq;
out:
    nt_buf_free(&req);
    nt_buf_free(&body);
    return chat_id;
}
