"""Benchmark configurations: named presets in TOML files, with ``key=value`` overrides from the command line.

A preset file (``configs/bench/<subcommand>.toml``) has a ``[defaults]`` table and one table per preset
(``[smoke]``, ``[cpu]``, ``[gpu]`` ...). A preset is its file's defaults deep-merged with the preset's own
table; without ``--preset`` the file's top-level ``default_preset`` is used. Overrides use dotted keys
into that merged table and TOML values::

    corpus_sizes=[1000, 10000]     encoder="color-test"     encoder_kwargs.dim=64     revisit=false

A value that is not valid TOML is taken as a bare string (``segmenter=fixed:5``); a single value given for
a key whose preset value is a list becomes a one-item list (``videos=/data/clips``). Overriding a key that
the preset does not define is an error that lists the keys it does define, so a typo never goes unnoticed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

SUBCOMMANDS = (
    "kernel",
    "ingest",
    "search",
    "eval",
    "dataset",
    "serve",
    "encoder",
    "lifecycle",
    "decode",
    "scale",
    "segment",
)


class ConfigError(ValueError):
    """A preset or override that cannot be used; the message says which file/key and why."""


def config_dirs() -> list[Path]:
    """Folders searched for ``<subcommand>.toml``: $MAXSIM_BENCH_CONFIGS, ./configs/bench, the repo's."""
    dirs = []
    env = os.environ.get("MAXSIM_BENCH_CONFIGS")
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "configs" / "bench")
    dirs.append(Path(__file__).resolve().parent.parent / "configs" / "bench")
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_config_file(subcommand: str) -> Path:
    """The preset file of ``subcommand`` from the first folder of :func:`config_dirs` that has one."""
    for d in config_dirs():
        p = d / f"{subcommand}.toml"
        if p.is_file():
            return p
    raise ConfigError(
        f"no presets for {subcommand!r}: looked for {subcommand}.toml in "
        f"{', '.join(str(d) for d in config_dirs()) or '(no configs/bench folder found)'}; "
        "pass --config FILE or set MAXSIM_BENCH_CONFIGS"
    )


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in; nested tables merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_names(data: dict[str, Any]) -> list[str]:
    """Preset tables of a parsed preset file (every top-level table except ``defaults``)."""
    return [k for k, v in data.items() if isinstance(v, dict) and k != "defaults"]


def load_preset(path: str | Path, preset: str | None) -> dict[str, Any]:
    """``defaults`` merged with the table ``preset``; a file without presets is used as it is."""
    data = read_toml(path)
    data.pop("default_preset", None)
    names = preset_names(data)
    if "defaults" not in data and preset is None:
        return data
    base = data.get("defaults", {})
    if preset is None:
        return copy.deepcopy(base)
    if preset not in names:
        raise ConfigError(f"{path} has no preset {preset!r}; presets: {', '.join(names) or 'none'}")
    return deep_merge(base, data[preset])


def parse_value(text: str) -> Any:
    """A TOML value (``[1, 2]``, ``true``, ``"s"``, ``1.5``, ``{a = 1}``), or the raw text if not TOML."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _flat_keys(cfg: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys.extend(_flat_keys(v, prefix + k + "."))
    return keys


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a copy of ``cfg``.

    A key the config does not have is refused (a table's keys may still be added to a table whose value is
    an empty table, e.g. encoder keyword arguments).
    """
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. search.k=10)")
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if part not in node:
                raise ConfigError(_unknown(key, out))
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])!r} is a value, not a table")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node and not (node == {} and len(parts) > 1):
            raise ConfigError(_unknown(key, out))
        value = parse_value(raw.strip())
        if isinstance(node.get(leaf), list) and not isinstance(value, list):
            value = [value]  # a single value for a list key: corpus_sizes=1000, videos=/data/clips
        node[leaf] = value
    return out


def _unknown(key: str, cfg: dict[str, Any]) -> str:
    return f"unknown config key {key!r}; this preset has: {', '.join(_flat_keys(cfg))}"


def resolve(
    subcommand: str, preset: str | None = None, config_file: str | None = None, overrides: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged config of a run and where it came from (file, preset, overrides)."""
    path = Path(config_file) if config_file else find_config_file(subcommand)
    if preset is None:
        preset = read_toml(path).get("default_preset")
    cfg = load_preset(path, preset)
    overrides = list(overrides)
    cfg = apply_overrides(cfg, overrides)
    return cfg, {"file": str(path), "preset": preset, "overrides": overrides}


def build(what: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, with a bad setting (ValueError/TypeError) turned into a ConfigError."""
    try:
        return factory(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: {e}") from e
