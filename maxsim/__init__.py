"""maxsim: find moments in video with late-interaction (MaxSim) search."""

from maxsim.types import Clip, Encoder, Hit, Segment

__all__ = ["Clip", "Encoder", "Engine", "Hit", "Segment"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Engine":  # imported lazily: it pulls in the video and encoder stacks
        from maxsim.engine import Engine

        return Engine
    raise AttributeError(f"module 'maxsim' has no attribute {name!r}")
