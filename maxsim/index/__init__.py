"""The index on disk: Arrow IPC files, memory-mapped on open, ragged, committed atomically, versioned.

One module per job: :mod:`~maxsim.index.format` (names, dtypes, schema, id ranges),
:mod:`~maxsim.index.files` (atomic writes, fsync, failpoints), :mod:`~maxsim.index.manifest` (the committed
state of a version), :mod:`~maxsim.index.parts` (writing a part), :mod:`~maxsim.index.snapshot` (reading a
version), :mod:`~maxsim.index.compact` and :mod:`~maxsim.index.store` (the folder: lock, commit, garbage
collection). The index never imports the encoders, media or search stages.
"""

from maxsim.errors import (
    EncoderMismatchError,
    IndexError_,
    IndexFormatError,
    IndexNotFoundError,
    IndexTooNewError,
    IndexWriteError,
    LockedError,
    VersionNotFoundError,
)
from maxsim.index.compact import CompactReport
from maxsim.index.format import KEEP_VERSIONS, STORAGE_DTYPES, TARGET_PART_BYTES, storage_dtype
from maxsim.index.manifest import Manifest, read_manifest
from maxsim.index.parts import PartWriter, SegmentRecord
from maxsim.index.snapshot import Chunk, Snapshot
from maxsim.index.store import Sidecar, Store

__all__ = [
    "Chunk", "CompactReport", "EncoderMismatchError", "IndexError_", "IndexFormatError", "IndexNotFoundError",
    "IndexTooNewError", "IndexWriteError", "KEEP_VERSIONS", "LockedError", "Manifest", "PartWriter",
    "STORAGE_DTYPES", "SegmentRecord", "Sidecar", "Snapshot", "Store", "TARGET_PART_BYTES",
    "VersionNotFoundError", "read_manifest", "storage_dtype",
]
