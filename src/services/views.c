/*
 * The JSON views of API.md's objects (user, message, chat) and of the
 * message event frames. Every endpoint and event writes objects through
 * these functions, so a field is spelled and typed one way only.
 *
 * Nulls: the store keeps "no value" as "" (gender, birth_date, client_id,
 * a direct chat's title) or 0 (edited_at, last_seen); the views write those
 * as JSON null. bio and avatar_url are free text where "" is a real value
 * ("nothing written"), so they stay "" and are never null: clients may rely
 * on them being strings.
 *
 * Random chats: while anonymous, a member is written with "user_id": null
 * and "alias", and a message with "sender_id": null and "sender_alias"; the
 * store fills the aliases (nt_member.alias, nt_message.sender_alias) only
 * while both members have not revealed, so every endpoint and event that
 * goes through these views hides the ids the same way.
 *
 * The message event writer runs on a loop thread for every fan-out, so it
 * only appends to the caller's buffer: no allocation of its own.
 */
#include "services/views.h"

#include <errno.h>
#include <string.h>

void nt_view_user(nt_jw *w, const nt_user *u, bool online, bool with_email)
{
    nt_jw_obj(w);
    nt_jw_kint(w, "id", u->id);
    nt_jw_kstr(w, "nickname", u->nickname);
    nt_jw_kstr(w, "bio", u->bio);
    nt_jw_kstr(w, "avatar_url", u->avatar_url);
    nt_jw_key(w, "gender");
    nt_jw_str_or_null(w, u->gender);
    nt_jw_key(w, "birth_date");
    nt_jw_str_or_null(w, u->birth_date);
    nt_jw_kint(w, "created_at", u->created_at);
    nt_jw_kbool(w, "online", online);
    nt_jw_key(w, "last_seen");
    if (u->last_seen > 0)
        nt_jw_int(w, u->last_seen);
    else
        nt_jw_null(w);
    if (with_email) nt_jw_kstr(w, "email", u->email);
    nt_jw_obj_end(w);
}

/* Appends ",<members>" of extra_json to the object being written. The
 * writer has no call for "raw members", but it writes straight into its
 * buffer and the object already holds members (id...), so a comma and the
 * members keep both the text and the writer's comma state right. */
static void views__splice_members(nt_jw *w, const char *members)
{
    size_t len = strlen(members);
    /* Trim so that "" or whitespace-only adds nothing (and no stray comma). */
    while (len > 0 && (members[len - 1] == ' ' || members[len - 1] == '\n' ||
                       members[len - 1] == '\t' || members[len - 1] == '\r'))
        len--;
    while (len > 0 &&
           (*members == ' ' || *members == '\n' || *members == '\t' || *members == '\r')) {
        members++;
        len--;
    }
    if (len == 0 || w->err) return;
    if (nt_buf_append(w->out, ",", 1) || nt_buf_append(w->out, members, len)) w->err = -ENOMEM;
}

void nt_view_message(nt_jw *w, const nt_message *m)
{
    nt_jw_obj(w);
    nt_jw_kint(w, "id", m->id);
    nt_jw_kint(w, "chat_id", m->chat_id);
    nt_jw_kint(w, "seq", m->seq);
    if (m->sender_alias[0]) {
        /* An anonymous random chat: the same frame goes to both members, so
         * the sender is named by alias only (see docs/decisions.md). */
        nt_jw_key(w, "sender_id");
        nt_jw_null(w);
        nt_jw_kstr(w, "sender_alias", m->sender_alias);
    } else {
        nt_jw_kint(w, "sender_id", m->sender_id);
    }
    nt_jw_key(w, "text");
    /* A deleted message may come back with its text freed: still a string. */
    if (m->text)
        nt_jw_strn(w, m->text, m->text_len);
    else
        nt_jw_str(w, "");
    nt_jw_kint(w, "ts", m->ts);
    nt_jw_key(w, "client_id");
    nt_jw_str_or_null(w, m->client_id);
    nt_jw_key(w, "edited_at");
    if (m->edited_at > 0)
        nt_jw_int(w, m->edited_at);
    else
        nt_jw_null(w);
    nt_jw_kbool(w, "deleted", m->deleted);
    if (m->extra_json) views__splice_members(w, m->extra_json);
    nt_jw_obj_end(w);
}

void nt_view_chat(nt_jw *w, const nt_chat *c)
{
    bool random = strcmp(c->type, "random") == 0;
    nt_jw_obj(w);
    nt_jw_kint(w, "id", c->id);
    nt_jw_kstr(w, "type", c->type);
    nt_jw_key(w, "title");
    nt_jw_str_or_null(w, c->title);
    nt_jw_key(w, "members");
    nt_jw_arr(w);
    for (int i = 0; i < c->nmembers; i++) {
        const nt_member *mb = &c->members[i];
        nt_jw_obj(w);
        if (mb->alias[0]) {
            nt_jw_key(w, "user_id");
            nt_jw_null(w);
            nt_jw_kstr(w, "alias", mb->alias);
        } else {
            nt_jw_kint(w, "user_id", mb->user_id);
        }
        if (random) nt_jw_kbool(w, "revealed", mb->revealed);
        nt_jw_kstr(w, "role", mb->role == NT_ROLE_OWNER ? "owner" : "member");
        nt_jw_kint(w, "delivered_seq", mb->delivered_seq);
        nt_jw_kint(w, "read_seq", mb->read_seq);
        nt_jw_obj_end(w);
    }
    nt_jw_arr_end(w);
    nt_jw_kint(w, "last_seq", c->last_seq);
    nt_jw_key(w, "last_message");
    if (c->has_last_message)
        nt_view_message(w, &c->last_message);
    else
        nt_jw_null(w);
    nt_jw_kint(w, "unread", c->unread);
    nt_jw_kint(w, "created_at", c->created_at);
    nt_jw_kbool(w, "closed", c->closed);
    nt_jw_obj_end(w);
}

int nt_view_message_event(nt_buf *out, const char *type, const nt_message *m)
{
    size_t start = out->len;
    nt_jw w;

    nt_jw_init(&w, out);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "type", type);
    nt_jw_key(&w, "message");
    nt_view_message(&w, m);
    nt_jw_obj_end(&w);
    int rc = nt_jw_error(&w);
    if (rc) out->len = start; /* no half frame left behind */
    return rc;
}
