"""Synthetic videos with known scenes, for tests, examples and the benchmark's evaluation set."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# Named colours (RGB) that a synthetic scene can show; queries refer to them by name.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 40),
    "magenta": (210, 40, 200),
    "cyan": (40, 210, 220),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
    "orange": (240, 140, 20),
    "purple": (110, 40, 160),
}


# Codec per container: what browsers play (H.264 in MP4/MOV/MKV, VP9 in WebM), MPEG-4 Part 2 for AVI.
_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
           ".avi": "mpeg4"}


def write_video(
    path: str | Path,
    scenes: Sequence[tuple[Any, ...]],
    fps: float = 10.0,
    size: tuple[int, int] = (96, 64),
    noise: int = 6,
    seed: int = 0,
) -> Path:
    """Write a video whose consecutive scenes last ``seconds`` each and show one colour.

    ``scenes`` is a list of ``(seconds, colour)`` with a colour name from :data:`COLORS` or an RGB
    triple; ``(seconds, colour, (box_colour, (x0, y0, x1, y1)))`` also paints a box of another colour over
    that part of the frame (fractions of its width and height), for things that fill part of a frame. Each
    frame carries a little noise and a moving bar so that it is not a still image; the cuts
    fall at the cumulative scene durations (rounded to whole frames). The container follows the suffix:
    ``.mp4`` (also ``.m4v``, ``.mov``, ``.mkv``) holds H.264 and ``.webm`` VP9, which browsers play (the
    search page's player); ``.avi`` holds MPEG-4 Part 2. Written with PyAV at near-lossless quality, so
    colours survive the round trip. Returns the path.
    """
    import av  # a dependency of maxsim; imported here so that importing this module stays light

    path = Path(path)
    codec = _CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"write_video: cannot write {path.name!r}; expected a suffix among "
                         f"{', '.join(_CODECS)}")
    w, h = (int(x) for x in size)
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise ValueError(f"write_video: size {size!r} must be even and at least 2x2 (4:2:0 video)")
    if not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise ValueError(f"write_video: fps must be in (0, 1000], got {fps!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    rng = np.random.default_rng(seed)
    # no B-frames: every frame's decode order is its display order and the MP4 needs no edit list
    options = {"crf": "10", "preset": "veryfast", "bf": "0"} if codec == "libx264" else {}
    if codec == "libvpx-vp9":
        options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    container = av.open(str(path), mode="w")
    try:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.qscale = 2
        frame_no = 0
        elapsed = 0.0
        for seconds, colour, *box in scenes:
            rgb = COLORS[colour] if isinstance(colour, str) else tuple(colour)
            base = np.empty((h, w, 3), np.int16)
            base[:] = rgb
            if box:
                (c, (x0, y0, x1, y1)), = box
                base[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = (
                    COLORS[c] if isinstance(c, str) else tuple(c))
            elapsed += seconds
            while frame_no < round(elapsed * fps):
                img = base + rng.integers(-noise, noise + 1, size=(h, w, 3), dtype=np.int16)
                x = (frame_no * 3) % w
                img[:, x : x + 2] += 25
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = frame_no
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
                frame_no += 1
        container.mux(stream.encode(None))
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)
        raise
    container.close()
    return path


def random_scenes(
    rng: np.random.Generator | int = 0,
    seconds: float | None = None,
    scene_seconds: tuple[float, float] = (2.0, 6.0),
    colours: Sequence[str] | None = None,
    fps: float | None = None,
) -> list[tuple[float, str]]:
    """Scenes for :func:`write_video` whose lengths are drawn uniformly from ``scene_seconds`` (rounded to
    whole frames at ``fps`` when given), from ``rng`` (a generator, or a seed).

    With ``colours``: one scene per colour, in that order. Otherwise scenes of random :data:`COLORS`,
    never the same colour twice in a row, until ``seconds`` are filled (the last scene is cut to end
    there).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lo, hi = (float(x) for x in scene_seconds)
    if not 0 < lo <= hi:
        raise ValueError(f"scene_seconds must be (low, high) with 0 < low <= high, got {scene_seconds!r}")

    def length() -> float:
        s = float(rng.uniform(lo, hi))
        return round(s * fps) / fps if fps else s

    if colours is not None:
        return [(length(), str(c)) for c in colours]
    if seconds is None or seconds <= 0:
        raise ValueError(f"random_scenes needs colours or a positive number of seconds, got {seconds!r}")
    scenes: list[tuple[float, str]] = []
    total, prev = 0.0, None
    while total < seconds - 1e-9:
        s = min(length(), seconds - total)
        colour = str(rng.choice([n for n in COLORS if n != prev]))
        scenes.append((s, colour))
        total, prev = total + s, colour
    return scenes


def cut_times(scenes: Sequence[tuple[float, object]], fps: float = 10.0) -> list[float]:
    """The times (seconds) at which :func:`write_video` switches scene, frame-rounded."""
    out, elapsed = [], 0.0
    for seconds, _ in scenes[:-1]:
        elapsed += seconds
        out.append(round(elapsed * fps) / fps)
    return out
