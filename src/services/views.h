/*
 * JSON views of the API.md objects, written once here and used by every
 * endpoint and event so a field is never spelled two ways.
 */
#ifndef NT_VIEWS_H
#define NT_VIEWS_H

#include <stdbool.h>

#include "common/json.h"
#include "store/store.h"

/* user: {"id","nickname","bio","avatar_url","gender","birth_date",
 * "created_at","online","last_seen"} (+ "email" when with_email). Empty
 * strings are written as null. */
void nt_view_user(nt_jw *w, const nt_user *u, bool online, bool with_email);
/* message: {"id","chat_id","seq","sender_id","text","ts","client_id",
 * "edited_at","deleted"} plus the members of extra_json (e.g. "pow").
 * In an anonymous random chat "sender_id" is null and "sender_alias" added. */
void nt_view_message(nt_jw *w, const nt_message *m);
/* chat: {"id","type","title","members":[...],"last_seq","last_message",
 * "unread","created_at","closed"}. In a random chat each member also has
 * "revealed"; while it is anonymous, "user_id" is null and "alias" added. */
void nt_view_chat(nt_jw *w, const nt_chat *c);
/* A whole event frame {"type":"message"|"message_edited"|"message_deleted",
 * "message":{...}} appended to out. Used on the loop thread for the hot path:
 * no allocation beyond growing `out`. */
int nt_view_message_event(nt_buf *out, const char *type, const nt_message *m);

#endif
