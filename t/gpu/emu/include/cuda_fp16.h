/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator's half type (t/gpu/emu/README.md): storage and the
 * conversions the kernels use, rounding to nearest even as the device
 * does.
 */

#ifndef LLM_EMU_CUDA_FP16_H
#define LLM_EMU_CUDA_FP16_H

#include <stdint.h>
#include <string.h>


typedef struct __half {
    unsigned short  x;
} __half;


static inline float
__half2float(__half h)
{
    uint32_t  s, e, m, bits;
    float     f;

    s = (uint32_t) (h.x & 0x8000) << 16;
    e = (h.x >> 10) & 0x1f;
    m = h.x & 0x3ff;

    if (e == 0x1f) {
        bits = s | 0x7f800000u | (m << 13);

    } else if (e != 0) {
        bits = s | ((e + 112) << 23) | (m << 13);

    } else if (m == 0) {
        bits = s;

    } else {
        /* subnormal: m * 2^-24, exactly */
        f = (float) m * (1.0f / 16777216.0f);
        memcpy(&bits, &f, sizeof(bits));
        bits |= s;
    }

    memcpy(&f, &bits, sizeof(f));
    return f;
}


static inline __half
__float2half_rn(float f)
{
    uint32_t  bits, s, a, e, m, r;
    __half    h;

    memcpy(&bits, &f, sizeof(bits));
    s = (bits >> 16) & 0x8000;
    a = bits & 0x7fffffffu;

    if (a > 0x7f800000u) {
        h.x = (unsigned short) (s | 0x7e00);            /* NaN */
        return h;
    }

    if (a >= 0x477ff000u) {
        h.x = (unsigned short) (s | 0x7c00);            /* inf, overflow */
        return h;
    }

    e = a >> 23;

    if (e < 113) {
        /* subnormal or zero: round a's value / 2^-24 to an integer */
        if (e < 102) {
            h.x = (unsigned short) s;
            return h;
        }

        m = (a & 0x7fffff) | 0x800000;
        r = 126 - e;                                    /* shift, 14..24 */
        a = m >> r;
        m &= (1u << r) - 1;

        if (m > (1u << (r - 1)) || (m == (1u << (r - 1)) && (a & 1))) {
            a++;
        }

        h.x = (unsigned short) (s | a);
        return h;
    }

    m = a & 0x1fff;
    a = ((e - 112) << 10) | ((a >> 13) & 0x3ff);

    if (m > 0x1000 || (m == 0x1000 && (a & 1))) {
        a++;                                            /* may carry into e */
    }

    h.x = (unsigned short) (s | a);
    return h;
}


static inline __half
__ushort_as_half(unsigned short u)
{
    __half  h;

    h.x = u;
    return h;
}


static inline unsigned short
__half_as_ushort(__half h)
{
    return h.x;
}

#endif /* LLM_EMU_CUDA_FP16_H */
