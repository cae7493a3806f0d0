/* Fused MaxSim on the CPU: blocked query x segment products with the max over segment tokens folded into
 * the block, so the (query tokens x segment tokens) similarity matrix is never written out.
 *
 * Paths, picked at run time from cpuid (the compiled code for every path is built with target attributes,
 * so the extension compiles with a plain compiler on any x86-64 and runs on any x86-64 CPU):
 *   - AMX int8 (TDPBSSD) for int8 segments and AMX bf16 (TDPBF16PS) for bf16 segments (Sapphire Rapids+);
 *   - a generic blocked float kernel for everything else, cloned for AVX-512 / AVX2 / baseline x86-64
 *     (gcc target_clones picks the best clone at load time). Non-x86 builds compile only this path.
 * Threads: plain pthreads over contiguous, token-balanced segment ranges (no OpenMP runtime, so it never
 * fights torch's own thread pool). The GIL is released while scoring.
 *
 * Inputs are raw pointers (from torch.Tensor.data_ptr()) checked by the Python wrapper kernels/cpu.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define MAXSIM_X86 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* AMX intrinsics with per-function target attributes need gcc >= 11 or clang >= 12. */
#if defined(MAXSIM_X86) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define MAXSIM_AMX 1
#endif

#if defined(MAXSIM_X86) && defined(__linux__) && !defined(__clang__)
#define MAXSIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MAXSIM_CLONES
#endif

enum { K_F32 = 0, K_BF16 = 1, K_I8 = 2, K_F16 = 3, K_FP8 = 4, K_RES = 5 }; /* FP8: float8 e4m3fn */
/* K_RES: residual codes (maxsim/residuals.py): a row is a centroid id plus packed bytes, each byte standing
 * for `per` consecutive components through a 256-entry table; the row is centroid + table values. */
enum { S_NONE = 0, S_TOKEN = 1, S_SEGMENT = 2 };
enum { ISA_GENERIC = 0, ISA_AMX = 1 };
#define QC 32 /* stacked query tokens per chunk (two 16-column AMX tiles) */
#define RB 32 /* segment rows per AMX block (two 16-row tiles) */
#define GR 4  /* segment rows per generic block */

typedef struct {
    int kind, qkind, dim, isa, scale_mode; /* storage kind of d, kind of the query buffer */
    const void *q;
    const float *qscale; /* per query token, or NULL */
    int64_t nq_tok, n_q;
    const int64_t *q_off;
    const void *d;
    const int64_t *d_off;
    int64_t n_d, d_rows;
    const float *dscale; /* per row (S_TOKEN) or per segment (S_SEGMENT) */
    float *out;          /* [n_q, n_d] when k == 0 */
    int64_t k;
    float *top_s; /* [nthreads, n_q, k] when k > 0 */
    int64_t *top_i;
    /* prepared once per call */
    void *qpack;
    int64_t n_chunks, chunk_bytes;
    int kpad;
    int use_avx512; /* generic path: the AVX-512 float kernel instead of the portable one */
    /* Dynamic schedule: threads claim consecutive batches of segments from a shared counter, so a thread
     * slowed down by other load on its core does not hold the others back. Each thread sees increasing
     * segment indices, which the top-k tie rule relies on. */
    int64_t next_batch, batch;
    /* Segment seg spans rows d_start[seg] .. + (d_off[seg+1] - d_off[seg]) when d_start is set (segments
     * picked out of a larger buffer without copying), rows d_off[seg] .. d_off[seg+1] otherwise. */
    const int64_t *d_start;
    /* K_RES only */
    const float *rc_centroids; /* [n_centroids, dim] */
    const void *rc_codes;      /* [d_rows] int16 (rc_code16) or int32 */
    int rc_code16, rc_per, rc_bytes;
    const float *rc_table; /* [256, rc_per] */
} job_t;

typedef struct {
    const job_t *jb;
    int64_t tid;
    int err;
} part_t;

static size_t elem_size(int kind) { return kind == K_F32 ? 4 : (kind == K_BF16 || kind == K_F16) ? 2 : 1; }

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal half: renormalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float fp8_to_f32(uint8_t b) {
    const int e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9);
    else
        v = ldexpf((float)(8 + m), e - 10);
    return (b & 0x80) ? -v : v;
}

static inline float load_as_float(int kind, const void *p, int64_t i) {
    if (kind == K_F32) return ((const float *)p)[i];
    if (kind == K_BF16) return bf16_to_f32(((const uint16_t *)p)[i]);
    if (kind == K_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    if (kind == K_FP8) return fp8_to_f32(((const uint8_t *)p)[i]);
    return (float)((const int8_t *)p)[i];
}

/* ----------------------------------------------------------------------------------------------------- */
/* CPU feature detection                                                                                   */
/* ----------------------------------------------------------------------------------------------------- */

static int g_amx_ok = -1; /* -1 unknown, 0 no, 1 int8+bf16 usable */

static int detect_amx(void) {
#ifdef MAXSIM_AMX
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int tile = (d >> 24) & 1, i8 = (d >> 25) & 1, bf16 = (d >> 22) & 1;
    int avx512 = ((b >> 16) & 1) && ((b >> 30) & 1); /* F + BW for the epilogue */
    if (!(tile && i8 && bf16 && avx512)) return 0;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1)) return 0; /* OSXSAVE */
#ifdef __linux__
    /* Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 0;
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

static int amx_ok(void) {
    if (g_amx_ok < 0) g_amx_ok = detect_amx();
    return g_amx_ok;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Query packing                                                                                           */
/* ----------------------------------------------------------------------------------------------------- */

/* Generic: per chunk a [dim][QC] float matrix (query token c of the chunk in column c, zero padded). */
static void pack_generic(job_t *jb) {
    const int d = jb->dim;
    float *p = (float *)jb->qpack;
    memset(p, 0, (size_t)jb->n_chunks * jb->chunk_bytes);
    for (int64_t t = 0; t < jb->nq_tok; t++) {
        float *blk = p + (t / QC) * (int64_t)d * QC;
        int c = (int)(t % QC);
        for (int k = 0; k < d; k++) blk[(int64_t)k * QC + c] = load_as_float(jb->qkind, jb->q, t * d + k);
    }
}

/* AMX: per chunk and k-step a pair of B tiles (16 rows x 64 bytes): row r holds, for each of 16 query
 * columns, the 4 int8 (or 2 bf16) consecutive dims that TDPBSSD (TDPBF16PS) pairs with one A row. */
static void pack_amx(job_t *jb) {
    const int d = jb->dim;
    const int per = jb->kind == K_I8 ? 4 : 2; /* elements per 4-byte group */
    const int kstep = jb->kind == K_I8 ? 64 : 32;
    memset(jb->qpack, 0, (size_t)jb->n_chunks * jb->chunk_bytes);
    for (int64_t t = 0; t < jb->nq_tok; t++) {
        char *chunk = (char *)jb->qpack + (t / QC) * jb->chunk_bytes;
        int c = (int)(t % QC), half = c / 16, col = c % 16;
        for (int k = 0; k < d; k++) {
            int s = k / kstep, r = (k % kstep) / per, e = k % per;
            char *tile = chunk + ((int64_t)s * 2 + half) * 1024;
            if (jb->kind == K_I8)
                ((int8_t *)tile)[r * 64 + col * 4 + e] = ((const int8_t *)jb->q)[t * d + k];
            else
                ((uint16_t *)tile)[r * 32 + col * 2 + e] = ((const uint16_t *)jb->q)[t * d + k];
        }
    }
}

/* A residual-coded row widened to float: its centroid plus the table values of its bytes. */
MAXSIM_CLONES
static void decode_res_row(const job_t *jb, int64_t row, float *dst) {
    const int d = jb->dim, per = jb->rc_per, nb = jb->rc_bytes;
    const int64_t code =
        jb->rc_code16 ? ((const int16_t *)jb->rc_codes)[row] : ((const int32_t *)jb->rc_codes)[row];
    const float *c = jb->rc_centroids + code * d;
    const uint8_t *b = (const uint8_t *)jb->d + row * nb;
    const int full = d / per; /* bytes whose `per` components all lie inside dim */
    if (per == 4) {           /* 2-bit codes: fixed-size inner loops the compiler turns into vector ops */
        for (int i = 0; i < full; i++) {
            const float *t = jb->rc_table + (int64_t)b[i] * 4;
            for (int j = 0; j < 4; j++) dst[i * 4 + j] = c[i * 4 + j] + t[j];
        }
    } else if (per == 8) {
        for (int i = 0; i < full; i++) {
            const float *t = jb->rc_table + (int64_t)b[i] * 8;
            for (int j = 0; j < 8; j++) dst[i * 8 + j] = c[i * 8 + j] + t[j];
        }
    } else {
        for (int i = 0; i < full; i++) {
            const float *t = jb->rc_table + (int64_t)b[i] * per;
            for (int j = 0; j < per; j++) dst[i * per + j] = c[i * per + j] + t[j];
        }
    }
    for (int k = full * per; k < d; k++) dst[k] = c[k] + jb->rc_table[(int64_t)b[k / per] * per + k % per];
}

/* ----------------------------------------------------------------------------------------------------- */
/* Generic kernel: column maxima of (segment rows r0..r1) x (one query chunk)                              */
/* ----------------------------------------------------------------------------------------------------- */

MAXSIM_CLONES
static void colmax_generic(const job_t *jb, const float *qt, int64_t r0, int64_t r1, float *colmax,
                           float *rows) {
    const int d = jb->dim;
    for (int c = 0; c < QC; c++) colmax[c] = -INFINITY;
    for (int64_t j = r0; j < r1; j += GR) {
        int nr = (int)((r1 - j) < GR ? (r1 - j) : GR);
        for (int r = 0; r < GR; r++) {
            float *row = rows + r * d;
            if (r < nr && jb->kind == K_RES) {
                decode_res_row(jb, j + r, row);
            } else if (r < nr) {
                float s = jb->scale_mode == S_TOKEN ? jb->dscale[j + r] : 1.0f;
                for (int k = 0; k < d; k++) row[k] = load_as_float(jb->kind, jb->d, (j + r) * d + k) * s;
            } else {
                for (int k = 0; k < d; k++) row[k] = 0.0f;
            }
        }
        float acc[GR][QC];
        for (int r = 0; r < GR; r++)
            for (int c = 0; c < QC; c++) acc[r][c] = 0.0f;
        for (int k = 0; k < d; k++) {
            const float *qk = qt + (int64_t)k * QC;
            for (int r = 0; r < GR; r++) {
                float v = rows[r * d + k];
                for (int c = 0; c < QC; c++) acc[r][c] += v * qk[c];
            }
        }
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < QC; c++) colmax[c] = acc[r][c] > colmax[c] ? acc[r][c] : colmax[c];
    }
}

/* ----------------------------------------------------------------------------------------------------- */
/* AVX-512 float kernel (any storage kind without AMX): 12 segment rows x 32 query columns per block, the   */
/* 24 accumulators held in registers; rows are widened to float32 (and scaled per token) into a buffer.    */
/* ----------------------------------------------------------------------------------------------------- */

#ifdef MAXSIM_AMX /* same compiler requirement as the AMX code */
#define MAXSIM_AVX512 1
#define AR 12

static int g_avx512_ok = -1;

static int avx512_ok(void) {
    if (g_avx512_ok < 0) {
        __builtin_cpu_init();
        g_avx512_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c");
    }
    return g_avx512_ok;
}

/* 32 float8 e4m3fn values -> 32 bf16 (exact): sign | (exp + 120) << 7 | mantissa << 4 for normals, a
 * table for the 7 subnormals, NaN for the one NaN code. */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i fp8x32_to_bf16(const uint8_t *src) {
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)src));
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

__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) static void widen_row(const job_t *jb, int64_t row,
                                                                                     float *dst) {
    const int d = jb->dim;
    if (jb->kind == K_RES) {
        decode_res_row(jb, row, dst);
        return;
    }
    const float s = jb->scale_mode == S_TOKEN ? jb->dscale[row] : 1.0f;
    const __m512 vs = _mm512_set1_ps(s);
    int k = 0;
    if (jb->kind == K_F32) {
        const float *src = (const float *)jb->d + row * d;
        for (; k + 16 <= d; k += 16) _mm512_storeu_ps(dst + k, _mm512_mul_ps(_mm512_loadu_ps(src + k), vs));
    } else if (jb->kind == K_F16) {
        const uint16_t *src = (const uint16_t *)jb->d + row * d;
        for (; k + 16 <= d; k += 16)
            _mm512_storeu_ps(dst + k,
                             _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + k))), vs));
    } else if (jb->kind == K_BF16) {
        const uint16_t *src = (const uint16_t *)jb->d + row * d;
        for (; k + 16 <= d; k += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + k)));
            _mm512_storeu_ps(dst + k, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), vs));
        }
    } else if (jb->kind == K_FP8) {
        const uint8_t *src = (const uint8_t *)jb->d + row * d;
        for (; k + 32 <= d; k += 32) {
            const __m512i b = fp8x32_to_bf16(src + k);
            const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(b));
            const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1));
            _mm512_storeu_ps(dst + k, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)), vs));
            _mm512_storeu_ps(dst + k + 16, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)), vs));
        }
    } else {
        const int8_t *src = (const int8_t *)jb->d + row * d;
        for (; k + 16 <= d; k += 16)
            _mm512_storeu_ps(
                dst + k,
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + k)))),
                              vs));
    }
    for (; k < d; k++) dst[k] = load_as_float(jb->kind, jb->d, row * d + k) * s;
}

__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) static void colmax_avx512(
    const job_t *jb, const float *qt, int64_t r0, int64_t r1, float *colmax, float *rows) {
    const int d = jb->dim;
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    for (int64_t j = r0; j < r1; j += AR) {
        const int nr = (int)((r1 - j) < AR ? (r1 - j) : AR);
        for (int r = 0; r < AR; r++) {
            if (r < nr)
                widen_row(jb, j + r, rows + (int64_t)r * d);
            else
                memset(rows + (int64_t)r * d, 0, sizeof(float) * d);
        }
        __m512 a[AR][2];
        for (int r = 0; r < AR; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
        for (int k = 0; k < d; k++) {
            const __m512 q0 = _mm512_loadu_ps(qt + (int64_t)k * QC), q1 = _mm512_loadu_ps(qt + (int64_t)k * QC + 16);
#pragma GCC unroll 12
            for (int r = 0; r < AR; r++) {
                const __m512 v = _mm512_set1_ps(rows[(int64_t)r * d + k]);
                a[r][0] = _mm512_fmadd_ps(v, q0, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(v, q1, a[r][1]);
            }
        }
        for (int r = 0; r < nr; r++) {
            m0 = _mm512_max_ps(m0, a[r][0]);
            m1 = _mm512_max_ps(m1, a[r][1]);
        }
    }
    _mm512_storeu_ps(colmax, m0);
    _mm512_storeu_ps(colmax + 16, m1);
}
#endif

/* ----------------------------------------------------------------------------------------------------- */
/* AMX kernels                                                                                             */
/* ----------------------------------------------------------------------------------------------------- */

#ifdef MAXSIM_AMX
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

__attribute__((target("amx-tile"))) static void amx_config(void) {
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* The config is read only through the pointer: keep gcc from dropping the stores above. */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void amx_release(void) { _tile_release(); }

/* Base pointer of the RB-row block starting at row j; rows past the end of the buffer (and the k padding
 * read past the last row) come from a zeroed scratch copy instead of out-of-bounds memory. */
static const char *amx_block_base(const job_t *jb, int64_t j, char *scratch) {
    const int64_t es = (int64_t)elem_size(jb->kind), rowb = jb->dim * es;
    /* Prefetch the next block (a hint: never faults, harmless past the end). */
    const char *next = (const char *)jb->d + (j + RB) * rowb;
    for (int64_t b = 0; b < RB * rowb; b += 64) _mm_prefetch(next + b, _MM_HINT_T0);
    const int64_t need = (j + RB) * rowb + (jb->kpad - jb->dim) * es;
    if (need <= jb->d_rows * rowb) return (const char *)jb->d + j * rowb;
    int64_t avail = jb->d_rows - j;
    memset(scratch, 0, RB * rowb + 128);
    memcpy(scratch, (const char *)jb->d + j * rowb, avail * rowb);
    return scratch;
}

/* float8 segments on the AMX bf16 path: the RB-row block widened to bf16 in scratch (row stride kpad, zero
 * padded in k and past the buffer end). */
__attribute__((target("avx512f,avx512bw"))) static const char *amx_fp8_block(const job_t *jb, int64_t j,
                                                                              char *scratch) {
    const int d = jb->dim, kp = jb->kpad;
    const uint8_t *src = (const uint8_t *)jb->d;
    uint16_t *out = (uint16_t *)scratch;
    const char *next = (const char *)jb->d + (j + RB) * d;
    for (int64_t b = 0; b < RB * d; b += 64) _mm_prefetch(next + b, _MM_HINT_T0);
    memset(scratch, 0, (size_t)RB * kp * 2);
    const int64_t nr = jb->d_rows - j < RB ? jb->d_rows - j : RB;
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = src + (j + r) * d;
        uint16_t *o = out + r * kp;
        int k = 0;
        for (; k + 32 <= d; k += 32) _mm512_storeu_si512(o + k, fp8x32_to_bf16(row + k));
        for (; k < d; k++) {
            float f = fp8_to_f32(row[k]);
            uint32_t u;
            memcpy(&u, &f, 4);
            o[k] = (uint16_t)(u >> 16); /* exact: e4m3 values are bf16 values */
        }
    }
    return scratch;
}

__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) static void colmax_amx_i8(
    const job_t *jb, const char *qp, int64_t r0, int64_t r1, float *colmax, int32_t *cbuf, char *scratch) {
    const int64_t stride = jb->dim;
    const int ks = jb->kpad / 64;
    const int tok = jb->scale_mode == S_TOKEN;
    __m512 f0 = _mm512_set1_ps(-INFINITY), f1 = f0;
    __m512i i0 = _mm512_set1_epi32(INT32_MIN), i1 = i0;
    for (int64_t j = r0; j < r1; j += RB) {
        const int nr = (int)((r1 - j) < RB ? (r1 - j) : RB);
        const char *base = amx_block_base(jb, j, scratch);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int s = 0; s < ks; s++) {
            _tile_loadd(4, base + s * 64, stride);
            _tile_loadd(5, base + 16 * stride + s * 64, stride);
            _tile_loadd(6, qp + (int64_t)s * 2048, 64);
            _tile_loadd(7, qp + (int64_t)s * 2048 + 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
        _tile_stored(0, cbuf, 128);
        _tile_stored(1, cbuf + 16, 128);
        _tile_stored(2, cbuf + 16 * 32, 128);
        _tile_stored(3, cbuf + 16 * 32 + 16, 128);
        if (tok) {
            const float *sc = jb->dscale + j;
            for (int r = 0; r < nr; r++) {
                __m512 s = _mm512_set1_ps(sc[r]);
                f0 = _mm512_max_ps(f0, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + r * 32)), s));
                f1 = _mm512_max_ps(f1, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + r * 32 + 16)), s));
            }
        } else {
            for (int r = 0; r < nr; r++) {
                i0 = _mm512_max_epi32(i0, _mm512_load_si512(cbuf + r * 32));
                i1 = _mm512_max_epi32(i1, _mm512_load_si512(cbuf + r * 32 + 16));
            }
        }
    }
    if (!tok) {
        f0 = _mm512_cvtepi32_ps(i0);
        f1 = _mm512_cvtepi32_ps(i1);
    }
    _mm512_storeu_ps(colmax, f0);
    _mm512_storeu_ps(colmax + 16, f1);
}

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw"))) static void colmax_amx_bf16(
    const job_t *jb, const char *qp, int64_t r0, int64_t r1, float *colmax, float *cbuf, char *scratch) {
    const int fp8 = jb->kind == K_FP8;
    const int64_t stride = fp8 ? jb->kpad * 2 : jb->dim * 2;
    const int ks = jb->kpad / 32;
    const int tok = jb->scale_mode == S_TOKEN;
    __m512 f0 = _mm512_set1_ps(-INFINITY), f1 = f0;
    for (int64_t j = r0; j < r1; j += RB) {
        const int nr = (int)((r1 - j) < RB ? (r1 - j) : RB);
        const char *base = fp8 ? amx_fp8_block(jb, j, scratch) : amx_block_base(jb, j, scratch);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int s = 0; s < ks; s++) {
            _tile_loadd(4, base + s * 64, stride);
            _tile_loadd(5, base + 16 * stride + s * 64, stride);
            _tile_loadd(6, qp + (int64_t)s * 2048, 64);
            _tile_loadd(7, qp + (int64_t)s * 2048 + 1024, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, cbuf, 128);
        _tile_stored(1, cbuf + 16, 128);
        _tile_stored(2, cbuf + 16 * 32, 128);
        _tile_stored(3, cbuf + 16 * 32 + 16, 128);
        for (int r = 0; r < nr; r++) {
            __m512 a = _mm512_load_ps(cbuf + r * 32), b = _mm512_load_ps(cbuf + r * 32 + 16);
            if (tok) {
                __m512 s = _mm512_set1_ps(jb->dscale[j + r]);
                a = _mm512_mul_ps(a, s);
                b = _mm512_mul_ps(b, s);
            }
            f0 = _mm512_max_ps(f0, a);
            f1 = _mm512_max_ps(f1, b);
        }
    }
    _mm512_storeu_ps(colmax, f0);
    _mm512_storeu_ps(colmax + 16, f1);
}
#endif

/* ----------------------------------------------------------------------------------------------------- */
/* Driver: one thread's segment range                                                                      */
/* ----------------------------------------------------------------------------------------------------- */

static void topk_insert(float *ts, int64_t *ti, int64_t k, int64_t *count, float s, int64_t idx) {
    /* Lists are sorted best first; segments arrive in increasing index, so a strict comparison keeps the
     * lower index first among equal scores. */
    int64_t n = *count;
    if (n == k && !(s > ts[k - 1])) return;
    int64_t pos = n < k ? n : k - 1;
    while (pos > 0 && s > ts[pos - 1]) {
        ts[pos] = ts[pos - 1];
        ti[pos] = ti[pos - 1];
        pos--;
    }
    ts[pos] = s;
    ti[pos] = idx;
    if (n < k) *count = n + 1;
}

static void *run_part(void *arg) {
    part_t *pt = (part_t *)arg;
    const job_t *jb = pt->jb;
    const int d = jb->dim;
    float *tokmax = malloc(sizeof(float) * (jb->nq_tok > 0 ? jb->nq_tok : 1));
    float *rows = malloc(sizeof(float) * 16 * d); /* GR or AR rows widened to float */
    void *cbuf = aligned_alloc(64, RB * QC * 4);
    char *scratch = aligned_alloc(64, (size_t)((RB * (int64_t)jb->kpad * 4 + 128 + 63) / 64 * 64));
    int64_t *counts = calloc(jb->n_q > 0 ? jb->n_q : 1, sizeof(int64_t));
    float colmax[QC];
    if (!tokmax || !rows || !cbuf || !scratch || !counts) {
        pt->err = 1;
        goto done;
    }
    float *ts = jb->k ? jb->top_s + pt->tid * jb->n_q * jb->k : NULL;
    int64_t *ti = jb->k ? jb->top_i + pt->tid * jb->n_q * jb->k : NULL;
#ifdef MAXSIM_AMX
    if (jb->isa == ISA_AMX) amx_config();
#endif
    job_t *jbm = (job_t *)jb;
    for (;;) {
        const int64_t b0 = __atomic_fetch_add(&jbm->next_batch, 1, __ATOMIC_RELAXED) * jb->batch;
        if (b0 >= jb->n_d) break;
        const int64_t b1 = b0 + jb->batch < jb->n_d ? b0 + jb->batch : jb->n_d;
        for (int64_t seg = b0; seg < b1; seg++) {
            const int64_t r0 = jb->d_start ? jb->d_start[seg] : jb->d_off[seg];
            const int64_t r1 = r0 + (jb->d_off[seg + 1] - jb->d_off[seg]);
            if (r1 == r0) {
                for (int64_t t = 0; t < jb->nq_tok; t++) tokmax[t] = -INFINITY;
            } else {
                const float segscale = jb->scale_mode == S_SEGMENT ? jb->dscale[seg] : 1.0f;
                for (int64_t ch = 0; ch < jb->n_chunks; ch++) {
                    const char *qp = (const char *)jb->qpack + ch * jb->chunk_bytes;
    #ifdef MAXSIM_AMX
                    if (jb->isa == ISA_AMX && jb->kind == K_I8)
                        colmax_amx_i8(jb, qp, r0, r1, colmax, (int32_t *)cbuf, scratch);
                    else if (jb->isa == ISA_AMX)
                        colmax_amx_bf16(jb, qp, r0, r1, colmax, (float *)cbuf, scratch);
                    else if (jb->use_avx512)
                        colmax_avx512(jb, (const float *)qp, r0, r1, colmax, rows);
                    else
    #endif
                        colmax_generic(jb, (const float *)qp, r0, r1, colmax, rows);
                    const int64_t t0 = ch * QC;
                    const int nc = (int)((jb->nq_tok - t0) < QC ? (jb->nq_tok - t0) : QC);
                    for (int c = 0; c < nc; c++)
                        tokmax[t0 + c] = colmax[c] * segscale * (jb->qscale ? jb->qscale[t0 + c] : 1.0f);
                }
            }
            for (int64_t qi = 0; qi < jb->n_q; qi++) {
                float s = 0.0f;
                for (int64_t t = jb->q_off[qi]; t < jb->q_off[qi + 1]; t++) s += tokmax[t];
                if (jb->k)
                    topk_insert(ts + qi * jb->k, ti + qi * jb->k, jb->k, counts + qi, s, seg);
                else
                    jb->out[qi * jb->n_d + seg] = s;
            }
        }
    }
#ifdef MAXSIM_AMX
    if (jb->isa == ISA_AMX) amx_release();
#endif
done:
    free(tokmax);
    free(rows);
    free(cbuf);
    free(scratch);
    free(counts);
    return NULL;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Python entry points                                                                                     */
/* ----------------------------------------------------------------------------------------------------- */

static PyObject *execute(job_t *jbp, int nthreads);

static PyObject *py_run(PyObject *self, PyObject *args) {
    (void)self;
    job_t jb;
    memset(&jb, 0, sizeof jb);
    long long q, qscale, q_off, d, d_off, dscale, out, top_s, top_i, nq_tok, n_q, n_d, d_rows, k;
    int nthreads, isa;
    if (!PyArg_ParseTuple(args, "iiiLLLLLLLLLLiLLLLii", &jb.kind, &jb.qkind, &jb.dim, &q, &qscale, &nq_tok, &q_off, &n_q, &d,
                          &d_off, &n_d, &d_rows, &dscale, &jb.scale_mode, &out, &k, &top_s, &top_i, &nthreads,
                          &isa))
        return NULL;
    if (jb.kind < K_F32 || jb.kind > K_FP8 || jb.qkind < K_F32 || jb.qkind > K_I8 || jb.dim <= 0 || nthreads < 1 ||
        k < 0) {
        PyErr_SetString(PyExc_ValueError, "maxsim cpu kernel: bad kind, dim, k or thread count");
        return NULL;
    }
    const int amx_kind = (jb.kind == K_I8 && jb.qkind == K_I8) || ((jb.kind == K_BF16 || jb.kind == K_FP8) && jb.qkind == K_BF16);
    if (isa == ISA_AMX && (!amx_kind || !amx_ok())) {
        PyErr_SetString(PyExc_RuntimeError, "maxsim cpu kernel: AMX path requested but not usable here");
        return NULL;
    }
    jb.isa = isa;
#ifdef MAXSIM_AVX512
    jb.use_avx512 = isa != ISA_AMX && !getenv("MAXSIM_CPU_NO_AVX512") && avx512_ok();
#endif
    jb.q = (const void *)(uintptr_t)q;
    jb.qscale = (const float *)(uintptr_t)qscale;
    jb.nq_tok = nq_tok;
    jb.q_off = (const int64_t *)(uintptr_t)q_off;
    jb.n_q = n_q;
    jb.d = (const void *)(uintptr_t)d;
    jb.d_off = (const int64_t *)(uintptr_t)d_off;
    jb.n_d = n_d;
    jb.d_rows = d_rows;
    jb.dscale = (const float *)(uintptr_t)dscale;
    jb.out = (float *)(uintptr_t)out;
    jb.k = k;
    jb.top_s = (float *)(uintptr_t)top_s;
    jb.top_i = (int64_t *)(uintptr_t)top_i;
    return execute(&jb, nthreads);
}

/* Run fn on each of the n argument blocks (args + t * stride), n - 1 of them on new threads; a thread that
 * cannot start runs its share on the calling one. */
static void run_threads(void *(*fn)(void *), void *args, size_t stride, int n) {
    pthread_t *th = n > 1 ? calloc((size_t)n, sizeof(pthread_t)) : NULL;
    char *joinable = n > 1 ? calloc((size_t)n, 1) : NULL;
    for (int t = 1; t < n; t++) {
        if (th && joinable && pthread_create(&th[t], NULL, fn, (char *)args + t * stride) == 0)
            joinable[t] = 1;
        else
            fn((char *)args + t * stride);
    }
    fn(args);
    for (int t = 1; t < n; t++)
        if (joinable && joinable[t]) pthread_join(th[t], NULL);
    free(th);
    free(joinable);
}

/* Pack the queries, run the threads, collect errors. The job's pointers, sizes, k and isa are set. */
static PyObject *execute(job_t *jbp, int nthreads) {
    job_t jb = *jbp;
    const int64_t nq_tok = jb.nq_tok, n_q = jb.n_q, n_d = jb.n_d, k = jb.k;
    const int isa = jb.isa;
    jb.n_chunks = (nq_tok + QC - 1) / QC;
    if (isa == ISA_AMX) {
        const int kstep = jb.kind == K_I8 ? 64 : 32;
        jb.kpad = (jb.dim + kstep - 1) / kstep * kstep;
        jb.chunk_bytes = (int64_t)(jb.kpad / kstep) * 2048;
    } else {
        jb.kpad = jb.dim;
        jb.chunk_bytes = (int64_t)jb.dim * QC * 4;
    }
    if (k > 0) {
        for (int64_t i = 0; i < (int64_t)nthreads * n_q * k; i++) {
            jb.top_s[i] = -INFINITY;
            jb.top_i[i] = -1;
        }
    }
    if (n_q == 0 || n_d == 0) Py_RETURN_NONE;
    jb.qpack = aligned_alloc(64, (size_t)((jb.n_chunks * jb.chunk_bytes + 63) / 64 * 64 + 64));
    part_t *parts = calloc((size_t)nthreads, sizeof(part_t));
    if (!jb.qpack || !parts) {
        free(jb.qpack);
        free(parts);
        return PyErr_NoMemory();
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS;
    if (isa == ISA_AMX)
        pack_amx(&jb);
    else
        pack_generic(&jb);
    /* Batches of ~1/(16 x threads) of the segments, at most 64 (and at least 1). */
    jb.next_batch = 0;
    jb.batch = n_d / (16 * (int64_t)nthreads);
    jb.batch = jb.batch < 1 ? 1 : jb.batch > 64 ? 64 : jb.batch;
    for (int t = 0; t < nthreads; t++) {
        parts[t].jb = &jb;
        parts[t].tid = t;
    }
    run_threads(run_part, parts, sizeof(part_t), nthreads);
    for (int t = 0; t < nthreads; t++) err |= parts[t].err;
    Py_END_ALLOW_THREADS;
    free(jb.qpack);
    free(parts);
    if (err) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_run_residual(PyObject *self, PyObject *args) {
    (void)self;
    job_t jb;
    memset(&jb, 0, sizeof jb);
    long long q, q_off, codes, res, cents, table, d_start, d_off, out, top_s, top_i, nq_tok, n_q, n_d, d_rows, k;
    int nthreads;
    if (!PyArg_ParseTuple(args, "iLLLLLiiLLiLLLLLLLLLi", &jb.dim, &q, &nq_tok, &q_off, &n_q, &codes, &jb.rc_code16,
                          &jb.rc_bytes, &res, &d_rows, &jb.rc_per, &cents, &table, &d_start, &d_off, &n_d, &out, &k,
                          &top_s, &top_i, &nthreads))
        return NULL;
    if (jb.dim <= 0 || nthreads < 1 || k < 0 || (jb.rc_per != 1 && jb.rc_per != 2 && jb.rc_per != 4 && jb.rc_per != 8) ||
        (int64_t)jb.rc_bytes * jb.rc_per < jb.dim) {
        PyErr_SetString(PyExc_ValueError, "maxsim residual kernel: bad dim, bytes per row, values per byte, k or "
                                          "thread count");
        return NULL;
    }
    jb.kind = K_RES;
    jb.qkind = K_F32;
    jb.isa = ISA_GENERIC;
#ifdef MAXSIM_AVX512
    jb.use_avx512 = !getenv("MAXSIM_CPU_NO_AVX512") && avx512_ok();
#endif
    jb.q = (const void *)(uintptr_t)q;
    jb.nq_tok = nq_tok;
    jb.q_off = (const int64_t *)(uintptr_t)q_off;
    jb.n_q = n_q;
    jb.d = (const void *)(uintptr_t)res;
    jb.rc_codes = (const void *)(uintptr_t)codes;
    jb.rc_centroids = (const float *)(uintptr_t)cents;
    jb.rc_table = (const float *)(uintptr_t)table;
    jb.d_start = (const int64_t *)(uintptr_t)d_start;
    jb.d_off = (const int64_t *)(uintptr_t)d_off;
    jb.n_d = n_d;
    jb.d_rows = d_rows;
    jb.out = (float *)(uintptr_t)out;
    jb.k = k;
    jb.top_s = (float *)(uintptr_t)top_s;
    jb.top_i = (int64_t *)(uintptr_t)top_i;
    return execute(&jb, nthreads);
}

/* Centroid-bag scores: out[i] = sum_t max_{c in bag i} sims[c, t] over the nq_tok query tokens, with
 * sims [n_centroids, nq_tok] (one contiguous row per centroid) and bag i = codes[start[i] .. +len[i]]. */
MAXSIM_CLONES
static void bag_scores_range(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                             const int64_t *len, int64_t i0, int64_t i1, float *out, float *best) {
    for (int64_t i = i0; i < i1; i++) {
        if (len[i] == 0) {
            out[i] = -INFINITY;
            continue;
        }
        for (int64_t t = 0; t < nq_tok; t++) best[t] = -INFINITY;
        for (int64_t j = start[i]; j < start[i] + len[i]; j++) {
            const int64_t c = code16 ? ((const int16_t *)codes)[j] : ((const int32_t *)codes)[j];
            const float *row = sims + c * nq_tok;
            for (int64_t t = 0; t < nq_tok; t++) best[t] = row[t] > best[t] ? row[t] : best[t];
        }
        float s = 0.0f;
        for (int64_t t = 0; t < nq_tok; t++) s += best[t];
        out[i] = s;
    }
}

typedef struct {
    const float *sims;
    int64_t nq_tok;
    const void *codes;
    int code16;
    const int64_t *start, *len;
    int64_t i0, i1;
    float *out;
    int err;
} bag_job_t;

static void *bag_thread(void *arg) {
    bag_job_t *j = (bag_job_t *)arg;
    float *best = malloc(sizeof(float) * (j->nq_tok > 0 ? j->nq_tok : 1));
    if (!best) {
        j->err = 1;
        return NULL;
    }
    bag_scores_range(j->sims, j->nq_tok, j->codes, j->code16, j->start, j->len, j->i0, j->i1, j->out, best);
    free(best);
    return NULL;
}

static PyObject *py_bag_scores(PyObject *self, PyObject *args) {
    (void)self;
    long long sims, nq_tok, codes, start, len, n, out;
    int code16, nthreads;
    if (!PyArg_ParseTuple(args, "LLLiLLLLi", &sims, &nq_tok, &codes, &code16, &start, &len, &n, &out, &nthreads))
        return NULL;
    if (nthreads < 1) nthreads = 1;
    bag_job_t *jobs = calloc((size_t)nthreads, sizeof(bag_job_t));
    if (!jobs) return PyErr_NoMemory();
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (bag_job_t){(const float *)(uintptr_t)sims, nq_tok, (const void *)(uintptr_t)codes, code16,
                              (const int64_t *)(uintptr_t)start, (const int64_t *)(uintptr_t)len,
                              n * t / nthreads, n * (t + 1) / nthreads, (float *)(uintptr_t)out, 0};
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS;
    run_threads(bag_thread, jobs, sizeof(bag_job_t), nthreads);
    for (int t = 0; t < nthreads; t++) err |= jobs[t].err;
    Py_END_ALLOW_THREADS;
    free(jobs);
    if (err) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#ifdef MAXSIM_AVX512
    PyObject *avx = avx512_ok() ? Py_True : Py_False;
#else
    PyObject *avx = Py_False;
#endif
    return Py_BuildValue("{s:O,s:O}", "amx", amx_ok() ? Py_True : Py_False, "avx512", avx);
}

static PyMethodDef methods[] = {
    {"run", py_run, METH_VARARGS,
     "run(kind, qkind, dim, q, qscale, nq_tok, q_off, n_q, d, d_off, n_d, d_rows, dscale, scale_mode, out, k, top_s, "
     "top_i, nthreads, isa): fused MaxSim over raw pointers (see kernels/cpu.py)."},
    {"run_residual", py_run_residual, METH_VARARGS,
     "run_residual(dim, q, nq_tok, q_off, n_q, codes, code16, bytes_per_row, residuals, n_rows, per_byte, centroids, "
     "table, d_start, d_off, n_d, out, k, top_s, top_i, nthreads): fused MaxSim over residual-coded rows "
     "(see kernels/cpu.py)."},
    {"bag_scores", py_bag_scores, METH_VARARGS,
     "bag_scores(sims, nq_tok, codes, code16, start, len, n, out, nthreads): sums over query tokens of the best centroid "
     "similarity in each bag (see kernels/cpu.py)."},
    {"isa", py_isa, METH_NOARGS, "isa() -> dict of the optional instruction paths usable on this CPU."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_maxsim_cpu",
                                    "Fused MaxSim CPU kernels (AMX int8/bf16, generic blocked float).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__maxsim_cpu(void) { return PyModule_Create(&module); }
