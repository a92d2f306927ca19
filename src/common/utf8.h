/*
 * UTF-8 validation and code point counting (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). Used by the JSON reader, the
 * WebSocket framer (close 1007) and the text limits of API.md.
 */
#ifndef NT_UTF8_H
#define NT_UTF8_H

#include <stdbool.h>
#include <stddef.h>

bool nt_utf8_valid(const char *s, size_t len);
/* Number of code points in valid UTF-8 text. */
size_t nt_utf8_count(const char *s, size_t len);

#endif
