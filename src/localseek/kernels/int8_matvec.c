/* int8 weights times activations for one to four rows, on the CPU with AVX-512.
 *
 * y[m, n] = scale[n] * sum_k w[n, k] * (x[m, k] * balance[k]); w int8 [N, K], x [M, K] and
 * y [M, N] in float32 or bfloat16 (bf16 != 0), scale float32 [N], balance float32 [K] or NULL,
 * all contiguous, 1 <= M <= 4, K % 64 == 0. The activations are widened (and balanced) once;
 * then each weight row is read once, 64 bytes at a time, widened to float32 and multiplied
 * into the M running sums: one sequential stream per thread, rows split across the threads of
 * the process's OpenMP runtime (torch's). Doing the conversions here saves the caller three
 * small torch operations per call, which at batch 1 cost as much as the matvec's savings.
 * Returns 0, or 1 for arguments it does not handle (the caller uses torch's kernel).
 */
#include <immintrin.h>

#include "bf16.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WIDEN(b, i) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(b, i)))

#define DEFINE_MATVEC(M)                                                                   \
    static void matvec_##M(const int8_t *w, const float *scale, const float *x, void *y,  \
                           int64_t N, int64_t K, int bf16) {                               \
        _Pragma("omp parallel for schedule(static)")                                      \
        for (int64_t n = 0; n < N; n++) {                                                  \
            const int8_t *row = w + n * K;                                                 \
            __m512 acc[M][4];                                                              \
            for (int m = 0; m < M; m++)                                                    \
                for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();               \
            for (int64_t k = 0; k < K; k += 64) {                                          \
                __m512i b = _mm512_loadu_si512((const void *)(row + k));                   \
                __m512 w0 = WIDEN(b, 0), w1 = WIDEN(b, 1), w2 = WIDEN(b, 2), w3 = WIDEN(b, 3); \
                for (int m = 0; m < M; m++) {                                              \
                    const float *xm = x + m * K + k;                                       \
                    acc[m][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xm), acc[m][0]);       \
                    acc[m][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xm + 16), acc[m][1]);  \
                    acc[m][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xm + 32), acc[m][2]);  \
                    acc[m][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xm + 48), acc[m][3]);  \
                }                                                                          \
            }                                                                              \
            for (int m = 0; m < M; m++) {                                                  \
                __m512 s = _mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]),              \
                                         _mm512_add_ps(acc[m][2], acc[m][3]));             \
                float v = scale[n] * _mm512_reduce_add_ps(s);                              \
                if (bf16) ((uint16_t *)y)[m * N + n] = to_bf16(v);                         \
                else ((float *)y)[m * N + n] = v;                                          \
            }                                                                              \
        }                                                                                  \
    }

DEFINE_MATVEC(1)
DEFINE_MATVEC(2)
DEFINE_MATVEC(3)
DEFINE_MATVEC(4)

int localseek_int8_matvec(const int8_t *w, const float *scale, const float *balance,
                          const void *x, void *y, int64_t M, int64_t N, int64_t K, int bf16) {
    if (K <= 0 || K % 64 != 0 || N <= 0 || M < 1 || M > 4) return 1;
    float *xf = (float *)aligned_alloc(64, (size_t)(M * K) * sizeof(float));
    if (!xf) return 1;
    for (int64_t i = 0; i < M * K; i++) {
        float v = bf16 ? from_bf16(((const uint16_t *)x)[i]) : ((const float *)x)[i];
        xf[i] = balance ? v * balance[i % K] : v;
    }
    switch (M) {
    case 1: matvec_1(w, scale, xf, y, N, K, bf16); break;
    case 2: matvec_2(w, scale, xf, y, N, K, bf16); break;
    case 3: matvec_3(w, scale, xf, y, N, K, bf16); break;
    default: matvec_4(w, scale, xf, y, N, K, bf16); break;
    }
    free(xf);
    return 0;
}
