"""Pictures of why a hit matched: the best frame decoded again, with a heatmap of the regions its query
tokens matched and the tokens listed (PNG, drawn with Pillow), and a moment's thumbnail from its best frame.

:func:`render_explanation` draws on a frame given as an array (no decoding: testable on its own);
:func:`explain_hit` decodes the hit's best frame from its video (one seek, :func:`~maxsim.media.frames_at`)
and renders it. The heatmap sums, per cell of the segment's token grid, the contributions of the query
tokens whose best match lies in that cell of that frame; a hit whose token positions are unknown (pooled
tokens, frame-level encoders, old indexes) gets no heatmap, only the list, and says so on the image.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maxsim.errors import VideoError
from maxsim.media.frames import jpeg_thumbnail
from maxsim.media.video import frames_at
from maxsim.types import Evidence, Hit

HEAT_RGB = (255, 40, 0)
MIN_SIDE = 480  # smaller frames are enlarged (by a whole factor) so that the labels stay legible


def best_frame(video: str | os.PathLike, time: float) -> np.ndarray:
    """The RGB frame of ``video`` shown at ``time`` seconds (a frame time an index keeps gives exactly that
    frame). Raises :class:`~maxsim.errors.VideoError` for a video that is gone or unreadable."""
    (_, bgr), = frames_at(video, [float(time)])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_jpeg(video: str | os.PathLike, time: float) -> bytes | None:
    """A JPEG thumbnail of the frame at ``time`` (None when the video cannot be read any more)."""
    try:
        return jpeg_thumbnail(best_frame(video, time))
    except (VideoError, OSError, ValueError):
        return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _label(e: Evidence) -> str:
    return e.label if e.label else f"#{e.token}"


def render_explanation(frame_rgb: np.ndarray, hit: Hit) -> bytes:
    """A PNG of ``frame_rgb`` (the hit's best frame; the PNG has its size, enlarged by a whole factor when
    its longer side is under :data:`MIN_SIDE` pixels) with a heatmap of the cells its
    query tokens matched on that frame, each hot cell labelled with its tokens, and a caption listing the
    query tokens with their contributions (those that matched on other frames marked with their time)."""
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    h, w = frame.shape[:2]
    factor = -(-MIN_SIDE // max(h, w, 1))
    img = Image.fromarray(frame).convert("RGBA")
    if factor > 1:
        h, w = h * factor, w * factor
        img = img.resize((w, h), Image.Resampling.NEAREST)
    here = [e for e in hit.evidence if abs(e.time - hit.best_time) < 1e-6]
    cells: dict[tuple[int, int], list[Evidence]] = {}
    if hit.grid is not None:
        rows, cols = hit.grid
        heat = np.zeros((rows, cols), dtype=np.float32)
        for e in here:
            if e.row is not None and e.col is not None:
                heat[e.row, e.col] += max(e.contribution, 0.0)
                cells.setdefault((e.row, e.col), []).append(e)
        if heat.max() > 0:
            alpha = Image.fromarray((heat / heat.max() * 150).astype(np.uint8), "L").resize(
                (w, h), Image.Resampling.BILINEAR if rows * cols > 1 else Image.Resampling.NEAREST)
            overlay = Image.new("RGBA", (w, h), (*HEAT_RGB, 0))
            overlay.putalpha(alpha)
            img = Image.alpha_composite(img, overlay)
    draw = ImageDraw.Draw(img)
    size = max(10, min(w, h) // 24)
    font = _font(size)
    if hit.grid is not None:
        rows, cols = hit.grid
        for (r, c), es in cells.items():
            x0, y0 = c * w / cols, r * h / rows
            draw.rectangle([x0, y0, x0 + w / cols - 1, y0 + h / rows - 1], outline=(*HEAT_RGB, 255),
                           width=max(1, size // 8))
            text = ", ".join(dict.fromkeys(_label(e) for e in es))
            draw.text((x0 + 3, y0 + 2), text, fill=(255, 255, 255, 255), font=font,
                      stroke_width=max(1, size // 10), stroke_fill=(0, 0, 0, 255))
    lines = [f"best frame {hit.best_time:.2f} s   score {hit.score:.3f}"]
    if hit.grid is None:
        lines.append("token positions not recorded: frame only")
    for e in sorted(hit.evidence, key=lambda e: -e.contribution)[:6]:
        where = "here" if e in here else f"at {e.time:.2f} s"
        cell = f" r{e.row} c{e.col}" if e.row is not None and e in here else ""
        lines.append(f"{_label(e)}: {e.contribution:+.3f} {where}{cell}")
    if len(hit.evidence) > 6:
        lines.append(f"... {len(hit.evidence) - 6} more query tokens")
    band = (size + 4) * len(lines) + 6
    shade = Image.new("RGBA", (w, min(band, h)), (0, 0, 0, 160))
    img.alpha_composite(shade, (0, max(0, h - band)))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((6, h - band + 4 + i * (size + 4)), line, fill=(255, 255, 255, 255), font=font)
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def explain_hit(hit: Hit) -> bytes:
    """:func:`render_explanation` of ``hit`` on its best frame, decoded from its video. Raises
    :class:`~maxsim.errors.VideoError` when the video cannot be read; ValueError for a hit without evidence
    (a hit from a search that did not compute it, e.g. one rebuilt from JSON without it)."""
    if not hit.evidence:
        raise ValueError(f"hit {hit.video}@{hit.start:.2f}-{hit.end:.2f}: no evidence to explain "
                         "(search again to get the hit with its evidence)")
    return render_explanation(best_frame(hit.video, hit.best_time), hit)
