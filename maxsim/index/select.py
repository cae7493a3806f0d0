"""Which videos of a catalog a delete names: by folder prefix, by path, or by a predicate on the path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from maxsim.types import video_key


class VideoSelection:
    """Videos named by any of: ``prefix`` (the path itself or anything under it, compared on whole path
    components after resolving it, so ``/data/cam1`` does not match ``/data/cam10``), ``videos`` (one path
    or several, as given or resolved), ``match`` (a predicate on the stored absolute path). Checked and
    resolved once, when made, so it can be applied to the catalog under the writer's lock."""

    def __init__(
        self,
        prefix: str | os.PathLike | None = None,
        videos: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        if prefix is None and videos is None and match is None:
            raise ValueError("delete_where needs prefix=, videos= or match=")
        self.root = None if prefix is None else video_key(prefix)
        self.wanted = None
        if videos is not None:
            names = [str(v) for v in ([videos] if isinstance(videos, (str, os.PathLike)) else videos)]
            self.wanted = {video_key(v) for v in names} | set(names)
        self.match = match

    def __contains__(self, video: str) -> bool:
        root = self.root
        return bool(
            (root is not None and (video == root or video.startswith(root.rstrip(os.sep) + os.sep)))
            or (self.wanted is not None and video in self.wanted)
            or (self.match is not None and self.match(video))
        )

    def pick(self, catalog: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """``{video path: segments}`` of the catalog's videos in this selection."""
        return {v: int(entry["segments"]) for v, entry in catalog.items() if v in self}
