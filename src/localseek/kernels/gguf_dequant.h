/* One GGUF-quantized weight row to float32 (the blocks of gguf_dot.h, same layouts), for the
 * matmul's many-row path: there a row is dequantized once and multiplied with every activation
 * row in float32 FMAs, which beats int8 dot products once the rows are many (see gguf_matmul.c).
 * Every value is written as u * scale + offset with u an unsigned byte: Q8_0's signed bytes are
 * flipped to u = q + 128 (offset -128 d), Q4_0/Q5_0 have offsets -8 d / -16 d, a K-quant's min
 * is its offset, and Q6_K's -32 is folded into each 16-value sub-block's offset. */
#ifndef LOCALSEEK_GGUF_DEQUANT_H
#define LOCALSEEK_GGUF_DEQUANT_H

#include "gguf_dot.h"

/* out[i] = u[i] * scale + offset for the 32 bytes of u; the first 16 take (s0, o0), the last
 * 16 (s1, o1). */
static inline void u8x32_to_float(__m256i u, float s0, float o0, float s1, float o1, float *out) {
    const __m128i halves[2] = {_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1)};
    const float s[2] = {s0, s1}, o[2] = {o0, o1};
    for (int h = 0; h < 2; h++) {
        const __m256 scale = _mm256_set1_ps(s[h]), offset = _mm256_set1_ps(o[h]);
        const __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(halves[h]));
        const __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(halves[h], 8)));
        _mm256_storeu_ps(out + 16 * h, _mm256_fmadd_ps(a, scale, offset));
        _mm256_storeu_ps(out + 16 * h + 8, _mm256_fmadd_ps(b, scale, offset));
    }
}

static void dequant_row(int type, const uint8_t *w, int64_t K, float *out) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const int64_t nb = K / block_values(type);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * block_bytes(type);
        float *o = out + b * block_values(type);
        switch (type) {
        case T_Q4_0:
        case T_Q5_0: {
            const int five = type == T_Q5_0;
            const float d = half_to_float(blk);
            const __m256i u = q4_0_q5_0_bytes(blk, five);
            const float off = -(five ? 16.0f : 8.0f) * d;
            u8x32_to_float(u, d, off, d, off, o);
            break;
        }
        case T_Q8_0: {
            const float d = half_to_float(blk);
            const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), flip);
            u8x32_to_float(u, d, -128.0f * d, d, -128.0f * d, o);
            break;
        }
        case T_Q4_K:
        case T_Q5_K: {
            const int five = type == T_Q5_K;
            uint32_t sm[4];
            k4_scales(blk + 4, sm);
            const uint8_t *sc = (const uint8_t *)sm, *mn = sc + 8; /* x86: little-endian */
            const float d = half_to_float(blk), dmin = half_to_float(blk + 2);
            const uint8_t *qs = blk + (five ? 48 : 16);
            __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i lo, hi;
                k4_chunk(qs, c, five, &qh, &lo, &hi);
                const float s0 = d * sc[2 * c], o0 = -dmin * mn[2 * c];
                const float s1 = d * sc[2 * c + 1], o1 = -dmin * mn[2 * c + 1];
                u8x32_to_float(lo, s0, o0, s0, o0, o + 64 * c);
                u8x32_to_float(hi, s1, o1, s1, o1, o + 64 * c + 32);
            }
            break;
        }
        case T_Q6_K: {
            const int8_t *sc = (const int8_t *)(blk + 192);
            const float d = half_to_float(blk + 208);
            for (int n = 0; n < 2; n++) {
                __m256i q[4];
                q6_K_half(blk, n, q);
                for (int c = 0; c < 4; c++) {
                    const float s0 = d * sc[8 * n + 2 * c], s1 = d * sc[8 * n + 2 * c + 1];
                    u8x32_to_float(q[c], s0, -32.0f * s0, s1, -32.0f * s1, o + 128 * n + 32 * c);
                }
            }
            break;
        }
        }
    }
}

#endif
