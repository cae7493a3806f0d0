/* The portable path: plain C, no target attributes (the compiler's baseline vectorisation only). The only
 * path on non-x86 CPUs and with compilers too old for the SIMD paths; MAXSIM_CPU_ISA=portable forces it. */
#include "maxsim_cpu.h"

#define GR 4 /* segment rows per block */

/* Rows j .. j + nr - 1 widened to float (times nothing: scales are applied to the products). */
static void widen_rows(const job_t *jb, int64_t j, int nr, float *rows) {
    const int d = jb->dim;
    for (int r = 0; r < GR; r++) {
        float *row = rows + (int64_t)r * d;
        if (r >= nr)
            memset(row, 0, sizeof(float) * d);
        else if (jb->kind == K_RES)
            decode_res_row(jb, j + r, row);
        else
            for (int k = 0; k < d; k++) row[k] = load_as_float(jb->kind, jb->d, (j + r) * d + k);
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
