/*
 * The line face of the interactive client, used when stdout is not a
 * terminal or with --plain: commands and messages are read from stdin one a
 * line, and everything that happens is printed as one line on stdout,
 * flushed at once:
 *
 *     [@bob] bob: hello            a message ([chat] sender: text)
 *       pow nonce=... verified     the bot's proof of work, under its reply
 *     * opened @bob (chat 3)       a notice from the client
 *     ~ @bob: bob is typing        a live event (typing, receipts, presence)
 *
 * End of input quits.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/app.h"

/* Prints text with control characters (newlines included) as spaces, so an
 * event stays one line. */
static void plain__put(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        putchar(*p < 0x20 || *p == 0x7f ? ' ' : *p);
}

static void plain_line(app *a, const app_line *l, const app_chat *c)
{
    if (!l->chat_id) {
        fputs("* ", stdout);
        plain__put(l->text);
    } else {
        printf("[%s] %s: ", c ? c->name : "?", app_nick(a, l->sender_id));
        plain__put(l->text);
        if (l->pow) {
            fputs("\n  ", stdout);
            plain__put(l->pow);
        }
    }
    putchar('\n');
    fflush(stdout);
}

static void plain_event(app *a, const char *text)
{
    fputs("~ ", stdout);
    plain__put(text);
    putchar('\n');
    fflush(stdout);
}

const app_face app_plain_face = {
    .line = plain_line,
    .event = plain_event,
    .changed = NULL,
};

int app_plain_run(app *a)
{
    app_notice(a, "signed in as %s on %s; /help lists the commands", a->ctx.creds.nickname,
               a->ctx.server);
    char buf[16384];
    size_t have = 0;
    while (!a->quit) {
        if (!app_poll(a, STDIN_FILENO, 200)) continue;
        ssize_t n = read(STDIN_FILENO, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (have) { /* a last line without its newline */
                buf[have] = '\0';
                app_input(a, buf);
            }
            break;
        }
        have += (size_t)n;
        char *start = buf, *nl;
        while (!a->quit && (nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
            *nl = '\0';
            app_input(a, start);
            start = nl + 1;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof buf - 1) { /* an overlong line: take it as it is */
            buf[have] = '\0';
            app_input(a, buf);
            have = 0;
        }
    }
    /* Let events already on the way (e.g. a reply) show up briefly. */
    for (int i = 0; i < 3 && !a->quit && a->ws; i++)
        app_poll(a, -1, 100);
    return NT_CLI_OK;
}
