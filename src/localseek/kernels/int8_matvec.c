/* int8 weights times activations for one to four rows, on the CPU with AVX2 or AVX-512.
 *
 * y[m, n] = scale[n] * sum_k w[n, k] * (x[m, k] * balance[k]); w int8 [N, K], x [M, K] and
 * y [M, N] in float32 or bfloat16 (bf16 != 0), scale float32 [N], balance float32 [K] or NULL,
 * all contiguous, 1 <= M <= 4, K % 64 == 0. The activations are widened (and balanced) once;
 * then each weight row is read once, 64 bytes (AVX2: 32) at a time, widened to float32 and
 * multiplied into the M running sums: one sequential stream per thread, rows split across the
 * threads of the process's OpenMP runtime (torch's). Doing the conversions here saves the
 * caller three small torch operations per call, which at batch 1 cost as much as the
 * matvec's savings.
 * Returns 0, or 1 for arguments it does not handle (the caller uses torch's kernel).
 */
#include "bf16.h"
#include "int8_dot.h"
#include <stdint.h>
#include <stdlib.h>

static void matvec(const int8_t *w, const float *scale, const float *x, void *y, int64_t M,
                   int64_t N, int64_t K, int bf16) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float sums[4];
        int8_dot_rows(w + n * K, x, K, M, sums);
        for (int64_t m = 0; m < M; m++) {
            float v = scale[n] * sums[m];
            if (bf16) ((uint16_t *)y)[m * N + n] = to_bf16(v);
            else ((float *)y)[m * N + n] = v;
        }
    }
}

int localseek_int8_matvec(const int8_t *w, const float *scale, const float *balance,
                          const void *x, void *y, int64_t M, int64_t N, int64_t K, int bf16) {
    if (K <= 0 || K % 64 != 0 || N <= 0 || M < 1 || M > 4) return 1;
    float *xf = (float *)aligned_alloc(64, (size_t)(M * K) * sizeof(float));
    if (!xf) return 1;
    for (int64_t i = 0; i < M * K; i++) {
        float v = bf16 ? from_bf16(((const uint16_t *)x)[i]) : ((const float *)x)[i];
        xf[i] = balance ? v * balance[i % K] : v;
    }
    matvec(w, scale, xf, y, M, N, K, bf16);
    free(xf);
    return 0;
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_int8_matvec_isa(void) { return VW == 16 ? "avx512" : "avx2"; }
