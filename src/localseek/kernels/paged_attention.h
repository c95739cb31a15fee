/* One sequence's decode attention for one KV head, read through its block table (shared by
 * paged_decode_attention.c and gemma3_decode.c; see the former for layouts). */
#ifndef LOCALSEEK_PAGED_ATTENTION_H
#define LOCALSEEK_PAGED_ATTENTION_H

#include <immintrin.h>

#include "bf16.h"
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
    float qf[MAX_GROUP][MAX_DIM], acc[MAX_GROUP][MAX_DIM], mx[MAX_GROUP], sum[MAX_GROUP];
    for (int64_t g = 0; g < G; g++) {
        for (int64_t d = 0; d < D; d += 16)
            _mm512_storeu_ps(qf[g] + d,
                             _mm512_mul_ps(load16(q + ((h * G + g) * D + d) * es, bf16),
                                           _mm512_set1_ps(scale)));
        memset(acc[g], 0, sizeof(float) * Dv);
        mx[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    int64_t start = (window > 0 && L > window) ? L - window : 0;
    for (int64_t t = start; t < L; t++) {
        int64_t slot = (int64_t)table[t / B] * B + t % B;
        const char *k = k_cache + (slot * Hkv + h) * D * es;
        const char *v = v_cache + (slot * Hkv + h) * Dv * es;
        for (int64_t g = 0; g < G; g++) {
            __m512 dot = _mm512_setzero_ps();
            for (int64_t d = 0; d < D; d += 16)
                dot = _mm512_fmadd_ps(_mm512_loadu_ps(qf[g] + d), load16(k + d * es, bf16), dot);
            float score = _mm512_reduce_add_ps(dot);
            if (score > mx[g]) {
                float shrink = expf(mx[g] - score); /* 0 on the first key */
                sum[g] *= shrink;
                for (int64_t d = 0; d < Dv; d += 16)
                    _mm512_storeu_ps(acc[g] + d,
                                     _mm512_mul_ps(_mm512_loadu_ps(acc[g] + d), _mm512_set1_ps(shrink)));
                mx[g] = score;
            }
            float p = expf(score - mx[g]);
            sum[g] += p;
            __m512 pv = _mm512_set1_ps(p);
            for (int64_t d = 0; d < Dv; d += 16)
                _mm512_storeu_ps(acc[g] + d,
                                 _mm512_fmadd_ps(pv, load16(v + d * es, bf16), _mm512_loadu_ps(acc[g] + d)));
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
