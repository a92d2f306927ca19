/*
 * HTTP/1.1 request parsing with strict limits, on top of Node's http_parser
 * (libhttp-parser). Feed it bytes as they arrive; it collects one request at
 * a time: method, target, the headers the server uses, and the body.
 *
 * Limits (API.md / DESIGN.md): the request line and the headers together are
 * capped (431 when over), the body is capped (413), anything malformed is 400.
 * After an error the connection must be closed.
 */
#ifndef NT_HTTP_H
#define NT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"

typedef enum {
    NT_HTTP_OTHER = 0,
    NT_HTTP_GET,
    NT_HTTP_HEAD,
    NT_HTTP_POST,
    NT_HTTP_PUT,
    NT_HTTP_PATCH,
    NT_HTTP_DELETE,
    NT_HTTP_OPTIONS,
} nt_http_method;

typedef struct nt_http_limits {
    size_t max_head; /* request line + headers, bytes (default 16 KiB) */
    size_t max_url;  /* request target, bytes (default 8 KiB) */
    size_t max_body; /* bytes (default 64 KiB) */
} nt_http_limits;

/* A parsed request. Strings are NUL-terminated; absent headers are "". */
typedef struct nt_http_request {
    nt_http_method method;
    char *target;        /* raw request target, e.g. "/api/v1/users?q=ab" */
    char *path;          /* target up to '?', percent-decoded */
    char *query;         /* after '?', raw (still encoded); "" if none */
    char *authorization; /* header values we use */
    char *content_type;
    char *upgrade;
    char *connection;
    char *ws_key;     /* Sec-WebSocket-Key */
    char *ws_version; /* Sec-WebSocket-Version */
    char *x_forwarded_for;
    nt_buf body;
    bool keep_alive;
    bool is_upgrade; /* Connection: upgrade + Upgrade: websocket */
    nt_buf strings;  /* backing store of the char * fields above */
} nt_http_request;

/* Parser state for one connection; allocate only while a request is being
 * read (an idle keep-alive connection holds none). */
typedef struct nt_http_parser nt_http_parser;

nt_http_parser *nt_http_parser_new(const nt_http_limits *limits);
void nt_http_parser_free(nt_http_parser *p);

/*
 * Feeds bytes. Returns:
 *   >= 0: bytes consumed. If *done is set, one whole request is ready in
 *         nt_http_parser_request(); bytes after it (pipelining, or the first
 *         WebSocket frames after an upgrade) were NOT consumed.
 *   < 0:  minus the HTTP status to answer before closing: -400, -413, -431.
 */
ssize_t nt_http_parser_feed(nt_http_parser *p, const char *data, size_t len, bool *done);
/* The finished request; the caller may take it over (see _reset). */
nt_http_request *nt_http_parser_request(nt_http_parser *p);
/* Gets the parser ready for the next request on the same connection. */
void nt_http_parser_reset(nt_http_parser *p);

void nt_http_request_free(nt_http_request *r); /* frees fields, not r */

/* Looks up a query parameter (percent-decoded into out). Returns its length,
 * -1 if absent, -2 if it does not fit. */
int nt_http_query_get(const char *query, const char *name, char *out, size_t cap);

/* The reason phrase for a status code ("OK", "Not Found", ...). */
const char *nt_http_reason(int status);

/* Appends a whole response: status line, Content-Type and Content-Length,
 * `extra_headers` (already formatted "Name: value\r\n" lines, may be NULL),
 * Connection: keep-alive or close, then the body. A NULL body with a
 * body_len above 0 answers a HEAD: Content-Length says body_len, the length
 * the GET's body has (RFC 9110 9.3.2, 8.6), and no body follows. */
int nt_http_append_response(nt_buf *out, int status, const char *content_type,
                            const char *extra_headers, const void *body, size_t body_len,
                            bool keep_alive);

#endif
