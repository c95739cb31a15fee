/* The float32 row steps between a decoder layer's matmuls, on the CPU with AVX2 or AVX-512:
 * the residual add fused with RMS normalisation, and the gated activation act(gate) * up.
 *
 * In torch these are 4-8 small operations each (F.rms_norm is composite on CPU: pow, mean,
 * add, rsqrt, mul, plus the weight multiply and the residual add), ~45 us per norm on a
 * 1536-wide row against ~2 us here; a 28-layer model runs 57 norms and 28 activations per
 * decode step. Rows are independent; a call with enough work splits them across the threads
 * of the process's OpenMP runtime (torch's). All arrays are contiguous float32 [rows, dim].
 * Shared by pointwise.c (each step on its own) and gguf_decode_step.c. Each returns 0, or 1 for
 * arguments it does not handle.
 */
#ifndef LOCALSEEK_POINTWISE_H
#define LOCALSEEK_POINTWISE_H

#include "simd.h"
#include <math.h>

#include <stdint.h>
#include <string.h>

/* No implicit fused multiply-adds: the rotary's x1 cos - x2 sin must round as torch's separate
 * multiplies and subtraction do, so a model's native and torch paths give the same bits (the
 * FMAs these functions want are written out as vfma). Pushed and popped: a file including this
 * header keeps its own contraction rules. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

/* Below this many values a call stays on one thread: forking costs more than it saves. */
#define PARALLEL_VALUES 65536

/* sum = x + residual (x alone when residual is NULL), written to sum_out when given;
 * out = sum * rsqrt(mean(sum^2) + eps) * weight, multiplied in that order as torch does. */
static void norm_row(const float *x, const float *residual, const float *weight, float *sum_out,
                     float *out, int64_t dim, float eps) {
    vecf acc0 = vzero(), acc1 = vzero();
    int64_t i = 0;
    const float *s = residual ? sum_out : x;
    for (; i + 2 * VW <= dim; i += 2 * VW) {
        vecf a = vload(x + i), b = vload(x + i + VW);
        if (residual) {
            a = vadd(a, vload(residual + i));
            b = vadd(b, vload(residual + i + VW));
            vstore(sum_out + i, a);
            vstore(sum_out + i + VW, b);
        }
        acc0 = vfma(a, a, acc0);
        acc1 = vfma(b, b, acc1);
    }
    float squares = vhsum(vadd(acc0, acc1));
    for (; i < dim; i++) {
        float v = residual ? x[i] + residual[i] : x[i];
        if (residual) sum_out[i] = v;
        squares += v * v;
    }
    float inv = 1.0f / sqrtf(squares / (float)dim + eps);
    vecf vinv = vset1(inv);
    for (i = 0; i + VW <= dim; i += VW) vstore(out + i, vmul(vmul(vload(s + i), vinv), vload(weight + i)));
    for (; i < dim; i++) out[i] = s[i] * inv * weight[i];
}

/* Row r is multiplied by weight row r % weight_rows: 1 for a layer norm, the number of heads
 * for per-head norms (Gemma's q and k norms over [tokens, heads, head_dim]). */
static int add_rms_norm(const float *x, const float *residual, const float *weight,
                        int64_t weight_rows, float *sum_out, float *out, int64_t rows,
                        int64_t dim, float eps) {
    if (rows < 0 || dim <= 0 || weight_rows < 1 || (residual && !sum_out)) return 1;
    #pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_VALUES)
    for (int64_t r = 0; r < rows; r++) {
        const float *res = residual ? residual + r * dim : 0;
        norm_row(x + r * dim, res, weight + r % weight_rows * dim, residual ? sum_out + r * dim : 0,
                 out + r * dim, dim, eps);
    }
    return 0;
}

enum { ACT_SILU = 0, ACT_GELU_TANH = 1 };

/* silu(g) = g / (1 + e^-g); gelu_tanh(g) = g/2 (1 + tanh(u)) = g / (1 + e^-2u) with
 * u = sqrt(2/pi) (g + 0.044715 g^3): the same function through one exponential. */
static inline vecf act_vec(vecf g, int act) {
    vecf t = g;
    if (act == ACT_GELU_TANH)
        t = vmul(vset1(2.0f * 0.7978845608028654f), vfma(vmul(vset1(0.044715f), vmul(g, g)), g, g));
    return vdiv(g, vadd(vset1(1.0f), vexp(vsub(vzero(), t))));
}

static inline float act_one(float g, int act) {
    float t = act == ACT_GELU_TANH ? 2.0f * 0.7978845608028654f * (g + 0.044715f * g * g * g) : g;
    return g / (1.0f + expf(-t));
}

/* out[r, i] = act(gate_up[r, i]) * gate_up[r, inter + i]: the gate and up halves of one fused
 * projection, as GatedMLP computes them. */
static int gated_act(const float *gate_up, float *out, int64_t rows, int64_t inter, int act) {
    if (rows < 0 || inter <= 0 || (act != ACT_SILU && act != ACT_GELU_TANH)) return 1;
    #pragma omp parallel for schedule(static) if (rows * inter >= PARALLEL_VALUES)
    for (int64_t r = 0; r < rows; r++) {
        const float *gate = gate_up + r * 2 * inter, *up = gate + inter;
        float *y = out + r * inter;
        int64_t i = 0;
        for (; i + VW <= inter; i += VW) vstore(y + i, vmul(act_vec(vload(gate + i), act), vload(up + i)));
        for (; i < inter; i++) y[i] = act_one(gate[i], act) * up[i];
    }
    return 0;
}

/* y = x rotated neox-style over its first 2 * half values (x1 = x[:half], x2 = x[half:2 half]:
 * x1 cos - x2 sin, x2 cos + x1 sin, in torch's order of operations), the rest copied. */
static void rope_neox(const float *x, const float *cos, const float *sin, int64_t half,
                      int64_t dim, float *y) {
    int64_t i = 0;
    for (; i + VW <= half; i += VW) {
        const vecf x1 = vload(x + i), x2 = vload(x + half + i), c = vload(cos + i), s = vload(sin + i);
        vstore(y + i, vsub(vmul(x1, c), vmul(x2, s)));
        vstore(y + half + i, vadd(vmul(x2, c), vmul(x1, s)));
    }
    for (; i < half; i++) {
        const float x1 = x[i], x2 = x[half + i], a = x1 * cos[i], b = x2 * sin[i];
        const float e = x2 * cos[i], f = x1 * sin[i];
        y[i] = a - b;
        y[half + i] = e + f;
    }
    for (i = 2 * half; i < dim; i++) y[i] = x[i];
}

/* One attention layer's step after its fused q/k/v projection: qkv [tokens, (heads + 2
 * kv_heads) * dim] is split, q and k rotated (cos, sin [tokens, half]), q written to q_out
 * [tokens, heads, dim] and k, v into the paged caches [blocks, block_size, kv_heads, dim] at
 * row slots[t]. Replaces a split, two rotations (~8 torch ops each) and two index copies. */
static int rope_store(const float *qkv, int64_t tokens, int64_t heads, int64_t kv_heads,
                      int64_t dim, int64_t half, const float *cos, const float *sin,
                      const int64_t *slots, int64_t num_slots, float *q_out, float *k_cache,
                      float *v_cache) {
    if (tokens < 0 || heads < 1 || kv_heads < 1 || dim < 1 || half < 0 || 2 * half > dim) return 1;
    for (int64_t t = 0; t < tokens; t++)
        if (slots[t] < 0 || slots[t] >= num_slots) return 1;
    const int64_t width = (heads + 2 * kv_heads) * dim;
    #pragma omp parallel for schedule(static) if (tokens * width >= PARALLEL_VALUES)
    for (int64_t t = 0; t < tokens; t++) {
        const float *row = qkv + t * width, *c = cos + t * half, *s = sin + t * half;
        for (int64_t h = 0; h < heads; h++)
            rope_neox(row + h * dim, c, s, half, dim, q_out + (t * heads + h) * dim);
        float *k = k_cache + slots[t] * kv_heads * dim, *v = v_cache + slots[t] * kv_heads * dim;
        for (int64_t g = 0; g < kv_heads; g++)
            rope_neox(row + (heads + g) * dim, c, s, half, dim, k + g * dim);
        memcpy(v, row + (heads + kv_heads) * dim, (size_t)(kv_heads * dim) * sizeof(float));
    }
    return 0;
}

#pragma GCC pop_options

#endif
