/*
 * Profiles, nickname search and presence. Profiles are read and patched
 * through the store; "online" is never stored, it comes from the bus's
 * connection registry at the moment a user is written out. Presence changes
 * (first connection up, last connection down) are announced to the user's
 * presence partners (direct-chat partners and friends, minus the users they
 * blocked; never anonymous random-chat partners, see
 * nt_store_user_partners) and, going offline, leave last_seen in the store.
 *
 * Worker threads only: everything here may block on the store.
 */
#include "services/services.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "net/http.h"
#include "services/validate.h"
#include "services/views.h"

#define USERS_TOKS 256
#define USERS_LIMIT_DEFAULT 50
#define USERS_LIMIT_MAX 200

/* ---- replies ---- */

static bool users__online(nt_ctx *ctx, int64_t user_id)
{
    return ctx->bus && nt_bus_online(ctx->bus, user_id);
}

static void users__reply_user(nt_ctx *ctx, nt_reply *r, const nt_user *u, bool with_email)
{
    nt_jw w;

    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_view_user(&w, u, users__online(ctx, u->id), with_email);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = 200;
}

/* ---- handlers ---- */

void nt_users_me(nt_ctx *ctx, const nt_caller *c, nt_reply *r)
{
    nt_user u;
    int rc = nt_store_user_get(ctx->store, c->user_id, &u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    users__reply_user(ctx, r, &u, true);
}

/*
 * PATCH semantics: a field left out (or null, for the text fields) stays as
 * it is. "" clears bio and avatar_url; null clears gender and birth_date,
 * which have no empty value of their own.
 */
void nt_users_update_me(nt_ctx *ctx, const nt_caller *c, const char *body, size_t len, nt_reply *r)
{
    nt_json doc;
    nt_json_tok toks[USERS_TOKS];
    char nickname[NT_NICK_MAX], bio[NT_BIO_MAX], avatar_url[NT_URL_MAX];
    char gender[16], birth_date[16];
    bool has_nickname, has_bio, has_avatar, has_gender, has_birth_date;
    nt_user_patch patch = {0};
    int bio_max = ctx->limits.bio_max_cp > 0 ? ctx->limits.bio_max_cp : 500;
    int url_max = ctx->limits.url_max > 0 ? ctx->limits.url_max : 1024;

    if (!nt_body_object(r, body, len, &doc, toks, USERS_TOKS)) return;

    if (!nt_field_str(r, &doc, 0, "nickname", false, 3, 32, nickname, sizeof nickname,
                      &has_nickname))
        return;
    if (has_nickname) {
        if (!nt_valid_nickname(nickname)) {
            nt_reply_error(r, 400, "bad_request",
                           "nickname must be 3..32 characters of A-Z a-z 0-9 _ . -");
            return;
        }
        patch.nickname = nickname;
    }

    if (!nt_field_str(r, &doc, 0, "bio", false, 0, bio_max, bio, sizeof bio, &has_bio)) return;
    if (has_bio) patch.bio = bio;

    if (!nt_field_str(r, &doc, 0, "avatar_url", false, 0, 0, avatar_url, sizeof avatar_url,
                      &has_avatar))
        return;
    if (has_avatar) {
        if (strlen(avatar_url) > (size_t)url_max ||
            (avatar_url[0] != '\0' && !nt_valid_http_url(avatar_url))) {
            nt_reply_error(r, 400, "bad_request",
                           "avatar_url must be an http(s) URL of at most %d bytes without "
                           "spaces, or \"\"",
                           url_max);
            return;
        }
        patch.avatar_url = avatar_url;
    }

    /* gender and birth_date: null means "clear", so look at the raw token
     * before the string helper (which treats null as absent). */
    if (nt_json_type_of(&doc, nt_json_get(&doc, 0, "gender")) == NT_JSON_NULL) {
        patch.gender = "";
    } else {
        if (!nt_field_str(r, &doc, 0, "gender", false, 0, 0, gender, sizeof gender, &has_gender))
            return;
        if (has_gender) {
            if (!nt_valid_gender(gender)) {
                nt_reply_error(r, 400, "bad_request", "gender must be male, female, other or null");
                return;
            }
            patch.gender = gender;
        }
    }
    if (nt_json_type_of(&doc, nt_json_get(&doc, 0, "birth_date")) == NT_JSON_NULL) {
        patch.birth_date = "";
    } else {
        if (!nt_field_str(r, &doc, 0, "birth_date", false, 0, 0, birth_date, sizeof birth_date,
                          &has_birth_date))
            return;
        if (has_birth_date) {
            if (!nt_valid_birth_date(birth_date)) {
                nt_reply_error(r, 400, "bad_request",
                               "birth_date must be a calendar date YYYY-MM-DD, not in the "
                               "future, or null");
                return;
            }
            patch.birth_date = birth_date;
        }
    }

    nt_user u;
    int rc = nt_store_user_update(ctx->store, c->user_id, &patch, &u);
    if (rc == NT_STORE_ECONFLICT) {
        nt_reply_error(r, 409, "conflict", "nickname is already taken");
        return;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    users__reply_user(ctx, r, &u, true);
}

void nt_users_get(nt_ctx *ctx, const nt_caller *c, int64_t user_id, nt_reply *r)
{
    nt_user u;

    if (user_id <= 0) {
        nt_reply_error(r, 404, "not_found", "user not found");
        return;
    }
    int rc = nt_store_user_get(ctx->store, user_id, &u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    users__reply_user(ctx, r, &u, false);
}

void nt_users_by_nickname(nt_ctx *ctx, const nt_caller *c, const char *nickname, nt_reply *r)
{
    nt_user u;

    /* A name outside the nickname rules cannot belong to anyone. */
    if (!nickname || !nt_valid_nickname(nickname)) {
        nt_reply_error(r, 404, "not_found", "user not found");
        return;
    }
    int rc = nt_store_user_by_nickname(ctx->store, nickname, &u);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        return;
    }
    users__reply_user(ctx, r, &u, false);
}

void nt_users_search(nt_ctx *ctx, const nt_caller *c, const char *query, nt_reply *r)
{
    char prefix[64];
    int64_t limit = USERS_LIMIT_DEFAULT, after_id = 0;
    nt_user *users = NULL;
    int n = 0;

    if (!query) query = "";
    int qlen = nt_http_query_get(query, "q", prefix, sizeof prefix);
    if (qlen == -1) {
        nt_reply_error(r, 400, "bad_request", "q is required");
        return;
    }
    if (qlen < 0 || !nt_valid_nickname_prefix(prefix)) {
        nt_reply_error(r, 400, "bad_request", "q must be 1..32 characters of A-Z a-z 0-9 _ . -");
        return;
    }
    if (!nt_query_int(r, query, "limit", 1, USERS_LIMIT_MAX, limit, &limit) ||
        !nt_query_int(r, query, "after_id", 0, INT64_MAX, 0, &after_id))
        return;

    users = calloc((size_t)limit, sizeof *users);
    if (!users) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    int rc = nt_store_user_search(ctx->store, prefix, after_id, (int)limit, users, &n);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "users");
        goto done;
    }

    nt_jw w;
    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    nt_jw_key(&w, "users");
    nt_jw_arr(&w);
    for (int i = 0; i < n; i++)
        nt_view_user(&w, &users[i], users__online(ctx, users[i].id), false);
    nt_jw_arr_end(&w);
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        goto done;
    }
    r->status = 200;
done:
    free(users);
}

/*
 * The frame is {"type":"presence","user_id","online","last_seen"}; coming
 * online it carries last_seen null (the user is here now), going offline
 * the time just stored. Failures are logged: presence is best effort and
 * there is nobody to answer.
 */
void nt_users_presence(nt_ctx *ctx, int64_t user_id, bool online)
{
    int64_t last_seen = 0;
    int64_t *partners = NULL;
    int n = 0;
    char frame[160];

    if (!online) {
        last_seen = nt_now_ms();
        int rc = nt_store_user_set_last_seen(ctx->store, user_id, last_seen);
        if (rc != 0)
            nt_warn("users: last_seen of %" PRId64 " not stored (store error %d)", user_id, rc);
    }
    int rc = nt_store_user_partners(ctx->store, user_id, &partners, &n);
    if (rc != 0) {
        nt_warn("users: partners of %" PRId64 " unknown (store error %d)", user_id, rc);
        return;
    }
    if (n > 0) {
        int len;
        if (online)
            len = snprintf(frame, sizeof frame,
                           "{\"type\":\"presence\",\"user_id\":%" PRId64
                           ",\"online\":true,\"last_seen\":null}",
                           user_id);
        else
            len = snprintf(frame, sizeof frame,
                           "{\"type\":\"presence\",\"user_id\":%" PRId64
                           ",\"online\":false,\"last_seen\":%" PRId64 "}",
                           user_id, last_seen);
        if (len > 0 && (size_t)len < sizeof frame) {
            rc = nt_bus_deliver(ctx->bus, partners, (size_t)n, frame, (size_t)len);
            if (rc != 0)
                nt_warn("users: presence of %" PRId64 " not delivered (bus error %d)", user_id, rc);
        }
    }
    free(partners);
}

int nt_users_ready_frame(nt_ctx *ctx, int64_t user_id, nt_buf *out)
{
    nt_user u;
    int rc = nt_store_user_get(ctx->store, user_id, &u);
    if (rc != 0) return rc;

    size_t start = out->len;
    nt_jw w;
    nt_jw_init(&w, out);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", "ready");
    nt_jw_key(&w, "user");
    /* The user's own profile on the connection just authenticated: with
     * email, and online by definition. */
    nt_view_user(&w, &u, true, true);
    nt_jw_obj_end(&w);
    rc = nt_jw_error(&w);
    if (rc) out->len = start;
    return rc;
}
