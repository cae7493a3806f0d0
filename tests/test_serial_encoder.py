"""SerialEncoder: one encode call at a time per engine, everything else passed through."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from maxsim.engine import Engine
from maxsim.integrations.serial import SerialEncoder, serialize_encoder
from maxsim.types import Encoder
from tests.serve_data import TrackingEncoder


def test_wrapper_is_an_encoder_and_serialises_every_encode_call():
    inner = TrackingEncoder(delay_s=0.05)
    inner.encode_queries = lambda texts: inner.encode_texts(texts)  # an extra encode_* method
    enc = SerialEncoder(inner)
    assert isinstance(enc, Encoder) and (enc.name, enc.dim) == (inner.name, inner.dim)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: enc.encode_texts(["red"]) if i % 2 else enc.encode_queries(["red"]),
                             range(8)))
    assert len(outs) == 8 and inner.calls == 8 and inner.overlaps == 0
    assert not enc.lock.locked()


def test_serialize_encoder_installs_one_wrapper_per_engine(tmp_path):
    engine = Engine(tmp_path / "idx", encoder=TrackingEncoder(delay_s=0.0))
    wrappers = []
    barrier = threading.Barrier(4)

    def install():
        barrier.wait()
        wrappers.append(serialize_encoder(engine))

    threads = [threading.Thread(target=install) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(w) for w in wrappers}) == 1 and engine.encoder is wrappers[0]
    assert isinstance(wrappers[0].inner, TrackingEncoder)  # not a wrapper of a wrapper
    assert engine.search("red", k=1) == []  # the engine works through it

    class DuckEngine:  # anything with a search() is left alone
        def search(self, *a, **kw):
            return []

    assert serialize_encoder(DuckEngine()) is None


def test_an_engine_that_ignores_the_slot_is_an_error():
    class Odd:
        encoder_loaded = False

        @property
        def encoder(self):
            return TrackingEncoder(delay_s=0.0)  # a new one every time: the wrapper would be bypassed

        @encoder.setter
        def encoder(self, value):
            pass  # ignored

    with pytest.raises(RuntimeError, match="cannot be serialised"):
        serialize_encoder(Odd())
