"""maxsim-bench encoder, lifecycle and decode end to end (smoke presets), and the ingest encoder table."""

from __future__ import annotations

import json

import pytest
from maxsim.bench import cli, ingest_bench, lifecycle_bench


def run_cli(*args: str) -> int:
    return cli.main(list(args))


def finished(out, status: str = "complete") -> dict:
    data = json.loads((out / "results.json").read_text())
    assert data["status"] == status
    assert (out / "results.md").read_text().startswith("# maxsim-bench")
    return data


def test_encoder_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "encoder"
    assert run_cli("encoder", "--preset", "smoke", "--out", str(out)) == 0
    r = finished(out)["results"]
    small, large = r["budgets"]
    assert (small["token_budget"], large["token_budget"]) == (8, 24)
    # 4 frames of 64x128 are 2 frame pairs of 4x8 merged tokens: 64 in all, cut to the budget
    assert small["visual_tokens_per_clip"]["max"] <= 8 < large["visual_tokens_per_clip"]["mean"] <= 24
    for row in (small, large):
        assert row["clips_per_s"] > 0 and row["queries_per_s"] > 0
        assert row["seconds_per_video_minute"] == pytest.approx(60 / (row["clips_per_s"] * 4.0))
        assert row["encoder"] == r["setup"]["encoder"]
    assert large["gflops_per_clip"] > small["gflops_per_clip"]
    md = (out / "results.md").read_text()
    assert "Encoder throughput per visual-token budget" in md and "clips/s" in md
    assert (out / "encoder_throughput.png").stat().st_size > 0


def test_encoder_bad_budgets(tmp_path, capsys):
    out = tmp_path / "encoder"
    assert run_cli("encoder", "--preset", "smoke", "--set", "token_budgets=[0]", "--out", str(out)) == 2
    assert "token_budgets must be a list of positive integers" in capsys.readouterr().err
    assert finished(out, "failed")["results"] == {}


def test_lifecycle_smoke(tmp_path):
    out = tmp_path / "lifecycle"
    assert run_cli("lifecycle", "--preset", "smoke", "--out", str(out)) == 0
    rows = finished(out)["results"]["sizes"]
    assert [(r["videos"], r["segments"]) for r in rows] == [(4, 20), (16, 80)]
    for r in rows:
        assert r["parts"] == 2 and r["parts_after"] == 1
        assert r["segments_dropped"] == 2 * 5  # two videos of five segments deleted, then compacted away
        assert len(r["delete_commit_ms_all"]) == 2 and r["delete_commit_ms"] > 0
        assert r["delete_reopen_ms"] > 0 and r["compaction_s"] > 0 and r["index_mib"] > 0
    assert rows[1]["index_mib"] > rows[0]["index_mib"]
    assert "delete commit ms" in (out / "results.md").read_text()
    assert (out / "lifecycle_latency.png").stat().st_size > 0


def test_lifecycle_interrupt_keeps_finished_sizes(tmp_path, monkeypatch):
    real = lifecycle_bench.measure
    calls = []

    def interrupted(cfg, videos, work_dir):
        calls.append(videos)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, videos, work_dir)

    monkeypatch.setattr(lifecycle_bench, "measure", interrupted)
    out = tmp_path / "lifecycle"
    assert run_cli("lifecycle", "--preset", "smoke", "--out", str(out)) == 130
    rows = finished(out, "interrupted")["results"]["sizes"]
    assert [r["videos"] for r in rows] == [4]
    md = (out / "results.md").read_text()
    assert "status: interrupted" in md and "| 4 |" in md


def test_lifecycle_deletes_beyond_the_index(tmp_path, capsys):
    out = tmp_path / "lifecycle"
    assert run_cli("lifecycle", "--preset", "smoke", "--set", "deletes=5", "--out", str(out)) == 2
    assert "deletes must be between 1 and the smallest index size (4)" in capsys.readouterr().err


def test_decode_smoke(tmp_path):
    out = tmp_path / "decode"
    assert run_cli("decode", "--preset", "smoke", "--out", str(out)) == 0
    r = finished(out)["results"]
    assert r["video"]["frames"] == 30 and r["video"]["duration_s"] == pytest.approx(3.0, abs=0.05)
    got = {(s["stage"], s["prefetch"]): s for s in r["stages"]}
    assert set(got) == {(st, pf) for st in ("decode", "fixed:10+sample", "scenes+sample") for pf in (0, 8)}
    for s in r["stages"]:
        assert s["fps"] == pytest.approx(30 / s["seconds"])
        assert s["realtime_x"] == pytest.approx(r["video"]["duration_s"] / s["seconds"])
    assert got[("decode", 0)]["output"] == got[("decode", 8)]["output"] == 30  # every frame decoded
    assert got[("fixed:10+sample", 0)]["output"] == 1  # one 10 s window covers the 3 s video
    assert got[("scenes+sample", 0)]["output"] == got[("scenes+sample", 8)]["output"] >= 1
    assert "frames/s" in (out / "results.md").read_text()
    assert (out / "decode_fps.png").stat().st_size > 0


def test_decode_missing_video_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "decode"
    missing = tmp_path / "nope.mp4"
    assert run_cli("decode", "--preset", "smoke", "--set", f"video={missing}", "--out", str(out)) == 2
    assert f"video {missing} does not exist" in capsys.readouterr().err


def test_ingest_reports_encoder_clips_per_second_and_tokens_per_clip():
    def video(name, segments, tokens, frames, encode_s):
        row = {
            "video": name, "duration_s": 10.0, "frames": 100, "segments": segments, "sampled_frames": frames,
            "tokens": tokens, "seconds": {s: 0.1 for s in ingest_bench.STAGES} | {"encode": encode_s},
        }  # fmt: skip
        return ingest_bench._with_rtf(row)

    videos = [video("a.mp4", 4, 40, 16, 0.5), video("b.mp4", 6, 120, 30, 1.5)]
    results = {"setup": {"encoder": "enc-x"}, "videos": videos}  # no total: an interrupted run
    (table,) = [t for t in ingest_bench.tables(results) if t.title.startswith("Encoder throughput")]
    assert "enc-x" in table.title
    a, b, total = table.rows
    assert (a["clips_per_s"], a["tokens_per_clip"], a["frames_per_clip"]) == (8.0, 10.0, 4.0)
    assert (b["clips_per_s"], b["tokens_per_clip"]) == (4.0, 20.0)
    assert total["video"] == "all" and total["clips"] == 10
    assert total["clips_per_s"] == pytest.approx(10 / 2.0) and total["tokens_per_clip"] == pytest.approx(16.0)
