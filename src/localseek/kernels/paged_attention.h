/* One sequence's decode attention for one KV head, read through its block table (shared by
 * paged_decode_attention.c and gemma3_decode.c; see the former for layouts). */
#ifndef LOCALSEEK_PAGED_ATTENTION_H
#define LOCALSEEK_PAGED_ATTENTION_H

#include <immintrin.h>

#include "bf16.h"
#include "simd.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_GROUP 16 /* query heads per KV head */
#define MAX_DIM 512  /* head_dim and v_dim */

static inline __m512 load16(const void *p, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)p);
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static void attend_one(const char *q, const char *k_cache, const char *v_cache,
                       const int32_t *table, int64_t L, char *out, int64_t Hkv, int64_t h,
                       int64_t G, int64_t D, int64_t Dv, int64_t B, int64_t window, float scale,
                       int bf16) {
    const int64_t es = bf16 ? 2 : 4;
    float qf[MAX_GROUP + 3][MAX_DIM], acc[MAX_GROUP][MAX_DIM], mx[MAX_GROUP], sum[MAX_GROUP];
    const int64_t G4 = (G + 3) / 4 * 4; /* query rows padded with zeros: dots 4 at a time */
    for (int64_t g = 0; g < G; g++) {
        for (int64_t d = 0; d < D; d += 16)
            _mm512_storeu_ps(qf[g] + d,
                             _mm512_mul_ps(load16(q + ((h * G + g) * D + d) * es, bf16),
                                           _mm512_set1_ps(scale)));
        memset(acc[g], 0, sizeof(float) * Dv);
        mx[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    for (int64_t g = G; g < G4; g++) memset(qf[g], 0, sizeof(float) * D);
    /* Keys 16 at a time: their scores come out of one 16-way horizontal sum, and the online
     * softmax takes one vector exp and at most one rescale per block instead of a scalar
     * exp (and a possible rescale) per key. */
    __m512 dots[MAX_GROUP][16];
    const char *v_rows[16];
    float p[16];
    int64_t start = (window > 0 && L > window) ? L - window : 0;
    for (int64_t t0 = start; t0 < L; t0 += 16) {
        const int64_t n = L - t0 < 16 ? L - t0 : 16;
        for (int64_t j = 0; j < 16; j++) {
            if (j >= n) {
                for (int64_t g = 0; g < G; g++) dots[g][j] = _mm512_setzero_ps();
                continue;
            }
            const int64_t t = t0 + j, slot = (int64_t)table[t / B] * B + t % B;
            const char *k = k_cache + (slot * Hkv + h) * D * es;
            v_rows[j] = v_cache + (slot * Hkv + h) * Dv * es;
            for (int64_t g = 0; g < G4; g += 4) { /* four independent chains, k read once */
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t d = 0; d < D; d += 16) {
                    const __m512 kv = load16(k + d * es, bf16);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qf[g] + d), kv, a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qf[g + 1] + d), kv, a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(qf[g + 2] + d), kv, a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(qf[g + 3] + d), kv, a3);
                }
                dots[g][j] = a0;
                if (g + 1 < G) dots[g + 1][j] = a1;
                if (g + 2 < G) dots[g + 2][j] = a2;
                if (g + 3 < G) dots[g + 3][j] = a3;
            }
        }
        const __mmask16 valid = (__mmask16)((1u << n) - 1);
        for (int64_t g = 0; g < G; g++) {
            __m512 scores = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-INFINITY), sum16(dots[g]));
            float block_max = _mm512_reduce_max_ps(scores);
            if (block_max > mx[g]) {
                float shrink = expf(mx[g] - block_max); /* 0 on the first block */
                sum[g] *= shrink;
                for (int64_t d = 0; d < Dv; d += 16)
                    _mm512_storeu_ps(acc[g] + d,
                                     _mm512_mul_ps(_mm512_loadu_ps(acc[g] + d), _mm512_set1_ps(shrink)));
                mx[g] = block_max;
            }
            __m512 probs = _mm512_maskz_mov_ps(valid, exp512(_mm512_sub_ps(scores, _mm512_set1_ps(mx[g]))));
            sum[g] += _mm512_reduce_add_ps(probs);
            _mm512_storeu_ps(p, probs);
            for (int64_t d = 0; d < Dv; d += 16) { /* the accumulator stays in a register */
                __m512 a = _mm512_loadu_ps(acc[g] + d);
                for (int64_t j = 0; j < n; j++)
                    a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), load16(v_rows[j] + d * es, bf16), a);
                _mm512_storeu_ps(acc[g] + d, a);
            }
        }
    }
    for (int64_t g = 0; g < G; g++) {
        float inv = sum[g] > 0.0f ? 1.0f / sum[g] : 0.0f;
        char *o = out + (h * G + g) * Dv * es;
        for (int64_t d = 0; d < Dv; d++) {
            float value = acc[g][d] * inv;
            if (bf16)
                ((uint16_t *)o)[d] = to_bf16(value);
            else
                ((float *)o)[d] = value;
        }
    }
}

#endif
