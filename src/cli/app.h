/*
 * The interactive client's model, shared by its two faces: app.c keeps the
 * state (chats, users, the open conversation), runs the event loop over the
 * WebSocket and the terminal, executes slash commands and reconnects; a
 * face (plain.c: lines on stdout; tui.c: ncurses) shows that state and turns
 * keystrokes or stdin lines into calls of app_input.
 */
#ifndef NT_CLI_APP_H
#define NT_CLI_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "cli/cli.h"

#define APP_MAX_LINES 1000

typedef struct app_chat {
    int64_t id;
    char type[16];      /* direct, group, channel, random */
    char name[160];     /* what to show: title, @nickname or the random alias */
    int64_t partner_id; /* direct and random chats: the other member, else 0 */
    int64_t last_seq;   /* highest seq the server has */
    int64_t known_seq;  /* highest seq this client has shown or skipped past */
    int64_t unread;
    int64_t peer_delivered; /* highest delivered/read marker of the other members */
    int64_t peer_read;
    bool closed; /* a random chat that ended */
} app_chat;

typedef struct app_user {
    int64_t id;
    char nickname[64];
    bool online;
} app_user;

typedef struct app_line {
    int64_t chat_id; /* 0: a notice from the client itself */
    int64_t seq;
    int64_t sender_id;
    int64_t ts;
    char *text; /* owned; the message text or the notice */
    char *pow;  /* owned; "pow nonce=... verified" for bot proofs, or NULL */
} app_line;

struct app;

typedef struct app_face {
    /* A line was added: a message of any chat (chat_id set) or a notice. */
    void (*line)(struct app *a, const app_line *l, const app_chat *chat);
    /* A short live event (typing, receipt, presence) as text. */
    void (*event)(struct app *a, const char *text);
    /* The state changed: redraw if the face shows state. */
    void (*changed)(struct app *a);
} app_face;

typedef struct app {
    nt_cli_ctx ctx;
    const app_face *face;
    bool tui;

    ntc_conn *ws;
    bool ws_open;         /* authenticated */
    uint64_t retry_at_ns; /* next reconnect attempt, 0 = none pending */
    int backoff_ms;
    int ws_error; /* errno of the last failed connect */

    app_chat *chats;
    size_t nchats, chats_cap;
    app_user *users;
    size_t nusers, users_cap;

    int64_t current; /* open chat id, 0 = none */
    app_line *lines; /* the open chat's messages and notices, oldest first */
    size_t nlines;

    int64_t typing_user; /* someone typing in the open chat, until typing_until */
    uint64_t typing_until_ns;
    uint64_t typing_sent_ns;

    char status[256]; /* last notice, for the status bar */
    bool quit;
} app;

/* Handles one line the user entered: a /command or a message for the open
 * chat. */
void app_input(app *a, const char *line);

/* The user is typing in the open chat (sends a typing frame, throttled). */
void app_typing(app *a);

/* Adds a notice (printf-style) to the pane and the status bar. */
void app_notice(app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The chat with this id, or NULL. */
app_chat *app_chat_find(app *a, int64_t id);

/* A user's nickname (fetched once and cached); "user N" if unknown. */
const char *app_nick(app *a, int64_t user_id);

/* The cached user, fetching it if needed; NULL if it cannot be had. */
app_user *app_user_get(app *a, int64_t user_id);

/* Opens a chat (loads its recent history into the pane, marks it read). */
void app_open_chat(app *a, int64_t chat_id);

/* Faces. */
extern const app_face app_plain_face;
extern const app_face app_tui_face;

/* The face's main loop; returns when a->quit is set or input ends. */
int app_plain_run(app *a);
int app_tui_run(app *a);

/* One turn of network work: waits up to timeout_ms for the WebSocket or
 * the extra fd (stdin; -1 for none) and handles what arrived. Returns true
 * if the extra fd is readable. */
bool app_poll(app *a, int extra_fd, int timeout_ms);

#endif
