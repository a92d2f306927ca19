/*
 * Auth through its public handlers, on a real temporary SQLite store and the
 * in-process bus: registration and its validation, login, refresh-token
 * rotation and reuse detection, logout, and the access-token check against
 * expiry, tampering and garbage. Also the reply and field helpers of api.c,
 * the signing-key file, and users.c (profiles, PATCH, search, presence, the
 * ready frame) on the accounts made here. Argon2id runs at libsodium's minimum cost so the
 * suite stays fast.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "pg_test_server.h"
#include "common/json.h"
#include "services/services.h"

static char tmp_dir[64];

/* One handler answer, kept as text for the checks. */
typedef struct answer {
    int status;
    char code[32];
    char message[256];
    char body[4096];
} answer;

static void answer_take(answer *a, nt_reply *r)
{
    a->status = r->status;
    snprintf(a->code, sizeof a->code, "%s", r->code);
    snprintf(a->message, sizeof a->message, "%s", r->message);
    snprintf(a->body, sizeof a->body, "%s", r->body.len ? nt_buf_cstr(&r->body) : "");
    nt_reply_free(r);
}

typedef void (*body_handler)(nt_ctx *ctx, const char *body, size_t len, nt_reply *r);

static answer call(nt_ctx *ctx, body_handler fn, const char *body)
{
    nt_reply r;
    answer a;
    memset(&r, 0, sizeof r);
    fn(ctx, body, strlen(body), &r);
    answer_take(&a, &r);
    return a;
}

static answer logout(nt_ctx *ctx, const char *body, int64_t *revoked)
{
    nt_reply r;
    answer a;
    memset(&r, 0, sizeof r);
    nt_auth_logout(ctx, body, strlen(body), &r, revoked);
    answer_take(&a, &r);
    return a;
}

/* A string member of the answer, by path "key" or "obj.key", into out. */
static bool json_get_str(const char *text, const char *obj, const char *key, char *out, size_t cap)
{
    nt_json doc;
    nt_json_tok toks[128];
    if (nt_json_parse(&doc, text, strlen(text), toks, 128) != 0) return false;
    int at = 0;
    if (obj && (at = nt_json_get(&doc, 0, obj)) < 0) return false;
    return nt_json_str(&doc, nt_json_get(&doc, at, key), out, cap) >= 0;
}

static int64_t json_get_int(const char *text, const char *obj, const char *key)
{
    nt_json doc;
    nt_json_tok toks[128];
    int64_t v = -1;
    if (nt_json_parse(&doc, text, strlen(text), toks, 128) != 0) return -1;
    int at = 0;
    if (obj && (at = nt_json_get(&doc, 0, obj)) < 0) return -1;
    if (nt_json_int(&doc, nt_json_get(&doc, at, key), &v) != 0) return -1;
    return v;
}

/* A 400 bad_request whose message names the field. */
static bool bad_field(const answer *a, const char *field)
{
    return a->status == 400 && strcmp(a->code, "bad_request") == 0 &&
           strstr(a->message, field) != NULL && strstr(a->body, "\"bad_request\"") != NULL;
}

/* ---- api.c helpers ---- */

static void test_api_helpers(void)
{
    nt_reply r;
    memset(&r, 0, sizeof r);
    nt_reply_error(&r, 404, "not_found", "chat %d not found", 5);
    CHECK_EQ_INT(r.status, 404);
    CHECK_STR_EQ(r.code, "not_found");
    CHECK_STR_EQ(nt_buf_cstr(&r.body),
                 "{\"error\":{\"code\":\"not_found\",\"message\":\"chat 5 not found\"}}");
    /* A second error replaces the first body entirely. */
    nt_reply_error(&r, 400, "bad_request", "say \"%s\"", "hi");
    CHECK_STR_EQ(nt_buf_cstr(&r.body),
                 "{\"error\":{\"code\":\"bad_request\",\"message\":\"say \\\"hi\\\"\"}}");

    static const struct {
        int rc, status;
        const char *code;
    } map[] = {
        {NT_STORE_ENOTFOUND, 404, "not_found"},
        {NT_STORE_ECONFLICT, 409, "conflict"},
        {NT_STORE_EFORBIDDEN, 403, "forbidden"},
        {NT_STORE_EUNAVAILABLE, 503, "unavailable"},
        {NT_STORE_EREUSED, 401, "unauthorized"},
        {NT_STORE_EINVAL, 400, "bad_request"},
        {-999, 500, "internal"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        nt_reply_store_error(&r, map[i].rc, "chat");
        CHECK_EQ_INT(r.status, map[i].status);
        CHECK_STR_EQ(r.code, map[i].code);
        CHECK(strstr(r.message, "chat") != NULL);
    }

    nt_json doc;
    nt_json_tok toks[32];
    CHECK(!nt_body_object(&r, "[1]", 3, &doc, toks, 32));
    CHECK_EQ_INT(r.status, 400);
    CHECK(!nt_body_object(&r, "{", 1, &doc, toks, 32));
    CHECK_EQ_INT(r.status, 400);
    CHECK(!nt_body_object(&r, "", 0, &doc, toks, 32));
    CHECK(!nt_body_object(&r, "{\"a\":[1,2,3,4,5,6,7,8]}", 23, &doc, toks, 4));
    CHECK_EQ_INT(r.status, 400);

    const char *body = "{\"s\":\"h\\u00e9llo\",\"n\":5,\"z\":null,\"t\":true,\"f\":1.5,\"big\":7}";
    CHECK(nt_body_object(&r, body, strlen(body), &doc, toks, 32));
    char out[16];
    bool present = true;
    CHECK(nt_field_str(&r, &doc, 0, "s", true, 1, 5, out, sizeof out, &present));
    CHECK(present);
    CHECK_STR_EQ(out, "h\xc3\xa9llo"); /* 5 code points, 6 bytes */
    CHECK(!nt_field_str(&r, &doc, 0, "s", true, 1, 4, out, sizeof out, &present));
    CHECK(strstr(r.message, "s ") == r.message);
    CHECK(!nt_field_str(&r, &doc, 0, "s", true, 6, 10, out, sizeof out, &present));
    CHECK(!nt_field_str(&r, &doc, 0, "s", true, 0, 0, out, 4, &present)); /* cap */
    CHECK(!nt_field_str(&r, &doc, 0, "n", true, 0, 0, out, sizeof out, &present));
    CHECK_STR_EQ(r.message, "n must be a string");
    CHECK(!nt_field_str(&r, &doc, 0, "missing", true, 0, 0, out, sizeof out, &present));
    CHECK_STR_EQ(r.message, "missing is required");
    CHECK(nt_field_str(&r, &doc, 0, "missing", false, 0, 0, out, sizeof out, &present));
    CHECK(!present);
    /* Explicit null is absent. */
    CHECK(nt_field_str(&r, &doc, 0, "z", false, 0, 0, out, sizeof out, &present));
    CHECK(!present);
    CHECK(!nt_field_str(&r, &doc, 0, "z", true, 0, 0, out, sizeof out, &present));

    int64_t v = 0;
    CHECK(nt_field_int(&r, &doc, 0, "n", true, 1, 10, &v, &present));
    CHECK(present);
    CHECK_EQ_INT(v, 5);
    CHECK(!nt_field_int(&r, &doc, 0, "big", true, 1, 6, &v, &present));
    CHECK(strstr(r.message, "big") != NULL);
    CHECK(!nt_field_int(&r, &doc, 0, "f", true, 0, 10, &v, &present));
    CHECK_STR_EQ(r.message, "f must be an integer");
    CHECK(!nt_field_int(&r, &doc, 0, "s", true, 0, 10, &v, &present));
    CHECK(!nt_field_int(&r, &doc, 0, "t", true, 0, 10, &v, &present));
    CHECK(nt_field_int(&r, &doc, 0, "z", false, 0, 10, &v, &present));
    CHECK(!present);
    nt_reply_free(&r);
}

/* ---- the key file ---- */

static void test_load_key(nt_ctx *ctx)
{
    char path[128];
    snprintf(path, sizeof path, "%s/jwt.key", tmp_dir);

    CHECK_EQ_INT(nt_auth_load_key(ctx, path), 0);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_size, 32);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    uint8_t first[32];
    memcpy(first, ctx->jwt_key, 32);

    nt_ctx other = *ctx;
    memset(other.jwt_key, 0, 32);
    CHECK_EQ_INT(nt_auth_load_key(&other, path), 0);
    CHECK(memcmp(other.jwt_key, first, 32) == 0);

    char bad[128];
    snprintf(bad, sizeof bad, "%s/short.key", tmp_dir);
    int fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ_INT(write(fd, "0123456789", 10), 10);
    close(fd);
    CHECK_EQ_INT(nt_auth_load_key(&other, bad), -EINVAL);
    snprintf(bad, sizeof bad, "%s/long.key", tmp_dir);
    fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char big[40] = {0};
    CHECK_EQ_INT(write(fd, big, sizeof big), (int)sizeof big);
    close(fd);
    CHECK_EQ_INT(nt_auth_load_key(&other, bad), -EINVAL);
    CHECK_EQ_INT(nt_auth_load_key(&other, "/nonexistent-dir/x/jwt.key"), -ENOENT);
    CHECK(memcmp(other.jwt_key, first, 32) == 0); /* failures leave the key alone */
}

/* ---- register ---- */

static void test_register(nt_ctx *ctx)
{
    answer a = call(ctx, nt_auth_register,
                    "{\"email\":\"Alice@Example.com\",\"password\":\"correct horse\","
                    "\"nickname\":\"alice\",\"gender\":\"female\",\"birth_date\":\"2000-02-29\"}");
    CHECK_EQ_INT(a.status, 201);
    char s[512];
    CHECK(json_get_str(a.body, "user", "nickname", s, sizeof s) && strcmp(s, "alice") == 0);
    CHECK(json_get_str(a.body, "user", "email", s, sizeof s) &&
          strcmp(s, "Alice@Example.com") == 0);
    CHECK(json_get_str(a.body, "user", "gender", s, sizeof s) && strcmp(s, "female") == 0);
    CHECK(json_get_str(a.body, "user", "birth_date", s, sizeof s) && strcmp(s, "2000-02-29") == 0);
    CHECK(json_get_str(a.body, NULL, "access_token", s, sizeof s) && strlen(s) > 20);
    CHECK(json_get_str(a.body, NULL, "refresh_token", s, sizeof s) && strlen(s) == 43);
    CHECK_EQ_INT(json_get_int(a.body, NULL, "expires_in"), 900);
    int64_t alice_id = json_get_int(a.body, "user", "id");
    CHECK(alice_id > 0);
    CHECK(strstr(a.body, "password") == NULL);

    /* The new user is in the lobby. */
    int64_t lobby = 0;
    int role = -1;
    CHECK_EQ_INT(nt_store_channel_by_title(ctx->store, "lobby", &lobby), 0);
    CHECK_EQ_INT(nt_store_member_role(ctx->store, lobby, alice_id, &role), 0);
    CHECK_EQ_INT(role, NT_ROLE_MEMBER);

    /* Optional fields may be null or left out. */
    a = call(ctx, nt_auth_register,
             "{\"email\":\"bob@example.com\",\"password\":\"12345678\",\"nickname\":\"Bob.the-1_\","
             "\"gender\":null,\"birth_date\":null,\"unknown\":[1,{\"x\":2}]}");
    CHECK_EQ_INT(a.status, 201);
    CHECK(strstr(a.body, "\"gender\":null,\"birth_date\":null") != NULL);

    /* Duplicates, case-insensitively. */
    a = call(ctx, nt_auth_register,
             "{\"email\":\"ALICE@example.COM\",\"password\":\"12345678\",\"nickname\":\"alice2\"}");
    CHECK_EQ_INT(a.status, 409);
    CHECK_STR_EQ(a.code, "conflict");
    CHECK(strstr(a.message, "email") != NULL);
    a = call(ctx, nt_auth_register,
             "{\"email\":\"other@example.com\",\"password\":\"12345678\",\"nickname\":\"ALICE\"}");
    CHECK_EQ_INT(a.status, 409);
    CHECK(strstr(a.message, "nickname") != NULL);

    /* Each bad field: 400 naming it. */
    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":5,\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"nope\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"a@\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"@ab\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"a@b@c\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"c arol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"c\\tarol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\"}", "email"},
        {"{\"email\":\"carol@x.io\",\"nickname\":\"carol\"}", "password"},
        {"{\"email\":\"carol@x.io\",\"password\":12345678,\"nickname\":\"carol\"}", "password"},
        {"{\"email\":\"carol@x.io\",\"password\":\"1234567\",\"nickname\":\"carol\"}", "password"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\"}", "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"ca\"}", "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"car ol\"}",
         "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"car\xc3\xa9l\"}",
         "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":"
         "\"a23456789012345678901234567890123\"}",
         "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":[]}", "nickname"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"gender\":\"robot\"}",
         "gender"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"gender\":1}",
         "gender"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"birth_date\":\"2001-02-29\"}",
         "birth_date"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"birth_date\":\"2001-13-01\"}",
         "birth_date"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"birth_date\":\"1990-1-1\"}",
         "birth_date"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"birth_date\":\"2999-01-01\"}",
         "birth_date"},
        {"{\"email\":\"carol@x.io\",\"password\":\"12345678\",\"nickname\":\"carol\","
         "\"birth_date\":19900101}",
         "birth_date"},
        {"[]", "body"},
        {"{\"email\":", "body"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = call(ctx, nt_auth_register, bad[i].body);
        if (!bad_field(&a, bad[i].field))
            fprintf(stderr, "  case %zu: %d %s %s\n", i, a.status, a.code, a.message);
        CHECK(bad_field(&a, bad[i].field));
    }

    /* Password length limits are bytes: 1024 passes, 1025 does not, and a
     * 255-byte email is too long. */
    char body[2048];
    char pw[1026];
    memset(pw, 'p', sizeof pw);
    pw[1025] = '\0';
    snprintf(body, sizeof body,
             "{\"email\":\"carol@x.io\",\"password\":\"%s\",\"nickname\":\"carol\"}", pw);
    a = call(ctx, nt_auth_register, body);
    CHECK(bad_field(&a, "password"));
    pw[1024] = '\0';
    snprintf(body, sizeof body,
             "{\"email\":\"carol@x.io\",\"password\":\"%s\",\"nickname\":\"carol\"}", pw);
    a = call(ctx, nt_auth_register, body);
    CHECK_EQ_INT(a.status, 201);
    char email[256];
    memset(email, 'e', 255);
    email[0] = 'x';
    email[1] = '@';
    email[255] = '\0';
    snprintf(body, sizeof body,
             "{\"email\":\"%s\",\"password\":\"12345678\",\"nickname\":\"dave\"}", email);
    a = call(ctx, nt_auth_register, body);
    CHECK(bad_field(&a, "email"));
    email[254] = '\0';
    snprintf(body, sizeof body,
             "{\"email\":\"%s\",\"password\":\"12345678\",\"nickname\":\"dave\"}", email);
    a = call(ctx, nt_auth_register, body);
    CHECK_EQ_INT(a.status, 201);
}

/* ---- login, verify, refresh, logout ---- */

typedef struct session_tokens {
    char access[1024];
    char refresh[64];
    int64_t user_id;
} session_tokens;

static bool login_as(nt_ctx *ctx, const char *login, const char *password, session_tokens *t)
{
    char body[512];
    snprintf(body, sizeof body, "{\"login\":\"%s\",\"password\":\"%s\"}", login, password);
    answer a = call(ctx, nt_auth_login, body);
    if (a.status != 200) return false;
    t->user_id = json_get_int(a.body, "user", "id");
    return json_get_str(a.body, NULL, "access_token", t->access, sizeof t->access) &&
           json_get_str(a.body, NULL, "refresh_token", t->refresh, sizeof t->refresh);
}

static answer refresh(nt_ctx *ctx, const char *token, session_tokens *t)
{
    char body[256];
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", token);
    answer a = call(ctx, nt_auth_refresh, body);
    if (a.status == 200 && t) {
        json_get_str(a.body, NULL, "access_token", t->access, sizeof t->access);
        json_get_str(a.body, NULL, "refresh_token", t->refresh, sizeof t->refresh);
    }
    return a;
}

static void test_login(nt_ctx *ctx)
{
    session_tokens t, t2;
    nt_caller c;

    CHECK(login_as(ctx, "alice@EXAMPLE.com", "correct horse", &t));
    CHECK(t.user_id > 0);
    CHECK_EQ_INT(nt_auth_verify(ctx, t.access, &c), 0);
    CHECK_EQ_INT(c.user_id, t.user_id);
    CHECK(c.session_id > 0);

    CHECK(login_as(ctx, "Alice", "correct horse", &t2));
    CHECK_EQ_INT(t2.user_id, t.user_id);
    nt_caller c2;
    CHECK_EQ_INT(nt_auth_verify(ctx, t2.access, &c2), 0);
    CHECK(c2.session_id != c.session_id); /* one session per login */

    answer a = call(ctx, nt_auth_login, "{\"login\":\"alice\",\"password\":\"wrong horse\"}");
    CHECK_EQ_INT(a.status, 401);
    CHECK_STR_EQ(a.code, "unauthorized");
    char wrong_pw_msg[256];
    snprintf(wrong_pw_msg, sizeof wrong_pw_msg, "%s", a.message);
    a = call(ctx, nt_auth_login, "{\"login\":\"nobody\",\"password\":\"correct horse\"}");
    CHECK_EQ_INT(a.status, 401);
    CHECK_STR_EQ(a.code, "unauthorized");
    CHECK_STR_EQ(a.message, wrong_pw_msg); /* the answer does not tell which */
    a = call(ctx, nt_auth_login, "{\"login\":\"\",\"password\":\"\"}");
    CHECK_EQ_INT(a.status, 401);
    a = call(ctx, nt_auth_login, "{\"login\":\"alice\"}");
    CHECK(bad_field(&a, "password"));
    a = call(ctx, nt_auth_login, "{\"login\":7,\"password\":\"x\"}");
    CHECK(bad_field(&a, "login"));
}

static void test_refresh(nt_ctx *ctx)
{
    session_tokens t, r1, r2;
    nt_caller c;
    char first[64];

    CHECK(login_as(ctx, "bob@example.com", "12345678", &t));
    snprintf(first, sizeof first, "%s", t.refresh);

    answer a = refresh(ctx, first, &r1);
    CHECK_EQ_INT(a.status, 200);
    CHECK(strcmp(r1.refresh, first) != 0);
    CHECK_EQ_INT(json_get_int(a.body, NULL, "expires_in"), 900);
    CHECK(strstr(a.body, "\"user\"") == NULL);
    CHECK_EQ_INT(nt_auth_verify(ctx, r1.access, &c), 0);
    CHECK_EQ_INT(c.user_id, t.user_id);

    a = refresh(ctx, r1.refresh, &r2);
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_INT(nt_auth_verify(ctx, r2.access, &c), 0);

    /* Reusing the first token: 401, and the whole session is revoked, so
     * the newest refresh token and the access tokens stop working too. */
    a = refresh(ctx, first, NULL);
    CHECK_EQ_INT(a.status, 401);
    CHECK_STR_EQ(a.code, "unauthorized");
    a = refresh(ctx, r2.refresh, NULL);
    CHECK_EQ_INT(a.status, 401);
    CHECK(nt_auth_verify(ctx, r2.access, &c) != 0);
    CHECK(nt_auth_verify(ctx, t.access, &c) != 0);

    /* Not a token of ours at all. */
    a = refresh(ctx, "garbage", NULL);
    CHECK_EQ_INT(a.status, 401);
    a = refresh(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL);
    CHECK_EQ_INT(a.status, 401);
    a = call(ctx, nt_auth_refresh, "{\"refresh_token\":5}");
    CHECK(bad_field(&a, "refresh_token"));
    a = call(ctx, nt_auth_refresh, "{}");
    CHECK(bad_field(&a, "refresh_token"));
}

static void test_logout(nt_ctx *ctx)
{
    session_tokens t, other;
    nt_caller c, oc;
    int64_t revoked = -1;
    char body[256];

    CHECK(login_as(ctx, "alice", "correct horse", &t));
    CHECK(login_as(ctx, "alice", "correct horse", &other));
    CHECK_EQ_INT(nt_auth_verify(ctx, t.access, &c), 0);
    CHECK_EQ_INT(nt_auth_verify(ctx, other.access, &oc), 0);

    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", t.refresh);
    answer a = logout(ctx, body, &revoked);
    CHECK_EQ_INT(a.status, 204);
    CHECK_STR_EQ(a.body, "");
    CHECK_EQ_INT(revoked, c.session_id);
    /* At once, not at expiry; the other session is untouched. */
    CHECK(nt_auth_verify(ctx, t.access, &c) != 0);
    CHECK_EQ_INT(nt_auth_verify(ctx, other.access, &oc), 0);
    a = refresh(ctx, t.refresh, NULL);
    CHECK_EQ_INT(a.status, 401);

    /* Idempotent for any well-formed body; 400 for a malformed one. (The
     * store may name the already-ended session again: closing its sockets
     * twice is harmless.) */
    a = logout(ctx, body, &revoked);
    CHECK_EQ_INT(a.status, 204);
    CHECK(revoked == 0 || revoked == c.session_id);
    a = logout(ctx, "{\"refresh_token\":\"garbage\"}", &revoked);
    CHECK_EQ_INT(a.status, 204);
    CHECK_EQ_INT(revoked, 0);
    a = logout(ctx, "{}", &revoked);
    CHECK(bad_field(&a, "refresh_token"));
    a = logout(ctx, "nope", NULL);
    CHECK_EQ_INT(a.status, 400);
}

/* base64url without padding, for hand-made tokens. */
static void b64url(const char *in, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, (const unsigned char *)in, strlen(in),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void test_verify(nt_ctx *ctx)
{
    session_tokens t;
    nt_caller c;

    CHECK(login_as(ctx, "bob.the-1_", "12345678", &t));
    CHECK_EQ_INT(nt_auth_verify(ctx, t.access, &c), 0);

    /* Expired: issued with a negative lifetime. */
    session_tokens old;
    ctx->access_ttl_s = -1;
    CHECK(login_as(ctx, "bob.the-1_", "12345678", &old));
    ctx->access_ttl_s = 900;
    CHECK(nt_auth_verify(ctx, old.access, &c) != 0);

    /* Tampered: one character of the payload, or of the signature. */
    char bad[2048];
    snprintf(bad, sizeof bad, "%s", t.access);
    char *dot1 = strchr(bad, '.');
    char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    CHECK(dot1 && dot2);
    if (dot1 && dot2) {
        dot1[3] = dot1[3] == 'A' ? 'B' : 'A';
        CHECK(nt_auth_verify(ctx, bad, &c) != 0);
        snprintf(bad, sizeof bad, "%s", t.access);
        size_t n = strlen(bad);
        bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
        CHECK(nt_auth_verify(ctx, bad, &c) != 0);

        /* alg "none" with the real payload and no signature. */
        char header[128], payload[1024];
        const char *p1 = strchr(t.access, '.');
        const char *p2 = strchr(p1 + 1, '.');
        b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", header, sizeof header);
        snprintf(payload, sizeof payload, "%.*s", (int)(p2 - p1 - 1), p1 + 1);
        snprintf(bad, sizeof bad, "%s.%s.", header, payload);
        CHECK(nt_auth_verify(ctx, bad, &c) != 0);
    }

    /* Signed with another key. */
    nt_ctx other = *ctx;
    other.jwt_key[0] ^= 1;
    session_tokens foreign;
    CHECK(login_as(&other, "bob.the-1_", "12345678", &foreign));
    CHECK(nt_auth_verify(ctx, foreign.access, &c) != 0);
    CHECK_EQ_INT(nt_auth_verify(&other, foreign.access, &c), 0);

    /* Garbage. */
    CHECK(nt_auth_verify(ctx, "", &c) != 0);
    CHECK(nt_auth_verify(ctx, NULL, &c) != 0);
    CHECK(nt_auth_verify(ctx, "abc", &c) != 0);
    CHECK(nt_auth_verify(ctx, "a.b.c", &c) != 0);
    CHECK(nt_auth_verify(ctx, "....", &c) != 0);
    CHECK(nt_auth_verify(ctx, t.refresh, &c) != 0);

    /* Still fine after all that. */
    CHECK_EQ_INT(nt_auth_verify(ctx, t.access, &c), 0);
}

/* ---- users.c, on the accounts made above ---- */

static answer patch_me(nt_ctx *ctx, const nt_caller *c, const char *body)
{
    nt_reply r;
    answer a;
    memset(&r, 0, sizeof r);
    nt_users_update_me(ctx, c, body, strlen(body), &r);
    answer_take(&a, &r);
    return a;
}

static answer search(nt_ctx *ctx, const nt_caller *c, const char *query)
{
    nt_reply r;
    answer a;
    memset(&r, 0, sizeof r);
    nt_users_search(ctx, c, query, &r);
    answer_take(&a, &r);
    return a;
}

/* What the delivery handler saw. */
static char delivered[512];
static int64_t delivered_to;
static int ndelivered;

static void on_delivery(void *arg, nt_shared *frame, const int64_t *user_ids, size_t n)
{
    snprintf(delivered, sizeof delivered, "%.*s", (int)frame->len, frame->data);
    delivered_to = n > 0 ? user_ids[0] : 0;
    ndelivered++;
}

static void test_users(nt_ctx *ctx)
{
    session_tokens alice_t, bob_t;
    nt_caller alice, bob;
    nt_reply r;
    answer a;

    CHECK(login_as(ctx, "alice", "correct horse", &alice_t));
    CHECK(login_as(ctx, "bob.the-1_", "12345678", &bob_t));
    CHECK_EQ_INT(nt_auth_verify(ctx, alice_t.access, &alice), 0);
    CHECK_EQ_INT(nt_auth_verify(ctx, bob_t.access, &bob), 0);

    memset(&r, 0, sizeof r);
    nt_users_me(ctx, &alice, &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"email\":\"Alice@Example.com\"") != NULL);
    CHECK(strstr(a.body, "\"online\":false") != NULL);

    memset(&r, 0, sizeof r);
    nt_users_get(ctx, &bob, alice.user_id, &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"nickname\":\"alice\"") != NULL);
    CHECK(strstr(a.body, "email") == NULL);
    memset(&r, 0, sizeof r);
    nt_users_get(ctx, &bob, 999999, &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 404);
    CHECK_STR_EQ(a.code, "not_found");

    memset(&r, 0, sizeof r);
    nt_users_by_nickname(ctx, &bob, "alice", &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_INT(json_get_int(a.body, NULL, "id"), alice.user_id);
    memset(&r, 0, sizeof r);
    nt_users_by_nickname(ctx, &bob, "nobody", &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 404);
    memset(&r, 0, sizeof r);
    nt_users_by_nickname(ctx, &bob, "no body", &r);
    answer_take(&a, &r);
    CHECK_EQ_INT(a.status, 404);

    /* PATCH: each field, clearing, and the errors. */
    a = patch_me(ctx, &alice,
                 "{\"bio\":\"hello \\\"world\\\"\",\"avatar_url\":\"https://img.example/a.png\","
                 "\"gender\":\"other\",\"birth_date\":\"1999-12-31\"}");
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"bio\":\"hello \\\"world\\\"\"") != NULL);
    CHECK(strstr(a.body, "\"avatar_url\":\"https://img.example/a.png\"") != NULL);
    CHECK(strstr(a.body, "\"gender\":\"other\",\"birth_date\":\"1999-12-31\"") != NULL);
    CHECK(strstr(a.body, "\"email\"") != NULL);
    a = patch_me(ctx, &alice, "{\"gender\":null,\"birth_date\":null,\"avatar_url\":\"\"}");
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"avatar_url\":\"\",\"gender\":null,\"birth_date\":null") != NULL);
    CHECK(strstr(a.body, "\"bio\":\"hello") != NULL); /* untouched */
    a = patch_me(ctx, &alice, "{\"nickname\":\"alice_b\"}");
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"nickname\":\"alice_b\"") != NULL);
    a = patch_me(ctx, &alice, "{\"nickname\":\"BOB.the-1_\"}");
    CHECK_EQ_INT(a.status, 409);
    CHECK(strstr(a.message, "nickname") != NULL);
    a = patch_me(ctx, &alice, "{\"nickname\":\"alice\"}");
    CHECK_EQ_INT(a.status, 200);

    /* bio: 500 code points (1000 bytes) pass, 501 do not. */
    char body[4096];
    size_t at = (size_t)snprintf(body, sizeof body, "{\"bio\":\"");
    for (int i = 0; i < 500; i++) {
        memcpy(body + at, "\xc3\xa9", 2);
        at += 2;
    }
    snprintf(body + at, sizeof body - at, "\"}");
    a = patch_me(ctx, &alice, body);
    CHECK_EQ_INT(a.status, 200);
    snprintf(body + at, sizeof body - at, "x\"}");
    a = patch_me(ctx, &alice, body);
    CHECK(bad_field(&a, "bio"));

    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{\"nickname\":\"a b c\"}", "nickname"},
        {"{\"nickname\":\"ab\"}", "nickname"},
        {"{\"nickname\":12}", "nickname"},
        {"{\"bio\":false}", "bio"},
        {"{\"avatar_url\":\"ftp://x.example/a\"}", "avatar_url"},
        {"{\"avatar_url\":\"https://x.example/a b\"}", "avatar_url"},
        {"{\"avatar_url\":\"https://\"}", "avatar_url"},
        {"{\"avatar_url\":\"javascript:alert(1)\"}", "avatar_url"},
        {"{\"gender\":\"\"}", "gender"},
        {"{\"gender\":\"cat\"}", "gender"},
        {"{\"birth_date\":\"2023-02-29\"}", "birth_date"},
        {"{\"birth_date\":\"\"}", "birth_date"},
        {"[1]", "body"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = patch_me(ctx, &alice, bad[i].body);
        if (!bad_field(&a, bad[i].field))
            fprintf(stderr, "  patch case %zu: %d %s %s\n", i, a.status, a.code, a.message);
        CHECK(bad_field(&a, bad[i].field));
    }
    /* An avatar_url over url_max bytes. */
    at = (size_t)snprintf(body, sizeof body, "{\"avatar_url\":\"https://x.example/");
    memset(body + at, 'a', 1020);
    snprintf(body + at + 1020, sizeof body - at - 1020, "\"}");
    a = patch_me(ctx, &alice, body);
    CHECK(bad_field(&a, "avatar_url"));

    /* Search: prefix, case-insensitive, paged by after_id. */
    a = search(ctx, &bob, "q=AL");
    CHECK_EQ_INT(a.status, 200);
    CHECK(strncmp(a.body, "{\"users\":[{\"id\":", 16) == 0);
    CHECK(strstr(a.body, "\"nickname\":\"alice\"") != NULL);
    CHECK(strstr(a.body, "email") == NULL);
    a = search(ctx, &bob, "q=b&limit=1");
    CHECK_EQ_INT(a.status, 200);
    char after[64];
    snprintf(after, sizeof after, "q=b&limit=1&after_id=%lld", (long long)bob.user_id);
    a = search(ctx, &bob, after);
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"nickname\":\"Bob.the-1_\"") == NULL);
    a = search(ctx, &bob, "q=zzzz");
    CHECK_STR_EQ(a.body, "{\"users\":[]}");
    static const char *bad_queries[][2] = {
        {"", "q"},
        {"limit=5", "q"},
        {"q=", "q"},
        {"q=a%20b", "q"},
        {"q=al&limit=0", "limit"},
        {"q=al&limit=201", "limit"},
        {"q=al&limit=x", "limit"},
        {"q=al&limit=5x", "limit"},
        {"q=al&after_id=-1", "after_id"},
        {"q=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "q"},
    };
    for (size_t i = 0; i < sizeof bad_queries / sizeof bad_queries[0]; i++) {
        a = search(ctx, &bob, bad_queries[i][0]);
        if (!bad_field(&a, bad_queries[i][1]))
            fprintf(stderr, "  search case %zu: %d %s %s\n", i, a.status, a.code, a.message);
        CHECK(bad_field(&a, bad_queries[i][1]));
    }

    /* Presence goes to direct-chat partners; going offline stores last_seen. */
    nt_chat direct;
    bool created = false;
    CHECK_EQ_INT(nt_store_chat_direct(ctx->store, alice.user_id, bob.user_id, 1, &direct, &created),
                 0);
    nt_chat_free(&direct);
    nt_bus_set_delivery_handler(ctx->bus, on_delivery, NULL);
    nt_bus_conn_up(ctx->bus, bob.user_id);
    ndelivered = 0;
    nt_users_presence(ctx, alice.user_id, true);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
    CHECK_EQ_INT(ndelivered, 1);
    CHECK_EQ_INT(delivered_to, bob.user_id);
    char expect[256];
    snprintf(expect, sizeof expect,
             "{\"type\":\"presence\",\"user_id\":%lld,\"online\":true,\"last_seen\":null}",
             (long long)alice.user_id);
    CHECK_STR_EQ(delivered, expect);
    nt_users_presence(ctx, alice.user_id, false);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
    CHECK_EQ_INT(ndelivered, 2);
    nt_user u;
    CHECK_EQ_INT(nt_store_user_get(ctx->store, alice.user_id, &u), 0);
    CHECK(u.last_seen > 0);
    snprintf(expect, sizeof expect,
             "{\"type\":\"presence\",\"user_id\":%lld,\"online\":false,\"last_seen\":%lld}",
             (long long)alice.user_id, (long long)u.last_seen);
    CHECK_STR_EQ(delivered, expect);

    /* online comes from the bus. */
    memset(&r, 0, sizeof r);
    nt_users_get(ctx, &alice, bob.user_id, &r);
    answer_take(&a, &r);
    CHECK(strstr(a.body, "\"online\":true") != NULL);
    nt_bus_conn_down(ctx->bus, bob.user_id);

    nt_buf frame = NT_BUF_INIT;
    CHECK_EQ_INT(nt_users_ready_frame(ctx, alice.user_id, &frame), 0);
    CHECK(strncmp(nt_buf_cstr(&frame), "{\"type\":\"ready\",\"user\":{\"id\":", 29) == 0);
    CHECK(strstr(nt_buf_cstr(&frame), "\"online\":true") != NULL);
    CHECK(strstr(nt_buf_cstr(&frame), "\"email\":\"Alice@Example.com\"}}") != NULL);
    nt_buf_reset(&frame);
    CHECK(nt_users_ready_frame(ctx, 999999, &frame) != 0);
    CHECK_EQ_INT(frame.len, 0);
    nt_buf_free(&frame);
}

int main(void)
{
    char err[256] = "";
    char url[300];
    nt_ctx ctx;

    if (sodium_init() < 0) return 1;
    test_api_helpers();

    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/nt_test_auth_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(url, sizeof url, "sqlite:%s/natter.db", tmp_dir);

    /* NT_TEST_STORE=postgres: the same tests on a private PostgreSQL. */
    static pg_test_server pg;
    const char *backend = getenv("NT_TEST_STORE");
    if (backend && strcmp(backend, "postgres") == 0) {
        int rc = pgt_start(&pg, false);
        if (rc != 0) return rc == PGT_SKIP ? PGT_SKIP : 1;
        snprintf(url, sizeof url, "%s", pg.url);
    }

    memset(&ctx, 0, sizeof ctx);
    ctx.limits = (nt_limits){.text_max_cp = 4096,
                             .bio_max_cp = 500,
                             .url_max = 1024,
                             .password_min = 8,
                             .password_max = 1024,
                             .title_max_cp = 128,
                             .group_max_members = 1000};
    ctx.access_ttl_s = 900;
    ctx.refresh_ttl_s = 30 * 24 * 3600;
    ctx.pwhash_ops = crypto_pwhash_OPSLIMIT_MIN;
    ctx.pwhash_mem = crypto_pwhash_MEMLIMIT_MIN;
    ctx.store = nt_store_open(url, err, sizeof err);
    CHECK(ctx.store != NULL);
    ctx.bus = nt_bus_open("local", uv_default_loop(), err, sizeof err);
    CHECK(ctx.bus != NULL);
    if (!ctx.store || !ctx.bus) {
        fprintf(stderr, "setup failed: %s\n", err);
        return 1;
    }

    test_load_key(&ctx);
    test_register(&ctx);
    test_login(&ctx);
    test_refresh(&ctx);
    test_logout(&ctx);
    test_verify(&ctx);
    test_users(&ctx);

    nt_bus_close(ctx.bus);
    nt_store_close(ctx.store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    pgt_destroy(&pg);
    return check_exit();
}
