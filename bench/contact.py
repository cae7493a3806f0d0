"""Contact sheets: frames of a video at given times, labelled with their time, in one PNG grid.

Used to check reference cuts and query windows by eye (``python -m maxsim.bench.contact VIDEO OUT.png
--every 5`` or ``--around 10.0,14.08``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def frames_at(path: str | Path, times: Sequence[float], width: int = 200) -> list[tuple[float, np.ndarray]]:
    """The first decoded frame at or after each time (one forward decode pass), as RGB ``width`` wide."""
    import av
    from PIL import Image

    want = sorted(float(t) for t in times)
    out: list[tuple[float, np.ndarray]] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        i = 0
        for frame in c.decode(stream):
            if i >= len(want):
                break
            t = float(frame.time or 0.0)
            while i < len(want) and t >= want[i] - 1e-6:
                img = frame.to_image()
                h = max(1, round(img.height * width / img.width))
                out.append((t, np.asarray(img.resize((width, h), Image.BILINEAR))))
                i += 1
    return out


def duration(path: str | Path) -> float:
    """The container's duration in seconds (0.0 when it does not say)."""
    import av

    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1e6


def contact_sheet(path: str | Path, times: Sequence[float], out: str | Path, cols: int = 8,
                  width: int = 200) -> Path:
    """Write a PNG grid of the frames at ``times``, each labelled with its presentation time."""
    from PIL import Image, ImageDraw

    shots = frames_at(path, times, width)
    if not shots:
        raise ValueError(f"no frame of {path} at the times asked for")
    h = max(f.shape[0] for _, f in shots) + 14
    rows = -(-len(shots) // cols)
    sheet = Image.new("RGB", (cols * (width + 4), rows * (h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (t, f) in enumerate(shots):
        x, y = (k % cols) * (width + 4), (k // cols) * (h + 4)
        sheet.paste(Image.fromarray(f), (x, y + 14))
        draw.text((x + 2, y + 1), f"{t:.2f}s", fill="black")
    out = Path(out)
    sheet.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--every", type=float, help="one frame every SECONDS")
    p.add_argument("--start", type=float, default=0.0)
    p.add_argument("--end", type=float, default=None)
    p.add_argument("--around", help="comma-separated times: frames from 0.5 s before to 0.5 s after each")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--width", type=int, default=200)
    a = p.parse_args(argv)
    if a.around:
        times = [c + d for c in (float(x) for x in a.around.split(",")) for d in np.arange(-0.5, 0.55, 0.125)]
        times = [t for t in times if t >= 0]
    else:
        end = a.end if a.end is not None else duration(a.video)
        times = list(np.arange(a.start, end, a.every or 1.0))[:400]
    contact_sheet(a.video, times, a.out, a.cols, a.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
