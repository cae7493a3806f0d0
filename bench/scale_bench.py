"""Scale benchmark measurements: pruned vs exact search, token reduction, Ray ingest and sharded search.

Run them with ``maxsim-bench scale`` (:mod:`maxsim.bench.scale_cmd`, presets in
``configs/bench/scale.toml``); each function here measures one section from its config table:

- ``pruning``: a synthetic corpus (:mod:`maxsim.synthetic_tokens`: clustered tokens, videos with themes,
  temporal redundancy) written to a real index in ``parts`` parts, its prune index built, then per
  setting (a dict of keyword arguments of ``PrunedSearcher.search``): recall@10 and top-1 agreement of
  the pruned search against the exact search, the fraction of the exact search's bytes read (candidate
  tokens + inverted lists + centroid bags + centroids), QPS and p50/p99 latency of both (one query per
  call, scoring only: query vectors are given, as after text encoding).
- ``pooling``: segments with many tokens per frame; per reduction setting (a dict of keyword arguments of
  :func:`maxsim.pooling.reduce_tokens`: dedup threshold, pooling factor, window): tokens per segment,
  bytes per hour of video, and recall@10 / top-1 agreement of exact search on the reduced segments
  against exact search on the unreduced ones.
- ``ray``: generated videos ingested single-process, with Ray and 1 worker, with Ray and 2 workers
  (seconds of video per second; Ray start-up excluded), index contents compared, and sharded search
  (2 shards) compared hit by hit with the engine.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maxsim import kernels
from maxsim.encoders.reduce import reduce_tokens
from maxsim.index import SegmentRecord, Store
from maxsim.search.prune.build import update_prune_index
from maxsim.search.prune.searcher import PrunedSearcher
from maxsim.summary import percentiles
from maxsim.testing.tokens import CorpusSpec, SyntheticCorpus

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
    return kernels.merge_topk(torch.cat(ss, 1), torch.cat(rr, 1), k)


def bench_pruning(cfg: dict[str, Any], work: Path, progress: bool = True) -> dict[str, Any]:
    """Pruned vs exact search on a synthetic corpus written to a real index."""
    spec = CorpusSpec(n_segments=cfg["n_segments"], frames=cfg["frames"],
                      tokens_per_frame=cfg["tokens_per_frame"], dim=cfg["dim"], n_concepts=cfg["n_concepts"],
                      seed=cfg.get("seed", 0))
    corpus = SyntheticCorpus(spec)
    k = cfg.get("k", 10)
    targets = np.sort(np.random.default_rng(1).choice(spec.n_segments, cfg["queries"], replace=False))
    build = {"n_centroids": cfg.get("n_centroids") or None, "iters": cfg.get("iters", 4),
             "nbits": cfg.get("nbits", 2) or None}
    ident = {"corpus": spec.to_dict(), "parts": cfg["parts"], "queries": [int(t) for t in targets],
             "query_tokens": cfg.get("query_tokens", 32), "build": build}
    root = Path(cfg["index_dir"]) if cfg.get("index_dir") else work / "pruning-index"
    meta_path = root / "bench-meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    reused = meta is not None and meta.get("ident") == ident
    if reused:  # the same corpus, queries and prune-index settings: skip writing and building
        queries = list(torch.load(root / "bench-queries.pt"))
        write_s, build_s = meta["write_s"], meta["build_s"]
        store = Store(root)
        snap = store.snapshot()
    else:
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        queries = _write_corpus(root, corpus, cfg["parts"], targets, cfg.get("query_tokens", 32), progress)
        write_s = time.perf_counter() - t0
        store = Store(root)
        snap = store.snapshot()
        t0 = time.perf_counter()
        with store.writing():
            update_prune_index(snap, n_centroids=build["n_centroids"], iters=build["iters"],
                               nbits=build["nbits"], progress=progress)
        build_s = time.perf_counter() - t0
        torch.save(torch.stack(queries), root / "bench-queries.pt")
        meta_path.write_text(json.dumps({"ident": ident, "write_s": write_s, "build_s": build_s}))
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
    for setting in cfg["settings"]:
        times, recall, top1, frac, cands, refined = [], [], [], [], [], []
        label = " ".join(f"{key}={value}" for key, value in setting.items())
        bar = tqdm(queries, desc=f"pruned {label}", disable=not progress)
        for q, (_, er) in zip(bar, exact, strict=True):
            qo = torch.tensor([0, q.shape[0]])
            t = time.perf_counter()
            s, r, (st,) = searcher.search(q, qo, snap.live, k, **setting)
            times.append(time.perf_counter() - t)
            want = set(er[0].tolist())
            recall.append(len(want & set(r[0].tolist())) / k)
            top1.append(float(r[0, 0] == er[0, 0]))
            frac.append(st.fraction)
            cands.append(st.candidates)
            refined.append(st.refined)
        rows.append({
            **setting, "recall@10": float(np.mean(recall)), "candidates": float(np.mean(cands)),
            "refined": float(np.mean(refined)),
            "min_recall@10": float(np.min(recall)), "top1_agreement": float(np.mean(top1)),
            "bytes_fraction": float(np.mean(frac)), "qps": len(times) / sum(times),
            "p50_ms": _percentile_ms(times, 50), "p99_ms": _percentile_ms(times, 99),
        })
    return {
        "corpus": spec.to_dict(), "parts": cfg["parts"], "queries": len(queries), "k": k,
        "query_tokens": cfg.get("query_tokens", 32),
        "token_bytes": token_bytes, "prune_index_bytes": prune_bytes,
        "prune_index_overhead": prune_bytes / token_bytes,
        "write_s": write_s, "prune_build_s": build_s, "index_reused": reused, "nbits": build["nbits"],
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
    for setting in cfg["settings"]:
        label = " ".join(f"{key}={value}" for key, value in setting.items()) or "none"
        t0 = time.perf_counter()
        reduced = [reduce_tokens(s, spec.frames, **setting)
                   for s in tqdm(segs, desc=f"reduce {label}", disable=not progress)]
        secs = time.perf_counter() - t0
        tok = float(np.mean([r.shape[0] for r in reduced]))
        idx = search(reduced)
        out.append({
            "dedup": setting.get("dedup"), "factor": setting.get("factor", 1.0), **setting,
            "tokens_per_segment": tok,
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
    from maxsim.testing.synthetic import COLORS, write_video

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
    from maxsim.distributed import RayVideoEncoder, worker_encoder
    from maxsim.ingest import LocalVideoEncoder
    from maxsim.media.segment import load_segmenter

    seg = load_segmenter("fixed:2")
    for workers in [None] + list(cfg["workers"]):
        eng = Engine(work / f"ray-rate-{workers}", encoder=enc, segmenter=seg)
        t0 = time.perf_counter()
        first, n = None, 0
        if workers is None:
            pipe = LocalVideoEncoder(eng.encoder, eng.sampler, eng.manifest.dim, eng.batch_size)
        else:
            pipe = RayVideoEncoder(worker_encoder(eng.encoder, eng.encoder_load_args()), seg, eng.sampler,
                                   eng.manifest.dim, eng.encoder.name, batch_size=eng.batch_size,
                                   num_workers=workers)
            pipe.plan(videos)
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
        a, b = ref.snapshot, eng.snapshot
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
