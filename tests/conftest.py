"""Shared pytest fixtures. (Helpers: append your fixtures; keep builders in their own modules.)"""

import os
import sys
from pathlib import Path

import pytest

# CI has no network and must never download weights: everything touching transformers runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


# --- tiny model checkpoints (tests/tiny_models.py) ---------------------------------------------------
@pytest.fixture(scope="session")
def tiny_colqwen3_dir(tmp_path_factory) -> Path:
    """A tiny random ColQwen3 checkpoint in the published key layout (2 safetensors shards)."""
    from tiny_models import build_tiny_colqwen3

    return build_tiny_colqwen3(tmp_path_factory.mktemp("tiny-colqwen3"))


@pytest.fixture(scope="session")
def tiny_colqwen2_dir(tmp_path_factory) -> Path:
    """A tiny random ColQwen2 checkpoint saved by transformers."""
    from tiny_models import build_tiny_colqwen2

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
