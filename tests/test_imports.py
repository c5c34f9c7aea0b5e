"""The sans-I/O packages start no I/O machinery, and no module imports itself back.

wire, routing, sessions and brokers never load asyncio or socket; only server/
(and the clients) do. Module-level imports between Kraken's modules form no
cycle: a module imported only for type checking, or inside a function, is not
counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kraken

SRC = Path(kraken.__file__).parent


@pytest.mark.parametrize(
    "package", ["kraken.wire", "kraken.routing", "kraken.sessions", "kraken.brokers"]
)
def test_importing_a_pure_package_loads_neither_asyncio_nor_socket(package):
    code = (
        f"import sys, {package}\n"
        "assert '" + package + "' in sys.modules\n"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('asyncio', 'socket', '_socket')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_wire_and_routing_together_loads_neither_asyncio_nor_socket():
    code = (
        "import sys, kraken.wire, kraken.routing\n"
        "print(sorted(m for m in ('asyncio', 'socket', '_socket') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def module_imports(path: Path) -> set[str]:
    """The kraken modules ``path`` imports at module level, TYPE_CHECKING ones included."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        body = node.body if isinstance(node, ast.If) else [node]
        for statement in body:
            if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(
                "kraken"
            ):
                found.add(str(statement.module))
            elif isinstance(statement, ast.Import):
                found.update(a.name for a in statement.names if a.name.startswith("kraken"))
    return found


def test_no_module_of_kraken_imports_itself_back() -> None:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: module_imports(path) & modules.keys() for name, path in modules.items()}
    assert "kraken.server.hub" in graph["kraken.server.tcp"]  # the walk sees real edges

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, trail = stack.pop()
            for imported in graph[node]:
                if imported == start:
                    return [*trail, start]
                if imported not in seen:
                    seen.add(imported)
                    stack.append((imported, [*trail, imported]))
        return None

    assert [c for c in map(cycle_from, graph) if c] == []
