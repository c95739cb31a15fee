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
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    const __m256i one = _mm256_set1_epi8(1), flip = _mm256_set1_epi8((char)0x80);
    const __m128i m4h = _mm_set1_epi8(0x0F);
    const int64_t nb = K / block_values(type);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * block_bytes(type);
        float *o = out + b * block_values(type);
        switch (type) {
        case T_Q4_0:
        case T_Q5_0: {
            const int five = type == T_Q5_0, bytes = five ? 22 : 18;
            const float d = half_to_float(blk);
            const __m128i x = _mm_loadu_si128((const __m128i *)(blk + bytes - 16));
            __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m4h), _mm_and_si128(x, m4h));
            if (five) {
                uint32_t qh;
                memcpy(&qh, blk + 2, 4);
                u = _mm256_or_si256(u, fifth_bits(qh));
            }
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
            uint8_t sc[8], mn[8];
            k4_scales(blk + 4, sc, mn);
            const float d = half_to_float(blk), dmin = half_to_float(blk + 2);
            const uint8_t *qs = blk + (five ? 48 : 16);
            __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(raw, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if (five) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(
                                                 _mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
                    qh = _mm256_srli_epi16(qh, 2);
                }
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
                const uint8_t *ql = blk + 64 * n, *qh = blk + 128 + 32 * n;
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
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
