/* out = x @ W.T for weights kept in GGUF's quantized block formats (see gguf_dot.h).
 *
 * x: N rows of K activations (float32, or bfloat16 when bf16 != 0), row stride ldx elements.
 * W: the concatenation of n_parts weight matrices; part p has rows[p] rows of ggml type
 *    types[p], row-major blocks at weights[p] (a GGUF tensor's bytes as stored). A fused
 *    projection (q/k/v, gate/up) whose parts were quantized to different types is one call.
 * out: N rows; part p's outputs land in the columns after those of the parts before it, row
 *    stride ldo elements, in x's element type.
 *
 * Up to four rows (decode): the activations are quantized to int8 per 32 values in one or two
 * levels (all threads), then every thread takes a contiguous range of output rows across the
 * parts, each 32-value chunk of weights unpacked once and multiplied with every row in int32:
 * the weights are read once and the step is memory-bound. Above four rows (prefill, batched
 * decode) the integer work per weight grows with the rows, so each weight row is instead
 * dequantized to float32 once (gguf_dequant.h) and multiplied with the float32 activations in
 * FMAs, four weight rows by two activation rows at a time (~2x the int8 path's rate at 16 rows
 * on an AVX2 EPYC, and exact). Activations are walked in panels small enough for the caches.
 * Returns 0, or 1 for arguments it does not handle (the caller falls back to dequantizing).
 */
#include "bf16.h"
#include "gguf_dequant.h"
#include "gguf_dot.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#define MAX_PARTS 8
#define PANEL_ROWS 64 /* activation rows per panel: 64 x K int8 stays in L2 for K up to ~16k */
#define FLOAT_PANEL 64 /* activation rows per panel of the float path */
#define W_ROWS 4       /* weight rows dequantized together in the float path */

static void load8(const char *x, int bf16, int64_t i, __m256 *v) {
    *v = bf16 ? bf16_load8((const uint16_t *)x + i) : _mm256_loadu_ps((const float *)x + i);
}

/* 32 values to int8 with one scale (amax / 127); returns the rounding residual in v. */
static void quantize32(__m256 *v, int8_t *q, float *d, float *s16, float *s32) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    {
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m256i r[4];
        for (int k = 0; k < 4; k++) r[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inv)));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p, order));
        for (int k = 0; k < 4; k++) /* what the int8 values miss, exactly (|v| <= scale / 2) */
            v[k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(r[k]), _mm256_set1_ps(scale), v[k]);
        int32_t sums[2];
        for (int half = 0; half < 2; half++) {
            __m256i s = _mm256_add_epi32(r[2 * half], r[2 * half + 1]);
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
            sums[half] = _mm_cvtsi128_si32(t);
        }
        *d = scale;
        s16[0] = scale * (float)sums[0];
        s16[1] = scale * (float)sums[1];
        *s32 = s16[0] + s16[1];
    }
}

/* Activation row x to `levels` consecutive int8 rows from (q, d, s16, s32): level 0
 * quantizes x, level 1 what level 0 missed, so two levels carry ~15 bits. */
static void quantize_row(const char *x, int bf16, int64_t K, int levels, int8_t *q, float *d,
                         float *s16, float *s32) {
    const int64_t nb = K / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) load8(x, bf16, b * 32 + 8 * k, &v[k]);
        for (int l = 0; l < levels; l++)
            quantize32(v, q + l * K + b * 32, d + l * nb + b, s16 + l * 2 * nb + 2 * b,
                       s32 + l * nb + b);
    }
}

static void store_out(char *out, int bf16, int64_t i, float v) {
    if (bf16)
        ((uint16_t *)out)[i] = to_bf16(v);
    else
        ((float *)out)[i] = v;
}

/* out[n, m] for W_ROWS weight rows (dequantized in w, rows K floats apart) and 2 activation
 * rows (x0, x1): eight float32 accumulators, each 8-wide load of an activation row feeding four
 * FMAs. */
static inline void dot_4x2(const float *w, int64_t K, const float *x0, const float *x1,
                           float res[W_ROWS][2]) {
    __m256 acc[W_ROWS][2];
    for (int i = 0; i < W_ROWS; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 a = _mm256_loadu_ps(x0 + k), b = _mm256_loadu_ps(x1 + k);
        for (int i = 0; i < W_ROWS; i++) {
            const __m256 wv = _mm256_loadu_ps(w + i * K + k);
            acc[i][0] = _mm256_fmadd_ps(wv, a, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(wv, b, acc[i][1]);
        }
    }
    for (int i = 0; i < W_ROWS; i++) res[i][0] = hsum8(acc[i][0]), res[i][1] = hsum8(acc[i][1]);
}

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
        if (!w) {
            #pragma omp atomic write
            failed = 1;
        }
        for (int64_t n0 = 0; w && n0 < N; n0 += FLOAT_PANEL) {
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
                    for (int64_t n = n0; n < n1; n += 2) {
                        const int two = n + 1 < n1;
                        float res[W_ROWS][2];
                        dot_4x2(w, K, xf + n * K, xf + (n + two) * K, res);
                        for (int i = 0; i < mr; i++) {
                            store_out((char *)out, bf16, n * ldo + m + i, res[i][0]);
                            if (two) store_out((char *)out, bf16, (n + 1) * ldo + m + i, res[i][1]);
                        }
                    }
                }
            }
        }
        free(w);
    }
    free(xf);
    return failed;
}

int localseek_gguf_matmul(const void *x, int64_t N, int64_t K, int64_t ldx, int bf16,
                          int64_t n_parts, const int32_t *types, const void *const *weights,
                          const int64_t *rows, void *out, int64_t ldo, int levels) {
    if (N < 0 || K <= 0 || K % 32 || n_parts < 1 || n_parts > MAX_PARTS) return 1;
    if (levels != 1 && levels != 2) return 1;
    int64_t first[MAX_PARTS + 1] = {0}; /* first output column of each part */
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
    const int64_t nb32 = K / 32, V = N * levels; /* V quantized rows, `levels` per input row */
    char *scratch = malloc((size_t)V * (K + sizeof(float) * (4 * nb32)) + 64);
    if (!scratch) return 1;
    int8_t *aq = (int8_t *)scratch;
    float *ad = (float *)(scratch + ((V * K + 63) & ~(int64_t)63));
    float *as16 = ad + V * nb32, *as32 = as16 + 2 * V * nb32;
    const int64_t es = bf16 ? 2 : 4;
    /* input rows per dot call: MAX_ACT_ROWS quantized rows hold this many */
    const int64_t per_call = MAX_ACT_ROWS / levels, panel = PANEL_ROWS / levels;

    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const int64_t v = n * levels;
            quantize_row((const char *)x + n * ldx * es, bf16, K, levels, aq + v * K,
                         ad + v * nb32, as16 + 2 * v * nb32, as32 + v * nb32);
        }
        /* implicit barrier: every row is quantized before any dot product */
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        const int64_t lo = total * t / T, hi = total * (t + 1) / T;
        for (int64_t n0 = 0; n0 < N; n0 += panel) {
            const int64_t n1 = n0 + panel < N ? n0 + panel : N;
            for (int64_t p = 0; p < n_parts; p++) {
                const int64_t r0 = lo > first[p] ? lo : first[p];
                const int64_t r1 = hi < first[p + 1] ? hi : first[p + 1];
                const int64_t row_bytes = K / block_values(types[p]) * block_bytes(types[p]);
                for (int64_t m = r0; m < r1; m++) {
                    const uint8_t *w = (const uint8_t *)weights[p] + (m - first[p]) * row_bytes;
                    for (int64_t n = n0; n < n1; n += per_call) {
                        const int64_t rows_here = n1 - n < per_call ? n1 - n : per_call;
                        const int nr = (int)(rows_here * levels);
                        act_row a[MAX_ACT_ROWS];
                        for (int r = 0; r < nr; r++) {
                            const int64_t v = n * levels + r;
                            a[r] = (act_row){aq + v * K, ad + v * nb32, as16 + 2 * v * nb32,
                                             as32 + v * nb32};
                        }
                        float res[MAX_ACT_ROWS];
                        dot_row(types[p], w, K, a, res, nr);
                        for (int64_t i = 0; i < rows_here; i++) {
                            float sum = 0.0f;
                            for (int l = 0; l < levels; l++) sum += res[i * levels + l];
                            store_out((char *)out, bf16, (n + i) * ldo + m, sum);
                        }
                    }
                }
            }
        }
    }
    free(scratch);
    return 0;
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_gguf_matmul_isa(void) {
#if defined(__AVX512VNNI__)
    return "avx512_vnni";
#else
    return "avx2";
#endif
}
