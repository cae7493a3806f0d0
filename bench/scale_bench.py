"""Scale benchmark: pruned vs exact search, token reduction, Ray ingest and sharded search.

``run(config, out_dir) -> dict`` (importable as ``maxsim.bench.scale_bench``; ``python -m
maxsim.bench.scale_bench --preset 100k --out DIR`` runs it alone). Sections, each optional:

- ``pruning``: a synthetic corpus (:mod:`maxsim.synthetic_tokens`: clustered tokens, videos with themes,
  temporal redundancy) written to a real index in ``parts`` parts, its prune index built, then per
  setting (``n_candidates``, ``nprobe``): recall@10 and top-1 agreement of the pruned search against
  the exact search, the fraction of the exact search's bytes read (candidate tokens + inverted lists +
  centroid bags + centroids), QPS and p50/p99 latency of both (one query per call, scoring only: query
  vectors are given, as after text encoding).
- ``pooling``: segments with many tokens per frame; per reduction setting (dedup threshold, pooling
  factor): tokens per segment, bytes per hour of video, and recall@10 / top-1 agreement of exact search
  on the reduced segments against exact search on the unreduced ones.
- ``ray``: generated videos ingested single-process, with Ray and 1 worker, with Ray and 2 workers
  (seconds of video per second; Ray start-up excluded), index contents compared, and sharded search
  (2 shards) compared hit by hit with the engine.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from maxsim.bench.metrics import percentiles
from tqdm.auto import tqdm

from maxsim import kernels
from maxsim.candidates import PrunedSearcher, merge_topk, update_prune_index
from maxsim.pooling import reduce_tokens
from maxsim.store import SegmentRecord, Store
from maxsim.synthetic_tokens import CorpusSpec, SyntheticCorpus

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "pruning": {"n_segments": 3000, "frames": 4, "tokens_per_frame": 8, "dim": 64, "n_concepts": 512,
                    "parts": 2, "queries": 10, "settings": [[100, 4], [300, 8]]},
        "pooling": {"n_segments": 60, "frames": 8, "tokens_per_frame": 16, "dim": 64, "queries": 10,
                    "settings": [[None, 1], [0.95, 1], [None, 2], [0.95, 2]]},
        "ray": {"videos": 2, "seconds": 4, "workers": [1, 2]},
    },
    "100k": {
        "pruning": {"n_segments": 100_000, "frames": 4, "tokens_per_frame": 8, "dim": 128, "n_concepts": 8192,
                    "parts": 2, "queries": 40,
                    "settings": [[250, 4], [500, 4], [1000, 4], [1000, 8], [2000, 8], [4000, 8]]},
        "pooling": {"n_segments": 240, "frames": 16, "tokens_per_frame": 32, "dim": 128, "queries": 40,
                    "settings": [[None, 1], [0.95, 1], [0.9, 1], [None, 2], [None, 4], [0.95, 2],
                                 [0.95, 4]]},
        "ray": {"videos": 8, "seconds": 60, "workers": [1, 2], "slow_encoder_s": 0.1},
    },
    "1m": {
        # 16 tokens x 64 d per segment so that 1M segments (1.9 GiB) fit a 2-core / 24 GiB machine.
        # Centroids: PLAID's rule (16384 per part) by default (a 14-minute build on the shared 2-core CPU);
        # the committed results also hold runs with "n_centroids": 8192 and 2048.
        "pruning": {"n_segments": 1_000_000, "frames": 4, "tokens_per_frame": 4, "dim": 64,
                    "n_concepts": 16384, "parts": 8, "queries": 20,
                    "settings": [[2500, 8], [5000, 8], [10000, 8], [20000, 8]]},
    },
}

# storage per hour is reported for 10 s segments (360 per hour) at the benchmark's dim and at a
# ColQwen-like dim of 320, in float16
SEGMENTS_PER_HOUR = 360
COLQWEN_DIM = 320


def _percentile_ms(times: list[float], p: float) -> float:
    return percentiles([t * 1000 for t in times], (p,))[f"p{p:g}"]


def _write_corpus(root: Path, corpus: SyntheticCorpus, parts: int, targets: np.ndarray,
                  n_query_tokens: int, progress: bool) -> list[torch.Tensor]:
    """Write the corpus as ``parts`` committed parts; return one query per target."""
    spec = corpus.spec
    store = Store.create(root, {"name": "synthetic", "dim": spec.dim}, spec.dim, "float16")
    per_part = math.ceil(spec.n_segments / parts / spec.segments_per_video) * spec.segments_per_video
    queries: dict[int, torch.Tensor] = {}
    times = [float(f) for f in range(spec.frames)]
    bar = tqdm(total=spec.n_segments, desc="write corpus", unit="seg", disable=not progress)
    first = 0
    while first < spec.n_segments:
        n = min(per_part, spec.n_segments - first)
        with store.writing():
            base = store.manifest()
            w = store.new_part(base)
            for b0, toks in corpus.blocks(8192 - 8192 % spec.segments_per_video, start=first, stop=first + n):
                for i in range(toks.shape[0]):
                    sid = b0 + i
                    j = sid % spec.segments_per_video
                    video = f"video{sid // spec.segments_per_video:07d}"
                    w.add(sid, SegmentRecord(video, "synthetic", "", 10.0 * j, 10.0 * (j + 1), times, None,
                                             toks[i]))
                for t in targets[(targets >= b0) & (targets < b0 + toks.shape[0])]:
                    queries[int(t)] = corpus.query(toks[int(t) - b0], n_tokens=n_query_tokens, seed=int(t))
                bar.update(toks.shape[0])
            store.commit(base, [w.close()], next_segment_id=first + n)
        first += n
    bar.close()
    return [queries[int(t)] for t in targets]


def _exact_one(snap, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    qo = torch.tensor([0, q.shape[0]])
    ss, rr = [], []
    for ch in snap.chunks:
        s, i = kernels.maxsim_topk(q, qo, ch.tokens, ch.offsets, k)
        ss.append(s)
        rr.append(torch.where(i >= 0, torch.from_numpy(ch.rows)[i.clamp(min=0)], torch.tensor(-1)))
    return merge_topk(torch.cat(ss, 1), torch.cat(rr, 1), k)


def bench_pruning(cfg: dict[str, Any], work: Path, progress: bool = True) -> dict[str, Any]:
    """Pruned vs exact search on a synthetic corpus written to a real index."""
    spec = CorpusSpec(n_segments=cfg["n_segments"], frames=cfg["frames"],
                      tokens_per_frame=cfg["tokens_per_frame"], dim=cfg["dim"], n_concepts=cfg["n_concepts"],
                      seed=cfg.get("seed", 0))
    corpus = SyntheticCorpus(spec)
    k = cfg.get("k", 10)
    targets = np.sort(np.random.default_rng(1).choice(spec.n_segments, cfg["queries"], replace=False))
    root = work / "pruning-index"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    queries = _write_corpus(root, corpus, cfg["parts"], targets, cfg.get("query_tokens", 32), progress)
    write_s = time.perf_counter() - t0
    store = Store(root)
    snap = store.snapshot()
    t0 = time.perf_counter()
    with store.writing():
        update_prune_index(snap, n_centroids=cfg.get("n_centroids"), iters=cfg.get("iters", 4),
                           progress=progress)
    build_s = time.perf_counter() - t0
    token_bytes = sum(ch.tokens.numel() * ch.tokens.element_size() for ch in snap.chunks)
    prune_bytes = sum(f.stat().st_size for f in (root / "prune").glob("*.npy"))
    exact_times, exact = [], []
    for q in tqdm(queries, desc="exact", disable=not progress):
        t = time.perf_counter()
        exact.append(_exact_one(snap, q, k))
        exact_times.append(time.perf_counter() - t)
    searcher = PrunedSearcher(snap)
    prune_parts = json.loads((root / "prune" / "manifest.json").read_text())["parts"]
    rows = []
    for n_cand, nprobe in cfg["settings"]:
        times, recall, top1, frac, cands = [], [], [], [], []
        bar = tqdm(queries, desc=f"pruned {n_cand}/{nprobe}", disable=not progress)
        for q, (_, er) in zip(bar, exact, strict=True):
            qo = torch.tensor([0, q.shape[0]])
            t = time.perf_counter()
            s, r, st = searcher.search(q, qo, snap.live, k, n_candidates=n_cand, nprobe=nprobe)
            times.append(time.perf_counter() - t)
            want = set(er[0].tolist())
            recall.append(len(want & set(r[0].tolist())) / k)
            top1.append(float(r[0, 0] == er[0, 0]))
            frac.append(st.fraction)
            cands.append(st.candidates)
        rows.append({
            "n_candidates": n_cand, "nprobe": nprobe, "recall@10": float(np.mean(recall)),
            "min_recall@10": float(np.min(recall)), "top1_agreement": float(np.mean(top1)),
            "bytes_fraction": float(np.mean(frac)), "qps": len(times) / sum(times),
            "p50_ms": _percentile_ms(times, 50), "p99_ms": _percentile_ms(times, 99),
        })
    return {
        "corpus": spec.to_dict(), "parts": cfg["parts"], "queries": len(queries), "k": k,
        "query_tokens": cfg.get("query_tokens", 32),
        "token_bytes": token_bytes, "prune_index_bytes": prune_bytes,
        "prune_index_overhead": prune_bytes / token_bytes,
        "write_s": write_s, "prune_build_s": build_s,
        "n_centroids_per_part": [int(e["n_centroids"]) for e in prune_parts.values()],
        "exact": {"qps": len(exact_times) / sum(exact_times), "p50_ms": _percentile_ms(exact_times, 50),
                  "p99_ms": _percentile_ms(exact_times, 99)},
        "pruned": rows,
        "target_top1_exact": float(np.mean([int(er[0, 0]) == t for (_, er), t in zip(exact, targets,
                                                                                     strict=True)])),
    }


def bench_pooling(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Storage and retrieval agreement of token reduction settings against the unreduced segments."""
    spec = CorpusSpec(n_segments=cfg["n_segments"], frames=cfg["frames"],
                      tokens_per_frame=cfg["tokens_per_frame"], dim=cfg["dim"],
                      n_concepts=cfg.get("n_concepts", 1024), seed=cfg.get("seed", 0))
    corpus = SyntheticCorpus(spec)
    segs = corpus.block(0, spec.n_segments)
    k = min(10, spec.n_segments)
    targets = np.sort(np.random.default_rng(2).choice(spec.n_segments, cfg["queries"], replace=False))
    queries = [corpus.query(segs[int(t)], n_tokens=cfg.get("query_tokens", 32), seed=int(t)) for t in targets]
    q = torch.cat(queries)
    q_off = torch.tensor([0] + np.cumsum([x.shape[0] for x in queries]).tolist())

    def search(reduced: list[torch.Tensor]) -> torch.Tensor:
        d = torch.cat(reduced)
        off = torch.tensor([0] + np.cumsum([x.shape[0] for x in reduced]).tolist())
        return kernels.maxsim_topk(q, q_off, d.to(torch.float16), off, k)[1]

    base = search(list(segs))
    out = []
    for dedup, factor in cfg["settings"]:
        t0 = time.perf_counter()
        reduced = [reduce_tokens(s, spec.frames, factor=factor, dedup=dedup)
                   for s in tqdm(segs, desc=f"reduce dedup={dedup} factor={factor}", disable=not progress)]
        secs = time.perf_counter() - t0
        tok = float(np.mean([r.shape[0] for r in reduced]))
        idx = search(reduced)
        out.append({
            "dedup": dedup, "factor": factor, "tokens_per_segment": tok,
            "reduction": spec.tokens_per_segment / tok,
            "mb_per_hour": SEGMENTS_PER_HOUR * tok * spec.dim * 2 / 1e6,
            "mb_per_hour_at_dim320": SEGMENTS_PER_HOUR * tok * COLQWEN_DIM * 2 / 1e6,
            "recall@10": float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                                         for a, b in zip(base, idx, strict=True)])),
            "top1_agreement": float((base[:, 0] == idx[:, 0]).float().mean()),
            "reduce_ms_per_segment": 1000 * secs / spec.n_segments,
        })
    return {"corpus": spec.to_dict(), "queries": len(queries), "settings": out}


class SlowColorEncoder:
    """The color-test encoder plus a fixed wait per clip: a stand-in for an encoder whose time is spent
    on an accelerator (the wait uses no CPU), to show how the Ray actor pool overlaps encoding."""

    def __init__(self, seconds_per_clip: float = 0.05) -> None:
        from maxsim.encoders import load_encoder

        self.inner = load_encoder("color-test")
        self.seconds_per_clip = seconds_per_clip
        self.name, self.dim = self.inner.name, self.inner.dim

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)

    def encode_clips(self, clips):
        time.sleep(self.seconds_per_clip * len(clips))
        return self.inner.encode_clips(clips)


def bench_ray(cfg: dict[str, Any], work: Path, progress: bool = True) -> dict[str, Any]:
    """Ray ingest throughput with 1 and 2 workers vs single-process; same index, same hits."""
    import ray

    from maxsim import distributed
    from maxsim.engine import Engine
    from maxsim.synthetic import COLORS, write_video

    vids = work / "ray-videos"
    shutil.rmtree(vids, ignore_errors=True)
    vids.mkdir(parents=True)
    names = list(COLORS)
    rng = np.random.default_rng(0)
    for i in range(cfg["videos"]):
        scenes = [(2.0, names[int(c)]) for c in rng.integers(0, len(names), int(cfg["seconds"] // 2))]
        write_video(vids / f"v{i:03d}.mp4", scenes, fps=10, size=(160, 96))
    total_s = cfg["videos"] * cfg["seconds"]
    t0 = time.perf_counter()
    distributed.init(num_cpus=cfg.get("num_cpus"))
    startup = time.perf_counter() - t0
    runs = []
    engines = {}
    # 1) the same ingest single-process and with Ray (color-test encoder): index and hits compared
    for label, workers in [("single-process", None)] + [(f"ray x{w}", w) for w in cfg["workers"]]:
        eng = Engine(work / f"ray-index-{label.replace(' ', '')}", encoder="color-test", segmenter="fixed:2")
        t = time.perf_counter()
        rep = eng.ingest([vids], progress=False, ray=workers is not None, ray_workers=workers or 1)
        secs = time.perf_counter() - t
        runs.append({"encoder": "color-test", "mode": label, "seconds": secs, "video_s_per_s": total_s / secs,
                     "segments": rep.segments})
        engines[label] = eng
    # 2) throughput of the pipeline itself with an encoder that waits per clip (an accelerator stand-in):
    # time to the first clip (pipeline start: worker and actor processes, encoder load) and the rate after
    slow = cfg.get("slow_encoder_s", 0.1)
    enc = SlowColorEncoder(slow)
    videos = [str(p.resolve()) for p in sorted(vids.glob("*.mp4"))]
    from maxsim.distributed import RayVideoEncoder
    from maxsim.segment import load_segmenter

    seg = load_segmenter("fixed:2")
    for workers in [None] + list(cfg["workers"]):
        eng = Engine(work / f"ray-rate-{workers}", encoder=enc, segmenter=seg)
        t0 = time.perf_counter()
        first, n = None, 0
        if workers is None:
            gen = (r for v in videos for r in eng._encode_video(v, "", "", seg))
        else:
            pipe = RayVideoEncoder(eng, videos, seg, "", num_workers=workers)
            gen = (r for v in videos for r in pipe(v, "", "", seg))
        for _ in gen:
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        rate = (n - 1) * (total_s / n) / max(1e-9, total - first)
        runs.append({"encoder": f"color-test + {slow * 1000:.0f} ms/clip wait",
                     "mode": "single-process" if workers is None else f"ray x{workers}", "seconds": total,
                     "video_s_per_s": total_s / total, "segments": n, "first_clip_s": first,
                     "video_s_per_s_after_first": rate})
    ref = engines["single-process"]
    words = ["red", "green blue", "orange", "white yellow", "black"]
    same_index, same_hits = True, True
    def hits(e, w):
        return [h.to_dict() for h in e.search(w, k=10)]

    for eng in engines.values():
        a, b = ref._snapshot, eng._snapshot
        for col in ("segment_id", "video", "start", "end", "frame_times", "token_count"):
            same_index &= a.table.column(col).to_pylist() == b.table.column(col).to_pylist()
        same_index &= all(torch.equal(a.segment_tokens(i), b.segment_tokens(i))
                          for i in range(a.table.num_rows))
        same_hits &= all(hits(eng, w) == hits(ref, w) for w in words)
    # sharded search over an index of several parts
    shard_root = work / "ray-index-sharded"
    shutil.rmtree(shard_root, ignore_errors=True)
    eng = Engine(shard_root, encoder="color-test", segmenter="fixed:2")
    for f in sorted(vids.glob("*.mp4")):
        eng.ingest([f], progress=False)
    sharded = distributed.ShardedSearch(eng, n_shards=2)
    try:
        same_sharded = all([h.to_dict() for h in sharded.search(w, k=10)] == hits(eng, w) for w in words)
    finally:
        sharded.close()
    resources = ray.cluster_resources()
    return {"videos": cfg["videos"], "video_seconds": total_s, "ray_startup_s": startup,
            "cluster_cpus": resources.get("CPU"), "cluster_gpus": resources.get("GPU", 0), "runs": runs,
            "same_index": bool(same_index), "same_hits": bool(same_hits),
            "sharded_same_hits": bool(same_sharded),
            "shards": 2, "parts": len(eng.manifest.parts)}


def run(config: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Run the sections present in ``config`` (see :data:`PRESETS`); write results.json/.md to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(config.get("work_dir", out / "work"))
    work.mkdir(parents=True, exist_ok=True)
    progress = config.get("progress", True)
    res: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "torch_threads": torch.get_num_threads(), "config": config}
    if "pooling" in config:
        res["pooling"] = bench_pooling(config["pooling"], progress)
    if "pruning" in config:
        res["pruning"] = bench_pruning(config["pruning"], work, progress)
    if "ray" in config:
        res["ray"] = bench_ray(config["ray"], work, progress)
    if not config.get("keep_work", False):
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(markdown(res))
    return res


def markdown(res: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = [f"# Scale benchmark ({res['time']}, {res['torch_threads']} torch threads)", ""]
    if "pruning" in res:
        p = res["pruning"]
        c = p["corpus"]
        lines += [
            f"## Pruned vs exact search: {c['n_segments']:,} segments x "
            f"{c['frames'] * c['tokens_per_frame']} tokens x {c['dim']} d (float16), {p['parts']} parts, "
            f"{p['queries']} queries of "
            f"{p['query_tokens']} tokens, k={p['k']}",
            "",
            f"Tokens {p['token_bytes'] / 2**30:.2f} GiB; prune index "
            f"{p['prune_index_bytes'] / 2**20:.1f} MiB "
            f"({100 * p['prune_index_overhead']:.1f}%), centroids per part {p['n_centroids_per_part']}, "
            f"built in {p['prune_build_s']:.0f} s. Exact search: {p['exact']['qps']:.2f} QPS, "
            f"p50 {p['exact']['p50_ms']:.0f} ms, p99 {p['exact']['p99_ms']:.0f} ms.",
            "",
            "| n_candidates | nprobe | recall@10 | min recall@10 | top-1 agreement | bytes read | QPS "
            "| p50 ms | p99 ms | speed-up (p50) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in p["pruned"]:
            lines.append(
                f"| {r['n_candidates']} | {r['nprobe']} | {r['recall@10']:.3f} | {r['min_recall@10']:.1f} | "
                f"{r['top1_agreement']:.3f} | {100 * r['bytes_fraction']:.2f}% | {r['qps']:.1f} | "
                f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {p['exact']['p50_ms'] / r['p50_ms']:.1f}x |"
            )
        lines.append("")
    if "pooling" in res:
        p = res["pooling"]
        c = p["corpus"]
        lines += [
            f"## Token reduction: {c['n_segments']} segments x {c['frames']} frames x "
            f"{c['tokens_per_frame']} tokens x {c['dim']} d, {p['queries']} queries; agreement with the "
            "unreduced segments",
            "",
            "| dedup | pool factor | tokens/segment | reduction | MB/hour (this dim) | MB/hour at 320 d "
            "| recall@10 | top-1 agreement | ms/segment |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in p["settings"]:
            lines.append(
                f"| {r['dedup'] if r['dedup'] is not None else '-'} | {r['factor']:g} | "
                f"{r['tokens_per_segment']:.0f} | {r['reduction']:.1f}x | {r['mb_per_hour']:.0f} | "
                f"{r['mb_per_hour_at_dim320']:.0f} | {r['recall@10']:.3f} | {r['top1_agreement']:.3f} | "
                f"{r['reduce_ms_per_segment']:.1f} |"
            )
        lines.append("")
    if "ray" in res:
        r = res["ray"]
        lines += [
            f"## Ray ingest: {r['videos']} videos, {r['video_seconds']:.0f} s of video, fixed 2 s segments, "
            f"local Ray with {r['cluster_cpus']:.0f} CPUs (start-up {r['ray_startup_s']:.1f} s, not counted)",
            "",
            "| encoder | mode | seconds | video s / s | first clip after s | video s / s after it "
            "| segments |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for x in r["runs"]:
            first = f"{x['first_clip_s']:.1f}" if "first_clip_s" in x else "-"
            after = f"{x['video_s_per_s_after_first']:.1f}" if "first_clip_s" in x else "-"
            lines.append(f"| {x['encoder']} | {x['mode']} | {x['seconds']:.1f} | {x['video_s_per_s']:.1f} | "
                         f"{first} | {after} | {x['segments']} |")
        lines += ["", f"Same index contents as single-process: {r['same_index']}; "
                  f"same hits: {r['same_hits']}; sharded search ({r['shards']} shards over "
                  f"{r['parts']} parts) same hits: {r['sharded_same_hits']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    ap.add_argument("--only", action="append", choices=["pruning", "pooling", "ray"],
                    help="run only this section (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="scratch folder for the generated index (default OUT/work)")
    args = ap.parse_args(argv)
    cfg = {k: v for k, v in PRESETS[args.preset].items() if not args.only or k in args.only}
    cfg["preset"] = args.preset
    if args.work:
        cfg["work_dir"] = args.work
    res = run(cfg, args.out)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
