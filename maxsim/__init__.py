"""maxsim: find moments in video with late-interaction (MaxSim) search.

``Engine(path, encoder=...)`` ingests videos (segment, sample frames, encode, store) and answers text
queries with ranked :class:`Hit` objects (video, start, end, score, best frame time, thumbnail).
"""

from maxsim.encoders import load_encoder, register_encoder, registered_encoders
from maxsim.engine import Engine, IngestReport
from maxsim.frames import FrameSampler
from maxsim.rerank import Reranker, RerankError, load_reranker, register_reranker, rerank_hits
from maxsim.segment import FixedSegmenter, SceneSegmenter, Segmenter, load_segmenter
from maxsim.types import Clip, Encoder, FrameSize, Hit, Segment

__all__ = [
    "Clip",
    "Encoder",
    "Engine",
    "FixedSegmenter",
    "FrameSampler",
    "FrameSize",
    "Hit",
    "IngestReport",
    "RerankError",
    "Reranker",
    "SceneSegmenter",
    "Segment",
    "Segmenter",
    "load_encoder",
    "load_reranker",
    "load_segmenter",
    "register_encoder",
    "register_reranker",
    "registered_encoders",
    "rerank_hits",
]
__version__ = "0.1.0"
