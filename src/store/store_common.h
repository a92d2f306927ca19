/*
 * What the store back ends share (internal to src/store/): logic that is the
 * same whatever the database, so store_sqlite.c and store_pg.c keep only
 * what talks to their database.
 *
 *  - The write queue: one FIFO of nt_append nodes, one writer thread that
 *    takes the whole queue as a batch, hands it to the back end's run_batch
 *    (one transaction, group commit) and then tells every op: async appends
 *    and submitted jobs through their done(), synchronous callers through
 *    their nt_store_job.
 *  - Append helpers: the checks of an op, its message built from the op, and
 *    the chat's member set handed over by reference.
 *  - Small pure helpers both back ends need the same way (the direct-chat
 *    key, LIKE patterns, interest tags, receipt markers, chat lists, export).
 *
 * Nothing here does SQL. Prefix nt_store_ (internal, like nt_store_ops).
 */
#ifndef NT_STORE_COMMON_H
#define NT_STORE_COMMON_H

#include <pthread.h>

#include "store/store.h"

/* ---- the write queue ------------------------------------------------------ */

/*
 * A write other than an async append: a caller waiting for its commit, or
 * (done set) a job nobody waits for. `node` is its queue link
 * (node.waiter points at the job). generic says the job is a write other
 * than an append: the back end embeds the job as the first member of its
 * own job type, which carries the function to run (see sq_job, pg_job). For
 * nt_store_queue_append_wait the caller's op is the queue node and the job
 * only waits. status and finished are written by the writer thread.
 */
typedef struct nt_store_job {
    nt_append node;
    bool generic;
    int status;
    bool finished;
    /* NULL for a caller that waits. Otherwise nobody waits: the writer
     * calls done(job) after the commit (status set), and done owns the
     * job from then on (see nt_store_queue_submit). */
    void (*done)(struct nt_store_job *job);
} nt_store_job;

typedef struct nt_store_queue {
    /* Guards the queue, stopping and stats; a back end may guard its list
     * of reader connections with it too. */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the writer waits here for work */
    pthread_cond_t done; /* synchronous callers wait here for their commit */
    nt_append *head, *tail;
    uint64_t queued;
    bool stopping;
    nt_store_stats_t stats;

    pthread_t thread;
    bool thread_started;
    void *be;
    void (*run_batch)(void *be, nt_append *batch);
    void (*after_batch)(void *be); /* NULL, or run after the batch was told */
} nt_store_queue;

/* Initialises the lock and conditions of a zeroed queue. */
void nt_store_queue_init(nt_store_queue *q);
/* Starts the writer thread ("nt-store-write"): for every batch it calls
 * run_batch(be, batch) (which sets every op's status), tells the ops, then
 * calls after_batch(be) if not NULL. 0 or an errno value. */
int nt_store_queue_start(nt_store_queue *q, void *be, void (*run_batch)(void *be, nt_append *batch),
                         void (*after_batch)(void *be));
/* Lets the writer finish every queued op and joins it (if it started). */
void nt_store_queue_stop(nt_store_queue *q);
/* Destroys the lock and conditions; after stop. */
void nt_store_queue_destroy(nt_store_queue *q);
/* A snapshot of the group-commit counters, with what is queued now. */
void nt_store_queue_stats(nt_store_queue *q, nt_store_stats_t *out);

/* Queues an async append: done() runs on the writer after its commit. */
void nt_store_queue_append(nt_store_queue *q, nt_append *op);
/* Queues an append and waits for its commit; returns op->status. */
int nt_store_queue_append_wait(nt_store_queue *q, nt_append *op);
/* Queues job (zeroed but for what the back end's type adds, generic set)
 * and waits for its commit; returns job->status. */
int nt_store_queue_run(nt_store_queue *q, nt_store_job *job);

/* Queues job (generic, done set) and returns 0 at once: done(job) runs on
 * the writer thread once the batch holding it has committed or failed.
 * EUNAVAILABLE (done does not run) once the queue is stopping. */
int nt_store_queue_submit(nt_store_queue *q, nt_store_job *job);

/* The job of a synchronous write other than an append, or NULL. */
nt_store_job *nt_store_generic_job(const nt_append *op);
/* Marks an op failed because its transaction did not commit. */
void nt_store_op_lost(nt_append *op);

/* ---- random chats ------------------------------------------------------------ */

/* An nt_store_chat_random_async request as a back end's job carries it:
 * the arguments (aliases copied), the chat read back, the callback. */
typedef struct nt_store_random_req {
    int64_t a, b, now;
    char alias_a[NT_ALIAS_MAX], alias_b[NT_ALIAS_MAX];
    nt_chat out;
    nt_store_chat_done done;
    void *arg;
} nt_store_random_req;

void nt_store_random_req_init(nt_store_random_req *req, int64_t a, int64_t b, const char *alias_a,
                              const char *alias_b, int64_t now, nt_store_chat_done done, void *arg);
/* Calls done with the outcome of the job that ran it (status): the chat on
 * success (the callee's), else the error and NULL (what was read back in
 * a batch that did not commit is freed). */
void nt_store_random_req_tell(nt_store_random_req *req, int status);

/* ---- appends --------------------------------------------------------------- */

/* EINVAL for an op no back end can store (no text, text too long, client_id
 * not terminated), else 0. */
int nt_store_append_check(const nt_append *op);
/* Clears what an append put in its out fields (status and duplicate too). */
void nt_store_append_reset(nt_append *op);
/* Copies the op's text and extra_json into op->msg (heap): 0 or
 * EUNAVAILABLE. Done before the INSERT, so a written message can no longer
 * fail for want of memory. */
int nt_store_append_copy(nt_append *op);
/* Fills op->msg for the message stored at seq (the id is the back end's):
 * chat, sender, time, client_id and the sender's alias ("" or NULL: none). */
void nt_store_append_stamp(nt_append *op, int64_t seq, const char *sender_alias);
/* Hands the chat's member set to the op by reference (no copy). */
void nt_store_append_members(nt_append *op, nt_member_set *members);

/* ---- chats and messages ------------------------------------------------------ */

/* The home slot of chat_id in a cache of `slots` (a power of two) entries
 * with open addressing; probe on with (i + 1) & (slots - 1). */
size_t nt_store_cache_home(int64_t chat_id, size_t slots);

/* The unique key of the direct chat of a and b: "min:max". */
#define NT_STORE_DIRECT_KEY_MAX 48
void nt_store_direct_key(int64_t a, int64_t b, char key[NT_STORE_DIRECT_KEY_MAX]);

/* Whether viewer_id is a member of c, and then *read_seq (else 0). */
bool nt_store_viewer_read(const nt_chat *c, int64_t viewer_id, int64_t *read_seq);

/*
 * Loads the chats `ids` for user_id with load(conn, id, user_id, chat) into
 * a heap array (nt_chats_free); on failure nothing is kept. The read
 * transaction around it is the caller's.
 */
int nt_store_chats_load(void *conn,
                        int (*load)(void *conn, int64_t chat_id, int64_t viewer_id, nt_chat *out),
                        const int64_t *ids, int nids, int64_t user_id, nt_chat **out, int *n);

/* The two history queries of a back end, each into a heap array:
 * the oldest `limit` messages with after < seq < before, ascending; */
typedef int (*nt_store_after_fn)(void *conn, int64_t chat_id, int64_t after, int64_t before,
                                 int limit, nt_message **out, int *n);
/* the newest `limit` messages with seq < before, newest first. */
typedef int (*nt_store_newest_fn)(void *conn, int64_t chat_id, int64_t before, int limit,
                                  nt_message **out, int *n);

/* nt_store_messages for a back end, on its read connection conn. */
int nt_store_messages_read(void *conn, nt_store_after_fn after_fn, nt_store_newest_fn newest_fn,
                           int64_t chat_id, int64_t before_seq, int64_t after_seq, int limit,
                           nt_message **out, int *n);

/*
 * nt_store_export for a back end: reads the chat `page` messages at a time
 * with after_fn and calls fn for each, with no query open while fn runs (a
 * slow consumer must not pin a read snapshot). Stops at fn's first non-zero
 * (returned).
 */
int nt_store_export_pages(void *conn, nt_store_after_fn after_fn, int64_t chat_id, int page,
                          int (*fn)(void *arg, const nt_message *m), void *arg);

/*
 * A receipt marker move (see nt_store_mark): from the member's stored
 * delivered/read markers and the chat's last_seq, the new ones. Returns
 * whether anything moved.
 */
bool nt_store_mark_advance(int kind, int64_t seq, int64_t last_seq, int64_t delivered, int64_t read,
                           int64_t *new_delivered, int64_t *new_read);

/* ---- users and matching --------------------------------------------------------- */

/* A LIKE pattern for names starting with prefix: its % _ and \ escaped
 * (ESCAPE '\'), then '%'. Heap (free()), NULL when out of memory. */
char *nt_store_like_prefix(const char *prefix);

/* Interest tags as stored: joined with ','. */
#define NT_STORE_TAGS_MAX (NT_INTERESTS_MAX * NT_INTEREST_MAX + 1)
void nt_store_tags_join(const nt_match_prefs *in, char tags[NT_STORE_TAGS_MAX]);
/* The stored tags (NULL: none) back into out->interests; empty or too long
 * tags are skipped. */
void nt_store_tags_split(const char *tags, nt_match_prefs *out);

#endif
