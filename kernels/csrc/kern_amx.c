/* AMX path (Sapphire Rapids and later): int8 segments on TDPBSSD, bf16 segments on TDPBF16PS (fp8 widened
 * to bf16 exactly, a block of rows at a time). Blocks of RB = 32 segment rows x 32 query tokens: two A tiles
 * of 16 rows, two B tiles of 16 query columns, four C tiles, stored to a buffer and folded into the column
 * maxima with AVX-512. The query is packed by pack_amx into B-tile order. */
#include "maxsim_cpu.h"

#ifdef MAXSIM_SIMD
#include "simd_avx512.h"

#define RB 32 /* segment rows per AMX block (two 16-row tiles) */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

__attribute__((target("amx-tile"))) void amx_thread_begin(void) {
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

__attribute__((target("amx-tile"))) void amx_thread_end(void) { _tile_release(); }

/* Per chunk and k-step a pair of B tiles (16 rows x 64 bytes): row r holds, for each of 16 query columns,
 * the 4 int8 (or 2 bf16) consecutive dims that TDPBSSD (TDPBF16PS) pairs with one A row. */
void pack_amx(job_t *jb) {
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

static size_t elem_size(int kind) { return kind == K_F32 ? 4 : (kind == K_BF16 || kind == K_F16) ? 2 : 1; }

/* Base pointer of the RB-row block starting at row j; rows past the end of the buffer (and the k padding
 * read past the last row) come from a zeroed scratch copy instead of out-of-bounds memory. */
static const char *amx_block_base(const job_t *jb, int64_t j, char *scratch) {
    const int64_t es = (int64_t)elem_size(jb->kind), rowb = jb->dim * es;
    /* Prefetch the next block (a hint: never faults, harmless past the end). */
    const char *next = (const char *)jb->d + (j + RB) * rowb;
    for (int64_t b = 0; b < RB * rowb; b += 64) __builtin_prefetch(next + b, 0, 3);
    const int64_t need = (j + RB) * rowb + (jb->kpad - jb->dim) * es;
    if (need <= jb->d_rows * rowb) return (const char *)jb->d + j * rowb;
    int64_t avail = jb->d_rows - j;
    memset(scratch, 0, RB * rowb + 128);
    memcpy(scratch, (const char *)jb->d + j * rowb, avail * rowb);
    return scratch;
}

/* float8 segments on the AMX bf16 path: the RB-row block widened to bf16 in scratch (row stride kpad, zero
 * padded in k and past the buffer end). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static const char *amx_fp8_block(const job_t *jb, int64_t j,
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
        for (int k = 0; k < d; k += 32) _mm512_storeu_si512(o + k, fp8x32_to_bf16(row + k, d - k));
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

void seg_amx(const job_t *jb, int64_t r0, int64_t r1, work_t *w) {
    for (int64_t ch = 0; ch < jb->n_chunks; ch++) {
        const char *qp = (const char *)jb->qpack + ch * jb->chunk_bytes;
        if (jb->kind == K_I8)
            colmax_amx_i8(jb, qp, r0, r1, w->colmax + ch * QC, (int32_t *)w->cbuf, w->scratch);
        else
            colmax_amx_bf16(jb, qp, r0, r1, w->colmax + ch * QC, (float *)w->cbuf, w->scratch);
    }
}

#else /* no SIMD paths in this build: never called (path_built says so) */
void amx_thread_begin(void) {}
void amx_thread_end(void) {}
void pack_amx(job_t *jb) { (void)jb; }
void seg_amx(const job_t *jb, int64_t r0, int64_t r1, work_t *w) { (void)jb, (void)r0, (void)r1, (void)w; }
#endif
