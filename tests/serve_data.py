"""A small index of browser-playable colour-scene videos, shared by the retriever, server and page tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maxsim.engine import Engine
from tests.color_encoder import ColorEncoder
from tests.webm import write_webm

# a.webm: red 0-4 s, blue 4-8 s, green 8-12 s; b.webm: yellow 0-4 s, red 4-8 s (fixed 4 s segments)
SCENES = {
    "a.webm": [(4.0, "red"), (4.0, "blue"), (4.0, "green")],
    "b.webm": [(4.0, "yellow"), (4.0, "red")],
}


@dataclass
class Corpus:
    root: Path  # folder holding the videos (and the ingest root in server tests)
    index: Path
    videos: dict[str, str]  # file name -> absolute path

    def engine(self) -> Engine:
        return Engine(self.index, encoder=ColorEncoder(), segmenter="fixed:4")


def make_corpus(tmp: Path, extra: dict[str, list] | None = None) -> Corpus:
    """Write the videos under ``tmp/videos`` and ingest them into ``tmp/index``."""
    root = tmp / "videos"
    videos = {}
    for name, scenes in {**SCENES, **(extra or {})}.items():
        videos[name] = str(write_webm(root / name, scenes).resolve())
    corpus = Corpus(root, tmp / "index", videos)
    report = corpus.engine().ingest([videos[n] for n in SCENES], progress=False)
    assert report.ok and len(report.ingested) == len(SCENES), str(report)
    return corpus
