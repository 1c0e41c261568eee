"""Imports run one way: no cycles among dh_tune's modules, no import from a higher layer, inference
free of training code. Read from the source with `ast`, so an import inside a function counts too.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import dh_tune

PACKAGE = Path(dh_tune.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    # foundations: no dh_tune import outside this layer; dhnet_runtime is the torch-free module a bundle ships
    # (it imports no dh_tune module), whose pre-processing, decode and NMS the model's and data's torch paths
    # call and whose format table the runtime registry reads
    ("dh_tune", "dh_tune.commands", "dh_tune.messages", "dh_tune.fsio", "dh_tune.yamlfile", "dh_tune.resources",
     "dh_tune.gating", "dh_tune.input_size", "dh_tune.export.dhnet_runtime", "dh_tune.model", "dh_tune.paper"),
    # inputs, settings and the services every job uses
    ("dh_tune.data", "dh_tune.loss", "dh_tune.pipeline", "dh_tune.tracking", "dh_tune.ray_setup",
     "dh_tune.threshold_profiles", "dh_tune.runtimes", "dh_tune.import_yolov5"),
    # inference: deployment graphs and bundles, the predictor and its CLI
    ("dh_tune.export", "dh_tune.predict", "dh_tune.detect"),
    # device timing (profile_device: the former name of `python -m dh_tune.latency`)
    ("dh_tune.latency", "dh_tune.profile_device"),
    # scoring trained models
    ("dh_tune.evaluate",),
    # training validates with evaluate's AP
    ("dh_tune.train",),
    # the search trains, scores and times
    ("dh_tune.search",),
    # the `dh-tune` command hands each subcommand to its module
    ("dh_tune.cli",),
]
"""Module prefixes per layer, lowest first: a module imports from its own layer or the ones below.

Benchmarks and tests sit above every layer: nothing in dh_tune imports them.
"""

EXCEPTIONS: dict[tuple[str, str], str] = {
    ("dh_tune.export.int8", "dh_tune.evaluate.ap"): "an int8 folder is written only with its AP measured beside the "
    "fp32 graphs'; COCO AP is evaluate's pure numpy function, which imports nothing but its own matching module",
}
"""(importer, imported) pairs allowed to reach up a layer, each with the reason it must."""

INFERENCE = ("dh_tune.predict", "dh_tune.detect", "dh_tune.export")
"""Modules that run a trained network and must work without the training code."""

ABOVE_ALL = ("benchmarks", "tests")
"""Top-level packages of the repository that no dh_tune module may import."""


@dataclass(frozen=True)
class Import:
    """One import statement's target module, and whether it runs when the importer is imported."""

    importer: str
    target: str
    line: int
    at_import_time: bool


def module_name(path: Path) -> str:
    """Dotted name of a source file of the package (a package's __init__ is named as the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    """True for a package's __init__ (relative imports resolve against the package itself)."""
    return SOURCES[name].name == "__init__.py"


def _type_checking(node: ast.If) -> bool:
    """True for `if TYPE_CHECKING:` blocks, whose imports never run."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, at_import_time: bool):
    """Import nodes under `node`, each with whether it runs while the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, at_import_time
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _type_checking(child):
            yield from _walk(child, False)
        else:
            yield from _walk(child, at_import_time)


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """Absolute module a `from ... import` reads from, relative dots resolved against the importer."""
    if node.level == 0:
        return node.module or ""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(name: str) -> list[Import]:
    """Every import of `name`'s source that names dh_tune or a module above it, resolved to a module."""
    tree = ast.parse(SOURCES[name].read_text(encoding="utf-8"), filename=str(SOURCES[name]))
    found = []
    for node, now in _walk(tree, True):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(name, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names]
        found += [Import(name, t, node.lineno, now) for t in targets if t.split(".")[0] in ("dh_tune", *ABOVE_ALL)]
    return found


IMPORTS: list[Import] = [i for name in SOURCES for i in imports_of(name)]


def layer_of(name: str) -> int:
    """Index in LAYERS of the longest prefix naming `name`: a subpackage's entry covers its submodules,
    the root's entry only the root's own __init__."""
    best, depth = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            covers = name == prefix or ("." in prefix and name.startswith(prefix + "."))
            if covers and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")
    return best


def executed(imp: Import) -> list[str]:
    """Modules that run for one import: the target and the packages above it the importer is not inside."""
    parts = imp.target.split(".")
    chain = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return [m for m in chain if m in SOURCES and not (imp.importer + ".").startswith(m + ".")
            and m != imp.importer]


def graph(at_import_time_only: bool) -> dict[str, set[str]]:
    """Module -> modules it runs, from the imports at import time only or from every import."""
    edges: dict[str, set[str]] = {name: set() for name in SOURCES}
    for imp in IMPORTS:
        if imp.at_import_time or not at_import_time_only:
            edges[imp.importer].update(executed(imp))
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Modules `start` runs directly or through others (itself only when it is on a cycle)."""
    seen: set[str] = set()
    todo = list(edges[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges[node]
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that each reach all the others, sorted: one group per import cycle."""
    reach = {node: reachable(edges, node) for node in edges}
    groups = {tuple(sorted(n for n in reach[node] if node in reach[n])) for node in edges if node in reach[node]}
    return [list(g) for g in sorted(groups)]


def test_every_import_of_dh_tune_names_a_module_that_exists() -> None:
    missing = [f"{SOURCES[i.importer]}:{i.line}: {i.target}" for i in IMPORTS
               if i.target.startswith("dh_tune") and i.target not in SOURCES]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_import_cycle_among_modules() -> None:
    found = cycles(graph(at_import_time_only=True))
    assert not found, "modules importing each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_cycle_even_through_imports_inside_functions() -> None:
    found = cycles(graph(at_import_time_only=False))
    assert not found, "modules depending on each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = []
    for i in IMPORTS:
        if i.target.split(".")[0] in ABOVE_ALL:
            upward.append(f"{SOURCES[i.importer]}:{i.line}: {i.importer} imports {i.target}, above every layer")
        elif i.target in SOURCES and layer_of(i.target) > layer_of(i.importer) \
                and (i.importer, i.target) not in EXCEPTIONS:
            upward.append(f"{SOURCES[i.importer]}:{i.line}: {i.importer} (layer {layer_of(i.importer)}) imports "
                          f"{i.target} (layer {layer_of(i.target)})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_every_exception_is_still_needed() -> None:
    used = {(i.importer, i.target) for i in IMPORTS}
    assert not set(EXCEPTIONS) - used, "EXCEPTIONS lists imports that no longer exist"


@pytest.mark.parametrize("start", sorted(n for n in SOURCES if any(n == p or n.startswith(p + ".") for p in INFERENCE)))
def test_inference_never_reaches_training_code(start: str) -> None:
    edges = graph(at_import_time_only=False)
    via: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in sorted(edges[node]):
            if nxt not in via:
                via[nxt] = node
                todo.append(nxt)
    reached = sorted(n for n in via if n == "dh_tune.train" or n.startswith("dh_tune.train."))
    if reached:
        chain, node = [], reached[0]
        while node is not None:
            chain.append(node)
            node = via[node]
        pytest.fail(f"{start} reaches training code: {' -> '.join(reversed(chain))}")
