"""A hit as plain data: Hit.to_dict and the retrievers' metadata share one thumbnail encoding."""

from __future__ import annotations

import base64
import json

import numpy as np

from maxsim.integrations.hits import deep_link, hit_metadata
from maxsim.types import Hit, thumbnail_data_uri

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"


def _hit(thumbnail: bytes | None = JPEG) -> Hit:
    # numpy scalars, as a caller building hits from arrays would hand them over
    return Hit("/data/cam 1/a.webm", np.float32(4.0), np.float64(8.0), np.float32(0.75), np.int64(7), 5.5,
               thumbnail)


def test_to_dict_with_thumbnail_is_json_with_a_data_uri():
    d = _hit().to_dict(thumbnail=True)
    text = json.dumps(d)  # raw bytes (the old behaviour) raise TypeError here
    back = json.loads(text)
    prefix = "data:image/jpeg;base64,"
    assert back["thumbnail"].startswith(prefix)
    assert base64.b64decode(back["thumbnail"][len(prefix):]) == JPEG
    assert back == {"video": "/data/cam 1/a.webm", "start": 4.0, "end": 8.0, "score": 0.75, "segment_id": 7,
                    "best_time": 5.5, "scores": {}, "evidence": [], "grid": None,
                    "thumbnail": back["thumbnail"]}
    assert type(d["segment_id"]) is int and all(type(d[k]) is float for k in ("start", "end", "score"))


def test_to_dict_carries_stage_scores_as_floats():
    hit = _hit()
    hit.scores = {"maxsim": np.float32(0.5), "rerank": np.float64(0.875)}
    d = json.loads(json.dumps(hit.to_dict()))
    assert d["scores"] == {"maxsim": 0.5, "rerank": 0.875}
    assert "frame_times" not in d  # kept for re-decoding, not part of the answer


def test_to_dict_without_thumbnail_or_with_none():
    assert "thumbnail" not in _hit().to_dict()
    d = _hit(None).to_dict(thumbnail=True)
    assert d["thumbnail"] is None and json.loads(json.dumps(d))["thumbnail"] is None
    assert thumbnail_data_uri(None) is None and thumbnail_data_uri(b"") is None


def test_hit_metadata_is_to_dict_plus_name_and_link():
    h = _hit()
    md = hit_metadata(h)
    assert md == {**h.to_dict(thumbnail=True), "video_name": "a.webm",
                  "deep_link": deep_link(h.video, 4.0, 8.0)}
    assert md["deep_link"] == "file:///data/cam%201/a.webm#t=4.000,8.000"
    assert "thumbnail" not in hit_metadata(h, thumbnail=False)
    assert "thumbnail" not in hit_metadata(_hit(None))  # none stored: the key is left out
    assert "deep_link" not in hit_metadata(h, link=False)
    json.dumps(md)
