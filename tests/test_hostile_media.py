"""Hostile input to the media stage and to ingest: names that are not UTF-8, named pipes and devices,
decoders that crash or hang, valid videos the old frame-count check refused (edit lists, timestamp
offsets, AVI drop frames), truncated MPEG-TS, and segment settings that would never finish."""

from __future__ import annotations

import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from maxsim import Engine
from maxsim.errors import VideoError
from maxsim.media import FixedSegmenter, FrameSampler, iter_clips, iter_frames, probe
from maxsim.media.spans import MAX_SEGMENTS_PER_VIDEO, MIN_SEGMENT_SECONDS
from maxsim.media.video import content_hash
from maxsim.media.worker import CRASH_ENV, isolated_clips
from tests.color_encoder import ColorEncoder

BAD_NAME = b"\xff\xfe-clip.mp4"  # not UTF-8: Python holds it as surrogate escapes


def _finishes(fn, seconds: float = 60.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} did not return within {seconds} s (it hangs)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _h264(path: Path, n: int = 50, fps: int = 10, shift: int = 0, bf: int = 0) -> Path:
    """An H.264 MP4 of ``n`` frames whose packets are muxed ``shift`` frames early: the first ``shift``
    frames get negative times, which the MP4 muxer hides behind an edit list (as ``ffmpeg -ss T -c copy``
    does with the frames it must keep for decoding); ``bf``: B-frames (a composition offset)."""
    c = av.open(str(path), "w")
    opts = {"bf": str(bf), "g": "100", "crf": "20", "preset": "veryfast"}
    st = c.add_stream("libx264", rate=fps, options=opts)
    st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
    packets = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.full((64, 96, 3), (i * 5) % 255, np.uint8), format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        packets += st.encode(f)
    packets += st.encode(None)
    for p in packets:
        p.pts -= shift
        p.dts -= shift
        c.mux(p)
    c.close()
    return path


def _avi_with_drops(path: Path) -> Path:
    """MPEG-4 in AVI at 10 fps with gaps in its timeline: the muxer writes zero-size 'drop' frames, which
    the frame count includes and the decoder never returns."""
    c = av.open(str(path), "w")
    st = c.add_stream("mpeg4", rate=10)
    st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
    for p in [*range(0, 10), *range(15, 30), *range(40, 45)]:
        f = av.VideoFrame.from_ndarray(np.full((64, 96, 3), p * 5, np.uint8), format="rgb24")
        f.pts, f.time_base = p, Fraction(1, 10)
        for pkt in st.encode(f):
            c.mux(pkt)
    for pkt in st.encode(None):
        c.mux(pkt)
    c.close()
    return path


def _ts_with_audio(path: Path, seconds: int = 4) -> Path:
    """MPEG-2 video and MP2 audio in an MPEG transport stream (audio PES packets declare their length)."""
    c = av.open(str(path), "w", format="mpegts")
    v = c.add_stream("mpeg2video", rate=10)
    v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
    a = c.add_stream("mp2", rate=48000)
    for i in range(10 * seconds):
        f = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 5, np.uint8), format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 10)
        for p in v.encode(f):
            c.mux(p)
    for t in range(0, seconds * 48000, 1152):
        af = av.AudioFrame.from_ndarray(np.zeros((1, 2304), np.int16), format="s16", layout="stereo")
        af.sample_rate, af.pts, af.time_base = 48000, t, Fraction(1, 48000)
        for p in a.encode(af):
            c.mux(p)
    for s in (v, a):
        for p in s.encode(None):
            c.mux(p)
    c.close()
    return path


def _last_pes_start(data: bytes, pid: int) -> int:
    last = -1
    for i in range(0, len(data), 188):
        if ((data[i + 1] & 0x1F) << 8 | data[i + 2]) == pid and data[i + 1] & 0x40:
            last = i
    return last


# -- names, pipes, devices -------------------------------------------------------------------------------
def test_a_name_that_is_not_utf8_is_ingested_searched_and_kept(tmp_path, make_video):
    folder = tmp_path / "clips"
    folder.mkdir()
    good = folder / "good.mp4"
    good.write_bytes(make_video("hostile_red.mp4", [(2.0, "red"), (2.0, "blue")]).read_bytes())
    bad = os.path.join(os.fsencode(folder), BAD_NAME)
    with open(bad, "wb") as f:
        f.write(make_video("hostile_green.mp4", [(2.0, "green"), (2.0, "yellow")]).read_bytes())
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:2")
    report = eng.ingest([folder], progress=False)  # OpenCV segfaulted on such a name: the call died
    assert report.ok and len(report.ingested) == 2, str(report)
    hit = eng.search("green", k=1)[0]
    assert os.fsencode(hit.video) == os.path.realpath(bad)  # the exact bytes, not a lookalike
    assert os.fsencode(hit.video) in {os.fsencode(v) for v in eng.videos()}
    again = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:2")  # reopened
    assert again.search("green", k=1)[0].video == hit.video
    assert len(again.ingest([folder], progress=False).skipped) == 2
    more = tmp_path / "more.mp4"
    more.write_bytes(make_video("hostile_cyan.mp4", [(2.0, "cyan")]).read_bytes())
    assert again.ingest([more], progress=False).ok and again.compact(full=True).parts_after == 1
    assert again.search("green", k=1)[0].video == hit.video  # compaction copies the name as it is
    assert again.delete(hit.video) == 2 and len(again) == 3


def test_pipes_and_devices_named_directly_fail_at_once(tmp_path, make_video):
    fifo = tmp_path / "live.mp4"
    os.mkfifo(fifo)  # nobody writes: reading it would block forever
    zero = tmp_path / "zero.mp4"
    zero.symlink_to("/dev/zero")  # endless: hashing it would never end
    video = make_video("hostile_plain.mp4", [(2.0, "red")])
    for p in (fifo, zero):
        with pytest.raises(VideoError, match="not a regular file"):
            _finishes(lambda p=p: content_hash(p), 10)
        with pytest.raises(VideoError, match="not a regular file"):
            _finishes(lambda p=p: iter_frames(p), 10)
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:2")
    report = _finishes(lambda: eng.ingest([fifo, zero, video], progress=False), 120)
    assert report.ingested == [str(video)]
    reasons = dict(report.failed)
    assert reasons[str(fifo)] == "not a regular file (a named pipe)"
    assert reasons[str(zero)] == "not a regular file (a character device)"
    with eng.store.writing():  # the writer lock was released: the ingest did not hang holding it
        pass


# -- a decoder that crashes or hangs ---------------------------------------------------------------------
@pytest.mark.parametrize("how, signal_name", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_a_crashing_decoder_fails_one_file_and_the_call_commits(tmp_path, make_video, monkeypatch, how,
                                                               signal_name):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, colour in (("a.mp4", "red"), ("crashes.mp4", "green"), ("c.mp4", "blue")):
        src = make_video(f"hostile_{colour}.mp4", [(2.0, colour), (2.0, "white")])
        (lib / name).write_bytes(src.read_bytes())
    monkeypatch.setenv(CRASH_ENV, f"{how}:crashes.mp4")
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:2")
    report = eng.ingest([lib], progress=False)
    assert [Path(p).name for p in report.ingested] == ["a.mp4", "c.mp4"] and report.version == 1
    (path, reason), = report.failed
    assert Path(path).name == "crashes.mp4"
    assert "decoder crashed" in reason and signal_name in reason, reason
    assert {Path(v).name for v in eng.videos()} == {"a.mp4", "c.mp4"} and len(eng) == 4
    monkeypatch.delenv(CRASH_ENV)
    assert eng.ingest([lib], progress=False).ingested == [str(lib / "crashes.mp4")]  # a fresh worker


def test_a_hanging_decoder_is_stopped(tmp_path, make_video, monkeypatch):
    video = make_video("hostile_hang.mp4", [(2.0, "red"), (2.0, "blue")])
    monkeypatch.setenv(CRASH_ENV, "hang:hostile_hang")
    t0 = time.monotonic()
    with pytest.raises(VideoError, match="decoding stalled: no frame was decoded for 1.5 s"):
        list(isolated_clips(video, "fixed:1", FrameSampler(), stall_timeout=1.5))
    assert time.monotonic() - t0 < 30
    monkeypatch.delenv(CRASH_ENV)
    assert len(list(isolated_clips(video, "fixed:1", FrameSampler()))) == 4


def test_the_decode_worker_gives_what_this_process_gives(make_video, scenes_video):
    sampler = FrameSampler(fps=4, max_frames=5, max_side=64)
    for seg in ("fixed:1.5", "scenes"):
        here = list(iter_clips(scenes_video.path, seg, sampler))
        there = list(isolated_clips(scenes_video.path, seg, sampler, read_ahead=1))
        assert [(c.start, c.end, t) for c, t in here] == [(c.start, c.end, t) for c, t in there]
        for (a, _), (b, _) in zip(here, there, strict=True):
            np.testing.assert_array_equal(a.frames, b.frames)
            np.testing.assert_array_equal(a.timestamps, b.timestamps)
    with pytest.raises(VideoError, match="no such file"):
        list(isolated_clips(scenes_video.path.with_name("missing.mp4"), "fixed:1", sampler))


def test_a_segmenter_that_cannot_be_pickled_decodes_in_this_process(scenes_video, caplog):
    class Local(FixedSegmenter):  # defined in a function: pickle cannot find it
        pass

    clips = list(isolated_clips(scenes_video.path, Local(2.0), FrameSampler(max_side=32)))
    assert [c.start for c, _ in clips] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert "decoding in this process" in caplog.text


# -- valid videos the frame count called truncated -------------------------------------------------------
def test_an_mp4_cut_with_an_edit_list_is_complete(tmp_path):
    """What ``ffmpeg -ss 7 -c copy`` makes: 50 frames stored, the first 18 before the edit list's start."""
    p = _h264(tmp_path / "cut.mp4", n=50, shift=18)
    frames = iter_frames(p)
    times = [t for t, _ in frames]
    assert frames.announced_frames == 50 and len(times) == 32  # the old check: 36% missing, "truncated"
    assert frames.duration == pytest.approx(3.2) and probe(p).duration == pytest.approx(3.2)


@pytest.mark.parametrize("shift", [-7, 25])
def test_timestamp_offsets_and_b_frames(tmp_path, shift):
    p = _h264(tmp_path / f"offset{shift}.mp4", n=50, shift=shift, bf=2)
    frames = iter_frames(p)
    times = [t for t, _ in frames]
    want = 50 - max(0, shift)
    assert len(times) == want and frames.duration == pytest.approx(want / 10)
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)


def test_an_avi_with_drop_frames_is_complete(tmp_path):
    p = _avi_with_drops(tmp_path / "drops.avi")
    frames = iter_frames(p)
    times = np.array([t for t, _ in frames])
    assert frames.announced_frames == 45 and len(times) == 30  # 15 zero-size frames announced
    assert times[10] == pytest.approx(1.5) and frames.duration == pytest.approx(4.5)  # gaps kept


def test_a_cut_matroska_is_still_truncated(tmp_path, make_video):
    data = make_video("hostile_mkv.mkv", [(3.0, "red"), (3.0, "blue")]).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match=r"truncated or corrupt video: decoding stopped at .* of the 6.00 s"):
        for _ in iter_frames(cut):
            pass


# -- MPEG transport streams ------------------------------------------------------------------------------
def test_truncated_mpeg_ts_is_detected_where_the_stream_says_so(tmp_path):
    whole = _ts_with_audio(tmp_path / "whole.ts")
    assert sum(1 for _ in iter_frames(whole)) == 40  # a complete stream passes
    data = whole.read_bytes()
    inside_packet = tmp_path / "mid_packet.ts"
    inside_packet.write_bytes(data[: len(data) // 188 // 2 * 188 + 75])
    with pytest.raises(VideoError, match="truncated MPEG-TS: the file ends 75 bytes into a 188-byte"):
        iter_frames(inside_packet)  # refused before decoding: it would index as a shorter video
    audio_pid = 0x101
    start = _last_pes_start(data, audio_pid)
    inside_pes = tmp_path / "mid_pes.ts"
    inside_pes.write_bytes(data[: start + 2 * 188])  # cut on a packet boundary, inside an audio PES packet
    with pytest.raises(VideoError, match="the last PES packet of stream 0x101 ends after"):
        iter_frames(inside_pes)
    text = tmp_path / "notes.ts"  # a TypeScript file picked up by a folder ingest
    text.write_text("export const x = 1;\n" * 50)
    with pytest.raises(VideoError, match="not a valid MPEG transport stream"):
        iter_frames(text)


# -- segment settings ------------------------------------------------------------------------------------
def test_segment_length_has_a_floor_and_a_video_a_ceiling(tmp_path, scenes_video):
    for bad in (1e-300, 0.0, MIN_SEGMENT_SECONDS / 2, float("nan")):
        with pytest.raises(ValueError, match="at least 0.1"):
            FixedSegmenter(bad)
    with pytest.raises(ValueError, match="at least 0.1"):
        Engine(tmp_path / "i", encoder=ColorEncoder(), segmenter="fixed:1e-300")

    class Tiny(FixedSegmenter):  # past the setting's floor: the per-video ceiling still stops it
        def __init__(self):
            self.seconds = 1e-6

    t0 = time.monotonic()
    with pytest.raises(VideoError, match=f"more than the limit of {MAX_SEGMENTS_PER_VIDEO} per video"):
        list(iter_clips(scenes_video.path, Tiny(), FrameSampler()))
    assert time.monotonic() - t0 < 20


def test_cli_fixed_too_short_is_refused(tmp_path, scenes_video, capsys):
    from maxsim.cli import main

    code = _finishes(lambda: main(["ingest", str(tmp_path / "i"), str(scenes_video.path), "--fixed", "1e-300",
                                   "--encoder", "color-test", "-q"]), 60)
    assert code == 2 and "at least 0.1" in capsys.readouterr().err


def test_the_cli_prints_names_that_are_not_utf8(tmp_path, make_video):
    """Even with a strict UTF-8 stdout: the names print as their own bytes, the ingest still commits."""
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.mp4").write_bytes(make_video("hostile_cli.mp4", [(2.0, "red")]).read_bytes())
    with open(os.path.join(os.fsencode(folder), BAD_NAME), "wb") as f:
        f.write(b"not a video at all" * 100)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # errors="strict" unless the CLI says otherwise
    run = subprocess.run([sys.executable, "-m", "maxsim.cli", "ingest", str(tmp_path / "idx"), str(folder),
                          "--encoder", "color-test", "-q"], env=env, capture_output=True, timeout=300)
    assert run.returncode == 1, run.stderr.decode(errors="replace")  # one file failed, the other committed
    assert b"ingested 1 file" in run.stdout
    assert b"FAILED  " + os.fsencode(folder) + b"/" + BAD_NAME in run.stdout
