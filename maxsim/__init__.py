"""maxsim: find moments in video with late-interaction (MaxSim) search."""

from maxsim.types import Clip, Encoder, Hit, Segment

__all__ = ["Clip", "Encoder", "Hit", "Segment"]
__version__ = "0.1.0"
