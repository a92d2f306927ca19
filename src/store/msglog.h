/*
 * The SQLite store's message log: an append-only file that makes a batch
 * of new messages durable with one sequential write and one fdatasync, so
 * the messages can be acknowledged before SQLite commits them (store_sqlite.c
 * explains the whole scheme). The file holds only what SQLite has not
 * committed yet: once it has, the log starts over from its beginning.
 *
 * Records. Each record is self-contained (every column of the message row)
 * and framed as
 *
 *     u32 length of the whole record   u32 generation   u64 checksum
 *     i64 id, chat_id, seq, sender_id, ts
 *     u32 client_id bytes, u32 text bytes, u32 extra_json bytes (0xFFFFFFFF: NULL)
 *     the three strings, without NULs
 *
 * little-endian, the checksum a keyed SipHash (libsodium's crypto_shorthash,
 * fixed key: it detects torn and stale bytes, it does not authenticate) of
 * everything after it. Starting over does not truncate the file (that would
 * make every fdatasync also write the inode); it raises the generation and
 * writes from offset 0 again. A reader accepts records from the start while
 * each checksum holds and no generation goes down: the bytes left over from
 * a longer earlier cycle, or from a write that failed, carry a lower
 * generation and end the log.
 *
 * Not thread-safe: one thread (the store writer) owns a log.
 */
#ifndef NT_STORE_MSGLOG_H
#define NT_STORE_MSGLOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct nt_msglog nt_msglog;

typedef struct nt_msglog_rec {
    int64_t id, chat_id, seq, sender_id, ts;
    const char *client_id; /* "" for none */
    size_t client_id_len;
    const char *text;
    size_t text_len;
    const char *extra_json; /* NULL for none */
    size_t extra_len;
} nt_msglog_rec;

/* Opens (creating it, mode 0600) the log at `path`. 0 or -errno. */
int nt_msglog_open(const char *path, nt_msglog **out);
void nt_msglog_close(nt_msglog *l);

/*
 * Calls fn for every record of the file, oldest first (see the top for
 * which records count). Strings in the record are valid during the call
 * only and are not NUL-terminated. Stops at the first non-zero return of fn
 * and returns it; else 0, or -errno if the file cannot be read.
 */
int nt_msglog_replay(nt_msglog *l, int (*fn)(void *arg, const nt_msglog_rec *r), void *arg);

/* Adds a record to the batch being built (memory only). 0 or -ENOMEM. */
int nt_msglog_add(nt_msglog *l, const nt_msglog_rec *r);
/* Writes the batch at the end of the log and fdatasyncs it: 0 once it is on
 * disk, -errno if not. After a failure the batch is dropped but some of its
 * bytes may be in the file and could be read back: add nothing more until
 * nt_msglog_truncate has succeeded. */
int nt_msglog_sync(nt_msglog *l);
/* Drops the batch being built. */
void nt_msglog_discard(nt_msglog *l);
/* Everything written so far is durable elsewhere: the log starts over. */
void nt_msglog_restart(nt_msglog *l);
/* Empties the file for good (ftruncate + fsync), e.g. after a replay was
 * committed at start. 0 or -errno. */
int nt_msglog_truncate(nt_msglog *l);
/* Bytes written since the last restart. */
uint64_t nt_msglog_size(const nt_msglog *l);

#endif
