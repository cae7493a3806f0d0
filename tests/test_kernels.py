"""Every MaxSim backend (torch, cpu, triton in the interpreter) against a float64 reference.

Inputs are fresh random ragged batches; outputs are poisoned (MAXSIM_DEBUG_POISON=1: NaN / sentinel) so an
element a kernel forgets to write fails. Tolerances are per query token, by the arithmetic of each path:
float32 products (fp32 / fp16 storage on cpu and torch), bf16-rounded queries (triton with 16-bit, int8 or
fp8 storage; cpu with bf16 / fp8 storage) and int8-quantised queries (cpu with int8 storage).

The CPU backend runs once on the path this CPU picks ("cpu") and once per instruction path forced with
MAXSIM_CPU_ISA ("cpu-<path>": amx, avx512bf16, avx512vnni, avx512, avxvnni, avx2, portable); a path this CPU
cannot run is skipped with what it lacks (test_cpu_isa.py checks that forcing one is refused).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on CPU tensors

import maxsim.kernels as K  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from maxsim.kernels import cpu, maxsim_scores, maxsim_topk, quantize  # noqa: E402
from maxsim.kernels.validate import check  # noqa: E402

STORAGE = ["fp32", "fp16", "bf16", "int8-token", "int8-segment", "fp8-token", "fp8-segment"]
TOL_PER_TOKEN = {"f32": 2e-5, "bf16q": 3e-3, "int8q": 4e-3}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("MAXSIM_DEBUG_POISON", "1")


def ragged(rng, lengths, dim, negative=False):
    x = rng.standard_normal((int(sum(lengths)), dim))
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if negative:
        x = -np.abs(x)
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return x, off


def slow(q, qo, d, do):
    """float64 MaxSim: empty segment -inf, empty query 0."""
    out = np.zeros((len(qo) - 1, len(do) - 1))
    for j in range(len(do) - 1):
        dj = d[do[j] : do[j + 1]]
        if len(dj) == 0:
            out[:, j] = -np.inf
            continue
        best = (q @ dj.T).max(1)
        out[:, j] = np.add.reduceat(best, qo[:-1]) if len(best) else 0.0
    out[qo[:-1] == qo[1:], :] = 0.0  # an empty query sums nothing (reduceat would repeat a neighbour)
    return out


def store(d, do, storage):
    """(data tensor, d_scale or None, dequantised float64 values) for a storage spec such as int8-token."""
    dtype, _, per = storage.partition("-")
    data, scale = quantize(torch.tensor(d, dtype=torch.float32), dtype, per or "token", torch.tensor(do))
    deq = data.double()
    if scale is not None:
        deq = deq * (scale.double().reshape(-1, 1) if per == "token" else scale.double()[_ids(do)])
    return data, scale, deq.numpy()


def _ids(do):
    return torch.repeat_interleave(torch.arange(len(do) - 1), torch.tensor(np.diff(do)))


def path_kind(backend, storage):
    dtype = storage.partition("-")[0]
    if backend == "torch" or dtype == "fp32" or (backend.startswith("cpu") and dtype == "fp16"):
        return "f32"
    if backend.startswith("cpu") and dtype == "int8":
        return "int8q"
    return "bf16q"


# Every CPU instruction path, forced in turn: backend "cpu-<path>" runs backend="cpu" under MAXSIM_CPU_ISA.
PATH_BACKENDS = [f"cpu-{name}" for name in reversed(cpu.PATHS)]


def require_path(name):
    """Skip unless this CPU and build can run instruction path ``name`` (the reason says what it lacks)."""
    if not cpu.available():
        pytest.skip("the compiled CPU kernel is not built")
    why = cpu.info("auto")["unusable"].get(name)
    if why:
        pytest.skip(f"this CPU cannot run the {name} path: it lacks {', '.join(why)}")


@pytest.fixture(autouse=True)
def _forced_path(request, monkeypatch):
    """Tests parametrised with backend "cpu-<path>" run with MAXSIM_CPU_ISA=<path>."""
    backend = getattr(request.node, "callspec", None) and request.node.callspec.params.get("backend")
    if isinstance(backend, str) and backend.startswith("cpu-"):
        require_path(backend[4:])
        monkeypatch.setenv("MAXSIM_CPU_ISA", backend[4:])


def _backend(backend):
    return "cpu" if backend.startswith("cpu-") else backend


def run_scores(backend, q, qo, data, do, scale):
    args = (torch.tensor(q, dtype=torch.float32), torch.tensor(qo), data, torch.tensor(do))
    return maxsim_scores(*args, backend=_backend(backend), d_scale=scale)


def run_topk(backend, q, qo, data, do, scale, k):
    args = (torch.tensor(q, dtype=torch.float32), torch.tensor(qo), data, torch.tensor(do))
    return maxsim_topk(*args, k, backend=_backend(backend), d_scale=scale)


def assert_scores(got, want, qo, kind):
    got = got.numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    assert not np.isnan(got).any(), "unwritten (poisoned) or NaN output"
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    lens = np.diff(qo).astype(np.float64)
    tol = TOL_PER_TOKEN[kind] * np.maximum(lens, 1)[:, None] + 1e-5
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    assert (err <= np.broadcast_to(tol, want.shape)[fin]).all(), f"max error {err.max():.3g}"


CPU_BACKENDS = ["torch", "cpu", *PATH_BACKENDS]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dim", [37, 48, 128, 320])
@pytest.mark.parametrize("storage", STORAGE)
def test_cpu_and_torch_match_float64(backend, dim, storage):
    """Odd dims (not a multiple of 2, 4, 16 or 32: every vector tail), 1-token and empty segments, segment
    lengths that end on every row-block size, queries of 0 to 45 tokens spanning several chunks."""
    rng = np.random.default_rng(dim + len(storage))
    q, qo = ragged(rng, [1, 7, 32, 0, 45], dim)
    lens = rng.integers(0, 70, size=100)
    lens[:3] = [1, 0, 33]
    d, do = ragged(rng, lens, dim)
    data, scale, deq = store(d, do, storage)
    got = run_scores(backend, q, qo, data, do, scale)
    assert_scores(got, slow(q, qo, deq, do), qo, path_kind(backend, storage))


@pytest.mark.parametrize(
    ("dim", "storage"),
    [(48, "fp32"), (320, "fp32"), (128, "fp16"), (128, "bf16"), (48, "int8-token"), (128, "int8-segment"),
     (128, "fp8-token"), (320, "fp8-segment")],
)  # fmt: skip
def test_triton_matches_float64(dim, storage):
    rng = np.random.default_rng(7 * dim + len(storage))
    q, qo = ragged(rng, [1, 7, 32, 0, 40], dim)
    lens = rng.integers(0, 70, size=14)
    lens[:2] = [0, 1]
    d, do = ragged(rng, lens, dim)
    data, scale, deq = store(d, do, storage)
    got = run_scores("triton", q, qo, data, do, scale)
    assert_scores(got, slow(q, qo, deq, do), qo, path_kind("triton", storage))


def test_triton_small_tiles_walk_every_loop(monkeypatch):
    """Tiles smaller than the query, the dim and the segments: multi-chunk queries, unrolled dim tails."""
    from maxsim.kernels import triton_maxsim as tm

    monkeypatch.setattr(tm, "INTERPRETER_BLOCKS", {"BLOCK_T": 16, "BLOCK_D": 16})
    monkeypatch.setattr(tm, "INTERPRETER_BLOCK_Q", 16)
    rng = np.random.default_rng(5)
    q, qo = ragged(rng, [3, 40, 5, 0, 9], 40)
    d, do = ragged(rng, [17, 1, 0, 33, 16, 5], 40)
    data, scale, deq = store(d, do, "int8-token")
    want = slow(q, qo, deq, do)
    assert_scores(run_scores("triton", q, qo, data, do, scale), want, qo, "bf16q")
    s, i = run_topk("triton", q, qo, data, do, scale, 4)
    assert_topk_consistent(s, i, torch.tensor(want, dtype=torch.float32), 4, tol=0.05)


ALL_BACKENDS = CPU_BACKENDS + ["triton"]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_all_negative_similarities(backend):
    """Masking must use -inf: with every similarity < 0, padding filled with 0 would win the max."""
    rng = np.random.default_rng(3)
    q, qo = ragged(rng, [5, 1, 20], 64)
    d, do = ragged(rng, rng.integers(1, 40, size=20), 64, negative=True)
    q = np.abs(q)
    data, scale, deq = store(d, do, "fp32")
    got = run_scores(backend, q, qo, data, do, scale)
    assert (got < 0).all()
    assert_scores(got, slow(q, qo, deq, do), qo, "f32")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_one_token_queries_and_segments_and_a_single_segment(backend):
    rng = np.random.default_rng(4)
    q, qo = ragged(rng, [1, 1, 1], 128)
    for lens in ([1] * 9, [37]):
        d, do = ragged(rng, lens, 128)
        data, scale, deq = store(d, do, "bf16")
        got = run_scores(backend, q, qo, data, do, scale)
        assert_scores(got, slow(q, qo, deq, do), qo, path_kind(backend, "bf16"))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_segments_and_queries(backend):
    rng = np.random.default_rng(1)
    q, qo = ragged(rng, [3, 0, 2], 16)
    d, do = ragged(rng, [4, 0, 2, 0], 16)
    data, scale, deq = store(d, do, "fp32")
    got = run_scores(backend, q, qo, data, do, scale)
    assert torch.isneginf(got[0, 1]) and torch.isneginf(got[2, 3])
    assert (got[1] == 0).all()  # a query with no token sums nothing, even against an empty segment
    assert_scores(got, slow(q, qo, deq, do), qo, "f32")
    s, i = run_topk(backend, q, qo, data, do, scale, 6)
    assert i[0, :2].tolist() in ([0, 2], [2, 0]) and i[0, 2:4].tolist() == [1, 3]
    assert i[0, 4:].tolist() == [-1, -1]
    assert torch.isneginf(s[0, 2:]).all()
    # No segments / no queries at all.
    none = run_scores(backend, q, qo, data[:0], np.zeros(1, dtype=np.int64), None)
    assert none.shape == (3, 0)


def assert_topk_consistent(s, i, full, k, tol):
    """Top-k equals the best-first, lower-index-on-ties order of the backend's own full scores (allowing
    swaps between entries closer than tol to the float64 ones), with a -inf / -1 tail."""
    n_q, n_d = full.shape
    assert s.shape == (n_q, k) and i.shape == (n_q, k) and i.dtype == torch.int64
    assert not torch.isnan(s).any()
    for row in range(n_q):
        m = min(k, n_d)
        got_idx = i[row, :m].tolist()
        assert len(set(got_idx)) == m and min(got_idx) >= 0
        np.testing.assert_allclose(s[row, :m].numpy(), full[row, got_idx].numpy(), atol=tol, rtol=0)
        kth = torch.sort(full[row], descending=True).values[m - 1]
        assert (full[row, got_idx] >= kth - tol).all()
        assert (s[row, :m][:-1] >= s[row, :m][1:]).all()
        assert i[row, m:].tolist() == [-1] * (k - m) and torch.isneginf(s[row, m:]).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("storage", ["fp32", "int8-token"])
def test_topk_ties_and_tail(backend, storage):
    rng = np.random.default_rng(2)
    q, qo = ragged(rng, [5, 2, 9], 24)
    lens = list(rng.integers(1, 12, size=14 if backend == "triton" else 40))
    d, do = ragged(rng, lens, 24)
    # Segments n and n+1 repeat segment 3 exactly: three-way ties that must come out lowest index first.
    rep = d[do[3] : do[4]]
    d = np.concatenate([d, rep, rep])
    do = np.append(do, [do[-1] + len(rep), do[-1] + 2 * len(rep)])
    n_d = len(do) - 1
    data, scale, deq = store(d, do, storage)
    full = run_scores(backend, q, qo, data, do, scale)
    kind = path_kind(backend, storage)
    tol = TOL_PER_TOKEN[kind] * 9 + 1e-5
    for k in (1, 3, n_d + 4):
        s, i = run_topk(backend, q, qo, data, do, scale, k)
        assert_topk_consistent(s, i, full, k, tol)
        for row in range(3):
            # exact ties among the three copies: identical scores, in index order
            pos = [i[row].tolist().index(j) for j in (3, n_d - 2, n_d - 1) if j in i[row].tolist()]
            assert pos == sorted(pos)
            if len(pos) == 3:
                assert s[row, pos[0]] == s[row, pos[1]] == s[row, pos[2]]
                assert pos[2] - pos[0] == 2  # nothing sorts between exact ties
    want = slow(q, qo, deq, do)
    s, i = run_topk(backend, q, qo, data, do, scale, n_d)
    for row in range(3):
        np.testing.assert_allclose(np.sort(s[row].numpy())[::-1], np.sort(want[row])[::-1], atol=tol)


@pytest.mark.parametrize("backend", ["torch", "cpu", *PATH_BACKENDS, "triton"])
@pytest.mark.parametrize("storage", ["int8-token", "bf16"])
def test_thousands_of_segments(backend, storage, monkeypatch):
    if backend == "triton" and storage == "bf16":
        pytest.skip("one triton run (fp8) is enough: the interpreter is slow")
    rng = np.random.default_rng(9)
    n = 3000 if backend != "triton" else 80
    q, qo = ragged(rng, [32, 8, 32], 128)
    d, do = ragged(rng, rng.integers(0, 31, size=n), 128)
    if backend.startswith("cpu"):  # also walk the chunked path and the per-thread top-k merge
        monkeypatch.setattr(cpu, "CHUNK_ROWS", 5000)
        torch.set_num_threads(2)
    storage = storage if backend != "triton" else "fp8-segment"
    data, scale, deq = store(d, do, storage)
    want = slow(q, qo, deq, do)
    got = run_scores(backend, q, qo, data, do, scale)
    kind = path_kind(backend, storage)
    assert_scores(got, want, qo, kind)
    s, i = run_topk(backend, q, qo, data, do, scale, 10)
    assert_topk_consistent(s, i, got, 10, TOL_PER_TOKEN[kind] * 32)


@pytest.mark.parametrize("storage", ["int8-segment", "int8-token"])
def test_cpu_paths_agree_on_int8(storage):
    """Same integer products on every path (AMX, VNNI, float32 FMA, plain C): exact int32 sums or exact
    float32 sums of integer products, so only the order of the float work after them may differ."""
    if not cpu.available():
        pytest.skip("the compiled CPU kernel is not built")
    rng = np.random.default_rng(11)
    q, qo = ragged(rng, [32, 3, 70], 128)
    d, do = ragged(rng, rng.integers(0, 50, size=200), 128)
    data, scale, _ = store(d, do, storage)
    p = check(torch.tensor(q, dtype=torch.float32), torch.tensor(qo), data, torch.tensor(do), scale)
    got = {name: cpu.scores(p, isa=name) for name in cpu.usable_paths()}
    assert len(got) >= 1
    for name, s in got.items():
        torch.testing.assert_close(s, got["portable"], rtol=1e-5, atol=1e-5, msg=name)


def test_cpu_falls_back_to_torch_without_the_extension(monkeypatch):
    rng = np.random.default_rng(12)
    q, qo = ragged(rng, [4, 9], 32)
    d, do = ragged(rng, [3, 0, 8], 32)
    data, scale, deq = store(d, do, "int8-token")
    monkeypatch.setattr(cpu, "_ext", None)
    assert cpu.path(torch.int8) == "torch" and not cpu.available()
    got = run_scores("cpu", q, qo, data, do, scale)
    assert_scores(got, slow(q, qo, deq, do), qo, "f32")


def test_default_backend_on_cpu_tensors_is_the_cpu_kernel():
    assert K.resolve_backend(None, torch.device("cpu")) == "cpu"
    assert cpu.path(torch.float32) in (*cpu.PATHS, "torch")


@pytest.mark.parametrize(("storage", "bound"), [("bf16", 1e-3), ("fp16", 1.5e-4), ("int8-token", 4e-3),
                                                ("int8-segment", 5e-3), ("fp8-token", 1.5e-2),
                                                ("fp8-segment", 1.5e-2)])  # fmt: skip
def test_storage_accuracy_against_float32(storage, bound):
    """What each storage dtype costs, relative to the score scale (the bounds quoted in quantize.py)."""
    rng = np.random.default_rng(13)
    q, qo = ragged(rng, [32] * 4, 128)
    d, do = ragged(rng, rng.integers(1, 60, size=100), 128)
    exact = slow(q, qo, d, do)
    _, _, deq = store(d, do, storage)
    rel = np.abs(slow(q, qo, deq, do) - exact).max() / np.abs(exact).max()
    assert rel < bound


def test_quantize_shapes_and_zero_rows():
    d = torch.randn(10, 8)
    d[4] = 0
    o = torch.tensor([0, 3, 3, 10])
    data, s = quantize(d, "int8", "token")
    assert data.dtype == torch.int8 and s.shape == (10,) and s[4] == 1 and (data[4] == 0).all()
    assert data.abs().max() == 127
    data, s = quantize(d, "fp8", "segment", o)
    assert data.dtype == torch.float8_e4m3fn and s.shape == (3, 1) and s[1, 0] == 1
    assert quantize(d, "bf16")[1] is None and quantize(d, "fp16")[0].dtype == torch.float16
    with pytest.raises(ValueError, match="offsets"):
        quantize(d, "int8", "segment")
    with pytest.raises(ValueError, match="dtype"):
        quantize(d, "int4")


def test_bad_arguments(monkeypatch):
    q, d = torch.randn(4, 8), torch.randn(6, 8)
    qo, do = torch.tensor([0, 4]), torch.tensor([0, 6])
    with pytest.raises(ValueError, match="end at the row count 4"):
        maxsim_scores(q, torch.tensor([0, 3]), d, do)
    with pytest.raises(ValueError, match="non-decreasing"):
        maxsim_scores(q, qo, d, torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match="start at 0"):
        maxsim_scores(q, qo, d, torch.tensor([1, 6]))
    with pytest.raises(ValueError, match="dim 9 but q has dim 8"):
        maxsim_scores(q, qo, torch.randn(6, 9), do)
    with pytest.raises(TypeError, match="integer"):
        maxsim_scores(q, torch.tensor([0.0, 4.0]), d, do)
    with pytest.raises(TypeError, match="d must be one of"):
        maxsim_scores(q, qo, d.to(torch.int32), do)
    with pytest.raises(TypeError, match="q must be"):
        maxsim_scores(q.double(), qo, d, do)
    with pytest.raises(ValueError, match="2-D"):
        maxsim_scores(q[0], qo, d, do)
    with pytest.raises(ValueError, match="q is on cpu but d is on meta"):
        maxsim_scores(q, qo, d.to("meta"), do)
    with pytest.raises(ValueError, match=r"d_scale must have shape \(6,\)"):
        maxsim_scores(q, qo, d.to(torch.int8), do, d_scale=torch.ones(5))
    with pytest.raises(TypeError, match="d_scale must be a float"):
        maxsim_scores(q, qo, d.to(torch.int8), do, d_scale=torch.ones(6, dtype=torch.int32))
    with pytest.raises(ValueError, match="k must be >= 0"):
        maxsim_topk(q, qo, d, do, -1)
    with pytest.raises(ValueError, match="backend must be one of"):
        maxsim_scores(q, qo, d, do, backend="cuda")
    with pytest.raises(ValueError, match="backend 'cpu' needs CPU tensors"):
        maxsim_scores(q.to("meta"), qo, d.to("meta"), do, backend="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        maxsim_scores(q, qo, d, do, backend="triton")


def test_cpu_fp16_rows_widen_exactly_including_subnormals():
    vals = torch.tensor([6e-8, -6e-8, 3e-5, -1e-6, 65504.0, -2.0, 0.0, 1.5], dtype=torch.float16)
    d = torch.diag(vals.float()).to(torch.float16)  # one value per row, on the diagonal
    do = torch.arange(9)
    q = torch.eye(8)
    got = maxsim_scores(q, torch.arange(9), d, do, backend="cpu")
    want = torch.diag(vals.float())
    assert torch.equal(got, want)


_AOT = """
import inspect, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from maxsim.kernels import triton_maxsim as tm

fn = tm._maxsim_kernel
names = list(inspect.signature(fn.fn).parameters)
for d_type, q_type, scale, topk, dim, block_q, n_qchunk, mask in json.loads(sys.argv[1]):
    sig = {"q_ptr": q_type, "tok_qid_ptr": "*i32", "grp_ptr": "*i32", "d_ptr": d_type, "d_off_ptr": "*i64",
           "scale_ptr": "*fp32", "mask_ptr": "*i8", "out_ptr": "*fp32", "cand_s_ptr": "*fp32",
           "cand_i_ptr": "*i64",
           "n_d": "i32", "segs_per_prog": "i32", "n_seg_progs": "i32", "T_BUCKET": "i32", "DTYPE_ID": "i32"}
    const = dict(DIM=dim, SCALE=scale, MASK=bool(mask), TOPK=topk, QG=tm.MAX_QUERIES_PER_GROUP,
                 BLOCK_Q=block_q, N_QCHUNK_MAX=n_qchunk, IEEE=d_type == "*fp32", DOT_F32=False, BLOCK_T=64,
                 BLOCK_D=128)
    sig.update(dict.fromkeys(const, "constexpr"))
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 3})
    assert out.metadata.name == "_maxsim_kernel" and "cubin" in out.asm, out.asm.keys()
    print("compiled", d_type, topk, dim, "shared", out.metadata.shared)
"""


def test_triton_kernel_compiles_for_hopper():
    """No GPU in CI: compile the kernel ahead of time for sm_90 (H100), in a process without the
    interpreter, so a GPU-only compile error cannot hide behind the interpreter's leniency."""
    import json
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    cases = [["*bf16", "*bf16", 0, 0, 128, 32, 1, 0], ["*fp8e4nv", "*bf16", 2, 16, 320, 64, 2, 1],
             ["*i8", "*bf16", 1, 8, 48, 128, 1, 1], ["*fp32", "*fp32", 0, 4, 128, 16, 3, 0],
             ["*fp16", "*fp16", 0, 0, 128, 64, 1, 1]]  # fmt: skip
    res = subprocess.run([sys.executable, "-c", _AOT, json.dumps(cases)], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    if res.returncode != 0 and "ptxas" in res.stderr and "not found" in res.stderr.lower():
        pytest.skip("no ptxas in this triton build")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("compiled") == len(cases)


@pytest.mark.parametrize("backend", ["cpu", *PATH_BACKENDS])
def test_cpu_fp8_widening_is_exact_for_every_code(backend):
    """All 254 finite e4m3 codes (subnormals included) come out of the kernel bit-exact."""
    codes = torch.arange(256, dtype=torch.uint8)
    vals = codes[~torch.isnan(codes.view(torch.float8_e4m3fn).float())].view(torch.float8_e4m3fn)
    dim = 48  # 32-wide vector blocks plus a scalar tail
    rows = -(-vals.numel() // dim)
    d = torch.zeros(rows * dim, dtype=torch.uint8).view(torch.float8_e4m3fn)
    d[: vals.numel()] = vals
    d = d.reshape(rows, dim)
    q, qo = np.eye(dim), np.arange(dim + 1)  # query token i picks column i of the one-row segments
    got = run_scores(backend, q, qo, d, np.arange(rows + 1), None)  # (dim, rows)
    assert torch.equal(got.T.reshape(-1)[: vals.numel()], vals.float())
