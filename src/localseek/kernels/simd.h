/* SIMD routines the kernels share, written once for either vector width (vec.h). */
#ifndef LOCALSEEK_SIMD_H
#define LOCALSEEK_SIMD_H

#include "vec.h"

#if VW == 16
/* [sum(a[0]), ..., sum(a[15])]: sixteen horizontal sums in ~45 shuffles and adds, against
 * ~8 instructions for each one on its own. */
static inline __m512 sum16(const __m512 *a) {
    __m512 c[8], e[4];
    for (int i = 0; i < 8; i++) /* 128-bit lanes: a_i folded to 8 partials | a_(i+8) */
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 8], 0x44),
                             _mm512_shuffle_f32x4(a[i], a[i + 8], 0xEE));
    for (int i = 0; i < 4; i++) /* lanes: a_i | a_(i+8) | a_(i+4) | a_(i+12), 4 partials each */
        e[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[i], c[i + 4], 0x88),
                             _mm512_shuffle_f32x4(c[i], c[i + 4], 0xDD));
    __m512 f0 = _mm512_add_ps(_mm512_unpacklo_ps(e[0], e[1]), _mm512_unpackhi_ps(e[0], e[1]));
    __m512 f1 = _mm512_add_ps(_mm512_unpacklo_ps(e[2], e[3]), _mm512_unpackhi_ps(e[2], e[3]));
    __m512 g = _mm512_add_ps(_mm512_shuffle_ps(f0, f1, 0x44), _mm512_shuffle_ps(f0, f1, 0xEE));
    return _mm512_shuffle_f32x4(g, g, 0xD8); /* lanes 0, 2, 1, 3 */
}
/* VW horizontal sums, one per vector of a */
static inline vecf vsums(const vecf *a) { return sum16(a); }
#else
/* [sum(a[0]), ..., sum(a[7])]: eight horizontal sums in 6 pairwise adds, 2 lane swaps and an
 * add. */
static inline __m256 sum8(const __m256 *a) {
    __m256 h0 = _mm256_hadd_ps(a[0], a[1]), h1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 h2 = _mm256_hadd_ps(a[4], a[5]), h3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 i0 = _mm256_hadd_ps(h0, h1); /* a0..a3 low halves | a0..a3 high halves */
    __m256 i1 = _mm256_hadd_ps(h2, h3); /* the same for a4..a7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(i0, i1, 0x20),
                         _mm256_permute2f128_ps(i0, i1, 0x31));
}
static inline vecf vsums(const vecf *a) { return sum8(a); }
#endif

/* e^x, float32, within ~2 ulp (Cephes' expf polynomial; inputs clamped to the finite range). */
static inline vecf vexp(vecf x) {
    x = vmin(vmax(x, vset1(-87.3f)), vset1(88.3f));
    vecf n = vround(vmul(x, vset1(1.44269504088896341f)));
    vecf r = vfnma(n, vset1(0.693359375f), x);
    r = vfnma(n, vset1(-2.12194440e-4f), r);
    vecf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    vecf y = vadd(vfma(p, vmul(r, r), r), vset1(1.0f));
    return vscale2(y, n);
}

#if VW == 16
static inline __m512 exp512(__m512 x) { return vexp(x); } /* gemma3_decode.c's name */
#endif

#endif
