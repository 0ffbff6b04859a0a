/*
 * Copyright (C) ngx_llm developers
 *
 * Leveled logging to stderr: one line per message, with time and level.
 */

#ifndef LLM_LOG_H
#define LLM_LOG_H

enum {
    LLM_LOG_ERR = 0,
    LLM_LOG_WARN,
    LLM_LOG_INFO,
    LLM_LOG_DEBUG
};

extern int  llm_log_level;

void llm_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* LLM_LOG_H */
