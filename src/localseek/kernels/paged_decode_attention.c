/* Paged attention for decoding sequences (one query row each), on the CPU with AVX-512.
 *
 * Reads K/V straight from the paged cache through each sequence's block table: no gather into
 * a padded copy, no mask tensor, one pass over the context with an online softmax (running max
 * and sum per query head, the accumulator rescaled when the max grows). The query heads that
 * share a KV head are processed together, so each cached K/V row is read once for all of them.
 *
 * Layouts (all contiguous): q [S, Hq, D]; k_cache [blocks, B, Hkv, D]; v_cache
 * [blocks, B, Hkv, Dv]; block_tables int32 [S, table_stride]; context_lens int32 [S];
 * out [S, Hq, Dv]. Element type float32, or bfloat16 when bf16 != 0 (sums stay float32).
 * window > 0: a query at position L-1 sees only the last `window` keys (L - window .. L - 1).
 * Returns 0, or 1 for shapes it does not handle (the caller uses its torch path).
 */
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

int localseek_paged_decode_attention(const void *q, const void *k_cache, const void *v_cache,
                                     const int32_t *block_tables, const int32_t *context_lens,
                                     void *out, int64_t S, int64_t Hq, int64_t Hkv, int64_t D,
                                     int64_t Dv, int64_t B, int64_t table_stride, int64_t window,
                                     float scale, int bf16) {
    if (S < 0 || Hkv <= 0 || Hq % Hkv || Hq / Hkv > MAX_GROUP || D % 16 || Dv % 16 ||
        D > MAX_DIM || Dv > MAX_DIM || D <= 0 || Dv <= 0 || B <= 0)
        return 1;
    const int64_t G = Hq / Hkv, es = bf16 ? 2 : 4;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < Hkv; h++)
            attend_one((const char *)q + s * Hq * D * es, (const char *)k_cache,
                       (const char *)v_cache, block_tables + s * table_stride, context_lens[s],
                       (char *)out + s * Hq * Dv * es, Hkv, h, G, D, Dv, B, window, scale, bf16);
    return 0;
}
