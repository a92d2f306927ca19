/*
 * Command-line numbers for the small bench programs (natter-pow-bench,
 * natter-matcher-bench): the whole argument must be a decimal integer
 * within [min, max].
 */
#ifndef NB_ARG_H
#define NB_ARG_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

static inline bool nb_arg_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

#endif
