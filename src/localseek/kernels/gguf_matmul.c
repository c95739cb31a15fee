/* The GGUF block-format matmul on its own (gguf_matmul.h has the layouts and the method). */
#include "gguf_matmul.h"

int localseek_gguf_matmul(const void *x, int64_t N, int64_t K, int64_t ldx, int bf16,
                          int64_t n_parts, const int32_t *types, const void *const *weights,
                          const int64_t *rows, void *out, int64_t ldo, int levels) {
    return gguf_matmul(x, N, K, ldx, bf16, n_parts, types, weights, rows, out, ldo, levels);
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_gguf_matmul_isa(void) {
#if defined(__AVX512VNNI__)
    return "avx512_vnni";
#else
    return "avx2";
#endif
}
