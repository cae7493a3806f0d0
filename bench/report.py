"""A run's output folder: results.json written after every measurement, results.md and a printed summary."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from maxsim.bench.machine import machine


@dataclass
class Column:
    """One column of a table: the row key, its header and a format spec (or a function) for its values."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = ""


@dataclass
class Table:
    """Rows (dicts) shown under a title with the given columns."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def fmt_value(value: Any, fmt: str | Callable[[Any], str] = "") -> str:
    """A cell: '-' for a missing value, the format spec or function applied otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if callable(fmt):
        return fmt(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v, fmt) for v in value) + "]"
    if fmt and isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def _cells(table: Table) -> list[list[str]]:
    return [[fmt_value(r.get(c.key), c.fmt) for c in table.columns] for r in table.rows]


def markdown_table(table: Table) -> str:
    """The table as GitHub Markdown (numbers right-aligned)."""
    head = "| " + " | ".join(c.header for c in table.columns) + " |"
    align = []
    for c in table.columns:
        numeric = any(isinstance(r.get(c.key), (int, float)) for r in table.rows)
        align.append("---:" if numeric else "---")
    lines = [head, "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table)]
    return "\n".join(lines)


def text_table(table: Table) -> str:
    """The table as aligned plain text, for the terminal."""
    cells = _cells(table)
    headers = [c.header for c in table.columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def default_out_dir(subcommand: str, root: str | Path = "bench/out") -> Path:
    """``bench/out/<subcommand>-<UTC timestamp>`` (a suffix keeps two runs in one second apart)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{subcommand}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dict__"):
        return vars(o)
    return str(o)


def _strict(o: Any) -> Any:
    """NaN and infinities as null, so that every JSON parser reads the file."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON atomically (a reader never sees half a file, an interrupt never leaves one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_strict(data), f, indent=2, default=_json_default, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


class Run:
    """The record of one benchmark run, kept on disk as it grows.

    Subcommands add figures with :meth:`add` (a row appended to a named list) or :meth:`put` (a named
    value); each call rewrites ``results.json``, so an interrupted run keeps every finished measurement.
    """

    def __init__(self, subcommand: str, config: dict[str, Any], source: dict[str, Any], out_dir: Path):
        self.dir = Path(out_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()
        self.data: dict[str, Any] = {
            "subcommand": subcommand,
            "status": "running",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config,
            "config_source": source,
            "machine": machine(),
            "results": {},
        }
        self.save()

    @property
    def config(self) -> dict[str, Any]:
        return self.data["config"]

    @property
    def results(self) -> dict[str, Any]:
        return self.data["results"]

    def add(self, name: str, row: dict[str, Any]) -> None:
        """Append ``row`` to the list ``results[name]`` and save."""
        self.results.setdefault(name, []).append(row)
        self.save()

    def put(self, name: str, value: Any) -> None:
        """Set ``results[name]`` and save."""
        self.results[name] = value
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self._t0, 3)
        write_json(self.dir / "results.json", self.data)

    def finish(
        self,
        status: str,
        tables: Sequence[Table],
        plots: Callable[[dict[str, Any], Path], list[Path]] | None = None,
        summary: int | Sequence[int] | None = 0,
        stream=None,
    ) -> None:
        """Mark the run ``status``, write results.md and the plots, and print table ``summary``."""
        stream = stream or sys.stdout
        self.data["status"] = status
        self.data["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        files = []
        if plots is not None:
            try:
                files = [str(p.name) for p in plots(self.results, self.dir)]
            except ImportError as e:
                print(
                    f"warning: no plots ({e}); install matplotlib (pip install -e '.[bench]' in the maxsim "
                    "checkout)", file=stream
                )
            except Exception as e:  # a plot must never lose the measurements
                print(f"warning: plotting failed: {type(e).__name__}: {e}", file=stream)
        self.data["plots"] = files
        self.save()
        (self.dir / "results.md").write_text(self.markdown(tables, files))
        if summary is not None:
            for i in [summary] if isinstance(summary, int) else summary:
                if i < len(tables) and tables[i].rows:
                    print(f"\n{tables[i].title}\n{text_table(tables[i])}", file=stream)
        if status == "interrupted":
            print("run interrupted: the measurements finished so far are kept", file=stream)
        elif status != "complete":
            print(f"run {status}: {self.data.get('error', 'see above')}", file=stream)
        print(
            f"results: {self.dir}/results.json, results.md" + (f", {len(files)} plot(s)" if files else ""),
            file=stream,
        )

    def markdown(self, tables: Sequence[Table], plots: Sequence[str] = ()) -> str:
        m = self.data["machine"]
        gpu = m["gpu"]["name"] if m.get("gpu") else "no GPU"
        git = m.get("git") or {}
        commit = (git.get("commit") or "?")[:10] + (" (modified)" if git.get("dirty") else "")
        src = self.data["config_source"]
        lines = [
            f"# maxsim-bench {self.data['subcommand']}",
            "",
            f"- status: {self.data['status']}, {self.data['started']}, {self.data['elapsed_s']:.1f} s",
            f"- machine: {m['cpu']} ({m['cores']} cores), {gpu}; torch {m['versions'].get('torch', '?')}",
            f"- commit: {commit}",
            f"- config: {src.get('file')} preset {src.get('preset')}"
            + (f", overrides {' '.join(src.get('overrides') or [])}" if src.get("overrides") else ""),
            "",
        ]
        for t in tables:
            if not t.rows:
                continue
            lines += [f"## {t.title}", ""]
            if t.note:
                lines += [t.note, ""]
            lines += [markdown_table(t), ""]
        for p in plots:
            lines += [f"![{p}]({p})", ""]
        return "\n".join(lines)
