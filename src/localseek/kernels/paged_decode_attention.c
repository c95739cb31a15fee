/* Paged attention for decoding sequences (one query row each), on the CPU with AVX2 or AVX-512.
 *
 * Reads K/V straight from the paged cache through each sequence's block table: no gather into
 * a padded copy, no mask tensor, one pass over the context with an online softmax (running max
 * and sum per query head, the accumulator rescaled when the max grows). The query heads that
 * share a KV head are processed together, so each cached K/V row is read once for all of them.
 *
 * Layouts (all contiguous): q [S, Hq, D]; k_cache [blocks, B, Hkv, D]; v_cache
 * [blocks, B, Hkv, Dv]; block_tables int32 [S, table_stride]; context_lens int32 [S];
 * out [S, Hq, Dv]. Element type float32, or bfloat16 when bf16 != 0 (sums stay float32).
 * window > 0: a query at position L-1 sees only the last `window` keys (L - window .. L - 1).
 * Returns 0, or 1 for shapes it does not handle (the caller uses its torch path).
 */
#include "paged_attention.h"

int localseek_paged_decode_attention(const void *q, const void *k_cache, const void *v_cache,
                                     const int32_t *block_tables, const int32_t *context_lens,
                                     void *out, int64_t S, int64_t Hq, int64_t Hkv, int64_t D,
                                     int64_t Dv, int64_t B, int64_t table_stride, int64_t window,
                                     float scale, int bf16) {
    return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, out, S, Hq, Hkv,
                                  D, Dv, B, table_stride, window, scale, bf16);
}

/* The instruction set this object was compiled for, for logs and tests. */
const char *localseek_paged_decode_attention_isa(void) { return VW == 16 ? "avx512" : "avx2"; }
