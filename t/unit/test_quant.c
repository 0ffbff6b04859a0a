/*
 * Copyright (C) ngx_llm developers
 *
 * Half-precision conversions and the dot products' agreement with
 * dequantization; the formats themselves are checked against llama.cpp
 * through the model fixtures.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "llm_gguf.h"
#include "llm_quant.h"


int
main(void)
{
    int       bad;
    float     f, x[256], y[256], want, got;
    uint8_t   blk[2 * 210];
    uint64_t  r;

    llm_quant_init();

    /* every f16 value survives f16 -> f32 -> f16 */
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        f = llm_fp16_to_fp32((uint16_t) h);

        if (f == f && llm_fp32_to_fp16(f) != h) {
            bad++;
        }
    }

    is_int(bad, 0, "every non-NaN f16 round-trips through f32");

    ok(llm_fp16_to_fp32(0x3c00) == 1.0f && llm_fp16_to_fp32(0xc000) == -2.0f
       && llm_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24)
       && isinf(llm_fp16_to_fp32(0x7c00)), "f16 constants");

    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even */
    is_int(llm_fp32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3c00,
           "f16 rounding: a tie goes to even (down)");
    is_int(llm_fp32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02,
           "f16 rounding: a tie goes to even (up)");
    is_int(llm_fp32_to_fp16(65520.0f), 0x7c00, "f16 overflow to infinity");
    is_int(llm_fp32_to_fp16(ldexpf(1.0f, -25) * 1.5f), 0x0001,
           "f16 subnormal rounding");

    is_int(llm_fp32_to_bf16(1.0f), 0x3f80, "bf16 of 1");
    is_int(llm_fp32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80,
           "bf16 rounding: a tie goes to even");
    ok(llm_bf16_to_fp32(0xc040) == -3.0f, "bf16 -3");

    /* for each block type, the dot product equals the dot of the
     * dequantized row, on random blocks with sane scales */
    r = 88172645463325252ULL;
    for (int i = 0; i < 256; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        x[i] = (float) (r % 2001) / 1000.0f - 1.0f;
    }

    {
        static const uint32_t  types[] = {
            LLM_TYPE_F32, LLM_TYPE_F16, LLM_TYPE_BF16, LLM_TYPE_Q8_0,
            LLM_TYPE_Q4_0, LLM_TYPE_Q4_K, LLM_TYPE_Q5_K, LLM_TYPE_Q6_K
        };

        for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
            uint32_t  type = types[t];
            int64_t   n = llm_ggml_blck_size(type) == 1 ? 64 : 256;
            size_t    bytes = llm_ggml_row_size(type, n);

            for (size_t i = 0; i < bytes; i++) {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                blk[i] = (uint8_t) r;
            }

            /* make every f16/bf16 field finite: clear exponent bits */
            if (type == LLM_TYPE_F32) {
                for (int64_t i = 0; i < n; i++) {
                    f = (float) ((int) (blk[4 * i] % 200) - 100) / 50.0f;
                    memcpy(blk + 4 * i, &f, 4);
                }

            } else if (type == LLM_TYPE_F16 || type == LLM_TYPE_BF16) {
                for (int64_t i = 0; i < n; i++) {
                    blk[2 * i + 1] &= 0x3b;
                }

            } else {
                for (size_t i = 1; i < bytes; i += 2) {
                    blk[i] &= 0x3b;
                }
            }

            ok(llm_quant_supported(type)
               && llm_dequant_row(type, blk, y, n) == LLM_OK,
               "%s dequantizes", llm_ggml_type_name(type));

            want = 0.0f;
            for (int64_t i = 0; i < n; i++) {
                want += y[i] * x[i];
            }

            got = llm_quant_dot(type)(blk, x, n);
            ok(fabsf(got - want) <= 1e-3f * (1.0f + fabsf(want)),
               "%s dot %g equals dequantized dot %g",
               llm_ggml_type_name(type), got, want);
        }
    }

    /* llm_quantize_row then llm_dequant_row: each element within the
     * type's step of its block (rms error well inside it) */
    {
        static const struct {
            uint32_t  type;
            double    rms;      /* rms error / rms of x, at most */
        } q[] = {
            { LLM_TYPE_F32, 0.0 }, { LLM_TYPE_F16, 1e-3 },
            { LLM_TYPE_BF16, 3e-3 }, { LLM_TYPE_Q8_0, 0.006 },
            { LLM_TYPE_Q4_0, 0.1 }, { LLM_TYPE_Q4_K, 0.09 },
            { LLM_TYPE_Q5_K, 0.045 }, { LLM_TYPE_Q6_K, 0.02 }
        };
        static float   src[1024], back[1024];
        static uint8_t  packed[1024 * 4];

        for (int i = 0; i < 1024; i++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            src[i] = ((float) (r % 20001) / 10000.0f - 1.0f)
                     * (i % 128 < 64 ? 0.02f : 0.5f);
        }

        for (size_t t = 0; t < sizeof(q) / sizeof(q[0]); t++) {
            double  se = 0.0, sx = 0.0;

            ok(llm_quantize_row(q[t].type, src, packed, 1024) == LLM_OK
               && llm_dequant_row(q[t].type, packed, back, 1024) == LLM_OK,
               "%s quantizes and back", llm_ggml_type_name(q[t].type));

            for (int i = 0; i < 1024; i++) {
                se += (double) (back[i] - src[i]) * (back[i] - src[i]);
                sx += (double) src[i] * src[i];
            }

            ok(sqrt(se / sx) <= q[t].rms, "%s round trip: relative rms "
               "error %.3g (at most %g)", llm_ggml_type_name(q[t].type),
               sqrt(se / sx), q[t].rms);
        }

        ok(llm_quantize_row(LLM_TYPE_Q4_K, src, packed, 100) == LLM_ERR
           && llm_quantize_row(LLM_TYPE_Q4_1, src, packed, 64) == LLM_ERR,
           "partial blocks and unknown types are refused");
    }

    ok(!llm_quant_supported(LLM_TYPE_Q4_1) && llm_quant_dot(99) == NULL,
       "Q4_1 and unknown types are not computed");

    return done_testing();
}
