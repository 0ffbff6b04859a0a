/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator's bfloat16 (t/gpu/emu/README.md): storage and the
 * conversions the kernels use, rounding to nearest even.
 */

#ifndef LLM_EMU_CUDA_BF16_H
#define LLM_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>


typedef struct __nv_bfloat16 {
    unsigned short  x;
} __nv_bfloat16;


static inline float
__bfloat162float(__nv_bfloat16 h)
{
    uint32_t  bits = (uint32_t) h.x << 16;
    float     f;

    memcpy(&f, &bits, sizeof(f));
    return f;
}


static inline __nv_bfloat16
__float2bfloat16_rn(float f)
{
    uint32_t        bits;
    __nv_bfloat16   h;

    memcpy(&bits, &f, sizeof(bits));

    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        h.x = (unsigned short) ((bits >> 16) | 0x40);    /* quiet NaN */
        return h;
    }

    bits += 0x7fff + ((bits >> 16) & 1);
    h.x = (unsigned short) (bits >> 16);
    return h;
}

#endif /* LLM_EMU_CUDA_BF16_H */
