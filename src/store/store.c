/*
 * The public face of the store: picks the back end from the URL scheme,
 * checks the arguments every back end would check the same way, and forwards
 * each call through the back end's nt_store_ops table (store_backend.h).
 * The helpers that free what the store hands out (messages, chats, append
 * results) live here too, since they do not depend on the back end.
 */
#include "store/store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_backend.h"

/* The PostgreSQL back end (store_pg.c). */
extern const nt_store_ops nt_store_pg_ops;

struct nt_store {
    const nt_store_ops *ops;
    void *be;
};

static const struct {
    const char *scheme;
    const nt_store_ops *ops;
} store_schemes[] = {
    {"sqlite", &nt_store_sqlite_ops},
    {"postgres", &nt_store_pg_ops},
    {"postgresql", &nt_store_pg_ops},
};

nt_store *nt_store_open(const char *url, char *err, size_t err_len)
{
    char unused[1];
    if (!err || !err_len) {
        err = unused;
        err_len = sizeof(unused);
    }
    err[0] = '\0';
    if (!url) {
        snprintf(err, err_len, "no store URL");
        return NULL;
    }
    const char *colon = strchr(url, ':');
    const nt_store_ops *ops = NULL;
    for (size_t i = 0; colon && i < sizeof(store_schemes) / sizeof(store_schemes[0]); i++) {
        size_t len = strlen(store_schemes[i].scheme);
        if ((size_t)(colon - url) == len && memcmp(url, store_schemes[i].scheme, len) == 0)
            ops = store_schemes[i].ops;
    }
    if (!ops) {
        snprintf(err, err_len,
                 "unsupported store URL \"%s\" (expected sqlite:PATH or postgres://HOST/DB)", url);
        return NULL;
    }
    nt_store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->ops = ops;
    s->be = ops->open(colon + 1, err, err_len);
    if (!s->be) {
        free(s);
        return NULL;
    }
    return s;
}

void nt_store_close(nt_store *s)
{
    if (!s) return;
    s->ops->close(s->be);
    free(s);
}

int nt_store_ping(nt_store *s)
{
    return s->ops->ping(s->be);
}

void nt_store_stats(nt_store *s, nt_store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    s->ops->stats(s->be, out);
}

/* ---- shared helpers ---------------------------------------------------- */

void nt_message_free(nt_message *m)
{
    if (!m) return;
    free(m->text);
    free(m->extra_json);
    m->text = NULL;
    m->extra_json = NULL;
    m->text_len = 0;
}

void nt_messages_free(nt_message *arr, int n)
{
    if (!arr) return;
    for (int i = 0; i < n; i++)
        nt_message_free(&arr[i]);
    free(arr);
}

void nt_chat_free(nt_chat *c)
{
    if (!c) return;
    free(c->members);
    c->members = NULL;
    c->nmembers = 0;
    nt_message_free(&c->last_message);
    c->has_last_message = false;
}

void nt_chats_free(nt_chat *arr, int n)
{
    if (!arr) return;
    for (int i = 0; i < n; i++)
        nt_chat_free(&arr[i]);
    free(arr);
}

void nt_append_release(nt_append *op)
{
    if (!op) return;
    nt_message_free(&op->msg);
    nt_member_set_unref(op->members);
    op->members = NULL;
    op->member_ids = NULL;
    op->nmembers = 0;
}

/* ---- member sets --------------------------------------------------------- */

static int store__cmp_id(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

nt_member_set *nt_member_set_new(const int64_t *ids, int n)
{
    if (n < 0 || (n > 0 && !ids)) return NULL;
    nt_member_set *set = malloc(sizeof(*set) + (size_t)n * sizeof(set->ids[0]));
    if (!set) return NULL;
    atomic_init(&set->refs, 1);
    if (n > 0) memcpy(set->ids, ids, (size_t)n * sizeof(set->ids[0]));
    /* The back ends read members in order already: sort only if not. */
    bool sorted = true;
    for (int i = 1; i < n && sorted; i++)
        sorted = set->ids[i - 1] < set->ids[i];
    if (!sorted) qsort(set->ids, (size_t)n, sizeof(set->ids[0]), store__cmp_id);
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (kept == 0 || set->ids[kept - 1] != set->ids[i]) set->ids[kept++] = set->ids[i];
    set->n = kept;
    return set;
}

nt_member_set *nt_member_set_ref(nt_member_set *set)
{
    /* Relaxed: whoever hands the set on already holds a reference. */
    if (set) atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void nt_member_set_unref(nt_member_set *set)
{
    if (!set) return;
    /* acq_rel: this holder's reads of the set happen before its decrement
     * (release), and the holder that drops the last reference sees every
     * other holder's before it frees (acquire). Not a release decrement
     * plus an acquire fence: ThreadSanitizer does not model fences (GCC
     * refuses atomic_thread_fence under -fsanitize=thread) and would call
     * the free a race. */
    if (atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) == 1) free(set);
}

bool nt_member_set_contains(const nt_member_set *set, int64_t user_id)
{
    if (!set) return false;
    int lo = 0, hi = set->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (set->ids[mid] < user_id)
            lo = mid + 1;
        else if (set->ids[mid] > user_id)
            hi = mid;
        else
            return true;
    }
    return false;
}

static bool store__nonempty(const char *str)
{
    return str && str[0];
}

/* NULL, or short enough for a field of `cap` bytes (NUL included): the store
 * never silently truncates what it is asked to keep. */
static bool store__fits(const char *str, size_t cap)
{
    return !str || strnlen(str, cap) < cap;
}

/* ---- users ------------------------------------------------------------- */

int nt_store_user_create(nt_store *s, const nt_user_new *in, nt_user *out,
                         const char **conflict_field)
{
    const char *unused;
    if (!conflict_field) conflict_field = &unused;
    *conflict_field = NULL;
    if (!in || !out || !store__nonempty(in->email) || !store__nonempty(in->nickname) ||
        !store__nonempty(in->password_hash))
        return NT_STORE_EINVAL;
    if (!store__fits(in->email, NT_EMAIL_MAX) || !store__fits(in->nickname, NT_NICK_MAX) ||
        !store__fits(in->gender, NT_GENDER_MAX) || !store__fits(in->birth_date, NT_DATE_MAX))
        return NT_STORE_EINVAL;
    return s->ops->user_create(s->be, in, out, conflict_field);
}

int nt_store_user_get(nt_store *s, int64_t id, nt_user *out)
{
    return s->ops->user_get(s->be, id, out);
}

int nt_store_user_by_nickname(nt_store *s, const char *nickname, nt_user *out)
{
    if (!nickname) return NT_STORE_EINVAL;
    return s->ops->user_by_nickname(s->be, nickname, out);
}

int nt_store_user_for_login(nt_store *s, const char *login, nt_user *out, char *pw_hash,
                            size_t pw_hash_len)
{
    if (!login || !pw_hash || pw_hash_len == 0) return NT_STORE_EINVAL;
    return s->ops->user_for_login(s->be, login, out, pw_hash, pw_hash_len);
}

int nt_store_user_update(nt_store *s, int64_t id, const nt_user_patch *patch, nt_user *out)
{
    if (!patch || (patch->nickname && !patch->nickname[0])) return NT_STORE_EINVAL;
    if (!store__fits(patch->nickname, NT_NICK_MAX) || !store__fits(patch->bio, NT_BIO_MAX) ||
        !store__fits(patch->avatar_url, NT_URL_MAX) || !store__fits(patch->gender, NT_GENDER_MAX) ||
        !store__fits(patch->birth_date, NT_DATE_MAX))
        return NT_STORE_EINVAL;
    return s->ops->user_update(s->be, id, patch, out);
}

int nt_store_user_search(nt_store *s, const char *prefix, int64_t after_id, int limit, nt_user *out,
                         int *n)
{
    *n = 0;
    if (limit <= 0) return NT_STORE_EINVAL;
    return s->ops->user_search(s->be, prefix ? prefix : "", after_id, limit, out, n);
}

int nt_store_user_set_last_seen(nt_store *s, int64_t id, int64_t ts)
{
    return s->ops->user_set_last_seen(s->be, id, ts);
}

/* ---- sessions ---------------------------------------------------------- */

int nt_store_session_create(nt_store *s, int64_t user_id, const uint8_t refresh_hash[32],
                            int64_t expires_at, int64_t now, nt_session *out)
{
    if (!refresh_hash) return NT_STORE_EINVAL;
    return s->ops->session_create(s->be, user_id, refresh_hash, expires_at, now, out);
}

int nt_store_session_rotate(nt_store *s, const uint8_t old_hash[32], const uint8_t new_hash[32],
                            int64_t new_expires_at, int64_t now, nt_session *out)
{
    if (!old_hash || !new_hash) return NT_STORE_EINVAL;
    return s->ops->session_rotate(s->be, old_hash, new_hash, new_expires_at, now, out);
}

int nt_store_session_revoke(nt_store *s, const uint8_t refresh_hash[32], nt_session *out)
{
    if (!refresh_hash) return NT_STORE_EINVAL;
    return s->ops->session_revoke(s->be, refresh_hash, out);
}

int nt_store_session_active(nt_store *s, int64_t session_id)
{
    return s->ops->session_active(s->be, session_id);
}

/* ---- chats ------------------------------------------------------------- */

/* A chat a back end failed to fill: whatever it holds is freed and zeroed,
 * so callers never see half a chat. */
static void store__chat_clear(nt_chat *out)
{
    nt_chat_free(out);
    memset(out, 0, sizeof(*out));
}

int nt_store_chat_direct(nt_store *s, int64_t a, int64_t b, int64_t now, nt_chat *out,
                         bool *created)
{
    bool unused;
    memset(out, 0, sizeof(*out));
    if (!created) created = &unused;
    *created = false;
    if (a <= 0 || b <= 0 || a == b) return NT_STORE_EINVAL;
    int rc = s->ops->chat_direct(s->be, a, b, now, out, created);
    if (rc) {
        store__chat_clear(out);
        *created = false;
    }
    return rc;
}

int nt_store_chat_create(nt_store *s, const char *type, const char *title, int64_t owner_id,
                         const int64_t *member_ids, int n, int64_t now, nt_chat *out)
{
    memset(out, 0, sizeof(*out));
    if (!type || n < 0 || (n > 0 && !member_ids)) return NT_STORE_EINVAL;
    if (strcmp(type, "group") != 0 && strcmp(type, "channel") != 0 && strcmp(type, "random") != 0)
        return NT_STORE_EINVAL;
    if (title && strlen(title) >= NT_TITLE_MAX) return NT_STORE_EINVAL;
    int rc =
        s->ops->chat_create(s->be, type, title ? title : "", owner_id, member_ids, n, now, out);
    if (rc) store__chat_clear(out);
    return rc;
}

int nt_store_chat_get(nt_store *s, int64_t chat_id, int64_t viewer_id, nt_chat *out)
{
    memset(out, 0, sizeof(*out));
    return s->ops->chat_get(s->be, chat_id, viewer_id, out);
}

int nt_store_chat_list(nt_store *s, int64_t user_id, int limit, nt_chat **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (limit <= 0) return NT_STORE_EINVAL;
    return s->ops->chat_list(s->be, user_id, limit, out, n);
}

int nt_store_channel_by_title(nt_store *s, const char *title, int64_t *chat_id)
{
    *chat_id = 0;
    if (!title) return NT_STORE_EINVAL;
    return s->ops->channel_by_title(s->be, title, chat_id);
}

int nt_store_member_role(nt_store *s, int64_t chat_id, int64_t user_id, int *role)
{
    return s->ops->member_role(s->be, chat_id, user_id, role);
}

int nt_store_member_add(nt_store *s, int64_t chat_id, int64_t user_id, int role)
{
    if (role != NT_ROLE_MEMBER && role != NT_ROLE_OWNER) return NT_STORE_EINVAL;
    return s->ops->member_add(s->be, chat_id, user_id, role);
}

int nt_store_member_remove(nt_store *s, int64_t chat_id, int64_t user_id)
{
    return s->ops->member_remove(s->be, chat_id, user_id);
}

int nt_store_chat_member_ids(nt_store *s, int64_t chat_id, int64_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    return s->ops->chat_member_ids(s->be, chat_id, ids, n);
}

int nt_store_user_partners(nt_store *s, int64_t user_id, int64_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    return s->ops->user_partners(s->be, user_id, ids, n);
}

int nt_store_chat_close(nt_store *s, int64_t chat_id)
{
    return s->ops->chat_close(s->be, chat_id);
}

/* ---- messages ---------------------------------------------------------- */

/* rc of an edit or delete; on failure out is freed and zeroed. */
static int store__message_result(int rc, nt_message *out)
{
    if (rc) {
        nt_message_free(out);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

/* Clears the out fields. The op itself is checked by the back end, on its
 * writer thread, so that done() always runs there, even for a bad op. */
static void store__append_prepare(nt_append *op)
{
    op->status = 0;
    op->duplicate = false;
    memset(&op->msg, 0, sizeof(op->msg));
    op->members = NULL;
    op->member_ids = NULL;
    op->nmembers = 0;
    op->next = NULL;
    op->waiter = NULL;
}

void nt_store_append(nt_store *s, nt_append *op)
{
    store__append_prepare(op);
    s->ops->append(s->be, op);
}

int nt_store_append_wait(nt_store *s, nt_append *op)
{
    store__append_prepare(op);
    return s->ops->append_wait(s->be, op);
}

int nt_store_messages(nt_store *s, int64_t chat_id, int64_t before_seq, int64_t after_seq,
                      int limit, nt_message **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (limit <= 0) return NT_STORE_EINVAL;
    return s->ops->messages(s->be, chat_id, before_seq, after_seq, limit, out, n);
}

int nt_store_message_edit(nt_store *s, int64_t chat_id, int64_t seq, int64_t sender_id,
                          const char *text, int64_t now, nt_message *out)
{
    memset(out, 0, sizeof(*out));
    if (!text) return NT_STORE_EINVAL;
    return store__message_result(
        s->ops->message_edit(s->be, chat_id, seq, sender_id, text, now, out), out);
}

int nt_store_message_delete(nt_store *s, int64_t chat_id, int64_t seq, int64_t sender_id,
                            int64_t now, nt_message *out)
{
    memset(out, 0, sizeof(*out));
    return store__message_result(s->ops->message_delete(s->be, chat_id, seq, sender_id, now, out),
                                 out);
}

int nt_store_export(nt_store *s, int64_t chat_id, int (*fn)(void *arg, const nt_message *m),
                    void *arg)
{
    if (!fn) return NT_STORE_EINVAL;
    return s->ops->export_chat(s->be, chat_id, fn, arg);
}

int nt_store_mark(nt_store *s, int64_t chat_id, int64_t user_id, int kind, int64_t seq,
                  int64_t *delivered_seq, int64_t *read_seq, bool *moved)
{
    int64_t d_unused, r_unused;
    bool m_unused;
    if (!delivered_seq) delivered_seq = &d_unused;
    if (!read_seq) read_seq = &r_unused;
    if (!moved) moved = &m_unused;
    *delivered_seq = *read_seq = 0;
    *moved = false;
    if (kind != NT_MARK_DELIVERED && kind != NT_MARK_READ) return NT_STORE_EINVAL;
    int rc = s->ops->mark(s->be, chat_id, user_id, kind, seq, delivered_seq, read_seq, moved);
    if (rc) *moved = false;
    return rc;
}

/* ---- friends and blocks (optional in a back end) ----------------------------- */

#define STORE_OPTIONAL(op)                                                                         \
    if (!s->ops->op) return NT_STORE_EUNAVAILABLE

int nt_store_friend_request(nt_store *s, int64_t from_id, int64_t to_id, int64_t now, int *outcome)
{
    int unused;
    if (!outcome) outcome = &unused;
    *outcome = 0;
    if (from_id <= 0 || to_id <= 0 || from_id == to_id) return NT_STORE_EINVAL;
    STORE_OPTIONAL(friend_request);
    return s->ops->friend_request(s->be, from_id, to_id, now, outcome);
}

int nt_store_friend_accept(nt_store *s, int64_t user_id, int64_t from_id, int64_t now)
{
    if (user_id == from_id) return NT_STORE_ENOTFOUND;
    STORE_OPTIONAL(friend_accept);
    return s->ops->friend_accept(s->be, user_id, from_id, now);
}

int nt_store_friend_reject(nt_store *s, int64_t user_id, int64_t from_id)
{
    STORE_OPTIONAL(friend_reject);
    return s->ops->friend_reject(s->be, user_id, from_id);
}

int nt_store_friend_remove(nt_store *s, int64_t user_id, int64_t other_id)
{
    STORE_OPTIONAL(friend_remove);
    return s->ops->friend_remove(s->be, user_id, other_id);
}

int nt_store_friend_list(nt_store *s, int64_t user_id, int kind, int limit, nt_user **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (limit <= 0 || kind < NT_LIST_FRIENDS || kind > NT_LIST_BLOCKED) return NT_STORE_EINVAL;
    STORE_OPTIONAL(friend_list);
    return s->ops->friend_list(s->be, user_id, kind, limit, out, n);
}

int nt_store_block(nt_store *s, int64_t blocker_id, int64_t blocked_id, int64_t now)
{
    if (blocker_id <= 0 || blocked_id <= 0 || blocker_id == blocked_id) return NT_STORE_EINVAL;
    STORE_OPTIONAL(block);
    return s->ops->block(s->be, blocker_id, blocked_id, now);
}

int nt_store_unblock(nt_store *s, int64_t blocker_id, int64_t blocked_id)
{
    STORE_OPTIONAL(unblock);
    return s->ops->unblock(s->be, blocker_id, blocked_id);
}

int nt_store_block_peers(nt_store *s, int64_t user_id, int64_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    STORE_OPTIONAL(block_peers);
    return s->ops->block_peers(s->be, user_id, ids, n);
}

/* ---- matching and random chats ------------------------------------------------- */

int nt_store_match_prefs_get(nt_store *s, int64_t user_id, nt_match_prefs *out)
{
    memset(out, 0, sizeof(*out));
    STORE_OPTIONAL(match_prefs_get);
    return s->ops->match_prefs_get(s->be, user_id, out);
}

int nt_store_match_prefs_set(nt_store *s, int64_t user_id, const nt_match_prefs *in, int64_t now)
{
    if (!in || !(in->genders & NT_GENDER_ALL) || (in->genders & ~(unsigned)NT_GENDER_ALL) ||
        in->age_min > in->age_max || in->ninterests < 0 || in->ninterests > NT_INTERESTS_MAX)
        return NT_STORE_EINVAL;
    for (int i = 0; i < in->ninterests; i++)
        if (!in->interests[i][0] || strchr(in->interests[i], ',') ||
            !store__fits(in->interests[i], NT_INTEREST_MAX))
            return NT_STORE_EINVAL;
    STORE_OPTIONAL(match_prefs_set);
    return s->ops->match_prefs_set(s->be, user_id, in, now);
}

int nt_store_chat_random(nt_store *s, int64_t a, int64_t b, const char *alias_a,
                         const char *alias_b, int64_t now, nt_chat *out)
{
    memset(out, 0, sizeof(*out));
    if (a <= 0 || b <= 0 || a == b || !store__nonempty(alias_a) || !store__nonempty(alias_b) ||
        !store__fits(alias_a, NT_ALIAS_MAX) || !store__fits(alias_b, NT_ALIAS_MAX))
        return NT_STORE_EINVAL;
    STORE_OPTIONAL(chat_random);
    int rc = s->ops->chat_random(s->be, a, b, alias_a, alias_b, now, out);
    if (rc) store__chat_clear(out);
    return rc;
}

int nt_store_chat_random_async(nt_store *s, int64_t a, int64_t b, const char *alias_a,
                               const char *alias_b, int64_t now, nt_store_chat_done done, void *arg)
{
    if (a <= 0 || b <= 0 || a == b || !store__nonempty(alias_a) || !store__nonempty(alias_b) ||
        !store__fits(alias_a, NT_ALIAS_MAX) || !store__fits(alias_b, NT_ALIAS_MAX) || !done)
        return NT_STORE_EINVAL;
    STORE_OPTIONAL(chat_random_async);
    return s->ops->chat_random_async(s->be, a, b, alias_a, alias_b, now, done, arg);
}

int nt_store_chat_reveal(nt_store *s, int64_t chat_id, int64_t user_id, bool *shown_now)
{
    bool unused;
    if (!shown_now) shown_now = &unused;
    *shown_now = false;
    STORE_OPTIONAL(chat_reveal);
    int rc = s->ops->chat_reveal(s->be, chat_id, user_id, shown_now);
    if (rc) *shown_now = false;
    return rc;
}

int nt_store_random_alias(nt_store *s, int64_t chat_id, int64_t user_id, char alias[NT_ALIAS_MAX])
{
    alias[0] = '\0';
    STORE_OPTIONAL(random_alias);
    return s->ops->random_alias(s->be, chat_id, user_id, alias);
}
