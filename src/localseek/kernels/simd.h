/* Small AVX-512 building blocks the kernels share. */
#ifndef LOCALSEEK_SIMD_H
#define LOCALSEEK_SIMD_H

#include <immintrin.h>

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

/* e^x, float32, within ~2 ulp (Cephes' expf polynomial; inputs clamped to the finite range). */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

#endif
