/*
 * Checking the bot's proof-of-work replies on the client side. The bot
 * answers "TEXT!pow" with TEXT reversed by code point and a "pow" object:
 * hash = lowercase hex SHA-256 of TEXT's bytes followed by the decimal nonce,
 * whose first `bits` bits are zero. The client gets TEXT back by reversing
 * the reply and recomputes the hash, so it trusts neither the hash nor the
 * bit count it was sent.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/utf8.h"

int nt_cli_reverse_utf8(const char *s, size_t len, nt_buf *out)
{
    if (!nt_utf8_valid(s, len)) return -EINVAL;
    nt_buf_reset(out);
    if (nt_buf_reserve(out, len + 1) != 0) return -ENOMEM;
    /* Walk backwards: a code point starts at a byte that is not 10xxxxxx. */
    size_t end = len;
    while (end > 0) {
        size_t start = end - 1;
        while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80)
            start--;
        nt_buf_append(out, s + start, end - start);
        end = start;
    }
    nt_buf_cstr(out);
    return 0;
}

bool nt_cli_pow_verify(const char *original, size_t len, const char *nonce, const char *hash,
                       int bits)
{
    if (bits < 0 || bits > 256 || strlen(hash) != 64 || !*nonce) return false;
    for (const char *p = nonce; *p; p++)
        if (*p < '0' || *p > '9') return false;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, original, len) == 1 &&
              EVP_DigestUpdate(md, nonce, strlen(nonce)) == 1 &&
              EVP_DigestFinal_ex(md, digest, &digest_len) == 1 && digest_len == 32;
    EVP_MD_CTX_free(md);
    if (!ok) return false;
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (strcmp(hex, hash) != 0) return false;
    for (int i = 0; i < bits; i++)
        if (digest[i / 8] & (0x80 >> (i % 8))) return false;
    return true;
}
