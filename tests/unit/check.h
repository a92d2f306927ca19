/*
 * The smallest test helper that does the job: unit tests are plain C programs
 * whose main() returns check_exit(). Each CHECK prints file:line and the
 * failed expression to stderr, counts the failure and carries on, so one run
 * reports every broken case instead of stopping at the first.
 *
 *     #include "check.h"
 *     int main(void)
 *     {
 *         CHECK(1 + 1 == 2);
 *         CHECK_EQ_INT(nt_thing(), 0);
 *         CHECK_STR_EQ(name, "alice");
 *         return check_exit();
 *     }
 *
 * Everything here is static, so any number of test files can include it.
 */
#ifndef NT_TEST_CHECK_H
#define NT_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

/* Fails if cond is false. Evaluates cond once. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Fails if the two integers differ; prints both values. Evaluates each once. */
#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        check_count++;                                                                             \
        if (check_a_ != check_b_) {                                                                \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld != %lld)\n", __FILE__,     \
                    __LINE__, #a, #b, check_a_, check_b_);                                         \
        }                                                                                          \
    } while (0)

/* Fails if the two C strings differ (NULL equals only NULL); prints both. */
#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        check_count++;                                                                             \
        if (!check_str_same_(check_a_, check_b_)) {                                                \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK_STR_EQ failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                              \
                    check_b_ ? check_b_ : "(null)");                                               \
        }                                                                                          \
    } while (0)

static inline int check_str_same_(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

/* For main(): prints a summary and returns 0 if every check passed, else 1. */
static inline int check_exit(void)
{
    if (check_failures) {
        fprintf(stderr, "%d of %d checks failed\n", check_failures, check_count);
        return 1;
    }
    printf("all %d checks passed\n", check_count);
    return 0;
}

#endif
