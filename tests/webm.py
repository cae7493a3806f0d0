"""Synthetic colour-scene videos a browser can play: VP8 in WebM (Chromium does not decode OpenCV's mp4v)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2

from maxsim.testing.synthetic import write_video


def write_webm(
    path: str | Path, scenes: Sequence[tuple[float, str]], fps: float = 10.0, size: tuple[int, int] = (96, 64)
) -> Path:
    """:func:`maxsim.synthetic.write_video`'s scenes, re-encoded as VP8 WebM at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_video(Path(tmp) / "src.mp4", scenes, fps=fps, size=size)
        cap = cv2.VideoCapture(str(src))
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
        if not out.isOpened():
            raise OSError(f"this OpenCV build cannot write VP8 WebM ({path})")
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                out.write(frame)
        finally:
            cap.release()
            out.release()
    return path
