/*
 * natter, the terminal client of Natter: main() reads the global options,
 * picks the command and hands over to it (script.c for one-shot commands,
 * app.c for the interactive client, which runs when no command is given).
 * Exit codes: 0 ok, 1 server or runtime error, 2 bad arguments, 3 login
 * rejected or not logged in.
 */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char main_help[] =
    "usage: natter [--server URL] [--plain] [COMMAND [ARGS...]]\n"
    "\n"
    "Without a command natter runs interactively: full screen when stdout is a\n"
    "terminal, else (or with --plain) a line mode that reads commands and messages\n"
    "from stdin and prints events as lines. Type /help inside for its commands.\n"
    "\n"
    "Commands:\n"
    "  login [--login L] [--password P]    sign in and save the session\n"
    "  register [--nickname N] [--email E] [--password P]\n"
    "                                      create an account and sign in\n"
    "  logout                              end the session, forget the credentials\n"
    "  send CHAT TEXT...                   send a message (prints it as JSON)\n"
    "  tail CHAT [--after SEQ] [--count N] follow new messages, one JSON line each\n"
    "  history CHAT [--after SEQ] [--limit N]\n"
    "                                      print stored messages as JSON lines\n"
    "  users search PREFIX [--json]        find users by nickname prefix\n"
    "  chats [--json]                      list your chats\n"
    "\n"
    "CHAT is a chat id, @nickname (the direct chat with that user) or #title (one of\n"
    "your groups or channels, e.g. #lobby).\n"
    "\n"
    "Options:\n"
    "  --server URL   the server (default $NATTER_SERVER, then the saved session's,\n"
    "                 then " NT_CLI_DEFAULT_SERVER ")\n"
    "  --plain        line mode even on a terminal\n"
    "  --help         this text; COMMAND --help for one command\n"
    "\n"
    "The session is kept in $XDG_CONFIG_HOME/natter/credentials (default\n"
    "~/.config/natter/credentials, mode 0600). NATTER_PASSWORD gives the password\n"
    "to login/register without a prompt.\n"
    "\n"
    "Exit codes: 0 ok, 1 server or runtime error (e.g. the server is down),\n"
    "2 bad arguments, 3 login rejected or not logged in.\n";

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv, const char *server);
} command;

static const command commands[] = {
    {"login", nt_cli_cmd_login}, {"register", nt_cli_cmd_register}, {"logout", nt_cli_cmd_logout},
    {"send", nt_cli_cmd_send},   {"tail", nt_cli_cmd_tail},         {"history", nt_cli_cmd_history},
    {"users", nt_cli_cmd_users}, {"chats", nt_cli_cmd_chats},
};

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    const char *server = NULL;
    bool plain = false;
    int i = 1;
    /* Global options come before the command. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            fputs(main_help, stdout);
            return NT_CLI_OK;
        } else if (!strcmp(arg, "--plain")) {
            plain = true;
        } else if (!strcmp(arg, "--server")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "natter: --server needs a URL (see: natter --help)\n");
                return NT_CLI_USAGE;
            }
            server = argv[++i];
        } else if (!strncmp(arg, "--server=", 9)) {
            server = arg + 9;
        } else {
            fprintf(stderr, "natter: unknown option %s (see: natter --help)\n", arg);
            return NT_CLI_USAGE;
        }
    }
    if (i == argc) return nt_cli_interactive(argc - i, argv + i, server, plain);
    if (!strcmp(argv[i], "help")) {
        fputs(main_help, stdout);
        return NT_CLI_OK;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(argv[i], commands[k].name)) return commands[k].run(argc - i, argv + i, server);
    fprintf(stderr, "natter: unknown command '%s' (see: natter --help)\n", argv[i]);
    return NT_CLI_USAGE;
}
