/* AVX-512 helpers shared by kern_avx512.c and kern_amx.c (included only where MAXSIM_SIMD is set). */
#ifndef MAXSIM_SIMD_AVX512_H
#define MAXSIM_SIMD_AVX512_H

#include <immintrin.h>

#include "maxsim_cpu.h"

static inline __mmask16 mask16(int left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }
static inline __mmask32 mask32(int left) { return left >= 32 ? (__mmask32)~0u : (__mmask32)((1u << left) - 1); }
static inline __mmask64 mask64(int left) { return left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1); }

/* 32 float8 e4m3fn values (masked: lanes past `left` read as 0) -> 32 bf16, exact: sign | (exp + 120) << 7 |
 * mantissa << 4 for normals, a table for the 7 subnormals, NaN for the one NaN code. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512i fp8x32_to_bf16(const uint8_t *src, int left) {
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask32(left), src));
    const __m512i em = _mm512_and_si512(w, _mm512_set1_epi16(0x7f));
    const __m512i sign = _mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0x80)), 8);
    __m512i v = _mm512_add_epi16(_mm512_slli_epi16(em, 4), _mm512_set1_epi16(120 << 7));
    const __m512i sub = _mm512_permutexvar_epi16(
        em, _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3C60, 0x3C40,
                             0x3C20, 0x3C00, 0x3BC0, 0x3B80, 0x3B00, 0));
    v = _mm512_mask_blend_epi16(_mm512_cmplt_epu16_mask(em, _mm512_set1_epi16(8)), v, sub);
    v = _mm512_mask_blend_epi16(_mm512_cmpeq_epi16_mask(em, _mm512_set1_epi16(0x7f)), v,
                                _mm512_set1_epi16(0x7fc0));
    return _mm512_or_si512(v, sign);
}

#endif
