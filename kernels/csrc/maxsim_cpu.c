/* Fused MaxSim on the CPU: blocked query x segment products with the max over segment tokens folded into
 * the block, so the (query tokens x segment tokens) similarity matrix is never written out.
 *
 * This file is the Python module: argument parsing, the refusal of a path this CPU cannot run, and the
 * GIL released around driver.c, which picks the kernel of each storage kind on the path asked for, packs
 * the queries, runs the threads and the top-k. The kernels live in kern_*.c, one file per instruction
 * family, each function compiled with its own target attributes; features.c says which paths the CPU runs.
 * Inputs are raw pointers (from torch.Tensor.data_ptr()) checked by kernels/cpu.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "maxsim_cpu.h"

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
/* Python entry points                                                                                     */
/* ----------------------------------------------------------------------------------------------------- */

/* Score a job whose pointers, sizes, k and kernel are set, without the GIL. */
static PyObject *execute(job_t *jb, int nthreads) {
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = maxsim_execute(jb, nthreads);
    Py_END_ALLOW_THREADS;
    if (err) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

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

static PyObject *py_bag_scores(PyObject *self, PyObject *args) {
    (void)self;
    long long sims, nq_tok, codes, start, len, n, out;
    int code16, nthreads, level, err;
    if (!PyArg_ParseTuple(args, "LLLiLLLLii", &sims, &nq_tok, &codes, &code16, &start, &len, &n, &out, &nthreads,
                          &level))
        return NULL;
    if (refuse_path(level)) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    err = maxsim_bags(level, (const float *)(uintptr_t)sims, nq_tok, (const void *)(uintptr_t)codes, code16,
                      (const int64_t *)(uintptr_t)start, (const int64_t *)(uintptr_t)len, n, (float *)(uintptr_t)out,
                      nthreads);
    Py_END_ALLOW_THREADS;
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
