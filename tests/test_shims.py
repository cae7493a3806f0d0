"""The import paths of the previous layout keep working for one release, with a DeprecationWarning, and
give the very objects of the new layout."""

from __future__ import annotations

import importlib
import sys

import pytest

OLD_TO_NEW = {
    "maxsim.store": ("Store", "maxsim.index"),
    "maxsim.candidates": ("PrunedSearcher", "maxsim.search.prune"),
    "maxsim.residuals": ("ResidualCodec", "maxsim.search.prune.residuals"),
    "maxsim.pooling": ("PooledEncoder", "maxsim.encoders"),
    "maxsim.frames": ("FrameSampler", "maxsim.media"),
    "maxsim.segment": ("load_segmenter", "maxsim.media.segment"),
    "maxsim.video": ("VideoError", "maxsim.errors"),
    "maxsim.synthetic": ("write_video", "maxsim.testing.synthetic"),
    "maxsim.synthetic_tokens": ("SyntheticCorpus", "maxsim.testing.tokens"),
    "maxsim.search_options": ("check_search_options", "maxsim.search.options"),
    "maxsim.encoders.color": ("ColorHistogramEncoder", "maxsim.testing.color"),
}


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_paths_warn_and_re_export(old):
    name, new = OLD_TO_NEW[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)


def test_engine_module_keeps_its_public_names():
    from maxsim import engine, ingest, types

    assert engine.IngestReport is ingest.IngestReport and engine.video_key is types.video_key
    assert engine.expand_paths is ingest.expand_paths
