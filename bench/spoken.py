"""The spoken-content part of the synthetic set and its evaluation per channel.

``maxsim-bench dataset`` with ``spoken = true`` gives every scene a subtitle line (a sidecar
``videos/<vid>.srt``), drawn without repetition from :data:`LINES`, said from 10% to 90% of the scene.
Each line gets a query that paraphrases it (no colour words, few shared words), whose relevant window is
the line's time: ``ground_truth_spoken.jsonl``. ``maxsim-bench eval`` with a ``transcript_encoder``
indexes the subtitles and reports, for each of ``channels`` (``visual``, ``transcript``,
``visual,transcript`` fused), the recall and mAP of the visual queries and of the spoken ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from maxsim.bench.groundtruth import write_ground_truth
from maxsim.bench.metrics import GroundTruth, Prediction, evaluate

SPOKEN_GROUND_TRUTH = "ground_truth_spoken.jsonl"

# (what is said, a paraphrase a user would search with)
LINES = [
    ("the fat bunny crawls out of his hole", "a big rabbit comes out of its burrow"),
    ("she explains the budget for next year", "the financial plan for the coming year is described"),
    ("the train leaves from platform nine", "the railway departure is at track 9"),
    ("please remember to lock the door", "don't forget to secure the entrance"),
    ("the weather will be sunny tomorrow", "clear skies are forecast for the next day"),
    ("our team won the championship last night", "we took the title in yesterday evening's final"),
    ("add two cups of flour and stir slowly", "mix in some flour gently, about two cups"),
    ("the patient needs rest and plenty of water", "the sick person should sleep and drink fluids"),
    ("turn left at the second traffic light", "take a left turn at the next set of signals"),
    ("the concert was cancelled because of the storm", "bad weather called off the music show"),
    ("my grandmother grew up on a small farm", "grandma spent her childhood in the countryside"),
    ("the printer on the third floor is broken again", "the copier upstairs stopped working once more"),
    ("scientists discovered a new species of frog", "researchers found an unknown kind of amphibian"),
    ("the stock market fell sharply this morning", "shares dropped steeply early today"),
    ("we should plant the tomatoes in spring", "tomato seedlings belong in the garden in april"),
    ("the museum opens at ten on weekdays", "the gallery's doors open at 10 am monday to friday"),
    ("he forgot his passport at the hotel", "he left his travel documents behind where he stayed"),
    ("the children built a sandcastle on the beach", "kids made a castle out of sand by the sea"),
    ("the bridge will be closed for repairs", "the crossing shuts down for maintenance work"),
    ("the cat is sleeping on the warm laptop", "a kitten naps on top of the heated computer"),
    ("the pilot announced a short delay", "the captain said the flight will be a bit late"),
    ("the library has thousands of old maps", "the archive holds a huge collection of historic charts"),
    ("the soup needs more salt and pepper", "the broth should be seasoned a bit more"),
    ("the election results will be announced tonight", "we'll know who won the vote this evening"),
]


def _clock(t: float) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def write_spoken(videos: list[dict[str, Any]], windows: dict[str, list[tuple[float, float]]], vdir: Path,
                 out: Path, seed: int) -> tuple[Path, int]:
    """Write a sidecar ``<vid>.srt`` per video (one line per scene) and the spoken ground truth; returns
    its path and the number of lines."""
    n = sum(len(windows[v["vid"]]) for v in videos)
    if n > len(LINES):
        raise ValueError(f"{n} scenes need {n} distinct spoken lines; the bank has {len(LINES)}")
    order = np.random.default_rng(seed + 2).permutation(len(LINES))
    gts, used = [], 0
    for v in videos:
        durations = windows[v["vid"]]
        blocks = []
        for j, (s, e) in enumerate(durations):
            said, paraphrase = LINES[int(order[used])]
            used += 1
            a, b = s + 0.1 * (e - s), s + 0.9 * (e - s)
            blocks.append(f"{j + 1}\n{_clock(a)} --> {_clock(b)}\n{said}\n")
            gts.append(GroundTruth(f"s{len(gts)}", paraphrase, v["vid"], [(round(a, 3), round(b, 3))],
                                   durations[-1][1], {"said": said}))
        (vdir / f"{v['vid']}.srt").write_text("\n".join(blocks), encoding="utf-8")
    return write_ground_truth(out / SPOKEN_GROUND_TRUTH, gts), n


def channel_runs(engine: Any, sets: dict[str, list[GroundTruth]], channels: list[str], k: int,
                 ks: list[int], ious: list[float], by_path: dict[str, str]) -> list[dict[str, Any]]:
    """Recall and mAP of each query set searched with each channel setting (``"visual"``,
    ``"transcript"``, ``"visual,transcript"``): one row per (channel, query set)."""
    rows = []
    for ch in channels:
        chans = tuple(c.strip() for c in ch.split(",") if c.strip())
        for name, gts in sets.items():
            if not gts:
                continue
            preds: dict[str, list[Prediction]] = {}
            t = time.perf_counter()
            for g in gts:
                hits = engine.search(g.query, k=k, channels=chans, thumbnails=False)
                preds[g.qid] = [(by_path.get(h.video, h.video), h.start, h.end, h.score) for h in hits]
            ms = (time.perf_counter() - t) * 1e3 / len(gts)
            m = evaluate(preds, gts, ks=ks, ious=ious)
            rows.append({"channels": "+".join(chans), "queries": name, "n": len(gts),
                         **{f"R@{kk}": m["recall"][f"R@{kk} IoU=0.5"] for kk in ks},
                         "map": m["map"]["mean"], "ms": ms})
    return rows
