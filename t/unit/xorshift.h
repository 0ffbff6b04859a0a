/*
 * Copyright (C) ngx_llm developers
 *
 * The tests' own generator, xorshift32: the same numbers on every
 * machine and libc.  Each test keeps its state and seed.
 */

#ifndef LLM_TEST_XORSHIFT_H
#define LLM_TEST_XORSHIFT_H

#include <stdint.h>


static inline uint32_t
xorshift32(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

#endif /* LLM_TEST_XORSHIFT_H */
