/*
 * Unit tests for src/store/msglog.h, the SQLite store's message log, on a
 * real file: records come back as written, in order; a restart hides the
 * records of the previous cycle behind the new ones; a torn or corrupted
 * tail ends the log; a reopened log keeps writing above every generation it
 * read.
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "store/msglog.h"

typedef struct seen {
    int n;
    int64_t seq[64];
    char text[64][32];
    bool extra_null[64];
} seen;

static int collect(void *arg, const nt_msglog_rec *r)
{
    seen *s = arg;
    if (s->n == 64) return -1;
    s->seq[s->n] = r->seq;
    snprintf(s->text[s->n], sizeof s->text[0], "%.*s", (int)r->text_len, r->text);
    s->extra_null[s->n] = r->extra_json == NULL;
    s->n++;
    return 0;
}

static void add(nt_msglog *l, int64_t seq, const char *text, const char *extra)
{
    nt_msglog_rec r = {.id = 100 + seq,
                       .chat_id = 7,
                       .seq = seq,
                       .sender_id = 3,
                       .ts = 1700000000000 + seq,
                       .client_id = "c1",
                       .client_id_len = 2,
                       .text = text,
                       .text_len = strlen(text),
                       .extra_json = extra,
                       .extra_len = extra ? strlen(extra) : 0};
    CHECK_EQ_INT(nt_msglog_add(l, &r), 0);
}

static seen replay(const char *path)
{
    nt_msglog *l;
    seen s = {0};
    CHECK_EQ_INT(nt_msglog_open(path, &l), 0);
    CHECK_EQ_INT(nt_msglog_replay(l, collect, &s), 0);
    nt_msglog_close(l);
    return s;
}

static void test_round_trip(const char *path)
{
    nt_msglog *l;
    CHECK_EQ_INT(nt_msglog_open(path, &l), 0);
    add(l, 1, "hello", NULL);
    add(l, 2, "", "{\"x\":1}");
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    add(l, 3, "third", NULL);
    add(l, 4, "not synced", NULL);
    nt_msglog_discard(l); /* 3 and 4 never reach the file */
    add(l, 5, "fifth", NULL);
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    CHECK(nt_msglog_size(l) > 0);
    nt_msglog_close(l);

    seen s = replay(path);
    CHECK_EQ_INT(s.n, 3);
    CHECK_EQ_INT(s.seq[0], 1);
    CHECK_STR_EQ(s.text[0], "hello");
    CHECK(s.extra_null[0]);
    CHECK_EQ_INT(s.seq[1], 2);
    CHECK_STR_EQ(s.text[1], "");
    CHECK(!s.extra_null[1]);
    CHECK_EQ_INT(s.seq[2], 5);
}

/* After a restart the new, shorter cycle is read and the longer old one
 * behind it is not; then the same across a reopen. */
static void test_restart(const char *path)
{
    nt_msglog *l;
    unlink(path);
    CHECK_EQ_INT(nt_msglog_open(path, &l), 0);
    for (int i = 1; i <= 10; i++)
        add(l, i, "an older, longer cycle", NULL);
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    nt_msglog_restart(l);
    add(l, 11, "new", NULL);
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    nt_msglog_close(l);

    seen s = replay(path);
    CHECK_EQ_INT(s.n, 1);
    CHECK_EQ_INT(s.seq[0], 11);

    /* A reopened log writes above the generation it read: after one more
     * restart its records still hide everything older. */
    CHECK_EQ_INT(nt_msglog_open(path, &l), 0);
    s = (seen){0};
    CHECK_EQ_INT(nt_msglog_replay(l, collect, &s), 0);
    CHECK_EQ_INT(nt_msglog_truncate(l), 0);
    add(l, 12, "after truncate", NULL);
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    nt_msglog_close(l);
    s = replay(path);
    CHECK_EQ_INT(s.n, 1);
    CHECK_EQ_INT(s.seq[0], 12);
}

/* A torn last record (the file cut inside it) and a flipped byte both end
 * the log at the last good record. */
static void test_torn_and_corrupt(const char *path)
{
    nt_msglog *l;
    unlink(path);
    CHECK_EQ_INT(nt_msglog_open(path, &l), 0);
    add(l, 1, "one", NULL);
    add(l, 2, "two", NULL);
    add(l, 3, "three", NULL);
    CHECK_EQ_INT(nt_msglog_sync(l), 0);
    uint64_t size = nt_msglog_size(l);
    nt_msglog_close(l);

    CHECK_EQ_INT(truncate(path, (off_t)size - 3), 0);
    seen s = replay(path);
    CHECK_EQ_INT(s.n, 2);

    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    char c;
    /* A byte of the second record's text ("two"), after its 16-byte head
     * and 52 bytes of fixed fields and the 2-byte client id. */
    off_t second = 16 + 52 + 2 + 3; /* the first record: head, fields, "c1", "one" */
    CHECK_EQ_INT(pread(fd, &c, 1, second + 16 + 52 + 2), 1);
    c ^= 0x20;
    CHECK_EQ_INT(pwrite(fd, &c, 1, second + 16 + 52 + 2), 1);
    close(fd);
    s = replay(path);
    CHECK_EQ_INT(s.n, 1);
    CHECK_STR_EQ(s.text[0], "one");

    /* An empty or missing file is an empty log. */
    unlink(path);
    s = replay(path);
    CHECK_EQ_INT(s.n, 0);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const char *tmp = getenv("NT_TEST_TMP");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/msglog-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (tmp && *tmp) mkdir(tmp, 0700);
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/log", dir);

    test_round_trip(path);
    test_restart(path);
    test_torn_and_corrupt(path);

    unlink(path);
    rmdir(dir);
    return check_exit();
}
