/*
 * The interactive client (see app.h): signs in, loads the chat list, keeps
 * one WebSocket open for live events (messages, receipts, typing, presence,
 * chats, friends, matching) and reconnects with backoff when it drops,
 * reading what it missed with after_seq. Messages are sent over REST with a
 * client_id (durable on 201, safe to retry); receipts and typing go over the
 * WebSocket. Every seq is shown once: a chat remembers the highest seq it
 * has shown.
 */
#include "cli/app.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"

#define APP_HISTORY_ON_OPEN 50
#define APP_TYPING_SHOW_NS (5ull * 1000000000ull)
#define APP_TYPING_SEND_NS (3ull * 1000000000ull)
#define APP_BACKOFF_MAX_MS 5000

/* Copies a string, cutting it to fit (on a UTF-8 boundary). */
static void app__copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool app__json_true(const char *json, size_t len, const char *key)
{
    const char *raw;
    size_t raw_len;
    return nt_cli_json_raw(json, len, key, &raw, &raw_len) == 0 && raw_len == 4 &&
           !memcmp(raw, "true", 4);
}

/* ---- lines and notices ------------------------------------------------------------ */

static void app__free_lines(app *a)
{
    for (size_t i = 0; i < a->nlines; i++) {
        free(a->lines[i].text);
        free(a->lines[i].pow);
    }
    a->nlines = 0;
}

/* Inserts a line into the pane keeping messages in seq order; drops the
 * oldest when full. Returns the stored line, or NULL if it was a repeat. */
static app_line *app__add_line(app *a, const app_line *l)
{
    if (l->chat_id) {
        for (size_t i = 0; i < a->nlines; i++)
            if (a->lines[i].chat_id == l->chat_id && a->lines[i].seq == l->seq) return NULL;
    }
    if (a->nlines == APP_MAX_LINES) {
        free(a->lines[0].text);
        free(a->lines[0].pow);
        memmove(a->lines, a->lines + 1, (APP_MAX_LINES - 1) * sizeof *a->lines);
        a->nlines--;
    }
    size_t at = a->nlines;
    if (l->chat_id)
        while (at > 0 && a->lines[at - 1].chat_id == l->chat_id && a->lines[at - 1].seq > l->seq)
            at--;
    memmove(a->lines + at + 1, a->lines + at, (a->nlines - at) * sizeof *a->lines);
    a->lines[at] = *l;
    a->lines[at].text = strdup(l->text ? l->text : "");
    a->lines[at].pow = l->pow ? strdup(l->pow) : NULL;
    a->nlines++;
    return &a->lines[at];
}

void app_notice(app *a, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    app__copy(a->status, sizeof a->status, text);
    app_line l = {.text = text};
    app_line *stored = app__add_line(a, &l);
    if (stored && a->face->line) a->face->line(a, stored, NULL);
}

/* A failed REST call as a notice. */
static void app__fail(app *a, const char *what, int status, const nt_buf *resp)
{
    char msg[512];
    nt_cli_describe(&a->ctx, status, resp, msg, sizeof msg);
    app_notice(a, "%s: %s", what, msg);
}

/* ---- users ------------------------------------------------------------------------ */

app_user *app_user_get(app *a, int64_t user_id)
{
    for (size_t i = 0; i < a->nusers; i++)
        if (a->users[i].id == user_id) return &a->users[i];
    if (user_id <= 0) return NULL;
    nt_buf resp = NT_BUF_INIT;
    char path[64];
    snprintf(path, sizeof path, "/api/v1/users/%lld", (long long)user_id);
    int status = nt_cli_api(&a->ctx, "GET", path, NULL, &resp);
    app_user u = {.id = user_id};
    if (status != 200 ||
        ntc_json_str(resp.data, resp.len, "nickname", u.nickname, sizeof u.nickname) < 0) {
        nt_buf_free(&resp);
        return NULL;
    }
    u.online = app__json_true(resp.data, resp.len, "online");
    nt_buf_free(&resp);
    if (a->nusers == a->users_cap) {
        size_t cap = a->users_cap ? a->users_cap * 2 : 32;
        app_user *grown = realloc(a->users, cap * sizeof *grown);
        if (!grown) return NULL;
        a->users = grown;
        a->users_cap = cap;
    }
    a->users[a->nusers] = u;
    return &a->users[a->nusers++];
}

const char *app_nick(app *a, int64_t user_id)
{
    static char fallback[32];
    app_user *u = app_user_get(a, user_id);
    if (u) return u->nickname;
    snprintf(fallback, sizeof fallback, "user %lld", (long long)user_id);
    return fallback;
}

/* ---- chats -------------------------------------------------------------------------- */

app_chat *app_chat_find(app *a, int64_t id)
{
    for (size_t i = 0; i < a->nchats; i++)
        if (a->chats[i].id == id) return &a->chats[i];
    return NULL;
}

/* Creates or updates a chat from its JSON object; keeps what the client
 * knows (known_seq, a random alias). Returns it, or NULL. */
static app_chat *app__upsert_chat(app *a, const char *raw, size_t len)
{
    int64_t id = 0;
    if (ntc_json_int(raw, len, "id", &id) != 0) return NULL;
    app_chat *c = app_chat_find(a, id);
    if (!c) {
        if (a->nchats == a->chats_cap) {
            size_t cap = a->chats_cap ? a->chats_cap * 2 : 16;
            app_chat *grown = realloc(a->chats, cap * sizeof *grown);
            if (!grown) return NULL;
            a->chats = grown;
            a->chats_cap = cap;
        }
        c = &a->chats[a->nchats++];
        memset(c, 0, sizeof *c);
        c->id = id;
        c->known_seq = -1; /* set from last_seq below */
    }
    ntc_json_str(raw, len, "type", c->type, sizeof c->type);
    int64_t v;
    if (ntc_json_int(raw, len, "last_seq", &v) == 0 && v > c->last_seq) c->last_seq = v;
    if (c->known_seq < 0) c->known_seq = c->last_seq;
    if (ntc_json_int(raw, len, "unread", &v) == 0) c->unread = v;
    int n = ntc_json_count(raw, len, "members");
    for (int i = 0; i < n; i++) {
        char p[64];
        int64_t uid = 0, d = 0, r = 0;
        snprintf(p, sizeof p, "members.%d.user_id", i);
        if (ntc_json_int(raw, len, p, &uid) != 0 || uid == a->ctx.creds.user_id) continue;
        if (strcmp(c->type, "group") && strcmp(c->type, "channel")) c->partner_id = uid;
        snprintf(p, sizeof p, "members.%d.delivered_seq", i);
        if (ntc_json_int(raw, len, p, &d) == 0 && d > c->peer_delivered) c->peer_delivered = d;
        snprintf(p, sizeof p, "members.%d.read_seq", i);
        if (ntc_json_int(raw, len, p, &r) == 0 && r > c->peer_read) c->peer_read = r;
    }
    char title[160] = "";
    if (ntc_json_str(raw, len, "title", title, sizeof title) > 0) {
        snprintf(c->name, sizeof c->name, "%s%s", strcmp(c->type, "random") ? "#" : "", title);
    } else if (!strcmp(c->type, "direct") && c->partner_id) {
        snprintf(c->name, sizeof c->name, "@%s", app_nick(a, c->partner_id));
    } else if (!c->name[0]) {
        snprintf(c->name, sizeof c->name, "%s %lld", c->type[0] ? c->type : "chat",
                 (long long)c->id);
    }
    return c;
}

static void app__chat_item(const char *raw, size_t len, void *arg)
{
    app__upsert_chat(arg, raw, len);
}

/* Reloads the chat list. */
static int app__load_chats(app *a)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nt_cli_api(&a->ctx, "GET", "/api/v1/chats?limit=200", NULL, &resp);
    if (status == 200)
        nt_cli_json_each(resp.data, resp.len, "chats", app__chat_item, a);
    else
        app__fail(a, "chats", status, &resp);
    nt_buf_free(&resp);
    return status;
}

/* Fetches one chat (e.g. one a message arrived in that we did not know). */
static app_chat *app__fetch_chat(app *a, int64_t chat_id)
{
    nt_buf resp = NT_BUF_INIT;
    char path[64];
    snprintf(path, sizeof path, "/api/v1/chats/%lld", (long long)chat_id);
    app_chat *c = NULL;
    if (nt_cli_api(&a->ctx, "GET", path, NULL, &resp) == 200)
        c = app__upsert_chat(a, resp.data, resp.len);
    nt_buf_free(&resp);
    return c;
}

static void app__remove_chat(app *a, int64_t chat_id)
{
    app_chat *c = app_chat_find(a, chat_id);
    if (!c) return;
    size_t i = (size_t)(c - a->chats);
    memmove(a->chats + i, a->chats + i + 1, (a->nchats - i - 1) * sizeof *a->chats);
    a->nchats--;
    if (a->current == chat_id) a->current = 0;
}

/* ---- WebSocket frames out ------------------------------------------------------------ */

static void app__send_marker(app *a, const char *type, int64_t chat_id, int64_t seq)
{
    char frame[128];
    snprintf(frame, sizeof frame, "{\"type\":\"%s\",\"chat_id\":%lld,\"seq\":%lld}", type,
             (long long)chat_id, (long long)seq);
    if (a->ws_open) {
        ntc_conn_send_text(a->ws, frame);
        ntc_conn_flush(a->ws);
    } else if (!strcmp(type, "read")) {
        char path[96], body[48];
        snprintf(path, sizeof path, "/api/v1/chats/%lld/read", (long long)chat_id);
        snprintf(body, sizeof body, "{\"seq\":%lld}", (long long)seq);
        nt_cli_api(&a->ctx, "POST", path, body, NULL);
    }
}

void app_typing(app *a)
{
    uint64_t now = nt_mono_ns();
    if (!a->current || !a->ws_open || now - a->typing_sent_ns < APP_TYPING_SEND_NS) return;
    a->typing_sent_ns = now;
    char frame[80];
    snprintf(frame, sizeof frame, "{\"type\":\"typing\",\"chat_id\":%lld}", (long long)a->current);
    ntc_conn_send_text(a->ws, frame);
    ntc_conn_flush(a->ws);
}

/* ---- messages in --------------------------------------------------------------------- */

/* Describes the proof of work on a bot reply, verifying it ourselves. */
static void app__pow_text(const char *raw, size_t len, const char *text, char *out, size_t cap)
{
    char nonce[32] = "", hash[80] = "";
    int64_t n = 0, bits = 0;
    if (ntc_json_int(raw, len, "pow.nonce", &n) == 0)
        snprintf(nonce, sizeof nonce, "%lld", (long long)n);
    else
        ntc_json_str(raw, len, "pow.nonce", nonce, sizeof nonce);
    ntc_json_str(raw, len, "pow.hash", hash, sizeof hash);
    ntc_json_int(raw, len, "pow.bits", &bits);
    nt_buf original = NT_BUF_INIT;
    bool ok = nt_cli_reverse_utf8(text, strlen(text), &original) == 0 &&
              nt_cli_pow_verify(original.data, original.len, nonce, hash, (int)bits);
    nt_buf_free(&original);
    snprintf(out, cap, "pow nonce=%s hash=%s bits=%lld: %s", nonce, hash, (long long)bits,
             ok ? "verified" : "NOT VERIFIED");
}

static void app__catch_up(app *a, app_chat *c);

/* A message (its JSON object) from an event or a history page. */
static void app__on_message(app *a, const char *raw, size_t len, bool live)
{
    int64_t chat_id = 0, seq = 0, sender = 0, ts = 0;
    if (ntc_json_int(raw, len, "chat_id", &chat_id) != 0 ||
        ntc_json_int(raw, len, "seq", &seq) != 0)
        return;
    ntc_json_int(raw, len, "sender_id", &sender);
    ntc_json_int(raw, len, "ts", &ts);
    app_chat *c = app_chat_find(a, chat_id);
    if (!c && !(c = app__fetch_chat(a, chat_id))) return;
    if (seq <= c->known_seq)
        return; /* shown already (a repeat after a reconnect, or our own send) */
    if (live && seq > c->known_seq + 1) {
        /* Something is missing in between: read it first, in order. */
        app__catch_up(a, c);
        if (seq <= c->known_seq) return;
    }
    size_t cap = len + 1;
    char *text = malloc(cap);
    if (!text) return;
    if (ntc_json_str(raw, len, "text", text, cap) < 0) text[0] = '\0';
    char pow[256];
    bool has_pow = ntc_json_has(raw, len, "pow");
    if (has_pow) app__pow_text(raw, len, text, pow, sizeof pow);
    c->known_seq = seq;
    if (seq > c->last_seq) c->last_seq = seq;
    app_line l = {.chat_id = chat_id,
                  .seq = seq,
                  .sender_id = sender,
                  .ts = ts,
                  .text = text,
                  .pow = has_pow ? pow : NULL};
    bool mine = sender == a->ctx.creds.user_id;
    if (chat_id == a->current || !a->tui) {
        app_line *stored = chat_id == a->current ? app__add_line(a, &l) : &l;
        if (stored && a->face->line) a->face->line(a, stored, c);
    }
    if (chat_id == a->current) {
        if (!mine) app__send_marker(a, "read", chat_id, seq);
        if (sender == a->typing_user) a->typing_user = 0;
    } else {
        if (!mine) {
            c->unread++;
            app__send_marker(a, "delivered", chat_id, seq);
            if (a->tui) snprintf(a->status, sizeof a->status, "new message in %s", c->name);
        }
    }
    free(text);
}

static void app__history_item(const char *raw, size_t len, void *arg)
{
    app__on_message(arg, raw, len, false);
}

/* Reads every message after the chat's known_seq. */
static void app__catch_up(app *a, app_chat *c)
{
    nt_buf resp = NT_BUF_INIT;
    int64_t chat_id = c->id;
    for (int pages = 0; pages < 50; pages++) {
        c = app_chat_find(a, chat_id);
        if (!c) break;
        char path[160];
        /* after_seq=0 means "no cursor" to the server: see script.c. */
        if (c->known_seq == 0)
            snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?before_seq=201&limit=200",
                     (long long)chat_id);
        else
            snprintf(path, sizeof path, "/api/v1/chats/%lld/messages?after_seq=%lld&limit=200",
                     (long long)chat_id, (long long)c->known_seq);
        int status = nt_cli_api(&a->ctx, "GET", path, NULL, &resp);
        if (status != 200) break;
        int n = nt_cli_json_each(resp.data, resp.len, "messages", app__history_item, a);
        if (n < 200) break;
    }
    nt_buf_free(&resp);
}

void app_open_chat(app *a, int64_t chat_id)
{
    app_chat *c = app_chat_find(a, chat_id);
    if (!c && !(c = app__fetch_chat(a, chat_id))) {
        app_notice(a, "no chat %lld", (long long)chat_id);
        return;
    }
    app__free_lines(a);
    a->current = chat_id;
    a->typing_user = 0;
    /* Start a little before the end and read to it. */
    c->known_seq = c->last_seq > APP_HISTORY_ON_OPEN ? c->last_seq - APP_HISTORY_ON_OPEN : 0;
    app_notice(a, "opened %s (chat %lld)%s", c->name, (long long)c->id,
               c->closed ? " - this random chat has ended" : "");
    app__catch_up(a, c);
    c = app_chat_find(a, chat_id);
    if (c) {
        c->unread = 0;
        if (c->known_seq > 0) app__send_marker(a, "read", chat_id, c->known_seq);
    }
    if (a->face->changed) a->face->changed(a);
}

/* ---- events ------------------------------------------------------------------------------ */

static void app__on_frame(app *a, const char *json, size_t len)
{
    char type[32] = "";
    ntc_json_str(json, len, "type", type, sizeof type);
    const char *raw;
    size_t raw_len;
    char text[400];
    if (!strcmp(type, "message")) {
        if (nt_cli_json_raw(json, len, "message", &raw, &raw_len) == 0)
            app__on_message(a, raw, raw_len, true);
    } else if (!strcmp(type, "receipt")) {
        int64_t chat_id = 0, uid = 0, d = 0, r = 0;
        ntc_json_int(json, len, "chat_id", &chat_id);
        ntc_json_int(json, len, "user_id", &uid);
        ntc_json_int(json, len, "delivered_seq", &d);
        ntc_json_int(json, len, "read_seq", &r);
        app_chat *c = app_chat_find(a, chat_id);
        if (!c || uid == a->ctx.creds.user_id) return;
        if (d > c->peer_delivered) c->peer_delivered = d;
        if (r > c->peer_read) c->peer_read = r;
        snprintf(text, sizeof text, "%s: %s has read up to %lld, received up to %lld", c->name,
                 app_nick(a, uid), (long long)r, (long long)d);
        if (a->face->event) a->face->event(a, text);
    } else if (!strcmp(type, "typing")) {
        int64_t chat_id = 0, uid = 0;
        ntc_json_int(json, len, "chat_id", &chat_id);
        ntc_json_int(json, len, "user_id", &uid);
        app_chat *c = app_chat_find(a, chat_id);
        if (!c || uid == a->ctx.creds.user_id) return;
        bool repeat =
            chat_id == a->current && a->typing_user == uid && nt_mono_ns() < a->typing_until_ns;
        if (chat_id == a->current) {
            a->typing_user = uid;
            a->typing_until_ns = nt_mono_ns() + APP_TYPING_SHOW_NS;
        }
        snprintf(text, sizeof text, "%s: %s is typing", c->name, app_nick(a, uid));
        if (a->face->event && !repeat) a->face->event(a, text);
    } else if (!strcmp(type, "presence")) {
        int64_t uid = 0;
        ntc_json_int(json, len, "user_id", &uid);
        app_user *u = app_user_get(a, uid);
        if (!u) return;
        u->online = app__json_true(json, len, "online");
        snprintf(text, sizeof text, "%s is %s", u->nickname, u->online ? "online" : "offline");
        if (a->face->event) a->face->event(a, text);
    } else if (!strcmp(type, "chat")) {
        if (nt_cli_json_raw(json, len, "chat", &raw, &raw_len) == 0) {
            app_chat *c = app__upsert_chat(a, raw, raw_len);
            if (c) app_notice(a, "chat %s (%lld) changed", c->name, (long long)c->id);
        }
    } else if (!strcmp(type, "chat_closed")) {
        int64_t chat_id = 0;
        ntc_json_int(json, len, "chat_id", &chat_id);
        app_chat *c = app_chat_find(a, chat_id);
        if (c) {
            c->closed = true;
            app_notice(a, "%s has ended (/match for a new one)", c->name);
        }
    } else if (!strcmp(type, "friend_request")) {
        char nick[64] = "?";
        ntc_json_str(json, len, "user.nickname", nick, sizeof nick);
        app_notice(a, "%s asks to be your friend: /accept %s", nick, nick);
    } else if (!strcmp(type, "friend")) {
        char nick[64] = "?";
        ntc_json_str(json, len, "user.nickname", nick, sizeof nick);
        app_notice(a, "%s and you are friends now", nick);
    } else if (!strcmp(type, "matched")) {
        char alias[64] = "stranger", gender[16] = "?";
        int64_t age = 0;
        ntc_json_str(json, len, "partner.alias", alias, sizeof alias);
        ntc_json_str(json, len, "partner.gender", gender, sizeof gender);
        ntc_json_int(json, len, "partner.age", &age);
        if (nt_cli_json_raw(json, len, "chat", &raw, &raw_len) == 0) {
            app_chat *c = app__upsert_chat(a, raw, raw_len);
            if (c) {
                snprintf(c->name, sizeof c->name, "~%s", alias);
                int64_t id = c->id;
                app_notice(a, "matched with %s (%s, %lld): say hello; /reveal, /next, /leave",
                           alias, gender, (long long)age);
                app_open_chat(a, id);
            }
        }
    } else if (!strcmp(type, "error")) {
        char code[64] = "", msg[256] = "";
        ntc_json_str(json, len, "code", code, sizeof code);
        ntc_json_str(json, len, "message", msg, sizeof msg);
        app_notice(a, "server: %s %s", code, msg);
    }
    if (a->face->changed) a->face->changed(a);
}

/* ---- connection ------------------------------------------------------------------------ */

static void app__schedule_retry(app *a)
{
    a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : 250;
    if (a->backoff_ms > APP_BACKOFF_MAX_MS) a->backoff_ms = APP_BACKOFF_MAX_MS;
    a->retry_at_ns = nt_mono_ns() + (uint64_t)a->backoff_ms * 1000000u;
}

/* Connects and authenticates (refreshing the token once if refused), then
 * catches every known chat up. */
static void app__connect(app *a)
{
    a->retry_at_ns = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        ntc_conn *c = ntc_conn_connect_blocking(a->ctx.host, a->ctx.port, 3000);
        if (!c) {
            a->ws_error = errno;
            app__schedule_retry(a);
            return;
        }
        int rc = ntc_conn_auth(c, a->ctx.creds.access_token, 3000);
        if (rc == 0) {
            a->ws = c;
            a->ws_open = true;
            break;
        }
        ntc_conn_free(c);
        if (rc != -EACCES || attempt || nt_cli_refresh(&a->ctx) != 0) {
            if (rc == -EACCES)
                app_notice(a, "the server refused the session; /quit and run natter login");
            app__schedule_retry(a);
            return;
        }
    }
    bool was_down = a->backoff_ms != 0;
    a->backoff_ms = 0;
    /* Whatever happened while we were away. */
    app__load_chats(a);
    for (size_t i = 0; i < a->nchats; i++) {
        app_chat *c = &a->chats[i];
        if (c->last_seq <= c->known_seq) continue;
        if (c->id == a->current || !a->tui)
            app__catch_up(a, c);
        else
            c->known_seq = c->last_seq; /* the list's unread count says enough */
    }
    if (was_down) app_notice(a, "reconnected");
    if (a->face->changed) a->face->changed(a);
}

static void app__drop(app *a)
{
    ntc_conn_free(a->ws);
    a->ws = NULL;
    a->ws_open = false;
    app_notice(a, "connection lost; reconnecting");
    app__schedule_retry(a);
}

bool app_poll(app *a, int extra_fd, int timeout_ms)
{
    if (!a->ws && a->retry_at_ns && nt_mono_ns() >= a->retry_at_ns) app__connect(a);
    struct pollfd p[2];
    int n = 0;
    if (extra_fd >= 0) p[n++] = (struct pollfd){.fd = extra_fd, .events = POLLIN};
    int ws_i = -1;
    if (a->ws) {
        ws_i = n;
        p[n++] = (struct pollfd){.fd = ntc_conn_fd(a->ws),
                                 .events = POLLIN | (ntc_conn_wants_write(a->ws) ? POLLOUT : 0)};
    }
    if (poll(p, (nfds_t)n, timeout_ms) < 0) return false;
    if (ws_i >= 0 && p[ws_i].revents) {
        int rc = 0;
        if (p[ws_i].revents & POLLOUT) rc = ntc_conn_on_writable(a->ws);
        if (rc == 0 && (p[ws_i].revents & (POLLIN | POLLHUP | POLLERR)))
            rc = ntc_conn_on_readable(a->ws);
        const char *json;
        size_t len;
        while (a->ws && ntc_conn_next(a->ws, &json, &len) == 1) {
            /* The frame lives until the next ntc_conn call: copy it, since
             * handling may send. */
            char *copy = strndup(json, len);
            if (copy) {
                app__on_frame(a, copy, len);
                free(copy);
            }
        }
        if (rc < 0 || ntc_conn_state(a->ws) == NTC_CLOSED) app__drop(a);
    }
    if (a->typing_user && nt_mono_ns() > a->typing_until_ns) {
        a->typing_user = 0;
        if (a->face->changed) a->face->changed(a);
    }
    return extra_fd >= 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
}

/* ---- commands ----------------------------------------------------------------------------- */

static void app__send_text(app *a, const char *text)
{
    app_chat *c = app_chat_find(a, a->current);
    if (!c) {
        app_notice(a, "no chat open: /chat NICK, /open CHAT or /chats");
        return;
    }
    nt_buf body = NT_BUF_INIT, resp = NT_BUF_INIT;
    char client_id[64], path[96];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(client_id, sizeof client_id, "cli-%d-%lld%09ld", (int)getpid(), (long long)now.tv_sec,
             now.tv_nsec);
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "text", text);
    nt_jw_kstr(&w, "client_id", client_id);
    nt_jw_obj_end(&w);
    snprintf(path, sizeof path, "/api/v1/chats/%lld/messages", (long long)c->id);
    int status = nt_cli_api(&a->ctx, "POST", path, nt_buf_cstr(&body), &resp);
    if (status < 0 && status != -ECONNREFUSED)
        status = nt_cli_api(&a->ctx, "POST", path, nt_buf_cstr(&body), &resp);
    if (status == 200 || status == 201)
        app__on_message(a, resp.data, resp.len, true);
    else
        app__fail(a, "send", status, &resp);
    nt_buf_free(&body);
    nt_buf_free(&resp);
}

/* Resolves NICK to a user id, reporting failures. */
static bool app__user_id(app *a, const char *nick, int64_t *id)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nt_cli_user_by_nick(&a->ctx, nick, id, NULL, 0, &resp);
    bool ok = status == 200;
    if (status == 404)
        app_notice(a, "no user %s", nick);
    else if (!ok)
        app__fail(a, nick, status, &resp);
    nt_buf_free(&resp);
    return ok;
}

/* A REST call whose answer is only success or failure. */
static bool app__call(app *a, const char *what, const char *method, const char *path,
                      const char *body)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nt_cli_api(&a->ctx, method, path, body, &resp);
    bool ok = status >= 200 && status < 300;
    if (!ok) app__fail(a, what, status, &resp);
    nt_buf_free(&resp);
    return ok;
}

static void app__list_chats(app *a)
{
    app__load_chats(a);
    if (!a->nchats) app_notice(a, "no chats yet: /chat NICK starts one");
    for (size_t i = 0; i < a->nchats; i++) {
        app_chat *c = &a->chats[i];
        app_user *u =
            c->partner_id && !strcmp(c->type, "direct") ? app_user_get(a, c->partner_id) : NULL;
        app_notice(a, "chat %lld %s %s, %lld unread%s", (long long)c->id, c->type, c->name,
                   (long long)c->unread, u ? (u->online ? ", online" : ", offline") : "");
    }
}

typedef struct names_state {
    nt_buf out;
} names_state;

static void app__name_item(const char *raw, size_t len, void *arg)
{
    names_state *ns = arg;
    char nick[64] = "?";
    ntc_json_str(raw, len, "nickname", nick, sizeof nick);
    nt_buf_appendf(&ns->out, "%s%s%s", ns->out.len ? ", " : "", nick,
                   app__json_true(raw, len, "online") ? " (online)" : "");
}

static void app__friends(app *a)
{
    nt_buf resp = NT_BUF_INIT;
    int status = nt_cli_api(&a->ctx, "GET", "/api/v1/friends", NULL, &resp);
    if (status != 200) {
        app__fail(a, "friends", status, &resp);
        nt_buf_free(&resp);
        return;
    }
    static const char *const keys[] = {"friends", "incoming", "outgoing"};
    for (int k = 0; k < 3; k++) {
        names_state ns = {.out = NT_BUF_INIT};
        nt_cli_json_each(resp.data, resp.len, keys[k], app__name_item, &ns);
        app_notice(a, "%s: %s", keys[k], ns.out.len ? nt_buf_cstr(&ns.out) : "none");
        nt_buf_free(&ns.out);
    }
    nt_buf_free(&resp);
}

static void app__profile(app *a, const char *nick)
{
    nt_buf resp = NT_BUF_INIT, path = NT_BUF_INIT;
    if (nick && *nick) {
        nt_buf_append_str(&path, "/api/v1/users/by-nickname/");
        nt_cli_urlenc(&path, nick[0] == '@' ? nick + 1 : nick);
    } else {
        nt_buf_append_str(&path, "/api/v1/users/me");
    }
    int status = nt_cli_api(&a->ctx, "GET", nt_buf_cstr(&path), NULL, &resp);
    if (status == 200) {
        char name[64] = "", bio[600] = "", gender[16] = "-", birth[16] = "-", email[200] = "";
        int64_t id = 0;
        ntc_json_int(resp.data, resp.len, "id", &id);
        ntc_json_str(resp.data, resp.len, "nickname", name, sizeof name);
        ntc_json_str(resp.data, resp.len, "bio", bio, sizeof bio);
        ntc_json_str(resp.data, resp.len, "gender", gender, sizeof gender);
        ntc_json_str(resp.data, resp.len, "birth_date", birth, sizeof birth);
        ntc_json_str(resp.data, resp.len, "email", email, sizeof email);
        app_notice(a, "%s (user %lld)%s%s, %s, gender %s, born %s%s%s", name, (long long)id,
                   email[0] ? " " : "", email,
                   app__json_true(resp.data, resp.len, "online") ? "online" : "offline", gender,
                   birth, bio[0] ? ", bio: " : "", bio);
    } else {
        app__fail(a, "profile", status, &resp);
    }
    nt_buf_free(&resp);
    nt_buf_free(&path);
}

static void app__group(app *a, char *args)
{
    char *save = NULL;
    char *title = strtok_r(args, " ", &save);
    if (!title) {
        app_notice(a, "usage: /group TITLE NICK...");
        return;
    }
    nt_buf body = NT_BUF_INIT, resp = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &body);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "group");
    nt_jw_kstr(&w, "title", title);
    nt_jw_key(&w, "member_ids");
    nt_jw_arr(&w);
    bool ok = true;
    for (char *nick = strtok_r(NULL, " ", &save); nick && ok; nick = strtok_r(NULL, " ", &save)) {
        int64_t id = 0;
        ok = app__user_id(a, nick, &id);
        nt_jw_int(&w, id);
    }
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    if (ok) {
        int status = nt_cli_api(&a->ctx, "POST", "/api/v1/chats", nt_buf_cstr(&body), &resp);
        app_chat *c =
            status == 201 || status == 200 ? app__upsert_chat(a, resp.data, resp.len) : NULL;
        if (c)
            app_open_chat(a, c->id);
        else
            app__fail(a, "group", status == 201 ? 502 : status, &resp);
    }
    nt_buf_free(&body);
    nt_buf_free(&resp);
}

static void app__join(app *a, const char *what)
{
    char spec[200];
    if (!*what) {
        app_notice(a, "usage: /join TITLE or /join CHAT_ID");
        return;
    }
    char *end;
    long long id = strtoll(what, &end, 10);
    if (*end || id <= 0) {
        /* A channel of ours by title (every user is in the lobby). */
        snprintf(spec, sizeof spec, "#%s", what[0] == '#' ? what + 1 : what);
        int64_t chat_id = 0;
        char msg[256];
        app__load_chats(a);
        if (nt_cli_resolve_chat(&a->ctx, spec, &chat_id, msg, sizeof msg) == NT_CLI_OK)
            app_open_chat(a, chat_id);
        else
            app_notice(a, "%s (join a channel you are not in by its id: /join ID)", msg);
        return;
    }
    char path[96], body[64];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/members", id);
    snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)a->ctx.creds.user_id);
    if (app__call(a, "join", "POST", path, body)) app_open_chat(a, id);
}

static bool app__leave_current(app *a)
{
    if (!a->current) {
        app_notice(a, "no chat open");
        return false;
    }
    char path[128];
    snprintf(path, sizeof path, "/api/v1/chats/%lld/members/%lld", (long long)a->current,
             (long long)a->ctx.creds.user_id);
    if (!app__call(a, "leave", "DELETE", path, NULL)) return false;
    app_chat *c = app_chat_find(a, a->current);
    app_notice(a, "left %s", c ? c->name : "the chat");
    app__remove_chat(a, a->current);
    app__free_lines(a);
    return true;
}

static void app__match(app *a)
{
    if (app__call(a, "match", "POST", "/api/v1/match", NULL))
        app_notice(a, "waiting for a match...");
}

static const char app_help[] =
    "commands: /chats  /open CHAT (id, @nick, #title)  /chat NICK  /group TITLE NICK...  "
    "/join lobby|ID  /friends  /add NICK  /accept NICK  /block NICK  /match  /next  /leave  "
    "/reveal  /profile [NICK]  /quit; anything else is sent to the open chat";

void app_input(app *a, const char *input)
{
    char line[8192];
    snprintf(line, sizeof line, "%s", input);
    size_t len = strlen(line);
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (!len) return;
    if (line[0] != '/' || line[1] == '/') {
        app__send_text(a, line[0] == '/' ? line + 1 : line);
        goto done;
    }
    char *args = line + strcspn(line, " ");
    if (*args) *args++ = '\0';
    while (*args == ' ')
        args++;
    const char *cmd = line + 1;
    char path[128], body[160];
    int64_t uid = 0;

    if (!strcmp(cmd, "quit") || !strcmp(cmd, "q")) {
        a->quit = true;
    } else if (!strcmp(cmd, "help")) {
        app_notice(a, "%s", app_help);
    } else if (!strcmp(cmd, "chats")) {
        app__list_chats(a);
    } else if (!strcmp(cmd, "chat") || !strcmp(cmd, "open")) {
        char spec[200], msg[256];
        int64_t chat_id = 0;
        if (!*args) {
            app_notice(a, "usage: /%s %s", cmd, !strcmp(cmd, "chat") ? "NICK" : "CHAT");
            goto done;
        }
        if (!strcmp(cmd, "chat") && args[0] != '@' && args[0] != '#')
            snprintf(spec, sizeof spec, "@%s", args);
        else
            snprintf(spec, sizeof spec, "%s", args);
        if (nt_cli_resolve_chat(&a->ctx, spec, &chat_id, msg, sizeof msg) == NT_CLI_OK)
            app_open_chat(a, chat_id);
        else
            app_notice(a, "%s", msg);
    } else if (!strcmp(cmd, "group")) {
        app__group(a, args);
    } else if (!strcmp(cmd, "join")) {
        app__join(a, args);
    } else if (!strcmp(cmd, "friends")) {
        app__friends(a);
    } else if (!strcmp(cmd, "add")) {
        if (!*args) {
            app_notice(a, "usage: /add NICK");
            goto done;
        }
        nt_buf b = NT_BUF_INIT;
        nt_jw w;
        nt_jw_init(&w, &b);
        nt_jw_obj(&w);
        nt_jw_kstr(&w, "nickname", args[0] == '@' ? args + 1 : args);
        nt_jw_obj_end(&w);
        if (app__call(a, "add", "POST", "/api/v1/friends/requests", nt_buf_cstr(&b)))
            app_notice(a, "friend request sent to %s", args);
        nt_buf_free(&b);
    } else if (!strcmp(cmd, "accept") || !strcmp(cmd, "block")) {
        if (!*args) {
            app_notice(a, "usage: /%s NICK", cmd);
            goto done;
        }
        if (!app__user_id(a, args, &uid)) goto done;
        if (!strcmp(cmd, "accept"))
            snprintf(path, sizeof path, "/api/v1/friends/requests/%lld/accept", (long long)uid);
        else
            snprintf(path, sizeof path, "/api/v1/blocks/%lld", (long long)uid);
        if (app__call(a, cmd, "POST", path, NULL))
            app_notice(a, "%s %s", !strcmp(cmd, "accept") ? "accepted" : "blocked", args);
    } else if (!strcmp(cmd, "match")) {
        app__match(a);
    } else if (!strcmp(cmd, "next")) {
        app_chat *c = app_chat_find(a, a->current);
        if (c && !strcmp(c->type, "random") && !app__leave_current(a)) goto done;
        app__match(a);
    } else if (!strcmp(cmd, "leave")) {
        app__leave_current(a);
    } else if (!strcmp(cmd, "reveal")) {
        if (!a->current) {
            app_notice(a, "no chat open");
            goto done;
        }
        snprintf(path, sizeof path, "/api/v1/chats/%lld/reveal", (long long)a->current);
        if (app__call(a, "reveal", "POST", path, NULL))
            app_notice(a, "you agreed to reveal your profile; it shows once both agree");
    } else if (!strcmp(cmd, "profile")) {
        app__profile(a, args);
    } else if (!strcmp(cmd, "bio")) {
        nt_buf b = NT_BUF_INIT;
        nt_jw w;
        nt_jw_init(&w, &b);
        nt_jw_obj(&w);
        nt_jw_kstr(&w, "bio", args);
        nt_jw_obj_end(&w);
        if (app__call(a, "bio", "PATCH", "/api/v1/users/me", nt_buf_cstr(&b)))
            app_notice(a, "bio updated");
        nt_buf_free(&b);
    } else {
        (void)body;
        app_notice(a, "unknown command /%s; /help lists them", cmd);
    }
done:
    nt_cli_flush_creds(&a->ctx);
    if (a->face->changed) a->face->changed(a);
}

/* ---- start ------------------------------------------------------------------------------ */

/* Makes sure we hold a working session, signing in on the terminal if not. */
static int app__ensure_session(app *a, bool can_prompt)
{
    for (int round = 0; round < 3; round++) {
        if (a->ctx.have_creds) {
            nt_buf resp = NT_BUF_INIT;
            int status = nt_cli_api(&a->ctx, "GET", "/api/v1/users/me", NULL, &resp);
            if (status == 200) {
                ntc_json_str(resp.data, resp.len, "nickname", a->ctx.creds.nickname,
                             sizeof a->ctx.creds.nickname);
                nt_buf_free(&resp);
                return NT_CLI_OK;
            }
            if (status != 401) {
                int code = nt_cli_check(&a->ctx, status, &resp, "sign in");
                nt_buf_free(&resp);
                return code;
            }
            nt_buf_free(&resp);
            a->ctx.have_creds = false;
            fprintf(stderr, "natter: the saved session has expired\n");
        }
        if (!can_prompt) return nt_cli_need_login(&a->ctx);
        char choice[16];
        fprintf(stderr, "Natter at %s\n", a->ctx.server);
        if (nt_cli_read_line("sign in (i) or sign up (u)? [i] ", choice, sizeof choice) != 0)
            return NT_CLI_AUTH;
        bool sign_up = choice[0] == 'u' || choice[0] == 'U';
        int code = nt_cli_sign_in(&a->ctx, sign_up, NULL, NULL, NULL);
        if (code == NT_CLI_ERR || code == NT_CLI_USAGE) return code;
    }
    return NT_CLI_AUTH;
}

int nt_cli_interactive(int argc, char **argv, const char *server, bool force_plain)
{
    app a;
    memset(&a, 0, sizeof a);
    int code = nt_cli_ctx_init(&a.ctx, server);
    if (code) return code;
    a.tui = !force_plain && isatty(STDOUT_FILENO) && isatty(STDIN_FILENO);
    a.face = a.tui ? &app_tui_face : &app_plain_face;
    a.lines = calloc(APP_MAX_LINES, sizeof *a.lines);
    if (!a.lines) {
        fprintf(stderr, "natter: out of memory\n");
        return NT_CLI_ERR;
    }
    code = app__ensure_session(&a, isatty(STDIN_FILENO));
    if (code) goto out;
    app__connect(&a);
    if (!a.ws) {
        fprintf(stderr, "natter: cannot connect to %s:%d: %s\n", a.ctx.host, a.ctx.port,
                strerror(a.ws_error ? a.ws_error : ECONNREFUSED));
        code = NT_CLI_ERR;
        goto out;
    }
    code = a.tui ? app_tui_run(&a) : app_plain_run(&a);
out:
    nt_cli_flush_creds(&a.ctx);
    if (a.ws) ntc_conn_close(a.ws, 1000);
    app__free_lines(&a);
    free(a.lines);
    free(a.chats);
    free(a.users);
    return code;
}
