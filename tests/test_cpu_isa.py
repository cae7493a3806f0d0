"""The CPU kernel's instruction paths: MAXSIM_CPU_ISA forcing each one, refusing the ones this CPU lacks,
info() telling which kernel scores each storage dtype, and the query-chunk tails of every path.

Every path's scores against float64 for every storage dtype, top-k and many segments are in
test_kernels.py (backends "cpu-<path>"); the residual and bag kernels per path in test_residuals.py.
"""

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from maxsim.kernels import cpu, maxsim_scores, maxsim_topk, quantize
from maxsim.kernels.validate import check

ALL_PATHS = list(reversed(cpu.PATHS))  # best first
# What each forced path runs per storage dtype (and for the residual / bag kernels of pruned search).
EXPECTED = {
    "amx": {"float32": "avx512", "float16": "avx512", "bfloat16": "amx", "int8": "amx",
            "float8_e4m3fn": "amx", "residual": "avx512", "bag": "avx512"},
    "avx512bf16": {"float32": "avx512", "float16": "avx512", "bfloat16": "avx512bf16", "int8": "avx512vnni",
                   "float8_e4m3fn": "avx512bf16", "residual": "avx512", "bag": "avx512"},
    "avx512vnni": {"float32": "avx512", "float16": "avx512", "bfloat16": "avx512", "int8": "avx512vnni",
                   "float8_e4m3fn": "avx512", "residual": "avx512", "bag": "avx512"},
    "avx512": dict.fromkeys(("float32", "float16", "bfloat16", "int8", "float8_e4m3fn", "residual", "bag"),
                            "avx512"),
    "avxvnni": {"float32": "avx2", "float16": "avx2", "bfloat16": "avx2", "int8": "avxvnni",
                "float8_e4m3fn": "avx2", "residual": "avx2", "bag": "avx2"},
    "avx2": dict.fromkeys(("float32", "float16", "bfloat16", "int8", "float8_e4m3fn", "residual", "bag"),
                          "avx2"),
    "portable": dict.fromkeys(("float32", "float16", "bfloat16", "int8", "float8_e4m3fn", "residual", "bag"),
                              "portable"),
}  # fmt: skip

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the compiled CPU kernel is not built")


@pytest.fixture(autouse=True)
def _no_forced_path(monkeypatch):
    monkeypatch.delenv("MAXSIM_CPU_ISA", raising=False)


def _problem(rng, q_lens, seg_lens, dim, storage="int8"):
    def unit(n):
        return torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, dim))).float(), dim=1)

    q, d = unit(sum(q_lens)), unit(sum(seg_lens))
    qo = torch.tensor(np.concatenate([[0], np.cumsum(q_lens)]), dtype=torch.int64)
    do = torch.tensor(np.concatenate([[0], np.cumsum(seg_lens)]), dtype=torch.int64)
    data, scale = quantize(d, storage, "token")
    deq = data.double() * (scale.double()[:, None] if scale is not None else 1.0)
    want = torch.zeros(len(q_lens), len(seg_lens), dtype=torch.float64)
    for j in range(len(seg_lens)):
        sims = q.double() @ deq[do[j] : do[j + 1]].T
        best = sims.max(1).values if seg_lens[j] else torch.full((q.shape[0],), -np.inf, dtype=torch.float64)
        for i in range(len(q_lens)):
            want[i, j] = best[qo[i] : qo[i + 1]].sum()
    return (q, qo, data, do, scale), want


def test_the_names_are_the_c_paths():
    assert cpu.PATHS == ("portable", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16", "amx")
    assert set(EXPECTED) == set(cpu.PATHS)


def test_auto_picks_the_best_usable_path(monkeypatch):
    usable = cpu.usable_paths()
    assert usable and usable[-1] == "portable"
    assert usable == [p for p in ALL_PATHS if p in usable]  # best first
    best = cpu.info()
    assert best["isa"] == usable[0] and best["forced"] is None and best["extension"] is True
    monkeypatch.setenv("MAXSIM_CPU_ISA", "auto")
    assert cpu.info()["isa"] == usable[0]
    assert cpu.info()["paths"] == EXPECTED[usable[0]]
    # every path is either usable or reported with what this CPU lacks for it
    assert set(best["usable"]) | set(best["unusable"]) == set(cpu.PATHS)
    assert all(best["unusable"][p] for p in best["unusable"])


@pytest.mark.parametrize("name", ALL_PATHS)
def test_info_tells_the_kernel_of_each_dtype(name, monkeypatch):
    why = cpu.info()["unusable"].get(name)
    if why:
        pytest.skip(f"this CPU cannot run the {name} path: it lacks {', '.join(why)}")
    monkeypatch.setenv("MAXSIM_CPU_ISA", name.upper())  # case does not matter
    got = cpu.info()
    assert got["isa"] == name and got["forced"] == name
    assert got["paths"] == EXPECTED[name]
    assert cpu.path(torch.int8) == EXPECTED[name]["int8"]
    assert cpu.path(torch.bfloat16) == EXPECTED[name]["bfloat16"]
    assert cpu.amx() == ("amx" in got["usable"])


@pytest.mark.parametrize("name", ALL_PATHS)
def test_forcing_a_path_this_cpu_lacks_is_refused(name, monkeypatch):
    why = cpu.info()["unusable"].get(name)
    if not why:
        pytest.skip(f"this CPU runs the {name} path")
    rng = np.random.default_rng(0)
    (q, qo, data, do, scale), _ = _problem(rng, [4], [3, 5], 16)
    monkeypatch.setenv("MAXSIM_CPU_ISA", name)
    msg = f"MAXSIM_CPU_ISA={name}: this CPU cannot run the {name} path: it lacks {why[0]}"
    with pytest.raises(RuntimeError, match=msg):
        maxsim_scores(q, qo, data, do, d_scale=scale)
    with pytest.raises(RuntimeError, match=msg):
        maxsim_topk(q, qo, data, do, 1, d_scale=scale)
    with pytest.raises(RuntimeError, match=msg):
        cpu.bag_scores(torch.zeros(2, 3), np.zeros(2, np.int32), np.zeros(1, np.int64), np.ones(1, np.int64))
    with pytest.raises(RuntimeError, match=msg):
        cpu.info()
    monkeypatch.delenv("MAXSIM_CPU_ISA")
    with pytest.raises(RuntimeError, match=f"isa={name}: this CPU cannot run the {name} path"):
        cpu.scores(check(q, qo, data, do, scale), isa=name)


def test_unknown_path_names_are_refused(monkeypatch):
    monkeypatch.setenv("MAXSIM_CPU_ISA", "avx1024")
    want = (r"MAXSIM_CPU_ISA='avx1024' is not a CPU kernel path: expected auto or one of amx, avx512bf16, "
            r"avx512vnni, avx512, avxvnni, avx2, portable")
    with pytest.raises(ValueError, match=want):
        cpu.info()
    monkeypatch.setenv("MAXSIM_CPU_ISA", "generic")  # the old switch is gone, not silently ignored
    with pytest.raises(ValueError, match="not a CPU kernel path"):
        maxsim_scores(torch.randn(2, 8), torch.tensor([0, 2]), torch.randn(3, 8), torch.tensor([0, 3]))


def test_the_variable_is_read_by_a_fresh_process():
    """The environment variable alone (set before Python starts) forces the path."""
    env = {**os.environ, "MAXSIM_CPU_ISA": "portable"}
    code = "from maxsim.kernels import cpu; print(cpu.info()['isa'], cpu.path(__import__('torch').int8))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["portable", "portable"]


@pytest.mark.parametrize("name", ALL_PATHS)
@pytest.mark.parametrize("storage", ["fp32", "bf16", "int8", "fp8"])
def test_query_chunk_tails_on_every_path(name, storage, monkeypatch):
    """Query token counts on both sides of every chunk width (16 lanes on AVX2, 32 elsewhere) and of the
    half-width tiles (8 / 16 tokens), across several chunks, against float64."""
    why = cpu.info()["unusable"].get(name)
    if why:
        pytest.skip(f"this CPU cannot run the {name} path: it lacks {', '.join(why)}")
    monkeypatch.setenv("MAXSIM_CPU_ISA", name)
    rng = np.random.default_rng(len(storage))
    seg_lens = [1, 13, 0, 40, 7]
    tol = {"fp32": 2e-5, "bf16": 3e-3, "int8": 4e-3, "fp8": 3e-3}[storage]
    for n_tok in (1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 70, 100):
        (q, qo, data, do, scale), want = _problem(rng, [n_tok], seg_lens, 40, storage)
        got = maxsim_scores(q, qo, data, do, d_scale=scale).double()
        fin = torch.isfinite(want)
        assert torch.equal(torch.isneginf(got), torch.isneginf(want))
        err = float((got[fin] - want[fin]).abs().max())
        assert err <= tol * n_tok + 1e-5, (n_tok, err)


def _c_compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the SIMD paths are x86-64")
def test_kernel_selftest_in_c_with_avxvnni_emulated(tmp_path):
    """tests/csrc/kernel_selftest.c built with the kernel sources: every path this CPU runs, plus the
    AVX-VNNI kernel on an exact AVX2 emulation of vpdpbusd (test builds only), so its packing, offsets and
    tiles are checked on CPUs without AVX-VNNI (the real instruction runs in the tests above where the CPU
    has it)."""
    cc = _c_compiler()
    if cc is None:
        pytest.skip("no C compiler")
    root = Path(__file__).resolve().parents[1]
    csrc = root / "kernels" / "csrc"
    sources = [str(p) for p in sorted(csrc.glob("*.c")) if p.name != "maxsim_cpu.c"]  # all but the module
    exe = tmp_path / "kernel_selftest"
    cmd = [cc, "-O2", "-std=c11", "-fno-strict-aliasing", "-pthread", "-DMAXSIM_EMULATE_AVXVNNI",
           f"-I{csrc}", str(root / "tests" / "csrc" / "kernel_selftest.c"), *sources, "-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe), *ALL_PATHS], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    usable = cpu.usable_paths()
    for name in ALL_PATHS:
        if name == "avxvnni" and "avx2" in usable:
            assert lines[name] == "(emulated) ok"
        elif name in usable:
            assert lines[name] == "ok", name
        else:
            assert lines[name].startswith("skip"), name
