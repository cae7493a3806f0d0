/* The portable path: plain C, no target attributes (the compiler's baseline vectorisation only). The only
 * path on non-x86 CPUs and with compilers too old for the SIMD paths; MAXSIM_CPU_ISA=portable forces it. */
#include <pthread.h>

#include "maxsim_cpu.h"

#define GR 4 /* segment rows per block */

static float g_fp8[256]; /* every e4m3 code as float, built once */
static pthread_once_t g_fp8_once = PTHREAD_ONCE_INIT;

static void build_fp8(void) {
    for (int b = 0; b < 256; b++) g_fp8[b] = fp8_to_f32((uint8_t)b);
}

/* Row `row` widened to float, one loop per storage kind (fp8 through a 256-entry table). */
static void widen_row(const job_t *jb, int64_t row, float *dst) {
    const int d = jb->dim;
    const int64_t o = row * d;
    switch (jb->kind) {
    case K_RES: decode_res_row(jb, row, dst); break;
    case K_F32: memcpy(dst, (const float *)jb->d + o, sizeof(float) * d); break;
    case K_BF16:
        for (int k = 0; k < d; k++) dst[k] = bf16_to_f32(((const uint16_t *)jb->d)[o + k]);
        break;
    case K_F16:
        for (int k = 0; k < d; k++) dst[k] = f16_to_f32(((const uint16_t *)jb->d)[o + k]);
        break;
    case K_I8:
        for (int k = 0; k < d; k++) dst[k] = (float)((const int8_t *)jb->d)[o + k];
        break;
    default:
        pthread_once(&g_fp8_once, build_fp8);
        for (int k = 0; k < d; k++) dst[k] = g_fp8[((const uint8_t *)jb->d)[o + k]];
    }
}

/* Rows j .. j + nr - 1 widened to float, zero rows after them (scales are applied to the products). */
static void widen_rows(const job_t *jb, int64_t j, int nr, float *rows) {
    for (int r = 0; r < GR; r++) {
        if (r < nr)
            widen_row(jb, j + r, rows + (int64_t)r * jb->dim);
        else
            memset(rows + (int64_t)r * jb->dim, 0, sizeof(float) * jb->dim);
    }
}

void seg_portable(const job_t *jb, int64_t r0, int64_t r1, work_t *w) {
    const int d = jb->dim;
    float *rows = (float *)w->rows;
    for (int64_t i = 0; i < jb->n_chunks * QC; i++) w->colmax[i] = -INFINITY;
    for (int64_t j = r0; j < r1; j += GR) {
        const int nr = (int)((r1 - j) < GR ? (r1 - j) : GR);
        widen_rows(jb, j, nr, rows);
        for (int64_t ch = 0; ch < jb->n_chunks; ch++) {
            const float *qt = (const float *)((const char *)jb->qpack + ch * jb->chunk_bytes);
            float *colmax = w->colmax + ch * QC;
            float acc[GR][QC];
            for (int r = 0; r < GR; r++)
                for (int c = 0; c < QC; c++) acc[r][c] = 0.0f;
            for (int k = 0; k < d; k++) {
                const float *qk = qt + (int64_t)k * QC;
                for (int r = 0; r < GR; r++) {
                    const float v = rows[r * d + k];
                    for (int c = 0; c < QC; c++) acc[r][c] += v * qk[c];
                }
            }
            for (int r = 0; r < nr; r++) {
                const float s = jb->scale_mode == S_TOKEN ? jb->dscale[j + r] : 1.0f;
                for (int c = 0; c < QC; c++) {
                    const float v = acc[r][c] * s;
                    colmax[c] = v > colmax[c] ? v : colmax[c];
                }
            }
        }
    }
}

void bag_portable(const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
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
