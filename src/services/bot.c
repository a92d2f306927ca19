/*
 * The built-in bot: the hook that hears direct chats with `bot`, the
 * dispatcher that answers them, the proof-of-work workers behind the bus
 * queue "pow" and the bus service "pow.rpc", and the lobby cron. See bot.h
 * for the threads and how they talk; pow.c does the hashing.
 *
 * Bus payloads (JSON):
 *   "bot.inbox"  {"chat_id","seq","sender_id","text"}       hook -> dispatcher
 *   "pow"        {"chat_id","seq","user_id","prefix","bits"} dispatcher -> worker
 *   "pow.rpc"    {"prefix","bits","timeout_ms"}              RPC caller -> worker
 *     reply      {"nonce","hash","bits"} or {"error":"..."}
 *
 * Suffixes are matched exactly and case-sensitively at the very end of the
 * text ("!pow", "!rpc"); only the suffix is removed, so "hi !pow" proves
 * "hi " (with its space) and answers " ih", as API.md defines the hash over
 * the text without its suffix. A text that is only the suffix gets an
 * explanation instead of a proof, since a message cannot be empty.
 */
#include "services/bot.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "services/pow.h"
#include "services/services.h"

#define BOT_INBOX "bot.inbox"
#define BOT_POW_QUEUE "pow"
#define BOT_POW_RPC "pow.rpc"
#define BOT_LOBBY_LOCK "lobby.cron"
/* How long a blocked pop/serve waits before looking at the stop flag: the
 * bound on how long nt_bot_stop takes. */
#define BOT_POLL_MS 250
#define BOT_INBOX_VISIBILITY_MS 60000
#define BOT_RPC_CALLERS 4
/* Pending !rpc calls waiting for a free caller thread; past this the user
 * is told to try again. */
#define BOT_RPC_BACKLOG 1024
#define BOT_MAX_THREADS 256
#define BOT_TOKS 32

typedef struct bot_rpc_job {
    struct bot_rpc_job *next;
    int64_t chat_id;
    int64_t seq;
    int64_t user_id;
    size_t prefix_len;
    char prefix[]; /* NUL-terminated */
} bot_rpc_job;

/* One pending proof-of-work job: the message it answers (unique), whose it
 * is, and when it was counted. */
typedef struct bot_pending {
    int64_t chat_id;
    int64_t seq;
    int64_t user_id;
    int64_t taken_ms; /* monotonic */
} bot_pending;

struct nt_bot {
    nt_ctx *ctx;
    nt_bot_opts opts;
    int64_t bot_id;
    int64_t lobby_id; /* 0 if there is no lobby */

    atomic_int stopping;     /* everything winds down; searches abort */
    atomic_int workers_stop; /* second phase: workers stop serving */

    pthread_t dispatcher;
    bool dispatcher_started;
    pthread_t lobby;
    bool lobby_started;
    pthread_mutex_t lobby_mu;
    pthread_cond_t lobby_cond; /* CLOCK_MONOTONIC; signalled on stop */

    pthread_t callers[BOT_RPC_CALLERS];
    int ncallers;
    pthread_mutex_t rpc_mu;
    pthread_cond_t rpc_cond;
    bot_rpc_job *rpc_head, *rpc_tail;
    int rpc_backlog;

    pthread_t *workers; /* "pow" queue workers, then "pow.rpc" servers */
    int nworkers;       /* started, of each kind the same count wanted */
    int nworkers_wanted;

    pthread_mutex_t pending_mu;
    bot_pending *pending;
    int npending, pending_cap;
};

static void bot__err(char *err, size_t err_len, const char *fmt, const char *what)
{
    if (err && err_len) snprintf(err, err_len, fmt, what);
}

/* ---- reverse ---------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s[0..avail), or 1 if it is not one. */
static size_t bot__cp_len(const unsigned char *s, size_t avail)
{
    size_t n;
    if (s[0] < 0x80)
        return 1;
    else if ((s[0] & 0xe0) == 0xc0)
        n = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3;
    else if ((s[0] & 0xf8) == 0xf0)
        n = 4;
    else
        return 1;
    if (n > avail) return 1;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 1;
    return n;
}

size_t nt_bot_reverse(const char *text, size_t len, char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t pos = 0;
    while (pos < len) {
        size_t n = bot__cp_len(s + pos, len - pos);
        memcpy(out + (len - pos - n), s + pos, n);
        pos += n;
    }
    out[len] = '\0';
    return len;
}

/* ---- posting -------------------------------------------------------------- */

/* Stores a message from the bot and sends it to the chat's members. A
 * client_id ("" = none) makes a repeat of the same answer a no-op. */
static int bot__post(nt_bot *bot, int64_t chat_id, const char *text, size_t len,
                     const char *extra_json, const char *client_id)
{
    nt_append op;
    memset(&op, 0, sizeof op);
    op.chat_id = chat_id;
    op.sender_id = bot->bot_id;
    op.text = text;
    op.text_len = len;
    op.extra_json = extra_json;
    op.ts = nt_now_ms();
    if (client_id) snprintf(op.client_id, sizeof op.client_id, "%s", client_id);
    int rc = nt_store_append_wait(bot->ctx->store, &op);
    if (rc == 0) rc = op.status;
    if (rc == 0 && !op.duplicate) nt_messages_fanout(bot->ctx, &op.msg, op.member_ids, op.nmembers);
    if (rc != 0) nt_warn("bot: posting to chat=%" PRId64 " failed rc=%d", chat_id, rc);
    nt_append_release(&op);
    return rc;
}

static int bot__post_str(nt_bot *bot, int64_t chat_id, const char *text, const char *kind,
                         int64_t seq)
{
    char client_id[NT_CLIENT_ID_MAX];
    snprintf(client_id, sizeof client_id, "bot-%s:%" PRId64 ":%" PRId64, kind, chat_id, seq);
    return bot__post(bot, chat_id, text, strlen(text), NULL, client_id);
}

/* The answer to a proof: the reversed prefix with "pow" on the message. */
static int bot__post_proof(nt_bot *bot, int64_t chat_id, int64_t seq, const char *prefix,
                           size_t prefix_len, uint64_t nonce, const char *hash_hex, int bits)
{
    char extra[160], client_id[NT_CLIENT_ID_MAX];
    char *reversed = malloc(prefix_len + 1);
    if (!reversed) return -ENOMEM;
    nt_bot_reverse(prefix, prefix_len, reversed);
    snprintf(extra, sizeof extra, "\"pow\":{\"nonce\":%" PRIu64 ",\"hash\":\"%s\",\"bits\":%d}",
             nonce, hash_hex, bits);
    snprintf(client_id, sizeof client_id, "bot-pow:%" PRId64 ":%" PRId64, chat_id, seq);
    int rc = bot__post(bot, chat_id, reversed, prefix_len, extra, client_id);
    free(reversed);
    return rc;
}

/* ---- per-user pending jobs ------------------------------------------------- */

/* Counts the job (chat_id, seq) against user_id unless the user already
 * has `max` pending. Returns 1 taken, 0 over the limit, 2 already pending
 * (a redelivered inbox job), -ENOMEM. */
static int bot__pow_visibility_ms(int bits);

static int bot__pending_take(nt_bot *bot, int64_t user_id, int64_t chat_id, int64_t seq)
{
    int rc = 1, count = 0;
    int64_t now_ms = (int64_t)(nt_mono_ns() / 1000000);
    /* With several bot processes, the worker that answers may run in another
     * process than the dispatcher that counted the job, so the release can
     * miss this table. An entry older than any job can live (twice the
     * queue's visibility timeout plus the RPC wait) is such a leak: drop it,
     * or the user would be refused for good. */
    int visibility = bot->opts.pow_visibility_ms > 0 ? bot->opts.pow_visibility_ms
                                                     : bot__pow_visibility_ms(bot->opts.pow_bits);
    int64_t stale_ms = 2 * (int64_t)visibility + bot->opts.rpc_timeout_ms;
    pthread_mutex_lock(&bot->pending_mu);
    for (int i = 0; i < bot->npending;) {
        if (now_ms - bot->pending[i].taken_ms > stale_ms)
            bot->pending[i] = bot->pending[--bot->npending];
        else
            i++;
    }
    for (int i = 0; i < bot->npending; i++) {
        const bot_pending *p = &bot->pending[i];
        if (p->chat_id == chat_id && p->seq == seq) {
            rc = 2;
            goto out;
        }
        if (p->user_id == user_id) count++;
    }
    if (count >= bot->opts.pow_max_pending) {
        rc = 0;
        goto out;
    }
    if (bot->npending == bot->pending_cap) {
        int cap = bot->pending_cap ? bot->pending_cap * 2 : 16;
        bot_pending *grown = realloc(bot->pending, (size_t)cap * sizeof *grown);
        if (!grown) {
            rc = -ENOMEM;
            goto out;
        }
        bot->pending = grown;
        bot->pending_cap = cap;
    }
    bot->pending[bot->npending++] = (bot_pending){chat_id, seq, user_id, now_ms};
out:
    pthread_mutex_unlock(&bot->pending_mu);
    return rc;
}

/* The job answering (chat_id, seq) is over (done, failed or timed out). */
static void bot__pending_release(nt_bot *bot, int64_t chat_id, int64_t seq)
{
    pthread_mutex_lock(&bot->pending_mu);
    for (int i = 0; i < bot->npending; i++) {
        if (bot->pending[i].chat_id == chat_id && bot->pending[i].seq == seq) {
            bot->pending[i] = bot->pending[--bot->npending];
            break;
        }
    }
    pthread_mutex_unlock(&bot->pending_mu);
}

/* ---- JSON helpers ----------------------------------------------------------- */

static bool bot__get_int(const nt_json *doc, const char *key, int64_t *out)
{
    return nt_json_int(doc, nt_json_get(doc, 0, key), out) == 0;
}

/* A string member, unescaped into a fresh heap copy (never longer than the
 * source). NULL if missing or not a string. */
static char *bot__get_str(const nt_json *doc, const char *key, size_t *len)
{
    int tok = nt_json_get(doc, 0, key);
    if (nt_json_type_of(doc, tok) != NT_JSON_STRING) return NULL;
    size_t cap = (size_t)doc->toks[tok].len + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = nt_json_str(doc, tok, s, cap);
    if (n < 0) {
        free(s);
        return NULL;
    }
    *len = (size_t)n;
    return s;
}

static bool bot__ends_with(const char *text, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(text + len - n, suffix, n) == 0;
}

/* ---- the hook ------------------------------------------------------------- */

/* The bot user's id for nt_bot_relay_hook (0: no relay). Set by
 * nt_bot_relay_init before any hook call; read on any thread. */
static _Atomic int64_t bot__relay_id;

/*
 * The one place the "bot.inbox" job is written, for the hook of a process
 * that runs the bot and for the relay of one that does not: if m is a new
 * text from someone else in a two-member chat with bot_id, pushes
 * {"chat_id", "seq", "sender_id", "text"} on the queue without waiting.
 * `who` names the caller in the warning when the push fails.
 */
static void bot__enqueue(nt_ctx *ctx, int64_t bot_id, const nt_message *m,
                         const int64_t *member_ids, int n, const char *who)
{
    if (n != 2 || m->deleted || m->sender_id == bot_id || !m->text) return;
    if (member_ids[0] != bot_id && member_ids[1] != bot_id) return;
    nt_buf payload = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &payload);
    nt_jw_obj(&w);
    nt_jw_kint(&w, "chat_id", m->chat_id);
    nt_jw_kint(&w, "seq", m->seq);
    nt_jw_kint(&w, "sender_id", m->sender_id);
    nt_jw_key(&w, "text");
    nt_jw_strn(&w, m->text, m->text_len);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0) rc = nt_bus_queue_push(ctx->bus, BOT_INBOX, payload.data, payload.len);
    if (rc != 0)
        nt_warn("%s: dropping message chat=%" PRId64 " seq=%" PRId64 " rc=%d", who, m->chat_id,
                m->seq, rc);
    nt_buf_free(&payload);
}

void nt_bot_message_hook(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n)
{
    nt_bot *bot = ctx->bot;
    if (!bot || atomic_load(&bot->stopping)) return;
    bot__enqueue(ctx, bot->bot_id, m, member_ids, n, "bot");
}

int nt_bot_relay_init(nt_ctx *ctx)
{
    nt_user user;
    int rc = nt_store_user_by_nickname(ctx->store, "bot", &user);
    if (rc != 0) return rc;
    atomic_store(&bot__relay_id, user.id);
    return 0;
}

void nt_bot_relay_hook(nt_ctx *ctx, const nt_message *m, const int64_t *member_ids, int n)
{
    int64_t bot_id = atomic_load(&bot__relay_id);
    if (!bot_id) return;
    bot__enqueue(ctx, bot_id, m, member_ids, n, "bot relay");
}

/* ---- dispatcher ----------------------------------------------------------- */

static void bot__limit_reply(nt_bot *bot, int64_t chat_id, int64_t seq)
{
    char text[200];
    snprintf(text, sizeof text,
             "too many proof-of-work jobs pending: at most %d per user; wait for one to "
             "finish and try again",
             bot->opts.pow_max_pending);
    bot__post_str(bot, chat_id, text, "limit", seq);
}

static void bot__queue_pow(nt_bot *bot, int64_t chat_id, int64_t seq, int64_t user_id,
                           const char *prefix, size_t prefix_len)
{
    nt_buf payload = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &payload);
    nt_jw_obj(&w);
    nt_jw_kint(&w, "chat_id", chat_id);
    nt_jw_kint(&w, "seq", seq);
    nt_jw_kint(&w, "user_id", user_id);
    nt_jw_key(&w, "prefix");
    nt_jw_strn(&w, prefix, prefix_len);
    nt_jw_kint(&w, "bits", bot->opts.pow_bits);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0) rc = nt_bus_queue_push(bot->ctx->bus, BOT_POW_QUEUE, payload.data, payload.len);
    nt_buf_free(&payload);
    if (rc != 0) {
        bot__pending_release(bot, chat_id, seq);
        bot__post_str(bot, chat_id, "proof of work could not be queued; try again", "err", seq);
    }
}

static void bot__queue_rpc(nt_bot *bot, int64_t chat_id, int64_t seq, int64_t user_id,
                           const char *prefix, size_t prefix_len)
{
    bot_rpc_job *job = malloc(sizeof *job + prefix_len + 1);
    bool queued = false;
    if (job) {
        job->next = NULL;
        job->chat_id = chat_id;
        job->seq = seq;
        job->user_id = user_id;
        job->prefix_len = prefix_len;
        memcpy(job->prefix, prefix, prefix_len);
        job->prefix[prefix_len] = '\0';
        pthread_mutex_lock(&bot->rpc_mu);
        if (bot->rpc_backlog < BOT_RPC_BACKLOG && !atomic_load(&bot->stopping)) {
            if (bot->rpc_tail)
                bot->rpc_tail->next = job;
            else
                bot->rpc_head = job;
            bot->rpc_tail = job;
            bot->rpc_backlog++;
            queued = true;
            pthread_cond_signal(&bot->rpc_cond);
        }
        pthread_mutex_unlock(&bot->rpc_mu);
    }
    if (!queued) {
        free(job);
        bot__pending_release(bot, chat_id, seq);
        bot__post_str(bot, chat_id, "too many proof-of-work calls right now; try again", "err",
                      seq);
    }
}

/* A text ending in !pow or !rpc: the limit, then the job. */
static void bot__proof_request(nt_bot *bot, int64_t chat_id, int64_t seq, int64_t user_id,
                               const char *text, size_t len, bool rpc)
{
    size_t prefix_len = len - 4; /* both suffixes are 4 bytes */
    if (prefix_len == 0) {
        bot__post_str(bot, chat_id,
                      rpc ? "nothing to prove: write some text before !rpc"
                          : "nothing to prove: write some text before !pow",
                      "empty", seq);
        return;
    }
    int taken = bot__pending_take(bot, user_id, chat_id, seq);
    if (taken == 2) /* this job is already on its way */
        return;
    if (taken == 0) {
        bot__limit_reply(bot, chat_id, seq);
        return;
    }
    if (taken < 0) {
        bot__post_str(bot, chat_id, "the bot is out of memory; try again", "err", seq);
        return;
    }
    if (rpc)
        bot__queue_rpc(bot, chat_id, seq, user_id, text, prefix_len);
    else
        bot__queue_pow(bot, chat_id, seq, user_id, text, prefix_len);
}

/* True if chat_id is a direct chat the bot is in (the hook saw two members;
 * a group of two is not a conversation with the bot). */
static bool bot__is_direct(nt_bot *bot, int64_t chat_id)
{
    nt_chat chat;
    memset(&chat, 0, sizeof chat);
    if (nt_store_chat_get(bot->ctx->store, chat_id, bot->bot_id, &chat) != 0) return false;
    bool direct = strcmp(chat.type, "direct") == 0;
    nt_chat_free(&chat);
    return direct;
}

static void bot__handle_inbox(nt_bot *bot, const nt_bus_job *job)
{
    nt_json_tok toks[BOT_TOKS];
    nt_json doc;
    int64_t chat_id, seq, sender_id;
    size_t len = 0;
    char *text = NULL;

    if (nt_json_parse(&doc, job->payload, job->len, toks, BOT_TOKS) != 0 ||
        !bot__get_int(&doc, "chat_id", &chat_id) || !bot__get_int(&doc, "seq", &seq) ||
        !bot__get_int(&doc, "sender_id", &sender_id) ||
        !(text = bot__get_str(&doc, "text", &len))) {
        nt_warn("bot: dropping a malformed inbox job");
        goto out;
    }
    if (sender_id == bot->bot_id || !bot__is_direct(bot, chat_id)) goto out;
    if (bot__ends_with(text, len, "!pow")) {
        bot__proof_request(bot, chat_id, seq, sender_id, text, len, false);
    } else if (bot__ends_with(text, len, "!rpc")) {
        bot__proof_request(bot, chat_id, seq, sender_id, text, len, true);
    } else {
        char *reversed = malloc(len + 1);
        char client_id[NT_CLIENT_ID_MAX];
        if (!reversed) goto out;
        nt_bot_reverse(text, len, reversed);
        snprintf(client_id, sizeof client_id, "bot-rev:%" PRId64 ":%" PRId64, chat_id, seq);
        bot__post(bot, chat_id, reversed, len, NULL, client_id);
        free(reversed);
    }
out:
    free(text);
}

static void *bot__dispatcher_main(void *arg)
{
    nt_bot *bot = arg;
    while (!atomic_load(&bot->stopping)) {
        nt_bus_job job;
        int rc =
            nt_bus_queue_pop(bot->ctx->bus, BOT_INBOX, BOT_POLL_MS, BOT_INBOX_VISIBILITY_MS, &job);
        if (rc == NT_BUS_ETIMEDOUT) continue;
        if (rc == NT_BUS_ECLOSED) break;
        if (rc != 0) {
            usleep(BOT_POLL_MS * 1000);
            continue;
        }
        bot__handle_inbox(bot, &job);
        nt_bus_queue_ack(bot->ctx->bus, BOT_INBOX, job.id);
        nt_bus_job_free(&job);
    }
    return NULL;
}

/* ---- RPC callers ------------------------------------------------------------- */

/* Checks a worker's answer before posting it: the hash must be what the
 * nonce gives and have the zeros. */
static bool bot__proof_valid(const char *prefix, size_t len, uint64_t nonce, int bits,
                             char hex_out[65])
{
    uint8_t digest[32];
    nt_pow_hash(prefix, len, nonce, digest);
    nt_pow_hex(digest, hex_out);
    return nt_pow_check(digest, bits);
}

static void bot__rpc_call(nt_bot *bot, const bot_rpc_job *job)
{
    char text[200];
    nt_buf payload = NT_BUF_INIT;
    char *reply = NULL;
    size_t reply_len = 0;
    nt_jw w;

    nt_jw_init(&w, &payload);
    nt_jw_obj(&w);
    nt_jw_key(&w, "prefix");
    nt_jw_strn(&w, job->prefix, job->prefix_len);
    nt_jw_kint(&w, "bits", bot->opts.pow_bits);
    nt_jw_kint(&w, "timeout_ms", bot->opts.rpc_timeout_ms);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc == 0)
        rc = nt_bus_request(bot->ctx->bus, BOT_POW_RPC, payload.data, payload.len,
                            bot->opts.rpc_timeout_ms, &reply, &reply_len);
    nt_buf_free(&payload);
    /* The job is over for the limit before the user hears about it, so an
     * answer is never followed by a spurious "too many pending". */
    bot__pending_release(bot, job->chat_id, job->seq);

    if (rc == NT_BUS_ETIMEDOUT) {
        snprintf(text, sizeof text, "proof of work timed out after %d ms; try again",
                 bot->opts.rpc_timeout_ms);
        bot__post_str(bot, job->chat_id, text, "err", job->seq);
        goto out;
    }
    if (rc != 0) {
        snprintf(text, sizeof text,
                 "proof of work failed: no worker could be reached (%d); "
                 "try again",
                 rc);
        bot__post_str(bot, job->chat_id, text, "err", job->seq);
        goto out;
    }

    nt_json_tok toks[BOT_TOKS];
    nt_json doc;
    int64_t nonce = -1, bits = -1;
    char hex[65], err_text[100];
    if (nt_json_parse(&doc, reply, reply_len, toks, BOT_TOKS) != 0) {
        snprintf(text, sizeof text,
                 "proof of work failed: a bad answer from the worker; "
                 "try again");
    } else if (nt_json_str(&doc, nt_json_get(&doc, 0, "error"), err_text, sizeof err_text) >= 0) {
        snprintf(text, sizeof text, "proof of work failed: %s; try again", err_text);
    } else if (!bot__get_int(&doc, "nonce", &nonce) || !bot__get_int(&doc, "bits", &bits) ||
               nonce < 0 || bits != bot->opts.pow_bits ||
               !bot__proof_valid(job->prefix, job->prefix_len, (uint64_t)nonce, (int)bits, hex)) {
        snprintf(text, sizeof text,
                 "proof of work failed: the worker's proof does not "
                 "check out; try again");
    } else {
        bot__post_proof(bot, job->chat_id, job->seq, job->prefix, job->prefix_len, (uint64_t)nonce,
                        hex, (int)bits);
        goto out;
    }
    bot__post_str(bot, job->chat_id, text, "err", job->seq);
out:
    free(reply);
}

static void *bot__caller_main(void *arg)
{
    nt_bot *bot = arg;
    for (;;) {
        pthread_mutex_lock(&bot->rpc_mu);
        while (!bot->rpc_head && !atomic_load(&bot->stopping))
            pthread_cond_wait(&bot->rpc_cond, &bot->rpc_mu);
        if (atomic_load(&bot->stopping)) {
            pthread_mutex_unlock(&bot->rpc_mu);
            break;
        }
        bot_rpc_job *job = bot->rpc_head;
        bot->rpc_head = job->next;
        if (!bot->rpc_head) bot->rpc_tail = NULL;
        bot->rpc_backlog--;
        pthread_mutex_unlock(&bot->rpc_mu);
        bot__rpc_call(bot, job);
        free(job);
    }
    return NULL;
}

/* ---- PoW workers --------------------------------------------------------------- */

/* A "pow" job stays invisible to other workers this long: a minute covers
 * 28 bits on one slow core; each bit above doubles it (capped at a day). */
static int bot__pow_visibility_ms(int bits)
{
    int64_t ms = 60000;
    for (int b = 28; b < bits && ms < 86400000; b++)
        ms *= 2;
    return ms > 86400000 ? 86400000 : (int)ms;
}

static void bot__work_job(nt_bot *bot, const nt_bus_job *job)
{
    nt_json_tok toks[BOT_TOKS];
    nt_json doc;
    int64_t chat_id, seq, user_id, bits;
    size_t len = 0;
    char *prefix = NULL;

    if (nt_json_parse(&doc, job->payload, job->len, toks, BOT_TOKS) != 0 ||
        !bot__get_int(&doc, "chat_id", &chat_id) || !bot__get_int(&doc, "seq", &seq) ||
        !bot__get_int(&doc, "user_id", &user_id) || !bot__get_int(&doc, "bits", &bits) ||
        bits < 0 || bits > NT_POW_MAX_BITS || !(prefix = bot__get_str(&doc, "prefix", &len))) {
        nt_warn("bot: dropping a malformed pow job");
        nt_bus_queue_ack(bot->ctx->bus, BOT_POW_QUEUE, job->id);
        goto out;
    }
    nt_pow_result res;
    uint64_t t0 = nt_mono_ns();
    int rc = nt_pow_solve(prefix, len, (int)bits, bot->opts.pow_threads, &bot->stopping, 0, &res);
    if (rc != 1) /* stopping: the job stays on the bus for another worker */
        goto out;
    char hex[65];
    nt_pow_hex(res.hash, hex);
    nt_debug("bot: pow chat=%" PRId64 " bits=%d nonce=%" PRIu64 " hashes=%" PRIu64 " ms=%.1f",
             chat_id, (int)bits, res.nonce, res.hashes, (double)(nt_mono_ns() - t0) / 1e6);
    bot__pending_release(bot, chat_id, seq);
    rc = bot__post_proof(bot, chat_id, seq, prefix, len, res.nonce, hex, (int)bits);
    /* Acknowledged once the answer is stored and sent; a chat that vanished
     * or refuses the bot will never take it, so that job is done too. Only
     * a store outage leaves the job for a retry. */
    if (rc != NT_STORE_EUNAVAILABLE) nt_bus_queue_ack(bot->ctx->bus, BOT_POW_QUEUE, job->id);
out:
    free(prefix);
}

static void *bot__worker_main(void *arg)
{
    nt_bot *bot = arg;
    const int visibility_ms = bot->opts.pow_visibility_ms > 0
                                  ? bot->opts.pow_visibility_ms
                                  : bot__pow_visibility_ms(bot->opts.pow_bits);
    while (!atomic_load(&bot->workers_stop)) {
        nt_bus_job job;
        int rc = nt_bus_queue_pop(bot->ctx->bus, BOT_POW_QUEUE, BOT_POLL_MS, visibility_ms, &job);
        if (rc == NT_BUS_ETIMEDOUT) continue;
        if (rc == NT_BUS_ECLOSED) break;
        if (rc != 0) {
            usleep(BOT_POLL_MS * 1000);
            continue;
        }
        bot__work_job(bot, &job);
        nt_bus_job_free(&job);
    }
    return NULL;
}

static void bot__serve_call(nt_bot *bot, const nt_bus_call *call)
{
    nt_json_tok toks[BOT_TOKS];
    nt_json doc;
    int64_t bits, timeout_ms;
    size_t len = 0;
    char *prefix = NULL;
    char answer[200];

    if (nt_json_parse(&doc, call->payload, call->len, toks, BOT_TOKS) != 0 ||
        !bot__get_int(&doc, "bits", &bits) || bits < 0 || bits > NT_POW_MAX_BITS ||
        !bot__get_int(&doc, "timeout_ms", &timeout_ms) || timeout_ms <= 0 ||
        !(prefix = bot__get_str(&doc, "prefix", &len))) {
        snprintf(answer, sizeof answer, "{\"error\":\"malformed request\"}");
        goto reply;
    }
    /* Nobody waits for an answer after the caller's timeout: stop then. */
    nt_pow_result res;
    uint64_t deadline = nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc =
        nt_pow_solve(prefix, len, (int)bits, bot->opts.pow_threads, &bot->stopping, deadline, &res);
    if (rc == 1) {
        char hex[65];
        nt_pow_hex(res.hash, hex);
        snprintf(answer, sizeof answer, "{\"nonce\":%" PRIu64 ",\"hash\":\"%s\",\"bits\":%d}",
                 res.nonce, hex, (int)bits);
    } else if (atomic_load(&bot->stopping)) {
        snprintf(answer, sizeof answer, "{\"error\":\"the server is shutting down\"}");
    } else {
        snprintf(answer, sizeof answer, "{\"error\":\"no proof within %" PRId64 " ms\"}",
                 timeout_ms);
    }
reply:
    nt_bus_reply(bot->ctx->bus, call, answer, strlen(answer));
    free(prefix);
}

static void *bot__server_main(void *arg)
{
    nt_bot *bot = arg;
    while (!atomic_load(&bot->workers_stop)) {
        nt_bus_call call;
        int rc = nt_bus_serve(bot->ctx->bus, BOT_POW_RPC, BOT_POLL_MS, &call);
        if (rc == NT_BUS_ETIMEDOUT) continue;
        if (rc == NT_BUS_ECLOSED) break;
        if (rc != 0) {
            usleep(BOT_POLL_MS * 1000);
            continue;
        }
        bot__serve_call(bot, &call);
        nt_bus_call_free(&call);
    }
    return NULL;
}

/* ---- lobby cron ----------------------------------------------------------------- */

static void *bot__lobby_main(void *arg)
{
    nt_bot *bot = arg;
    const int interval = bot->opts.lobby_interval_s;
    /* Three missed renewals and another node takes over. */
    const int ttl_ms = interval * 3000;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);

    pthread_mutex_lock(&bot->lobby_mu);
    while (!atomic_load(&bot->stopping)) {
        next.tv_sec += interval; /* from the schedule, not from now: no drift */
        while (!atomic_load(&bot->stopping) &&
               pthread_cond_timedwait(&bot->lobby_cond, &bot->lobby_mu, &next) != ETIMEDOUT)
            ;
        if (atomic_load(&bot->stopping)) break;
        pthread_mutex_unlock(&bot->lobby_mu);
        if (nt_bus_leader(bot->ctx->bus, BOT_LOBBY_LOCK, ttl_ms))
            bot__post(bot, bot->lobby_id, "Hello world!", 12, NULL, NULL);
        pthread_mutex_lock(&bot->lobby_mu);
        /* A slow store must not make the cron catch up in a burst. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec + interval) next = now;
    }
    pthread_mutex_unlock(&bot->lobby_mu);
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------- */

static int bot__online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > BOT_MAX_THREADS ? BOT_MAX_THREADS : n) : 1;
}

void nt_bot_stop(nt_bot *bot)
{
    if (!bot) return;
    /* Phase 1: no new work; searches abort; callers finish their calls,
     * which local workers (still serving) answer at once. */
    atomic_store(&bot->stopping, 1);
    pthread_mutex_lock(&bot->lobby_mu);
    pthread_cond_broadcast(&bot->lobby_cond);
    pthread_mutex_unlock(&bot->lobby_mu);
    pthread_mutex_lock(&bot->rpc_mu);
    pthread_cond_broadcast(&bot->rpc_cond);
    pthread_mutex_unlock(&bot->rpc_mu);
    if (bot->dispatcher_started) pthread_join(bot->dispatcher, NULL);
    if (bot->lobby_started) pthread_join(bot->lobby, NULL);
    for (int i = 0; i < bot->ncallers; i++)
        pthread_join(bot->callers[i], NULL);
    /* Phase 2: the workers. */
    atomic_store(&bot->workers_stop, 1);
    for (int i = 0; i < bot->nworkers; i++)
        pthread_join(bot->workers[i], NULL);

    while (bot->rpc_head) {
        bot_rpc_job *job = bot->rpc_head;
        bot->rpc_head = job->next;
        free(job);
    }
    free(bot->workers);
    free(bot->pending);
    pthread_mutex_destroy(&bot->lobby_mu);
    pthread_cond_destroy(&bot->lobby_cond);
    pthread_mutex_destroy(&bot->rpc_mu);
    pthread_cond_destroy(&bot->rpc_cond);
    pthread_mutex_destroy(&bot->pending_mu);
    free(bot);
}

nt_bot *nt_bot_start(nt_ctx *ctx, const nt_bot_opts *opts, char *err, size_t err_len)
{
    nt_bot *bot = calloc(1, sizeof *bot);
    pthread_condattr_t cattr;
    nt_user user;

    if (!bot) {
        bot__err(err, err_len, "bot: %s", "out of memory");
        return NULL;
    }
    bot->ctx = ctx;
    bot->opts = *opts;
    if (bot->opts.pow_max_pending < 1) bot->opts.pow_max_pending = 1;
    if (bot->opts.rpc_timeout_ms < 1) bot->opts.rpc_timeout_ms = 1;
    if (bot->opts.pow_bits < 0 || bot->opts.pow_bits > NT_POW_MAX_BITS) bot->opts.pow_bits = 24;
    atomic_init(&bot->stopping, 0);
    atomic_init(&bot->workers_stop, 0);
    pthread_mutex_init(&bot->lobby_mu, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&bot->lobby_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_mutex_init(&bot->rpc_mu, NULL);
    pthread_cond_init(&bot->rpc_cond, NULL);
    pthread_mutex_init(&bot->pending_mu, NULL);

    int rc = nt_store_user_by_nickname(ctx->store, "bot", &user);
    if (rc != 0) {
        bot__err(err, err_len, "bot: the bot user is missing (%s)",
                 rc == NT_STORE_ENOTFOUND ? "not found" : "store error");
        goto fail;
    }
    bot->bot_id = user.id;
    rc = nt_store_channel_by_title(ctx->store, "lobby", &bot->lobby_id);
    if (rc == 0) {
        rc = nt_store_member_add(ctx->store, bot->lobby_id, bot->bot_id, NT_ROLE_MEMBER);
        if (rc != 0 && rc != NT_STORE_ECONFLICT) {
            bot__err(err, err_len, "bot: cannot join %s", "lobby");
            goto fail;
        }
    } else if (rc == NT_STORE_ENOTFOUND) {
        bot->lobby_id = 0;
        if (opts->lobby_interval_s > 0) nt_warn("bot: no lobby channel; the lobby cron is off");
    } else {
        bot__err(err, err_len, "bot: cannot look up %s", "lobby");
        goto fail;
    }

    int nworkers = opts->pow_workers > 0 ? opts->pow_workers : bot__online_cpus();
    if (nworkers > BOT_MAX_THREADS) nworkers = BOT_MAX_THREADS;
    bot->workers = calloc((size_t)nworkers * 2, sizeof *bot->workers);
    if (!bot->workers) {
        bot__err(err, err_len, "bot: %s", "out of memory");
        goto fail;
    }
    for (int i = 0; i < nworkers * 2; i++) {
        if (pthread_create(&bot->workers[i], NULL,
                           i < nworkers ? bot__worker_main : bot__server_main, bot) != 0)
            goto fail_thread;
        bot->nworkers++;
    }
    for (int i = 0; i < BOT_RPC_CALLERS; i++) {
        if (pthread_create(&bot->callers[i], NULL, bot__caller_main, bot) != 0) goto fail_thread;
        bot->ncallers++;
    }
    if (pthread_create(&bot->dispatcher, NULL, bot__dispatcher_main, bot) != 0) goto fail_thread;
    bot->dispatcher_started = true;
    if (opts->lobby_interval_s > 0 && bot->lobby_id > 0) {
        if (pthread_create(&bot->lobby, NULL, bot__lobby_main, bot) != 0) goto fail_thread;
        bot->lobby_started = true;
    }
    nt_info("bot: user=%" PRId64 " lobby=%" PRId64 " pow_bits=%d workers=%d max_pending=%d "
            "rpc_timeout_ms=%d lobby_interval_s=%d",
            bot->bot_id, bot->lobby_id, bot->opts.pow_bits, nworkers, bot->opts.pow_max_pending,
            bot->opts.rpc_timeout_ms, opts->lobby_interval_s);
    return bot;

fail_thread:
    bot__err(err, err_len, "bot: %s", "cannot start a thread");
fail:
    nt_bot_stop(bot);
    return NULL;
}
