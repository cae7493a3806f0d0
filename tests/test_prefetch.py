"""The decode pass's background thread: every frame, in order, once; errors after the frames before them;
a bounded read-ahead; closing stops it."""

from __future__ import annotations

import threading
import time

import pytest

from maxsim.media.prefetch import DecodedFrames


class FakeReader:
    """Yields ``(i / 10, i)`` for ``n`` frames, then None; raises ValueError at frame ``fail_at``; sleeps
    ``delay`` seconds a read."""

    path = "fake.mp4"
    fps = 10.0
    announced = 0
    timeline = 0.0

    def __init__(self, n: int, fail_at: int | None = None, delay: float = 0.0):
        self.total = n
        self.n = 0
        self.fail_at = fail_at
        self.delay = delay
        self.released = threading.Event()

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_at is not None and self.n == self.fail_at:
            raise ValueError(f"bad frame {self.n}")
        if self.n >= self.total:
            return None
        self.n += 1
        return (self.n - 1) / 10, self.n - 1

    def end(self) -> float:
        return self.n / 10

    def release(self) -> None:
        self.released.set()


@pytest.mark.parametrize("prefetch", [0, 1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("n", [0, 1, 7, 50])
def test_every_frame_in_order_once(prefetch, n):
    frames = DecodedFrames(FakeReader(n), prefetch=prefetch)
    assert [i for _, i in frames] == list(range(n))
    assert next(frames, None) is None  # stays exhausted
    assert frames.n_frames == n and frames.duration == pytest.approx(n / 10)


@pytest.mark.parametrize("prefetch", [0, 2, 8])
def test_an_error_comes_after_the_frames_before_it(prefetch):
    frames = DecodedFrames(FakeReader(50, fail_at=13), prefetch=prefetch)
    got = []
    with pytest.raises(ValueError, match="bad frame 13"):
        for _, i in frames:
            got.append(i)
    assert got == list(range(13))
    assert next(frames, None) is None


@pytest.mark.parametrize("prefetch", [1, 2, 4, 8, 16])
def test_read_ahead_is_bounded(prefetch):
    reader = FakeReader(10_000)
    frames = DecodedFrames(reader, prefetch=prefetch)
    next(frames)
    deadline = time.monotonic() + 5.0
    last = -1
    while time.monotonic() < deadline:  # until the producer stops reading (blocked on a full queue)
        time.sleep(0.05)
        if reader.n == last:
            break
        last = reader.n
    assert reader.n == 1 + prefetch + 1  # the frame in hand, the queue, the one waiting to go in
    frames.close()
    assert reader.released.wait(2.0) and not frames._thread.is_alive()
    assert next(frames, None) is None


def test_close_mid_video_stops_the_thread():
    reader = FakeReader(10_000, delay=0.001)
    frames = DecodedFrames(reader, prefetch=8)
    for _ in range(20):
        next(frames)
    frames.close()
    assert not frames._thread.is_alive() and reader.released.is_set()
    stopped_at = reader.n
    time.sleep(0.05)
    assert reader.n == stopped_at
