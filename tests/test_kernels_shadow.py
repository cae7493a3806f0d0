"""From a checkout's root the kernels/ folder (maxsim.kernels' source) must not stand in for Hugging Face's
``kernels`` package, which transformers looks for and imports: where that package is installed the import
goes to it, and where it is not, transformers must see it as absent rather than fail its own import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run first in the child to make Hugging Face's package look uninstalled, whether or not it is here: its
# module is not found outside the checkout's root and its distribution has no metadata.
ABSENT = """
import importlib.machinery, importlib.metadata, os
_root = os.path.realpath(os.getcwd())
_find = importlib.machinery.PathFinder.find_spec.__func__
def _hidden(cls, name, path=None, target=None):
    if name == "kernels" and path is not None and all(os.path.realpath(p or ".") != _root for p in path):
        return None
    return _find(cls, name, path, target)
importlib.machinery.PathFinder.find_spec = classmethod(_hidden)
_version = importlib.metadata.version
def _no_kernels(name):
    if name == "kernels":
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)
importlib.metadata.version = _no_kernels
"""

PROBE = """
import sys
import kernels
print(getattr(kernels, "__file__", None))
from transformers.utils.import_utils import is_kernels_available
print(is_kernels_available())
import transformers.activations  # imports transformers' hub-kernels integration, as every model does
import maxsim.kernels as m
print("maxsim", callable(m.maxsim_scores), hasattr(sys.modules["kernels"], "maxsim_scores"))
"""


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_top_level_kernels_is_hugging_faces_or_absent():
    pytest.importorskip("transformers")
    where, available, last = _run(PROBE)[:3]
    if where == "None":  # not installed here: the stand-in, which transformers reads as absent
        assert available == "False"
    else:
        assert not Path(where).resolve().is_relative_to(ROOT / "kernels"), where
    assert last == "maxsim True False"


def test_without_hugging_faces_package_transformers_still_imports():
    pytest.importorskip("transformers")
    where, available, last = _run(ABSENT + PROBE)[:3]
    assert (where, available, last) == ("None", "False", "maxsim True False")
    # and nothing can be taken from the stand-in
    code = ABSENT + "try:\n    from kernels import get_kernel\nexcept ImportError as e:\n    print(e)\n"
    assert "cannot import name 'get_kernel'" in _run(code)[0]
