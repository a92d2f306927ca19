/* The value rules of API.md "Limits": see validate.h. */
#include "services/validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/http.h"

static bool nickname_chars(const char *s, size_t min, size_t max)
{
    size_t len = strlen(s);
    if (len < min || len > max) return false;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

bool nt_valid_nickname(const char *nick)
{
    return nickname_chars(nick, 3, 32);
}

bool nt_valid_nickname_prefix(const char *prefix)
{
    return nickname_chars(prefix, 1, 32);
}

static bool no_space_or_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f) return false;
    return true;
}

bool nt_valid_email(const char *email)
{
    size_t len = strlen(email);
    const char *at = strchr(email, '@');
    if (len < 3 || len > 254 || !at || at == email || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    return no_space_or_control(email);
}

bool nt_valid_gender(const char *g)
{
    return strcmp(g, "male") == 0 || strcmp(g, "female") == 0 || strcmp(g, "other") == 0;
}

bool nt_valid_birth_date(const char *d)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(d) != 10 || d[4] != '-' || d[7] != '-') return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (d[i] < '0' || d[i] > '9')) return false;
    int year = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    int month = (d[5] - '0') * 10 + (d[6] - '0');
    int day = (d[8] - '0') * 10 + (d[9] - '0');
    if (year < 1 || month < 1 || month > 12 || day < 1) return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap ? 1 : 0)) return false;
    /* Same fixed-width format, so comparing the strings compares the days. */
    char today[32];
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    snprintf(today, sizeof today, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    return strcmp(d, today) <= 0;
}

bool nt_valid_http_url(const char *url)
{
    size_t skip;
    if (strncasecmp(url, "https://", 8) == 0)
        skip = 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        skip = 7;
    else
        return false;
    if (url[skip] == '\0' || url[skip] == '/') return false;
    return no_space_or_control(url);
}

bool nt_query_int(nt_reply *r, const char *query, const char *name, int64_t min, int64_t max,
                  int64_t def, int64_t *out)
{
    char val[24];
    int n = nt_http_query_get(query ? query : "", name, val, sizeof val);
    *out = def;
    if (n == -1) return true;
    bool ok = n > 0 && n <= 18;
    int64_t v = 0;
    for (int i = 0; ok && i < n; i++) {
        if (val[i] < '0' || val[i] > '9')
            ok = false;
        else
            v = v * 10 + (val[i] - '0');
    }
    if (!ok || v < min || v > max) {
        nt_reply_error(r, 400, "bad_request",
                       "%s must be an integer between %" PRId64 " and %" PRId64, name, min, max);
        return false;
    }
    *out = v;
    return true;
}
