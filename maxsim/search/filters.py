"""Which rows of a snapshot a search may return: live, and inside the request's filters."""

from __future__ import annotations

import numpy as np

from maxsim.index.snapshot import Snapshot
from maxsim.search.options import SearchOptions
from maxsim.types import video_key


def allowed_rows(snap: Snapshot, options: SearchOptions) -> np.ndarray:
    """Boolean mask over ``snap``'s table rows: live segments of the wanted videos (as given or resolved
    to their indexed path) that overlap the time range."""
    allowed = snap.live.copy()
    if options.videos is not None:
        wanted = {video_key(v) for v in options.videos} | set(options.videos)
        allowed &= snap.rows_of(wanted)
    if options.time_range is not None:
        lo, hi = options.time_range
        allowed &= (snap.ends > lo) & (snap.starts < hi)
    return allowed
