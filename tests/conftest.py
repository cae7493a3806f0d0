"""Shared fixtures: a session-wide folder of small synthetic videos, generated once on demand."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from maxsim.synthetic import cut_times, write_video


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """``make_video(name, scenes, fps=10, size=(96, 64))`` -> path of an MP4 written once per session."""
    root = tmp_path_factory.mktemp("videos")
    made: dict[str, Path] = {}

    def make(name: str, scenes, fps: float = 10.0, size: tuple[int, int] = (96, 64), **kw) -> Path:
        if name not in made:
            made[name] = write_video(root / name, scenes, fps=fps, size=size, **kw)
        return made[name]

    return make


@dataclass(frozen=True)
class SceneVideo:
    path: Path
    scenes: list
    cuts: list[float]  # true cut times (s)
    duration: float
    fps: float  # average
    times: np.ndarray | None = None  # frame times (s), given where they are not k / fps


@pytest.fixture(scope="session")
def scenes_video(make_video) -> SceneVideo:
    """Five colour scenes, cuts at 2.0, 3.5, 6.5 and 7.7 s, 10 s at 10 fps, 96x64."""
    scenes = [(2.0, "red"), (1.5, "blue"), (3.0, "green"), (1.2, "yellow"), (2.3, "white")]
    path = make_video("scenes.mp4", scenes)
    return SceneVideo(path, scenes, cut_times(scenes, 10.0), 10.0, 10.0)


@pytest.fixture(scope="session")
def vfr_video(make_video, tmp_path_factory) -> SceneVideo:
    """Variable frame rate: 40 frames, 20 at 0.1 s, 10 at 0.3 s, 10 at 0.05 s (5.5 s); the colour cuts
    at frames 20 and 30 fall at 2.0 s and 5.0 s (frame_no / fps would put the second at 3.0 s)."""
    scenes = [(2.0, "red"), (1.0, "blue"), (1.0, "green")]
    cfr = make_video("vfr_source.mp4", scenes)
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    path.write_bytes(retime_mp4(cfr.read_bytes(), [(20, 0.1), (10, 0.3), (10, 0.05)]))
    times = np.concatenate([np.arange(20) * 0.1, 2 + np.arange(10) * 0.3, 5 + np.arange(10) * 0.05])
    return SceneVideo(path, scenes, [2.0, 5.0], 5.5, 40 / 5.5, times)


# -- MP4 box surgery (ISO-BMFF): lets tests build variable-frame-rate videos without FFmpeg tools


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield ``(type, offset, header_size, size)`` of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    i = start
    while i < end:
        size, typ = struct.unpack(">I4s", data[i : i + 8])
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = end - i
        yield typ, i, hdr, size
        i += size


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _parse(data: bytes) -> list:
    return [
        [t, _parse(data[i + h : i + s]) if t in _CONTAINERS else bytearray(data[i + h : i + s])]
        for t, i, h, s in mp4_boxes(data)
    ]


def _serialize(boxes: list) -> bytes:
    out = bytearray()
    for t, body in boxes:
        payload = _serialize(body) if isinstance(body, list) else bytes(body)
        out += struct.pack(">I4s", 8 + len(payload), t) + payload
    return bytes(out)


def retime_mp4(data: bytes, runs: list[tuple[int, float]]) -> bytes:
    """Give an OpenCV-written MP4 (index after the payload) variable frame durations: ``runs`` of
    ``(n_frames, seconds_per_frame)`` replace its constant-rate time-to-sample table."""
    boxes = _parse(data)

    def find(tree: list, typ: bytes) -> list:
        found = []
        for t, body in tree:
            if t == typ:
                found.append(body)
            if isinstance(body, list):
                found += find(body, typ)
        return found

    (mdhd,) = find(boxes, b"mdhd")
    assert mdhd[0] == 0, "version-0 mdhd expected"
    (timescale,) = struct.unpack(">I", mdhd[12:16])
    entries = [(n, round(dt * timescale)) for n, dt in runs]
    total = sum(n * d for n, d in entries)
    (stts,) = find(boxes, b"stts")
    stts[:] = struct.pack(">II", 0, len(entries)) + b"".join(struct.pack(">II", n, d) for n, d in entries)
    mdhd[16:20] = struct.pack(">I", total)
    ((mvhd),) = find(boxes, b"mvhd")
    (movie_scale,) = struct.unpack(">I", mvhd[12:16])
    movie_total = round(total / timescale * movie_scale)
    mvhd[16:20] = struct.pack(">I", movie_total)
    for tkhd in find(boxes, b"tkhd"):
        tkhd[20:24] = struct.pack(">I", movie_total)
    for elst in find(boxes, b"elst"):
        elst[8:12] = struct.pack(">I", movie_total)
    out = _serialize(boxes)
    assert [t for t, _ in boxes].index(b"mdat") < [t for t, _ in boxes].index(b"moov")  # offsets unchanged
    return out
