/* int8 weights times float32 activations for one to four rows, on the CPU with AVX-512.
 *
 * y[m, n] = scale[n] * sum_k w[n, k] * x[m, k]; w int8 [N, K], x float32 [M, K], y float32
 * [M, N], all contiguous, 1 <= M <= 4, K % 64 == 0. Each weight row is read once, 64 bytes at a
 * time, widened to float32 and multiplied into the M running sums: one sequential stream per
 * thread, rows split across the threads of the process's OpenMP runtime (torch's).
 * Returns 0, or 1 for arguments it does not handle (the caller uses torch's kernel).
 */
#include <immintrin.h>
#include <stdint.h>

#define WIDEN(b, i) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(b, i)))

#define DEFINE_MATVEC(M)                                                                   \
    static void matvec_##M(const int8_t *w, const float *scale, const float *x, float *y, \
                           int64_t N, int64_t K) {                                         \
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
                y[m * N + n] = scale[n] * _mm512_reduce_add_ps(s);                         \
            }                                                                              \
        }                                                                                  \
    }

DEFINE_MATVEC(1)
DEFINE_MATVEC(2)
DEFINE_MATVEC(3)
DEFINE_MATVEC(4)

int localseek_int8_matvec(const int8_t *w, const float *scale, const float *x, float *y,
                          int64_t M, int64_t N, int64_t K) {
    if (K <= 0 || K % 64 != 0 || N <= 0) return 1;
    switch (M) {
    case 1: matvec_1(w, scale, x, y, N, K); return 0;
    case 2: matvec_2(w, scale, x, y, N, K); return 0;
    case 3: matvec_3(w, scale, x, y, N, K); return 0;
    case 4: matvec_4(w, scale, x, y, N, K); return 0;
    default: return 1;
    }
}
