"""The serve load benchmark (bench/serve_load.py) on its smoke preset, as maxsim-bench would run it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from maxsim.bench import serve_load  # noqa: E402
from maxsim.bench.config import resolve  # noqa: E402
from maxsim.bench.report import Run  # noqa: E402

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "bench" / "serve.toml"


def test_full_preset_is_the_issue_target():
    cfg, _ = resolve("serve", None, str(PRESETS))
    assert (cfg["clients"], cfg["duration_s"]) == (32, 60.0)


def test_smoke_preset_runs_on_a_synthetic_index(tmp_path):
    cfg, source = resolve("serve", "smoke", str(PRESETS))
    rec = Run("serve", cfg, source, tmp_path)
    serve_load.run(rec)
    load = rec.results["load"]
    assert load["errors"] == 0 and load["requests"] > 0
    assert load["index"].endswith("synthetic/index") and load["config"]["encoder"] == "color-test"
    out = io.StringIO()
    rec.finish("complete", serve_load.tables(rec.results), serve_load.plots, summary=0, stream=out)
    md = (tmp_path / "results.md").read_text()
    assert "POST /search under 4 concurrent clients" in md and "p99 ms" in md
    assert "p50 ms" in out.getvalue()
