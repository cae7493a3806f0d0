"""The structure the project promises (README, "Code layout"): one room per stage, imports one way.

Walks the AST of ``maxsim/`` and ``kernels/`` (installed as ``maxsim.kernels``) and fails on:
- an import cycle among maxsim modules (imports inside functions included; importing a submodule runs its
  packages' ``__init__`` too, so those count as imports of the package);
- an import across the allowed directions (a stage importing the engine, the index importing search, the
  library importing the benchmarks, anything importing a deprecated re-export);
- a maxsim module imported inside a function: a lazy import is for an optional third-party dependency,
  never to hide a cycle (the few allowed ones are listed with their reason);
- ``from maxsim.x import _private`` across modules, and ``obj._attr`` where the module itself defines no
  ``_attr`` (reading another module's private members).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# old import paths kept for one release: they may import anything, nothing may import them
SHIMS = {
    "maxsim.store", "maxsim.candidates", "maxsim.residuals", "maxsim.pooling", "maxsim.frames",
    "maxsim.segment", "maxsim.video", "maxsim.synthetic", "maxsim.synthetic_tokens", "maxsim.search_options",
    "maxsim.encoders.color",
}

# group of a module -> groups it may import (its own included)
CORE = {"core"}
STAGES = {"media", "encoders", "index", "transcripts"}  # the L1 stages ingest composes
ALLOWED = {
    "core": CORE,
    "media": CORE | {"media"},
    "encoders": CORE | {"encoders"},
    "index": CORE | {"index"},
    "testing": CORE | {"testing"},
    "transcripts": CORE | {"encoders", "transcripts"},
    "search": CORE | {"index", "search"},
    "ingest": CORE | STAGES | {"ingest"},
    # re-scores search results after the search: decodes frames again (media), sizes them and loads a model
    # (encoders), takes and returns search results (search); a stage the engine composes, beside ingest
    "rerank": CORE | {"media", "encoders", "search", "rerank"},
    # turns an image, a clip or a stored segment into query tokens and searches them: decodes frames
    # (media), encodes them and reduces long queries (encoders), reads a segment's tokens (index), searches
    # (search); a stage the engine composes, beside ingest and rerank
    "query": CORE | {"media", "encoders", "index", "search", "query"},
    # the transcript channel's search: encodes the query with a text model (transcripts), reads the cues
    # (index), takes the visual search's results (search) and fuses them; composed by the engine
    "channels": CORE | {"index", "search", "transcripts", "encoders", "channels"},
    "distributed": CORE | STAGES | {"search", "ingest", "distributed"},
    "engine": CORE | STAGES | {"search", "ingest", "rerank", "query", "channels", "distributed", "engine"},
    "frontends": CORE | STAGES | {"search", "ingest", "rerank", "query", "channels", "distributed", "engine",
                                  "testing", "frontends"},
}

# (module, imported maxsim module) pairs that are imported inside a function on purpose, and why
LAZY_OK = {
    ("maxsim.kernels", "maxsim.kernels.triton_maxsim"): "Triton is optional (Linux only; absent on macOS)",
    ("maxsim.kernels.prepared", "maxsim.kernels.triton_maxsim"): "Triton is optional (Linux only)",
    ("maxsim.server", "maxsim.server.app"): "create_app needs FastAPI, the optional serve extra",
    ("maxsim.cli.serve", "maxsim.server"): "maxsim serve needs FastAPI and uvicorn, the optional serve extra",
}


def group(mod: str) -> str:
    parts = mod.split(".")
    if mod in ("maxsim.types", "maxsim.errors", "maxsim.specs", "maxsim.summary") or parts[:2] == [
            "maxsim", "kernels"]:
        return "core"
    if mod in ("maxsim.ingest", "maxsim.rerank", "maxsim.query", "maxsim.channels"):
        return mod.split(".")[1]
    if mod == "maxsim.engine":
        return "engine"
    if len(parts) > 1 and parts[1] in ("media", "encoders", "index", "testing", "transcripts", "search",
                                       "distributed"):
        return parts[1]
    if len(parts) > 1 and parts[1] == "bench":
        return "bench"
    return "frontends"  # maxsim itself, cli, server, integrations


def module_files() -> dict[str, Path]:
    out = {}
    for base, prefix in ((ROOT / "maxsim", "maxsim"), (ROOT / "kernels", "maxsim.kernels")):
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = f
    return out


MODULES = module_files()
TREES = {m: ast.parse(f.read_text(), str(f)) for m, f in MODULES.items()}


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _with_parents(target: str) -> list[str]:
    """``target`` and the packages whose ``__init__`` importing it runs (maxsim modules only)."""
    parts = target.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def imports(mod: str) -> list[tuple[str, bool, int]]:
    """(imported maxsim module, inside a function, line) for every import in ``mod``."""
    out = []
    tree = TREES[mod]

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("maxsim"):
                        out.append((a.name, in_func, child.lineno))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith(
                    "maxsim"):
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    out.append((sub if sub in MODULES else child.module, in_func, child.lineno))
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                pkg = mod if _is_package(mod) else mod.rsplit(".", 1)[0]
                for _ in range(child.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                base = f"{pkg}.{child.module}" if child.module else pkg
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in MODULES else base, in_func, child.lineno))
            visit(child, func)

    visit(tree, False)
    return out


def edges() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        if m in SHIMS:
            continue
        for target, _, _ in imports(m):
            for t in _with_parents(target):
                if t != m and not m.startswith(t + "."):  # a package's own __init__ is already running
                    g[m].add(t)
    return g


def test_no_import_cycle():
    g = edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_go_one_way():
    bad = []
    for m in MODULES:
        if m in SHIMS or group(m) == "bench":
            continue
        for target, _, line in imports(m):
            if target in SHIMS:
                bad.append(f"{m}:{line} imports the deprecated {target}")
                continue
            t = group(target)
            if t not in ALLOWED[group(m)]:
                bad.append(f"{m}:{line} ({group(m)}) imports {target} ({t})")
    assert not bad, "\n".join(bad)


def test_no_lazy_import_of_maxsim_modules():
    bad = [f"{m}:{line} imports {t} inside a function" for m in MODULES if m not in SHIMS
           for t, in_func, line in imports(m) if in_func and (m, t) not in LAZY_OK]
    assert not bad, "\n".join(bad)


def _defined_private_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}


# compiled extension modules (no .py file): a package's own private implementation
COMPILED = {"maxsim.kernels._maxsim_cpu"}
# private members of third-party objects read on purpose
THIRD_PARTY_PRIVATE = {"_exit", "_getframe", "_lock"}


def test_no_private_names_across_modules():
    bad = []
    for m, tree in TREES.items():
        if m in SHIMS:
            continue
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maxsim"):
                for a in node.names:
                    own_package = node.module == (m if _is_package(m) else m.rsplit(".", 1)[0])
                    submodule = f"{node.module}.{a.name}" in set(MODULES) | COMPILED
                    private = a.name.startswith("_") and not a.name.startswith("__")
                    if private and not (own_package and submodule):
                        bad.append(f"{m}:{node.lineno} imports {node.module}.{a.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if not node.attr.startswith("__") and node.attr not in own | THIRD_PARTY_PRIVATE:
                    bad.append(f"{m}:{node.lineno} reads .{node.attr}, which {m} does not define")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.startswith("maxsim") and group(m) != "bench"))
def test_modules_stay_small(mod):
    n = len(MODULES[mod].read_text().splitlines())
    limit = 600 if mod.startswith("maxsim.kernels") else 520
    assert n <= limit, f"{MODULES[mod]} has {n} lines: split it by job (about 500 at most)"
