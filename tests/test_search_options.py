"""maxsim.search_options.check_search_options: what the service and the retrievers accept."""

from __future__ import annotations

import numpy as np
import pytest

from maxsim.search.options import MAX_CANDIDATES, check_search_options


def test_valid_options_are_copied_with_nones_dropped():
    assert check_search_options(None) == {}
    assert check_search_options({}) == {}
    assert check_search_options({"mode": "exact"}) == {"mode": "exact"}
    opts = {"mode": "pruned", "n_candidates": np.int64(50), "n_refine": 0, "nprobe": None}
    out = check_search_options(opts)
    assert out == {"mode": "pruned", "n_candidates": 50, "n_refine": 0} and type(out["n_candidates"]) is int
    assert out is not opts


@pytest.mark.parametrize(
    "options, what",
    [
        ({"mode": "pruned", "k": 3}, "unknown search option(s) 'k'"),
        ({"mode": "fast"}, "mode must be 'exact' or 'pruned'"),
        ({"mode": "pruned", "n_candidates": 0}, "n_candidates must be an integer from 1"),
        ({"mode": "pruned", "n_candidates": MAX_CANDIDATES + 1}, "n_candidates must be an integer"),
        ({"mode": "pruned", "n_candidates": 2.0}, "n_candidates must be an integer"),
        ({"mode": "pruned", "n_candidates": True}, "n_candidates must be an integer"),
        ({"mode": "pruned", "n_refine": -1}, "n_refine must be an integer from 0"),
        ({"mode": "pruned", "nprobe": "8"}, "nprobe must be an integer from 1"),
        ({"nprobe": 8}, "nprobe only applies to pruned search"),
        ({"mode": "exact", "n_candidates": 8}, "got mode 'exact'"),
    ],
)
def test_bad_options_are_refused_with_the_key_named(options, what):
    with pytest.raises(ValueError) as err:
        check_search_options(options, "opts")
    assert what in str(err.value) and str(err.value).startswith("opts: ")


def test_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="must be a dict"):
        check_search_options([("mode", "pruned")])
