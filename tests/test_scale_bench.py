"""``maxsim-bench scale``: the smoke preset end to end (pruning and pooling), interruption, bad settings."""

from __future__ import annotations

import json

from maxsim.bench import cli, scale_bench, scale_cmd


def results(out) -> dict:
    return json.loads((out / "results.json").read_text())


def test_scale_smoke_pruning_and_pooling(tmp_path):
    out = tmp_path / "out"
    code = cli.main([
        "scale", "--preset", "smoke", "--out", str(out),
        "--set", 'only=["pruning", "pooling"]',
        # the second setting makes every segment a candidate: the pruned search must equal the exact one
        "--set", "pruning.settings=[{n_candidates = 100, nprobe = 4}, {n_candidates = 3000, nprobe = 4}]",
    ])  # fmt: skip
    assert code == 0
    data = results(out)
    assert data["status"] == "complete"
    m = data["machine"]
    assert m["cores"] >= 1 and "torch" in m["versions"] and "git" in m
    res = data["results"]
    assert res["sections"] == ["pooling", "pruning"] and "ray" not in res

    p = res["pruning"]
    assert p["setting_keys"] == ["n_candidates", "nprobe"]
    assert p["target_top1_exact"] == 1.0  # each query is made from its target segment
    small, full = p["pruned"]
    assert (small["n_candidates"], small["nprobe"]) == (100, 4) and full["n_candidates"] == 3000
    for r in p["pruned"]:
        assert 0.0 <= r["min_recall@10"] <= r["recall@10"] <= 1.0
        assert 0.0 <= r["top1_agreement"] <= 1.0
        assert 0.0 < r["bytes_fraction"] and r["qps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
    assert small["bytes_fraction"] < full["bytes_fraction"]
    assert full["recall@10"] == 1.0 and full["top1_agreement"] == 1.0
    assert small["top1_agreement"] == 1.0
    assert 0 < p["prune_index_overhead"] < 1 and p["exact"]["qps"] > 0

    rows = res["pooling"]["settings"]
    assert len(rows) == 4  # one row per setting of the smoke preset
    none, dedup, pooled, both = rows
    assert none["dedup"] is None and none["factor"] == 1 and none["reduction"] == 1.0
    assert none["recall@10"] == 1.0 and none["top1_agreement"] == 1.0
    assert dedup["dedup"] == 0.95 and pooled["factor"] == 2 and pooled["dedup"] is None
    assert pooled["reduction"] == 2.0
    assert both["reduction"] > pooled["reduction"] and both["mb_per_hour"] < none["mb_per_hour"] / 2
    for r in rows:
        assert 0.0 <= r["recall@10"] <= 1.0 and 0.0 <= r["top1_agreement"] <= 1.0

    md = (out / "results.md").read_text()
    assert md.startswith("# maxsim-bench scale")
    assert "| n_candidates | nprobe | recall@10 |" in md and "| 3,000 | 4 | 1.000 |" in md
    assert "| dedup | pool factor |" in md and "| - | 1 | 128 | 1.0x |" in md
    assert "Exact search:" in md and "centroids per part" in md
    assert set(data["plots"]) == {
        "scale_pruning_recall_vs_bytes.png", "scale_pruning_qps_vs_recall.png",
        "scale_pooling_recall_vs_storage.png",
    }  # fmt: skip
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "work").exists()  # scratch removed (keep_work = false)


def test_setting_columns_are_the_union_of_setting_keys():
    # a third search setting (e.g. n_refine) becomes a column without code changes, in order of appearance
    settings = [{"n_candidates": 100, "nprobe": 4}, {"n_candidates": 200, "n_refine": 50, "nprobe": 8}]
    assert scale_cmd.setting_keys(settings) == ["n_candidates", "nprobe", "n_refine"]
    row = {"recall@10": 0.9, "min_recall@10": 0.5, "top1_agreement": 1.0, "bytes_fraction": 0.02, "qps": 10.0,
           "p50_ms": 10.0, "p99_ms": 20.0}  # fmt: skip
    pruning = {
        "corpus": {"n_segments": 1000, "frames": 2, "tokens_per_frame": 4, "dim": 32}, "parts": 1,
        "queries": 3, "k": 10, "query_tokens": 8, "token_bytes": 2**20, "prune_index_bytes": 2**15,
        "prune_index_overhead": 1 / 32,
        "write_s": 1.0, "prune_build_s": 2.0, "n_centroids_per_part": [64], "target_top1_exact": 1.0,
        "exact": {"qps": 2.0, "p50_ms": 40.0, "p99_ms": 50.0},
        "pruned": [{**s, **row} for s in settings], "setting_keys": scale_cmd.setting_keys(settings),
    }  # fmt: skip
    table = scale_cmd.tables({"pruning": pruning})[0]
    assert [c.key for c in table.columns][:3] == ["n_candidates", "nprobe", "n_refine"]
    assert [r["speedup_p50"] for r in table.rows] == [4.0, 4.0]


def test_interrupt_keeps_finished_sections(tmp_path, monkeypatch):
    def interrupted(cfg, work, progress=True):
        assert work.parent == scratch and work.is_dir()
        raise KeyboardInterrupt

    monkeypatch.setattr(scale_bench, "bench_pruning", interrupted)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "mine.txt").write_text("not the benchmark's")
    out = tmp_path / "out"
    code = cli.main([
        "scale", "--out", str(out), "--set", 'only=["pooling", "pruning"]', "--set", f"work_dir={scratch}",
        "--set", "pooling.settings=[{factor = 1}, {dedup = 0.95}]",
    ])  # fmt: skip
    assert code == 130
    data = results(out)
    assert data["status"] == "interrupted"
    assert [r["dedup"] for r in data["results"]["pooling"]["settings"]] == [None, 0.95]
    assert "pruning" not in data["results"]
    assert "Token reduction" in (out / "results.md").read_text()
    assert [f.name for f in scratch.iterdir()] == ["mine.txt"]  # its own scratch folder removed, nothing else


def test_bad_configs_are_refused_before_measuring(tmp_path, capsys):
    cases = [
        (["--preset", "1m", "--set", "only=pooling"], "has no pooling section"),
        (["--set", "only=shards"], "unknown section"),
        (["--set", "pruning.settings=[[100, 4]]"], "list of tables of keyword settings"),
        (["--set", "pruning.settings=[{n_candidates = 100, nprob = 4}]"], "unknown key(s) ['nprob']"),
        (["--set", "pooling.settings=[{factor = 2, dedupe = 0.9}]"], "unknown key(s) ['dedupe']"),
        (["--set", "ray.workers=[0]"], "ray.workers"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / str(i)
        assert cli.main(["scale", "--out", str(out), *args]) == 2, args
        assert message in capsys.readouterr().err
        data = results(out)
        assert data["status"] == "failed" and message in data["error"]
        assert data["results"] == {}


def test_every_scale_preset_is_valid():
    from maxsim.bench.config import find_config_file, preset_names, read_toml, resolve

    data = read_toml(find_config_file("scale"))
    assert data["default_preset"] == "smoke" and set(preset_names(data)) >= {"smoke", "100k", "1m"}
    for preset in preset_names(data):
        cfg, _ = resolve("scale", preset)
        assert cfg["description"]
        sections = scale_cmd.selected_sections(cfg)
        scale_cmd.check_config(cfg, sections)  # raises on a malformed section
        assert "pruning" in sections


def test_missing_optional_packages_are_named(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    missing = ("ray", "scipy")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in missing else real(n, *a))
    assert cli.main(["scale", "--out", str(tmp_path / "a"), "--set", "only=ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err
    assert cli.main(["scale", "--out", str(tmp_path / "b"), "--set", "only=pooling"]) == 2
    assert "pip install -e '.[scale]'" in capsys.readouterr().err


def test_ray_table_and_same_hits_line():
    runs = [
        {"encoder": "color-test", "mode": "single-process", "seconds": 0.5, "video_s_per_s": 16.0,
         "segments": 4},
        {"encoder": "color-test + 100 ms/clip wait", "mode": "ray x2", "seconds": 6.0, "video_s_per_s": 1.3,
         "segments": 4, "first_clip_s": 5.0, "video_s_per_s_after_first": 3.0},
    ]  # fmt: skip
    ray = {"videos": 2, "video_seconds": 8, "ray_startup_s": 4.0, "cluster_cpus": 2.0, "cluster_gpus": 0,
           "runs": runs, "same_index": True, "same_hits": True, "sharded_same_hits": False, "shards": 2,
           "parts": 2}  # fmt: skip
    pruning, pooling, table = scale_cmd.tables({"ray": ray})
    assert not pruning.rows and not pooling.rows and table.rows == runs
    assert "2 videos, 8 s of video" in table.title and "2 CPUs" in table.title
    assert "same hits: True; sharded search (2 shards over 2 parts) same hits: False" in table.note
    from maxsim.bench.report import markdown_table

    md = markdown_table(table)
    assert "| color-test | single-process | 0.5 | 16.0 | - | - | 4 |" in md
    assert "| ray x2 | 6.0 | 1.3 | 5.0 | 3.0 | 4 |" in md
