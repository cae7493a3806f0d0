"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from maxsim.search.options import MAX_CANDIDATES, MAX_NPROBE, MAX_REFINE, MAX_RERANK

# Upper bounds the app enforces; create_app() may lower or raise them per server.
MAX_TEXT_CHARS = 2000
MAX_BATCH = 64
MAX_K = 1000
MAX_VIDEO_FILTER = 1000
MAX_INGEST_PATHS = 1000


# (constrained strings refuse text that is not valid Unicode, e.g. a lone surrogate "\udcff": a 422)
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
Mode = Literal["exact", "pruned"]


class _SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=10, ge=1, le=MAX_K, description="hits per query")
    videos: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VIDEO_FILTER,
        description="only these videos: ids (from GET /videos or a hit's video_id) or indexed paths",
    )
    time_range: tuple[float, float] | None = Field(
        default=None, description="only segments overlapping [start, end] seconds (start <= end)"
    )
    include_thumbnails: bool = Field(
        default=False, description="inline each hit's JPEG thumbnail as a data URI (`thumbnail`)"
    )
    mode: Mode | None = Field(
        default=None,
        description="`exact` scores every segment; `pruned` scores exactly only candidates picked with the "
        "index's prune index (`maxsim prune`; an index without one is scored exhaustively). Default: the "
        "server's (`maxsim serve --pruned` makes it `pruned`)",
    )
    n_candidates: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CANDIDATES,
        description="pruned search (as are `n_refine` and `nprobe`; for an exact search they are refused "
        "with 400): segments scored exactly (default: the server's, else 0.1% of the searched segments, at "
        "least 100 x k)",
    )
    n_refine: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REFINE,
        description="pruned search: segments scored from residual codes, the candidates being the best of "
        "them (default: the server's, else 10% of the searched segments, at least 1000 x k; 0: no residual "
        "stage)",
    )
    nprobe: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NPROBE,
        description="pruned search: centroids probed per query token (default: the server's, else 8)",
    )
    rerank: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RERANK,
        description="re-score the best N hits (at least k) with the server's reranker (a vision-language "
        "model that sees the query and each segment's frames, decoded again from its video) and return the "
        "best k of those by its score; 0: no re-ranking. Default: the server's (`maxsim serve --rerank N`)",
    )
    channels: list[Literal["visual", "transcript"]] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description='what to match: ["visual"] the frames, ["transcript"] what is said (the transcript lines '
        'indexed with the videos), both fused. Default: both when the index has transcripts, else visual',
    )
    fusion: Literal["weighted", "rrf"] | None = Field(
        default=None,
        description="how the two channels' scores become one: `weighted` (default; each channel's scores "
        "min-max normalised over the candidates and added with weights 1 - transcript_weight and "
        "transcript_weight) or `rrf` (reciprocal rank fusion, weight / (60 + rank) per channel)",
    )
    transcript_weight: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="weight of the transcript channel in the fusion (default 0.5)",
    )
    group: Literal["segments", "moments", "video"] = Field(
        default="segments",
        description="`segments`: one hit per segment; `moments`: adjacent or overlapping segments of a video "
        "scoring within `margin` of the best merged into one moment (`moments` in the response; `hits` "
        "then holds each moment's best segment); `video`: the best moment of each video",
    )
    margin: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="with `group`: the fraction of the best score within which segments merge",
    )
    include_prune_stats: bool = Field(
        default=False,
        description="pruned search: add `prune_stats` (what the search read) to the response; the request "
        "is then searched on its own, not batched with others",
    )

    @field_validator("time_range")
    @classmethod
    def _range_finite(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None:
            lo, hi = v
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("time_range values must be finite numbers of seconds")
        return v  # an end before the start is refused by the route (400): JSON Schema cannot say it


class ClipIn(BaseModel):
    """A span of an indexed video whose frames are the query."""

    model_config = ConfigDict(extra="forbid")

    video: str = Field(min_length=1, max_length=4096,
                       description="an indexed video: its id (GET /videos) or indexed path")
    start: float = Field(ge=0, description="seconds")
    end: float = Field(gt=0, description="seconds, after start")


class SearchRequest(_SearchOptions):
    """One query: `text`, an `image`, a `clip` of an indexed video or segments `like` a hit, any of them
    together (at least one); the response has `hits`. An image can also be uploaded as multipart/form-data
    to POST /search/image."""

    text: Text | None = Field(default=None, description="the query text", examples=["a red car"])
    image: str | None = Field(
        default=None,
        min_length=1,
        description="a picture (PNG, JPEG, WebP...) as base64 or a `data:image/...;base64,` URI, encoded as "
        "a frame of the index is and searched with (and with `text` when given); at most the server's "
        "image size (413 beyond)",
    )
    clip: ClipIn | None = Field(default=None, description="query by the frames of this span of a video")
    like: int | None = Field(default=None, ge=0, le=2**53,
                             description="more like this: a hit's `segment_id`; that segment's own tokens "
                             "are the query, and it is left out of the hits unless `include_self`")
    include_self: bool = Field(default=False, description="with `like`: keep that segment among the hits")


class BatchSearchRequest(_SearchOptions):
    """Several text queries searched together; the response has `results`, one hit list per text."""

    texts: list[Text] = Field(min_length=1, max_length=MAX_BATCH, examples=[["a red car", "a dog"]])


def _search_form(v: object) -> str:
    return "BatchSearchRequest" if isinstance(v, dict) and "texts" in v else "SearchRequest"


# A request with `texts` is a batch, any other a single search: validation errors then speak of one form.
AnySearchRequest = Annotated[
    Annotated[SearchRequest, Tag("SearchRequest")] | Annotated[BatchSearchRequest, Tag("BatchSearchRequest")],
    Discriminator(_search_form),
]


class TranscriptOut(BaseModel):
    """The transcript line that matched, with its time."""

    text: str
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    speaker: str | None = None


class EvidenceOut(BaseModel):
    """Where one query token matched best in the hit's segment."""

    token: int = Field(description="index of the query token")
    label: str | None = Field(description="the query token as text, when the encoder says")
    frame: int = Field(description="index of the winning frame among the segment's sampled frames")
    time: float = Field(description="time of the winning frame, seconds")
    row: int | None = Field(description="row of the winning token in the frame's token grid (null: unknown)")
    col: int | None = Field(description="column of the winning token in that grid (null: unknown)")
    contribution: float = Field(description="the token's contribution to the score (they sum to it)")


class HitOut(BaseModel):
    """One retrieved segment."""

    video_id: str = Field(description="stable id of the video: GET /videos/{video_id} streams it")
    video: str = Field(description="absolute path of the video on the server")
    video_name: str
    start: float = Field(description="segment start, seconds")
    end: float = Field(description="segment end, seconds")
    score: float = Field(description="the ranking score (higher is better): MaxSim, or the reranker's when "
                         "the search re-ranked")
    scores: dict[str, float] = Field(
        default_factory=dict,
        description='the score of each stage that ranked the hit: {"maxsim": ...} and, re-ranked, '
        '{"maxsim": ..., "rerank": ...}; with the transcript channel {"visual", "transcript", "fused"} '
        '(those that scored it)',
    )
    best_time: float = Field(description="time of the frame that matched best, seconds")
    segment_id: int
    thumbnail_url: str | None = Field(description="GET this for the JPEG thumbnail (null when none stored)")
    video_url: str = Field(description="relative URL of the video, with a #t=start,end media fragment")
    thumbnail: str | None = Field(default=None, description="data URI, only with include_thumbnails")
    transcript: TranscriptOut | None = Field(
        default=None,
        description="searches with the transcript channel: the segment's line that matched best",
    )
    evidence: list[EvidenceOut] = Field(default_factory=list, description="per query token, where it matched")
    grid: list[int] | None = Field(default=None, description="[rows, cols] of the segment's token grid, "
                                   "null when the positions are unknown")
    explain_url: str | None = Field(
        description="GET this for a PNG of the best frame with a heatmap of the matches (null for a query "
        "with an image or a clip, which a URL cannot carry)")


class MomentOut(BaseModel):
    """Segments of one video merged into one moment (with `group`)."""

    video_id: str
    video: str
    video_name: str
    start: float = Field(description="moment start, seconds (refined from the matching frames)")
    end: float = Field(description="moment end, seconds")
    score: float = Field(description="the best segment's score")
    best_time: float = Field(description="time of the frame that matched best, seconds")
    segments: list[HitOut] = Field(description="the segments merged, in time order")
    video_url: str = Field(description="relative URL of the video, with a #t=start,end media fragment")


class PruneStatsOut(BaseModel):
    """What a pruned search read, summed over the request's texts."""

    queries: int
    candidates: int = Field(description="segments scored exactly")
    refined: int = Field(description="segments scored from residual codes")
    bytes_read: int = Field(description="token, inverted-list, bag, centroid and residual bytes read")
    total_token_bytes: int = Field(description="token bytes an exact search of the same texts reads")
    fraction: float = Field(description="bytes_read / total_token_bytes")
    exhaustive_parts: int = Field(description="parts without a prune index, scored exhaustively")


_MODE_RAN = "the search that ran: the request's `mode`, else the server's default"
_PRUNE_STATS = "only with `include_prune_stats` on a pruned search"


class SearchResponse(BaseModel):
    hits: list[HitOut]
    moments: list[MomentOut] | None = Field(default=None, description="only with `group`")
    took_ms: float
    mode: Mode = Field(description=_MODE_RAN)
    prune_stats: PruneStatsOut | None = Field(default=None, description=_PRUNE_STATS)


class BatchSearchResponse(BaseModel):
    results: list[list[HitOut]] = Field(description="hits for each text, in the order given")
    moments: list[list[MomentOut]] | None = Field(default=None, description="only with `group`: moments "
                                                  "for each text, in the order given")
    took_ms: float
    mode: Mode = Field(description=_MODE_RAN)
    prune_stats: PruneStatsOut | None = Field(default=None, description=_PRUNE_STATS)


class VideoOut(BaseModel):
    id: str
    path: str
    name: str
    segments: int
    indexed_until: float = Field(description="end of its last indexed segment, seconds")


class VideoList(BaseModel):
    videos: list[VideoOut]


class DeleteResponse(BaseModel):
    video_id: str
    path: str
    deleted_segments: int
    version: int


class IngestRequest(BaseModel):
    """Files or folders (searched recursively for videos) under the server's ingest root."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        min_length=1,
        max_length=MAX_INGEST_PATHS,
        description="absolute, or relative to the ingest root",
        examples=[["clips/"]],
    )


class FileIssue(BaseModel):
    path: str
    reason: str


class VideoProgressOut(BaseModel):
    """Where the ingest of the file being worked on stands (see maxsim.VideoProgress)."""

    path: str
    duration_s: float = Field(description="the video's duration as its container announces it (0 if unknown)")
    decoded_s: float = Field(description="seconds of the video decoded so far")
    segments_decoded: int = Field(description="segments cut and sampled so far")
    segments_encoded: int = Field(description="segments encoded so far")
    fraction: float = Field(description="share of the video done, 0 to 1 (decoded, held back by encoding)")
    elapsed_s: float = Field(description="seconds since this file's ingest started")
    eta_s: float | None = Field(description="estimated seconds left for this file (null until measurable)")


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    total: int = Field(description="files in the job")
    done: int = Field(description="files processed so far")
    progress: float = Field(description="done / total, 0 to 1")
    current: str | None = Field(description="the file being ingested now")
    video: VideoProgressOut | None = Field(default=None, description="progress inside the current file")
    ingested: list[str]
    skipped: list[FileIssue]
    failed: list[FileIssue]
    segments: int
    version: int | None = Field(description="index version after the last commit of this job")
    error: str | None
    created: float
    started: float | None
    finished: float | None


class JobAccepted(BaseModel):
    id: str
    status_url: str
    files: int


class JobList(BaseModel):
    jobs: list[JobOut]


class Batching(BaseModel):
    """What the search batcher has done since the server started."""

    requests: int
    texts: int
    batches: int = Field(description="engine calls")
    mean_batch: float = Field(description="texts per engine call")
    largest_batch: int
    busy_s: float = Field(description="seconds spent in engine calls")
    rejected: int = Field(0, description="searches turned away with 503: too many were waiting")


class SearchDefaults(BaseModel):
    """The search options a request gets when it does not set them (`maxsim serve --pruned ...`)."""

    mode: Mode
    n_candidates: int | None = Field(description="null: the engine's default")
    n_refine: int | None = Field(description="null: the engine's default")
    nprobe: int | None = Field(description="null: the engine's default")
    rerank: int = Field(0, description="hits re-scored by the reranker (0: none)")


class Health(BaseModel):
    status: Literal["ok"]
    version: int = Field(description="index version being searched")
    segments: int
    videos: int
    encoder: str
    auth_required: bool
    ingest_enabled: bool
    batching: Batching
    prune_index: bool = Field(
        description="the index has a prune index (`maxsim prune`); without one a pruned search scores "
        "every segment"
    )
    search_defaults: SearchDefaults
    max_k: int = Field(description="the largest k a search may ask for (`maxsim serve --max-k`)")
    search: dict[str, Any] = Field(
        default_factory=dict,
        description="where searches run: kernel `backend`, `device`, and the index's placement (`path`: "
        "mapped, resident, resident+stream or stream; parts resident and streamed, bytes, budget)",
    )


class ErrorOut(BaseModel):
    detail: str
