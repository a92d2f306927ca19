/*
 * Memory kept for reuse instead of freed (the caches of buf.c and of the
 * gateway's sends) is poisoned under AddressSanitizer while it waits, so a
 * use after the owner let go is still reported. Without ASan these do
 * nothing.
 */
#ifndef NT_ASAN_H
#define NT_ASAN_H

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1 /* clang says it this way */
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define NT_ASAN_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define NT_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define NT_ASAN_POISON(p, n) ((void)(p), (void)(n))
#define NT_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
