/*
 * HTTP/1.1 request reading on top of Node's http_parser: see http.h.
 * http_parser does the grammar; this file adds what a public server needs
 * around it: caps on the head, the target and the body decided as early as
 * possible, refusal of ambiguous framing (Content-Length together with
 * Transfer-Encoding), collection of only the headers the gateway uses, and
 * stopping exactly at the end of a request so pipelined bytes and the first
 * WebSocket frames stay with the caller.
 *
 * All strings of a request live in one buffer (req.strings). While it grows
 * they are kept as offsets; the char * fields are set once the head is
 * complete and the buffer no longer moves.
 */
#include "net/http.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_MAX_HEADERS 100

/* Headers we keep, in the order of the fields of nt_http_request. */
enum {
    H_AUTHORIZATION,
    H_CONTENT_TYPE,
    H_UPGRADE,
    H_CONNECTION,
    H_WS_KEY,
    H_WS_VERSION,
    H_X_FORWARDED_FOR,
    H_COUNT,
    /* Seen but not kept. */
    H_CONTENT_LENGTH = H_COUNT,
    H_TRANSFER_ENCODING,
    H_OTHER,
};

static const char *const header_names[] = {
    [H_AUTHORIZATION] = "authorization",
    [H_CONTENT_TYPE] = "content-type",
    [H_UPGRADE] = "upgrade",
    [H_CONNECTION] = "connection",
    [H_WS_KEY] = "sec-websocket-key",
    [H_WS_VERSION] = "sec-websocket-version",
    [H_X_FORWARDED_FOR] = "x-forwarded-for",
    [H_CONTENT_LENGTH] = "content-length",
    [H_TRANSFER_ENCODING] = "transfer-encoding",
};

/* Where http_parser is in the head, as seen from our callbacks. */
enum { IN_URL, IN_FIELD, IN_VALUE, IN_BODY };

typedef struct {
    uint32_t off, len;
} span;

struct nt_http_parser {
    http_parser hp;
    nt_http_limits limits;
    nt_http_request req;
    size_t head_bytes;    /* fed while the head was incomplete */
    size_t trailer_bytes; /* names and values of chunked trailers */
    size_t target_len;
    int error;      /* negative status once failed; sticks */
    uint8_t where;  /* IN_* */
    uint8_t header; /* H_* of the header being read */
    uint16_t nheaders;
    uint16_t present; /* bit per H_* seen */
    bool head_done;
    bool complete;
    span target;
    span values[H_COUNT];
    uint8_t field_len; /* sizeof field + 1 when the name is too long to matter */
    char field[24];    /* lower-cased name of the header being read */
};

static void http__request_init(nt_http_request *r)
{
    memset(r, 0, sizeof *r);
}

nt_http_parser *nt_http_parser_new(const nt_http_limits *limits)
{
    nt_http_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->limits = *limits;
    if (!p->limits.max_head) p->limits.max_head = 16 * 1024;
    if (!p->limits.max_url) p->limits.max_url = 8 * 1024;
    /* max_body 0 is a real limit: no body allowed. */
    nt_http_parser_reset(p);
    return p;
}

void nt_http_parser_free(nt_http_parser *p)
{
    if (!p) return;
    nt_http_request_free(&p->req);
    free(p);
}

void nt_http_parser_reset(nt_http_parser *p)
{
    nt_http_request_free(&p->req);
    http__request_init(&p->req);
    http_parser_init(&p->hp, HTTP_REQUEST);
    p->hp.data = p;
    p->head_bytes = 0;
    p->trailer_bytes = 0;
    p->target_len = 0;
    p->error = 0;
    p->where = IN_URL;
    p->header = H_OTHER;
    p->nheaders = 0;
    p->present = 0;
    p->head_done = false;
    p->complete = false;
    memset(&p->target, 0, sizeof p->target);
    memset(p->values, 0, sizeof p->values);
    p->field_len = 0;
}

nt_http_request *nt_http_parser_request(nt_http_parser *p)
{
    return &p->req;
}

void nt_http_request_free(nt_http_request *r)
{
    nt_buf_free(&r->body);
    nt_buf_free(&r->strings);
    r->target = r->path = r->query = NULL;
    r->authorization = r->content_type = r->upgrade = r->connection = NULL;
    r->ws_key = r->ws_version = r->x_forwarded_for = NULL;
}

/* Records an error to answer with and stops http_parser (a nonzero return
 * from a callback). */
static int http__fail(nt_http_parser *p, int status)
{
    if (!p->error) p->error = -status;
    return -1;
}

static int http__append(nt_http_parser *p, const void *bytes, size_t len)
{
    /* The head, its decoded path and query, and room for a few joined
     * repeats; without a cap, repeated joins would copy a long value again
     * and again and turn a 16 KiB head into megabytes. */
    size_t cap = 2 * (p->limits.max_head + p->limits.max_url) + 256;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    if (len > cap - p->req.strings.len) return http__fail(p, 431);
    if (nt_buf_append(&p->req.strings, bytes, len) != 0) return http__fail(p, 500);
    return 0;
}

static int http__end_string(nt_http_parser *p)
{
    return http__append(p, "", 1);
}

static bool http__is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Ends the header value being read: trims trailing blanks and closes the
 * string. */
static int http__end_value(nt_http_parser *p)
{
    if (p->header >= H_COUNT) return 0;
    span *v = &p->values[p->header];
    const char *s = p->req.strings.data;
    while (v->len && http__is_space(s[v->off + v->len - 1]))
        v->len--;
    p->req.strings.len = v->off + v->len;
    return http__end_string(p);
}

/* Ends whatever the head was in the middle of, before a new field or the
 * end of the head. */
static int http__end_part(nt_http_parser *p)
{
    if (p->where == IN_URL) {
        if (p->target_len == 0) return http__fail(p, 400);
        return http__end_string(p);
    }
    if (p->where == IN_VALUE) return http__end_value(p);
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    nt_http_parser *p = hp->data;
    if (len > p->limits.max_url - p->target_len)
        return http__fail(p, 400); /* http.h allows 400, 413, 431; 414 is not in it */
    if (p->target_len == 0) p->target.off = (uint32_t)p->req.strings.len;
    p->target_len += len;
    p->target.len = (uint32_t)p->target_len;
    return http__append(p, at, len);
}

/* Trailers of a chunked body come after the strings are final: they are
 * not kept, only counted against the head cap so they cannot go on forever. */
static int http__trailer(nt_http_parser *p, size_t len)
{
    if (len > p->limits.max_head - p->trailer_bytes) return http__fail(p, 431);
    p->trailer_bytes += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    nt_http_parser *p = hp->data;
    if (p->head_done) return http__trailer(p, len);
    if (p->where != IN_FIELD) {
        if (http__end_part(p) != 0) return -1;
        if (++p->nheaders > HTTP_MAX_HEADERS) return http__fail(p, 431);
        p->where = IN_FIELD;
        p->field_len = 0;
    }
    /* Debian builds http_parser without HTTP_PARSER_STRICT, which lets
     * blanks into names: "Content-Length : 5" would slip past as another
     * header here while a proxy in front may honour it. */
    if (memchr(at, ' ', len) || memchr(at, '\t', len)) return http__fail(p, 400);
    /* Only the name's first bytes matter: ours are short. */
    for (size_t i = 0; i < len && p->field_len <= sizeof p->field; i++) {
        if (p->field_len < sizeof p->field) {
            char c = at[i];
            p->field[p->field_len] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        p->field_len++;
    }
    return 0;
}

static int http__header_id(const nt_http_parser *p)
{
    if (p->field_len > sizeof p->field) return H_OTHER;
    for (int id = 0; id < H_OTHER; id++) {
        const char *name = header_names[id];
        if (strlen(name) == p->field_len && memcmp(name, p->field, p->field_len) == 0) return id;
    }
    return H_OTHER;
}

/* Headers that may be repeated and are then joined with ", " (RFC 9110
 * 5.3); a repeated single-valued header we use is refused as ambiguous. */
static bool http__joinable(int id)
{
    return id == H_CONNECTION || id == H_UPGRADE || id == H_X_FORWARDED_FOR;
}

static int http__start_value(nt_http_parser *p)
{
    int id = http__header_id(p);
    p->header = (uint8_t)id;
    if (id >= H_COUNT) {
        if (id != H_OTHER) p->present |= (uint16_t)(1u << id);
        return 0;
    }
    span *v = &p->values[id];
    uint32_t start = (uint32_t)p->req.strings.len;
    if (!(p->present & (1u << id))) {
        p->present |= (uint16_t)(1u << id);
        v->off = start;
        v->len = 0;
        return 0;
    }
    if (!http__joinable(id)) return http__fail(p, 400);
    /* Copy the earlier value to the end and go on from there. */
    uint32_t old_off = v->off, old_len = v->len;
    if (nt_buf_reserve(&p->req.strings, (size_t)old_len + 2) != 0) return http__fail(p, 500);
    if (http__append(p, p->req.strings.data + old_off, old_len) != 0 ||
        http__append(p, ", ", 2) != 0)
        return -1;
    v->off = start;
    v->len = old_len + 2;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    nt_http_parser *p = hp->data;
    if (p->head_done) return http__trailer(p, len);
    if (p->where != IN_VALUE) {
        p->where = IN_VALUE;
        if (http__start_value(p) != 0) return -1;
    }
    if (p->header >= H_COUNT || len == 0) return 0;
    if (http__append(p, at, len) != 0) return -1;
    p->values[p->header].len += (uint32_t)len;
    return 0;
}

static int http__unhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Appends the percent-decoded path; -400 for a bad escape or %00. */
static int http__append_path(nt_http_parser *p, uint32_t off, uint32_t len)
{
    if (nt_buf_reserve(&p->req.strings, (size_t)len + 1) != 0) return http__fail(p, 500);
    nt_buf *s = &p->req.strings;
    for (uint32_t i = 0; i < len; i++) {
        char c = s->data[off + i];
        if (c == '%') {
            if (len - i < 3) return http__fail(p, 400);
            int hi = http__unhex(s->data[off + i + 1]);
            int lo = http__unhex(s->data[off + i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return http__fail(p, 400);
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        s->data[s->len++] = c;
    }
    return http__end_string(p);
}

/* Splits the target into path and query (origin form "/a?b", absolute form
 * "http://host/a?b", "*", or the authority form of CONNECT). */
static int http__split_target(nt_http_parser *p, uint32_t *path_off, uint32_t *query_off)
{
    const char *t = p->req.strings.data + p->target.off;
    uint32_t len = p->target.len, start = 0;
    bool absolute = false;
    if (t[0] != '/' && !(len == 1 && t[0] == '*')) {
        uint32_t colon = 0;
        while (colon + 2 < len && !(t[colon] == ':' && t[colon + 1] == '/' && t[colon + 2] == '/'))
            colon++;
        if (colon + 2 >= len) {
            start = len; /* authority form: no path */
        } else {
            absolute = true;
            start = colon + 3;
            while (start < len && t[start] != '/' && t[start] != '?' && t[start] != '#')
                start++;
        }
    }
    uint32_t end = start;
    while (end < len && t[end] != '?' && t[end] != '#')
        end++;
    uint32_t q = end, qend = end;
    if (q < len && t[q] == '?') {
        q++;
        qend = q;
        while (qend < len && t[qend] != '#')
            qend++;
    }

    *path_off = (uint32_t)p->req.strings.len;
    if (absolute && start == end) {
        /* "http://host" and "http://host?x" mean the path "/" */
        if (http__append(p, "/", 1) != 0 || http__end_string(p) != 0) return -1;
    } else if (http__append_path(p, p->target.off + start, end - start) != 0) {
        return -1;
    }
    *query_off = (uint32_t)p->req.strings.len;
    /* The buffer may have moved with the appends above: copy by offset. */
    uint32_t qlen = qend - q;
    if (nt_buf_reserve(&p->req.strings, (size_t)qlen + 1) != 0) return http__fail(p, 500);
    memcpy(p->req.strings.data + p->req.strings.len, p->req.strings.data + p->target.off + q, qlen);
    p->req.strings.len += qlen;
    return http__end_string(p);
}

static nt_http_method http__method(unsigned method)
{
    switch (method) {
    case HTTP_GET:
        return NT_HTTP_GET;
    case HTTP_HEAD:
        return NT_HTTP_HEAD;
    case HTTP_POST:
        return NT_HTTP_POST;
    case HTTP_PUT:
        return NT_HTTP_PUT;
    case HTTP_PATCH:
        return NT_HTTP_PATCH;
    case HTTP_DELETE:
        return NT_HTTP_DELETE;
    case HTTP_OPTIONS:
        return NT_HTTP_OPTIONS;
    default:
        return NT_HTTP_OTHER;
    }
}

/* True if the comma-separated list `s` holds `token` (case-insensitive). */
static bool http__has_token(const char *s, const char *token)
{
    size_t tlen = strlen(token);
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        const char *start = s;
        while (*s && *s != ',')
            s++;
        const char *end = s;
        while (end > start && http__is_space(end[-1]))
            end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0) return true;
    }
    return false;
}

static int on_headers_complete(http_parser *hp)
{
    nt_http_parser *p = hp->data;
    if (http__end_part(p) != 0) return -1;
    p->where = IN_BODY;
    p->head_done = true;
    if (hp->http_major != 1) return http__fail(p, 400);

    bool has_length = p->present & (1u << H_CONTENT_LENGTH);
    bool has_encoding = p->present & (1u << H_TRANSFER_ENCODING);
    if (has_length && has_encoding) return http__fail(p, 400); /* request smuggling vector */
    if (has_length && hp->content_length > p->limits.max_body) return http__fail(p, 413);

    /* A dummy byte so an empty header still has a "" to point at. */
    uint32_t empty = (uint32_t)p->req.strings.len;
    if (http__end_string(p) != 0) return -1;
    uint32_t path_off, query_off;
    if (http__split_target(p, &path_off, &query_off) != 0) return -1;

    /* The strings are final: hand out pointers. */
    nt_http_request *r = &p->req;
    char *base = r->strings.data;
    char **fields[H_COUNT] = {
        [H_AUTHORIZATION] = &r->authorization,
        [H_CONTENT_TYPE] = &r->content_type,
        [H_UPGRADE] = &r->upgrade,
        [H_CONNECTION] = &r->connection,
        [H_WS_KEY] = &r->ws_key,
        [H_WS_VERSION] = &r->ws_version,
        [H_X_FORWARDED_FOR] = &r->x_forwarded_for,
    };
    for (int id = 0; id < H_COUNT; id++)
        *fields[id] = base + ((p->present & (1u << id)) ? p->values[id].off : empty);
    r->target = base + p->target.off;
    r->path = base + path_off;
    r->query = base + query_off;
    r->method = http__method(hp->method);

    if (has_length && hp->content_length > 0 &&
        nt_buf_reserve(&r->body, (size_t)hp->content_length) != 0)
        return http__fail(p, 500);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    nt_http_parser *p = hp->data;
    if (len > p->limits.max_body - p->req.body.len)
        return http__fail(p, 413); /* chunked bodies end up here */
    if (nt_buf_append(&p->req.body, at, len) != 0) return http__fail(p, 500);
    return 0;
}

/* A chunk announces its size before its data: refuse one that cannot fit
 * at once, rather than wait for bytes that would be refused anyway. */
static int on_chunk_header(http_parser *hp)
{
    nt_http_parser *p = hp->data;
    if (hp->content_length > p->limits.max_body - p->req.body.len) return http__fail(p, 413);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    nt_http_parser *p = hp->data;
    nt_http_request *r = &p->req;
    r->keep_alive = http_should_keep_alive(hp) != 0;
    r->is_upgrade =
        http__has_token(r->connection, "upgrade") && http__has_token(r->upgrade, "websocket");
    if (hp->method == HTTP_CONNECT) r->keep_alive = false; /* what follows is not HTTP */
    p->complete = true;
    /* Stop right after this request; an upgrade stops by itself. */
    if (!hp->upgrade) http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

ssize_t nt_http_parser_feed(nt_http_parser *p, const char *data, size_t len, bool *done)
{
    *done = false;
    if (p->error) return p->error;
    if (p->complete) {
        *done = true;
        return 0;
    }
    size_t used = 0;
    while (used < len) {
        size_t chunk = len - used;
        bool in_head = !p->head_done;
        if (in_head) {
            /* Never let http_parser see more head than we allow. */
            if (p->head_bytes >= p->limits.max_head) return p->error = -431;
            if (chunk > p->limits.max_head - p->head_bytes)
                chunk = p->limits.max_head - p->head_bytes;
        }
        size_t n = http_parser_execute(&p->hp, &settings, data + used, chunk);
        used += n;
        if (in_head) p->head_bytes += n;
        if (p->error) return p->error;
        enum http_errno err = HTTP_PARSER_ERRNO(&p->hp);
        if (p->complete) {
            *done = true;
            return (ssize_t)used;
        }
        if (err == HPE_HEADER_OVERFLOW) return p->error = -431;
        if (err != HPE_OK || n != chunk) return p->error = -400;
        if (!p->head_done && p->head_bytes >= p->limits.max_head) return p->error = -431;
    }
    return (ssize_t)used;
}

int nt_http_query_get(const char *query, const char *name, char *out, size_t cap)
{
    size_t name_len = strlen(name);
    const char *s = query;
    while (*s) {
        const char *pair = s;
        while (*s && *s != '&')
            s++;
        const char *pair_end = s;
        if (*s) s++;
        const char *eq = memchr(pair, '=', (size_t)(pair_end - pair));
        const char *key_end = eq ? eq : pair_end;
        /* Compare the decoded key with `name` as we go. */
        const char *k = pair;
        size_t matched = 0;
        bool same = true;
        while (k < key_end && same) {
            char c = *k++;
            if (c == '+') {
                c = ' ';
            } else if (c == '%' && key_end - k >= 2 && http__unhex(k[0]) >= 0 &&
                       http__unhex(k[1]) >= 0 && (k[0] != '0' || k[1] != '0')) {
                c = (char)(http__unhex(k[0]) << 4 | http__unhex(k[1]));
                k += 2;
            }
            same = matched < name_len && name[matched] == c;
            matched++;
        }
        if (!same || matched != name_len) continue;
        /* Decode the value; bad escapes and %00 stay as they are. */
        size_t n = 0;
        const char *v = eq ? eq + 1 : pair_end;
        while (v < pair_end) {
            char c = *v++;
            if (c == '+') {
                c = ' ';
            } else if (c == '%' && pair_end - v >= 2 && http__unhex(v[0]) >= 0 &&
                       http__unhex(v[1]) >= 0 && (v[0] != '0' || v[1] != '0')) {
                c = (char)(http__unhex(v[0]) << 4 | http__unhex(v[1]));
                v += 2;
            }
            if (n + 1 >= cap) return -2;
            out[n++] = c;
        }
        if (n >= cap) return -2;
        out[n] = '\0';
        return n > INT32_MAX ? -2 : (int)n;
    }
    return -1;
}

const char *nt_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int nt_http_append_response(nt_buf *out, int status, const char *content_type,
                            const char *extra_headers, const void *body, size_t body_len,
                            bool keep_alive)
{
    size_t start = out->len;
    int rc = nt_buf_appendf(out, "HTTP/1.1 %d %s\r\n", status, nt_http_reason(status));
    /* 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 8.6);
     * a 101 leaves Connection to extra_headers ("Connection: Upgrade"). */
    bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (!rc && content_type && !no_body)
        rc = nt_buf_appendf(out, "Content-Type: %s\r\n", content_type);
    if (!rc && !no_body) rc = nt_buf_appendf(out, "Content-Length: %zu\r\n", body_len);
    if (!rc && extra_headers) rc = nt_buf_append_str(out, extra_headers);
    if (!rc && status != 101)
        rc = nt_buf_append_str(out,
                               keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (!rc) rc = nt_buf_append(out, "\r\n", 2);
    /* No body for a HEAD (NULL body), but the Content-Length above. */
    if (!rc && !no_body && body) rc = nt_buf_append(out, body, body_len);
    if (rc) out->len = start; /* all or nothing */
    return rc;
}
