"""The scale benchmark runs end to end on a tiny configuration and reports sane numbers."""

from __future__ import annotations

import json

from maxsim.bench import scale_bench


def test_scale_bench_tiny(tmp_path):
    cfg = {
        "pruning": {"n_segments": 600, "frames": 2, "tokens_per_frame": 4, "dim": 32, "n_concepts": 128,
                    "parts": 2, "queries": 5, "settings": [[150, 8], [600, 4]]},
        "pooling": {"n_segments": 20, "frames": 4, "tokens_per_frame": 8, "dim": 32, "queries": 4,
                    "settings": [[None, 1], [0.95, 2]]},
        "progress": False,
    }
    res = scale_bench.run(cfg, tmp_path / "out")
    p = res["pruning"]
    assert p["target_top1_exact"] == 1.0
    small, full = p["pruned"]
    assert small["bytes_fraction"] < full["bytes_fraction"]
    assert full["recall@10"] == 1.0 and full["top1_agreement"] == 1.0  # every segment is a candidate
    assert small["top1_agreement"] == 1.0
    none, reduced = res["pooling"]["settings"]
    assert none["reduction"] == 1.0 and none["recall@10"] == 1.0
    assert reduced["reduction"] > 2 and reduced["mb_per_hour"] < none["mb_per_hour"] / 2
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["pruning"]["pruned"][0]["n_candidates"] == 150
    assert "| n_candidates |" in (tmp_path / "out" / "results.md").read_text()
    assert not (tmp_path / "out" / "work").exists()
