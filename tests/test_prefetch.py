"""The decode pass's background thread: every frame, in order, once; handed over in lists; errors after the
frames before them; a bounded read-ahead; closing stops it."""

from __future__ import annotations

import threading
import time

import pytest

from maxsim.media.prefetch import HANDOVER, DecodedFrames


class FakeReader:
    """Decodes ``n`` frames ``i`` timed ``i / 10``; raises ValueError when about to decode frame ``fail_at``
    (after handing over the frames before it); sleeps ``delay`` seconds a frame. ``decoded_n`` counts the
    frames decoded (the decode thread's side), ``n`` the frames timed (the consumer's); ``lists`` holds the
    sizes of the lists handed over."""

    path = "fake.mp4"
    fps = 10.0
    announced = 0
    timeline = 0.0

    def __init__(self, n: int, fail_at: int | None = None, delay: float = 0.0):
        self.total = n
        self.n = 0
        self.decoded_n = 0
        self.fail_at = fail_at
        self.delay = delay
        self.lists: list[int] = []
        self.finished = 0
        self.released = threading.Event()

    def decoded(self, batch: int):
        held: list[int] = []
        while True:
            if len(held) >= batch:
                self.lists.append(len(held))
                yield held
                held = []
            if self.delay:
                time.sleep(self.delay)
            if self.fail_at is not None and self.decoded_n == self.fail_at:
                if held:
                    yield held
                raise ValueError(f"bad frame {self.decoded_n}")
            if self.decoded_n >= self.total:
                break
            held.append(self.decoded_n)
            self.decoded_n += 1
        if held:
            self.lists.append(len(held))
            yield held

    def timed(self, batches):
        for batch in batches:
            for i in batch:
                self.n += 1
                yield i / 10, i

    def finish(self) -> None:
        self.finished += 1
        self.release()

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
    assert frames._reader.finished == 1  # the completeness check, once


@pytest.mark.parametrize(("prefetch", "batch"), [(0, 1), (1, 1), (3, 3), (4, HANDOVER), (8, HANDOVER)])
def test_frames_are_handed_over_in_lists(prefetch, batch):
    reader = FakeReader(23)
    assert [i for _, i in DecodedFrames(reader, prefetch=prefetch)] == list(range(23))
    assert reader.lists == [batch] * (23 // batch) + ([23 % batch] if 23 % batch else [])


@pytest.mark.parametrize("prefetch", [0, 2, 8])
def test_an_error_comes_after_the_frames_before_it(prefetch):
    frames = DecodedFrames(FakeReader(50, fail_at=13), prefetch=prefetch)
    got = []
    with pytest.raises(ValueError, match="bad frame 13"):
        for _, i in frames:
            got.append(i)
    assert got == list(range(13))
    assert next(frames, None) is None
    assert frames._reader.finished == 0  # no completeness check after an error


@pytest.mark.parametrize("prefetch", [1, 2, 4, 8, 16])
def test_read_ahead_is_bounded(prefetch):
    reader = FakeReader(10_000)
    frames = DecodedFrames(reader, prefetch=prefetch)
    next(frames)
    deadline = time.monotonic() + 5.0
    last = -1
    while time.monotonic() < deadline:  # until the producer stops reading (blocked on a full queue)
        time.sleep(0.05)
        if reader.decoded_n == last:
            break
        last = reader.decoded_n
    # the list in hand, the lists the read-ahead allows, the one waiting to go in
    batch = min(HANDOVER, prefetch)
    assert frames.read_ahead == max(1, prefetch // batch)
    assert reader.decoded_n == (1 + frames.read_ahead + 1) * batch
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
    stopped_at = reader.decoded_n
    time.sleep(0.05)
    assert reader.decoded_n == stopped_at
