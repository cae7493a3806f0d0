"""Ground truth and predictions on disk: QVHighlights-style JSONL, a Charades-STA adapter, ranked predictions.

QVHighlights-style ground truth is one JSON object per line::

    {"qid": 7, "query": "a red scene", "vid": "v003", "duration": 24.0, "relevant_windows": [[4.0, 9.5]]}

Charades-STA lines are ``vid start end##sentence``. Predictions are one JSON object per query::

    {"qid": 7, "query": "a red scene", "predictions": [["v003", 4.0, 10.0, 0.93], ["v001", ...], ...]}

ranked best first, in the corpus-moment ``[video, start, end, score]`` form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from maxsim.bench.metrics import GroundTruth, Prediction

FORMATS = ("qvhighlights", "charades")


class GroundTruthError(ValueError):
    """A ground-truth or predictions file that cannot be read; the message names the file and line."""


def _number(value: object, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GroundTruthError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _window(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise GroundTruthError(f"{where}: a relevant window must be [start, end], got {value!r}")
    s = _number(value[0], "window start", where)
    e = _number(value[1], "window end", where)
    if s < 0 or e < s:
        raise GroundTruthError(f"{where}: window [{s}, {e}] must have 0 <= start <= end")
    return s, e


def parse_qvhighlights_line(line: str, where: str) -> GroundTruth:
    """One QVHighlights-style JSON line; ``where`` (``file:line``) prefixes every error."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise GroundTruthError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise GroundTruthError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("qid", "query", "vid", "relevant_windows") if k not in obj]
    if missing:
        raise GroundTruthError(f"{where}: missing key(s) {', '.join(missing)}")
    if not isinstance(obj["query"], str):
        raise GroundTruthError(f"{where}: query must be a string, got {obj['query']!r}")
    if not isinstance(obj["vid"], str) or not obj["vid"]:
        raise GroundTruthError(f"{where}: vid must be a non-empty string, got {obj['vid']!r}")
    wins = obj["relevant_windows"]
    if not isinstance(wins, list) or not wins:
        raise GroundTruthError(f"{where}: relevant_windows must be a non-empty list of [start, end]")
    windows = [_window(w, where) for w in wins]
    duration = obj.get("duration")
    if duration is not None:
        duration = _number(duration, "duration", where)
        late = [w for w in windows if w[1] > duration + 1e-6]
        if late:
            raise GroundTruthError(f"{where}: window {list(late[0])} ends after the duration {duration}")
    extra = {k: v for k, v in obj.items() if k not in ("qid", "query", "vid", "relevant_windows", "duration")}
    return GroundTruth(str(obj["qid"]), obj["query"], obj["vid"], windows, duration, extra)


def parse_charades_line(line: str, where: str, qid: str) -> GroundTruth:
    """One Charades-STA line ``vid start end##sentence``."""
    head, sep, sentence = line.partition("##")
    if not sep:
        raise GroundTruthError(f"{where}: expected 'vid start end##sentence', found no '##'")
    parts = head.split()
    if len(parts) != 3:
        raise GroundTruthError(f"{where}: expected 'vid start end' before '##', got {head.strip()!r}")
    try:
        s, e = float(parts[1]), float(parts[2])
    except ValueError as err:
        raise GroundTruthError(
            f"{where}: start and end must be numbers, got {parts[1]!r} {parts[2]!r}"
        ) from err
    window = _window([s, e], where)
    sentence = sentence.strip()
    if not sentence:
        raise GroundTruthError(f"{where}: empty sentence after '##'")
    return GroundTruth(qid, sentence, parts[0], [window])


def load_ground_truth(path: str | Path, fmt: str = "auto") -> list[GroundTruth]:
    """Read a ground-truth file: ``fmt`` is ``qvhighlights``, ``charades`` or ``auto`` (by content).

    Blank lines are skipped. Any malformed line raises :class:`GroundTruthError` naming ``path:line``;
    duplicate qids are refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"ground-truth file {path} does not exist")
    if fmt not in FORMATS + ("auto",):
        raise GroundTruthError(
            f"unknown ground-truth format {fmt!r}; expected one of {', '.join(FORMATS)} or auto"
        )
    out: list[GroundTruth] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if fmt == "auto":
                fmt = "qvhighlights" if line.lstrip().startswith("{") else "charades"
            if fmt == "qvhighlights":
                gt = parse_qvhighlights_line(line, where)
            else:
                gt = parse_charades_line(line, where, qid=str(len(out)))
            if gt.qid in seen:
                raise GroundTruthError(f"{where}: qid {gt.qid!r} already used on line {seen[gt.qid]}")
            seen[gt.qid] = lineno
            out.append(gt)
    if not out:
        raise GroundTruthError(f"ground-truth file {path} holds no queries")
    return out


def ground_truth_record(gt: GroundTruth) -> dict:
    """The QVHighlights-style JSON object of ``gt``."""
    rec = {
        "qid": gt.qid,
        "query": gt.query,
        "vid": gt.vid,
        "duration": gt.duration,
        "relevant_windows": [list(w) for w in gt.windows],
    }
    rec.update(gt.extra)
    return rec


def write_ground_truth(path: str | Path, items: Iterable[GroundTruth]) -> Path:
    """Write QVHighlights-style JSONL (a Charades-STA file read with the adapter converts this way)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for gt in items:
            f.write(json.dumps(ground_truth_record(gt)) + "\n")
    return path


def prediction_record(qid: str, query: str, preds: Sequence[Prediction], **extra: object) -> dict:
    """One query's predictions line."""
    rows = [[v, round(float(s), 4), round(float(e), 4), round(float(sc), 6)] for v, s, e, sc in preds]
    return {"qid": qid, "query": query, "predictions": rows, **extra}


def load_predictions(path: str | Path) -> dict[str, list[Prediction]]:
    """Read a predictions JSONL file into ``{qid: ranked predictions}`` (re-sorted by score, stably)."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"predictions file {path} does not exist")
    out: dict[str, list[Prediction]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise GroundTruthError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(obj, dict) or "qid" not in obj or not isinstance(obj.get("predictions"), list):
                raise GroundTruthError(f"{where}: expected an object with qid and a predictions list")
            preds = []
            for row in obj["predictions"]:
                if not isinstance(row, (list, tuple)) or len(row) < 4 or not isinstance(row[0], str):
                    raise GroundTruthError(
                        f"{where}: a prediction must be [video, start, end, score], got {row!r}"
                    )
                s, e = _window(row[1:3], where)
                preds.append((row[0], s, e, _number(row[3], "score", where)))
            out[str(obj["qid"])] = rank(preds)
    return out


def rank(preds: Sequence[Prediction]) -> list[Prediction]:
    """Predictions sorted by score, best first; equal scores keep their order."""
    return sorted(preds, key=lambda p: -p[3])


def check_coverage(predictions: Mapping[str, Sequence[Prediction]], gts: Sequence[GroundTruth]) -> list[str]:
    """Ground-truth qids that have no predictions (they count as misses)."""
    return [g.qid for g in gts if g.qid not in predictions]
