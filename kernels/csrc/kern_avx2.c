/* AVX2 paths, for x86-64 CPUs without AVX-512: 6 segment rows x 16 stacked query tokens per register tile
 * (tile_avx2.inc), in two flavours:
 *   - avx2     float32 FMA, every storage kind widened to float32 (fp32 rows read in place);
 *   - avxvnni  int8 with AVX-VNNI (the VEX vpdpbusd on ymm, Alder Lake and later), exact int32 sums.
 * The query side is packed by maxsim_cpu.c in chunks of 16 tokens (same layout as the AVX-512 paths).
 */
#include "maxsim_cpu.h"

#ifdef MAXSIM_SIMD
#include <immintrin.h>

#define T2 "avx2,fma,f16c"
#define T2_VNNI "avx2,fma,f16c,avxvnni"
#define RMAX 6

/* The next row block into L2 (see kern_avx512.c). */
__attribute__((target(T2))) static inline void prefetch(const char *p, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
}

static inline int64_t row_bytes(const job_t *jb) {
    if (jb->kind == K_RES) return jb->rc_bytes;
    return (int64_t)jb->dim * (jb->kind == K_F32 ? 4 : (jb->kind == K_BF16 || jb->kind == K_F16) ? 2 : 1);
}

/* 8 float8 e4m3fn values -> 8 float32, exact: (exp|mantissa) << 20 + 120 << 23 for normals, a table for
 * the subnormals (e == 0: m x 2^-9), NaN for the NaN code, then the sign. */
__attribute__((target(T2))) static inline __m256 fp8x8_to_f32(const uint8_t *src) {
    int64_t raw;
    memcpy(&raw, src, 8);
    const __m256i w = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(raw));
    const __m256i em = _mm256_and_si256(w, _mm256_set1_epi32(0x7f));
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x80)), 24);
    __m256i v = _mm256_add_epi32(_mm256_slli_epi32(em, 20), _mm256_set1_epi32(120 << 23));
    const __m256i sub = _mm256_permutevar8x32_epi32(
        _mm256_castps_si256(_mm256_setr_ps(0.0f, 1.0f / 512, 2.0f / 512, 3.0f / 512, 4.0f / 512, 5.0f / 512,
                                           6.0f / 512, 7.0f / 512)),
        em); /* vpermd reads the low 3 bits: the mantissa when exp == 0 */
    v = _mm256_blendv_epi8(v, sub, _mm256_cmpgt_epi32(_mm256_set1_epi32(8), em));
    v = _mm256_blendv_epi8(v, _mm256_set1_epi32(0x7fc00000), _mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7f)));
    return _mm256_castsi256_ps(_mm256_or_si256(v, sign));
}

/* One row widened to float32. */
__attribute__((target(T2))) static inline void widen_f32(const job_t *jb, int64_t row, float *dst) {
    const int d = jb->dim;
    int k = 0;
    if (jb->kind == K_RES) {
        decode_res_row(jb, row, dst);
        return;
    }
    if (jb->kind == K_F16) {
        const uint16_t *src = (const uint16_t *)jb->d + row * d;
        for (; k + 8 <= d; k += 8) _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + k))));
    } else if (jb->kind == K_BF16) {
        const uint16_t *src = (const uint16_t *)jb->d + row * d;
        for (; k + 8 <= d; k += 8)
            _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(
                                          _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + k))), 16)));
    } else if (jb->kind == K_I8) {
        const int8_t *src = (const int8_t *)jb->d + row * d;
        for (; k + 8 <= d; k += 8) {
            int64_t raw;
            memcpy(&raw, src + k, 8);
            _mm256_storeu_ps(dst + k, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(raw))));
        }
    } else if (jb->kind == K_FP8) {
        const uint8_t *src = (const uint8_t *)jb->d + row * d;
        for (; k + 8 <= d; k += 8) _mm256_storeu_ps(dst + k, fp8x8_to_f32(src + k));
    }
    for (; k < d; k++) dst[k] = load_as_float(jb->kind, jb->d, row * d + k);
}

__attribute__((target(T2))) static const char *rows_f32(const job_t *jb, int64_t j, int nr, work_t *w,
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

/* int8 rows with the sign bit flipped for vpdpbusd (see rows_i8 in kern_avx512.c), zero-padded to 4 dims. */
__attribute__((target(T2))) static const char *rows_i8(const job_t *jb, int64_t j, int nr, work_t *w,
                                                       int64_t *stride) {
    const int d = jb->dim;
    prefetch((const char *)jb->d + (j + nr) * d, RMAX * d);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int r = 0; r < nr; r++) {
        const uint8_t *src = (const uint8_t *)jb->d + (j + r) * d;
        uint8_t *dst = (uint8_t *)(w->rows + r * w->row_stride);
        int k = 0;
        for (; k + 32 <= d; k += 32)
            _mm256_storeu_si256((__m256i *)(dst + k),
                                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + k)), flip));
        for (; k < d; k++) dst[k] = src[k] ^ 0x80u;
        for (; k & 3; k++) dst[k] = 0x80u;
    }
    *stride = w->row_stride;
    return w->rows;
}

#ifdef MAXSIM_EMULATE_AVXVNNI
/* Test builds only (tests/csrc/kernel_selftest.c): vpdpbusd emulated exactly with AVX2 (bytes widened to
 * 16 bits, vpmaddwd), so the AVX-VNNI kernel's packing, offsets and tiles run on CPUs without AVX-VNNI. */
#undef T2_VNNI
#define T2_VNNI T2
__attribute__((target(T2), always_inline)) static inline __m256i dpbusd256(__m256i acc, __m256i b, __m256i q) {
    const __m256i lo = _mm256_set1_epi16(0xff);
    const __m256i b_even = _mm256_and_si256(b, lo), b_odd = _mm256_srli_epi16(b, 8);
    const __m256i q_even = _mm256_srai_epi16(_mm256_slli_epi16(q, 8), 8), q_odd = _mm256_srai_epi16(q, 8);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(b_even, q_even));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(b_odd, q_odd));
}
#else
/* acc += b (unsigned bytes) . q (signed bytes) in the VEX encoding (AVX-VNNI: no AVX-512 needed). In asm
 * because gcc (12) copies the intrinsic's accumulator to a fresh register and spills the tile. */
__attribute__((target(T2_VNNI), always_inline)) static inline __m256i dpbusd256(__m256i acc, __m256i b, __m256i q) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(b), "x"(q));
    return acc;
}
#endif

#define TILE tile_f32
#define SEG seg_avx2
#define SEG_ROWS rows_f32
#define TILE_TGT T2
#define TILE_INT 0
#define TILE_VEC __m256
#define TILE_LOAD(p) _mm256_loadu_ps((const float *)(p))
#define TILE_BCAST(g) _mm256_castsi256_ps(_mm256_set1_epi32(g))
#define TILE_OP(acc, b, q) _mm256_fmadd_ps(b, q, acc)
#include "tile_avx2.inc"
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
#define SEG seg_avxvnni
#define SEG_ROWS rows_i8
#define TILE_TGT T2_VNNI
#define TILE_INT 1
#define TILE_VEC __m256i
#define TILE_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define TILE_BCAST(g) _mm256_set1_epi32(g)
#define TILE_OP(acc, b, q) dpbusd256(acc, b, q)
#include "tile_avx2.inc"
#undef TILE
#undef SEG
#undef SEG_ROWS
#undef TILE_TGT
#undef TILE_INT
#undef TILE_OP
#undef TILE_VEC
#undef TILE_LOAD
#undef TILE_BCAST

/* Centroid-bag scores: 32 query tokens at a time in registers, a scalar tail. */
__attribute__((target(T2))) void bag_avx2(const float *sims, int64_t nq_tok, const void *codes, int code16,
                                          const int64_t *start, const int64_t *len, int64_t i0, int64_t i1,
                                          float *out, float *best) {
    const int64_t nv = nq_tok / 32 * 32;
    for (int64_t i = i0; i < i1; i++) {
        if (len[i] == 0) {
            out[i] = -INFINITY;
            continue;
        }
        __m256 sum = _mm256_setzero_ps();
        for (int64_t t0 = 0; t0 < nv; t0 += 32) {
            __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
            for (int64_t j = start[i]; j < start[i] + len[i]; j++) {
                const int64_t c = code16 ? ((const int16_t *)codes)[j] : ((const int32_t *)codes)[j];
                const float *row = sims + c * nq_tok + t0;
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(row));
                m1 = _mm256_max_ps(m1, _mm256_loadu_ps(row + 8));
                m2 = _mm256_max_ps(m2, _mm256_loadu_ps(row + 16));
                m3 = _mm256_max_ps(m3, _mm256_loadu_ps(row + 24));
            }
            sum = _mm256_add_ps(sum, _mm256_add_ps(_mm256_add_ps(m0, m1), _mm256_add_ps(m2, m3)));
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, sum);
        float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        if (nv < nq_tok) {
            for (int64_t t = nv; t < nq_tok; t++) best[t] = -INFINITY;
            for (int64_t j = start[i]; j < start[i] + len[i]; j++) {
                const int64_t c = code16 ? ((const int16_t *)codes)[j] : ((const int32_t *)codes)[j];
                const float *row = sims + c * nq_tok;
                for (int64_t t = nv; t < nq_tok; t++) best[t] = row[t] > best[t] ? row[t] : best[t];
            }
            for (int64_t t = nv; t < nq_tok; t++) s += best[t];
        }
        out[i] = s;
    }
}

#else /* no SIMD paths in this build: never called (path_built says so) */
void seg_avx2(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
void seg_avxvnni(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
void bag_avx2(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
              const int64_t *len, int64_t i0, int64_t i1, float *out, float *best) {
    bag_portable(sims, nq_tok, codes, code16, start, len, i0, i1, out, best);
}
#endif
