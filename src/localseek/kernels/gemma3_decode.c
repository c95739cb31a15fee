/* A whole decode step through a Gemma 3 decoder stack with int8 weights, in one call
 * (CPU, AVX-512, OpenMP).
 *
 * At one to a few decoding rows the demo model's torch forward spends more time between its
 * matmuls (~25 small operations per layer: norms, dtype conversions, rotary, KV writes) than
 * in them. Here every layer runs inside one OpenMP parallel region: the four int8 matmuls are
 * split across the threads by output rows, the per-row work runs between them, and nothing
 * returns to Python until the last layer is done.
 *
 * The numbers follow the torch path's bfloat16 model: every value the torch path rounds to
 * bfloat16 (norm outputs, projections, q/k after norm and after each rotary op, the GELU and
 * its product, the residual) is rounded here at the same point, and sums run in float32. The
 * matmuls are int8_dot.h's, the attention paged_attention.h's, as in the per-op native
 * kernels. What can still differ is float32 summation order inside the norms.
 *
 * Layouts: x [M, hidden] bf16, the residual stream after the embedding, overwritten with the
 * stack's output (before the final norm). Per layer: int8 weights [N, K] with per-row scales
 * [N] and per-input balance [K] (y = scale * (w . (x * balance))); norm scales float32 (the
 * stored weight plus Gemma's +1); qk_norm [heads + kv_heads, head_dim] float32; caches
 * [blocks, block_size, kv_heads, head_dim] bf16. Each layer reads the cache view of its group
 * (slots int64 [M], block tables int32 [M, stride], context lengths int32 [M]) and the rotary
 * table of its type: cos and signed sin [M, head_dim] bf16 (see apply_rotary_full).
 * Returns 0, or 1 for shapes it does not handle or no memory (the caller runs the torch path).
 */
#include <immintrin.h>

#include "bf16.h"
#include "int8_dot.h"
#include "paged_attention.h"
#include "simd.h"
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const int8_t *w;      /* [n, k] */
    const int8_t *packed; /* the same weights for the batch path, see int8_dot.h; or NULL */
    const float *scale;
    const float *balance;
    int64_t n, k;
} q8_linear;

typedef struct {
    q8_linear qkv, o, gate_up, down;
    const float *input_norm, *post_attention_norm, *pre_feedforward_norm, *post_feedforward_norm;
    const float *qk_norm;
    uint16_t *k_cache, *v_cache;
    int64_t group;  /* which cache view */
    int64_t rope;   /* which rotary table */
    int64_t window; /* 0: full attention */
} gemma3_layer;

typedef struct {
    const int64_t *slots;
    const int32_t *block_tables;
    const int32_t *context_lens;
    int64_t table_stride;
} cache_view;

typedef struct {
    const uint16_t *cos, *signed_sin;
} rope_table;

typedef struct {
    int64_t layers, hidden, heads, kv_heads, head_dim, intermediate, block_size;
    float eps, attn_scale;
} gemma3_dims;

static inline float round_bf16(float v) { return from_bf16(to_bf16(v)); }

/* 1 / sqrt(mean(v^2) + eps), n % 16 == 0. */
static float rms_inverse(const float *v, int64_t n, float eps) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __m512 a = _mm512_loadu_ps(v + i);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(a, a)); /* squares rounded first, as torch's pow */
    }
    return 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)n + eps);
}

/* out = bf16(v * inverse_rms * weight): F.rms_norm(x.float(), weight).to(bfloat16); n % 16 == 0,
 * out may be v. */
static void norm_row(const float *v, const float *weight, int64_t n, float eps, float *out) {
    const __m512 inv = _mm512_set1_ps(rms_inverse(v, n, eps));
    for (int64_t i = 0; i < n; i += 16) {
        __m512 normed = _mm512_mul_ps(_mm512_loadu_ps(v + i), inv);
        _mm512_storeu_ps(out + i, bf16_round16(_mm512_mul_ps(normed, _mm512_loadu_ps(weight + i))));
    }
}

/* Gemma's sandwich residual: r = bf16(r + norm(p)), p overwritten with norm(p); n % 16 == 0. */
static void add_normed_row(float *r, float *p, const float *weight, int64_t n, float eps) {
    norm_row(p, weight, n, eps, p);
    for (int64_t i = 0; i < n; i += 16)
        _mm512_storeu_ps(r + i, bf16_round16(_mm512_add_ps(_mm512_loadu_ps(r + i), _mm512_loadu_ps(p + i))));
}

/* A matmul's input row: the bf16 activations times the linear's input balance; n % 16 == 0. */
static void balance_row(const float *h, const float *balance, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_loadu_ps(h + i);
        _mm512_storeu_ps(out + i, balance ? _mm512_mul_ps(v, _mm512_loadu_ps(balance + i)) : v);
    }
}

/* Rows the batch path's bf16 input has room for: M rounded up to whole tiles of 16 rows (the
 * rows past M feed tile lanes whose sums are never stored). */
static int64_t padded_rows(int64_t M) { return (M + 15) / 16 * 16; }

/* The batch path's tile height for block b (rows 16b ..): 8 when at most 8 rows are left. */
static int64_t block_rows(int64_t M, int64_t b) { return M - 16 * b <= 8 ? 8 : 16; }

/* y [M, n] = bf16(scale * (w . x)) for x [M, k] balanced; output rows split over threads.
 * Up to 4 rows the weights meet float32 activations (one read of the weights, memory-bound);
 * more rows go through the bf16 dot instruction on the packed weights (int8_dot.h) where the
 * CPU has it, with the activations rounded to bf16 as torch's int8 x bf16 kernel takes them.
 * Called inside the parallel region. */
static void q8_matmul(const q8_linear *L, const float *x, uint16_t *xb, float *y, int64_t M,
                      int batch_dot) {
    const int64_t N = L->n, K = L->k;
    if (M > 4 && batch_dot && L->packed) {
        /* xb: blocks of 16 rows, the last one of 8 when at most 8 rows are left, each
         * pair-major [K / 2][R][2] bf16 (see int8_dot.h); a block's rows past M read stale
         * padding, and their sums are never stored */
        #pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            const int64_t R = block_rows(M, m / 16);
            uint32_t *pairs = (uint32_t *)(xb + (m / 16) * 16 * K) + m % 16;
            for (int64_t k = 0; k < K; k += 16) {
                uint32_t packed[8];
                bf16_store16((uint16_t *)packed, _mm512_loadu_ps(x + m * K + k));
                for (int64_t i = 0; i < 8; i++) pairs[(k / 2 + i) * R] = packed[i];
            }
        }
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < N / 16; t++) {
            const __m512 scale = _mm512_loadu_ps(L->scale + t * 16);
            for (int64_t m0 = 0; m0 < M; m0 += 16) {
                const int64_t R = block_rows(M, m0 / 16);
                __m512 sums[16];
                if (R == 8) int8_bf16_tile_8(L->packed + t * 16 * K, xb + m0 * K, K, sums);
                else int8_bf16_tile_16(L->packed + t * 16 * K, xb + m0 * K, K, sums);
                const int64_t rows = M - m0 < R ? M - m0 : R;
                for (int64_t r = 0; r < rows; r++)
                    _mm512_storeu_ps(y + (m0 + r) * N + t * 16, bf16_round16(_mm512_mul_ps(scale, sums[r])));
            }
        }
        return;
    }
    #pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *row = L->w + n * K;
        for (int64_t m0 = 0; m0 < M; m0 += 4) {
            int64_t rows = M - m0 < 4 ? M - m0 : 4;
            float sums[4];
            int8_dot_rows(row, x + m0 * K, K, rows, sums);
            for (int64_t r = 0; r < rows; r++) y[(m0 + r) * N + n] = round_bf16(L->scale[n] * sums[r]);
        }
    }
}

/* out[i] = bf16(bf16(gelu_tanh(gate[i])) * up[i]), n % 16 == 0. tanh GELU written as
 * x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): the same function as
 * 0.5 x (1 + tanh u), with one vector exp instead of a scalar tanh per element. */
static void gelu_tanh_mul(const float *gate, const float *up, int64_t n, float *out) {
    const __m512 beta = _mm512_set1_ps(-2.0f * 0.7978845608028654f), kappa = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __m512 x = _mm512_loadu_ps(gate + i);
        __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(kappa, _mm512_mul_ps(x, x)), x, x);
        __m512 g = _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_mul_ps(beta, inner))));
        __m512 prod = _mm512_mul_ps(bf16_round16(g), _mm512_loadu_ps(up + i));
        _mm512_storeu_ps(out + i, bf16_round16(prod));
    }
}

/* One head of q or k: RMS norm with its scale, then neox rotary, rounded as the torch path
 * (x * cos and swapped * signed_sin each rounded, then their sum). D % 32 == 0. */
static void norm_rotate_head(const float *v, const float *scale, const uint16_t *cos,
                             const uint16_t *signed_sin, int64_t D, float eps, float *tmp,
                             uint16_t *out) {
    const __m512 inv = _mm512_set1_ps(rms_inverse(v, D, eps));
    for (int64_t d = 0; d < D; d += 16) {
        __m512 normed = _mm512_mul_ps(_mm512_loadu_ps(v + d), inv);
        _mm512_storeu_ps(tmp + d, bf16_round16(_mm512_mul_ps(normed, _mm512_loadu_ps(scale + d))));
    }
    const int64_t half = D / 2;
    for (int64_t d = 0; d < D; d += 16) {
        const int64_t partner = d < half ? d + half : d - half;
        __m512 a = bf16_round16(_mm512_mul_ps(_mm512_loadu_ps(tmp + d), bf16_load16(cos + d)));
        __m512 b = bf16_round16(
            _mm512_mul_ps(_mm512_loadu_ps(tmp + partner), bf16_load16(signed_sin + d)));
        bf16_store16(out + d, _mm512_add_ps(a, b));
    }
}

/* The most rows a call should take: the batch path needs AVX512-BF16 (on the demo model it beat
 * the per-module path at 8, 16, 32 and 64 rows; larger decode batches were not measured);
 * without it, beyond 4 rows the float32 path re-reads each weight row per 4 rows and loses. */
int localseek_gemma3_decode_max_rows(void) { return __builtin_cpu_supports("avx512bf16") ? 64 : 4; }

int localseek_gemma3_decode(const gemma3_dims *dims, const gemma3_layer *layers,
                            const cache_view *views, const rope_table *ropes, uint16_t *x,
                            int64_t M) {
    const int64_t Hd = dims->hidden, H = dims->heads, Hkv = dims->kv_heads, D = dims->head_dim;
    const int64_t I = dims->intermediate, B = dims->block_size;
    const int64_t q_size = H * D, kv_size = Hkv * D, qkv_n = q_size + 2 * kv_size;
    if (M < 1 || Hkv <= 0 || H % Hkv || H / Hkv > MAX_GROUP || D % 32 || D > MAX_DIM ||
        Hd % 64 || q_size % 64 || I % 64 || B <= 0)
        return 1;
    for (int64_t l = 0; l < dims->layers; l++) {
        const gemma3_layer *L = &layers[l];
        if (L->qkv.n != qkv_n || L->qkv.k != Hd || L->o.n != Hd || L->o.k != q_size ||
            L->gate_up.n != 2 * I || L->gate_up.k != Hd || L->down.n != Hd || L->down.k != I)
            return 1;
    }
    const int64_t widest = I > q_size ? (I > Hd ? I : Hd) : (q_size > Hd ? q_size : Hd);
    const int threads = omp_get_max_threads();
    const size_t floats = (size_t)M * (Hd + widest + qkv_n + 2 * I + Hd) + (size_t)D * threads;
    float *work = (float *)aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    const size_t halves = (size_t)M * 2 * q_size + (size_t)padded_rows(M) * widest;
    uint16_t *heads = (uint16_t *)aligned_alloc(64, (halves * 2 + 63) / 64 * 64);
    const int64_t parts = attend_parts(M * Hkv, threads);
    attend_state *states =
        parts > 1 ? (attend_state *)aligned_alloc(64, (size_t)(M * Hkv * parts) * sizeof(attend_state)) : NULL;
    if (!work || !heads || (parts > 1 && !states)) {
        free(work);
        free(heads);
        free(states);
        return 1;
    }
    const int batch_dot = __builtin_cpu_supports("avx512bf16");
    float *resid = work;              /* [M, Hd] the residual stream, bf16 values */
    float *in = resid + M * Hd;       /* [M, widest] a matmul's balanced input */
    float *qkv = in + M * widest;     /* [M, qkv_n] */
    float *mlp = qkv + M * qkv_n;     /* [M, 2I] gate | up, then the GELU product */
    float *proj = mlp + M * 2 * I;    /* [M, Hd] o_proj / down_proj output */
    float *scratch = proj + M * Hd;   /* [threads, D] per-thread scratch */
    uint16_t *q_rot = heads;          /* [M, H, D] rotated queries, bf16 */
    uint16_t *attn = heads + M * q_size; /* [M, H, D] attention output, bf16 */
    uint16_t *in_bf16 = attn + M * q_size; /* [padded_rows(M), widest] batch-path input */
    memset(in_bf16, 0, (size_t)padded_rows(M) * widest * 2);
    for (int64_t i = 0; i < M * Hd; i++) resid[i] = from_bf16(x[i]);

    #pragma omp parallel
    {
        /* Denormals take a microcode path ~100x slower on x86; flush them for this call. */
        const unsigned int csr = _mm_getcsr();
        _mm_setcsr(csr | 0x8040);
        float *tmp = scratch + (int64_t)(omp_get_thread_num() % threads) * D;
        for (int64_t l = 0; l < dims->layers; l++) {
            const gemma3_layer *L = &layers[l];
            const cache_view *view = &views[L->group];
            const rope_table *rope = &ropes[L->rope];

            #pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++) {
                norm_row(resid + m * Hd, L->input_norm, Hd, dims->eps, proj + m * Hd);
                balance_row(proj + m * Hd, L->qkv.balance, Hd, in + m * Hd);
            }
            q8_matmul(&L->qkv, in, in_bf16, qkv, M, batch_dot);

            /* q/k norm + rotary for every head; k and v into the cache slot */
            #pragma omp for schedule(static)
            for (int64_t mh = 0; mh < M * (H + Hkv); mh++) {
                const int64_t m = mh / (H + Hkv), h = mh % (H + Hkv);
                const float *v = qkv + m * qkv_n + h * D;
                const uint16_t *cos = rope->cos + m * D, *sin = rope->signed_sin + m * D;
                const int64_t slot = view->slots[m];
                if (h < H) {
                    norm_rotate_head(v, L->qk_norm + h * D, cos, sin, D, dims->eps, tmp,
                                     q_rot + (m * H + h) * D);
                } else {
                    const int64_t kh = h - H;
                    norm_rotate_head(v, L->qk_norm + h * D, cos, sin, D, dims->eps, tmp,
                                     L->k_cache + (slot * Hkv + kh) * D);
                    const float *value = qkv + m * qkv_n + q_size + kv_size + kh * D;
                    uint16_t *dst = L->v_cache + (slot * Hkv + kh) * D;
                    for (int64_t d = 0; d < D; d += 16) bf16_store16(dst + d, _mm512_loadu_ps(value + d));
                }
            }

            attend_items((const char *)q_rot, (const char *)L->k_cache, (const char *)L->v_cache,
                         view->block_tables, view->table_stride, view->context_lens,
                         (char *)attn, M, H, Hkv, D, D, B, L->window, dims->attn_scale, 1, threads,
                         states);

            #pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++)
                for (int64_t i = 0; i < q_size; i += 16) {
                    __m512 a = bf16_load16(attn + m * q_size + i);
                    if (L->o.balance) a = _mm512_mul_ps(a, _mm512_loadu_ps(L->o.balance + i));
                    _mm512_storeu_ps(in + m * q_size + i, a);
                }
            q8_matmul(&L->o, in, in_bf16, proj, M, batch_dot);

            /* x += post_attention_norm(o); then the MLP's input */
            #pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++) {
                float *r = resid + m * Hd, *p = proj + m * Hd;
                add_normed_row(r, p, L->post_attention_norm, Hd, dims->eps);
                norm_row(r, L->pre_feedforward_norm, Hd, dims->eps, p);
                balance_row(p, L->gate_up.balance, Hd, in + m * Hd);
            }
            q8_matmul(&L->gate_up, in, in_bf16, mlp, M, batch_dot);

            #pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++) {
                float *act = mlp + m * 2 * I;
                gelu_tanh_mul(act, act + I, I, act);
                balance_row(act, L->down.balance, I, in + m * I);
            }
            q8_matmul(&L->down, in, in_bf16, proj, M, batch_dot);

            #pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++)
                add_normed_row(resid + m * Hd, proj + m * Hd, L->post_feedforward_norm, Hd, dims->eps);
        }
        _mm_setcsr(csr);
    }
    for (int64_t i = 0; i < M * Hd; i++) x[i] = to_bf16(resid[i]);
    free(work);
    free(heads);
    free(states);
    return 0;
}
