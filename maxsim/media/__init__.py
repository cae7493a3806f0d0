"""Video in: decoding (:mod:`~maxsim.media.video`), segmentation (:mod:`~maxsim.media.segment`), frame
sampling (:mod:`~maxsim.media.frames`) and the single decode pass that feeds both
(:mod:`~maxsim.media.clips`).
"""

from maxsim.errors import VideoError
from maxsim.media.clips import iter_clips
from maxsim.media.frames import FrameSampler, SampleRun, jpeg_thumbnail, scale_frame
from maxsim.media.progress import VideoProgress, VideoProgressBar
from maxsim.media.segment import (
    FixedSegmenter,
    SceneSegmenter,
    Segmenter,
    SegmenterRun,
    load_segmenter,
    run_segmenter,
)
from maxsim.media.video import VideoInfo, content_hash, frames_at, iter_frames, probe

__all__ = [
    "FixedSegmenter", "FrameSampler", "SampleRun", "SceneSegmenter", "Segmenter", "SegmenterRun",
    "VideoError", "VideoInfo",
    "VideoProgress", "VideoProgressBar", "content_hash", "frames_at", "iter_clips", "iter_frames",
    "jpeg_thumbnail",
    "load_segmenter", "probe", "run_segmenter", "scale_frame",
]
