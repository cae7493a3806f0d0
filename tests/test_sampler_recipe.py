"""The frame-sampling recipe an index is created with: recorded in its manifest, reused when it is reopened,
the old default for indexes created before recipes were recorded (so that their videos are skipped, not
re-encoded, because the default frame size changed), and replaced only by a sampler given explicitly."""

from __future__ import annotations

import json

import pytest

from maxsim import Engine, FrameSampler
from maxsim.index.format import MANIFEST
from maxsim.index.manifest import read_manifest
from tests.color_encoder import SizedColorEncoder
from tests.test_cli import run

ENC = "tests.color_encoder:SizedColorEncoder"
SIZED = "frames(fps=2, max_frames=16, size=max_pixels=768)"


def settings(engine: Engine) -> list[str]:
    return [json.loads(v["settings"])["sampler"] for v in engine.store.manifest().videos.values()]


def drop_recorded_recipe(index) -> None:
    """Make ``index`` look as if made before recipes were recorded: no ``sampler`` in any manifest."""
    for path in [index / MANIFEST, *sorted((index / "manifests").glob("*"))]:
        data = json.loads(path.read_text())
        data.pop("sampler", None)
        path.write_text(json.dumps(data))


def test_engine_samples_at_the_encoder_size_and_keys_it(tmp_path, scenes_video):
    eng = Engine(tmp_path / "idx", encoder=SizedColorEncoder(), segmenter="fixed:5")
    assert eng.manifest.sampler == {"fps": 2.0, "max_frames": 16, "max_side": None}
    assert eng.frame_sampler.name == SIZED
    assert eng.ingest([scenes_video.path], progress=False).ok
    assert settings(eng) == [SIZED]
    eng.sampler = FrameSampler(max_side=48)  # the user's size: a new settings key, so re-encoded
    report = eng.ingest([scenes_video.path], progress=False)
    assert report.ingested and settings(eng) == ["frames(fps=2, max_frames=16, max_side=48)"]


def test_a_new_index_records_its_recipe_and_reopens_with_it(tmp_path, scenes_video):
    idx = tmp_path / "idx"
    eng = Engine(idx, encoder=SizedColorEncoder(), sampler=FrameSampler(fps=1.0, max_frames=4))
    assert eng.ingest([scenes_video.path], progress=False).ok
    assert settings(eng) == ["frames(fps=1, max_frames=4, size=max_pixels=768)"]
    assert read_manifest(idx).sampler == {"fps": 1.0, "max_frames": 4, "max_side": None}
    again = Engine(idx, encoder=SizedColorEncoder())  # no sampler given: the recorded recipe
    assert again.sampler == FrameSampler(fps=1.0, max_frames=4)
    report = again.ingest([scenes_video.path], progress=False)
    assert report.skipped and not report.ingested
    assert read_manifest(idx).sampler == {"fps": 1.0, "max_frames": 4, "max_side": None}  # commits keep it
    explicit = Engine(idx, encoder=SizedColorEncoder(), sampler=FrameSampler(fps=1.0, max_frames=4,
                                                                              max_side=32))
    report = explicit.ingest([scenes_video.path], progress=False)
    assert report.ingested and settings(explicit) == ["frames(fps=1, max_frames=4, max_side=32)"]
    assert read_manifest(idx).sampler["max_side"] is None  # the recipe of the index's creation stays


def test_an_index_without_a_recorded_recipe_keeps_the_old_default(tmp_path, scenes_video):
    """An index created before recipes were recorded sampled at 2 fps, 16 frames, longest side 448: its
    videos are skipped on re-ingest although the encoder now asks for other frames."""
    idx = tmp_path / "idx"
    old = Engine(idx, encoder=SizedColorEncoder(), sampler=FrameSampler(max_side=448))
    assert old.ingest([scenes_video.path], progress=False).ok
    drop_recorded_recipe(idx)
    assert read_manifest(idx).sampler is None
    reopened = Engine(idx, encoder=SizedColorEncoder())
    assert reopened.sampler == FrameSampler(fps=2.0, max_frames=16, max_side=448)
    assert reopened.frame_sampler.name == "frames(fps=2, max_frames=16, max_side=448)"
    report = reopened.ingest([scenes_video.path], progress=False)
    assert report.skipped and not report.ingested
    assert read_manifest(idx).sampler is None  # still the old default after a commit
    sized = Engine(idx, encoder=SizedColorEncoder(), sampler=FrameSampler())  # explicit: re-encoded
    report = sized.ingest([scenes_video.path], progress=False)
    assert report.ingested and settings(sized) == [SIZED]


def test_cli_ingest_records_the_preset_and_flags_change_it(tmp_path, capsys, scenes_video):
    idx = tmp_path / "idx"
    video = scenes_video.path
    code, _, err = run(capsys, "ingest", idx, video, "--encoder", ENC, "--fps", "1", "--max-frames", "4",
                       "-q")
    assert code == 0, err
    assert read_manifest(idx).sampler == {"fps": 1.0, "max_frames": 4, "max_side": None}
    code, out, err = run(capsys, "ingest", idx, video, "-q")  # the index's recipe: skipped
    assert code == 0 and "skipped 1" in out, err
    code, out, _ = run(capsys, "info", idx)
    assert "frame sampling: 1 fps, at most 4 frames, sized to the encoder" in out
    code, out, err = run(capsys, "ingest", idx, video, "--max-side", "32", "-q")  # only the size changes
    assert code == 0 and "ingested 1" in out, err
    assert settings(Engine(idx)) == ["frames(fps=1, max_frames=4, max_side=32)"]


@pytest.mark.parametrize("given, expected", [
    ({}, "frames(fps=2, max_frames=16, max_side=448)"),
    ({"max_side": 64}, "frames(fps=2, max_frames=16, max_side=64)"),
])
def test_cli_ingest_into_an_old_index(tmp_path, capsys, scenes_video, given, expected):
    idx = tmp_path / "idx"
    Engine(idx, encoder=ENC, sampler=FrameSampler(max_side=448)).ingest([scenes_video.path], progress=False)
    drop_recorded_recipe(idx)
    flags = [x for k, v in given.items() for x in (f"--{k.replace('_', '-')}", v)]
    code, out, err = run(capsys, "ingest", idx, scenes_video.path, *flags, "-q")
    assert code == 0, err
    assert ("skipped 1" in out) == (not given)
    assert settings(Engine(idx)) == [expected]
    code, out, _ = run(capsys, "info", idx)
    assert "longest side 448 (not recorded" in out


def test_a_damaged_recipe_is_an_index_format_error(tmp_path):
    from maxsim.errors import IndexFormatError

    idx = tmp_path / "idx"
    Engine(idx, encoder=SizedColorEncoder())
    data = json.loads((idx / MANIFEST).read_text())
    (idx / MANIFEST).write_text(json.dumps({**data, "sampler": {"fps": "fast"}}))
    with pytest.raises(IndexFormatError, match="frame-sampling recipe is damaged"):
        Engine(idx, encoder=SizedColorEncoder())
    assert Engine(idx, encoder=SizedColorEncoder(), sampler=FrameSampler()).sampler == FrameSampler()
