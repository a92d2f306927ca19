/*
 * Proof of work for the bot (API.md, "The built-in bot"): find a nonce such
 * that SHA-256(prefix || decimal nonce) starts with `bits` zero bits.
 *
 * The prefix is hashed once (the SHA-256 midstate plus the partial last
 * block), and per nonce only a copy of that state is finished with the
 * nonce's digits, so the cost per try is one or two compressions whatever
 * the prefix length. The compression is OpenSSL libcrypto's, which uses the
 * CPU's SHA extensions when present. A search can be split over threads by
 * nonce stride (nt_pow_search) or run on several threads at once
 * (nt_pow_solve). Pure computation: no store, no bus, no logging.
 */
#ifndef NT_SERVICES_POW_H
#define NT_SERVICES_POW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Highest difficulty accepted (the config caps --pow-bits at 40 too). */
#define NT_POW_MAX_BITS 64

typedef struct nt_pow_result {
    uint64_t nonce;
    uint8_t hash[32];
    uint64_t hashes; /* nonces tried, by every thread of the search */
} nt_pow_result;

/* True if the first `bits` bits of the 32-byte digest are zero. */
bool nt_pow_check(const uint8_t digest[32], int bits);

/* SHA-256 of prefix || decimal(nonce) into digest (the slow, obvious way:
 * for verification and tests). */
void nt_pow_hash(const void *prefix, size_t len, uint64_t nonce, uint8_t digest[32]);

/* Writes the 64 lowercase hex digits of digest and a NUL into hex[65]. */
void nt_pow_hex(const uint8_t digest[32], char hex[65]);

/*
 * Tries nonces start, start + stride, start + 2*stride, ... (stride >= 1)
 * in order until one satisfies `bits` (0..NT_POW_MAX_BITS). Checks *stop
 * (may be NULL) every few thousand tries and gives up when it is non-zero,
 * or when the monotonic clock passes deadline_ns (0 = no deadline).
 * Returns 1 with *out filled when found, 0 when stopped, -EINVAL for bad
 * arguments. out->hashes counts the tries either way.
 */
int nt_pow_search(const void *prefix, size_t len, int bits, uint64_t start, uint64_t stride,
                  const atomic_int *stop, uint64_t deadline_ns, nt_pow_result *out);

/*
 * The whole search for one job on `nthreads` threads (<= 0: the number of
 * online CPUs; the calling thread is one of them): thread t tries nonces
 * t, t + nthreads, ... and the first proof found stops the others. Which
 * nonce wins among threads that find one at the same time is not fixed.
 * Returns 1 found, 0 stopped (*stop or the deadline, as nt_pow_search),
 * -EINVAL for bad arguments. If helper threads cannot be created the search
 * goes on with the threads it has (at worst the calling thread alone).
 */
int nt_pow_solve(const void *prefix, size_t len, int bits, int nthreads, const atomic_int *stop,
                 uint64_t deadline_ns, nt_pow_result *out);

#endif
