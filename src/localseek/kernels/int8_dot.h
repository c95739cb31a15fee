/* Dot products of one int8 weight row with one to four float32 activation rows (AVX-512 or
 * AVX2), shared by int8_matvec.c and gemma3_decode.c.
 *
 * The row is read 64 bytes (AVX2: 32) at a time and widened to float32 once for all the
 * activation rows, so a matvec over M <= 4 rows reads each weight byte from memory once.
 * K % 64 == 0.
 */
#ifndef LOCALSEEK_INT8_DOT_H
#define LOCALSEEK_INT8_DOT_H

#include <immintrin.h>
#include <stdint.h>

#include "vec.h"

#if VW == 16

#define WIDEN(b, i) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(b, i)))

#define DEFINE_INT8_DOT(M)                                                                 \
    static inline void int8_dot_##M(const int8_t *row, const float *x, int64_t K,          \
                                    float *out) {                                          \
        __m512 acc[M][4];                                                                  \
        for (int m = 0; m < M; m++)                                                        \
            for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();                   \
        for (int64_t k = 0; k < K; k += 64) {                                              \
            __m512i b = _mm512_loadu_si512((const void *)(row + k));                       \
            __m512 w0 = WIDEN(b, 0), w1 = WIDEN(b, 1), w2 = WIDEN(b, 2), w3 = WIDEN(b, 3); \
            for (int m = 0; m < M; m++) {                                                  \
                const float *xm = x + m * K + k;                                           \
                acc[m][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xm), acc[m][0]);           \
                acc[m][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xm + 16), acc[m][1]);      \
                acc[m][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xm + 32), acc[m][2]);      \
                acc[m][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xm + 48), acc[m][3]);      \
            }                                                                              \
        }                                                                                  \
        for (int m = 0; m < M; m++)                                                        \
            out[m] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]), \
                                                        _mm512_add_ps(acc[m][2], acc[m][3]))); \
    }

#else

/* eight int8 at p as float32 */
static inline __m256 widen8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* AVX2 has 16 vector registers: four independent chains of multiply-adds per row (so they
 * do not wait on each other) up to three rows, two for four (16 accumulators would spill).
 * Sums are kept per block of 512 inputs and then added up, which keeps the float32 rounding
 * of a long row as small as the AVX-512 version's (its 64 lanes of sums are short). */
#define INT8_BLOCK 512
#define DEFINE_INT8_DOT(M)                                                                 \
    static inline void int8_dot_##M(const int8_t *row, const float *x, int64_t K,          \
                                    float *out) {                                          \
        enum { CHAINS = (M) <= 3 ? 4 : 2 };                                                \
        __m256 total[M];                                                                   \
        for (int m = 0; m < M; m++) total[m] = _mm256_setzero_ps();                        \
        for (int64_t k0 = 0; k0 < K; k0 += INT8_BLOCK) {                                   \
            const int64_t k1 = k0 + INT8_BLOCK < K ? k0 + INT8_BLOCK : K;                  \
            __m256 acc[M][CHAINS];                                                         \
            for (int m = 0; m < M; m++)                                                    \
                for (int c = 0; c < CHAINS; c++) acc[m][c] = _mm256_setzero_ps();          \
            for (int64_t k = k0; k < k1; k += 32)                                          \
                for (int i = 0; i < 4; i++) {                                              \
                    const __m256 w = widen8(row + k + 8 * i);                              \
                    for (int m = 0; m < M; m++)                                            \
                        acc[m][i % CHAINS] = _mm256_fmadd_ps(                              \
                            w, _mm256_loadu_ps(x + m * K + k + 8 * i), acc[m][i % CHAINS]); \
                }                                                                          \
            for (int m = 0; m < M; m++)                                                    \
                for (int c = 0; c < CHAINS; c++) total[m] = _mm256_add_ps(total[m], acc[m][c]); \
        }                                                                                  \
        for (int m = 0; m < M; m++) out[m] = vhsum(total[m]);                              \
    }

#endif

DEFINE_INT8_DOT(1)
DEFINE_INT8_DOT(2)
DEFINE_INT8_DOT(3)
DEFINE_INT8_DOT(4)

/* out[m] = sum_k row[k] * x[m * K + k] for m < rows, 1 <= rows <= 4. */
static inline void int8_dot_rows(const int8_t *row, const float *x, int64_t K, int64_t rows,
                                 float *out) {
    switch (rows) {
    case 1: int8_dot_1(row, x, K, out); break;
    case 2: int8_dot_2(row, x, K, out); break;
    case 3: int8_dot_3(row, x, K, out); break;
    default: int8_dot_4(row, x, K, out); break;
    }
}

#if VW == 16
/* Batches of activation rows, where the float32 path above is bound by its one multiply-add
 * per 16 weights: AVX512-BF16's dot instruction does 32 (float32 sums) at a time. The weights
 * come pre-packed for it, per 16 output rows: [N / 16][K / 2][16][2] int8 (output o's inputs
 * k, k + 1 side by side), widened to bf16 in registers (exact for int8). One vector then holds
 * a pair of inputs for 16 outputs, and each of R activation rows (bf16, laid out pair-major
 * [K / 2][R][2] so the R rows' pairs for one step share a cache line; each pair read as one
 * 32-bit broadcast) adds into its own 16 sums: no horizontal sums, one small load per
 * instruction. (A dot-product form with row-major weights needed a 64-byte activation load
 * per instruction and reached ~100 GMAC/s on 2 cores; this one ~170.)
 * out[m][o] = sum_k w[o][k] x[m][k] for the tile's 16 outputs. */
#define DEFINE_INT8_BF16_TILE(R)                                                             \
    __attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline void               \
    int8_bf16_tile_##R(const int8_t *packed, const uint16_t *x, int64_t K, __m512 *out) {   \
        __m512 acc[R];                                                                       \
        for (int m = 0; m < R; m++) acc[m] = _mm512_setzero_ps();                            \
        const int32_t *pairs = (const int32_t *)x;                                           \
        for (int64_t kp = 0; kp < K / 2; kp++, pairs += R) {                                 \
            __m256i b = _mm256_loadu_si256((const __m256i *)(packed + kp * 32));             \
            __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));  \
            __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1))); \
            __m512bh w = _mm512_cvtne2ps_pbh(hi, lo);                                        \
            for (int m = 0; m < R; m++)                                                      \
                acc[m] = _mm512_dpbf16_ps(acc[m], w,                                         \
                                          (__m512bh)_mm512_set1_epi32(pairs[m]));            \
        }                                                                                    \
        for (int m = 0; m < R; m++) out[m] = acc[m];                                         \
    }

DEFINE_INT8_BF16_TILE(8)
DEFINE_INT8_BF16_TILE(16)
#endif

#endif
