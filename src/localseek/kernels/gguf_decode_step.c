/* A whole Llama / Qwen2 or Gemma 3 decode step over GGUF-block weights in one call (CPU,
 * float32).
 *
 * models/llama_lean.py's and gemma3_lean.py's loops call the same kernels from Python: per
 * layer the norms, four block matmuls, the rotary and K/V write, the attention, the gated
 * activation. On a 28-layer model their ~250 calls a step cost ~3-4 ms of Python and torch
 * bookkeeping on 2 cores (each ~15 us: ctypes, an output tensor, argument checks) around
 * kernels that are often only a few microseconds long. Here the same functions (pointwise.h,
 * gguf_matmul.h, paged_attention.h) run in the same order on the same inputs, so the result is
 * bitwise the Python loop's, and nothing returns to Python until the last layer is done.
 *
 * A layer: x = in_norm(h + residual) (the first layer's residual is h itself); q/k/v = x W,
 * Gemma's per-head q/k norms (qk_norm), rotary with the layer's table and K/V into the cache;
 * attention; y = attention W_o, Gemma's attn_out_norm(y); x = ffn_in_norm(y + residual); the
 * gated MLP; Gemma's ffn_out_norm of its output, which is the next layer's h. After the last
 * layer: final_norm(h + residual), or without a final norm (Gemma's, applied by the model) the
 * sum h + residual.
 *
 * Layouts (float32, contiguous): h [M, hidden], the embeddings (read only); out [M, hidden];
 * rotary tables cos[r] and sin[r] [M, half]. Per layer: the four projections as gguf_matmul
 * part tables (+ an optional float32 bias each), norm scales [hidden] (qk_norm [heads +
 * kv_heads, head_dim]), caches [blocks, block_size, kv_heads, head_dim], and the KV group whose
 * slots (int64 [M]), block tables (int32 [M, stride]) and context lengths (int32 [M]) it reads.
 * Returns 0, or 1 for shapes a kernel does not handle or no memory: the caller then runs its
 * own loop, which writes the same K/V again.
 */
#include "gguf_matmul.h"
#include "paged_attention.h"
#include "pointwise.h"

typedef struct {
    int64_t n_parts;
    const int32_t *types;
    const void *const *weights;
    const int64_t *rows;
    int64_t out_features;
    const float *bias; /* [out_features] or NULL */
    int32_t levels;
} gguf_linear;

typedef struct {
    gguf_linear qkv, o, gate_up, down;
    const float *in_norm, *ffn_in_norm;
    const float *attn_out_norm, *ffn_out_norm, *qk_norm; /* Gemma's, or NULL */
    float eps, qk_eps;
    float scale; /* attention's */
    int64_t heads, kv_heads, head_dim;
    int64_t window; /* 0: full attention */
    int32_t act;
    int32_t group; /* which KV group's slots and tables */
    int32_t rope;  /* which rotary table */
    float *k_cache, *v_cache;
    int64_t num_slots; /* blocks * block_size */
    int64_t block_size;
} step_layer;

typedef struct {
    const int64_t *slots;
    const int32_t *block_tables;
    const int32_t *context_lens;
    int64_t table_stride;
} kv_group;

/* y [M, out_features] = x [M, K] times the linear's blocks, plus its bias */
static int project(const gguf_linear *l, const float *x, int64_t M, int64_t K, float *y) {
    if (gguf_matmul(x, M, K, K, 0, l->n_parts, l->types, l->weights, l->rows, y, l->out_features,
                    l->levels))
        return 1;
    if (l->bias)
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < l->out_features; i++) y[m * l->out_features + i] += l->bias[i];
    return 0;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* x [rows, dim] normalised in place, row r by weight row r % weight_rows */
static int norm_in_place(float *x, const float *weight, int64_t weight_rows, int64_t rows,
                         int64_t dim, float eps) {
    return add_rms_norm(x, NULL, weight, weight_rows, NULL, x, rows, dim, eps);
}

int localseek_gguf_decode_step(const float *h, float *out, int64_t M, int64_t hidden,
                               const float *const *cos, const float *const *sin, int64_t n_ropes,
                               int64_t half, const step_layer *layers, int64_t n_layers,
                               const kv_group *groups, int64_t n_groups, const float *final_norm,
                               float final_eps) {
    if (M < 1 || hidden < 1 || n_layers < 1) return 1;
    int64_t wide = hidden; /* the widest row any buffer holds */
    for (int64_t i = 0; i < n_layers; i++) {
        const step_layer *L = &layers[i];
        if (L->group < 0 || L->group >= n_groups || L->rope < 0 || L->rope >= n_ropes ||
            L->gate_up.out_features % 2 ||
            L->qkv.out_features != (L->heads + 2 * L->kv_heads) * L->head_dim)
            return 1;
        wide = max64(wide, max64(L->qkv.out_features, L->gate_up.out_features));
        wide = max64(wide, L->heads * L->head_dim);
    }
    float *buf = malloc((size_t)(5 * M * wide) * sizeof(float));
    if (!buf) return 1;
    /* residual, the norm's output, a projection's output, q / the activation, attention out */
    float *residual = buf, *x = buf + M * wide, *y = x + M * wide, *q = y + M * wide;
    float *attn = q + M * wide;
    int failed = 0;
    const float *hs = h; /* the layer's input: the embeddings, then the last MLP's output */
    for (int64_t i = 0; i < n_layers && !failed; i++) {
        const step_layer *L = &layers[i];
        const kv_group *g = &groups[L->group];
        const int64_t qdim = L->heads * L->head_dim, inter = L->gate_up.out_features / 2;
        const int64_t qk_heads = L->heads + L->kv_heads;
        if (i == 0) { /* the first layer's residual is the embedding itself */
            memcpy(residual, h, (size_t)(M * hidden) * sizeof(float));
            failed = add_rms_norm(hs, NULL, L->in_norm, 1, NULL, x, M, hidden, L->eps);
        } else {
            failed = add_rms_norm(hs, residual, L->in_norm, 1, residual, x, M, hidden, L->eps);
        }
        failed = failed || project(&L->qkv, x, M, hidden, y);
        for (int64_t t = 0; t < M && L->qk_norm && !failed; t++) /* q and k of each token */
            failed = norm_in_place(y + t * L->qkv.out_features, L->qk_norm, qk_heads, qk_heads,
                                   L->head_dim, L->qk_eps);
        failed = failed || rope_store(y, M, L->heads, L->kv_heads, L->head_dim, half, cos[L->rope],
                                      sin[L->rope], g->slots, L->num_slots, q, L->k_cache,
                                      L->v_cache);
        failed = failed || paged_decode_attention(q, L->k_cache, L->v_cache, g->block_tables,
                                                  g->context_lens, attn, M, L->heads, L->kv_heads,
                                                  L->head_dim, L->head_dim, L->block_size,
                                                  g->table_stride, L->window, L->scale, 0);
        failed = failed || project(&L->o, attn, M, qdim, y);
        if (L->attn_out_norm && !failed)
            failed = norm_in_place(y, L->attn_out_norm, 1, M, hidden, L->eps);
        failed = failed || add_rms_norm(y, residual, L->ffn_in_norm, 1, residual, x, M, hidden, L->eps);
        failed = failed || project(&L->gate_up, x, M, hidden, y);
        failed = failed || gated_act(y, q, M, inter, L->act);
        failed = failed || project(&L->down, q, M, inter, attn);
        if (L->ffn_out_norm && !failed)
            failed = norm_in_place(attn, L->ffn_out_norm, 1, M, hidden, L->eps);
        hs = attn;
    }
    if (final_norm)
        failed = failed || add_rms_norm(hs, residual, final_norm, 1, residual, out, M, hidden, final_eps);
    else if (!failed)
        for (int64_t i = 0; i < M * hidden; i++) out[i] = residual[i] + hs[i];
    free(buf);
    return failed;
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_gguf_decode_step_isa(void) {
#if defined(__AVX512VNNI__)
    return "avx512_vnni";
#elif defined(__AVX512F__)
    return "avx512";
#else
    return "avx2";
#endif
}
