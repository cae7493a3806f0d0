"""Every error maxsim raises on purpose, in one place: what went wrong, for whom, and what to do next.

Index errors derive from :class:`IndexError_` (named so as not to shadow the builtin ``IndexError``); a
video that cannot be used is a :class:`VideoError` (its ingest fails, the others go on); an encoder that
gives vectors the index cannot take is an :class:`EncoderOutputError`; weights that cannot be had are a
:class:`MissingWeightsError`; hits that cannot be re-ranked are a :class:`RerankError`; a query that
cannot be searched (no query, an unreadable image, a clip outside its video) is a :class:`QueryError`, and
``like=`` a segment id that is not in the index an :class:`UnknownSegmentError`.
"""

from __future__ import annotations

import os


class IndexError_(Exception):
    """Base class of index errors (named to avoid shadowing the builtin IndexError)."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """No index exists at the given path."""


class IndexFormatError(IndexError_):
    """The index folder is damaged, foreign or written by a newer format."""


class IndexTooNewError(IndexFormatError):
    """The index was written by a newer maxsim, in a format this version cannot read."""


class EncoderMismatchError(IndexError_):
    """The index was built with another encoder than the one given."""


class LockedError(IndexError_):
    """Another process is writing to the index."""


class VersionNotFoundError(IndexError_, KeyError):
    """The asked version of the index is not (or no longer) kept."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IndexWriteError(IndexError_, OSError):
    """Writing to the index failed (disk full, quota, I/O error); the committed index is unchanged."""


class VideoError(Exception):
    """A video that cannot be used: missing, empty, not a video, undecodable or truncated."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep it picklable (worker processes)
        return (type(self), (self.path, self.reason))


class EncoderOutputError(ValueError):
    """An encoder returned vectors the index cannot take (wrong shape, none, NaN or inf)."""


class MissingWeightsError(FileNotFoundError):
    """The checkpoint is not available locally and cannot be downloaded."""


class RerankError(ValueError):
    """Hits could not be re-ranked: a video file is gone or unreadable (``video`` names it), the reranker
    cannot be loaded, or its scores are not one finite number per clip."""

    def __init__(self, message: str, video: str | None = None):
        super().__init__(message)
        self.video = video

    def __reduce__(self):  # keep it picklable (worker processes)
        return (type(self), (self.args[0], self.video))


__all__ = [
    "EncoderMismatchError", "EncoderOutputError", "IndexError_", "IndexFormatError", "IndexNotFoundError",
    "IndexTooNewError", "IndexWriteError", "LockedError", "MissingWeightsError", "RerankError",
    "VersionNotFoundError", "VideoError",
]


class QueryError(ValueError):
    """A query that cannot be searched: nothing to search for, an image that cannot be read or is not an
    RGB ``(H, W, 3)`` uint8 picture, a clip outside its video. The message names the value."""


class UnknownSegmentError(QueryError, LookupError):
    """``like=`` a segment id that is not a live segment of the version searched."""
