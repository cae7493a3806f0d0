"""The decode pass's iterator: frames from a reader, decoded in a background thread when asked to.

A background thread lets decoding go on while the consumer works on the frames already decoded (the
single decode pass's cut detection and sampling, or an encoder in the same process), up to ``prefetch``
frames ahead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np


class Reader(Protocol):
    """What :class:`DecodedFrames` needs of a reader (:class:`~maxsim.media.video.FrameReader`)."""

    path: str
    fps: float
    announced: int
    timeline: float
    n: int

    def read(self) -> tuple[float, Any] | None: ...

    def end(self) -> float: ...

    def release(self) -> None: ...


_END = object()


def _produce(reader: Reader, items: queue.SimpleQueue, slots: queue.SimpleQueue,
             stop: threading.Event) -> None:
    """Background decoding: frames into ``items``, each once a free slot is taken from ``slots``, then
    _END or the exception that ended it."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                continue
            items.put(item)
            return True
        return False

    try:
        while not stop.is_set():
            item = reader.read()
            if item is None or not put(item):
                break
        put(_END)
    except BaseException as e:  # handed to the consumer, raised there
        put(e)
    finally:
        reader.release()


class DecodedFrames(Iterator[tuple[float, np.ndarray]]):
    """The single decode pass over one video (see :func:`~maxsim.media.video.iter_frames`); closes the
    decoder when done."""

    def __init__(self, reader: Reader, prefetch: int = 0):
        self._reader = reader
        self.path = reader.path
        self.fps = reader.fps  # the container's average frame rate, 0.0 if unknown
        self.announced_frames = reader.announced  # frame count the container announces, 0 if unknown
        self.timeline = reader.timeline  # seconds the container announces (see announced_timeline)
        self._prefetch = max(0, int(prefetch))
        # Frames go through a SimpleQueue (C) and the read-ahead is bounded by ``prefetch`` free-slot tokens
        # in a second one: a hand-over per frame of every video, without queue.Queue's Python-level locking.
        self._items: queue.SimpleQueue | None = None
        self._slots: queue.SimpleQueue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    @property
    def n_frames(self) -> int:
        """Frames decoded so far."""
        return self._reader.n

    @property
    def duration(self) -> float:
        """End time (s) of the last frame decoded so far (its time plus its interval); 0.0 before."""
        return self._reader.end() if self._reader.n else 0.0

    def __iter__(self) -> DecodedFrames:
        return self

    def __next__(self) -> tuple[float, np.ndarray]:
        if self._finished:
            raise StopIteration
        if not self._prefetch:
            try:
                item = self._reader.read()
            except BaseException:
                self._finished = True
                raise
        else:
            item = self._next_prefetched()
        if item is None:
            self._end()
            raise StopIteration
        return item

    def _next_prefetched(self) -> tuple[float, np.ndarray] | None:
        if self._thread is None:
            self._items, self._slots = queue.SimpleQueue(), queue.SimpleQueue()
            for _ in range(self._prefetch):
                self._slots.put(None)
            self._thread = threading.Thread(
                target=_produce,
                args=(self._reader, self._items, self._slots, self._stop),
                daemon=True,
                name=f"decode {os.path.basename(self.path)}",
            )
            self._thread.start()
        assert self._items is not None and self._slots is not None
        got = self._items.get()
        self._slots.put(None)
        if got is _END:
            return None
        if isinstance(got, BaseException):
            self._end()
            raise got
        return got

    def _end(self) -> None:
        self._finished = True
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """Stop decoding and release the decoder."""
        self._finished = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._reader.release()

    def __enter__(self) -> DecodedFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


__all__ = ["DecodedFrames", "Reader"]
