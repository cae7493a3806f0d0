"""maxsim: find moments in video with late-interaction (MaxSim) search.

``Engine(path, encoder=...)`` ingests videos (segment, sample frames, encode, store) and answers text
queries with ranked :class:`Hit` objects (video, start, end, score, best frame time, thumbnail).
"""

from maxsim.encoders import load_encoder, register_encoder, registered_encoders
from maxsim.engine import Engine, IngestReport
from maxsim.frames import FrameSampler
from maxsim.segment import FixedSegmenter, SceneSegmenter, Segmenter, load_segmenter
from maxsim.types import Clip, Encoder, Hit, Segment

__all__ = [
    "Clip",
    "Encoder",
    "Engine",
    "FixedSegmenter",
    "FrameSampler",
    "Hit",
    "IngestReport",
    "SceneSegmenter",
    "Segment",
    "Segmenter",
    "load_encoder",
    "load_segmenter",
    "register_encoder",
    "registered_encoders",
]
__version__ = "0.1.0"
