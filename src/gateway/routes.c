/*
 * REST routing. A table maps method and path pattern to a route id; the
 * operational endpoints answer on the loop thread at once, every API route
 * becomes a job whose handler runs on a worker thread (token check
 * included, since it reads the session from the store). One log line per
 * request at info level.
 */
#include "gateway/gateway_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/log.h"
#include "services/services.h"

enum {
    R_NONE = 0,
    R_REGISTER,
    R_LOGIN,
    R_REFRESH,
    R_LOGOUT,
    R_ME,
    R_ME_PATCH,
    R_USER_GET,
    R_USER_BY_NICK,
    R_USER_SEARCH,
    R_CHAT_CREATE,
    R_CHAT_LIST,
    R_CHAT_GET,
    R_MEMBER_ADD,
    R_MEMBER_REMOVE,
    R_HISTORY,
    R_POST,
    R_EDIT,
    R_DELETE,
    R_READ,
    R_EXPORT,
    R_READYZ,
    R_FRIENDS,
    R_FRIEND_REQUEST,
    R_FRIEND_ACCEPT,
    R_FRIEND_REJECT,
    R_FRIEND_REMOVE,
    R_BLOCKS,
    R_BLOCK_ADD,
    R_BLOCK_REMOVE,
    R_MATCH_PREFS_GET,
    R_MATCH_PREFS_PUT,
    R_MATCH_JOIN,
    R_MATCH_LEAVE,
    R_REVEAL,
};

typedef struct route {
    nt_http_method method;
    const char *pattern; /* segments; "{id}" a positive integer, "{s}" any */
    int id;
    bool auth;
} route;

static const route routes[] = {
    {NT_HTTP_POST, "/api/v1/auth/register", R_REGISTER, false},
    {NT_HTTP_POST, "/api/v1/auth/login", R_LOGIN, false},
    {NT_HTTP_POST, "/api/v1/auth/refresh", R_REFRESH, false},
    {NT_HTTP_POST, "/api/v1/auth/logout", R_LOGOUT, false},
    {NT_HTTP_GET, "/api/v1/users/me", R_ME, true},
    {NT_HTTP_PATCH, "/api/v1/users/me", R_ME_PATCH, true},
    {NT_HTTP_GET, "/api/v1/users/by-nickname/{s}", R_USER_BY_NICK, true},
    {NT_HTTP_GET, "/api/v1/users/{id}", R_USER_GET, true},
    {NT_HTTP_GET, "/api/v1/users", R_USER_SEARCH, true},
    {NT_HTTP_POST, "/api/v1/chats", R_CHAT_CREATE, true},
    {NT_HTTP_GET, "/api/v1/chats", R_CHAT_LIST, true},
    {NT_HTTP_GET, "/api/v1/chats/{id}", R_CHAT_GET, true},
    {NT_HTTP_POST, "/api/v1/chats/{id}/members", R_MEMBER_ADD, true},
    {NT_HTTP_DELETE, "/api/v1/chats/{id}/members/{id}", R_MEMBER_REMOVE, true},
    {NT_HTTP_GET, "/api/v1/chats/{id}/messages", R_HISTORY, true},
    {NT_HTTP_POST, "/api/v1/chats/{id}/messages", R_POST, true},
    {NT_HTTP_PATCH, "/api/v1/chats/{id}/messages/{id}", R_EDIT, true},
    {NT_HTTP_DELETE, "/api/v1/chats/{id}/messages/{id}", R_DELETE, true},
    {NT_HTTP_POST, "/api/v1/chats/{id}/read", R_READ, true},
    {NT_HTTP_GET, "/api/v1/chats/{id}/export", R_EXPORT, true},
    {NT_HTTP_GET, "/readyz", R_READYZ, false},
    {NT_HTTP_GET, "/api/v1/friends", R_FRIENDS, true},
    {NT_HTTP_POST, "/api/v1/friends/requests", R_FRIEND_REQUEST, true},
    {NT_HTTP_POST, "/api/v1/friends/requests/{id}/accept", R_FRIEND_ACCEPT, true},
    {NT_HTTP_POST, "/api/v1/friends/requests/{id}/reject", R_FRIEND_REJECT, true},
    {NT_HTTP_DELETE, "/api/v1/friends/{id}", R_FRIEND_REMOVE, true},
    {NT_HTTP_GET, "/api/v1/blocks", R_BLOCKS, true},
    {NT_HTTP_POST, "/api/v1/blocks/{id}", R_BLOCK_ADD, true},
    {NT_HTTP_DELETE, "/api/v1/blocks/{id}", R_BLOCK_REMOVE, true},
    {NT_HTTP_GET, "/api/v1/match/preferences", R_MATCH_PREFS_GET, true},
    {NT_HTTP_PUT, "/api/v1/match/preferences", R_MATCH_PREFS_PUT, true},
    {NT_HTTP_POST, "/api/v1/match", R_MATCH_JOIN, true},
    {NT_HTTP_DELETE, "/api/v1/match", R_MATCH_LEAVE, true},
    {NT_HTTP_POST, "/api/v1/chats/{id}/reveal", R_REVEAL, true},
};

#define NROUTES (sizeof routes / sizeof routes[0])

static const char *method_name(nt_http_method m)
{
    static const char *names[] = {"OTHER", "GET",   "HEAD",   "POST",
                                  "PUT",   "PATCH", "DELETE", "OPTIONS"};
    return (unsigned)m < sizeof names / sizeof names[0] ? names[m] : "OTHER";
}

/* Matches `path` against a pattern; fills ids / arg. */
static bool match_pattern(const char *pattern, const char *path, int64_t ids[2], char *arg,
                          size_t arg_cap)
{
    int nids = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/') return false;
        p++, s++;
        const char *pe = strchrnul(p, '/'), *se = strchrnul(s, '/');
        size_t pl = (size_t)(pe - p), sl = (size_t)(se - s);
        if (pl == 4 && !memcmp(p, "{id}", 4)) {
            int64_t v = 0;
            if (sl == 0 || sl > 18) return false;
            for (size_t i = 0; i < sl; i++) {
                if (s[i] < '0' || s[i] > '9') return false;
                v = v * 10 + (s[i] - '0');
            }
            if (v <= 0 || nids == 2) return false;
            ids[nids++] = v;
        } else if (pl == 3 && !memcmp(p, "{s}", 3)) {
            if (sl == 0 || sl >= arg_cap) return false;
            memcpy(arg, s, sl);
            arg[sl] = '\0';
        } else if (pl != sl || memcmp(p, s, pl) != 0) {
            return false;
        }
        p = pe, s = se;
    }
    return *p == '\0' && *s == '\0';
}

static void log_request(gw_job *job, int status, size_t bytes)
{
    double ms = (double)(nt_mono_ns() - job->started_ns) / 1e6;
    nt_histogram_add(&job->gw->metrics.request_ms, ms);
    nt_info("http method=%s path=%s status=%d bytes=%zu ms=%.2f user=%lld",
            method_name(job->req->method), job->req->path, status, bytes, ms,
            (long long)job->caller.user_id);
}

static const char *bearer_token(const nt_http_request *req)
{
    const char *h = req->authorization;
    if (strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* Worker thread: the token check, then the handler. */
static void run_route(gw_job *job)
{
    nt_ctx *ctx = job->gw->ctx;
    nt_http_request *req = job->req;
    nt_reply *r = &job->reply;
    const nt_caller *c = &job->caller;
    const char *body = req->body.data ? req->body.data : "";
    size_t len = req->body.len;

    const route *rt = &routes[job->route];
    if (rt->auth) {
        const char *token = bearer_token(req);
        int verified = token ? nt_auth_verify(ctx, token, &job->caller) : -1;
        if (verified == -2) {
            nt_reply_error(r, 503, "unavailable", "storage is unavailable; try again");
            return;
        }
        if (verified != 0) {
            nt_reply_error(r, 401, "unauthorized", "a valid access token is required");
            return;
        }
    }
    int64_t id0 = job->ids[0], id1 = job->ids[1];
    switch (rt->id) {
    case R_REGISTER:
        nt_auth_register(ctx, body, len, r);
        break;
    case R_LOGIN:
        nt_auth_login(ctx, body, len, r);
        break;
    case R_REFRESH:
        nt_auth_refresh(ctx, body, len, r);
        break;
    case R_LOGOUT:
        nt_auth_logout(ctx, body, len, r, &job->revoked_session);
        break;
    case R_ME:
        nt_users_me(ctx, c, r);
        break;
    case R_ME_PATCH:
        nt_users_update_me(ctx, c, body, len, r);
        break;
    case R_USER_GET:
        nt_users_get(ctx, c, id0, r);
        break;
    case R_USER_BY_NICK:
        nt_users_by_nickname(ctx, c, job->arg, r);
        break;
    case R_USER_SEARCH:
        nt_users_search(ctx, c, req->query, r);
        break;
    case R_CHAT_CREATE:
        nt_chats_create(ctx, c, body, len, r);
        break;
    case R_CHAT_LIST:
        nt_chats_list(ctx, c, req->query, r);
        break;
    case R_CHAT_GET:
        nt_chats_get(ctx, c, id0, r);
        break;
    case R_MEMBER_ADD:
        nt_chats_add_member(ctx, c, id0, body, len, r);
        break;
    case R_MEMBER_REMOVE:
        nt_chats_remove_member(ctx, c, id0, id1, r);
        break;
    case R_HISTORY:
        nt_messages_history(ctx, c, id0, req->query, r);
        break;
    case R_POST:
        /* As the WebSocket send: with the bus down, refuse rather than store
         * a message no one online would get. */
        if (nt_bus_ping(ctx->bus) != 0)
            nt_reply_error(r, 503, "unavailable",
                           "the message bus is unavailable; nothing was written");
        else
            nt_messages_post(ctx, c, id0, body, len, r);
        break;
    case R_EDIT:
        nt_messages_edit(ctx, c, id0, id1, body, len, r);
        break;
    case R_DELETE:
        nt_messages_delete(ctx, c, id0, id1, r);
        break;
    case R_READ:
        nt_chats_read(ctx, c, id0, body, len, r);
        break;
    case R_EXPORT:
        nt_messages_export(ctx, c, id0, r);
        break;
    case R_FRIENDS:
        nt_friends_list(ctx, c, r);
        break;
    case R_FRIEND_REQUEST:
        nt_friends_request(ctx, c, body, len, r);
        break;
    case R_FRIEND_ACCEPT:
        nt_friends_accept(ctx, c, id0, r);
        break;
    case R_FRIEND_REJECT:
        nt_friends_reject(ctx, c, id0, r);
        break;
    case R_FRIEND_REMOVE:
        nt_friends_remove(ctx, c, id0, r);
        break;
    case R_BLOCKS:
        nt_blocks_list(ctx, c, r);
        break;
    case R_BLOCK_ADD:
        nt_blocks_add(ctx, c, id0, r);
        break;
    case R_BLOCK_REMOVE:
        nt_blocks_remove(ctx, c, id0, r);
        break;
    case R_MATCH_PREFS_GET:
        nt_match_prefs_get(ctx, c, r);
        break;
    case R_MATCH_PREFS_PUT:
        nt_match_prefs_put(ctx, c, body, len, r);
        break;
    case R_MATCH_JOIN:
        nt_match_join(ctx, c, r);
        break;
    case R_MATCH_LEAVE:
        nt_match_leave(ctx, c, r);
        break;
    case R_REVEAL:
        nt_match_reveal(ctx, c, id0, r);
        break;
    case R_READYZ:
        if (nt_store_ping(ctx->store) != 0 || nt_bus_ping(ctx->bus) != 0)
            nt_reply_error(r, 503, "unavailable", "storage or bus does not answer");
        else {
            r->status = 200;
            nt_buf_append_str(&r->body, "{\"status\":\"ready\"}");
        }
        break;
    default:
        nt_reply_error(r, 404, "not_found", "no such endpoint");
        break;
    }
    if (!r->status) nt_reply_error(r, 500, "internal", "the handler gave no answer");
}

static void close_session_ws(void *arg, nt_conn *c)
{
    gw_job *job = arg;
    if (c->session.session_id == job->revoked_session)
        nt_conn_close_ws(c, NT_WS_CLOSE_AUTH, "session ended");
}

/* Loop thread: write the answer. */
static void after_route(gw_job *job)
{
    nt_reply *r = &job->reply;
    if (job->revoked_session) nt_server_each_ws(job->gw->server, close_session_ws, job);
    if (job->conn && job->conn->state == NT_CONN_HTTP) {
        const char *type = r->content_type ? r->content_type : "application/json";
        /* A HEAD gets the GET's Content-Length and no body (NULL body). */
        bool head = job->req->method == NT_HTTP_HEAD;
        nt_conn_respond(job->conn, r->status, type, r->headers[0] ? r->headers : NULL,
                        head ? NULL : r->body.data, r->body.len, false);
    }
    log_request(job, r->status, r->body.len);
    nt_http_request_free(job->req);
    free(job->req);
}

static void respond_now(nt_conn *c, nt_http_request *req, int status, const char *type,
                        const char *headers, const void *body, size_t len)
{
    /* A HEAD gets the GET's Content-Length and no body (NULL body). */
    nt_conn_respond(c, status, type, headers, req->method == NT_HTTP_HEAD ? NULL : body, len,
                    false);
    nt_info("http method=%s path=%s status=%d bytes=%zu", method_name(req->method), req->path,
            status, len);
    nt_http_request_free(req);
    free(req);
}

static void respond_error_now(nt_conn *c, nt_http_request *req, int status, const char *code,
                              const char *message)
{
    nt_reply r = {0};
    nt_reply_error(&r, status, code, "%s", message);
    respond_now(c, req, status, "application/json", NULL, r.body.data, r.body.len);
    nt_reply_free(&r);
}

/*
 * register and login cost an Argon2id hash each (nt_auth_register,
 * nt_auth_login): they go to the hashing pool, never to libuv's, so a storm
 * of them cannot hold up other requests. When its queue is full the request
 * is answered 503 `unavailable` with Retry-After at once, through the same
 * after_route as every answer (docs/decisions.md, "Password hashing").
 */
static void submit_hash_route(nt_gateway *gw, gw_job *job)
{
    if (gw_job_submit_hash(gw, job) == 0) return;
    unsigned retry = gw_hash_pool_retry_after(gw->hash_pool);
    nt_reply_error(&job->reply, 503, "unavailable",
                   "too many logins and registrations are waiting; retry in %u s", retry);
    snprintf(job->reply.headers, sizeof job->reply.headers, "Retry-After: %u\r\n", retry);
    job->after(job);
    nt_reply_free(&job->reply);
    free(job);
}

void gw_on_request(void *arg, nt_conn *c, nt_http_request *req)
{
    nt_gateway *gw = arg;
    const char *path = req->path;
    bool get = req->method == NT_HTTP_GET || req->method == NT_HTTP_HEAD;

    if (get && !strcmp(path, "/healthz")) {
        respond_now(c, req, 200, "application/json", NULL, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (get && !strcmp(path, "/metrics")) {
        nt_buf out = NT_BUF_INIT;
        gw_metrics_render(gw, &out);
        respond_now(c, req, 200, "text/plain; version=0.0.4", NULL, out.data, out.len);
        nt_buf_free(&out);
        return;
    }
    if (get && !strcmp(path, "/api/v1/openapi.json")) {
        respond_now(c, req, 200, "application/json", NULL, gw_openapi_json,
                    strlen(gw_openapi_json));
        return;
    }

    int64_t ids[2] = {0, 0};
    char arg_seg[72] = "";
    bool path_known = false;
    for (size_t i = 0; i < NROUTES; i++) {
        if (!match_pattern(routes[i].pattern, path, ids, arg_seg, sizeof arg_seg)) continue;
        path_known = true;
        nt_http_method m = req->method == NT_HTTP_HEAD ? NT_HTTP_GET : req->method;
        if (routes[i].method != m) continue;
        gw_job *job = calloc(1, sizeof *job);
        if (!job) {
            respond_error_now(c, req, 503, "unavailable", "out of memory");
            return;
        }
        job->conn = c;
        job->req = req;
        job->route = (int)i;
        job->ids[0] = ids[0];
        job->ids[1] = ids[1];
        memcpy(job->arg, arg_seg, sizeof job->arg);
        job->run = run_route;
        job->after = after_route;
        if (routes[i].id == R_REGISTER || routes[i].id == R_LOGIN)
            submit_hash_route(gw, job);
        else
            gw_job_submit(gw, job);
        return;
    }
    if (path_known) {
        respond_error_now(c, req, 405, "method_not_allowed", "method not allowed on this path");
        return;
    }
    if (get && strncmp(path, "/api/", 5) != 0) {
        const gw_static_file *f = gw_static_find(gw, path);
        if (f) {
            respond_now(c, req, 200, f->content_type, "Cache-Control: no-cache\r\n", f->body.data,
                        f->body.len);
            return;
        }
    }
    respond_error_now(c, req, 404, "not_found", "no such endpoint");
}

/* ---- jobs ------------------------------------------------------------------------ */

static void job_work(uv_work_t *w)
{
    gw_job *job = (gw_job *)w;
    job->run(job);
}

void gw_job_finish(gw_job *job)
{
    nt_gateway *gw = job->gw;
    job->after(job);
    gw->jobs_in_flight--;
    atomic_fetch_add(&gw->metrics.jobs_done, 1);
    if (job->conn) {
        job->conn->session.jobs--;
        gw_conn_maybe_resume(job->conn); /* it may have been paused for back-pressure */
        nt_conn_unref(job->conn);
    }
    nt_reply_free(&job->reply);
    nt_buf_free(&job->frame);
    free(job->token);
    free(job);
}

static void job_after(uv_work_t *w, int status)
{
    gw_job_finish((gw_job *)w);
}

static void job_prepare(nt_gateway *gw, gw_job *job)
{
    job->gw = gw;
    job->started_ns = nt_mono_ns();
    job->work.data = job;
}

/* The accounting of a job from submission to gw_job_finish: the drain and
 * nt_gateway_free wait on jobs_in_flight, whichever pool runs the job. It
 * touches the gateway and the connection only, never the job, so it may
 * follow the hand-over to a thread that already runs it. */
static void job_account(nt_gateway *gw, nt_conn *conn)
{
    if (conn) {
        nt_conn_ref(conn);
        conn->session.jobs++;
    }
    gw->jobs_in_flight++;
    atomic_fetch_add(&gw->metrics.jobs_started, 1);
}

void gw_job_submit(nt_gateway *gw, gw_job *job)
{
    job_prepare(gw, job);
    job_account(gw, job->conn);
    uv_queue_work(gw->loop, &job->work, job_work, job_after);
}

int gw_job_submit_hash(nt_gateway *gw, gw_job *job)
{
    nt_conn *conn = job->conn; /* read before a pool thread owns the job */
    job_prepare(gw, job);
    int rc = gw_hash_pool_submit(gw->hash_pool, job);
    if (rc != 0) return rc;
    /* The job finishes on this (the loop) thread, so not before this. */
    job_account(gw, conn);
    return 0;
}
