/* Shared definitions of the fused MaxSim CPU kernels: the job a call describes, the storage kinds, the
 * instruction paths and the per-path entry points (maxsim_cpu.c drives them; kern_*.c implement them).
 *
 * A path's code is compiled with per-function target attributes (never with global -m flags), so the
 * extension builds with a plain compiler on any x86-64 and each path runs only where cpuid allows it.
 */
#ifndef MAXSIM_CPU_H
#define MAXSIM_CPU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MAXSIM_X86 1
#endif

/* The SIMD paths use intrinsics under per-function target attributes, AVX-VNNI and AMX included: gcc >= 11
 * or clang >= 12. Older compilers and other CPUs build the portable path only. */
#if defined(MAXSIM_X86) && ((defined(__clang__) && __clang_major__ >= 12) || \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define MAXSIM_SIMD 1
#endif

enum { K_F32 = 0, K_BF16 = 1, K_I8 = 2, K_F16 = 3, K_FP8 = 4, K_RES = 5 }; /* FP8: float8 e4m3fn */
/* K_RES: residual codes (maxsim/residuals.py): a row is a centroid id plus packed bytes, each byte standing
 * for `per` consecutive components through a 256-entry table; the row is centroid + table values. */
enum { S_NONE = 0, S_TOKEN = 1, S_SEGMENT = 2 };

/* Instruction paths, lowest first. As a level (what a CPU supports, or MAXSIM_CPU_ISA asks for) each one
 * includes the ones below it except that AVX-VNNI (the VEX form) is only a level of AVX2-class CPUs; as a
 * kernel it is what scores one storage kind (see kernel_for in maxsim_cpu.c). */
enum {
    P_PORTABLE = 0,    /* plain C */
    P_AVX2 = 1,        /* AVX2 + FMA + F16C, float32 products */
    P_AVXVNNI = 2,     /* AVX2 + AVX-VNNI (vpdpbusd ymm) for int8 */
    P_AVX512 = 3,      /* AVX-512 F/BW/VL/DQ, float32 products */
    P_AVX512VNNI = 4,  /* + AVX512_VNNI (vpdpbusd zmm) for int8 */
    P_AVX512BF16 = 5,  /* + AVX512_BF16 (vdpbf16ps) for bf16 and fp8 */
    P_AMX = 6,         /* + AMX tiles (TDPBSSD / TDPBF16PS) */
    N_PATHS = 7
};

#define QC 32     /* stacked query tokens per chunk on the AVX-512, AMX and portable paths */
#define QC_AVX2 16 /* ... on the AVX2 paths */
#define MAX_ROWS 16 /* largest row block any path widens at once */

typedef struct job_s job_t;
typedef struct work_s work_t;

/* Column maxima of segment rows r0..r1 against every query chunk: colmax[c] for query token c (padding
 * tokens included), each row's product times its per-token scale (S_TOKEN) before the max. */
typedef void (*seg_fn)(const job_t *jb, int64_t r0, int64_t r1, work_t *w);

struct job_s {
    int kind, qkind, dim, path, scale_mode; /* storage kind of d, kind of the query buffer, kernel */
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
    /* Query packing, set once per call: chunks of `lanes` tokens; per chunk nks k-steps of `lanes` 32-bit
     * groups (group = `group` consecutive dims: 1 float, 2 bf16 or 4 int8), then for the VNNI kernels
     * `lanes` int32 offsets (see kern_avx512.c); AMX has its own tile layout. */
    void *qpack;
    int64_t n_chunks, chunk_bytes;
    int lanes, group, nks, kpad;
    int panel; /* chunks scored together against one row block (their packed size fits in L2) */
    seg_fn seg;
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
};

/* Per-thread scratch, 64-byte aligned. */
struct work_s {
    float *colmax;   /* [n_chunks * lanes] */
    int32_t *icolmax; /* [n_chunks * lanes], integer maxima of the VNNI / AMX int8 kernels */
    char *rows;      /* MAX_ROWS widened rows */
    int64_t row_stride; /* bytes per row in `rows` */
    void *cbuf;      /* AMX tile store */
    char *scratch;   /* AMX block copies */
};

/* Entry points of the paths (each defined only where MAXSIM_SIMD allows, except the portable one). */
void seg_portable(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_avx2(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_avxvnni(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_avx512(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_avx512vnni(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_avx512bf16(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void seg_amx(const job_t *jb, int64_t r0, int64_t r1, work_t *w);
void pack_amx(job_t *jb);
void amx_thread_begin(void);
void amx_thread_end(void);

/* Centroid-bag scores (see maxsim_cpu.c): out[i] for bags i0..i1. */
typedef void (*bag_fn)(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                       const int64_t *len, int64_t i0, int64_t i1, float *out, float *best);
void bag_portable(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                  const int64_t *len, int64_t i0, int64_t i1, float *out, float *best);
void bag_avx2(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
              const int64_t *len, int64_t i0, int64_t i1, float *out, float *best);
void bag_avx512(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                const int64_t *len, int64_t i0, int64_t i1, float *out, float *best);

/* The driver (driver.c): which kernel scores storage `kind` on instruction path `level`; score a job whose
 * pointers, sizes, k and kernel (path) are set (0, or 1 when out of memory); centroid-bag scores. */
int kernel_for(int level, int kind);
int maxsim_execute(job_t *jb, int nthreads);
int maxsim_bags(int level, const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                const int64_t *len, int64_t n, float *out, int nthreads);

/* CPU features (features.c). */
enum {
    F_AVX2 = 1 << 0, F_FMA = 1 << 1, F_F16C = 1 << 2, F_AVXVNNI = 1 << 3, F_AVX512F = 1 << 4,
    F_AVX512BW = 1 << 5, F_AVX512VL = 1 << 6, F_AVX512DQ = 1 << 7, F_AVX512VNNI = 1 << 8,
    F_AVX512BF16 = 1 << 9, F_AMX_TILE = 1 << 10, F_AMX_INT8 = 1 << 11, F_AMX_BF16 = 1 << 12,
    F_OS_YMM = 1 << 13, F_OS_ZMM = 1 << 14, F_OS_AMX = 1 << 15
};
unsigned cpu_features(void);
/* Features each path needs (kernel or level), and whether this build compiled it. */
unsigned path_needs(int path);
int path_built(int path);
int path_ok(int path);
unsigned path_missing(int path); /* features it needs and this CPU (or its OS) lacks */
extern const char *const path_names[N_PATHS];
extern const char *const feature_names[16];

/* ----------------------------------------------------------------------------------------------------- */
/* Scalar conversions (every path's tails, and the portable path)                                          */
/* ----------------------------------------------------------------------------------------------------- */

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

/* bf16 bits of an e4m3 value: exact, since every e4m3 value is a bf16 value. */
static inline uint16_t fp8_to_bf16(uint8_t b) {
    float f = fp8_to_f32(b);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static inline float load_as_float(int kind, const void *p, int64_t i) {
    if (kind == K_F32) return ((const float *)p)[i];
    if (kind == K_BF16) return bf16_to_f32(((const uint16_t *)p)[i]);
    if (kind == K_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    if (kind == K_FP8) return fp8_to_f32(((const uint8_t *)p)[i]);
    return (float)((const int8_t *)p)[i];
}

/* A residual-coded row widened to float: its centroid plus the table values of its bytes. Inlined into
 * each path's row preparation, so the compiler vectorises it for that path's instruction set. */
static inline __attribute__((always_inline)) void decode_res_row(const job_t *jb, int64_t row, float *dst) {
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

/* First row and row count of segment seg. */
static inline int64_t seg_row0(const job_t *jb, int64_t seg) { return jb->d_start ? jb->d_start[seg] : jb->d_off[seg]; }

#endif
