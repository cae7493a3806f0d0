"""maxsim: find moments in video with late-interaction (MaxSim) search.

``Engine(path, encoder=...)`` ingests videos (segment, sample frames, encode, store) and answers text
queries (or an image, a clip, a segment: :class:`Query`) with ranked :class:`Hit` objects (video, start,
end, score, best frame time, thumbnail, evidence) or :class:`Moment` objects (merged segments,
``Engine.moments``).
"""

from maxsim.encoders import PooledEncoder, load_encoder, register_encoder, registered_encoders
from maxsim.engine import Engine
from maxsim.errors import (
    EncoderMismatchError,
    EncoderOutputError,
    IndexError_,
    IndexFormatError,
    IndexNotFoundError,
    IndexWriteError,
    LockedError,
    MissingWeightsError,
    QueryError,
    RerankError,
    UnknownSegmentError,
    VersionNotFoundError,
    VideoError,
)
from maxsim.ingest import IngestReport
from maxsim.media import (
    FixedSegmenter,
    FrameSampler,
    SceneSegmenter,
    Segmenter,
    VideoProgress,
    load_segmenter,
)
from maxsim.query import Query
from maxsim.rerank import Reranker, load_reranker, register_reranker, rerank_hits
from maxsim.search import SearchOptions, SearchResult, SearchStats
from maxsim.transcripts.stage import TranscriptOptions
from maxsim.types import Clip, Encoder, Evidence, FrameSize, Hit, Moment, Segment, TokenGrid, TranscriptLine

__all__ = [
    "Clip",
    "Encoder",
    "EncoderMismatchError",
    "EncoderOutputError",
    "Engine",
    "Evidence",
    "FixedSegmenter",
    "FrameSampler",
    "FrameSize",
    "Hit",
    "TranscriptLine",
    "TranscriptOptions",
    "IndexError_",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexWriteError",
    "IngestReport",
    "LockedError",
    "Moment",
    "MissingWeightsError",
    "PooledEncoder",
    "Query",
    "QueryError",
    "RerankError",
    "Reranker",
    "SceneSegmenter",
    "SearchOptions",
    "SearchResult",
    "SearchStats",
    "Segment",
    "Segmenter",
    "UnknownSegmentError",
    "TokenGrid",
    "VersionNotFoundError",
    "VideoError",
    "VideoProgress",
    "load_encoder",
    "load_reranker",
    "load_segmenter",
    "register_encoder",
    "register_reranker",
    "registered_encoders",
    "rerank_hits",
]
__version__ = "0.1.0"
