"""A small index of browser-playable colour-scene videos, shared by the retriever, server and page tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` on a real uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    from maxsim.server.loadtest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"


class TrackingEncoder(ColorEncoder):
    """Records whether two encode calls ever overlapped; each call takes a while."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.active = 0
        self.overlaps = 0
        self.calls = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.calls += 1
            if self.active > 1:
                self.overlaps += 1

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def encode_texts(self, texts):
        self._enter()
        try:
            time.sleep(self.delay_s / 10)
            return super().encode_texts(texts)
        finally:
            self._leave()

    def encode_clips(self, clips):
        self._enter()
        try:
            time.sleep(self.delay_s)
            return super().encode_clips(clips)
        finally:
            self._leave()
