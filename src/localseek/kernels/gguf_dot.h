/* Dot products of one GGUF-quantized weight row with up to four int8 activation rows.
 *
 * Weights stay in ggml's block layouts (ggml-common.h): Q4_0, Q5_0, Q8_0 (32 values a block)
 * and Q4_K, Q5_K, Q6_K (256 values a super-block). Activations are quantized to int8 in blocks
 * of QB values (256 when the row length allows, else 32), one float scale d a block, in one or
 * two levels: level two holds what level one missed, in steps of d / 256, so two levels carry
 * ~15 bits (act_row). The sums of the quantized values per 16 and per 32 are kept, so a block's
 * offset (Q4_0's -8, a K-quant's min, Q6_K's -32) costs one multiply per block rather than one
 * per value. Each 32-value chunk of weights is unpacked once to unsigned bytes and multiplied
 * with every activation row: u8 x s8 products summed in int16 pairs (maddubs), then in int32.
 * A K-quant's sub-block scales are integers, so they are applied in that int32 step (madd with
 * the scale instead of 1) and a super-block goes to float once, not once per 32 values: that
 * is why activation blocks are a whole super-block long when they can be.
 *
 * 256-bit vectors in every variant: the work per value is small and the loads dominate, and
 * the same code then runs on AVX2 CPUs; the AVX-512 variant differs by the VNNI instruction in
 * the 32-value block types.
 */
#ifndef LOCALSEEK_GGUF_DOT_H
#define LOCALSEEK_GGUF_DOT_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define MAX_ACT_ROWS 4

/* ggml type ids (gguf's GGMLQuantizationType) and their block sizes. */
enum { T_Q4_0 = 2, T_Q5_0 = 6, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14 };

/* One activation row quantized in blocks of QB = 1 << qb_log2 values (32 or 256):
 * x[i] ~= d[i / QB] * (q[i] + q2[i] / 256), q2 only with two levels. q16 holds both levels as
 * one int16, 256 q + q2 (|.| <= 32639), for signed weights (Q8_0), or is NULL. */
typedef struct {
    const int8_t *q;   /* [K] level one */
    const int8_t *q2;  /* [K] level two */
    const int16_t *q16; /* [K] 256 q + q2, or NULL */
    const float *d;    /* [K / QB] */
    const float *s16;  /* [K / 16]: d * (sum of q + sum of q2 / 256) over each 16 values */
    const float *s32;  /* [K / 32]: the same over each 32 */
    int qb_log2;
} act_row;

static inline float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* sum over 4-byte groups of u[i] * a[i] (u unsigned, a signed): lanes 0-3 cover bytes 0-15,
 * lanes 4-7 bytes 16-31. */
static inline __m256i dot32(__m256i u, __m256i a) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
#endif
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 u8x8_to_float(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

static inline __m256 s8x8_to_float(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* 32 bits -> 32 bytes, byte k = 0x10 where bit k is set (Q5's fifth bit, in place). */
static inline __m256i fifth_bits(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i mask = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, mask), mask);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* A Q4_0 (18 bytes) or Q5_0 (22 bytes) block's 32 values as unsigned bytes: low nibbles are
 * values 0-15, high nibbles 16-31, Q5_0's fifth bits in place. */
static inline __m256i q4_0_q5_0_bytes(const uint8_t *blk, int five) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i x = _mm_loadu_si128((const __m128i *)(blk + (five ? 22 : 18) - 16));
    __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m4), _mm_and_si128(x, m4));
    if (five) {
        uint32_t qh;
        memcpy(&qh, blk + 2, 4);
        u = _mm256_or_si256(u, fifth_bits(qh));
    }
    return u;
}

/* Chunk c of a Q4_K / Q5_K super-block's qs: sub-block 2c (low nibbles) and 2c + 1 (high) as
 * unsigned bytes. Q5_K's fifth bit of sub-block j is bit j of each qh byte: *qh holds them and
 * is shifted for the next chunk. */
static inline void k4_chunk(const uint8_t *qs, int c, int five, __m256i *qh, __m256i *lo,
                            __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
    *lo = _mm256_and_si256(raw, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    if (five) {
        *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(*qh, one), 4));
        *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(
                                       _mm256_and_si256(_mm256_srli_epi16(*qh, 1), one), 4));
        *qh = _mm256_srli_epi16(*qh, 2);
    }
}

/* Half n of a Q6_K super-block (see dot_q6_K) as four chunks of 32 six-bit unsigned values. */
static inline void q6_K_half(const uint8_t *blk, int n, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    const uint8_t *ql = blk + 64 * n, *qh = blk + 128 + 32 * n;
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
}

/* The int32 sums of 32 weight bytes u (unsigned) with 32 activations, both levels: level one
 * counts 256 times (|level one| <= 31 x 127 x 4 a lane before the shift: no overflow). */
static inline __m256i dot32_levels(__m256i u, const int8_t *a, const int8_t *a2, const int L) {
    __m256i p = dot32(u, _mm256_loadu_si256((const __m256i *)a));
    if (L == 2)
        p = _mm256_add_epi32(_mm256_slli_epi32(p, 8),
                             dot32(u, _mm256_loadu_si256((const __m256i *)a2)));
    return p;
}

/* u (unsigned, <= 63) times 32 activations, int16 pairs weighted by the sub-block scales in
 * sc (16 int16 lanes) and summed in int32: the K-quants' integer step. */
static inline __m256i dot32_scaled(__m256i u, const int8_t *a, __m256i sc) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)a)), sc);
}

/* A super-block's int32 sums (level one s1, level two s2) to float, times dd, onto acc. */
static inline __m256 super_block_to_float(__m256i s1, __m256i s2, const int L, float dd,
                                          __m256 acc) {
    __m256 f = _mm256_cvtepi32_ps(s1);
    if (L == 2) f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s2), _mm256_set1_ps(1.0f / 256.0f), f);
    return _mm256_fmadd_ps(f, _mm256_set1_ps(dd), acc);
}

/* Q4_0 (18 bytes: d, 16 bytes of nibbles; value = d * (q - 8)) and Q5_0 (22 bytes: d, 32
 * fifth bits, 16 bytes of nibbles; value = d * (q - 16)): low nibbles are values 0-15, high
 * nibbles 16-31. */
static inline __attribute__((always_inline)) void dot_q4_0_q5_0(const uint8_t *w, int64_t nblocks,
                                                                const act_row *a, float *res,
                                                                const int nr, const int L,
                                                                const int five) {
    __m256 acc[MAX_ACT_ROWS];
    float off[MAX_ACT_ROWS];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps(), off[r] = 0.0f;
    const int64_t bytes = five ? 22 : 18;
    const int shift = a[0].qb_log2 - 5; /* weight block b lies in activation block b >> shift */
    const float unit = L == 2 ? 1.0f / 256.0f : 1.0f;
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = w + b * bytes;
        const float d = half_to_float(blk) * unit;
        const __m256i u = q4_0_q5_0_bytes(blk, five);
        for (int r = 0; r < nr; r++) {
            const __m256i p = dot32_levels(u, a[r].q + b * 32, a[r].q2 + b * 32, L);
            const __m256 coef = _mm256_set1_ps(d * a[r].d[b >> shift]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), coef, acc[r]);
            off[r] += d * a[r].s32[b];
        }
    }
    for (int r = 0; r < nr; r++) res[r] = hsum8(acc[r]) - (five ? 16.0f : 8.0f) / unit * off[r];
}

/* Q8_0 (34 bytes: d, 32 signed bytes). One level: |w| x (a with w's sign) keeps the first
 * factor unsigned, as maddubs needs. Two levels with q16: the weights widened to int16 times
 * both levels at once in madd (2 multiplies a block instead of 2 sign flips, 2 maddubs and 2
 * madds; the same integer sums). */
static inline __attribute__((always_inline)) void dot_q8_0(const uint8_t *w, int64_t nblocks,
                                                           const act_row *a, float *res,
                                                           const int nr, const int L) {
    __m256 acc[MAX_ACT_ROWS];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    const int shift = a[0].qb_log2 - 5;
    const float unit = L == 2 ? 1.0f / 256.0f : 1.0f;
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = w + b * 34;
        const float d = half_to_float(blk) * unit;
        if (L == 2 && a[0].q16) {
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
            for (int r = 0; r < nr; r++) {
                const int16_t *x = a[r].q16 + b * 32;
                const __m256i p = _mm256_add_epi32(
                    _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)x)),
                    _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(x + 16))));
                const __m256 coef = _mm256_set1_ps(d * a[r].d[b >> shift]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), coef, acc[r]);
            }
            continue;
        }
        const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 2));
        const __m256i u = _mm256_abs_epi8(q);
        for (int r = 0; r < nr; r++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(a[r].q + b * 32));
            __m256i p = dot32(u, _mm256_sign_epi8(x, q));
            if (L == 2) {
                const __m256i x2 = _mm256_loadu_si256((const __m256i *)(a[r].q2 + b * 32));
                p = _mm256_add_epi32(_mm256_slli_epi32(p, 8), dot32(u, _mm256_sign_epi8(x2, q)));
            }
            const __m256 coef = _mm256_set1_ps(d * a[r].d[b >> shift]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), coef, acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) res[r] = hsum8(acc[r]);
}

/* Q4_K / Q5_K's eight 6-bit scales and eight 6-bit mins, packed in 12 bytes, unpacked four
 * bytes at a time: word 0 of `out` holds scales 0-3, word 1 scales 4-7, words 2 and 3 the
 * mins. Scales and mins 0-3 are the low six bits of bytes 0-3 and 4-7; 4-7 take their low
 * four bits from a nibble of bytes 8-11 and their top two from bits 6-7 of bytes 0-3 / 4-7.
 * Byte-wise masks keep the 32-bit shifts from mixing neighbouring bytes. */
static inline void k4_scales(const uint8_t *packed, uint32_t out[4]) {
    uint32_t w[3];
    memcpy(w, packed, 12);
    const uint32_t low6 = 0x3f3f3f3fu, nibble = 0x0f0f0f0fu, top2 = 0x03030303u;
    out[0] = w[0] & low6;
    out[1] = (w[2] & nibble) | (((w[0] >> 6) & top2) << 4);
    out[2] = w[1] & low6;
    out[3] = ((w[2] >> 4) & nibble) | (((w[1] >> 6) & top2) << 4);
}

/* int16 lane pair 2j, 2j + 1 of a 128-bit lane, repeated: a vpshufb mask picking element j. */
static inline __m256i pick16(int j) { return _mm256_set1_epi16((short)(((2 * j + 1) << 8) | 2 * j)); }

/* Q4_K (144 bytes: d, dmin, scales[12], qs[128]) and Q5_K (176 bytes: d, dmin, scales[12],
 * qh[32], qs[128]): value = d * sc[j] * q - dmin * mn[j] for sub-block j of 32. Chunk c of
 * qs holds sub-block 2c in its low nibbles and 2c + 1 in its high ones; Q5_K's fifth bit of
 * sub-block j is bit j of each qh byte. Activation blocks of 256: one d a super-block. */
static inline __attribute__((always_inline)) void dot_q4_K_q5_K(const uint8_t *w, int64_t nsuper,
                                                                const act_row *a, float *res,
                                                                const int nr, const int L,
                                                                const int five) {
    __m256 acc[MAX_ACT_ROWS];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    const int64_t bytes = five ? 176 : 144;
    for (int64_t i = 0; i < nsuper; i++) {
        const uint8_t *blk = w + i * bytes;
        uint32_t sm[4];
        k4_scales(blk + 4, sm);
        /* the eight scales as int16 in both 128-bit lanes: a chunk's are one vpshufb away */
        const __m256i scales =
            _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_set_epi32(0, 0, sm[1], sm[0])));
        const float d = half_to_float(blk);
        const __m256 dmn = _mm256_mul_ps(_mm256_set1_ps(half_to_float(blk + 2)),
                                         u8x8_to_float((const uint8_t *)(sm + 2)));
        for (int r = 0; r < nr; r++) /* the mins: - dmin * mn[j] * (sum of sub-block j) */
            acc[r] = _mm256_fnmadd_ps(dmn, _mm256_loadu_ps(a[r].s32 + i * 8), acc[r]);
        __m256i s1[MAX_ACT_ROWS], s2[MAX_ACT_ROWS];
        for (int r = 0; r < nr; r++) s1[r] = s2[r] = _mm256_setzero_si256();
        const uint8_t *qs = blk + (five ? 48 : 16);
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i lo, hi;
            k4_chunk(qs, c, five, &qh, &lo, &hi);
            const __m256i sl = _mm256_shuffle_epi8(scales, pick16(2 * c));
            const __m256i sh = _mm256_shuffle_epi8(scales, pick16(2 * c + 1));
            for (int r = 0; r < nr; r++) {
                const int64_t o = i * 256 + 64 * c;
                s1[r] = _mm256_add_epi32(s1[r], _mm256_add_epi32(dot32_scaled(lo, a[r].q + o, sl),
                                                                 dot32_scaled(hi, a[r].q + o + 32, sh)));
                if (L == 2)
                    s2[r] = _mm256_add_epi32(
                        s2[r], _mm256_add_epi32(dot32_scaled(lo, a[r].q2 + o, sl),
                                                dot32_scaled(hi, a[r].q2 + o + 32, sh)));
            }
        }
        for (int r = 0; r < nr; r++) acc[r] = super_block_to_float(s1[r], s2[r], L, d * a[r].d[i], acc[r]);
    }
    for (int r = 0; r < nr; r++) res[r] = hsum8(acc[r]);
}

/* Q6_K (210 bytes: ql[128], qh[64], scales[16] signed, d): value = d * sc[k] * (q - 32) for
 * sub-block k of 16, q = 4 low bits from ql and 2 high bits from qh. Each half of 128 values
 * takes 64 bytes of ql and 32 of qh: ql's low nibbles are values 0-63 of the half, its high
 * nibbles 64-127, and qh's bit pairs 0-1, 2-3, 4-5, 6-7 give values 0-31, 32-63, 64-95, 96-127.
 * Activation blocks of 256: one d a super-block. */
static inline __attribute__((always_inline)) void dot_q6_K(const uint8_t *w, int64_t nsuper,
                                                           const act_row *a, float *res,
                                                           const int nr, const int L) {
    __m256 acc[MAX_ACT_ROWS];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsuper; i++) {
        const uint8_t *blk = w + i * 210;
        const int8_t *sc = (const int8_t *)(blk + 192);
        const float d = half_to_float(blk + 208);
        /* the -32 offset: -32 d sum_k sc[k] * s16[k] */
        const __m256 sc_lo = s8x8_to_float(sc), sc_hi = s8x8_to_float(sc + 8);
        const __m256 d32 = _mm256_set1_ps(32.0f * d);
        for (int r = 0; r < nr; r++) {
            const __m256 s = _mm256_mul_ps(sc_lo, _mm256_loadu_ps(a[r].s16 + i * 16));
            acc[r] = _mm256_fnmadd_ps(
                d32, _mm256_fmadd_ps(sc_hi, _mm256_loadu_ps(a[r].s16 + i * 16 + 8), s), acc[r]);
        }
        __m256i s1[MAX_ACT_ROWS], s2[MAX_ACT_ROWS];
        for (int r = 0; r < nr; r++) s1[r] = s2[r] = _mm256_setzero_si256();
        for (int n = 0; n < 2; n++) {
            __m256i q[4];
            q6_K_half(blk, n, q);
            /* the half's eight scales as int16 in both 128-bit lanes */
            const __m256i scales = _mm256_broadcastsi128_si256(
                _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(sc + 8 * n))));
            for (int c = 0; c < 4; c++) {
                /* the chunk's two sub-blocks of 16, 8n + 2c and 8n + 2c + 1: one per lane */
                const __m256i scv = _mm256_shuffle_epi8(
                    scales, _mm256_set_m128i(_mm256_castsi256_si128(pick16(2 * c + 1)),
                                             _mm256_castsi256_si128(pick16(2 * c))));
                for (int r = 0; r < nr; r++) {
                    const int64_t o = i * 256 + 128 * n + 32 * c;
                    s1[r] = _mm256_add_epi32(s1[r], dot32_scaled(q[c], a[r].q + o, scv));
                    if (L == 2) s2[r] = _mm256_add_epi32(s2[r], dot32_scaled(q[c], a[r].q2 + o, scv));
                }
            }
        }
        for (int r = 0; r < nr; r++) acc[r] = super_block_to_float(s1[r], s2[r], L, d * a[r].d[i], acc[r]);
    }
    for (int r = 0; r < nr; r++) res[r] = hsum8(acc[r]);
}

/* Values per block and bytes per block of each type. */
static inline int block_values(int type) {
    return (type == T_Q4_K || type == T_Q5_K || type == T_Q6_K) ? 256 : 32;
}

static inline int block_bytes(int type) {
    switch (type) {
    case T_Q4_0: return 18;
    case T_Q5_0: return 22;
    case T_Q8_0: return 34;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    default: return 0;
    }
}

/* res[r] = dot(weight row w of type `type` and K values, activation row r), r < nr, with
 * `levels` levels of activations. The K-quants need activation blocks of 256. */
static inline __attribute__((always_inline)) void dot_row(int type, const uint8_t *w, int64_t K,
                                                          const act_row *a, float *res, int nr,
                                                          int levels) {
    const int64_t nb = K / block_values(type);
#define LS_DOT_FOR(NR, L)                                                                         \
    switch (type) {                                                                               \
    case T_Q4_0: dot_q4_0_q5_0(w, nb, a, res, NR, L, 0); break;                                   \
    case T_Q5_0: dot_q4_0_q5_0(w, nb, a, res, NR, L, 1); break;                                   \
    case T_Q8_0: dot_q8_0(w, nb, a, res, NR, L); break;                                           \
    case T_Q4_K: dot_q4_K_q5_K(w, nb, a, res, NR, L, 0); break;                                   \
    case T_Q5_K: dot_q4_K_q5_K(w, nb, a, res, NR, L, 1); break;                                   \
    case T_Q6_K: dot_q6_K(w, nb, a, res, NR, L); break;                                           \
    }
#define LS_DOT_LEVELS(NR)                                                                         \
    if (levels == 2) {                                                                            \
        LS_DOT_FOR(NR, 2)                                                                         \
    } else {                                                                                      \
        LS_DOT_FOR(NR, 1)                                                                         \
    }
    /* constant row and level counts, so each inlined body keeps its accumulators in registers */
    switch (nr) {
    case 1: LS_DOT_LEVELS(1) break;
    case 2: LS_DOT_LEVELS(2) break;
    case 3: LS_DOT_LEVELS(3) break;
    default: LS_DOT_LEVELS(4) break;
    }
#undef LS_DOT_LEVELS
#undef LS_DOT_FOR
}

#endif
