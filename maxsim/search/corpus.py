"""Where a snapshot's tokens live when they are scored: :class:`Corpus`.

Two ways, chosen by the search backend:

- **mapped** (the compiled CPU kernel): the chunks are the snapshot's memory maps, used as they are.
- **placed** (Triton or torch, on a GPU, or on CPU tensors standing for one in tests): every part's tokens,
  offsets and scales are copied to the device once, in the stored dtype (never widened), as members of
  *groups* of parts scored with one kernel launch each. Parts are immutable, so a corpus opened with the
  previous version's corpus reuses its groups by part id: a refresh after an ingest uploads only the new
  part, a delete uploads nothing (deleted and filtered rows are a per-search device mask), and a group that
  lost parts to a compaction is cut down on the device. Parts beyond the device budget (``budget``: bytes,
  or a fraction of the device's memory; by default what leaves 20% of the GPU free) stay in the memory
  maps and are streamed through a double-buffered staging ring on a side stream at each search, so the
  copies overlap the scoring (:class:`Stager`). Several devices (``devices``) each hold some groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from maxsim.index.snapshot import Snapshot
from maxsim.kernels import Docs, prepare_docs, triton_available

PLACEMENTS = ("auto", "mapped", "resident", "stream")
# Groups smaller than this share of the largest are merged on the device once there are more than
# MAX_GROUPS of them: each group is one kernel launch per search.
MAX_GROUPS = 8
DEFAULT_FREE_SHARE = 0.2  # by default placement leaves this share of the GPU's memory free


@dataclass
class PlacedChunk:
    """One chunk of a snapshot as the CPU kernel reads it: its mapped tokens, CSR offsets and (int8 / fp8)
    scales, and the snapshot table rows of its segments."""

    tokens: torch.Tensor  # (n_tokens, dim), storage dtype
    offsets: torch.Tensor  # (n_segments + 1,) int64
    host_offsets: torch.Tensor  # the same on the CPU
    scales: torch.Tensor | None  # (n_tokens,) float32 for int8 / fp8 storage
    rows: np.ndarray  # table rows of these segments in the snapshot
    part: str  # id of the part it belongs to

    @property
    def n_segments(self) -> int:
        return int(self.rows.size)


@dataclass
class Group:
    """Parts held together on one device and scored with one kernel launch: their chunks' tokens, offsets
    and scales concatenated (:class:`~maxsim.kernels.Docs`), and each part's segment count in order."""

    parts: tuple[str, ...]
    counts: tuple[int, ...]  # segments of each part, in order
    docs: Docs
    slot: int = 0  # which of the corpus's devices holds it

    @property
    def device(self) -> torch.device:
        return self.docs.d.device

    def subset(self, keep: tuple[str, ...]) -> Group:
        """This group restricted to the parts ``keep`` (in its order), cut on the device: nothing is
        uploaded."""
        d, off, sc = self.docs.d, self.docs.offsets, self.docs.d_scale
        seg0 = np.concatenate([[0], np.cumsum(self.counts)])
        toks, scales, counts, lens = [], [], [], []
        for i, pid in enumerate(self.parts):
            if pid not in keep:
                continue
            s0, s1 = int(seg0[i]), int(seg0[i + 1])
            t0, t1 = int(off[s0]), int(off[s1])
            toks.append(d[t0:t1])
            if sc is not None:
                scales.append(sc[t0:t1])
            counts.append(s1 - s0)
            lens.append(off[s0 + 1 : s1 + 1] - off[s0:s1])
        offsets = torch.zeros(sum(counts) + 1, dtype=torch.int64)
        if lens:
            offsets[1:] = torch.cumsum(torch.cat(lens), 0)
        tokens = torch.cat(toks) if toks else d[:0]
        scale = (torch.cat(scales) if scales else sc[:0]) if sc is not None else None
        kept = tuple(p for p in self.parts if p in keep)
        return Group(kept, tuple(counts), prepare_docs(tokens, offsets, scale), self.slot)


def merge_groups(groups: list[Group]) -> Group:
    """One group holding the parts of ``groups`` (on the first one's device), concatenated on the device."""
    dev = groups[0].device
    toks = [g.docs.d.to(dev) for g in groups]
    lens = [g.docs.offsets[1:] - g.docs.offsets[:-1] for g in groups]
    offsets = torch.zeros(sum(g.docs.n_d for g in groups) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.cat(lens), 0)
    scale = None
    if groups[0].docs.d_scale is not None:
        scale = torch.cat([g.docs.d_scale.to(dev) for g in groups])
    return Group(sum((g.parts for g in groups), ()), sum((g.counts for g in groups), ()),
                 prepare_docs(torch.cat(toks), offsets, scale), groups[0].slot)


class Stager:
    """A double-buffered staging ring for streaming host token chunks to the device: on CUDA each chunk is
    copied into pinned host memory, sent to the device on a side stream, and the scoring stream waits for
    that copy only; a slot is reused once the scoring that read it is done. On the CPU it copies."""

    def __init__(self, device: torch.device, n_slots: int = 2) -> None:
        self.device = device
        self.n_slots = n_slots
        self._i = 0
        self.bytes = 0
        self.chunks = 0
        self._cuda = device.type == "cuda"
        if self._cuda:
            self.stream = torch.cuda.Stream(device)
            self._done = [None] * n_slots  # event after the scoring that read each slot
            self._pinned: list[dict[str, torch.Tensor]] = [{} for _ in range(n_slots)]
            self._dev: list[dict[str, torch.Tensor]] = [{} for _ in range(n_slots)]

    def _buffer(self, pool: dict[str, torch.Tensor], key: str, like: torch.Tensor, pinned: bool
                ) -> torch.Tensor:
        n = like.numel()
        buf = pool.get(key)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            size = max(n, 1 if buf is None else 2 * buf.numel())
            buf = torch.empty(size, dtype=like.dtype, pin_memory=pinned) if pinned else torch.empty(
                size, dtype=like.dtype, device=self.device)
            pool[key] = buf
        return buf[:n].view(like.shape)

    def stage(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Device copies of host ``tensors``; on CUDA the current stream is made to wait for them."""
        self.chunks += 1
        self.bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        if not self._cuda:
            return {k: t.to(self.device, copy=True) for k, t in tensors.items()}
        slot = self._i % self.n_slots
        self._i += 1
        main = torch.cuda.current_stream(self.device)
        out = {}
        with torch.cuda.stream(self.stream):
            if self._done[slot] is not None:
                self.stream.wait_event(self._done[slot])  # the scoring that read this slot has finished
            for k, t in tensors.items():
                host = self._buffer(self._pinned[slot], k, t, pinned=True)
                host.copy_(t)
                dev = self._buffer(self._dev[slot], k, t, pinned=False)
                dev.copy_(host, non_blocking=True)
                out[k] = dev
        ready = torch.cuda.Event()
        ready.record(self.stream)
        main.wait_event(ready)
        self._slot = slot
        return out

    def release(self) -> None:
        """Mark the last staged slot as read once the work queued on the current stream is done."""
        if self._cuda:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(self.device))
            self._done[self._slot] = ev


def search_device(device: str | None) -> str:
    """The device searches run on: ``"auto"`` (or None) is the first CUDA device when torch sees one and
    Triton imports, else the CPU; anything else is taken as named (checked when the corpus is placed)."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() and triton_available() else "cpu"
    return str(device)


def parse_device(device: str | torch.device | None) -> torch.device:
    """The device a user named (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ValueError for one torch lacks."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"search device {device!r} is not a device ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"search device {str(device)!r}: torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"search device {str(device)!r}: torch sees {torch.cuda.device_count()} CUDA devices")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(
            f"search device {str(device)!r}: expected 'cpu' or a CUDA device ('cuda', 'cuda:1')")
    return dev


def device_budget(device: torch.device, budget: int | float | None) -> int | None:
    """Bytes of ``device`` a corpus may hold: ``budget`` bytes (an int), a fraction of the device's memory
    (a float in (0, 1]), or by default, on a GPU, what leaves 20% of it free; None: no limit (the CPU)."""
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise ValueError(
                f"device_memory must be bytes (an int > 0) or a fraction in (0, 1], got {budget!r}")
        if isinstance(budget, float):
            if budget > 1:
                raise ValueError(f"device_memory as a fraction must be in (0, 1], got {budget!r}")
            total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
            return None if total is None else int(budget * total)
        return int(budget)
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return max(0, int(free - DEFAULT_FREE_SHARE * total))


@dataclass
class _Plan:
    """What placement decided for one part."""

    part: str
    group: Group | None = None  # resident (reused or new)
    streamed: bool = False


@dataclass
class Corpus:
    """The tokens of one snapshot where they are scored (see the module docstring).

    ``placement``: ``"mapped"`` (memory maps, the CPU kernel's way), ``"resident"`` (copied to the device,
    beyond ``budget`` streamed), ``"stream"`` (everything streamed), ``"auto"`` (mapped for the CPU backend,
    else resident). ``previous``: the corpus of an older version of the same index, whose placement is reused.
    """

    snapshot: Snapshot
    device: torch.device
    placement: str = "mapped"
    devices: tuple[torch.device, ...] = ()
    budget: int | None = None
    chunks: list[PlacedChunk] = field(default_factory=list)  # mapped placement
    groups: list[Group] = field(default_factory=list)  # placed: resident groups
    streamed: list[str] = field(default_factory=list)  # placed: parts streamed at each search
    uploads: int = 0  # parts copied to a device by this corpus (reused ones are not counted)
    uploaded_bytes: int = 0
    reused: int = 0  # parts whose placement came from the previous corpus
    stager: Stager | None = None

    @classmethod
    def place(cls, snapshot: Snapshot, device: str | torch.device | None = "cpu", *,
              placement: str = "mapped", budget: int | float | None = None,
              devices: list[str | torch.device] | None = None, previous: Corpus | None = None) -> Corpus:
        """Place ``snapshot``'s tokens (see the class docstring)."""
        if placement not in PLACEMENTS or placement == "auto":
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS[1:])}, got {placement!r}")
        devs = tuple(parse_device(d) for d in (devices or [device]))
        dev = devs[0]
        if placement == "mapped" and (dev.type != "cpu" or len(devs) > 1):
            raise ValueError("mapped placement reads the memory maps: it needs the one device 'cpu'")
        corpus = cls(snapshot, dev, placement, devs, device_budget(dev, budget))
        if placement == "mapped":
            corpus._map()
        else:
            corpus._place(previous)
        return corpus

    # -- mapped ---------------------------------------------------------------------------------------------
    def _map(self) -> None:
        part_ids = [p["id"] for p in self.snapshot.manifest.parts]
        for ch in self.snapshot.chunks:
            self.chunks.append(PlacedChunk(ch.tokens, ch.offsets, ch.offsets, ch.scales, ch.rows,
                                           part_ids[ch.part]))

    # -- placed ---------------------------------------------------------------------------------------------
    def part_chunks(self, part: str) -> list:
        """The snapshot's chunks of ``part``, in order."""
        i = next(i for i, p in enumerate(self.snapshot.manifest.parts) if p["id"] == part)
        return [ch for ch in self.snapshot.chunks if ch.part == i]

    def _upload(self, parts: list[str], slot: int) -> Group:
        dev = self.devices[slot]
        toks, scales, lens, counts = [], [], [], []
        for pid in parts:
            chunks = self.part_chunks(pid)
            for ch in chunks:
                toks.append(ch.tokens)
                lens.append(ch.offsets[1:] - ch.offsets[:-1])
                if ch.scales is not None:
                    scales.append(ch.scales)
            counts.append(sum(int(ch.rows.size) for ch in chunks))
        offsets = torch.zeros(sum(counts) + 1, dtype=torch.int64)
        if lens:
            offsets[1:] = torch.cumsum(torch.cat(lens), 0)
        host = torch.cat(toks) if toks else torch.empty(0, self.snapshot.manifest.dim)
        tokens = host.to(dev) if dev.type != "cpu" else host.clone()
        scale = None
        if scales:
            scale = torch.cat(scales).to(dev) if dev.type != "cpu" else torch.cat(scales).clone()
        group = Group(tuple(parts), tuple(counts), prepare_docs(tokens, offsets, scale), slot)
        self.uploads += len(parts)
        self.uploaded_bytes += group.docs.nbytes
        return group

    def _place(self, previous: Corpus | None) -> None:
        parts = [p["id"] for p in self.snapshot.manifest.parts]
        present = set(parts)
        sizes = {p["id"]: int(p.get("token_bytes", 0)) + 8 * (int(p["n_segments"]) + 1)
                 for p in self.snapshot.manifest.parts}
        kept: list[Group] = []
        if previous is not None and previous.placement == self.placement and previous.devices == self.devices:
            for g in previous.groups:
                keep = tuple(p for p in g.parts if p in present)
                if keep:
                    kept.append(g if keep == g.parts else g.subset(keep))
                    self.reused += len(keep)
        placed = {p for g in kept for p in g.parts}
        used = sum(g.docs.nbytes for g in kept)
        new: list[str] = []
        for pid in parts:
            if pid in placed:
                continue
            if self.placement == "stream" or (self.budget is not None and used + sizes[pid] > self.budget):
                self.streamed.append(pid)
            else:
                new.append(pid)
                used += sizes[pid]
        groups = list(kept)
        if new:  # the new parts, spread over the devices by bytes
            per_dev: list[list[str]] = [[] for _ in self.devices]
            load = [sum(g.docs.nbytes for g in kept if g.slot == i) for i in range(len(self.devices))]
            for pid in new:
                i = load.index(min(load))
                per_dev[i].append(pid)
                load[i] += sizes[pid]
            for slot, pids in enumerate(per_dev):
                if pids:
                    groups.append(self._upload(pids, slot))
        self.groups = self._consolidate(groups)
        if self.streamed:
            self.stager = Stager(self.device)

    def _consolidate(self, groups: list[Group]) -> list[Group]:
        """Merge small groups (per device) on the device once there are more than :data:`MAX_GROUPS`."""
        out = []
        order = {p["id"]: i for i, p in enumerate(self.snapshot.manifest.parts)}
        for slot in range(len(self.devices)):
            mine = [g for g in groups if g.slot == slot]
            if len(mine) > MAX_GROUPS:
                biggest = max(g.docs.nbytes for g in mine)
                small = [g for g in mine if g.docs.nbytes * MAX_GROUPS < biggest]
                if len(small) < 2:
                    small = sorted(mine, key=lambda g: g.docs.nbytes)[: len(mine) - MAX_GROUPS + 1]
                small.sort(key=lambda g: order[g.parts[0]])  # parts in table order: ties break as on the CPU
                mine = [g for g in mine if g not in small] + [merge_groups(small)]
            out += mine
        return out

    def group_rows(self, group: Group) -> np.ndarray:
        """The snapshot table rows of a group's segments, in its order."""
        rows = [ch.rows for pid in group.parts for ch in self.part_chunks(pid)]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    # -- facts ----------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.snapshot.manifest.dim)

    @property
    def resident_bytes(self) -> int:
        return sum(g.docs.nbytes for g in self.groups)

    def stats(self) -> dict[str, Any]:
        """How the corpus is placed: device(s), path (``mapped``, ``resident``, ``resident+stream``,
        ``stream``), parts resident and streamed, bytes, budget, and the uploads this version needed."""
        if self.placement == "mapped":
            return {"device": str(self.device), "path": "mapped"}
        resident = sum(len(g.parts) for g in self.groups)
        path = "stream" if not resident else "resident+stream" if self.streamed else "resident"
        return {
            "device": str(self.device), "devices": [str(d) for d in self.devices], "path": path,
            "groups": len(self.groups), "resident_parts": resident, "streamed_parts": len(self.streamed),
            "resident_bytes": self.resident_bytes, "budget_bytes": self.budget, "uploads": self.uploads,
            "uploaded_bytes": self.uploaded_bytes, "reused_parts": self.reused,
        }
