/* Self-test of the CPU kernels without Python: each instruction path named on the command line scores
 * random ragged problems of every storage kind (fp32, fp16, bf16, int8 and fp8 with no, per-token and
 * per-segment scales) through the driver, scores and top-k, against a double-precision reference computed
 * from exactly the values the kernel reads. Odd dims, 1-token and empty segments, query token counts on both
 * sides of every chunk width. Prints one line per path ("PATH ok", "PATH skip: ...") and exits non-zero on
 * the first mismatch.
 *
 * Built by tests/test_cpu_isa.py together with kernels/csrc/ sources. With -DMAXSIM_EMULATE_AVXVNNI the AVX-VNNI
 * kernel runs on an exact AVX2 emulation of vpdpbusd, so its logic is checked on CPUs without AVX-VNNI.
 */
#include <stdio.h>
#include <stdlib.h>

#include "maxsim_cpu.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t next_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static double uniform(void) { return (next_u32() & 0xffffff) / 16777216.0 * 2.0 - 1.0; } /* [-1, 1) */

/* Random rows of storage `kind` (values of order 1; fp8 codes avoid NaN) with positive scales when
 * scale_mode asks for them. */
static void fill_rows(int kind, int64_t rows, int dim, void *d) {
    for (int64_t i = 0; i < rows * dim; i++) {
        const float v = (float)uniform();
        uint32_t u;
        memcpy(&u, &v, 4);
        if (kind == K_F32) ((float *)d)[i] = v;
        else if (kind == K_BF16) ((uint16_t *)d)[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        else if (kind == K_F16) /* sign | exponent 10..17 | mantissa: normal halves between 2^-5 and 2^3 */
            ((uint16_t *)d)[i] = (uint16_t)((next_u32() & 0x8000) | ((10 + next_u32() % 8) << 10) | (next_u32() & 0x3ff));
        else if (kind == K_I8) ((int8_t *)d)[i] = (int8_t)(next_u32() % 255 - 127);
        else {
            uint8_t c = (uint8_t)next_u32();
            if ((c & 0x7f) == 0x7f) c ^= 1; /* not NaN */
            ((uint8_t *)d)[i] = c;
        }
    }
}

static int check_path(int level, int emulated) {
    static const int dims[] = {1, 3, 37, 48, 64, 130};
    static const int qtoks[] = {1, 8, 9, 16, 17, 33, 70};
    static const char *kind_names[] = {"fp32", "bf16", "int8", "fp16", "fp8"};
    for (int kind = K_F32; kind <= K_FP8; kind++) {
        const int kernel = kernel_for(level, kind);
        const int qkind = kind == K_I8 ? K_I8 : (kind == K_BF16 || kind == K_FP8) ? K_BF16 : K_F32;
        const int esz = kind == K_F32 ? 4 : (kind == K_BF16 || kind == K_F16) ? 2 : 1;
        for (int di = 0; di < (int)(sizeof dims / sizeof *dims); di++)
            for (int qi = 0; qi < (int)(sizeof qtoks / sizeof *qtoks); qi++)
                for (int sm = S_NONE; sm <= ((kind == K_I8 || kind == K_FP8) ? S_SEGMENT : S_NONE); sm++) {
                    const int dim = dims[di], nq_tok = qtoks[qi], n_d = 23;
                    int64_t d_off[24], q_off[3] = {0, nq_tok / 3, nq_tok};
                    d_off[0] = 0;
                    for (int s = 0; s < n_d; s++) d_off[s + 1] = d_off[s] + (s == 0 ? 1 : s == 1 ? 0 : next_u32() % 40);
                    const int64_t rows = d_off[n_d];
                    void *d = malloc((size_t)(rows * dim * esz + 1));
                    void *q = malloc((size_t)nq_tok * dim * 4);
                    float *qscale = malloc(sizeof(float) * nq_tok), *dscale = malloc(sizeof(float) * (rows + n_d));
                    float *out = malloc(sizeof(float) * 2 * n_d), *top_s = malloc(sizeof(float) * 2 * 2 * 5);
                    int64_t *top_i = malloc(sizeof(int64_t) * 2 * 2 * 5);
                    double *ref = malloc(sizeof(double) * 2 * n_d);
                    fill_rows(kind, rows, dim, d);
                    fill_rows(qkind, nq_tok, dim, q);
                    for (int t = 0; t < nq_tok; t++) qscale[t] = 0.5f + (float)(next_u32() % 100) / 100.0f;
                    for (int64_t i = 0; i < rows + n_d; i++) dscale[i] = 0.01f + (float)(next_u32() % 100) / 1000.0f;
                    /* reference: sum over the query's tokens of the max over the segment's rows */
                    double scale_abs = 0;
                    for (int qq = 0; qq < 2; qq++)
                        for (int s = 0; s < n_d; s++) {
                            double sum = 0;
                            for (int64_t t = q_off[qq]; t < q_off[qq + 1]; t++) {
                                double best = -INFINITY;
                                for (int64_t r = d_off[s]; r < d_off[s + 1]; r++) {
                                    double dot = 0, mag = 0;
                                    for (int k = 0; k < dim; k++) {
                                        const double a = load_as_float(qkind, q, t * dim + k),
                                                     b = load_as_float(kind, d, r * dim + k);
                                        dot += a * b;
                                        mag += fabs(a * b);
                                    }
                                    const double rs = sm == S_TOKEN ? dscale[r] : sm == S_SEGMENT ? dscale[s] : 1.0;
                                    const double qs = qkind == K_I8 ? qscale[t] : 1.0;
                                    dot *= rs * qs;
                                    best = dot > best ? dot : best;
                                    scale_abs = mag * rs * qs > scale_abs ? mag * rs * qs : scale_abs;
                                }
                                sum += best;
                            }
                            ref[qq * n_d + s] = sum;
                        }
                    for (int topk = 0; topk <= 1; topk++) {
                        job_t jb;
                        memset(&jb, 0, sizeof jb);
                        jb.kind = kind;
                        jb.qkind = qkind;
                        jb.dim = dim;
                        jb.path = kernel;
                        jb.scale_mode = sm;
                        jb.q = q;
                        jb.qscale = qkind == K_I8 ? qscale : NULL;
                        jb.nq_tok = nq_tok;
                        jb.q_off = q_off;
                        jb.n_q = 2;
                        jb.d = d;
                        jb.d_off = d_off;
                        jb.n_d = n_d;
                        jb.d_rows = rows;
                        jb.dscale = sm == S_TOKEN ? dscale : sm == S_SEGMENT ? dscale + rows : NULL;
                        if (sm == S_SEGMENT) /* the reference used dscale[s]: same values */
                            memcpy(dscale + rows, dscale, sizeof(float) * n_d);
                        jb.out = out;
                        jb.k = topk ? 5 : 0;
                        jb.top_s = top_s;
                        jb.top_i = top_i;
                        if (maxsim_execute(&jb, 2)) {
                            printf("%s: out of memory\n", path_names[level]);
                            return 1;
                        }
                        const double tol = 2e-5 * scale_abs * nq_tok + 1e-6;
                        for (int qq = 0; qq < 2; qq++) {
                            if (!topk) {
                                for (int s = 0; s < n_d; s++) {
                                    const double want = ref[qq * n_d + s], got = out[qq * n_d + s];
                                    const int bad = isinf(want) ? !(isinf(got) && got < 0) : !(fabs(got - want) <= tol);
                                    if (bad) {
                                        printf("%s%s: %s dim %d, %d query tokens, scale mode %d: segment %d of query %d "
                                               "scored %.9g, want %.9g\n",
                                               path_names[level], emulated ? " (emulated)" : "", kind_names[kind], dim,
                                               nq_tok, sm, s, qq, got, want);
                                        return 1;
                                    }
                                }
                                continue;
                            }
                            /* top-k: the best of both threads' lists must hold the 5 best references */
                            double best[5];
                            for (int i = 0; i < 5; i++) best[i] = -INFINITY;
                            for (int s = 0; s < n_d; s++) {
                                double v = ref[qq * n_d + s];
                                for (int i = 0; i < 5; i++)
                                    if (v > best[i]) {
                                        double tmp = best[i];
                                        best[i] = v;
                                        v = tmp;
                                    }
                            }
                            double got[10];
                            int used[10] = {0};
                            for (int i = 0; i < 10; i++) got[i] = top_s[(i / 5) * 2 * 5 + qq * 5 + i % 5];
                            for (int i = 0; i < 5; i++) { /* i-th best over both lists */
                                int arg = -1;
                                for (int j = 0; j < 10; j++)
                                    if (!used[j] && (arg < 0 || got[j] > got[arg])) arg = j;
                                used[arg] = 1;
                                if (!(fabs(got[arg] - best[i]) <= tol) && !(isinf(best[i]) && isinf(got[arg]))) {
                                    printf("%s%s: %s dim %d, top-k place %d of query %d is %.9g, want %.9g\n",
                                           path_names[level], emulated ? " (emulated)" : "", kind_names[kind], dim, i,
                                           qq, got[arg], best[i]);
                                    return 1;
                                }
                            }
                        }
                    }
                    free(d);
                    free(q);
                    free(qscale);
                    free(dscale);
                    free(out);
                    free(top_s);
                    free(top_i);
                    free(ref);
                }
    }
    return 0;
}

int main(int argc, char **argv) {
#ifdef MAXSIM_EMULATE_AVXVNNI
    const int emulate = 1;
#else
    const int emulate = 0;
#endif
    int failed = 0;
    for (int a = 1; a < argc; a++) {
        int level = -1;
        for (int p = 0; p < N_PATHS; p++)
            if (!strcmp(argv[a], path_names[p])) level = p;
        if (level < 0) {
            printf("%s: no such path\n", argv[a]);
            return 2;
        }
        const int emulated = emulate && level == P_AVXVNNI;
        if (!(emulated ? path_ok(P_AVX2) : path_ok(level))) {
            printf("%s skip: this CPU or build cannot run it\n", argv[a]);
            continue;
        }
        if (check_path(level, emulated)) {
            failed = 1;
            continue;
        }
        printf("%s%s ok\n", argv[a], emulated ? " (emulated)" : "");
    }
    return failed;
}
