"""The package's import graph has no cycle, and only the entry points look the runtime up.

The graph is read from the source with ``ast``: every ``import`` and ``from … import`` of a
``chimeway`` module, at module level and inside functions alike (a late import hides a cycle, it
does not remove it). Imports under ``if TYPE_CHECKING:`` never run, so they are not edges; the
Runtime type has a module of its own, so nothing needs them. An import names its target only
(Python also runs the parent packages' ``__init__``, which is not counted as an edge here).
"""

from __future__ import annotations

import ast
from pathlib import Path

import chimeway

PACKAGE = Path(chimeway.__file__).parent
RUNTIME = "chimeway.wiring.runtime"
#: the modules that may look the runtime up (docs/architecture.md §2): the public functions, the
#: command line, the Dramatiq worker, the WSGI apps and the webhook endpoint's public handle(),
#: the metrics collected at scrape time, and the test helpers
ENTRY_POINTS = {
    "chimeway.api", "chimeway.worker", "chimeway.testing", "chimeway.metrics", "chimeway.ops.cli",
    "chimeway.webhooks.wsgi", "chimeway.webhooks.endpoint", "chimeway.console",
}


def _module_name(path: Path) -> str:
    parts = ["chimeway", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                      for alias in node.names}
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in MODULES}


GRAPH = {name: _imported(ast.parse(path.read_text(encoding="utf-8"))) for name, path in MODULES.items()}


def _cycle() -> list[str]:
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> list[str]:
        if name in stack:
            return [*stack[stack.index(name):], name]
        if name in done:
            return []
        for target in sorted(GRAPH[name]):
            if found := visit(target, [*stack, name]):
                return found
        done.add(name)
        return []

    for name in sorted(GRAPH):
        if found := visit(name, []):
            return found
    return []


def test_the_package_import_graph_has_no_cycle() -> None:
    assert _cycle() == []


def test_only_the_entry_points_import_the_runtime_module() -> None:
    importers = {name for name, targets in GRAPH.items() if RUNTIME in targets}
    assert importers - ENTRY_POINTS == set()
