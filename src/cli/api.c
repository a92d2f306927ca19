/*
 * How the terminal client talks REST to natterd: picks the server (flag,
 * environment, saved session, default), makes authenticated calls that
 * refresh an expired access token once and keep the rotated tokens, turns
 * answers into one-line errors and exit codes, and resolves the CHAT
 * arguments of the commands (an id, @nickname, #title).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "common/json.h"

int nt_cli_set_server(nt_cli_ctx *ctx, const char *url)
{
    const char *p = url;
    if (!strncmp(p, "http://", 7)) {
        p += 7;
    } else if (!strncmp(p, "https://", 8)) {
        fprintf(stderr, "natter: %s: https is not supported; use http:// (or a TLS proxy)\n", url);
        return -EINVAL;
    } else if (strstr(p, "://")) {
        fprintf(stderr, "natter: %s: not an http:// URL\n", url);
        return -EINVAL;
    }
    size_t host_len = strcspn(p, ":/");
    int port = 80;
    const char *rest = p + host_len;
    if (*rest == ':') {
        char *end;
        long v = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || v < 1 || v > 65535 || (*end && strcmp(end, "/"))) {
            fprintf(stderr, "natter: %s: bad port\n", url);
            return -EINVAL;
        }
        port = (int)v;
    } else if (*rest && strcmp(rest, "/")) {
        fprintf(stderr, "natter: %s: the server URL takes no path\n", url);
        return -EINVAL;
    }
    if (host_len == 0 || host_len >= sizeof ctx->host || strlen(url) >= sizeof ctx->server) {
        fprintf(stderr, "natter: %s: bad server URL\n", url);
        return -EINVAL;
    }
    memcpy(ctx->host, p, host_len);
    ctx->host[host_len] = '\0';
    ctx->port = port;
    snprintf(ctx->server, sizeof ctx->server, "%s", url);
    /* Without a trailing slash, so saved and given URLs compare equal. */
    size_t n = strlen(ctx->server);
    if (n && ctx->server[n - 1] == '/') ctx->server[n - 1] = '\0';
    return 0;
}

int nt_cli_ctx_init(nt_cli_ctx *ctx, const char *server_flag)
{
    memset(ctx, 0, sizeof *ctx);
    nt_cli_creds saved;
    bool have_saved = nt_cli_creds_load(&saved) == 0;
    const char *url = server_flag;
    if (!url || !*url) url = getenv("NATTER_SERVER");
    if (!url || !*url) url = have_saved && saved.server[0] ? saved.server : NT_CLI_DEFAULT_SERVER;
    if (nt_cli_set_server(ctx, url) != 0) return NT_CLI_USAGE;
    if (have_saved) {
        nt_cli_ctx probe;
        memset(&probe, 0, sizeof probe);
        /* Compare normalised forms: "127.0.0.1:8080" == "http://127.0.0.1:8080/". */
        if (nt_cli_set_server(&probe, saved.server) == 0 && !strcmp(probe.host, ctx->host) &&
            probe.port == ctx->port) {
            ctx->creds = saved;
            ctx->have_creds = true;
        }
    }
    return NT_CLI_OK;
}

int nt_cli_need_login(nt_cli_ctx *ctx)
{
    if (ctx->have_creds) return NT_CLI_OK;
    fprintf(stderr, "natter: not logged in to %s (run: natter login)\n", ctx->server);
    return NT_CLI_AUTH;
}

void nt_cli_flush_creds(nt_cli_ctx *ctx)
{
    if (!ctx->creds_dirty) return;
    int rc = nt_cli_creds_save(&ctx->creds);
    if (rc) fprintf(stderr, "natter: cannot save credentials: %s\n", strerror(-rc));
    ctx->creds_dirty = false;
}

int nt_cli_refresh(nt_cli_ctx *ctx)
{
    if (!ctx->have_creds || !ctx->creds.refresh_token[0]) return -EACCES;
    nt_buf body = NT_BUF_INIT, resp = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "refresh_token", ctx->creds.refresh_token);
    nt_jw_obj_end(&w);
    int status = 0, rc = nt_jw_error(&w);
    if (rc == 0)
        rc = ntc_http(ctx->host, ctx->port, "POST", "/api/v1/auth/refresh", NULL,
                      nt_buf_cstr(&body), &status, &resp);
    if (rc == 0) {
        if (status == 200) {
            nt_buf_cstr(&resp);
            nt_cli_creds next = ctx->creds;
            if (ntc_json_str(resp.data, resp.len, "access_token", next.access_token,
                             sizeof next.access_token) < 0 ||
                ntc_json_str(resp.data, resp.len, "refresh_token", next.refresh_token,
                             sizeof next.refresh_token) < 0) {
                rc = -EPROTO;
            } else {
                ctx->creds = next;
                ctx->creds_dirty = true;
                /* Save at once: the old refresh token is dead now, and a crash
                 * before exit must not lose the new one. */
                nt_cli_flush_creds(ctx);
            }
        } else {
            rc = status == 401 || status == 400 ? -EACCES : -EIO;
        }
    }
    nt_buf_free(&body);
    nt_buf_free(&resp);
    return rc;
}

int nt_cli_api(nt_cli_ctx *ctx, const char *method, const char *path, const char *body,
               nt_buf *resp)
{
    for (int attempt = 0;; attempt++) {
        int status = 0;
        ntc_http_req req = {.method = method,
                            .path = path,
                            .bearer = ctx->have_creds ? ctx->creds.access_token : NULL,
                            .body = body};
        if (resp) nt_buf_reset(resp);
        int rc = ntc_http_do(ctx->host, ctx->port, &req, &status, NULL, resp);
        if (resp) nt_buf_cstr(resp);
        if (rc) return rc;
        if (status != 401 || attempt > 0 || !ctx->have_creds) return status;
        if (nt_cli_refresh(ctx) != 0) return status;
    }
}

static void api__describe(nt_cli_ctx *ctx, int status, const nt_buf *resp, const char *what,
                          char *msg, size_t cap)
{
    /* "what: message", or just the message when what is NULL. */
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s", what ? what : "");
    if (status < 0) {
        if (status == -ETIMEDOUT)
            snprintf(msg, cap, "%s:%d did not answer in time", ctx->host, ctx->port);
        else if (status == -EPROTO)
            snprintf(msg, cap, "%s:%d sent an answer natter does not understand", ctx->host,
                     ctx->port);
        else
            snprintf(msg, cap, "cannot connect to %s:%d: %s", ctx->host, ctx->port,
                     strerror(-status));
        return;
    }
    const char *sep = what ? ": " : "";
    char server_msg[300] = "";
    if (resp && resp->data && resp->len)
        ntc_json_str(resp->data, resp->len, "error.message", server_msg, sizeof server_msg);
    switch (status) {
    case 401:
        snprintf(msg, cap, "%s%snot logged in or session expired (run: natter login)", prefix, sep);
        return;
    case 404:
    case 405:
        if (!server_msg[0] || strstr(server_msg, "no such endpoint") ||
            strstr(server_msg, "not allowed")) {
            snprintf(msg, cap, "%s%sthe server does not offer this (HTTP %d)", prefix, sep, status);
            return;
        }
        break;
    case 501:
    case 503:
        snprintf(msg, cap, "%s%sunavailable on the server right now (HTTP %d)%s%s", prefix, sep,
                 status, server_msg[0] ? ": " : "", server_msg);
        return;
    default:
        break;
    }
    snprintf(msg, cap, "%s%s%s (HTTP %d)", prefix, sep, server_msg[0] ? server_msg : "failed",
             status);
}

bool nt_cli_describe(nt_cli_ctx *ctx, int status, const nt_buf *resp, char *msg, size_t cap)
{
    if (status >= 200 && status < 300) return true;
    api__describe(ctx, status, resp, NULL, msg, cap);
    return false;
}

int nt_cli_check(nt_cli_ctx *ctx, int status, const nt_buf *resp, const char *what)
{
    if (status >= 200 && status < 300) return NT_CLI_OK;
    char msg[512];
    api__describe(ctx, status, resp, what, msg, sizeof msg);
    fprintf(stderr, "natter: %s\n", msg);
    return status == 401 ? NT_CLI_AUTH : NT_CLI_ERR;
}

void nt_cli_urlenc(nt_buf *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~')
            nt_buf_append(out, p, 1);
        else
            nt_buf_appendf(out, "%%%02X", *p);
    }
}

int nt_cli_user_by_nick(nt_cli_ctx *ctx, const char *nickname, int64_t *user_id, char *nick,
                        size_t nick_cap, nt_buf *resp)
{
    if (nickname[0] == '@') nickname++;
    nt_buf path = NT_BUF_INIT;
    nt_buf_append_str(&path, "/api/v1/users/by-nickname/");
    nt_cli_urlenc(&path, nickname);
    int status = nt_cli_api(ctx, "GET", nt_buf_cstr(&path), NULL, resp);
    nt_buf_free(&path);
    if (status == 200) {
        if (ntc_json_int(resp->data, resp->len, "id", user_id) != 0) return -EPROTO;
        if (nick && ntc_json_str(resp->data, resp->len, "nickname", nick, nick_cap) < 0)
            snprintf(nick, nick_cap, "%s", nickname);
    }
    return status;
}

/* Sets msg (or prints) and returns code. */
static int api__fail(char *msg, size_t cap, int code, const char *fmt, const char *arg)
{
    char line[512];
    snprintf(line, sizeof line, fmt, arg);
    if (msg)
        snprintf(msg, cap, "%s", line);
    else
        fprintf(stderr, "natter: %s\n", line);
    return code;
}

/* Reports a failed call through msg or stderr. */
static int api__fail_status(nt_cli_ctx *ctx, int status, nt_buf *resp, const char *what, char *msg,
                            size_t cap)
{
    if (!msg) return nt_cli_check(ctx, status, resp, what);
    char line[512];
    api__describe(ctx, status, resp, what, line, sizeof line);
    snprintf(msg, cap, "%s", line);
    return status == 401 ? NT_CLI_AUTH : NT_CLI_ERR;
}

int nt_cli_resolve_chat(nt_cli_ctx *ctx, const char *spec, int64_t *chat_id, char *msg, size_t cap)
{
    nt_buf resp = NT_BUF_INIT;
    int code = NT_CLI_OK;
    if (spec[0] == '@') {
        int64_t uid = 0;
        int status = nt_cli_user_by_nick(ctx, spec, &uid, NULL, 0, &resp);
        if (status == 404) {
            code = api__fail(msg, cap, NT_CLI_ERR, "no user %s", spec);
            goto out;
        }
        if (status != 200) {
            code = api__fail_status(ctx, status, &resp, spec, msg, cap);
            goto out;
        }
        char body[96];
        snprintf(body, sizeof body, "{\"type\":\"direct\",\"user_id\":%lld}", (long long)uid);
        status = nt_cli_api(ctx, "POST", "/api/v1/chats", body, &resp);
        if ((status != 200 && status != 201) ||
            ntc_json_int(resp.data, resp.len, "id", chat_id) != 0) {
            code = api__fail_status(ctx, status == 200 || status == 201 ? 502 : status, &resp,
                                    "open direct chat", msg, cap);
            goto out;
        }
    } else if (spec[0] == '#') {
        int status = nt_cli_api(ctx, "GET", "/api/v1/chats?limit=200", NULL, &resp);
        if (status != 200) {
            code = api__fail_status(ctx, status, &resp, "list chats", msg, cap);
            goto out;
        }
        int n = ntc_json_count(resp.data, resp.len, "chats");
        bool found = false;
        for (int i = 0; i < n && !found; i++) {
            char path[64], title[256], type[32];
            snprintf(path, sizeof path, "chats.%d.title", i);
            if (ntc_json_str(resp.data, resp.len, path, title, sizeof title) < 0) continue;
            snprintf(path, sizeof path, "chats.%d.type", i);
            if (ntc_json_str(resp.data, resp.len, path, type, sizeof type) < 0 ||
                !strcmp(type, "direct"))
                continue;
            if (!strcasecmp(title, spec + 1)) {
                snprintf(path, sizeof path, "chats.%d.id", i);
                found = ntc_json_int(resp.data, resp.len, path, chat_id) == 0;
            }
        }
        if (!found)
            code = api__fail(msg, cap, NT_CLI_ERR, "no group or channel named %s among your chats",
                             spec);
    } else {
        char *end;
        long long v = strtoll(spec, &end, 10);
        if (*spec == '\0' || *end || v <= 0)
            code = api__fail(msg, cap, NT_CLI_USAGE,
                             "%s: CHAT must be a chat id, @nickname or #title", spec);
        else
            *chat_id = v;
    }
out:
    nt_buf_free(&resp);
    return code;
}

/* Parses json into a token array sized for it; the caller frees *toks. */
static int api__parse(nt_json *doc, const char *json, size_t len, nt_json_tok **toks)
{
    /* Each value takes at least one byte plus a separator: len/2 + 2 bound. */
    size_t cap = len / 2 + 4;
    if (cap > INT32_MAX) return -E2BIG;
    *toks = malloc(cap * sizeof **toks);
    if (!*toks) return -ENOMEM;
    if (nt_json_parse(doc, json, len, *toks, (int)cap) != 0) {
        free(*toks);
        *toks = NULL;
        return -EINVAL;
    }
    return 0;
}

int nt_cli_json_each(const char *json, size_t len, const char *key,
                     void (*fn)(const char *raw, size_t raw_len, void *arg), void *arg)
{
    nt_json doc;
    nt_json_tok *toks;
    int rc = api__parse(&doc, json, len, &toks);
    if (rc) return rc;
    int arr = key ? nt_json_get(&doc, 0, key) : 0;
    if (nt_json_type_of(&doc, arr) != NT_JSON_ARRAY) {
        free(toks);
        return -EINVAL;
    }
    int n = 0;
    for (int t = nt_json_first(&doc, arr); t >= 0; t = nt_json_next(&doc, t), n++) {
        size_t start = toks[t].start, span = toks[t].len;
        if (toks[t].type == NT_JSON_STRING) { /* keep the quotes */
            start--;
            span += 2;
        }
        fn(json + start, span, arg);
    }
    free(toks);
    return n;
}

int nt_cli_json_raw(const char *json, size_t len, const char *key, const char **raw,
                    size_t *raw_len)
{
    nt_json doc;
    nt_json_tok *toks;
    int rc = api__parse(&doc, json, len, &toks);
    if (rc) return rc;
    int t = nt_json_get(&doc, 0, key);
    if (t < 0) {
        free(toks);
        return -ENOENT;
    }
    size_t start = toks[t].start, span = toks[t].len;
    if (toks[t].type == NT_JSON_STRING) {
        start--;
        span += 2;
    }
    *raw = json + start;
    *raw_len = span;
    free(toks);
    return 0;
}
