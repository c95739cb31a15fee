/* A float32 vector of the widest kind the variant being compiled has: 16 lanes under AVX-512
 * (__AVX512F__), 8 under AVX2 + FMA, so one kernel source builds for both. Under AVX-512 each
 * operation is the one intrinsic the kernels used before this header; AVX2 has no mask
 * registers, so a lane mask there is a vector of all-ones / all-zeros lanes (blends, ands). */
#ifndef LOCALSEEK_VEC_H
#define LOCALSEEK_VEC_H

#include <immintrin.h>
#include <stdint.h>

#include "bf16.h"

#if defined(__AVX512F__)

#define VW 16
typedef __m512 vecf;
typedef __mmask16 vmask;

static inline vecf vzero(void) { return _mm512_setzero_ps(); }
static inline vecf vset1(float x) { return _mm512_set1_ps(x); }
static inline vecf vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstore(float *p, vecf v) { _mm512_storeu_ps(p, v); }
static inline vecf vadd(vecf a, vecf b) { return _mm512_add_ps(a, b); }
static inline vecf vsub(vecf a, vecf b) { return _mm512_sub_ps(a, b); }
static inline vecf vmul(vecf a, vecf b) { return _mm512_mul_ps(a, b); }
static inline vecf vdiv(vecf a, vecf b) { return _mm512_div_ps(a, b); }
static inline vecf vmin(vecf a, vecf b) { return _mm512_min_ps(a, b); }
static inline vecf vmax(vecf a, vecf b) { return _mm512_max_ps(a, b); }
static inline vecf vfma(vecf a, vecf b, vecf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vecf vfnma(vecf a, vecf b, vecf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vecf vround(vecf v) { /* to the nearest integer, ties to even */
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* y * 2^n for integral n in [-126, 127] */
static inline vecf vscale2(vecf y, vecf n) { return _mm512_scalef_ps(y, n); }
static inline float vhsum(vecf v) { return _mm512_reduce_add_ps(v); }
static inline float vhmax(vecf v) { return _mm512_reduce_max_ps(v); }
/* lanes [0, n) set, 0 <= n <= VW */
static inline vmask vfirst(int64_t n) { return (vmask)((1u << n) - 1); }
static inline vecf vblend(vmask m, vecf off, vecf on) { return _mm512_mask_blend_ps(m, off, on); }
static inline vecf vkeep(vmask m, vecf v) { return _mm512_maskz_mov_ps(m, v); }
static inline vecf vload_bf16(const uint16_t *p) { return bf16_load16(p); }
static inline void vstore_bf16(uint16_t *p, vecf v) { bf16_store16(p, v); }

#elif defined(__AVX2__) && defined(__FMA__)

#define VW 8
typedef __m256 vecf;
typedef __m256 vmask;

static inline vecf vzero(void) { return _mm256_setzero_ps(); }
static inline vecf vset1(float x) { return _mm256_set1_ps(x); }
static inline vecf vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstore(float *p, vecf v) { _mm256_storeu_ps(p, v); }
static inline vecf vadd(vecf a, vecf b) { return _mm256_add_ps(a, b); }
static inline vecf vsub(vecf a, vecf b) { return _mm256_sub_ps(a, b); }
static inline vecf vmul(vecf a, vecf b) { return _mm256_mul_ps(a, b); }
static inline vecf vdiv(vecf a, vecf b) { return _mm256_div_ps(a, b); }
static inline vecf vmin(vecf a, vecf b) { return _mm256_min_ps(a, b); }
static inline vecf vmax(vecf a, vecf b) { return _mm256_max_ps(a, b); }
static inline vecf vfma(vecf a, vecf b, vecf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vecf vfnma(vecf a, vecf b, vecf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vecf vround(vecf v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* y * 2^n for integral n in [-126, 127]: 2^n built in the exponent field (always normal). */
static inline vecf vscale2(vecf y, vecf n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
static inline float vhsum(vecf v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
static inline float vhmax(vecf v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}
/* lanes [0, n) set, 0 <= n <= VW */
static inline vmask vfirst(int64_t n) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane));
}
static inline vecf vblend(vmask m, vecf off, vecf on) { return _mm256_blendv_ps(off, on, m); }
static inline vecf vkeep(vmask m, vecf v) { return _mm256_and_ps(m, v); }
static inline vecf vload_bf16(const uint16_t *p) { return bf16_load8(p); }
static inline void vstore_bf16(uint16_t *p, vecf v) { bf16_store8(p, v); }

#else
#error "vec.h needs AVX2 and FMA (-mavx2 -mfma) or AVX-512 (-mavx512f)"
#endif

#endif
