/* Fused MaxSim on the CPU: blocked query x segment products with the max over segment tokens folded into
 * the block, so the (query tokens x segment tokens) similarity matrix is never written out.
 *
 * This file is the Python module and the driver: it resolves which kernel scores a storage kind on the
 * instruction path asked for (kernel_for), packs the queries for it, runs the threads and the top-k. The
 * kernels live in kern_*.c, one file per instruction family, each function compiled with its own target
 * attributes; features.c says which paths the CPU can run. Threads: plain pthreads over a shared counter of
 * segment batches (no OpenMP runtime, so it never fights torch's own thread pool); the GIL is released
 * while scoring. Inputs are raw pointers (from torch.Tensor.data_ptr()) checked by kernels/cpu.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdlib.h>

#include "maxsim_cpu.h"

#define PANEL_BYTES (128 << 10) /* packed query chunks scored against one row block: about a quarter of L2 */

/* Which kernel scores storage `kind` when the instruction path (level) is `level`. */
static int kernel_for(int level, int kind) {
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

/* A RuntimeError naming the path and what this CPU (or build) lacks; 0 when the path can run. */
static int refuse_path(int level) {
    if (level < 0 || level >= N_PATHS) {
        PyErr_Format(PyExc_ValueError, "maxsim cpu kernel: no instruction path %d", level);
        return 1;
    }
    if (!path_built(level)) {
        PyErr_Format(PyExc_RuntimeError,
                     "maxsim cpu kernel: this build has no %s path (compiled without SIMD support: needs gcc >= 11 "
                     "or clang >= 12 on x86-64)",
                     path_names[level]);
        return 1;
    }
    const unsigned missing = path_missing(level);
    if (!missing) return 0;
    char buf[512] = "";
    for (int b = 0; b < 16; b++)
        if (missing & (1u << b)) {
            if (buf[0]) strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
            strncat(buf, feature_names[b], sizeof buf - strlen(buf) - 1);
        }
    PyErr_Format(PyExc_RuntimeError, "maxsim cpu kernel: the %s path cannot run on this CPU: it lacks %s",
                 path_names[level], buf);
    return 1;
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

/* Lay out and pack the queries, run the threads, collect errors. The job's pointers, sizes, k and path
 * (the kernel) are set. */
static PyObject *execute(job_t *jbp, int nthreads) {
    job_t jb = *jbp;
    layout(&jb);
    if (jb.k > 0) {
        for (int64_t i = 0; i < (int64_t)nthreads * jb.n_q * jb.k; i++) {
            jb.top_s[i] = -INFINITY;
            jb.top_i[i] = -1;
        }
    }
    if (jb.n_q == 0 || jb.n_d == 0) Py_RETURN_NONE;
    jb.qpack = aligned((size_t)(jb.n_chunks * jb.chunk_bytes + 64));
    part_t *parts = calloc((size_t)nthreads, sizeof(part_t));
    if (!jb.qpack || !parts) {
        free(jb.qpack);
        free(parts);
        return PyErr_NoMemory();
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS;
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
    Py_END_ALLOW_THREADS;
    free(jb.qpack);
    free(parts);
    if (err) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Python entry points                                                                                     */
/* ----------------------------------------------------------------------------------------------------- */

static PyObject *py_run(PyObject *self, PyObject *args) {
    (void)self;
    job_t jb;
    memset(&jb, 0, sizeof jb);
    long long q, qscale, q_off, d, d_off, dscale, out, top_s, top_i, nq_tok, n_q, n_d, d_rows, k;
    int nthreads, level;
    if (!PyArg_ParseTuple(args, "iiiLLLLLLLLLLiLLLLii", &jb.kind, &jb.qkind, &jb.dim, &q, &qscale, &nq_tok, &q_off,
                          &n_q, &d, &d_off, &n_d, &d_rows, &dscale, &jb.scale_mode, &out, &k, &top_s, &top_i,
                          &nthreads, &level))
        return NULL;
    if (jb.kind < K_F32 || jb.kind > K_FP8 || jb.qkind < K_F32 || jb.qkind > K_I8 || jb.dim <= 0 || nthreads < 1 ||
        k < 0) {
        PyErr_SetString(PyExc_ValueError, "maxsim cpu kernel: bad kind, dim, k or thread count");
        return NULL;
    }
    if (refuse_path(level)) return NULL;
    jb.path = kernel_for(level, jb.kind);
    const int int8_kernel = jb.path == P_AVX512VNNI || jb.path == P_AVXVNNI || (jb.path == P_AMX && jb.kind == K_I8);
    const int bf16_kernel = jb.path == P_AVX512BF16 || (jb.path == P_AMX && jb.kind != K_I8);
    if ((int8_kernel && jb.qkind != K_I8) || (bf16_kernel && jb.qkind != K_BF16)) {
        PyErr_Format(PyExc_ValueError, "maxsim cpu kernel: the %s kernel needs %s queries", path_names[jb.path],
                     int8_kernel ? "int8" : "bf16");
        return NULL;
    }
    if (int8_kernel && jb.dim > 65536) { /* int32 sums of 255 x 127 products */
        PyErr_SetString(PyExc_ValueError, "maxsim cpu kernel: int8 segments need dim <= 65536");
        return NULL;
    }
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

static PyObject *py_run_residual(PyObject *self, PyObject *args) {
    (void)self;
    job_t jb;
    memset(&jb, 0, sizeof jb);
    long long q, q_off, codes, res, cents, table, d_start, d_off, out, top_s, top_i, nq_tok, n_q, n_d, d_rows, k;
    int nthreads, level;
    if (!PyArg_ParseTuple(args, "iLLLLLiiLLiLLLLLLLLLii", &jb.dim, &q, &nq_tok, &q_off, &n_q, &codes, &jb.rc_code16,
                          &jb.rc_bytes, &res, &d_rows, &jb.rc_per, &cents, &table, &d_start, &d_off, &n_d, &out, &k,
                          &top_s, &top_i, &nthreads, &level))
        return NULL;
    if (jb.dim <= 0 || nthreads < 1 || k < 0 || (jb.rc_per != 1 && jb.rc_per != 2 && jb.rc_per != 4 && jb.rc_per != 8) ||
        (int64_t)jb.rc_bytes * jb.rc_per < jb.dim) {
        PyErr_SetString(PyExc_ValueError, "maxsim residual kernel: bad dim, bytes per row, values per byte, k or "
                                          "thread count");
        return NULL;
    }
    if (refuse_path(level)) return NULL;
    jb.kind = K_RES;
    jb.qkind = K_F32;
    jb.path = kernel_for(level, K_RES);
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

static PyObject *py_bag_scores(PyObject *self, PyObject *args) {
    (void)self;
    long long sims, nq_tok, codes, start, len, n, out;
    int code16, nthreads, level;
    if (!PyArg_ParseTuple(args, "LLLiLLLLii", &sims, &nq_tok, &codes, &code16, &start, &len, &n, &out, &nthreads,
                          &level))
        return NULL;
    if (refuse_path(level)) return NULL;
    if (nthreads < 1) nthreads = 1;
    bag_job_t *jobs = calloc((size_t)nthreads, sizeof(bag_job_t));
    if (!jobs) return PyErr_NoMemory();
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (bag_job_t){bag_for(level), (const float *)(uintptr_t)sims, nq_tok, (const void *)(uintptr_t)codes,
                              code16, (const int64_t *)(uintptr_t)start, (const int64_t *)(uintptr_t)len,
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

/* features() -> {"features": {name: bool}, "paths": {name: {"built", "usable", "missing": [...]}}} */
static PyObject *py_features(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    const unsigned f = cpu_features();
    PyObject *feats = PyDict_New(), *paths = PyDict_New();
    if (!feats || !paths) goto fail;
    for (int b = 0; b < 16; b++)
        if (PyDict_SetItemString(feats, feature_names[b], (f >> b) & 1 ? Py_True : Py_False) < 0) goto fail;
    for (int p = 0; p < N_PATHS; p++) {
        const unsigned missing = path_missing(p);
        PyObject *lst = PyList_New(0);
        if (!lst) goto fail;
        for (int b = 0; b < 16; b++) {
            if (!(missing & (1u << b))) continue;
            PyObject *s = PyUnicode_FromString(feature_names[b]);
            if (!s || PyList_Append(lst, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(lst);
                goto fail;
            }
            Py_DECREF(s);
        }
        PyObject *rec = Py_BuildValue("{s:O,s:O,s:N}", "built", path_built(p) ? Py_True : Py_False, "usable",
                                      path_ok(p) ? Py_True : Py_False, "missing", lst);
        if (!rec || PyDict_SetItemString(paths, path_names[p], rec) < 0) {
            Py_XDECREF(rec);
            goto fail;
        }
        Py_DECREF(rec);
    }
    return Py_BuildValue("{s:N,s:N}", "features", feats, "paths", paths);
fail:
    Py_XDECREF(feats);
    Py_XDECREF(paths);
    return NULL;
}

/* kernels(level) -> {storage: kernel path name} for what a call on that path runs. */
static PyObject *py_kernels(PyObject *self, PyObject *args) {
    (void)self;
    int level;
    if (!PyArg_ParseTuple(args, "i", &level)) return NULL;
    if (level < 0 || level >= N_PATHS) {
        PyErr_Format(PyExc_ValueError, "maxsim cpu kernel: no instruction path %d", level);
        return NULL;
    }
    const int bag = level >= P_AVX512 ? P_AVX512 : level >= P_AVX2 ? P_AVX2 : P_PORTABLE;
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "float32", path_names[kernel_for(level, K_F32)], "float16",
                         path_names[kernel_for(level, K_F16)], "bfloat16", path_names[kernel_for(level, K_BF16)],
                         "int8", path_names[kernel_for(level, K_I8)], "float8_e4m3fn",
                         path_names[kernel_for(level, K_FP8)], "residual", path_names[kernel_for(level, K_RES)],
                         "bag", path_names[bag]);
}

static PyMethodDef methods[] = {
    {"run", py_run, METH_VARARGS,
     "run(kind, qkind, dim, q, qscale, nq_tok, q_off, n_q, d, d_off, n_d, d_rows, dscale, scale_mode, out, k, top_s, "
     "top_i, nthreads, path): fused MaxSim over raw pointers (see kernels/cpu.py)."},
    {"run_residual", py_run_residual, METH_VARARGS,
     "run_residual(dim, q, nq_tok, q_off, n_q, codes, code16, bytes_per_row, residuals, n_rows, per_byte, centroids, "
     "table, d_start, d_off, n_d, out, k, top_s, top_i, nthreads, path): fused MaxSim over residual-coded rows "
     "(see kernels/cpu.py)."},
    {"bag_scores", py_bag_scores, METH_VARARGS,
     "bag_scores(sims, nq_tok, codes, code16, start, len, n, out, nthreads, path): sums over query tokens of the best "
     "centroid similarity in each bag (see kernels/cpu.py)."},
    {"features", py_features, METH_NOARGS,
     "features() -> {'features': {name: bool}, 'paths': {name: {'built', 'usable', 'missing'}}}: what this CPU and "
     "build can run."},
    {"kernels", py_kernels, METH_VARARGS, "kernels(path) -> {storage: kernel}: which kernel scores each storage kind."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_maxsim_cpu",
                                    "Fused MaxSim CPU kernels (AMX, AVX-512 BF16 / VNNI / float32, AVX2 / AVX-VNNI, "
                                    "portable C), chosen per call.",
                                    -1, methods, NULL, NULL, NULL, NULL};

/* The path order in the Python wrapper (kernels/cpu.py PATHS) is the P_* enum's. */
PyMODINIT_FUNC PyInit__maxsim_cpu(void) { return PyModule_Create(&module); }
