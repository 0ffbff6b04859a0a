/*
 * Copyright (C) ngx_llm developers
 *
 * Minimal TAP for C unit tests run by prove: ok(), is_int(), diag(),
 * skip_all(), done_testing().  Each test file is one program.
 */

#ifndef LLM_TAP_H
#define LLM_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int  tap_n;
static int  tap_failed;


static void __attribute__((unused))
diag(const char *fmt, ...)
{
    va_list  ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}


static int __attribute__((unused))
ok_at(int cond, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    tap_n++;
    printf("%sok %d - ", cond ? "" : "not ", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed++;
        printf("#   failed at %s line %d\n", file, line);
    }
    fflush(stdout);
    return cond;
}

#define ok(cond, ...)  ok_at((cond) != 0, __FILE__, __LINE__, __VA_ARGS__)

#define is_int(got, want, ...)                                             \
    do {                                                                   \
        long long  got_ = (long long) (got), want_ = (long long) (want);   \
        if (!ok_at(got_ == want_, __FILE__, __LINE__, __VA_ARGS__)) {      \
            diag("got %lld, want %lld", got_, want_);                     \
        }                                                                  \
    } while (0)


static void __attribute__((unused))
skip_all(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
    exit(0);
}


static int __attribute__((unused))
done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif /* LLM_TAP_H */
