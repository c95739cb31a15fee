/* out = x @ W.T for weights kept in GGUF's quantized block formats (see gguf_dot.h).
 *
 * x: N rows of K activations (float32, or bfloat16 when bf16 != 0), row stride ldx elements.
 * W: the concatenation of n_parts weight matrices; part p has rows[p] rows of ggml type
 *    types[p], row-major blocks at weights[p] (a GGUF tensor's bytes as stored). A fused
 *    projection (q/k/v, gate/up) whose parts were quantized to different types is one call.
 * out: N rows; part p's outputs land in the columns after those of the parts before it, row
 *    stride ldo elements, in x's element type.
 *
 * Up to four rows (decode): each activation row is quantized to int8 in blocks of 256 values
 * (32 when K is not a multiple of 256) in one or two levels (act_row in gguf_dot.h), then every
 * thread takes a contiguous range of output rows across the parts; each weight block is unpacked
 * once and multiplied with every row in int32 (a K-quant super-block accumulates in int32 with
 * its sub-block scales, float once per super-block): the weights are read once. Above four rows
 * (prefill, batched decode) the integer work per weight grows with the rows, so each weight row
 * is instead dequantized to float32 once (gguf_dequant.h) and multiplied with the float32
 * activations in FMAs, four weight rows by three activation rows at a time (~2x the int8 path's
 * rate at 16 rows on an AVX2 EPYC, and exact). Activations are walked in panels small enough
 * for the caches.
 * gguf_matmul returns 0, or 1 for arguments it does not handle (the caller falls back to
 * dequantizing). Shared by gguf_matmul.c (the call on its own) and gguf_decode_step.c.
 */
#ifndef LOCALSEEK_GGUF_MATMUL_H
#define LOCALSEEK_GGUF_MATMUL_H

#include "bf16.h"
#include "gguf_dequant.h"
#include "gguf_dot.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#define MAX_WEIGHT_PARTS 8
#define FLOAT_PANEL 64 /* activation rows per panel of the float path */
#define W_ROWS 4       /* weight rows dequantized together in the float path */
#define K_CHUNK 1024   /* values of those rows multiplied before moving on (16 KB: L1) */

static void load8(const char *x, int bf16, int64_t i, __m256 *v) {
    *v = bf16 ? bf16_load8((const uint16_t *)x + i) : _mm256_loadu_ps((const float *)x + i);
}

static inline int32_t hsum8_epi32(__m256i s) {
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t);
}

/* 32 int32 values (4 x 8) to int8 at q, saturating; their sums over each 16 into sums. */
static void pack32(const __m256i r[4], int8_t *q, int32_t sums[2]) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p, order));
    sums[0] = hsum8_epi32(_mm256_add_epi32(r[0], r[1]));
    sums[1] = hsum8_epi32(_mm256_add_epi32(r[2], r[3]));
}

/* r[k] * 256 + r2[k] (32 values, |.| <= 32639) as int16 at q16, in order. */
static void pack16(const __m256i r[4], const __m256i r2[4], int16_t *q16) {
    __m256i c[4];
    for (int k = 0; k < 4; k++) c[k] = _mm256_add_epi32(_mm256_slli_epi32(r[k], 8), r2[k]);
    for (int h = 0; h < 2; h++) /* packs interleaves 128-bit lanes; 0xD8 restores the order */
        _mm256_storeu_si256((__m256i *)(q16 + 16 * h),
                            _mm256_permute4x64_epi64(_mm256_packs_epi32(c[2 * h], c[2 * h + 1]), 0xD8));
}

/* Activation row x to int8 in blocks of qb values (act_row in gguf_dot.h): d = amax / 127,
 * level one q = round(x / d); level two q2 = round((x - d q) * 256 / d), clipped to +-127
 * (|x - d q| <= d / 2, so only +-128 is clipped; -128 would not survive Q8_0's sign flip).
 * q16, when given, holds 256 q + q2 for Q8_0 (dot_q8_0). */
static void quantize_row(const char *x, int bf16, int64_t K, int qb, int levels, int8_t *q,
                         int8_t *q2, int16_t *q16, float *d, float *s16, float *s32) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo8 = _mm256_set1_epi32(-127), hi8 = _mm256_set1_epi32(127);
    for (int64_t b0 = 0; b0 < K; b0 += qb) {
        __m256 m = _mm256_setzero_ps();
        for (int64_t i = b0; i < b0 + qb; i += 8) {
            __m256 v;
            load8(x, bf16, i, &v);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[b0 / qb] = scale;
        for (int64_t c = b0; c < b0 + qb; c += 32) {
            __m256 v[4];
            __m256i r[4];
            int32_t sums[2], sums2[2] = {0, 0};
            for (int k = 0; k < 4; k++) {
                load8(x, bf16, c + 8 * k, &v[k]);
                r[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inv)));
            }
            pack32(r, q + c, sums);
            if (levels == 2) {
                __m256i r2[4];
                for (int k = 0; k < 4; k++) { /* what level one misses, exactly */
                    const __m256 res = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(r[k]), _mm256_set1_ps(scale), v[k]);
                    r2[k] = _mm256_cvtps_epi32(_mm256_mul_ps(res, _mm256_set1_ps(inv * 256.0f)));
                    r2[k] = _mm256_min_epi32(_mm256_max_epi32(r2[k], lo8), hi8);
                }
                pack32(r2, q2 + c, sums2);
                if (q16) pack16(r, r2, q16 + c);
            }
            for (int k = 0; k < 2; k++)
                s16[c / 16 + k] = scale * ((float)sums[k] + (float)sums2[k] * (1.0f / 256.0f));
            s32[c / 32] = s16[c / 16] + s16[c / 16 + 1];
        }
    }
}

static void store_out(char *out, int bf16, int64_t i, float v) {
    if (bf16)
        ((uint16_t *)out)[i] = to_bf16(v);
    else
        ((float *)out)[i] = v;
}

/* Partial dot products of W_ROWS dequantized weight rows (w, rows ldw floats apart) with nr
 * activation rows (x, ldx apart) over len values, added to acc[i][r] (8 lanes each, summed at
 * the end). 4 x 3 keeps twelve accumulators in flight (the FMA latency times both pipes) and
 * reads 7 vectors per 12 FMAs; the caller walks K in chunks so the four weight rows stay in L1. */
static inline __attribute__((always_inline)) void dot_4xn(const float *w, int64_t ldw,
                                                          const float *x, int64_t ldx,
                                                          int64_t len, int nr, __m256 *acc) {
    __m256 c[W_ROWS][3];
    for (int i = 0; i < W_ROWS; i++)
        for (int r = 0; r < nr; r++) c[i][r] = acc[i * 3 + r];
    for (int64_t k = 0; k < len; k += 8) {
        __m256 a[3];
        for (int r = 0; r < nr; r++) a[r] = _mm256_loadu_ps(x + r * ldx + k);
        for (int i = 0; i < W_ROWS; i++) {
            const __m256 wv = _mm256_loadu_ps(w + i * ldw + k);
            for (int r = 0; r < nr; r++) c[i][r] = _mm256_fmadd_ps(wv, a[r], c[i][r]);
        }
    }
    for (int i = 0; i < W_ROWS; i++)
        for (int r = 0; r < nr; r++) acc[i * 3 + r] = c[i][r];
}

/* The accumulators matmul_float keeps for `rows` activation rows: W_ROWS x 3 vectors per
 * group of three rows (dot_4xn), the last group possibly short. */
static inline int64_t acc_vectors(int64_t rows) { return (rows + 2) / 3 * W_ROWS * 3; }

/* Many activation rows: each weight row is dequantized to float32 once per panel and multiplied
 * with the float32 activations (exact products; the int8 path's arithmetic per weight grows with
 * the rows, this one's dequantization does not). */
static int matmul_float(const char *x, int64_t N, int64_t K, int64_t ldx, int bf16,
                        int64_t n_parts, const int32_t *types, const void *const *weights,
                        const int64_t *first, void *out, int64_t ldo) {
    float *xf = malloc((size_t)N * K * sizeof(float));
    if (!xf) return 1;
    const int64_t total = first[n_parts], es = bf16 ? 2 : 4;
    int failed = 0;
    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k += 8) {
                __m256 v;
                load8(x + n * ldx * es, bf16, k, &v);
                _mm256_storeu_ps(xf + n * K + k, v);
            }
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        const int64_t lo = total * t / T, hi = total * (t + 1) / T;
        float *w = malloc((size_t)W_ROWS * K * sizeof(float));
        __m256 *acc = aligned_alloc(32, (size_t)acc_vectors(FLOAT_PANEL) * sizeof(__m256));
        if (!w || !acc) {
            #pragma omp atomic write
            failed = 1;
        }
        for (int64_t n0 = 0; w && acc && n0 < N; n0 += FLOAT_PANEL) {
            const int64_t n1 = n0 + FLOAT_PANEL < N ? n0 + FLOAT_PANEL : N;
            for (int64_t p = 0; p < n_parts; p++) {
                const int64_t r0 = lo > first[p] ? lo : first[p];
                const int64_t r1 = hi < first[p + 1] ? hi : first[p + 1];
                const int64_t row_bytes = K / block_values(types[p]) * block_bytes(types[p]);
                for (int64_t m = r0; m < r1; m += W_ROWS) {
                    const int mr = r1 - m < W_ROWS ? (int)(r1 - m) : W_ROWS;
                    for (int i = 0; i < W_ROWS; i++) /* short groups repeat their last row */
                        dequant_row(types[p],
                                    (const uint8_t *)weights[p] + (m + (i < mr ? i : mr - 1) - first[p]) * row_bytes,
                                    K, w + i * K);
                    for (int64_t j = 0; j < acc_vectors(n1 - n0); j++) acc[j] = _mm256_setzero_ps();
                    for (int64_t k0 = 0; k0 < K; k0 += K_CHUNK) {
                        const int64_t len = K - k0 < K_CHUNK ? K - k0 : K_CHUNK;
                        for (int64_t n = n0; n < n1; n += 3) {
                            __m256 *a = acc + (n - n0) / 3 * W_ROWS * 3;
                            const float *xr = xf + n * K + k0;
                            if (n1 - n >= 3) dot_4xn(w + k0, K, xr, K, len, 3, a);
                            else if (n1 - n == 2) dot_4xn(w + k0, K, xr, K, len, 2, a);
                            else dot_4xn(w + k0, K, xr, K, len, 1, a);
                        }
                    }
                    for (int64_t n = n0; n < n1; n++) {
                        const __m256 *a = acc + (n - n0) / 3 * W_ROWS * 3 + (n - n0) % 3;
                        for (int i = 0; i < mr; i++) store_out((char *)out, bf16, n * ldo + m + i, hsum8(a[i * 3]));
                    }
                }
            }
        }
        free(w);
        free(acc);
    }
    free(xf);
    return failed;
}

static int gguf_matmul(const void *x, int64_t N, int64_t K, int64_t ldx, int bf16,
                       int64_t n_parts, const int32_t *types, const void *const *weights,
                       const int64_t *rows, void *out, int64_t ldo, int levels) {
    if (N < 0 || K <= 0 || K % 32 || n_parts < 1 || n_parts > MAX_WEIGHT_PARTS) return 1;
    if (levels != 1 && levels != 2) return 1;
    int64_t first[MAX_WEIGHT_PARTS + 1] = {0}; /* first output column of each part */
    for (int64_t p = 0; p < n_parts; p++) {
        if (block_bytes(types[p]) == 0 || K % block_values(types[p]) || rows[p] < 0) return 1;
        first[p + 1] = first[p] + rows[p];
    }
    const int64_t total = first[n_parts];
    if (N == 0 || total == 0) return 0;
    if (ldo < total || ldx < K) return 1;
    if (N > MAX_ACT_ROWS) /* see matmul_float */
        return matmul_float((const char *)x, N, K, ldx, bf16, n_parts, types, weights, first,
                            out, ldo);
    /* activation blocks of a whole super-block when the row allows (gguf_dot.h) */
    const int qb_log2 = K % 256 == 0 ? 8 : 5, qb = 1 << qb_log2;
    for (int64_t p = 0; p < n_parts; p++)
        if (block_values(types[p]) > qb) return 1;
    int signed_weights = 0; /* Q8_0 takes both levels as one int16 (dot_q8_0) */
    for (int64_t p = 0; p < n_parts; p++) signed_weights |= types[p] == T_Q8_0;
    const int with16 = levels == 2 && signed_weights;
    const size_t floats = (size_t)K / qb + K / 16 + K / 32; /* d, s16, s32 of one row */
    const int64_t int_bytes = (2 + 2 * with16) * N * K; /* q, q2 (and q16) of every row */
    char *scratch = malloc((size_t)int_bytes + (size_t)N * sizeof(float) * floats + 64);
    if (!scratch) return 1;
    int8_t *aq = (int8_t *)scratch, *aq2 = aq + N * K;
    int16_t *aq16 = with16 ? (int16_t *)(aq2 + N * K) : NULL;
    float *af = (float *)(scratch + ((int_bytes + 63) & ~(int64_t)63));
    act_row a[MAX_ACT_ROWS];
    for (int64_t n = 0; n < N; n++) {
        float *f = af + n * floats;
        a[n] = (act_row){aq + n * K, aq2 + n * K, with16 ? aq16 + n * K : NULL, f, f + K / qb,
                         f + K / qb + K / 16, qb_log2};
    }
    const int64_t es = bf16 ? 2 : 4;

    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            quantize_row((const char *)x + n * ldx * es, bf16, K, qb, levels, aq + n * K,
                         aq2 + n * K, (int16_t *)a[n].q16, (float *)a[n].d, (float *)a[n].s16,
                         (float *)a[n].s32);
        /* implicit barrier: every row is quantized before any dot product */
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        const int64_t lo = total * t / T, hi = total * (t + 1) / T;
        for (int64_t p = 0; p < n_parts; p++) {
            const int64_t r0 = lo > first[p] ? lo : first[p];
            const int64_t r1 = hi < first[p + 1] ? hi : first[p + 1];
            const int64_t row_bytes = K / block_values(types[p]) * block_bytes(types[p]);
            for (int64_t m = r0; m < r1; m++) {
                float res[MAX_ACT_ROWS];
                dot_row(types[p], (const uint8_t *)weights[p] + (m - first[p]) * row_bytes, K, a,
                        res, (int)N, levels);
                for (int64_t n = 0; n < N; n++) store_out((char *)out, bf16, n * ldo + m, res[n]);
            }
        }
    }
    free(scratch);
    return 0;
}

#endif
