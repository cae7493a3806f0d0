"""Synthetic videos with known scenes, for tests, examples and the benchmark's evaluation set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
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


def write_video(
    path: str | Path,
    scenes: Sequence[tuple[float, str | tuple[int, int, int]]],
    fps: float = 10.0,
    size: tuple[int, int] = (96, 64),
    noise: int = 6,
    seed: int = 0,
) -> Path:
    """Write an MP4 whose consecutive scenes last ``seconds`` each and show one colour.

    ``scenes`` is a list of ``(seconds, colour)`` with a colour name from :data:`COLORS` or an RGB
    triple. Each frame carries a little noise and a moving bar so that it is not a still image; the cuts
    fall at the cumulative scene durations (rounded to whole frames). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(seed)
    frame_no = 0
    elapsed = 0.0
    try:
        for seconds, colour in scenes:
            rgb = COLORS[colour] if isinstance(colour, str) else tuple(colour)
            base = np.empty((h, w, 3), np.int16)
            base[:] = rgb[::-1]  # OpenCV writes BGR
            elapsed += seconds
            while frame_no < round(elapsed * fps):
                img = base + rng.integers(-noise, noise + 1, size=(h, w, 3), dtype=np.int16)
                x = (frame_no * 3) % w
                img[:, x : x + 2] += 25
                writer.write(np.clip(img, 0, 255).astype(np.uint8))
                frame_no += 1
    finally:
        writer.release()
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
