/*
 * The full-screen face of the interactive client, on ncursesw (wide
 * characters, so UTF-8 text is measured and wrapped by display width):
 *
 *     Chats           | @bob  (bob is typing...)
 *     > @bob       ●  | 12:01 bob: hi
 *       #lobby    (3) | 12:02 me: hello ✓✓ read
 *                     | ...
 *     [status: last notice or error]
 *     > input line
 *
 * The chat list shows unread counts and a dot for partners who are online;
 * own messages carry ✓ (stored), ✓✓ (delivered) or ✓✓ read. Keys: Enter
 * sends, Up/Down walk the input history, Tab opens the next chat,
 * PgUp/PgDn scroll, Ctrl-U clears the line, Ctrl-C or /quit leaves.
 */
#define _XOPEN_SOURCE_EXTENDED 1
#include <errno.h>
#include <limits.h>
#include <ncurses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "cli/app.h"

#define TUI_INPUT_MAX 2048
#define TUI_HISTORY 100
#define TUI_LIST_W 24

static struct {
    wchar_t input[TUI_INPUT_MAX];
    size_t input_len;
    char *history[TUI_HISTORY];
    int nhistory;
    int history_pos; /* == nhistory while editing a new line */
    int scroll;      /* rows scrolled up from the bottom */
    bool active;
} tui;

/* UTF-8 to a wide string with control characters as spaces. The caller
 * frees it. */
static wchar_t *tui__wide(const char *text)
{
    size_t n = strlen(text);
    wchar_t *w = calloc(n + 1, sizeof *w);
    if (!w) return NULL;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t out = 0;
    const char *p = text;
    while (*p) {
        wchar_t wc;
        size_t used = mbrtowc(&wc, p, strlen(p), &st);
        if (used == (size_t)-1 || used == (size_t)-2) {
            wc = L'?';
            used = 1;
            memset(&st, 0, sizeof st);
        }
        if (wc < 0x20 || wc == 0x7f) wc = L' ';
        w[out++] = wc;
        p += used;
    }
    w[out] = L'\0';
    return w;
}

static int tui__width(wchar_t wc)
{
    int w = wcwidth(wc);
    return w < 0 ? 1 : w;
}

/* Splits w into rows of at most `width` columns: row i spans
 * [starts[i], starts[i+1]). Returns the number of rows (at most cap). */
static int tui__wrap(const wchar_t *w, int width, size_t *starts, int cap)
{
    int rows = 0;
    size_t i = 0, len = wcslen(w);
    starts[rows++] = 0;
    int col = 0;
    for (; i < len; i++) {
        int cw = tui__width(w[i]);
        if (col + cw > width && col > 0) {
            if (rows == cap) break;
            starts[rows++] = i;
            col = 0;
        }
        col += cw;
    }
    starts[rows] = i;
    return rows;
}

/* The text shown for one pane line (UTF-8). */
static void tui__format(app *a, const app_line *l, char *out, size_t cap)
{
    if (!l->chat_id) {
        snprintf(out, cap, "* %s", l->text);
        return;
    }
    char when[8] = "";
    if (l->ts > 0) {
        time_t t = (time_t)(l->ts / 1000);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%H:%M", &tm);
    }
    const char *mark = "";
    bool mine = l->sender_id == a->ctx.creds.user_id;
    app_chat *c = app_chat_find(a, l->chat_id);
    if (mine && c)
        mark = l->seq <= c->peer_read        ? " \u2713\u2713 read"
               : l->seq <= c->peer_delivered ? " \u2713\u2713"
                                             : " \u2713";
    snprintf(out, cap, "%s %s: %s%s%s%s", when, mine ? "me" : app_nick(a, l->sender_id), l->text,
             mark, l->pow ? "\n    " : "", l->pow ? l->pow : "");
}

/* Draws one logical line (may contain '\n' for the pow part) into rows
 * ending at `bottom`; returns how many rows it took (drawn only if they
 * fall at or below `top`). */
static int tui__draw_line(const char *text, int top, int bottom, int x, int width, int skip)
{
    /* Split at the first newline: two logical parts. */
    const char *nl = strchr(text, '\n');
    char first[8192];
    snprintf(first, sizeof first, "%.*s", nl ? (int)(nl - text) : (int)strlen(text), text);
    const char *parts[2] = {first, nl ? nl + 1 : NULL};
    size_t starts[2][64];
    wchar_t *w[2] = {NULL, NULL};
    int rows[2] = {0, 0}, total = 0;
    for (int k = 0; k < 2 && parts[k]; k++) {
        w[k] = tui__wide(parts[k]);
        if (w[k]) rows[k] = tui__wrap(w[k], width, starts[k], 63);
        total += rows[k];
    }
    int y = bottom - total + 1 + skip;
    for (int k = 0; k < 2; k++) {
        for (int r = 0; r < rows[k]; r++, y++) {
            if (y >= top && y <= bottom)
                mvaddnwstr(y, x, w[k] + starts[k][r], (int)(starts[k][r + 1] - starts[k][r]));
        }
        free(w[k]);
    }
    return total;
}

static void tui_draw(app *a)
{
    if (!tui.active) return;
    erase();
    int rows = LINES, cols = COLS;
    int list_w = cols >= 60 ? TUI_LIST_W : 0;
    int pane_x = list_w ? list_w + 1 : 0, pane_w = cols - pane_x;
    int pane_bottom = rows - 3;

    if (list_w) {
        attron(A_BOLD);
        mvaddstr(0, 0, "Chats");
        attroff(A_BOLD);
        for (size_t i = 0; i < a->nchats && (int)i + 1 <= pane_bottom; i++) {
            app_chat *c = &a->chats[i];
            char right[24] = "";
            if (c->unread) snprintf(right, sizeof right, "(%lld)", (long long)c->unread);
            app_user *u = NULL;
            if (c->partner_id && !strcmp(c->type, "direct")) {
                for (size_t k = 0; k < a->nusers; k++)
                    if (a->users[k].id == c->partner_id) u = &a->users[k];
            }
            char row[256];
            snprintf(row, sizeof row, "%s%-*.*s", c->id == a->current ? "> " : "  ", list_w - 8,
                     list_w - 8, c->name);
            if (c->id == a->current) attron(A_REVERSE);
            mvaddstr((int)i + 1, 0, row);
            if (c->id == a->current) attroff(A_REVERSE);
            if (u && u->online) mvaddstr((int)i + 1, list_w - 7, "\u25cf");
            if (c->closed) mvaddstr((int)i + 1, list_w - 7, "x");
            mvaddstr((int)i + 1, list_w - 5, right);
        }
        mvvline(0, list_w, ACS_VLINE, rows - 2);
    }

    /* Header: the open chat and who is typing. */
    app_chat *cur = app_chat_find(a, a->current);
    char head[300];
    snprintf(head, sizeof head, "%s%s%s%s", cur ? cur->name : "no chat open (/chat NICK)",
             a->typing_user ? "  (" : "", a->typing_user ? app_nick(a, a->typing_user) : "",
             a->typing_user ? " is typing...)" : "");
    attron(A_BOLD);
    tui__draw_line(head, 0, 0, pane_x, pane_w, 0);
    attroff(A_BOLD);
    if (!a->ws_open) mvaddstr(0, cols - 14 > pane_x ? cols - 14 : pane_x, "[offline]");

    /* Messages, newest at the bottom. */
    int y = pane_bottom, skip = tui.scroll;
    for (size_t i = a->nlines; i-- > 0 && y >= 1;) {
        char text[9000];
        tui__format(a, &a->lines[i], text, sizeof text);
        if (skip > 0) { /* scrolled up: measure the newest lines, draw nothing */
            skip -= tui__draw_line(text, INT_MAX, y, pane_x, pane_w, 0);
            continue;
        }
        y -= tui__draw_line(text, 1, y, pane_x, pane_w, 0);
    }

    /* Status and input. */
    attron(A_REVERSE);
    mvhline(rows - 2, 0, ' ', cols);
    char status[400];
    snprintf(status, sizeof status, " %s | %s", a->ctx.creds.nickname, a->status);
    tui__draw_line(status, rows - 2, rows - 2, 0, cols, 0);
    attroff(A_REVERSE);
    mvaddstr(rows - 1, 0, "> ");
    int width = cols - 3;
    size_t from = 0;
    int total = 0;
    for (size_t i = tui.input_len; i-- > 0;) {
        total += tui__width(tui.input[i]);
        if (total > width) {
            from = i + 1;
            break;
        }
    }
    addnwstr(tui.input + from, (int)(tui.input_len - from));
    refresh();
}

static void tui_line(app *a, const app_line *l, const app_chat *c)
{
    tui_draw(a);
}

static void tui_event(app *a, const char *text)
{
    snprintf(a->status, sizeof a->status, "%s", text);
    tui_draw(a);
}

const app_face app_tui_face = {
    .line = tui_line,
    .event = tui_event,
    .changed = tui_draw,
};

static void tui__submit(app *a)
{
    char line[TUI_INPUT_MAX * 4 + 1];
    tui.input[tui.input_len] = L'\0';
    size_t n = wcstombs(line, tui.input, sizeof line - 1);
    if (n == (size_t)-1) n = 0;
    line[n] = '\0';
    tui.input_len = 0;
    tui.scroll = 0;
    if (!line[0]) return;
    if (tui.nhistory == TUI_HISTORY) {
        free(tui.history[0]);
        memmove(tui.history, tui.history + 1, (TUI_HISTORY - 1) * sizeof *tui.history);
        tui.nhistory--;
    }
    tui.history[tui.nhistory++] = strdup(line);
    tui.history_pos = tui.nhistory;
    app_input(a, line);
}

static void tui__recall(int pos)
{
    tui.history_pos = pos;
    tui.input_len = 0;
    if (pos < tui.nhistory && tui.history[pos]) {
        size_t n = mbstowcs(tui.input, tui.history[pos], TUI_INPUT_MAX - 1);
        tui.input_len = n == (size_t)-1 ? 0 : n;
    }
}

static void tui__key(app *a, int kind, wint_t ch)
{
    if (kind == KEY_CODE_YES) {
        switch (ch) {
        case KEY_ENTER:
            tui__submit(a);
            break;
        case KEY_BACKSPACE:
            if (tui.input_len) tui.input_len--;
            break;
        case KEY_UP:
            if (tui.history_pos > 0) tui__recall(tui.history_pos - 1);
            break;
        case KEY_DOWN:
            if (tui.history_pos < tui.nhistory) tui__recall(tui.history_pos + 1);
            break;
        case KEY_PPAGE:
            tui.scroll += LINES / 2;
            break;
        case KEY_NPAGE:
            tui.scroll = tui.scroll > LINES / 2 ? tui.scroll - LINES / 2 : 0;
            break;
        default:
            break;
        }
        return;
    }
    switch (ch) {
    case 3: /* Ctrl-C */
        a->quit = true;
        return;
    case 4: /* Ctrl-D on an empty line */
        if (!tui.input_len) a->quit = true;
        return;
    case '\r':
    case '\n':
        tui__submit(a);
        return;
    case 127:
    case 8:
        if (tui.input_len) tui.input_len--;
        return;
    case 21: /* Ctrl-U */
        tui.input_len = 0;
        return;
    case '\t':
        if (a->nchats) {
            size_t next = 0;
            for (size_t i = 0; i < a->nchats; i++)
                if (a->chats[i].id == a->current) next = (i + 1) % a->nchats;
            app_open_chat(a, a->chats[next].id);
        }
        return;
    default:
        break;
    }
    if (ch < 0x20 || tui.input_len >= TUI_INPUT_MAX - 1) return;
    tui.input[tui.input_len++] = (wchar_t)ch;
    if (tui.input[0] != L'/') app_typing(a);
}

int app_tui_run(app *a)
{
    if (!initscr()) {
        fprintf(stderr, "natter: cannot start the full-screen mode; try --plain\n");
        return NT_CLI_ERR;
    }
    tui.active = true;
    raw();
    noecho();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    app_notice(a, "signed in as %s on %s; /help lists the commands", a->ctx.creds.nickname,
               a->ctx.server);
    if (a->nchats) app_notice(a, "%zu chats; /chat NICK or Tab to open one", a->nchats);
    tui_draw(a);
    while (!a->quit) {
        bool key = app_poll(a, STDIN_FILENO, 250);
        bool dirty = false;
        wint_t ch;
        int kind;
        while (key && !a->quit && (kind = get_wch(&ch)) != ERR) {
            if (kind == KEY_CODE_YES && ch == KEY_RESIZE) {
                dirty = true;
                continue;
            }
            tui__key(a, kind, ch);
            dirty = true;
        }
        if (dirty || !key) tui_draw(a);
    }
    tui.active = false;
    endwin();
    for (int i = 0; i < tui.nhistory; i++)
        free(tui.history[i]);
    tui.nhistory = 0;
    return NT_CLI_OK;
}
