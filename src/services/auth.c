/*
 * Accounts and sessions: register, login, refresh with rotation, logout, and
 * the access-token check the gateway runs on every authenticated request.
 *
 * Credentials: passwords are kept only as Argon2id strings (libsodium
 * crypto_pwhash_str, cost from ctx->pwhash_ops / pwhash_mem). A login for an
 * unknown user still runs one Argon2id verification, against a dummy hash
 * made once with the same cost, so the answer time does not tell whether the
 * account exists.
 *
 * Tokens: a session is a row in the store holding the SHA-256 of its current
 * refresh token. The refresh token is 32 random bytes, base64url without
 * padding (43 characters); only its hash ever reaches the store. Each refresh
 * rotates it; presenting an already-used one makes the store revoke the whole
 * session. Access tokens are HS256 JWTs (libjwt) carrying "sub" (user id as
 * a decimal string), "sid" (session id), "iat" and "exp" in seconds; since
 * libjwt 1.10 validates nothing but the signature, nt_auth_verify checks the
 * algorithm and expiry itself, and then that the session is still active, so
 * logout ends its access tokens at once rather than at expiry.
 *
 * Password guessing: ctx->login_limit (--login-failures) is a token bucket
 * per account, keyed by a SipHash of the lowercased login under a key
 * drawn at start (so nobody can aim collisions at another's bucket). A
 * login takes a token before anything is hashed and gives it back unless
 * the password turned out wrong (or the account unknown): only failures
 * count, and an empty bucket refuses every login to that account, right
 * password or not, with 429 and Retry-After, at no Argon2id cost and
 * without telling whether a guess was right. A successful login does not
 * refill it.
 *
 * Everything here blocks (Argon2id, the store): worker threads only.
 * Argon2id itself runs where the installed hasher says (auth.h; the
 * gateway's hashing pool sends it to processes of their own), or in the
 * calling thread when there is none.
 */
#include "services/services.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jwt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "services/auth.h"
#include "services/validate.h"
#include "services/views.h"

#define AUTH_TOKS 256         /* JSON tokens per request body */
#define AUTH_PW_CAP 4097      /* password buffer: password_max is clamped to 4096 */
#define AUTH_REFRESH_RAW 32   /* random bytes in a refresh token */
#define AUTH_REFRESH_CHARS 43 /* their base64url length, no padding */
#define AUTH_TOKEN_MAX 4096   /* longest access token we bother decoding */

/* ---- validation (the rules of API.md "Limits") ---- */

/* ---- password hashing ---- */

static unsigned long long auth__ops(const nt_ctx *ctx)
{
    return ctx->pwhash_ops ? ctx->pwhash_ops : crypto_pwhash_OPSLIMIT_INTERACTIVE;
}

static size_t auth__mem(const nt_ctx *ctx)
{
    return ctx->pwhash_mem ? ctx->pwhash_mem : crypto_pwhash_MEMLIMIT_INTERACTIVE;
}

_Static_assert(NT_PWHASH_STRBYTES == crypto_pwhash_STRBYTES,
               "auth.h's string length is libsodium's");

static _Atomic(const nt_pwhasher *) auth__hasher;

void nt_auth_set_hasher(const nt_pwhasher *hasher)
{
    atomic_store(&auth__hasher, hasher);
}

/* crypto_pwhash_str through the installed hasher, or here. */
static int auth__hash_str(char out[crypto_pwhash_STRBYTES], const char *pw, size_t pw_len,
                          unsigned long long ops, size_t mem)
{
    const nt_pwhasher *h = atomic_load(&auth__hasher);
    if (h) {
        int rc = h->str(out, pw, pw_len, ops, mem);
        if (rc != -ENOSYS) return rc;
    }
    return crypto_pwhash_str(out, pw, pw_len, ops, mem);
}

/* crypto_pwhash_str_verify through the installed hasher, or here. */
static int auth__hash_verify(const char str[crypto_pwhash_STRBYTES], const char *pw, size_t pw_len)
{
    const nt_pwhasher *h = atomic_load(&auth__hasher);
    if (h) {
        int rc = h->verify(str, pw, pw_len);
        if (rc != -ENOSYS) return rc;
    }
    return crypto_pwhash_str_verify(str, pw, pw_len);
}

static pthread_mutex_t auth__dummy_lock = PTHREAD_MUTEX_INITIALIZER;
static char auth__dummy_hash[crypto_pwhash_STRBYTES];
static unsigned long long auth__dummy_ops;
static size_t auth__dummy_mem;

/* Copies the dummy hash for the ctx's cost into out, making it the first
 * time (or when the cost changed). 0, or -1 if Argon2id failed. */
static int auth__dummy(const nt_ctx *ctx, char out[crypto_pwhash_STRBYTES])
{
    int rc = 0;

    pthread_mutex_lock(&auth__dummy_lock);
    if (!auth__dummy_hash[0] || auth__dummy_ops != auth__ops(ctx) ||
        auth__dummy_mem != auth__mem(ctx)) {
        uint8_t secret[32];
        randombytes_buf(secret, sizeof secret);
        if (auth__hash_str(auth__dummy_hash, (const char *)secret, sizeof secret, auth__ops(ctx),
                           auth__mem(ctx)) != 0) {
            auth__dummy_hash[0] = '\0';
            rc = -1;
        } else {
            auth__dummy_ops = auth__ops(ctx);
            auth__dummy_mem = auth__mem(ctx);
        }
    }
    memcpy(out, auth__dummy_hash, crypto_pwhash_STRBYTES);
    pthread_mutex_unlock(&auth__dummy_lock);
    return rc;
}

/* ---- tokens ---- */

/* A fresh refresh token: its text for the client and its hash for the store. */
static void auth__new_refresh(char text[AUTH_REFRESH_CHARS + 1], uint8_t hash[32])
{
    uint8_t raw[AUTH_REFRESH_RAW];

    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(text, AUTH_REFRESH_CHARS + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_hash_sha256(hash, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

/* The store hash of a refresh token the client sent; false if the text
 * cannot be one of ours (then no store lookup is needed). */
static bool auth__refresh_hash(const char *text, uint8_t hash[32])
{
    uint8_t raw[AUTH_REFRESH_RAW];
    size_t raw_len = 0;
    const char *end = NULL;

    if (strlen(text) != AUTH_REFRESH_CHARS) return false;
    if (sodium_base642bin(raw, sizeof raw, text, AUTH_REFRESH_CHARS, NULL, &raw_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        raw_len != sizeof raw || end != text + AUTH_REFRESH_CHARS)
        return false;
    crypto_hash_sha256(hash, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
    return true;
}

/* A signed access token (heap, free()) or NULL. */
static char *auth__access_token(const nt_ctx *ctx, int64_t user_id, int64_t session_id)
{
    jwt_t *jwt = NULL;
    char *token = NULL;
    char sub[24];
    long now_s = (long)(nt_now_ms() / 1000);

    if (jwt_new(&jwt) != 0) return NULL;
    snprintf(sub, sizeof sub, "%" PRId64, user_id);
    if (jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant_int(jwt, "sid", (long)session_id) != 0 ||
        jwt_add_grant_int(jwt, "iat", now_s) != 0 ||
        jwt_add_grant_int(jwt, "exp", now_s + ctx->access_ttl_s) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_HS256, ctx->jwt_key, (int)sizeof ctx->jwt_key) != 0)
        goto done;
    token = jwt_encode_str(jwt);
done:
    jwt_free(jwt);
    return token;
}

/* Writes the token answer ({"user"?, "access_token", "refresh_token",
 * "expires_in"}) with `status`. */
static void auth__reply_tokens(nt_ctx *ctx, nt_reply *r, int status, const nt_user *u,
                               const char *access, const char *refresh)
{
    nt_jw w;

    nt_buf_reset(&r->body);
    nt_jw_init(&w, &r->body);
    nt_jw_obj(&w);
    if (u) {
        nt_jw_key(&w, "user");
        nt_view_user(&w, u, ctx->bus && nt_bus_online(ctx->bus, u->id), true);
    }
    nt_jw_kstr(&w, "access_token", access);
    nt_jw_kstr(&w, "refresh_token", refresh);
    nt_jw_kint(&w, "expires_in", ctx->access_ttl_s);
    nt_jw_obj_end(&w);
    if (nt_jw_error(&w)) {
        nt_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = status;
}

/* Starts a session for u and answers with its tokens. */
static void auth__start_session(nt_ctx *ctx, const nt_user *u, int status, nt_reply *r)
{
    char refresh[AUTH_REFRESH_CHARS + 1];
    uint8_t hash[32];
    nt_session sess;
    int64_t now = nt_now_ms();

    auth__new_refresh(refresh, hash);
    int rc = nt_store_session_create(ctx->store, u->id, hash, now + ctx->refresh_ttl_s * 1000, now,
                                     &sess);
    if (rc != 0) {
        nt_reply_store_error(r, rc, "session");
        return;
    }
    char *access = auth__access_token(ctx, u->id, sess.id);
    if (!access) {
        nt_reply_error(r, 500, "internal", "could not sign the access token");
        return;
    }
    auth__reply_tokens(ctx, r, status, u, access, refresh);
    free(access);
    sodium_memzero(refresh, sizeof refresh);
}

/* Reads the password field into pw (AUTH_PW_CAP bytes); false with a 400
 * filled when missing, not a string, or outside password_min..max bytes. */
static bool auth__password_field(nt_ctx *ctx, nt_reply *r, const nt_json *doc, char *pw,
                                 size_t *len)
{
    int min = ctx->limits.password_min > 0 ? ctx->limits.password_min : 8;
    int max = ctx->limits.password_max > 0 ? ctx->limits.password_max : 1024;
    if (max > AUTH_PW_CAP - 1) max = AUTH_PW_CAP - 1;

    if (!nt_field_str(r, doc, 0, "password", true, 0, 0, pw, AUTH_PW_CAP, NULL)) return false;
    *len = strlen(pw);
    if (*len < (size_t)min || *len > (size_t)max) {
        nt_reply_error(r, 400, "bad_request", "password must be %d..%d bytes", min, max);
        return false;
    }
    return true;
}

/* ---- handlers ---- */

void nt_auth_register(nt_ctx *ctx, const char *body, size_t len, nt_reply *r)
{
    nt_json doc;
    nt_json_tok toks[AUTH_TOKS];
    char email[NT_EMAIL_MAX], nickname[NT_NICK_MAX], gender[16], birth_date[16];
    char pw[AUTH_PW_CAP];
    char pw_hash[crypto_pwhash_STRBYTES];
    size_t pw_len = 0;
    bool has_gender, has_birth_date;

    if (sodium_init() < 0) {
        nt_reply_error(r, 500, "internal", "crypto library failed to start");
        return;
    }
    if (!nt_body_object(r, body, len, &doc, toks, AUTH_TOKS)) return;
    if (!nt_field_str(r, &doc, 0, "email", true, 0, 0, email, sizeof email, NULL)) return;
    if (!nt_valid_email(email)) {
        nt_reply_error(r, 400, "bad_request",
                       "email must be 3..254 bytes with one '@' and no spaces");
        return;
    }
    if (!auth__password_field(ctx, r, &doc, pw, &pw_len)) goto out;
    if (!nt_field_str(r, &doc, 0, "nickname", true, 3, 32, nickname, sizeof nickname, NULL))
        goto out;
    if (!nt_valid_nickname(nickname)) {
        nt_reply_error(r, 400, "bad_request",
                       "nickname must be 3..32 characters of A-Z a-z 0-9 _ . -");
        goto out;
    }
    if (!nt_field_str(r, &doc, 0, "gender", false, 0, 0, gender, sizeof gender, &has_gender))
        goto out;
    if (has_gender && !nt_valid_gender(gender)) {
        nt_reply_error(r, 400, "bad_request", "gender must be male, female or other");
        goto out;
    }
    if (!nt_field_str(r, &doc, 0, "birth_date", false, 0, 0, birth_date, sizeof birth_date,
                      &has_birth_date))
        goto out;
    if (has_birth_date && !nt_valid_birth_date(birth_date)) {
        nt_reply_error(r, 400, "bad_request",
                       "birth_date must be a calendar date YYYY-MM-DD, not in the future");
        goto out;
    }

    if (auth__hash_str(pw_hash, pw, pw_len, auth__ops(ctx), auth__mem(ctx)) != 0) {
        nt_reply_error(r, 500, "internal", "password hashing failed");
        goto out;
    }

    nt_user_new in = {
        .email = email,
        .nickname = nickname,
        .password_hash = pw_hash,
        .gender = has_gender ? gender : NULL,
        .birth_date = has_birth_date ? birth_date : NULL,
        .created_at = nt_now_ms(),
    };
    nt_user u;
    const char *conflict = NULL;
    int rc = nt_store_user_create(ctx->store, &in, &u, &conflict);
    if (rc == NT_STORE_ECONFLICT) {
        nt_reply_error(r, 409, "conflict", "%s is already taken", conflict ? conflict : "email");
        goto out;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        goto out;
    }

    /* Every new user joins the public lobby. The account exists already, so
     * a failure here is logged, not turned into a failed registration. */
    int64_t lobby_id;
    rc = nt_store_channel_by_title(ctx->store, "lobby", &lobby_id);
    if (rc == 0) rc = nt_store_member_add(ctx->store, lobby_id, u.id, NT_ROLE_MEMBER);
    if (rc == 0) { /* a newcomer starts with the lobby's past read, not unread */
        int64_t delivered, read;
        bool moved;
        rc = nt_store_mark(ctx->store, lobby_id, u.id, NT_MARK_READ, INT64_MAX, &delivered, &read,
                           &moved);
    }
    if (rc != 0 && rc != NT_STORE_ECONFLICT)
        nt_warn("auth: user %" PRId64 " could not join the lobby (store error %d)", u.id, rc);

    auth__start_session(ctx, &u, 201, r);
out:
    sodium_memzero(pw, sizeof pw);
}

static uint8_t auth__login_hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t auth__login_hash_once = PTHREAD_ONCE_INIT;

static void auth__login_hash_init(void)
{
    randombytes_buf(auth__login_hash_key, sizeof auth__login_hash_key);
}

/* The login limiter's key for a login: SipHash-2-4 of its ASCII-lowercased
 * bytes (email and nickname are both matched case-insensitively). Needs
 * sodium_init. */
static uint64_t auth__login_key(const char *login)
{
    char lower[NT_EMAIL_MAX];
    size_t n = 0;
    for (; login[n] && n < sizeof lower; n++)
        lower[n] = (char)(login[n] >= 'A' && login[n] <= 'Z' ? login[n] + ('a' - 'A') : login[n]);
    pthread_once(&auth__login_hash_once, auth__login_hash_init);
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const uint8_t *)lower, n, auth__login_hash_key);
    uint64_t key;
    memcpy(&key, out, sizeof key);
    return key;
}

void nt_auth_login(nt_ctx *ctx, const char *body, size_t len, nt_reply *r)
{
    nt_json doc;
    nt_json_tok toks[AUTH_TOKS];
    char login[NT_EMAIL_MAX];
    char pw[AUTH_PW_CAP];
    char pw_hash[crypto_pwhash_STRBYTES];
    char dummy[crypto_pwhash_STRBYTES];
    size_t pw_len = 0;
    nt_user u;
    uint64_t limit_key = 0;
    bool limit_taken = false, wrong = false;

    if (sodium_init() < 0) {
        nt_reply_error(r, 500, "internal", "crypto library failed to start");
        return;
    }
    if (!nt_body_object(r, body, len, &doc, toks, AUTH_TOKS)) return;
    if (!nt_field_str(r, &doc, 0, "login", true, 0, 0, login, sizeof login, NULL)) return;
    if (!nt_field_str(r, &doc, 0, "password", true, 0, 0, pw, sizeof pw, NULL)) goto out;
    pw_len = strlen(pw);

    /* Before any hashing: an account out of tries costs no Argon2id, and
     * the answer is the same whether the password was right. */
    if (ctx->login_limit) {
        uint32_t retry_ms;
        limit_key = auth__login_key(login);
        if (!nt_rate_table_take(ctx->login_limit, limit_key, nt_mono_ns(), &retry_ms)) {
            unsigned retry_s = nt_retry_after_s(retry_ms);
            nt_reply_error(r, 429, "rate_limited",
                           "too many failed logins for this account; retry in %u s", retry_s);
            snprintf(r->headers, sizeof r->headers, "Retry-After: %u\r\n", retry_s);
            goto out;
        }
        limit_taken = true;
    }

    /* Made before the lookup, so the one-time cost of creating it falls on
     * whichever login comes first, known user or not. */
    if (auth__dummy(ctx, dummy) != 0) {
        nt_reply_error(r, 500, "internal", "password hashing failed");
        goto out;
    }

    int rc = nt_store_user_for_login(ctx->store, login, &u, pw_hash, sizeof pw_hash);
    if (rc == NT_STORE_ENOTFOUND) {
        /* Spend what a real check costs, then fail the same way. */
        if (auth__hash_verify(dummy, pw, pw_len) == 0)
            nt_warn("auth: the dummy hash matched a password");
        nt_reply_error(r, 401, "unauthorized", "wrong login or password");
        wrong = true;
        goto out;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "user");
        goto out;
    }
    if (auth__hash_verify(pw_hash, pw, pw_len) != 0) {
        nt_reply_error(r, 401, "unauthorized", "wrong login or password");
        wrong = true;
        goto out;
    }
    auth__start_session(ctx, &u, 200, r);
out:
    /* Only a wrong guess keeps its token; a right one, or a failure of
     * ours (store, hashing), gives it back. */
    if (limit_taken && !wrong) nt_rate_table_give_back(ctx->login_limit, limit_key);
    sodium_memzero(pw, sizeof pw);
}

void nt_auth_refresh(nt_ctx *ctx, const char *body, size_t len, nt_reply *r)
{
    nt_json doc;
    nt_json_tok toks[AUTH_TOKS];
    char old_text[128];
    char new_text[AUTH_REFRESH_CHARS + 1];
    uint8_t old_hash[32], new_hash[32];
    nt_session sess;

    if (sodium_init() < 0) {
        nt_reply_error(r, 500, "internal", "crypto library failed to start");
        return;
    }
    if (!nt_body_object(r, body, len, &doc, toks, AUTH_TOKS)) return;
    /* A string too long to be ours is simply not ours: 401, not 400. */
    int tok = nt_json_get(&doc, 0, "refresh_token");
    if (nt_json_type_of(&doc, tok) == NT_JSON_STRING &&
        nt_json_str(&doc, tok, old_text, sizeof old_text) == -2) {
        nt_reply_error(r, 401, "unauthorized", "refresh token is invalid or expired");
        return;
    }
    if (!nt_field_str(r, &doc, 0, "refresh_token", true, 0, 0, old_text, sizeof old_text, NULL))
        return;
    if (!auth__refresh_hash(old_text, old_hash)) {
        nt_reply_error(r, 401, "unauthorized", "refresh token is invalid or expired");
        return;
    }

    int64_t now = nt_now_ms();
    auth__new_refresh(new_text, new_hash);
    int rc = nt_store_session_rotate(ctx->store, old_hash, new_hash,
                                     now + ctx->refresh_ttl_s * 1000, now, &sess);
    if (rc == NT_STORE_ENOTFOUND) {
        nt_reply_error(r, 401, "unauthorized", "refresh token is invalid or expired");
        goto out;
    }
    if (rc == NT_STORE_EREUSED) {
        nt_reply_error(r, 401, "unauthorized",
                       "refresh token was already used; the session is revoked");
        goto out;
    }
    if (rc != 0) {
        nt_reply_store_error(r, rc, "session");
        goto out;
    }
    char *access = auth__access_token(ctx, sess.user_id, sess.id);
    if (!access) {
        nt_reply_error(r, 500, "internal", "could not sign the access token");
        goto out;
    }
    auth__reply_tokens(ctx, r, 200, NULL, access, new_text);
    free(access);
out:
    sodium_memzero(new_text, sizeof new_text);
}

/*
 * Logout is idempotent: any well-formed body ({"refresh_token": string})
 * gets 204, whether the token named a live session, an ended one, or none
 * at all, so a client retrying a logout never sees an error and nobody can
 * probe which tokens exist. A malformed body is 400; a store failure is 503,
 * because then the session may still be alive and the client must retry.
 */
void nt_auth_logout(nt_ctx *ctx, const char *body, size_t len, nt_reply *r,
                    int64_t *revoked_session)
{
    nt_json doc;
    nt_json_tok toks[AUTH_TOKS];
    char text[128];
    uint8_t hash[32];
    nt_session sess;

    if (revoked_session) *revoked_session = 0;
    if (!nt_body_object(r, body, len, &doc, toks, AUTH_TOKS)) return;
    int tok = nt_json_get(&doc, 0, "refresh_token");
    bool too_long = nt_json_type_of(&doc, tok) == NT_JSON_STRING &&
                    nt_json_str(&doc, tok, text, sizeof text) == -2;
    if (!too_long &&
        !nt_field_str(r, &doc, 0, "refresh_token", true, 0, 0, text, sizeof text, NULL))
        return;

    if (!too_long && auth__refresh_hash(text, hash)) {
        int rc = nt_store_session_revoke(ctx->store, hash, &sess);
        if (rc == 0) {
            if (revoked_session) *revoked_session = sess.id;
        } else if (rc != NT_STORE_ENOTFOUND) {
            nt_reply_store_error(r, rc, "session");
            return;
        }
    }
    nt_buf_reset(&r->body);
    r->status = 204;
}

/* A positive decimal int64 with nothing around it. */
static bool auth__parse_id(const char *s, int64_t *out)
{
    if (!s || *s < '1' || *s > '9') return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v <= 0) return false;
    *out = v;
    return true;
}

int nt_auth_verify(nt_ctx *ctx, const char *token, nt_caller *out)
{
    jwt_t *jwt = NULL;
    int rc = -1;

    if (!token || token[0] == '\0' || strnlen(token, AUTH_TOKEN_MAX + 1) > AUTH_TOKEN_MAX)
        return -1;
    if (jwt_decode(&jwt, token, ctx->jwt_key, (int)sizeof ctx->jwt_key) != 0 || !jwt)
        goto done; /* bad signature or not a JWT */
    /* libjwt takes the algorithm from the token's own header: only ours
     * is acceptable (no "none", no other family). */
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) goto done;

    int64_t user_id;
    if (!auth__parse_id(jwt_get_grant(jwt, "sub"), &user_id)) goto done;
    errno = 0;
    long session_id = jwt_get_grant_int(jwt, "sid");
    if (errno != 0 || session_id <= 0) goto done;
    errno = 0;
    long exp = jwt_get_grant_int(jwt, "exp");
    if (errno != 0 || exp <= 0 || nt_now_ms() / 1000 >= exp) goto done;
    int active = nt_store_session_active(ctx->store, session_id);
    if (active == NT_STORE_EUNAVAILABLE) {
        rc = -2; /* the token may be fine: we cannot tell right now */
        goto done;
    }
    if (active != 0) goto done;

    out->user_id = user_id;
    out->session_id = session_id;
    rc = 0;
done:
    if (jwt) jwt_free(jwt);
    return rc;
}

static int auth__write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * O_EXCL makes creation race-free between two processes starting on one
 * data dir: exactly one creates the key. (The other may read it while it is
 * being written and then fails with -EINVAL instead of using a short key;
 * restarting it is enough.)
 */
int nt_auth_load_key(nt_ctx *ctx, const char *path)
{
    uint8_t key[33];
    int rc = 0;

    if (sodium_init() < 0) return -EIO;

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        randombytes_buf(key, 32);
        rc = auth__write_all(fd, key, 32);
        if (rc == 0 && fsync(fd) != 0) rc = -errno;
        if (close(fd) != 0 && rc == 0) rc = -errno;
        if (rc != 0) {
            unlink(path); /* a short key file would fail every later start */
            goto done;
        }
        memcpy(ctx->jwt_key, key, 32);
        goto done;
    }
    if (errno != EEXIST) return -errno;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        nt_warn("auth: key file %s is readable by others (mode %o)", path,
                (unsigned)(st.st_mode & 0777));
    size_t got = 0;
    while (got < sizeof key) {
        ssize_t n = read(fd, key + got, sizeof key - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (rc == 0 && got != 32)
        rc = -EINVAL; /* a key is exactly 32 bytes; anything else is not ours */
    if (rc == 0) memcpy(ctx->jwt_key, key, 32);
done:
    sodium_memzero(key, sizeof key);
    return rc;
}
