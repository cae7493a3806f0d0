"""The kernel benchmark's CPU comparison (maxsim.bench.cpu_compare) on a tiny problem: every usable path and
dtype next to its ceiling, the targets evaluated, numpy run without OPENBLAS_CORETYPE and its BLAS named."""

import pytest
from maxsim.bench import cpu_compare
from maxsim.kernels import cpu

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the compiled CPU kernel is not built")


def test_every_path_and_dtype_next_to_its_ceiling(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # must not reach the measuring process
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    r = cpu_compare.run({"n_docs": 40, "doc_tokens": 20, "rounds": 2, "matmul_n": 128, "threads": 1})
    assert r["env_unset"] == {"OPENBLAS_CORETYPE": "Haswell"}
    usable = cpu.usable_paths()
    ours = [row for row in r["rows"] if row["path"]]
    assert {(row["path"], row["dtype"]) for row in ours} == {
        (p, s) for p in usable for s in ("fp32", "fp16", "bf16", "int8", "fp8")}
    for row in ours:
        assert row["kernel"] == cpu.info(row["path"])["paths"][cpu_compare.DTYPE_NAMES[row["dtype"]]]
        assert row["ceiling"] == f"gemm_{cpu_compare.compute_type(row['kernel'], row['dtype'])}"
        assert row["TFLOPs"] > 0 and row["pct_of_ceiling"] > 0 and row["ceiling_TFLOPs"] > 0
        assert row["max_rel_diff_vs_numpy"] < 2e-2  # the same scores, up to the storage dtype's rounding
    baselines = {row["method"] for row in r["rows"] if not row["path"]}
    assert {"gemm_fp32", "gemm_bf16", "numpy_fp32", "torch_fp32", "torch_bf16"} <= baselines
    # the targets of every measured path, each with its verdict
    checks = {(t["path"], t["target"]) for t in r["targets"]}
    if "avx512bf16" in usable:
        assert ("avx512bf16", "bf16 >= 70% of the bf16 matmul") in checks
        assert ("avx512bf16", "int8 >= 1.5x our bf16") in checks
    if "avx2" in usable:
        dtypes = ("fp32", "fp16", "bf16", "int8", "fp8")
        assert {("avx2", f"{s} >= 70% of the fp32 matmul") for s in dtypes} <= checks
    for t in r["targets"]:
        assert isinstance(t["met"], bool) and t["measured"] > 0 and t["measured_cpu_time"] > 0
    # numpy's own BLAS is identified (threadpoolctl), whatever else is loaded
    if "error" not in r["blas"]:
        assert r["blas"]["numpy"]["internal_api"] in ("openblas", "mkl", "blis", "accelerate")
    md = "\n".join(cpu_compare.markdown(r))
    assert "| path | target | measured (wall clock) | met | per CPU-second |" in md
    assert "Unset for the measuring process: OPENBLAS_CORETYPE=Haswell" in md
