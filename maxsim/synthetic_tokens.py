"""Deprecated: ``maxsim.synthetic_tokens`` moved to ``maxsim.testing.tokens``. This re-export keeps old
imports working for one release; import from the new place."""

import warnings

from maxsim.testing.tokens import (  # noqa: F401
    CorpusSpec,
    SyntheticCorpus,
)

warnings.warn(
    "maxsim.synthetic_tokens is deprecated: import from maxsim.testing.tokens",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CorpusSpec",
    "SyntheticCorpus",
]
