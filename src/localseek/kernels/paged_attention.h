/* Decode attention read through block tables, shared by paged_decode_attention.c and
 * gemma3_decode.c (see the former for layouts): each (sequence, KV head) item attends its
 * keys with an online softmax; when there are fewer items than threads (one long sequence on a
 * model with one KV head, say), an item's keys are split among threads and the partial
 * results merged, as flash-decoding does. */
#ifndef LOCALSEEK_PAGED_ATTENTION_H
#define LOCALSEEK_PAGED_ATTENTION_H

#include "bf16.h"
#include "simd.h"
#include "vec.h"
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP 16 /* query heads per KV head */
#define MAX_DIM 512  /* head_dim and v_dim */
#define MAX_PARTS 64 /* key ranges one item is split into */

/* VW elements at p, float32 or bf16, as float32 */
static inline vecf load_elems(const void *p, int bf16) {
    return bf16 ? vload_bf16((const uint16_t *)p) : vload((const float *)p);
}

/* One item's running softmax over some of its keys: per query head the max score, the sum of
 * exp(score - max) and the exp-weighted sum of values. */
typedef struct {
    float mx[MAX_GROUP], sum[MAX_GROUP];
    float acc[MAX_GROUP][MAX_DIM];
} attend_state;

/* Keys [t_begin, t_end) of the sequence whose query rows (the G heads of KV head h) start at q,
 * into st. */
static void attend_range(const char *q, const char *k_cache, const char *v_cache,
                         const int32_t *table, int64_t t_begin, int64_t t_end, int64_t Hkv,
                         int64_t h, int64_t G, int64_t D, int64_t Dv, int64_t B, float scale,
                         int bf16, attend_state *st) {
    const int64_t es = bf16 ? 2 : 4;
    float qf[MAX_GROUP + 3][MAX_DIM];
    float (*acc)[MAX_DIM] = st->acc;
    float *mx = st->mx, *sum = st->sum;
    const int64_t G4 = (G + 3) / 4 * 4; /* query rows padded with zeros: dots 4 at a time */
    for (int64_t g = 0; g < G; g++) {
        for (int64_t d = 0; d < D; d += VW)
            vstore(qf[g] + d, vmul(load_elems(q + ((h * G + g) * D + d) * es, bf16), vset1(scale)));
        memset(acc[g], 0, sizeof(float) * Dv);
        mx[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    for (int64_t g = G; g < G4; g++) memset(qf[g], 0, sizeof(float) * D);
    /* Keys VW at a time: their scores come out of one VW-way horizontal sum, and the online
     * softmax takes one vector exp and at most one rescale per block instead of a scalar
     * exp (and a possible rescale) per key. */
    vecf dots[MAX_GROUP][VW];
    const char *v_rows[VW];
    float p[VW];
    for (int64_t t0 = t_begin; t0 < t_end; t0 += VW) {
        const int64_t n = t_end - t0 < VW ? t_end - t0 : VW;
        for (int64_t j = 0; j < VW; j++) {
            if (j >= n) {
                for (int64_t g = 0; g < G; g++) dots[g][j] = vzero();
                continue;
            }
            const int64_t t = t0 + j, slot = (int64_t)table[t / B] * B + t % B;
            const char *k = k_cache + (slot * Hkv + h) * D * es;
            v_rows[j] = v_cache + (slot * Hkv + h) * Dv * es;
            for (int64_t g = 0; g < G4; g += 4) { /* four independent chains, k read once */
                vecf a0 = vzero(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t d = 0; d < D; d += VW) {
                    const vecf kv = load_elems(k + d * es, bf16);
                    a0 = vfma(vload(qf[g] + d), kv, a0);
                    a1 = vfma(vload(qf[g + 1] + d), kv, a1);
                    a2 = vfma(vload(qf[g + 2] + d), kv, a2);
                    a3 = vfma(vload(qf[g + 3] + d), kv, a3);
                }
                dots[g][j] = a0;
                if (g + 1 < G) dots[g + 1][j] = a1;
                if (g + 2 < G) dots[g + 2][j] = a2;
                if (g + 3 < G) dots[g + 3][j] = a3;
            }
        }
        const vmask valid = vfirst(n);
        for (int64_t g = 0; g < G; g++) {
            vecf scores = vblend(valid, vset1(-INFINITY), vsums(dots[g]));
            float block_max = vhmax(scores);
            if (block_max > mx[g]) {
                float shrink = expf(mx[g] - block_max); /* 0 on the first block */
                sum[g] *= shrink;
                for (int64_t d = 0; d < Dv; d += VW)
                    vstore(acc[g] + d, vmul(vload(acc[g] + d), vset1(shrink)));
                mx[g] = block_max;
            }
            vecf probs = vkeep(valid, vexp(vsub(scores, vset1(mx[g]))));
            sum[g] += vhsum(probs);
            vstore(p, probs);
            for (int64_t d = 0; d < Dv; d += VW) { /* the accumulator stays in a register */
                vecf a = vload(acc[g] + d);
                for (int64_t j = 0; j < n; j++)
                    a = vfma(vset1(p[j]), load_elems(v_rows[j] + d * es, bf16), a);
                vstore(acc[g] + d, a);
            }
        }
    }
}

/* out (the G heads of KV head h, bf16 or float32) from the states of an item's key ranges. */
static void attend_merge(attend_state *const *parts, int64_t n_parts, int64_t h, int64_t G,
                         int64_t Dv, int bf16, char *out) {
    const int64_t es = bf16 ? 2 : 4;
    for (int64_t g = 0; g < G; g++) {
        float top = -INFINITY, total = 0.0f;
        for (int64_t i = 0; i < n_parts; i++) top = parts[i]->mx[g] > top ? parts[i]->mx[g] : top;
        float weight[MAX_PARTS];
        for (int64_t i = 0; i < n_parts; i++) {
            weight[i] = parts[i]->sum[g] > 0.0f ? expf(parts[i]->mx[g] - top) : 0.0f;
            total += parts[i]->sum[g] * weight[i];
        }
        const float inv = total > 0.0f ? 1.0f / total : 0.0f;
        char *o = out + (h * G + g) * Dv * es;
        for (int64_t d = 0; d < Dv; d += VW) {
            vecf v = vzero();
            for (int64_t i = 0; i < n_parts; i++)
                v = vfma(vload(parts[i]->acc[g] + d), vset1(weight[i]), v);
            v = vmul(v, vset1(inv));
            if (bf16)
                vstore_bf16((uint16_t *)o + d, v);
            else
                vstore((float *)o + d, v);
        }
    }
}

/* Keys split across threads only for items this long (the split and merge cost a pass over
 * the partial states; below this an item is a few microseconds of work). */
#define SPLIT_MIN_KEYS 512

/* How many key ranges each of `items` items gets when `threads` threads share them. */
static int64_t attend_parts(int64_t items, int threads) {
    if (items >= threads) return 1;
    const int64_t parts = threads / items;
    return parts > MAX_PARTS ? MAX_PARTS : parts;
}

/* Every (sequence, KV head) item of a decode step; called inside an OpenMP parallel region by
 * all its threads. q [S, Hq, D], out [S, Hq, Dv]; item s reads its block table at
 * tables + s * stride and its context length lens[s]. `states`: attend_parts(S * Hkv,
 * threads) * S * Hkv states of scratch (unused when every item is whole). */
static void attend_items(const char *q, const char *k_cache, const char *v_cache,
                         const int32_t *tables, int64_t stride, const int32_t *lens, char *out,
                         int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t Dv, int64_t B,
                         int64_t window, float scale, int bf16, int threads,
                         attend_state *states) {
    const int64_t es = bf16 ? 2 : 4, G = Hq / Hkv, items = S * Hkv;
    const int64_t parts = attend_parts(items, threads);
    #pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < items * parts; job++) {
        const int64_t item = job / parts, part = job % parts, s = item / Hkv, h = item % Hkv;
        const int64_t L = lens[s], start = (window > 0 && L > window) ? L - window : 0;
        const int64_t keys = L - start;
        const int64_t split = keys >= SPLIT_MIN_KEYS ? parts : 1;
        if (part >= split) continue;
        const char *qs = q + s * Hq * D * es;
        if (split == 1) {
            attend_state st;
            attend_range(qs, k_cache, v_cache, tables + s * stride, start, L, Hkv, h, G, D, Dv, B,
                         scale, bf16, &st);
            attend_state *one = &st;
            attend_merge(&one, 1, h, G, Dv, bf16, out + s * Hq * Dv * es);
            continue;
        }
        /* ranges of whole VW-key blocks */
        const int64_t per = (keys + split * VW - 1) / (split * VW) * VW;
        const int64_t lo = start + part * per, hi = lo + per < L ? lo + per : L;
        attend_range(qs, k_cache, v_cache, tables + s * stride, lo < L ? lo : L, hi, Hkv, h, G, D,
                     Dv, B, scale, bf16, &states[item * parts + part]);
    }
    #pragma omp for schedule(static)
    for (int64_t item = 0; item < items; item++) {
        const int64_t s = item / Hkv, h = item % Hkv;
        const int64_t L = lens[s], start = (window > 0 && L > window) ? L - window : 0;
        if (parts == 1 || L - start < SPLIT_MIN_KEYS) continue; /* written whole above */
        attend_state *ptrs[MAX_PARTS];
        for (int64_t i = 0; i < parts; i++) ptrs[i] = &states[item * parts + i];
        attend_merge(ptrs, parts, h, G, Dv, bf16, out + s * Hq * Dv * es);
    }
}

/* The whole decode attention of paged_decode_attention.c (layouts there); 0, or 1 for shapes it
 * does not handle. */
static inline int paged_decode_attention(const void *q, const void *k_cache, const void *v_cache,
                                         const int32_t *block_tables, const int32_t *context_lens,
                                         void *out, int64_t S, int64_t Hq, int64_t Hkv, int64_t D,
                                         int64_t Dv, int64_t B, int64_t table_stride,
                                         int64_t window, float scale, int bf16) {
    if (S < 0 || Hkv <= 0 || Hq % Hkv || Hq / Hkv > MAX_GROUP || D % 16 || Dv % 16 ||
        D > MAX_DIM || Dv > MAX_DIM || D <= 0 || Dv <= 0 || B <= 0)
        return 1;
    const int threads = omp_get_max_threads();
    const int64_t parts = attend_parts(S * Hkv, threads);
    attend_state *states = NULL;
    if (parts > 1 && S > 0) {
        states = (attend_state *)aligned_alloc(64, (size_t)(S * Hkv * parts) * sizeof(attend_state));
        if (!states) return 1;
    }
    #pragma omp parallel
    attend_items((const char *)q, (const char *)k_cache, (const char *)v_cache, block_tables,
                 table_stride, context_lens, (char *)out, S, Hq, Hkv, D, Dv, B, window, scale, bf16,
                 threads, states);
    free(states);
    return 0;
}

#endif
