/*
 * Copyright (C) ngx_llm developers
 */

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "llm_log.h"


int  llm_log_level = LLM_LOG_INFO;


void
llm_log(int level, const char *fmt, ...)
{
    char             line[1024], stamp[32];
    int              n;
    va_list          ap;
    time_t           now;
    struct tm        tm;
    static const char  *names[] = { "error", "warn", "info", "debug" };

    if (level > llm_log_level) {
        return;
    }

    now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);

    n = snprintf(line, sizeof(line), "%s llm-engine[%d] %s: ", stamp,
                 (int) getpid(), names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t) n - 1, fmt, ap);
    va_end(ap);

    if (n > (int) sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';

    /* one write, so lines from several threads do not interleave */
    (void) !write(STDERR_FILENO, line, (size_t) n);
}
