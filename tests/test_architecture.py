"""The layer contract of docs/architecture.md, checked on the source.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``. A
module may import its own package, the packages of lower layers, and nothing
else; packages that share a layer do not import each other; no two modules
import each other, directly or round a longer loop; no product module imports
``p2pstore.testing``. A failure names the importing file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("quic_transport", "dht", "p2pstore", "shell")

# Lowest first. Each entry: the packages (or modules) of one layer; a module
# belongs to the longest prefix listed. Keep in step with docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("quic_transport.identity", "p2pstore.base"),
    ("quic_transport",),
    ("p2pstore.immutable", "p2pstore.storage", "dht", "p2pstore.nat"),
    ("p2pstore.mutable",),
    ("p2pstore.grid",),
    ("p2pstore.vdrive",),
    ("p2pstore.app",),
    ("p2pstore.web", "p2pstore.sftp"),
    ("p2pstore.node",),
    ("p2pstore.api_http",),
    ("p2pstore.api_client",),
    ("p2pstore.api_drive", "p2pstore.cli_support"),
    ("p2pstore.backup",),
    ("shell", "p2pstore.cli_ops", "p2pstore.cli_webui", "p2pstore.cli_backup"),
    ("p2pstore.cli_commands",),
    ("p2pstore.cli",),
    ("p2pstore.demo",),
)
# May import anything; nothing in the product may import it.
TESTING = "p2pstore.testing"
# Package faces that only carry a version or a docstring.
FREE = ("p2pstore",)

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
WHY = "Longer than"  # "# Longer than N lines because ..." excuses a module or function


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The product module ``name`` refers to (a module, or the package holding a name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> Iterator[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PRODUCT:
                    target = _resolve(alias.name)
                    if target:
                        yield Import(module, target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            if stem.split(".")[0] not in PRODUCT:
                continue
            for alias in node.names:
                target = _resolve(f"{stem}.{alias.name}") or _resolve(stem)
                if target and target != module:
                    yield Import(module, target, node.lineno)


def _all_imports() -> list[Import]:
    return [imp for m, p in MODULES.items() for imp in _imports(m, p)]


IMPORTS = _all_imports()


def _owner(module: str) -> tuple[int, str] | None:
    """(layer index, package) of ``module`` by longest prefix."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(LAYERS):
        for pkg in layer:
            if (module == pkg or module.startswith(pkg + ".")) and (
                best is None or len(pkg) > len(best[1])
            ):
                best = (index, pkg)
    return best


def _where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line} imports {imp.target}"


def test_every_product_module_has_a_layer() -> None:
    homeless = [
        m for m in MODULES if _owner(m) is None and m not in FREE and not m.startswith(TESTING)
    ]
    assert not homeless, "add to LAYERS (and docs/architecture.md): " + ", ".join(homeless)


def test_imports_point_down_only() -> None:
    bad = []
    for imp in IMPORTS:
        if imp.source.startswith(TESTING):
            continue
        if imp.target.startswith(TESTING):
            bad.append(_where(imp) + " (product code must not import the testing package)")
            continue
        src, dst = _owner(imp.source), _owner(imp.target)
        if src is None or dst is None:
            continue  # the bare p2pstore package face
        if dst[0] > src[0]:
            bad.append(_where(imp) + " (upward)")
        elif dst[0] == src[0] and dst[1] != src[1]:
            bad.append(_where(imp) + " (sideways, within one layer)")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components; any component of 2+ is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def _excused(lines: list[str], start: int, body: int) -> bool:
    """A ``# Longer than ...`` comment between the ``def`` line and the first
    lines of the body."""
    return any(WHY in line for line in lines[start : body + 3])


def test_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for module, path in MODULES.items():
        if module.startswith(TESTING):
            continue
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES and WHY not in "\n".join(lines[:40]):
            long_modules.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not _excused(
                    lines, node.lineno - 1, node.body[0].lineno - 1
                ):
                    long_functions.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines"
                    )
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def test_layers_name_real_packages() -> None:
    """A typo in LAYERS would silently exempt a package."""
    for layer in LAYERS:
        for pkg in layer:
            assert pkg in MODULES, pkg
