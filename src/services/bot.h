/*
 * The built-in bot (API.md, "The built-in bot"; issue 4): the system user
 * `bot` answers in direct chats with the text reversed, proves work for
 * texts ending in "!pow" (work queue) or "!rpc" (request/reply), and posts
 * "Hello world!" to the lobby on a timer that one process of a cluster runs
 * (leader lock).
 *
 * The bot hears messages through ctx->message_hook (nt_bot_message_hook,
 * or nt_bot_relay_hook on a gateway whose bot runs elsewhere), which only
 * puts a job on the bus queue "bot.inbox"; everything else runs
 * on the bot's own threads and talks to the rest only through bus.h and
 * the store/messages service, so the proof-of-work workers could be
 * separate processes:
 *
 *  - dispatcher (1 thread): pops "bot.inbox", checks the chat is a direct
 *    chat, answers plain texts itself (reverse), pushes "!pow" jobs on the
 *    bus queue "pow", hands "!rpc" jobs to the RPC callers;
 *  - RPC callers (a small pool): call the bus service "pow.rpc" with
 *    nt_bus_request and wait up to rpc_timeout_ms, then post the proof or
 *    "proof of work timed out after N ms; try again";
 *  - PoW workers: pow_workers threads pop "pow" (acknowledged only after
 *    the reply is stored and sent) and as many threads serve "pow.rpc"
 *    (dedicated threads per kind, so a long queue job never delays a call
 *    and neither kind polls the other). Each job is searched on all cores
 *    (pow_threads);
 *  - lobby cron (1 thread, none when lobby_interval_s is 0).
 *
 * Every reply carries a client_id derived from the chat and seq of the
 * message it answers, so a job redelivered after a worker died (or done
 * twice) is stored once.
 *
 * The per-user limit on pending proof-of-work jobs (!pow and !rpc both
 * count) is an in-process table in this build; in a cluster it would move
 * to the bus with the queues.
 */
#ifndef NT_SERVICES_BOT_H
#define NT_SERVICES_BOT_H

#include <stddef.h>
#include <stdint.h>

#include "services/api.h"

typedef struct nt_bot_opts {
    int pow_bits;          /* leading zero bits of a proof (config --pow-bits) */
    int pow_workers;       /* threads taking "pow" jobs, and as many serving
                              "pow.rpc"; 0 = online CPUs */
    int pow_threads;       /* threads one job is searched on; 0 = online CPUs */
    int pow_max_pending;   /* pending !pow/!rpc jobs per user, >= 1 */
    int pow_visibility_ms; /* how long a taken "pow" job stays hidden from other
                              workers; 0 = 60 s, doubled per bit above 28 */
    int rpc_timeout_ms;    /* how long an !rpc waits for a worker */
    int lobby_interval_s;  /* seconds between "Hello world!"; 0 = no cron */
} nt_bot_opts;

typedef struct nt_bot nt_bot;

/*
 * Finds the `bot` user and the `lobby` channel (made by migration 1), makes
 * sure the bot is a lobby member, and starts the bot's threads. ctx must
 * stay valid, with its store and bus open, until nt_bot_stop returns. The
 * caller then sets ctx->bot to the result and ctx->message_hook to
 * nt_bot_message_hook. Returns NULL with a one-line reason in err on
 * failure (nothing left running).
 */
nt_bot *nt_bot_start(nt_ctx *ctx, const nt_bot_opts *opts, char *err, size_t err_len);

/*
 * Stops every bot thread: searches in progress are abandoned (a "pow" job
 * stays unacknowledged on the bus for another worker), an !rpc waiting for
 * a local worker gets its error answer at once. Returns when all threads
 * have ended (within about a quarter second plus one store write); then
 * frees the bot. Call before closing the store and the bus, after the
 * gateway stopped calling the hook (or with ctx->message_hook cleared
 * first). NULL is a no-op.
 */
void nt_bot_stop(nt_bot *bot);

/*
 * For ctx->message_hook: called once per newly stored message on any
 * thread, loop threads included. Cheap: when ctx->bot is set, the message
 * is not the bot's, the chat has exactly two members and the bot is one of
 * them, it pushes one job on "bot.inbox"; it never blocks or computes.
 */
void nt_bot_message_hook(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n);

/*
 * For a process that runs the gateway but not the bot (the bot runs in
 * other processes of the cluster): looks up the `bot` user in ctx->store
 * for nt_bot_relay_hook. Call once, before the hook can be called. Returns
 * 0, or the store's negative error (NT_STORE_ENOTFOUND without a bot
 * user; the relay then stays off).
 */
int nt_bot_relay_init(nt_ctx *ctx);

/*
 * For ctx->message_hook in such a process, after nt_bot_relay_init: pushes
 * the same "bot.inbox" job nt_bot_message_hook would (same filter, same
 * JSON), for the bot processes to take; needs no ctx->bot and starts
 * nothing. Called on any thread; never blocks or computes. Does nothing
 * if nt_bot_relay_init did not succeed.
 */
void nt_bot_relay_hook(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n);

/*
 * Writes the `len` bytes of UTF-8 `text` reversed by Unicode code point
 * into out (room for len + 1 bytes), NUL-terminated, and returns len. Not
 * grapheme-aware, as API.md says code point: a combining mark ends up
 * before its base letter, and the parts of an emoji sequence (ZWJ, skin
 * tones, flags) are reversed too. A byte that is not part of a valid UTF-8
 * sequence is moved as a unit of its own.
 */
size_t nt_bot_reverse(const char *text, size_t len, char *out);

#endif
