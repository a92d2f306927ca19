/*
 * The message log of the SQLite store (msglog.h says what it is for and
 * how records are framed).
 */
#include "store/msglog.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

#define LOG_HEAD 16 /* length, generation, checksum */
#define LOG_FIXED (5 * 8 + 3 * 4)
#define LOG_NULL_LEN 0xFFFFFFFFu
/* No record is this large: a message text is capped far below it, and a
 * length beyond it can only be garbage. */
#define LOG_MAX_RECORD (64u << 20)

struct nt_msglog {
    int fd;
    uint32_t gen;    /* generation of the records written next */
    uint64_t offset; /* where the next batch goes */
    nt_buf batch;    /* records added since the last sync */
};

/* A checksum, not a MAC: the key only has to be the same everywhere. */
static const unsigned char log_key[crypto_shorthash_KEYBYTES] = "natter msglog v1";

static void put_u32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put_u64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t checksum(const unsigned char *p, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, p, len, log_key);
    return get_u64(h);
}

int nt_msglog_open(const char *path, nt_msglog **out)
{
    nt_msglog *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        int e = errno;
        free(l);
        return -e;
    }
    l->gen = 1;
    *out = l;
    return 0;
}

void nt_msglog_close(nt_msglog *l)
{
    if (!l) return;
    close(l->fd);
    nt_buf_free(&l->batch);
    free(l);
}

/* Reads exactly len bytes at off: 1, 0 at the end of the file, or -errno. */
static int read_at(int fd, void *dst, size_t len, uint64_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (char *)dst + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return 0;
        got += (size_t)n;
    }
    return 1;
}

/* Splits a record body (after the head) into r. False if it is malformed. */
static bool parse(const unsigned char *p, size_t len, nt_msglog_rec *r)
{
    if (len < LOG_FIXED) return false;
    int64_t v[5];
    for (int i = 0; i < 5; i++)
        v[i] = (int64_t)get_u64(p + 8 * i);
    uint32_t cid = get_u32(p + 40), text = get_u32(p + 44), extra = get_u32(p + 48);
    uint64_t need = (uint64_t)cid + text + (extra == LOG_NULL_LEN ? 0 : extra);
    if (need != len - LOG_FIXED) return false;
    const char *s = (const char *)p + LOG_FIXED;
    *r = (nt_msglog_rec){
        .id = v[0],
        .chat_id = v[1],
        .seq = v[2],
        .sender_id = v[3],
        .ts = v[4],
        .client_id = s,
        .client_id_len = cid,
        .text = s + cid,
        .text_len = text,
        .extra_json = extra == LOG_NULL_LEN ? NULL : s + cid + text,
        .extra_len = extra == LOG_NULL_LEN ? 0 : extra,
    };
    return true;
}

int nt_msglog_replay(nt_msglog *l, int (*fn)(void *arg, const nt_msglog_rec *r), void *arg)
{
    nt_buf body = NT_BUF_INIT;
    uint64_t off = 0;
    uint32_t last_gen = 0;
    int rc = 0;
    for (;;) {
        unsigned char head[LOG_HEAD];
        int got = read_at(l->fd, head, sizeof head, off);
        if (got <= 0) {
            rc = got;
            break;
        }
        uint32_t len = get_u32(head), gen = get_u32(head + 4);
        if (len < LOG_HEAD + LOG_FIXED || len > LOG_MAX_RECORD || gen < last_gen) break;
        nt_buf_reset(&body);
        if (nt_buf_reserve(&body, len - LOG_HEAD) != 0) {
            rc = -ENOMEM;
            break;
        }
        if ((got = read_at(l->fd, body.data, len - LOG_HEAD, off + LOG_HEAD)) <= 0) {
            rc = got;
            break;
        }
        const unsigned char *p = (const unsigned char *)body.data;
        nt_msglog_rec r;
        if (checksum(p, len - LOG_HEAD) != get_u64(head + 8) || !parse(p, len - LOG_HEAD, &r))
            break;
        if ((rc = fn(arg, &r)) != 0) break;
        last_gen = gen;
        off += len;
    }
    nt_buf_free(&body);
    /* Whatever follows is written in a generation above everything read. */
    if (last_gen >= l->gen) l->gen = last_gen + 1;
    return rc;
}

int nt_msglog_add(nt_msglog *l, const nt_msglog_rec *r)
{
    size_t extra = r->extra_json ? r->extra_len : 0;
    size_t len = LOG_HEAD + LOG_FIXED + r->client_id_len + r->text_len + extra;
    if (len > LOG_MAX_RECORD) return -EMSGSIZE;
    if (nt_buf_reserve(&l->batch, len) != 0) return -ENOMEM;
    char *p = l->batch.data + l->batch.len;
    put_u32(p, (uint32_t)len);
    put_u32(p + 4, l->gen);
    char *body = p + LOG_HEAD;
    const int64_t v[5] = {r->id, r->chat_id, r->seq, r->sender_id, r->ts};
    for (int i = 0; i < 5; i++)
        put_u64(body + 8 * i, (uint64_t)v[i]);
    put_u32(body + 40, (uint32_t)r->client_id_len);
    put_u32(body + 44, (uint32_t)r->text_len);
    put_u32(body + 48, r->extra_json ? (uint32_t)extra : LOG_NULL_LEN);
    char *s = body + LOG_FIXED;
    memcpy(s, r->client_id, r->client_id_len);
    memcpy(s + r->client_id_len, r->text, r->text_len);
    if (extra) memcpy(s + r->client_id_len + r->text_len, r->extra_json, extra);
    put_u64(p + 8, checksum((const unsigned char *)body, len - LOG_HEAD));
    l->batch.len += len;
    return 0;
}

int nt_msglog_sync(nt_msglog *l)
{
    size_t done = 0;
    int rc = 0;
    while (done < l->batch.len) {
        ssize_t n =
            pwrite(l->fd, l->batch.data + done, l->batch.len - done, (off_t)(l->offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        done += (size_t)n;
    }
    if (rc == 0 && l->batch.len && fdatasync(l->fd) != 0) rc = -errno;
    if (rc == 0) {
        l->offset += l->batch.len;
    }
    nt_buf_reset(&l->batch);
    return rc;
}

void nt_msglog_discard(nt_msglog *l)
{
    nt_buf_reset(&l->batch);
}

void nt_msglog_restart(nt_msglog *l)
{
    if (l->offset == 0) return;
    l->offset = 0;
    l->gen++;
}

int nt_msglog_truncate(nt_msglog *l)
{
    if (ftruncate(l->fd, 0) != 0 || fsync(l->fd) != 0) return -errno;
    l->offset = 0;
    l->gen++;
    return 0;
}

uint64_t nt_msglog_size(const nt_msglog *l)
{
    return l->offset;
}
