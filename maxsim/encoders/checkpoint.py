"""Finding a model checkpoint on disk or on the Hugging Face hub, and naming the exact weights used."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from maxsim.errors import MissingWeightsError

# Files an encoder needs: config, weights, tokenizer and processor files. Remote code (*.py) is never fetched.
CHECKPOINT_FILES = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.jinja",
    "tokenizer.model",
    "spiece.model",  # SigLIP (v1) tokenizers
)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# How every transformers model is loaded here: from the folder already found, reporting what did not match,
# and without Hugging Face's hub kernels (transformers 5.25 swaps layers for kernels it fetches from the Hub
# at load time by default): a load reaches no network and runs the code installed, whatever is installed.
MODEL_LOAD_OPTIONS: dict[str, bool] = {
    "local_files_only": True, "output_loading_info": True, "use_kernels": False,
}


def default_device(name: str | torch.device | None = None) -> torch.device:
    """The device ``name`` names (as torch spells it); None, ``""`` or ``"auto"``: CUDA when available,
    else the CPU. Raises ValueError for a CUDA device when torch sees none."""
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asked for, but torch sees no CUDA device")
    return dev


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch dtype; None means bfloat16 on a GPU and float32 elsewhere."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        name = dtype.replace("torch.", "")
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; expected e.g. 'bfloat16', 'float16' or 'float32'")
        return getattr(torch, name)
    return dtype


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, as /proc/cpuinfo
    reports them; Arm's BF16 extension), where bf16 matrix products run faster than float32 ones.
    Elsewhere torch emulates bf16, slower than float32. ``MAXSIM_CPU_BF16=0``/``1`` overrides."""
    forced = os.environ.get("MAXSIM_CPU_BF16")
    if forced is not None and forced.strip():
        return _truthy(forced)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):  # x86 / Arm
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        return False
    return False


def resolve_cpu_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """Like :func:`resolve_dtype`, but None is bfloat16 on a CPU that computes it natively
    (:func:`cpu_supports_bf16`) too: for small encoders whose CPU cost matters most."""
    if dtype is None and device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return resolve_dtype(dtype, device)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def resolve_checkpoint(
    id_or_path: str | os.PathLike,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> tuple[Path, str]:
    """Return ``(folder, revision)`` for a local model folder or a hub id.

    A hub id is fetched with ``huggingface_hub.snapshot_download`` (configs, safetensors, tokenizer and
    processor files; never remote code), or found in the local cache when offline. ``revision`` is the hub
    commit hash, or for a local folder a fingerprint of its config and weights (see :func:`fingerprint`).
    Raises :class:`MissingWeightsError` with the remedy when the weights cannot be had.
    """
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return path.resolve(), revision or fingerprint(path)
    spec = str(id_or_path)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise MissingWeightsError(
            f"model {spec!r} is neither an existing local folder nor a Hugging Face id of the form "
            "'owner/name'"
        )
    offline = bool(local_files_only) or hub_offline()
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise MissingWeightsError(f"loading {spec!r} from the hub needs huggingface_hub: {e}") from e
    remedy = (
        f"fetch them with `hf download {spec}"
        + (f" --revision {revision}" if revision else "")
        + "` (huggingface_hub's command) on a machine with network access into the Hugging Face cache, "
        "or pass a local folder holding config.json, the *.safetensors weights and the tokenizer/processor "
        "files"
    )
    try:
        folder = snapshot_download(
            spec,
            revision=revision,
            allow_patterns=list(CHECKPOINT_FILES),
            local_files_only=offline,
            cache_dir=cache_dir,
            token=token,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
        if offline and not hub_offline():
            why = "local_files_only=True was asked"
        raise MissingWeightsError(
            f"the weights of {spec!r} are not in the local Hugging Face cache and {why}: {remedy}"
        ) from e
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise MissingWeightsError(
            f"cannot access {spec!r}" + (f" at revision {revision!r}" if revision else "")
            + f" on the Hugging Face hub ({type(e).__name__}); check the id, log in with `hf auth login` "
            "for gated or private models, or pass a local folder"
        ) from e
    except HfHubHTTPError as e:
        raise MissingWeightsError(f"downloading {spec!r} failed ({e}); {remedy}") from e
    folder_path = Path(folder)
    commit = folder_path.name if _COMMIT.match(folder_path.name) else (revision or fingerprint(folder_path))
    return folder_path, commit


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder ready to load: where, which weights, on what device and dtype, and the
    encoder name it gives (``family:label@revision``)."""

    folder: Path
    revision: str
    device: torch.device
    dtype: torch.dtype
    name: str


def open_checkpoint(
    family: str,
    id_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Checkpoint:
    """Resolve a ``family`` checkpoint (see :func:`resolve_checkpoint`), check it has a config.json, and
    pick its device (:func:`default_device`) and dtype (:func:`resolve_dtype`). The encoder name labels
    a hub id by itself and a local folder by its folder name."""
    folder, rev = resolve_checkpoint(
        id_or_path, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, token=token
    )
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{folder} has no config.json; expected a {family} checkpoint folder")
    dev = default_device(device)
    label = str(id_or_path) if not Path(str(id_or_path)).expanduser().is_dir() else folder.name
    return Checkpoint(folder, rev, dev, resolve_dtype(dtype, dev), f"{family}:{label}@{rev}")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (the index's shards when there is an index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise MissingWeightsError(f"{index} lists weight files that are not there: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        extra = " (only PyTorch .bin weights found; convert them to safetensors)" if any(
            folder.glob("*.bin")
        ) else ""
        raise MissingWeightsError(f"no *.safetensors weights in {folder}{extra}")
    return files


def fingerprint(folder: Path, chunks: int = 16, chunk_size: int = 1 << 16) -> str:
    """A short content hash of a local checkpoint: config.json plus, per weight file, its size and
    ``chunks`` evenly spaced samples of ``chunk_size`` bytes (about 1 MiB read per file)."""
    h = hashlib.sha256()
    cfg = folder / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(folder.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f.name.encode())
        h.update(str(size).encode())
        with f.open("rb") as fh:
            step = max(size // chunks, 1)
            for i in range(chunks):
                off = min(i * step, max(size - chunk_size, 0))
                fh.seek(off)
                h.update(fh.read(chunk_size))
    return "sha256-" + h.hexdigest()[:16]
