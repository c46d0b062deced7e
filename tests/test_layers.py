"""The package's layers: store < client < runtime < ops, with dev beside ops and aio (the
asyncio client) beside client.

A module imports only from its own layer and the layers below it, so a newcomer can read the
store without the client, the client without the worker, and so on; development tooling (the
private engine, the demo) and the optional dashboard never load on a worker's path.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyscheduler"
LAYERS = ("store", "client", "aio", "runtime", "ops", "dev")
# What each layer may import from the package, besides its own layer and the top-level
# modules (`exceptions`, the public `__init__`'s names are not imported from inside).
MAY_IMPORT = {
    "store": set(),
    "client": {"store"},
    "aio": {"store", "client"},  # the asyncio client, beside the sync one
    "runtime": {"store", "client"},
    "ops": {"store", "client", "runtime"},
    "dev": {"store", "client", "runtime"},
    "": {"store", "client", "runtime"},  # __init__.py, exceptions.py
}
# Imported inside a function (or under TYPE_CHECKING), on request only: the `demo` command
# (ops -> dev); the worker's allowlist and job context, which eager queues run jobs with
# (client/eager.py -> runtime); the test plugin's private engine (testing.py -> dev).
LAZY_ALLOWED = {("ops", "dev"), ("client", "runtime"), ("", "dev")}
# `python -m pyscheduler` is the command line.
ENTRY_POINT = "__main__.py"


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported_layers(path: Path) -> list[tuple[str, int, bool]]:
    """(layer, line, at module level) of every import of a pyscheduler module in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    depth = len(path.relative_to(PACKAGE).parts) - 1
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or (node.module is None and node.level == 0):
            continue
        if node.level:
            if node.level > depth + 1:
                continue
            base = list(path.relative_to(PACKAGE).parts[: depth - node.level + 1])
            target = base + (node.module.split(".") if node.module else [])
            if not target:  # `from . import x` at the package's top
                target = [alias.name for alias in node.names][:1]
        elif node.module and node.module.split(".")[0] == "pyscheduler":
            target = node.module.split(".")[1:]
        else:
            continue
        layer = target[0] if target and target[0] in LAYERS else ""
        found.append((layer, node.lineno, id(node) in top_level))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_from_its_layer_and_the_layers_below(path: Path) -> None:
    own = "ops" if path.name == ENTRY_POINT else layer_of(path)
    wrong = []
    for layer, line, module_level in imported_layers(path):
        if layer in ("", own) or layer in MAY_IMPORT[own]:
            continue
        if not module_level and (own, layer) in LAZY_ALLOWED:
            continue
        wrong.append(f"line {line}: imports from {layer}/")
    assert not wrong, f"{path.relative_to(PACKAGE)} ({own or 'top'} layer): {wrong}"


def test_a_worker_loads_no_development_tooling_and_no_dashboard() -> None:
    code = (
        "import sys\n"
        "import pyscheduler.ops.cli, pyscheduler.runtime.worker\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('pyscheduler.dev',"
        " 'pyscheduler.ops.dashboard.app', 'starlette', 'uvicorn')))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
