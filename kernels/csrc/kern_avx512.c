/* AVX-512 paths: 12 segment rows x 32 stacked query tokens per register tile (tile_avx512.inc), in three
 * flavours that differ in what one instruction multiplies:
 *   - avx512     float32 FMA (vfmadd231ps), any storage kind widened to float32 (fp32 rows read in place);
 *   - avx512vnni int8 (vpdpbusd): 4 dims per instruction, int32 accumulation, exact;
 *   - avx512bf16 bf16 pairs (vdpbf16ps): 2 dims per instruction, float32 accumulation; bf16 rows read in
 *     place, fp8 rows widened to bf16 exactly.
 * The query side is packed by maxsim_cpu.c: per chunk of 32 tokens and k-step, 32 groups of 32 bits (one
 * float, two bf16 or four int8 dims of one token), so a row's group is broadcast against 16 tokens at once.
 */
#include "maxsim_cpu.h"

#ifdef MAXSIM_SIMD
#include <immintrin.h>

#include "simd_avx512.h"

#define T512 "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"
#define T512_VNNI "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx512vnni"
#define T512_BF16 "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx512vnni,avx512bf16"
#define RMAX 12

/* Prefetch the next row block into L2 (a hint: never faults, harmless past the end of the buffer). Into L2
 * rather than L1, which holds the packed query and the current block. Measured on a Zen 4 (one thread, rows
 * streamed from memory): +40% on fp32 rows read in place, +10-20% on bf16 / int8, against none. */
__attribute__((target(T512))) static inline void prefetch(const char *p, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
}

static inline int64_t row_bytes(const job_t *jb) {
    if (jb->kind == K_RES) return jb->rc_bytes;
    return (int64_t)jb->dim * (jb->kind == K_F32 ? 4 : (jb->kind == K_BF16 || jb->kind == K_F16) ? 2 : 1);
}

/* One row widened to float32 (zero past dim up to the next 16). */
__attribute__((target(T512))) static inline void widen_f32(const job_t *jb, int64_t row, float *dst) {
    const int d = jb->dim;
    if (jb->kind == K_RES) {
        decode_res_row(jb, row, dst);
        return;
    }
    if (jb->kind == K_F16 || jb->kind == K_BF16) {
        const uint16_t *src = (const uint16_t *)jb->d + row * d;
        for (int k = 0; k < d; k += 16) {
            const __m256i h = _mm256_maskz_loadu_epi16(mask16(d - k), src + k);
            const __m512 f = jb->kind == K_F16 ? _mm512_cvtph_ps(h)
                                               : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            _mm512_storeu_ps(dst + k, f);
        }
    } else if (jb->kind == K_I8) {
        const int8_t *src = (const int8_t *)jb->d + row * d;
        for (int k = 0; k < d; k += 16)
            _mm512_storeu_ps(dst + k, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask16(d - k), src + k))));
    } else if (jb->kind == K_FP8) {
        const uint8_t *src = (const uint8_t *)jb->d + row * d;
        for (int k = 0; k < d; k += 32) {
            const __m512i b = fp8x32_to_bf16(src + k, d - k);
            const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(b));
            const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1));
            _mm512_storeu_ps(dst + k, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
            _mm512_storeu_ps(dst + k + 16, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
        }
    } else { /* K_F32 (only when copied) */
        const float *src = (const float *)jb->d + row * d;
        for (int k = 0; k < d; k += 16) _mm512_storeu_ps(dst + k, _mm512_maskz_loadu_ps(mask16(d - k), src + k));
    }
}

/* Rows j .. j + nr - 1 for the float32 tile: float32 storage in place, anything else widened. */
__attribute__((target(T512))) static const char *rows_f32(const job_t *jb, int64_t j, int nr, work_t *w,
                                                          int64_t *stride) {
    const int64_t rb = row_bytes(jb);
    prefetch((const char *)jb->d + (j + nr) * rb, RMAX * rb);
    if (jb->kind == K_F32) {
        *stride = rb;
        return (const char *)jb->d + j * rb;
    }
    for (int r = 0; r < nr; r++) widen_f32(jb, j + r, (float *)(w->rows + r * w->row_stride));
    *stride = w->row_stride;
    return w->rows;
}

/* Rows for the VNNI tile: int8 bytes with the sign bit flipped (s + 128, unsigned, as vpdpbusd's first
 * operand needs). The flip adds 128 x (the query token's byte sum) to every product, which the packed
 * chunk's offsets (-128 x that sum) cancel by starting the accumulators there: nothing in the k loop. */
__attribute__((target(T512))) static const char *rows_i8(const job_t *jb, int64_t j, int nr, work_t *w,
                                                         int64_t *stride) {
    const int d = jb->dim;
    prefetch((const char *)jb->d + (j + nr) * d, RMAX * d);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int r = 0; r < nr; r++) {
        const int8_t *src = (const int8_t *)jb->d + (j + r) * d;
        char *dst = w->rows + r * w->row_stride;
        for (int k = 0; k < d; k += 64)
            _mm512_storeu_si512((void *)(dst + k), _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask64(d - k), src + k), flip));
    }
    *stride = w->row_stride;
    return w->rows;
}

/* Rows for the bf16 tile: bf16 storage in place (an odd dim is copied with a zero pad to a whole pair),
 * fp8 widened to bf16. */
__attribute__((target(T512))) static const char *rows_bf16(const job_t *jb, int64_t j, int nr, work_t *w,
                                                           int64_t *stride) {
    const int d = jb->dim;
    const int64_t rb = row_bytes(jb);
    prefetch((const char *)jb->d + (j + nr) * rb, RMAX * rb);
    if (jb->kind == K_BF16 && !(d & 1)) {
        *stride = rb;
        return (const char *)jb->d + j * rb;
    }
    for (int r = 0; r < nr; r++) {
        uint16_t *dst = (uint16_t *)(w->rows + r * w->row_stride);
        if (jb->kind == K_FP8) {
            const uint8_t *src = (const uint8_t *)jb->d + (j + r) * d;
            for (int k = 0; k < d; k += 32) _mm512_storeu_si512((void *)(dst + k), fp8x32_to_bf16(src + k, d - k));
        } else {
            const uint16_t *src = (const uint16_t *)jb->d + (j + r) * d;
            for (int k = 0; k < d; k += 32)
                _mm512_storeu_si512((void *)(dst + k), _mm512_maskz_loadu_epi16(mask32(d - k), src + k));
        }
    }
    *stride = w->row_stride;
    return w->rows;
}

/* acc += b (unsigned bytes) . q (signed bytes), 4 per lane. In asm because gcc (12) copies the accumulator
 * of the vpdpbusd intrinsic to a fresh register and spills the tile every k-step. */
__attribute__((target(T512_VNNI), always_inline)) static inline __m512i dpbusd512(__m512i acc, __m512i b,
                                                                                 __m512i q) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(b), "v"(q));
    return acc;
}

/* The three tiles and their segment drivers. */
#define TILE tile_f32
#define SEG seg_avx512
#define SEG_ROWS rows_f32
#define TILE_TGT T512
#define TILE_INT 0
#define TILE_VEC __m512
#define TILE_LOAD(p) _mm512_loadu_ps((const float *)(p))
#define TILE_BCAST(g) _mm512_castsi512_ps(_mm512_set1_epi32(g))
#define TILE_OP(acc, b, q) _mm512_fmadd_ps(b, q, acc)
#include "tile_avx512.inc"
#undef TILE
#undef SEG
#undef SEG_ROWS
#undef TILE_TGT
#undef TILE_INT
#undef TILE_OP
#undef TILE_VEC
#undef TILE_LOAD
#undef TILE_BCAST

#define TILE tile_vnni
#define SEG seg_avx512vnni
#define SEG_ROWS rows_i8
#define TILE_TGT T512_VNNI
#define TILE_INT 1
#define TILE_VEC __m512i
#define TILE_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define TILE_BCAST(g) _mm512_set1_epi32(g)
#define TILE_OP(acc, b, q) dpbusd512(acc, b, q)
#include "tile_avx512.inc"
#undef TILE
#undef SEG
#undef SEG_ROWS
#undef TILE_TGT
#undef TILE_INT
#undef TILE_OP
#undef TILE_VEC
#undef TILE_LOAD
#undef TILE_BCAST

#define TILE tile_bf16
#define SEG seg_avx512bf16
#define SEG_ROWS rows_bf16
#define TILE_TGT T512_BF16
#define TILE_INT 0
#define TILE_VEC __m512
#define TILE_LOAD(p) _mm512_loadu_ps((const float *)(p))
#define TILE_BCAST(g) _mm512_castsi512_ps(_mm512_set1_epi32(g))
#define TILE_OP(acc, b, q) _mm512_dpbf16_ps(acc, (__m512bh)(b), (__m512bh)(q))
#include "tile_avx512.inc"
#undef TILE
#undef SEG
#undef SEG_ROWS
#undef TILE_TGT
#undef TILE_INT
#undef TILE_OP
#undef TILE_VEC
#undef TILE_LOAD
#undef TILE_BCAST

/* Centroid-bag scores: 64 query tokens at a time held in registers while a bag's rows stream past. */
__attribute__((target(T512))) void bag_avx512(const float *sims, int64_t nq_tok, const void *codes, int code16,
                                              const int64_t *start, const int64_t *len, int64_t i0, int64_t i1,
                                              float *out, float *best) {
    (void)best;
    for (int64_t i = i0; i < i1; i++) {
        if (len[i] == 0) {
            out[i] = -INFINITY;
            continue;
        }
        __m512 sum = _mm512_setzero_ps();
        for (int64_t t0 = 0; t0 < nq_tok; t0 += 64) {
            const int64_t left = nq_tok - t0;
            const __mmask16 k0 = mask16((int)(left > 64 ? 64 : left)), k1 = mask16((int)(left - 16 > 0 ? left - 16 : 0)),
                            k2 = mask16((int)(left - 32 > 0 ? left - 32 : 0)), k3 = mask16((int)(left - 48 > 0 ? left - 48 : 0));
            __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
            for (int64_t j = start[i]; j < start[i] + len[i]; j++) {
                const int64_t c = code16 ? ((const int16_t *)codes)[j] : ((const int32_t *)codes)[j];
                const float *row = sims + c * nq_tok + t0;
                m0 = _mm512_max_ps(m0, _mm512_maskz_loadu_ps(k0, row));
                m1 = _mm512_max_ps(m1, _mm512_maskz_loadu_ps(k1, row + 16));
                m2 = _mm512_max_ps(m2, _mm512_maskz_loadu_ps(k2, row + 32));
                m3 = _mm512_max_ps(m3, _mm512_maskz_loadu_ps(k3, row + 48));
            }
            /* lanes past nq_tok hold max(-inf, 0) = 0 and add nothing */
            sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(m0, m1), _mm512_add_ps(m2, m3)));
        }
        out[i] = _mm512_reduce_add_ps(sum);
    }
}

#else /* no SIMD paths in this build: never called (path_built says so) */
void seg_avx512(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
void seg_avx512vnni(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
void seg_avx512bf16(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
void bag_avx512(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                const int64_t *len, int64_t i0, int64_t i1, float *out, float *best) {
    bag_portable(sims, nq_tok, codes, code16, start, len, i0, i1, out, best);
}
#endif
