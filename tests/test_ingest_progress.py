"""Issue 19, points 4 and 5: a sparse-frame AVI is complete by its timestamps; progress inside one video
(seconds decoded, segments encoded, ETA) in the engine, the CLI and the server's ingest jobs."""

from __future__ import annotations

import re
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from maxsim import Engine, VideoProgress
from maxsim.errors import VideoError
from maxsim.media import iter_clips, iter_frames
from maxsim.server.jobs import IngestJobs
from maxsim.server.schemas import JobOut
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder

RATE = 15  # tree.avi's: 444 frame slots over 29.6 s


def sparse_avi(path: Path, slots: list[int], rate: int = RATE) -> Path:
    """MPEG-4 in AVI with frames only in ``slots`` of a ``rate`` fps timeline: the muxer fills the gaps
    with zero-size frames, which the container's frame count includes and no decoder returns."""
    c = av.open(str(path), "w")
    st = c.add_stream("mpeg4", rate=rate)
    st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
    for i, p in enumerate(slots):
        img = np.full((64, 96, 3), (i * 37) % 256, np.uint8)
        img[:, (i * 7) % 96] = 255
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = p, Fraction(1, rate)
        for pkt in st.encode(f):
            c.mux(pkt)
    for pkt in st.encode(None):
        c.mux(pkt)
    c.close()
    return path


def tree_like_slots() -> list[int]:
    """68 frames irregularly spread over 444 slots (29.6 s at 15 fps), the last one in the last slot."""
    rng = np.random.default_rng(19)
    inner = rng.choice(np.arange(1, 443), size=66, replace=False)
    return sorted({0, 443, *inner.tolist()})


def test_a_sparse_frame_avi_is_complete_by_its_timestamps(tmp_path):
    p = sparse_avi(tmp_path / "tree_like.avi", tree_like_slots())
    frames = iter_frames(p)
    times = np.array([t for t, _ in frames])
    assert frames.announced_frames == 444 and len(times) == 68  # the container announces the slots
    assert frames.timeline == pytest.approx(444 / RATE)
    assert times[-1] == pytest.approx(443 / RATE) and np.all(np.diff(times) > 0)
    clips = [c for c, _ in iter_clips(p, "fixed:5")]
    assert clips[-1].end == pytest.approx(29.6) and len(clips) == 6  # not past the 29.6 s announced
    report = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:5").ingest([p], progress=False)
    assert report.ok and report.ingested == [str(p)], str(report)  # through the decode worker too


def test_a_sparse_avi_ending_in_a_long_gap_is_not_told_to_have_overrun(tmp_path):
    # the last frames are 2 s apart: the interval of the last frame carries past the announced timeline
    slots = [*range(0, 60, 3), 90, 120, 150, 180]
    p = sparse_avi(tmp_path / "gappy.avi", slots)
    frames = iter_frames(p)
    assert len([t for t, _ in frames]) == len(slots)
    assert frames.timeline == pytest.approx(181 / RATE)


def test_a_truncated_avi_is_refused_without_a_time_past_its_duration(tmp_path):
    p = sparse_avi(tmp_path / "whole.avi", list(range(0, 300)))
    data = p.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as err:
        for _ in iter_frames(cut):
            pass
    msg = str(err.value)
    m = re.search(r"decoding stopped at ([\d.]+) s of the ([\d.]+) s", msg)
    assert m, msg
    assert float(m.group(1)) < float(m.group(2))


# -- progress inside a video ------------------------------------------------------------------------------
class SlowColor(ColorEncoder):
    """The colour encoder, made as slow per clip as a real model on a CPU is per batch (a little)."""

    def encode_clips(self, clips):
        time.sleep(0.05 * len(clips))
        return super().encode_clips(clips)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    scenes = [(4.0, c) for c in ("red", "blue", "green", "yellow", "white", "cyan", "magenta", "red")]
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", scenes, fps=10)


@pytest.mark.parametrize("isolate", [True, False])
def test_progress_inside_one_video(tmp_path, long_video, isolate):
    seen: list[dict] = []
    eng = Engine(tmp_path / "idx", encoder=SlowColor(), segmenter="fixed:2", batch_size=2)
    report = eng.ingest([long_video], progress=False, isolate=isolate,
                        on_progress=lambda p: seen.append(p.to_dict()))
    assert report.ok and report.segments == 16
    assert seen[-1]["fraction"] == 1.0 and seen[-1]["segments_encoded"] == 16 and seen[-1]["eta_s"] == 0.0
    assert all(s["duration_s"] == pytest.approx(32.0) for s in seen if s["duration_s"])
    middle = [s for s in seen if 0.0 < s["fraction"] < 1.0]
    assert len({s["fraction"] for s in middle}) >= 4  # many steps between 0 and done, not only the ends
    assert any(0 < s["segments_encoded"] < 16 and s["eta_s"] is not None and s["eta_s"] > 0 for s in middle)
    decoded = [s["decoded_s"] for s in seen]
    assert decoded == sorted(decoded) and 0 < decoded[len(decoded) // 2] < 32.0
    encoded = [s["segments_encoded"] for s in seen]
    assert encoded == sorted(encoded)


def test_the_cli_draws_a_bar_per_video_in_seconds(tmp_path, long_video, capsys, monkeypatch):
    from maxsim import cli

    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    code = cli.main(["ingest", str(tmp_path / "idx"), str(long_video), "--fixed", "2", "--encoder",
                     "tests.test_ingest_progress:SlowColor"])
    err = capsys.readouterr().err
    assert code == 0, err
    steps = {float(m) for m in re.findall(r"long\.mp4:.*?\| *([\d.]+)/32\.0 s", err)}
    assert len({s for s in steps if 0 < s < 32.0}) >= 2, err[-2000:]  # seconds decoded between 0 and the end
    assert re.search(r"segments \d+ encoded/\d+ cut", err), err[-2000:]
    assert re.search(r"<\d\d:\d\d", err)  # tqdm's ETA


def test_server_jobs_show_progress_inside_the_current_file(tmp_path, long_video):
    eng = Engine(tmp_path / "idx", encoder=SlowColor(), segmenter="fixed:2", batch_size=2)
    statuses: list[dict] = []
    jobs: IngestJobs

    def ingest(path, tell):
        def both(p: VideoProgress) -> None:
            tell(p)
            statuses.append(jobs.get(job.id).to_dict())  # what GET /jobs/{id} answers at this moment

        return eng.ingest([path], progress=False, on_progress=both)

    jobs = IngestJobs(ingest)
    job = jobs.submit([str(long_video)])
    deadline = time.monotonic() + 60
    while job.status in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.status == "done" and job.segments == 16
    assert job.to_dict()["video"] is None  # no file in progress once done
    videos = [s["video"] for s in statuses]
    assert all(v is not None and v["path"] == str(long_video) for v in videos)
    middle = [v for v in videos if 0.0 < v["fraction"] < 1.0]
    assert len({v["fraction"] for v in middle}) >= 4
    assert any(0 < v["segments_encoded"] < 16 and v["eta_s"] is not None for v in middle)
    for s in statuses:  # the response model accepts it (the OpenAPI schema documents it)
        JobOut(**s)
