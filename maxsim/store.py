"""Deprecated: ``maxsim.store`` moved to ``maxsim.index``. This re-export keeps old imports working for one
release; import from the new place."""

import warnings

from maxsim.errors import (  # noqa: F401
    EncoderMismatchError,
    IndexError_,
    IndexFormatError,
    IndexNotFoundError,
    IndexTooNewError,
    IndexWriteError,
    LockedError,
    VersionNotFoundError,
)
from maxsim.index.compact import (  # noqa: F401
    CompactReport,
)
from maxsim.index.files import (  # noqa: F401
    failpoint,
)
from maxsim.index.format import (  # noqa: F401
    FORMAT_VERSION,
    KEEP_VERSIONS,
    LOCK,
    MANIFEST,
    MANIFESTS,
    PARTS,
    SEGMENT_SCHEMA,
    STORAGE_DTYPES,
    TARGET_PART_BYTES,
    column_numpy,
    in_ranges,
    merge_ranges,
    ranges_from_ids,
    storage_dtype,
)
from maxsim.index.manifest import (  # noqa: F401
    Manifest,
    read_manifest,
)
from maxsim.index.parts import (  # noqa: F401
    PartWriter,
    SegmentRecord,
)
from maxsim.index.snapshot import (  # noqa: F401
    Chunk,
    Snapshot,
)
from maxsim.index.store import (  # noqa: F401
    Store,
)

warnings.warn(
    "maxsim.store is deprecated: import from maxsim.index",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "Chunk",
    "CompactReport",
    "EncoderMismatchError",
    "FORMAT_VERSION",
    "IndexError_",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexTooNewError",
    "IndexWriteError",
    "KEEP_VERSIONS",
    "LOCK",
    "LockedError",
    "MANIFEST",
    "MANIFESTS",
    "Manifest",
    "PARTS",
    "PartWriter",
    "SEGMENT_SCHEMA",
    "STORAGE_DTYPES",
    "SegmentRecord",
    "Snapshot",
    "Store",
    "TARGET_PART_BYTES",
    "VersionNotFoundError",
    "column_numpy",
    "failpoint",
    "in_ranges",
    "merge_ranges",
    "ranges_from_ids",
    "read_manifest",
    "storage_dtype",
]
