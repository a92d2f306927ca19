/*
 * Logging: see log.h. Each call formats one whole line on the stack,
 * `2026-11-23T10:00:00.123Z info message`, and hands it to the kernel with a
 * single write(2) on fd 2, so lines from different threads never interleave
 * and there is no lock and no allocation. Control characters in the message
 * (a newline in user text, say) become spaces: one call is always one line.
 * Over-long messages are cut and end in "...".
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int nt_log_level = NT_LOG_INFO;

static const char *const log__names[] = {"debug", "info", "warn", "error"};

int nt_log_level_parse(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < (int)(sizeof log__names / sizeof log__names[0]); i++)
        if (strcmp(name, log__names[i]) == 0) return i;
    return -1;
}

#define LOG_LINE_MAX 4096

void nt_log(int level, const char *fmt, ...)
{
    if (level < nt_log_level) return;
    if (level < NT_LOG_DEBUG || level > NT_LOG_ERROR) level = NT_LOG_ERROR;
    int saved_errno = errno; /* callers often log and then look at errno */

    char line[LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    int head = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, now.tv_nsec / 1000000, log__names[level]);
    if (head < 0) head = 0;

    /* Leave one byte for the newline. */
    size_t room = sizeof line - (size_t)head - 1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + head, room, fmt, ap);
    va_end(ap);
    size_t body;
    if (n < 0) {
        body = 0;
    } else if ((size_t)n >= room) {
        body = room - 1; /* vsnprintf wrote a NUL at the last byte */
        memcpy(line + head + body - 3, "...", 3);
    } else {
        body = (size_t)n;
    }
    for (char *c = line + head; c < line + head + body; c++)
        if ((unsigned char)*c < 0x20 && *c != '\t') *c = ' ';
    size_t len = (size_t)head + body;
    line[len++] = '\n';

    ssize_t rc;
    do {
        rc = write(STDERR_FILENO, line, len);
    } while (rc < 0 && errno == EINTR);
    errno = saved_errno;
}
