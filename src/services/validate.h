/*
 * The value rules of API.md "Limits", written once for every service:
 * nicknames, emails, genders, dates, URLs, and integer query parameters.
 */
#ifndef NT_VALIDATE_H
#define NT_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "services/api.h"

/* 3..32 of [A-Za-z0-9_.-]. */
bool nt_valid_nickname(const char *nick);
/* A nickname search prefix: 1..32 of the nickname alphabet. */
bool nt_valid_nickname_prefix(const char *prefix);
/* One '@' with something on both sides, 3..254 bytes, no spaces or controls. */
bool nt_valid_email(const char *email);
/* "male", "female" or "other". */
bool nt_valid_gender(const char *gender);
/* "YYYY-MM-DD", a real calendar day, not after today (UTC). */
bool nt_valid_birth_date(const char *date);
/* http:// or https:// and at least one more byte; no spaces or controls. */
bool nt_valid_http_url(const char *url);
/* An optional non-negative integer query parameter in [min, max]. Absent:
 * *out = def and true. Anything else (sign, junk, out of range): a 400
 * naming the parameter, and false. */
bool nt_query_int(nt_reply *r, const char *query, const char *name, int64_t min, int64_t max,
                  int64_t def, int64_t *out);

#endif
