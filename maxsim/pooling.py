"""Deprecated: ``maxsim.pooling`` moved to ``maxsim.encoders (PooledEncoder) and maxsim.encoders.spec /
.reduce``. This re-export keeps old imports working for one release; import from the new place."""

import warnings

from maxsim.encoders.pooled import (  # noqa: F401
    PooledEncoder,
)
from maxsim.encoders.reduce import (  # noqa: F401
    drop_duplicate_tokens,
    pool_tokens,
    reduce_tokens,
)
from maxsim.encoders.spec import (  # noqa: F401
    POOL_EXPECTED,
    POOL_KEYS,
    parse_pool_setting,
    pool_suffix,
    split_pool_spec,
    strip_pool_suffix,
)

warnings.warn(
    "maxsim.pooling is deprecated: import from maxsim.encoders",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "POOL_EXPECTED",
    "POOL_KEYS",
    "PooledEncoder",
    "drop_duplicate_tokens",
    "parse_pool_setting",
    "pool_suffix",
    "pool_tokens",
    "reduce_tokens",
    "split_pool_spec",
    "strip_pool_suffix",
]
