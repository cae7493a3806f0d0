"""The encoder an index records: hub revision pinned on reload, settings that decide re-ingest."""

import pytest

from maxsim import Engine
from maxsim.encoders import register_encoder, unregister_encoder
from maxsim.encoders.registry import hub_model_type
from maxsim.errors import EncoderMismatchError
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder

OLD, NEW = "a" * 40, "b" * 40


class HubEncoder(ColorEncoder):
    """A colour encoder named like a hub checkpoint: ``hub-color:<id>@<commit>``."""

    hub_head = OLD  # the commit the hub's main branch points at
    loads: list = []

    def __init__(self, id_or_path="org/model", revision=None, max_visual_tokens=256, dtype="float32"):
        rev = revision or HubEncoder.hub_head
        HubEncoder.loads.append(revision)
        self.name = f"hub-color:{id_or_path}@{rev}"
        self.settings = {"max_visual_tokens": max_visual_tokens, "dtype": dtype}


@pytest.fixture
def hub_encoder():
    register_encoder("hub-color", HubEncoder)
    HubEncoder.hub_head, HubEncoder.loads = OLD, []
    yield
    unregister_encoder("hub-color")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "a.mp4", [(2.0, "red"), (2.0, "blue")], seed=1)


def test_a_new_hub_revision_does_not_make_the_index_unusable(tmp_path, clip, hub_encoder):
    eng = Engine(tmp_path / "idx", encoder="hub-color:org/model", segmenter="fixed:2")
    assert eng.manifest.encoder["revision"] == OLD
    eng.ingest(clip, progress=False)
    HubEncoder.hub_head = NEW  # the checkpoint got a new commit on the hub
    reopened = Engine(tmp_path / "idx")  # no encoder given: the recorded spec, at the recorded commit
    assert reopened.search("red", k=1)[0].start == 0.0
    assert reopened.encoder.name.endswith("@" + OLD) and HubEncoder.loads[-1] == OLD
    with pytest.raises(EncoderMismatchError):  # asking for the new commit explicitly is a mismatch
        Engine(tmp_path / "idx", encoder="hub-color:org/model")


def test_local_fingerprints_are_not_recorded_as_revisions(tmp_path):
    class Local(ColorEncoder):
        name = "colqwen3:tiny@sha256-0123456789abcdef"

    eng = Engine(tmp_path / "idx", encoder=Local())
    assert "revision" not in eng.manifest.encoder


def test_other_encoder_settings_reingest_instead_of_mixing(tmp_path, clip, hub_encoder):
    eng = Engine(tmp_path / "idx", encoder="hub-color:org/model", segmenter="fixed:2")
    assert eng.ingest(clip, progress=False).ingested
    # runtime settings (the model's dtype on another device) do not change the vectors: skipped
    same = Engine(tmp_path / "idx", encoder=HubEncoder(dtype="bfloat16"), segmenter="fixed:2")
    assert same.ingest(clip, progress=False).skipped
    # a smaller visual token budget changes them: the video is re-encoded, not kept under old settings
    other = Engine(tmp_path / "idx", encoder=HubEncoder(max_visual_tokens=64), segmenter="fixed:2")
    rep = other.ingest(clip, progress=False)
    assert rep.ingested and len(other) == 2 and other.videos() == eng.videos()
    assert other.ingest(clip, progress=False).skipped


def test_hub_model_type_honours_every_offline_switch(monkeypatch):
    import huggingface_hub

    seen = []

    def download(repo_id, filename, revision=None, local_files_only=False):
        seen.append(local_files_only)
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub_model_type("org/model") is None and seen == [True]
