/* The driver of the fused MaxSim kernels, free of Python: which kernel scores a storage kind on an
 * instruction path, the query packing and per-call layout, the threads over segment batches and the
 * per-thread top-k. maxsim_cpu.c (the Python module) and tests/csrc/kernel_selftest.c call it.
 *
 * Threads: plain pthreads over a shared counter of segment batches (no OpenMP runtime, so it never fights
 * torch's own thread pool). */
#include <pthread.h>
#include <stdlib.h>

#include "maxsim_cpu.h"

#define PANEL_BYTES (128 << 10) /* packed query chunks scored against one row block: about a quarter of L2 */

/* Which kernel scores storage `kind` when the instruction path (level) is `level`. */
int kernel_for(int level, int kind) {
    switch (level) {
    case P_AMX: return (kind == K_I8 || kind == K_BF16 || kind == K_FP8) ? P_AMX : P_AVX512;
    case P_AVX512BF16: return (kind == K_BF16 || kind == K_FP8) ? P_AVX512BF16 : kind == K_I8 ? P_AVX512VNNI : P_AVX512;
    case P_AVX512VNNI: return kind == K_I8 ? P_AVX512VNNI : P_AVX512;
    case P_AVX512: return P_AVX512;
    case P_AVXVNNI: return kind == K_I8 ? P_AVXVNNI : P_AVX2;
    case P_AVX2: return P_AVX2;
    default: return P_PORTABLE;
    }
}

static bag_fn bag_for(int level) {
    if (level >= P_AVX512) return bag_avx512;
    if (level >= P_AVX2) return bag_avx2;
    return bag_portable;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Query packing and per-call layout                                                                       */
/* ----------------------------------------------------------------------------------------------------- */

/* Lane kernels (AVX-512, AVX2, portable): per chunk of `lanes` tokens, nks k-steps of `lanes` 32-bit groups
 * (token c's dims ks*group .. + group - 1: one float, two bf16 or four int8), zero padded; the VNNI kernels
 * then append `lanes` int32 offsets, -128 x the token's byte sum (see rows_i8 in kern_avx512.c). */
static void pack_lanes(job_t *jb) {
    const int d = jb->dim, C = jb->lanes, g = jb->group;
    const int vnni = jb->path == P_AVX512VNNI || jb->path == P_AVXVNNI;
    memset(jb->qpack, 0, (size_t)jb->n_chunks * jb->chunk_bytes);
    for (int64_t t = 0; t < jb->nq_tok; t++) {
        char *chunk = (char *)jb->qpack + (t / C) * jb->chunk_bytes;
        const int c = (int)(t % C);
        int32_t sum = 0;
        for (int k = 0; k < d; k++) {
            char *grp = chunk + ((int64_t)(k / g) * C + c) * 4;
            if (g == 1) {
                ((float *)grp)[0] = load_as_float(jb->qkind, jb->q, t * d + k);
            } else if (g == 2) {
                ((uint16_t *)grp)[k % 2] = ((const uint16_t *)jb->q)[t * d + k];
            } else {
                const int8_t v = ((const int8_t *)jb->q)[t * d + k];
                ((int8_t *)grp)[k % 4] = v;
                sum += v;
            }
        }
        if (vnni) ((int32_t *)(chunk + (int64_t)jb->nks * C * 4))[c] = -128 * sum;
    }
}

/* Set the kernel's layout fields (lanes, group, k-steps, chunk size, panel, segment function). */
static void layout(job_t *jb) {
    const int p = jb->path;
    if (p == P_AMX) {
        const int kstep = jb->kind == K_I8 ? 64 : 32;
        jb->lanes = QC;
        jb->kpad = (jb->dim + kstep - 1) / kstep * kstep;
        jb->chunk_bytes = (int64_t)(jb->kpad / kstep) * 2048;
        jb->seg = seg_amx;
    } else {
        jb->lanes = (p == P_AVX2 || p == P_AVXVNNI) ? QC_AVX2 : QC;
        jb->group = (p == P_AVX512VNNI || p == P_AVXVNNI) ? 4 : p == P_AVX512BF16 ? 2 : 1;
        jb->nks = (jb->dim + jb->group - 1) / jb->group;
        jb->kpad = jb->nks * jb->group;
        jb->chunk_bytes = (int64_t)jb->nks * jb->lanes * 4 + (jb->group == 4 ? jb->lanes * 4 : 0);
        jb->seg = p == P_AVX512BF16   ? seg_avx512bf16
                  : p == P_AVX512VNNI ? seg_avx512vnni
                  : p == P_AVX512     ? seg_avx512
                  : p == P_AVXVNNI    ? seg_avxvnni
                  : p == P_AVX2       ? seg_avx2
                                      : seg_portable;
    }
    jb->n_chunks = (jb->nq_tok + jb->lanes - 1) / jb->lanes;
    const int64_t panel = PANEL_BYTES / jb->chunk_bytes;
    jb->panel = (int)(panel < 1 ? 1 : panel > jb->n_chunks ? (jb->n_chunks > 0 ? jb->n_chunks : 1) : panel);
}

/* ----------------------------------------------------------------------------------------------------- */
/* Driver: one thread's share of the segments                                                              */
/* ----------------------------------------------------------------------------------------------------- */

typedef struct {
    job_t *jb;
    int64_t tid;
    int err;
} part_t;

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

static void *aligned(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

static void *run_part(void *arg) {
    part_t *pt = (part_t *)arg;
    job_t *jb = pt->jb;
    const int64_t ncol = jb->n_chunks * jb->lanes + QC;
    work_t w;
    memset(&w, 0, sizeof w);
    w.row_stride = (int64_t)(jb->dim + 63) / 64 * 64 * 4;
    w.colmax = aligned(sizeof(float) * ncol);
    w.icolmax = aligned(sizeof(int32_t) * ncol);
    w.rows = aligned((size_t)(MAX_ROWS * w.row_stride));
    w.cbuf = aligned(32 * QC * 4);
    w.scratch = aligned((size_t)(32 * (int64_t)jb->kpad * 4 + 128));
    float *tokmax = malloc(sizeof(float) * (jb->nq_tok > 0 ? jb->nq_tok : 1));
    int64_t *counts = calloc(jb->n_q > 0 ? jb->n_q : 1, sizeof(int64_t));
    if (!w.colmax || !w.icolmax || !w.rows || !w.cbuf || !w.scratch || !tokmax || !counts) {
        pt->err = 1;
        goto done;
    }
    float *ts = jb->k ? jb->top_s + pt->tid * jb->n_q * jb->k : NULL;
    int64_t *ti = jb->k ? jb->top_i + pt->tid * jb->n_q * jb->k : NULL;
    if (jb->path == P_AMX) amx_thread_begin();
    for (;;) {
        const int64_t b0 = __atomic_fetch_add(&jb->next_batch, 1, __ATOMIC_RELAXED) * jb->batch;
        if (b0 >= jb->n_d) break;
        const int64_t b1 = b0 + jb->batch < jb->n_d ? b0 + jb->batch : jb->n_d;
        for (int64_t seg = b0; seg < b1; seg++) {
            const int64_t r0 = seg_row0(jb, seg), r1 = r0 + (jb->d_off[seg + 1] - jb->d_off[seg]);
            if (r1 == r0) {
                for (int64_t t = 0; t < jb->nq_tok; t++) tokmax[t] = -INFINITY;
            } else {
                jb->seg(jb, r0, r1, &w);
                const float segscale = jb->scale_mode == S_SEGMENT ? jb->dscale[seg] : 1.0f;
                for (int64_t t = 0; t < jb->nq_tok; t++)
                    tokmax[t] = w.colmax[t] * segscale * (jb->qscale ? jb->qscale[t] : 1.0f);
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
    if (jb->path == P_AMX) amx_thread_end();
done:
    free(w.colmax);
    free(w.icolmax);
    free(w.rows);
    free(w.cbuf);
    free(w.scratch);
    free(tokmax);
    free(counts);
    return NULL;
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

/* Lay out and pack the queries, run the threads; 0, or 1 when out of memory. */
int maxsim_execute(job_t *jbp, int nthreads) {
    job_t jb = *jbp;
    layout(&jb);
    if (jb.k > 0) {
        for (int64_t i = 0; i < (int64_t)nthreads * jb.n_q * jb.k; i++) {
            jb.top_s[i] = -INFINITY;
            jb.top_i[i] = -1;
        }
    }
    if (jb.n_q == 0 || jb.n_d == 0) return 0;
    jb.qpack = aligned((size_t)(jb.n_chunks * jb.chunk_bytes + 64));
    part_t *parts = calloc((size_t)nthreads, sizeof(part_t));
    if (!jb.qpack || !parts) {
        free(jb.qpack);
        free(parts);
        return 1;
    }
    int err = 0;
    if (jb.path == P_AMX)
        pack_amx(&jb);
    else
        pack_lanes(&jb);
    /* Batches of ~1/(16 x threads) of the segments, at most 64 (and at least 1). */
    jb.next_batch = 0;
    jb.batch = jb.n_d / (16 * (int64_t)nthreads);
    jb.batch = jb.batch < 1 ? 1 : jb.batch > 64 ? 64 : jb.batch;
    for (int t = 0; t < nthreads; t++) {
        parts[t].jb = &jb;
        parts[t].tid = t;
    }
    run_threads(run_part, parts, sizeof(part_t), nthreads);
    for (int t = 0; t < nthreads; t++) err |= parts[t].err;
    free(jb.qpack);
    free(parts);
    return err;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Centroid bags                                                                                           */
/* ----------------------------------------------------------------------------------------------------- */

/* Centroid-bag scores: out[i] = sum_t max_{c in bag i} sims[c, t] over the nq_tok query tokens, with
 * sims [n_centroids, nq_tok] (one contiguous row per centroid) and bag i = codes[start[i] .. +len[i]]. */
typedef struct {
    bag_fn fn;
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
    j->fn(j->sims, j->nq_tok, j->codes, j->code16, j->start, j->len, j->i0, j->i1, j->out, best);
    free(best);
    return NULL;
}

int maxsim_bags(int level, const float *sims, int64_t nq_tok, const void *codes, int code16, const int64_t *start,
                const int64_t *len, int64_t n, float *out, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    bag_job_t *jobs = calloc((size_t)nthreads, sizeof(bag_job_t));
    if (!jobs) return 1;
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (bag_job_t){bag_for(level), sims, nq_tok, codes, code16, start, len, n * t / nthreads,
                              n * (t + 1) / nthreads, out, 0};
    run_threads(bag_thread, jobs, sizeof(bag_job_t), nthreads);
    int err = 0;
    for (int t = 0; t < nthreads; t++) err |= jobs[t].err;
    free(jobs);
    return err;
}
