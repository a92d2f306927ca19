/*
 * Unit tests of the bot's pure part: nt_bot_reverse reverses UTF-8 text by
 * code point (ASCII, Cyrillic, CJK, emoji, mixed), keeps invalid bytes as
 * units of their own, and is its own inverse. The bot's threads, bus and
 * store traffic are covered end to end by tests/integration/it_bot.c.
 */
#include "services/bot.h"

#include <stdlib.h>
#include <string.h>

#include "unit/check.h"

static void check_reverse(const char *in, const char *want)
{
    size_t len = strlen(in);
    char *out = malloc(len + 1);
    char *back = malloc(len + 1);
    CHECK_EQ_INT(nt_bot_reverse(in, len, out), len);
    CHECK_STR_EQ(out, want);
    /* Reversing twice gives the text back. */
    nt_bot_reverse(out, len, back);
    CHECK_STR_EQ(back, in);
    free(out);
    free(back);
}

int main(void)
{
    check_reverse("", "");
    check_reverse("a", "a");
    check_reverse("hello", "olleh");
    check_reverse("Hello, world!", "!dlrow ,olleH");
    check_reverse("Привет", "тевирП");
    check_reverse("Съешь же ещё", "ёще еж ьшеъС");
    check_reverse("日本語テキスト", "トスキテ語本日");
    check_reverse("😀🎉", "🎉😀");
    check_reverse("a😀b", "b😀a");
    check_reverse("мир 🌍 world 世界", "界世 dlrow 🌍 рим");
    /* Two-byte Latin letters and a 4-byte CJK extension character. */
    check_reverse("Ωé𠀋x", "x𠀋éΩ");
    /* Not grapheme-aware: the combining acute (U+0301) moves in front of
     * its base 'e', and ZWJ sequences come apart. */
    check_reverse("e\xcc\x81x", "x\xcc\x81"
                                "e");
    check_reverse("👩\u200d💻", "💻\u200d👩");

    /* Invalid UTF-8: stray continuation, truncated sequence, bad lead byte:
     * each bad byte is a unit. */
    char out[16];
    CHECK_EQ_INT(nt_bot_reverse("a\x80"
                                "b",
                                3, out),
                 3);
    CHECK(memcmp(out,
                 "b\x80"
                 "a",
                 4) == 0);
    CHECK_EQ_INT(nt_bot_reverse("\xe6\x97", 2, out), 2);
    CHECK(memcmp(out, "\x97\xe6", 3) == 0);
    CHECK_EQ_INT(nt_bot_reverse("\xffz", 2, out), 2);
    CHECK(memcmp(out, "z\xff", 3) == 0);
    /* A text with NUL-free bytes but an embedded length shorter than the
     * string: only len bytes are read. */
    CHECK_EQ_INT(nt_bot_reverse("abcdef", 3, out), 3);
    CHECK_STR_EQ(out, "cba");
    return check_exit();
}
