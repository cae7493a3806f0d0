"""What ``maxsim-bench search`` measures beyond the latency of a call: where the time of an engine search
goes on a GPU (kernels vs everything else, host synchronisations), the host-to-device bandwidth streaming
is held against, and the public MaxSim kernels timed on the same shapes in the same run.

- :func:`profile_call`: one extra call under ``torch.profiler``: device kernel time, host time outside
  the kernels per query, and the host synchronisations it made (``cudaStreamSynchronize``,
  ``cudaDeviceSynchronize``, ``cudaEventSynchronize`` and blocking ``cudaMemcpy``).
- :func:`h2d_bandwidth`: pinned host-to-device copy rate, the ceiling of the streaming path.
- :func:`baselines`: late-interaction-kernels (``maxsim_varlen``) and flash-maxsim (``flash_maxsim_varlen``)
  on the corpus prefix, top-k by ``torch.topk``; each is skipped with the reason when it is not installed
  or fails (both need Triton on CUDA).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def profile_call(fn: Callable[[], Any], device: torch.device, batch: int) -> dict[str, Any]:
    """Kernel time, host overhead per query and host synchronisations of one call of ``fn`` (CUDA only;
    an empty dict elsewhere)."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    kernel_us, syncs = 0.0, 0
    for ev in prof.events():
        name = ev.name or ""
        if getattr(ev, "device_type", None) is not None and str(ev.device_type).endswith("CUDA"):
            kernel_us += float(getattr(ev, "device_time", 0.0) or getattr(ev, "cuda_time", 0.0) or 0.0)
        elif name in SYNC_CALLS:  # (cudaMemcpyAsync is not: only the blocking copy waits)
            syncs += 1
    # the final synchronize above is the profiler's own
    return {"kernel_ms": kernel_us / 1e3, "host_us_per_query": max(0.0, wall * 1e6 - kernel_us) / batch,
            "syncs_per_call": max(0, syncs - 1)}


def h2d_bandwidth(device: torch.device, nbytes: int = 256 << 20, repeats: int = 5) -> float | None:
    """GB/s of pinned host-to-device copies of ``nbytes`` (median), None off CUDA."""
    if device.type != "cuda":
        return None
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    times = []
    for _ in range(repeats + 1):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return nbytes / times[len(times) // 2] / 1e9


def baselines() -> dict[str, Callable | str]:
    """The public kernels available here: name -> ``fn(q, q_offsets, d, d_offsets, k) -> indices``, or
    the reason it is unavailable."""
    out: dict[str, Callable | str] = {}
    try:
        from late_interaction_kernels import maxsim_varlen

        def lik(q, qo, d, do, k):
            s = maxsim_varlen(q.half(), d.half(), qo.to(torch.int32), do.to(torch.int32))
            return torch.topk(s, min(k, s.shape[1]), dim=1).indices

        out["late-interaction-kernels"] = lik
    except Exception as e:  # noqa: BLE001 - any import failure is a reason to skip
        out["late-interaction-kernels"] = f"not available ({type(e).__name__}: {e})"
    try:
        from flash_maxsim import flash_maxsim_varlen

        def flash(q, qo, d, do, k):
            lq = int((qo[1:] - qo[:-1]).max())
            ld = int((do[1:] - do[:-1]).max())
            s = flash_maxsim_varlen(q.half(), d.half(), qo.to(torch.int32), do.to(torch.int32), lq, ld)
            return torch.topk(s, min(k, s.shape[1]), dim=1).indices

        out["flash-maxsim"] = flash
    except Exception as e:  # noqa: BLE001
        out["flash-maxsim"] = f"not available ({type(e).__name__}: {e})"
    return out
