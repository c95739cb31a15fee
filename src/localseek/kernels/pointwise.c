/* The float32 row steps between a decoder layer's matmuls, each on its own (pointwise.h). */
#include "pointwise.h"

int localseek_add_rms_norm(const float *x, const float *residual, const float *weight,
                           int64_t weight_rows, float *sum_out, float *out, int64_t rows,
                           int64_t dim, float eps) {
    return add_rms_norm(x, residual, weight, weight_rows, sum_out, out, rows, dim, eps);
}

int localseek_gated_act(const float *gate_up, float *out, int64_t rows, int64_t inter, int act) {
    return gated_act(gate_up, out, rows, inter, act);
}

int localseek_rope_store(const float *qkv, int64_t tokens, int64_t heads, int64_t kv_heads,
                         int64_t dim, int64_t half, const float *cos, const float *sin,
                         const int64_t *slots, int64_t num_slots, float *q_out, float *k_cache,
                         float *v_cache) {
    return rope_store(qkv, tokens, heads, kv_heads, dim, half, cos, sin, slots, num_slots, q_out,
                      k_cache, v_cache);
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_pointwise_isa(void) { return VW == 16 ? "avx512" : "avx2"; }
