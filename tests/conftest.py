"""Shared fixtures: a session-wide folder of small synthetic videos, generated once on demand."""

from __future__ import annotations

import os

# Triton kernels run on CPU tensors in the interpreter (CI has no GPU): set before anything imports triton,
# so the device search path (backend "triton" on CPU tensors) runs in every test that asks for it.
# bench/gpu_run.sh runs the device tests on a real GPU (MAXSIM_TEST_DEVICE=cuda), compiled.
if os.environ.get("MAXSIM_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maxsim.testing.synthetic import cut_times, write_video  # noqa: E402
from tests.mp4 import retime_mp4  # noqa: E402

# CI has no network and must never download weights: everything touching transformers runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """``make_video(name, scenes, fps=10, size=(96, 64))`` -> path of an MP4 written once per session."""
    root = tmp_path_factory.mktemp("videos")
    made: dict[str, Path] = {}

    def make(name: str, scenes, fps: float = 10.0, size: tuple[int, int] = (96, 64), **kw) -> Path:
        if name not in made:
            made[name] = write_video(root / name, scenes, fps=fps, size=size, **kw)
        return made[name]

    return make


@dataclass(frozen=True)
class SceneVideo:
    path: Path
    scenes: list
    cuts: list[float]  # true cut times (s)
    duration: float
    fps: float  # average
    times: np.ndarray | None = None  # frame times (s), given where they are not k / fps


@pytest.fixture(scope="session")
def scenes_video(make_video) -> SceneVideo:
    """Five colour scenes, cuts at 2.0, 3.5, 6.5 and 7.7 s, 10 s at 10 fps, 96x64."""
    scenes = [(2.0, "red"), (1.5, "blue"), (3.0, "green"), (1.2, "yellow"), (2.3, "white")]
    path = make_video("scenes.mp4", scenes)
    return SceneVideo(path, scenes, cut_times(scenes, 10.0), 10.0, 10.0)


@pytest.fixture(scope="session")
def vfr_video(make_video, tmp_path_factory) -> SceneVideo:
    """Variable frame rate: 40 frames, 20 at 0.1 s, 10 at 0.3 s, 10 at 0.05 s (5.5 s); the colour cuts
    at frames 20 and 30 fall at 2.0 s and 5.0 s (frame_no / fps would put the second at 3.0 s)."""
    scenes = [(2.0, "red"), (1.0, "blue"), (1.0, "green")]
    cfr = make_video("vfr_source.mp4", scenes)
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    path.write_bytes(retime_mp4(cfr.read_bytes(), [(20, 0.1), (10, 0.3), (10, 0.05)]))
    times = np.concatenate([np.arange(20) * 0.1, 2 + np.arange(10) * 0.3, 5 + np.arange(10) * 0.05])
    return SceneVideo(path, scenes, [2.0, 5.0], 5.5, 40 / 5.5, times)


# --- tiny model checkpoints (tests/tiny_models.py) ---------------------------------------------------
@pytest.fixture(scope="session")
def tiny_colqwen3_dir(tmp_path_factory) -> Path:
    """A tiny random ColQwen3 checkpoint in the published key layout (2 safetensors shards)."""
    from tests.tiny_models import build_tiny_colqwen3

    return build_tiny_colqwen3(tmp_path_factory.mktemp("tiny-colqwen3"))


@pytest.fixture(scope="session")
def tiny_colqwen2_dir(tmp_path_factory) -> Path:
    """A tiny random ColQwen2 checkpoint saved by transformers."""
    from tests.tiny_models import build_tiny_colqwen2

    return build_tiny_colqwen2(tmp_path_factory.mktemp("tiny-colqwen2"))


@pytest.fixture(scope="session")
def tiny_colqwen3(tiny_colqwen3_dir):
    """The tiny ColQwen3 loaded through the production loader (CPU, float32)."""
    from maxsim.encoders.colqwen3 import ColQwen3Encoder

    return ColQwen3Encoder.from_pretrained(str(tiny_colqwen3_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def tiny_colqwen2(tiny_colqwen2_dir):
    """The tiny ColQwen2 loaded through the production loader (CPU, float32)."""
    from maxsim.encoders.colqwen2 import ColQwen2Encoder

    return ColQwen2Encoder.from_pretrained(str(tiny_colqwen2_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def tiny_qwen3vl_dir(tmp_path_factory) -> Path:
    """A tiny random native Qwen3-VL checkpoint (Qwen3-VL-Embedding / -Reranker layout, tied embeddings)."""
    from tests.tiny_models import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny-qwen3vl"))


@pytest.fixture(scope="session")
def tiny_qwen3vl_untied_dir(tmp_path_factory) -> Path:
    """The same layout with a separate ``lm_head.weight`` (untied embeddings), in two shards."""
    from tests.tiny_models import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny-qwen3vl-untied"), seed=1, tie=False, shards=2)


@pytest.fixture(scope="session")
def tiny_qwen3vl_embedding(tiny_qwen3vl_dir):
    """The tiny Qwen3-VL-Embedding encoder loaded through the production loader (CPU, float32)."""
    from maxsim.encoders.qwen3vl_embedding import Qwen3VLEmbeddingEncoder

    return Qwen3VLEmbeddingEncoder.from_pretrained(str(tiny_qwen3vl_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def tiny_frame_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP, SigLIP (SigLIP 2 fixed-resolution layout) and SigLIP 2 NaFlex checkpoints."""
    from tests.tiny_models import build_tiny_clip, build_tiny_siglip

    root = tmp_path_factory.mktemp("tiny-frame-models")
    return {
        "clip": build_tiny_clip(root / "clip"),
        "siglip": build_tiny_siglip(root / "siglip"),
        "siglip2": build_tiny_siglip(root / "siglip2-naflex", naflex=True),
    }
