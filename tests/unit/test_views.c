/*
 * The JSON views write exactly the API.md shapes: every field, in a fixed
 * order, with nulls where the store keeps "no value" and with strings
 * escaped. The expected texts below are the contract clients parse.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/json.h"
#include "services/views.h"

/* Runs one writer callback into a fresh buffer and returns the text
 * (static storage, valid until the next call). */
static char view_text[8192];

static const char *user_json(const nt_user *u, bool online, bool with_email)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &b);
    nt_view_user(&w, u, online, with_email);
    CHECK_EQ_INT(nt_jw_error(&w), 0);
    snprintf(view_text, sizeof view_text, "%s", nt_buf_cstr(&b));
    nt_buf_free(&b);
    return view_text;
}

static const char *message_json(const nt_message *m)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &b);
    nt_view_message(&w, m);
    CHECK_EQ_INT(nt_jw_error(&w), 0);
    snprintf(view_text, sizeof view_text, "%s", nt_buf_cstr(&b));
    nt_buf_free(&b);
    return view_text;
}

static const char *chat_json(const nt_chat *c)
{
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &b);
    nt_view_chat(&w, c);
    CHECK_EQ_INT(nt_jw_error(&w), 0);
    snprintf(view_text, sizeof view_text, "%s", nt_buf_cstr(&b));
    nt_buf_free(&b);
    return view_text;
}

/* The text must also be one valid JSON value (the reader agrees). */
static bool parses(const char *text)
{
    nt_json doc;
    nt_json_tok toks[128];
    return nt_json_parse(&doc, text, strlen(text), toks, 128) == 0;
}

static void test_user(void)
{
    nt_user u;
    memset(&u, 0, sizeof u);
    u.id = 42;
    snprintf(u.nickname, sizeof u.nickname, "alice");
    snprintf(u.email, sizeof u.email, "alice@example.com");
    snprintf(u.bio, sizeof u.bio, "hi");
    snprintf(u.avatar_url, sizeof u.avatar_url, "https://x.example/a.png");
    snprintf(u.gender, sizeof u.gender, "female");
    snprintf(u.birth_date, sizeof u.birth_date, "1990-02-03");
    u.created_at = 1700000000000;
    u.last_seen = 1700000001234;

    CHECK_STR_EQ(user_json(&u, true, true),
                 "{\"id\":42,\"nickname\":\"alice\",\"bio\":\"hi\","
                 "\"avatar_url\":\"https://x.example/a.png\",\"gender\":\"female\","
                 "\"birth_date\":\"1990-02-03\",\"created_at\":1700000000000,\"online\":true,"
                 "\"last_seen\":1700000001234,\"email\":\"alice@example.com\"}");
    CHECK(parses(view_text));
    /* Without email: the field is gone, not null. */
    CHECK_STR_EQ(user_json(&u, false, false),
                 "{\"id\":42,\"nickname\":\"alice\",\"bio\":\"hi\","
                 "\"avatar_url\":\"https://x.example/a.png\",\"gender\":\"female\","
                 "\"birth_date\":\"1990-02-03\",\"created_at\":1700000000000,\"online\":false,"
                 "\"last_seen\":1700000001234}");

    /* Empty gender/birth_date and last_seen 0 are null; bio and avatar_url
     * stay strings; escaping of quotes, backslash, newline, controls; UTF-8
     * passes through. */
    memset(&u, 0, sizeof u);
    u.id = 7;
    snprintf(u.nickname, sizeof u.nickname, "bob");
    snprintf(u.bio, sizeof u.bio, "say \"hi\"\\\n\t\x01 caf\xc3\xa9");
    u.created_at = 5;
    CHECK_STR_EQ(user_json(&u, false, false),
                 "{\"id\":7,\"nickname\":\"bob\",\"bio\":\"say \\\"hi\\\"\\\\\\n\\t\\u0001 "
                 "caf\xc3\xa9\",\"avatar_url\":\"\",\"gender\":null,\"birth_date\":null,"
                 "\"created_at\":5,\"online\":false,\"last_seen\":null}");
    CHECK(parses(view_text));
}

static void test_message(void)
{
    char text[] = "he said \"</script>\"\n";
    nt_message m;
    memset(&m, 0, sizeof m);
    m.id = 1001;
    m.chat_id = 3;
    m.seq = 17;
    m.sender_id = 42;
    m.text = text;
    m.text_len = strlen(text);
    m.ts = 1700000000000;

    CHECK_STR_EQ(message_json(&m), "{\"id\":1001,\"chat_id\":3,\"seq\":17,\"sender_id\":42,"
                                   "\"text\":\"he said \\\"</script>\\\"\\n\",\"ts\":1700000000000,"
                                   "\"client_id\":null,\"edited_at\":null,\"deleted\":false}");
    CHECK(parses(view_text));

    /* client_id and edited_at set; text_len is what counts, not the NUL. */
    snprintf(m.client_id, sizeof m.client_id, "c-1");
    m.edited_at = 1700000009999;
    m.text_len = 2;
    CHECK_STR_EQ(message_json(&m),
                 "{\"id\":1001,\"chat_id\":3,\"seq\":17,\"sender_id\":42,\"text\":\"he\","
                 "\"ts\":1700000000000,\"client_id\":\"c-1\",\"edited_at\":1700000009999,"
                 "\"deleted\":false}");

    /* A deleted message whose text was freed is still a string. */
    m.text = NULL;
    m.text_len = 0;
    m.deleted = true;
    CHECK_STR_EQ(message_json(&m),
                 "{\"id\":1001,\"chat_id\":3,\"seq\":17,\"sender_id\":42,\"text\":\"\","
                 "\"ts\":1700000000000,\"client_id\":\"c-1\",\"edited_at\":1700000009999,"
                 "\"deleted\":true}");

    /* extra_json members are spliced into the object. */
    char pow[] = "\"pow\":{\"nonce\":12345,\"hash\":\"000000ab\",\"bits\":24}";
    memset(&m, 0, sizeof m);
    m.id = 2;
    m.chat_id = 1;
    m.seq = 1;
    m.sender_id = 9;
    m.text = text;
    m.text_len = 2;
    m.ts = 10;
    m.extra_json = pow;
    CHECK_STR_EQ(message_json(&m),
                 "{\"id\":2,\"chat_id\":1,\"seq\":1,\"sender_id\":9,\"text\":\"he\",\"ts\":10,"
                 "\"client_id\":null,\"edited_at\":null,\"deleted\":false,"
                 "\"pow\":{\"nonce\":12345,\"hash\":\"000000ab\",\"bits\":24}}");
    CHECK(parses(view_text));

    /* Empty or blank extra_json adds nothing, not even a comma. */
    char blank[] = "  ";
    m.extra_json = blank;
    CHECK_STR_EQ(message_json(&m),
                 "{\"id\":2,\"chat_id\":1,\"seq\":1,\"sender_id\":9,\"text\":\"he\",\"ts\":10,"
                 "\"client_id\":null,\"edited_at\":null,\"deleted\":false}");

    /* Two spliced messages in one array: the writer's commas stay right. */
    m.extra_json = pow;
    nt_buf b = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &b);
    nt_jw_obj(&w);
    nt_jw_key(&w, "messages");
    nt_jw_arr(&w);
    nt_view_message(&w, &m);
    nt_view_message(&w, &m);
    nt_jw_arr_end(&w);
    nt_jw_kint(&w, "n", 2);
    nt_jw_obj_end(&w);
    CHECK_EQ_INT(nt_jw_error(&w), 0);
    const char *all = nt_buf_cstr(&b);
    CHECK(parses(all));
    CHECK(strstr(all, "\"bits\":24}},{\"id\":2") != NULL);
    CHECK(strstr(all, "\"bits\":24}}],\"n\":2}") != NULL);
    nt_buf_free(&b);
}

static void test_chat(void)
{
    nt_member members[2] = {
        {.user_id = 1, .role = NT_ROLE_OWNER, .delivered_seq = 5, .read_seq = 4},
        {.user_id = 2, .role = NT_ROLE_MEMBER, .delivered_seq = 3, .read_seq = 0},
    };
    char text[] = "last";
    nt_chat c;
    memset(&c, 0, sizeof c);
    c.id = 11;
    snprintf(c.type, sizeof c.type, "group");
    snprintf(c.title, sizeof c.title, "Friends \"&\" co");
    c.created_at = 100;
    c.last_seq = 5;
    c.members = members;
    c.nmembers = 2;
    c.has_last_message = true;
    c.last_message.id = 77;
    c.last_message.chat_id = 11;
    c.last_message.seq = 5;
    c.last_message.sender_id = 1;
    c.last_message.text = text;
    c.last_message.text_len = 4;
    c.last_message.ts = 200;
    c.unread = 1;

    CHECK_STR_EQ(chat_json(&c),
                 "{\"id\":11,\"type\":\"group\",\"title\":\"Friends \\\"&\\\" co\","
                 "\"members\":[{\"user_id\":1,\"role\":\"owner\",\"delivered_seq\":5,"
                 "\"read_seq\":4},{\"user_id\":2,\"role\":\"member\",\"delivered_seq\":3,"
                 "\"read_seq\":0}],\"last_seq\":5,\"last_message\":{\"id\":77,\"chat_id\":11,"
                 "\"seq\":5,\"sender_id\":1,\"text\":\"last\",\"ts\":200,\"client_id\":null,"
                 "\"edited_at\":null,\"deleted\":false},\"unread\":1,\"created_at\":100,"
                 "\"closed\":false}");
    CHECK(parses(view_text));

    /* A direct chat: no title (null), no messages yet. */
    memset(&c, 0, sizeof c);
    c.id = 12;
    snprintf(c.type, sizeof c.type, "direct");
    c.created_at = 100;
    c.closed = true;
    CHECK_STR_EQ(chat_json(&c),
                 "{\"id\":12,\"type\":\"direct\",\"title\":null,\"members\":[],\"last_seq\":0,"
                 "\"last_message\":null,\"unread\":0,\"created_at\":100,\"closed\":true}");
}

static void test_message_event(void)
{
    char text[] = "yo";
    nt_message m;
    memset(&m, 0, sizeof m);
    m.id = 5;
    m.chat_id = 6;
    m.seq = 7;
    m.sender_id = 8;
    m.text = text;
    m.text_len = 2;
    m.ts = 9;

    /* Appends after what the buffer already holds. */
    nt_buf b = NT_BUF_INIT;
    nt_buf_append_str(&b, "X");
    CHECK_EQ_INT(nt_view_message_event(&b, "message", &m), 0);
    CHECK_STR_EQ(nt_buf_cstr(&b),
                 "X{\"type\":\"message\",\"message\":{\"id\":5,\"chat_id\":6,\"seq\":7,"
                 "\"sender_id\":8,\"text\":\"yo\",\"ts\":9,\"client_id\":null,"
                 "\"edited_at\":null,\"deleted\":false}}");
    nt_buf_reset(&b);
    CHECK_EQ_INT(nt_view_message_event(&b, "message_deleted", &m), 0);
    const char *head = "{\"type\":\"message_deleted\",\"message\":{";
    CHECK(strncmp(nt_buf_cstr(&b), head, strlen(head)) == 0);
    CHECK(parses(nt_buf_cstr(&b)));
    nt_buf_free(&b);
}

int main(void)
{
    test_user();
    test_message();
    test_chat();
    test_message_event();
    return check_exit();
}
