"""What a measurement ran on: CPU, GPU, library versions and the source commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = (
    "maxsim",
    "torch",
    "triton",
    "numpy",
    "pyarrow",
    "transformers",
    "opencv-python-headless",
    "scenedetect-headless",
    "scenedetect",
    "matplotlib",
    "late-interaction-kernels",
    "flash-maxsim",
)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, platform otherwise)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and capability of the current CUDA device, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    i = torch.cuda.current_device()
    p = torch.cuda.get_device_properties(i)
    return {
        "name": p.name,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "capability": f"{p.major}.{p.minor}",
        "count": torch.cuda.device_count(),
        "sms": p.multi_processor_count,
        "cuda": torch.version.cuda,
        "driver": nvidia_driver(),
    }


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version as nvidia-smi reports it, or None where it cannot be asked."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """Commit (and whether the work tree differs from it) of the checkout holding this package."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(dirty)}


def machine() -> dict[str, Any]:
    """Everything above in one record, for results.json."""
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "gpu": gpu_info(),
        "versions": versions(),
        "git": git_commit(),
    }


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None
