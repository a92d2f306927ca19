/*
 * What the store back ends share: the write queue and its writer thread,
 * append helpers and small pure helpers (see store_common.h).
 */
#include "store/store_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

/* ---- the write queue ------------------------------------------------------ */

void nt_store_queue_init(nt_store_queue *q)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    pthread_cond_init(&q->done, NULL);
}

void nt_store_queue_destroy(nt_store_queue *q)
{
    pthread_cond_destroy(&q->done);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
}

/* Appends node to the queue and wakes the writer. With refuse_late, a
 * queue that is stopping takes nothing: EUNAVAILABLE (else 0). */
static int store__push(nt_store_queue *q, nt_append *node, bool refuse_late)
{
    node->next = NULL;
    node->queued_ns = nt_mono_ns();
    pthread_mutex_lock(&q->lock);
    if (refuse_late && (q->stopping || !q->thread_started)) {
        pthread_mutex_unlock(&q->lock);
        return NT_STORE_EUNAVAILABLE;
    }
    if (q->tail)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    q->queued++;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

static void store__wait(nt_store_queue *q, nt_store_job *job)
{
    pthread_mutex_lock(&q->lock);
    while (!job->finished)
        pthread_cond_wait(&q->done, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

void nt_store_queue_append(nt_store_queue *q, nt_append *op)
{
    op->waiter = NULL;
    store__push(q, op, false);
}

int nt_store_queue_append_wait(nt_store_queue *q, nt_append *op)
{
    nt_store_job job;
    memset(&job, 0, sizeof(job));
    op->waiter = &job;
    store__push(q, op, false);
    store__wait(q, &job);
    op->waiter = NULL;
    return op->status;
}

int nt_store_queue_submit(nt_store_queue *q, nt_store_job *job)
{
    job->node.waiter = job;
    /* The writer drains what is queued before it stops; nothing later. */
    return store__push(q, &job->node, true);
}

int nt_store_queue_run(nt_store_queue *q, nt_store_job *job)
{
    job->node.waiter = job;
    store__push(q, &job->node, false);
    store__wait(q, job);
    return job->status;
}

nt_store_job *nt_store_generic_job(const nt_append *op)
{
    nt_store_job *job = op->waiter;
    return job && job->generic ? job : NULL;
}

void nt_store_op_lost(nt_append *op)
{
    nt_store_job *job = nt_store_generic_job(op);
    if (job) {
        job->status = NT_STORE_EUNAVAILABLE;
        return;
    }
    nt_store_append_reset(op);
    op->status = NT_STORE_EUNAVAILABLE;
}

/* Tells every op of a finished batch: async appends and submitted jobs
 * through their done(), waiting callers through their job. Nodes may be
 * freed once told, so each next pointer is read first. */
static void store__batch_finish(nt_store_queue *q, nt_append *batch)
{
    nt_append *waiting = NULL;
    for (nt_append *op = batch, *next; op; op = next) {
        next = op->next;
        nt_store_job *job = op->waiter;
        if (job && job->done) {
            job->done(job);
        } else if (job) {
            op->next = waiting;
            waiting = op;
        } else if (op->done) {
            op->done(op);
        }
    }
    if (!waiting) return;
    pthread_mutex_lock(&q->lock);
    for (nt_append *op = waiting, *next; op; op = next) {
        next = op->next;
        ((nt_store_job *)op->waiter)->finished = true;
    }
    pthread_cond_broadcast(&q->done);
    pthread_mutex_unlock(&q->lock);
}

/* The histogram bucket of a batch of n ops (see nt_store_stats_t). */
static int store__hist_bucket(uint64_t n)
{
    static const uint64_t upper[NT_STORE_HIST_BUCKETS - 1] = {1, 4, 16, 64, 256};
    for (int i = 0; i < NT_STORE_HIST_BUCKETS - 1; i++)
        if (n <= upper[i]) return i;
    return NT_STORE_HIST_BUCKETS - 1;
}

static void *store__writer_main(void *arg)
{
    nt_store_queue *q = arg;
    pthread_setname_np(pthread_self(), "nt-store-write");
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->wake, &q->lock);
        if (!q->head) break; /* stopping and drained */
        nt_append *batch = q->head;
        uint64_t n = q->queued;
        q->head = q->tail = NULL;
        q->queued = 0;
        q->stats.batches++;
        q->stats.ops += n;
        q->stats.hist[store__hist_bucket(n)]++;
        pthread_mutex_unlock(&q->lock);

        uint64_t started = nt_mono_ns();
        q->run_batch(q->be, batch);
        uint64_t committed = nt_mono_ns();
        /* Timed before they are told: a told op may be freed. */
        nt_histogram writes;
        memset(&writes, 0, sizeof writes);
        for (const nt_append *op = batch; op; op = op->next)
            nt_histogram_add(&writes, (double)(committed - op->queued_ns) / 1e6);
        store__batch_finish(q, batch);
        if (q->after_batch) q->after_batch(q->be);

        pthread_mutex_lock(&q->lock);
        nt_histogram_add(&q->stats.commit, (double)(committed - started) / 1e6);
        nt_histogram_merge(&q->stats.write, &writes);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

int nt_store_queue_start(nt_store_queue *q, void *be, void (*run_batch)(void *be, nt_append *batch),
                         void (*after_batch)(void *be))
{
    q->be = be;
    q->run_batch = run_batch;
    q->after_batch = after_batch;
    int rc = pthread_create(&q->thread, NULL, store__writer_main, q);
    if (rc == 0) q->thread_started = true;
    return rc;
}

void nt_store_queue_stop(nt_store_queue *q)
{
    if (!q->thread_started) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    q->thread_started = false;
}

void nt_store_queue_stats(nt_store_queue *q, nt_store_stats_t *out)
{
    pthread_mutex_lock(&q->lock);
    *out = q->stats;
    out->queued = q->queued;
    pthread_mutex_unlock(&q->lock);
}

/* ---- random chats ------------------------------------------------------------ */

void nt_store_random_req_init(nt_store_random_req *req, int64_t a, int64_t b, const char *alias_a,
                              const char *alias_b, int64_t now, nt_store_chat_done done, void *arg)
{
    memset(req, 0, sizeof *req);
    req->a = a;
    req->b = b;
    req->now = now;
    snprintf(req->alias_a, sizeof req->alias_a, "%s", alias_a);
    snprintf(req->alias_b, sizeof req->alias_b, "%s", alias_b);
    req->done = done;
    req->arg = arg;
}

void nt_store_random_req_tell(nt_store_random_req *req, int status)
{
    if (status != 0) {
        nt_chat_free(&req->out);
        req->done(req->arg, status, NULL);
    } else {
        req->done(req->arg, 0, &req->out);
    }
}

/* ---- appends --------------------------------------------------------------- */

int nt_store_append_check(const nt_append *op)
{
    if (!op->text || op->text_len > INT32_MAX ||
        !memchr(op->client_id, '\0', sizeof(op->client_id)))
        return NT_STORE_EINVAL;
    return 0;
}

void nt_store_append_reset(nt_append *op)
{
    nt_append_release(op);
    memset(&op->msg, 0, sizeof(op->msg));
    op->duplicate = false;
    op->status = 0;
}

int nt_store_append_copy(nt_append *op)
{
    nt_message *m = &op->msg;
    if (!(m->text = malloc(op->text_len + 1))) return NT_STORE_EUNAVAILABLE;
    memcpy(m->text, op->text, op->text_len);
    m->text[op->text_len] = '\0';
    m->text_len = op->text_len;
    if (op->extra_json && !(m->extra_json = strdup(op->extra_json))) return NT_STORE_EUNAVAILABLE;
    return 0;
}

void nt_store_append_stamp(nt_append *op, int64_t seq, const char *sender_alias)
{
    nt_message *m = &op->msg;
    m->chat_id = op->chat_id;
    m->seq = seq;
    m->sender_id = op->sender_id;
    m->ts = op->ts;
    memcpy(m->client_id, op->client_id, sizeof(m->client_id));
    size_t n = sender_alias ? strnlen(sender_alias, sizeof(m->sender_alias) - 1) : 0;
    if (n) memcpy(m->sender_alias, sender_alias, n);
    m->sender_alias[n] = '\0';
}

void nt_store_append_members(nt_append *op, nt_member_set *members)
{
    op->members = nt_member_set_ref(members);
    op->nmembers = members ? members->n : 0;
    op->member_ids = op->nmembers ? members->ids : NULL;
}

/* ---- chats and messages ------------------------------------------------------ */

size_t nt_store_cache_home(int64_t chat_id, size_t slots)
{
    /* Fibonacci hashing: the top bits of the product spread sequential ids. */
    uint64_t h = (uint64_t)chat_id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 52) & (slots - 1);
}

void nt_store_direct_key(int64_t a, int64_t b, char key[NT_STORE_DIRECT_KEY_MAX])
{
    snprintf(key, NT_STORE_DIRECT_KEY_MAX, "%" PRId64 ":%" PRId64, a < b ? a : b, a < b ? b : a);
}

bool nt_store_viewer_read(const nt_chat *c, int64_t viewer_id, int64_t *read_seq)
{
    *read_seq = 0;
    for (int i = 0; i < c->nmembers; i++) {
        if (c->members[i].user_id == viewer_id) {
            *read_seq = c->members[i].read_seq;
            return true;
        }
    }
    return false;
}

int nt_store_chats_load(void *conn,
                        int (*load)(void *conn, int64_t chat_id, int64_t viewer_id, nt_chat *out),
                        const int64_t *ids, int nids, int64_t user_id, nt_chat **out, int *n)
{
    nt_chat *chats = NULL;
    if (nids > 0 && !(chats = calloc((size_t)nids, sizeof(*chats)))) return NT_STORE_EUNAVAILABLE;
    for (int i = 0; i < nids; i++) {
        int rc = load(conn, ids[i], user_id, &chats[i]);
        if (rc) {
            nt_chats_free(chats, i);
            return rc;
        }
    }
    *out = chats;
    *n = nids;
    return 0;
}

static void store__messages_reverse(nt_message *arr, int n)
{
    for (int i = 0, j = n - 1; i < j; i++, j--) {
        nt_message tmp = arr[i];
        arr[i] = arr[j];
        arr[j] = tmp;
    }
}

int nt_store_messages_read(void *conn, nt_store_after_fn after_fn, nt_store_newest_fn newest_fn,
                           int64_t chat_id, int64_t before_seq, int64_t after_seq, int limit,
                           nt_message **out, int *n)
{
    int64_t before = before_seq > 0 ? before_seq : INT64_MAX;
    if (after_seq >= 0) return after_fn(conn, chat_id, after_seq, before, limit, out, n);
    int rc = newest_fn(conn, chat_id, before, limit, out, n);
    /* Newest first from the index; the contract is ascending. */
    if (rc == 0) store__messages_reverse(*out, *n);
    return rc;
}

int nt_store_export_pages(void *conn, nt_store_after_fn after_fn, int64_t chat_id, int page,
                          int (*fn)(void *arg, const nt_message *m), void *arg)
{
    int64_t after = 0;
    for (;;) {
        nt_message *msgs = NULL;
        int n = 0;
        int rc = after_fn(conn, chat_id, after, INT64_MAX, page, &msgs, &n);
        if (rc) return rc;
        for (int i = 0; i < n && rc == 0; i++)
            rc = fn(arg, &msgs[i]);
        if (n > 0) after = msgs[n - 1].seq;
        nt_messages_free(msgs, n);
        if (rc != 0 || n < page) return rc;
    }
}

bool nt_store_mark_advance(int kind, int64_t seq, int64_t last_seq, int64_t delivered, int64_t read,
                           int64_t *new_delivered, int64_t *new_read)
{
    int64_t target = seq < last_seq ? seq : last_seq;
    int64_t r = read, d = delivered;
    if (kind == NT_MARK_READ && target > r) r = target;
    if (target > d) d = target; /* reading implies delivered */
    if (r > d) d = r;
    *new_delivered = d;
    *new_read = r;
    return r != read || d != delivered;
}

/* ---- users and matching --------------------------------------------------------- */

char *nt_store_like_prefix(const char *prefix)
{
    size_t len = strlen(prefix);
    char *pattern = malloc(2 * len + 2);
    if (!pattern) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        if (prefix[i] == '%' || prefix[i] == '_' || prefix[i] == '\\') pattern[j++] = '\\';
        pattern[j++] = prefix[i];
    }
    pattern[j++] = '%';
    pattern[j] = '\0';
    return pattern;
}

void nt_store_tags_join(const nt_match_prefs *in, char tags[NT_STORE_TAGS_MAX])
{
    size_t len = 0;
    for (int i = 0; i < in->ninterests; i++) {
        size_t n = strlen(in->interests[i]);
        if (i) tags[len++] = ',';
        memcpy(tags + len, in->interests[i], n);
        len += n;
    }
    tags[len] = '\0';
}

void nt_store_tags_split(const char *tags, nt_match_prefs *out)
{
    out->ninterests = 0;
    while (tags && *tags && out->ninterests < NT_INTERESTS_MAX) {
        size_t len = strcspn(tags, ",");
        if (len > 0 && len < NT_INTEREST_MAX) {
            memcpy(out->interests[out->ninterests], tags, len);
            out->interests[out->ninterests][len] = '\0';
            out->ninterests++;
        }
        tags += len;
        if (*tags == ',') tags++;
    }
}
