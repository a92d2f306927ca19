/*
 * Where auth.c runs Argon2id. By default in the calling thread. A caller
 * that wants the hashing somewhere else (the gateway's hashing pool sends
 * it to processes of their own, docs/decisions.md "Password hashing")
 * installs a hasher once; auth.c then asks it first for every hash and
 * every verification, and hashes in the calling thread only when the
 * hasher says it cannot serve this thread.
 *
 * The handlers themselves are declared in services.h.
 */
#ifndef NT_SERVICES_AUTH_H
#define NT_SERVICES_AUTH_H

#include <stddef.h>

/* The length of an encoded Argon2id string, NUL included (libsodium's
 * crypto_pwhash_STRBYTES). */
#define NT_PWHASH_STRBYTES 128

typedef struct nt_pwhasher {
    /* As crypto_pwhash_str: 0 with out filled, or -1 if hashing failed;
     * -ENOSYS when this thread has no other place to hash (auth.c then
     * hashes here). */
    int (*str)(char out[NT_PWHASH_STRBYTES], const char *pw, size_t pw_len, unsigned long long ops,
               size_t mem);
    /* As crypto_pwhash_str_verify: 0 if pw matches str, -1 if not or if
     * verifying failed; -ENOSYS as above. */
    int (*verify)(const char str[NT_PWHASH_STRBYTES], const char *pw, size_t pw_len);
} nt_pwhasher;

/* Installs the hasher for the whole process (NULL: hash in the calling
 * thread). Call before any thread that hashes starts; the hasher must stay
 * valid while any may still call it. */
void nt_auth_set_hasher(const nt_pwhasher *hasher);

#endif
