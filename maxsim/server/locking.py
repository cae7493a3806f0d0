"""What the server's threads must not do at the same time: move the engine to another index version,
and call the encoder.

The server has three kinds of threads touching one :class:`~maxsim.Engine`: the search thread (searches,
and following commits of other processes), the ingest-job thread, and request threads (delete). Two
rules keep them apart:

- :class:`VersionGuard`: every change of the version the engine has open (a refresh, or an ingest or
  delete, which open the version they commit) runs under one lock, and afterwards the engine is moved
  forward to the latest committed version if it is behind. So the open version only ever moves forward,
  never back to an older one that a slower, concurrent refresh had read. Searches never wait for it: a
  search reads the engine's open snapshot once and scores that.
- :class:`~maxsim.integrations.serial.SerialEncoder`: the engine's encoder is wrapped so that its
  ``encode_*`` calls run one at a time (models and tokenizers are not safe to call from two threads at
  once). An ingest encodes a few clips per call, so a search waits at most one such call for the encoder,
  and scoring runs concurrently with the ingest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from maxsim.index.manifest import read_manifest
from maxsim.integrations.serial import SerialEncoder, serialize_encoder

__all__ = ["Busy", "SerialEncoder", "VersionGuard", "serialize_encoder"]


class Busy(RuntimeError):
    """The index is being changed by this server (an ingest job) and the caller would not wait."""


class VersionGuard:
    """Serialises the changes of the version ``engine`` has open, and only ever moves it forward."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._lock = threading.Lock()

    def refresh(self, wait: bool = False) -> bool:
        """Move the engine to the latest committed version if it is behind. Without ``wait``, does nothing
        (returns False) while another change is under way: the engine keeps searching its open version."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            self._forward()
        finally:
            self._lock.release()
        return True

    @contextmanager
    def changing(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the guard around a call that opens a new version (``engine.ingest``, ``engine.delete``);
        after it, the engine is moved forward to the latest version if another process committed since.
        ``timeout``: seconds to wait for a change under way (None: as long as it takes), then :class:`Busy`.
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise Busy("the index is being written by an ingest job of this server")
        try:
            yield
        finally:
            try:
                self._forward()
            except Exception:  # a half-written or vanished index: keep the version open now
                pass
            finally:
                self._lock.release()

    def _forward(self) -> None:
        engine = self.engine
        latest = read_manifest(engine.path).version
        if latest > engine.version:
            try:
                engine.refresh()
            except PermissionError:  # opened at a fixed version= : it stays there
                pass
