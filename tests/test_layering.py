"""Layering: the library's floors (docs/architecture.md), read from every import statement.

A module imports only from its own floor or the floors below it, no two modules import
each other (directly or round a longer circle), the library core imports nothing from
the experiments (`unpaired.benchmarks`), `configs/`, `launch/` or `tests/`, and it runs
without torch installed. Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "unpaired"

# Bottom to top; a module's floor is the entry with the longest prefix that names it.
FLOORS = (
    ("ground", ("unpaired", "unpaired.layers", "unpaired.losses", "unpaired.pool",
                "unpaired.schedules", "unpaired.state", "unpaired.tf_adam", "unpaired.logs",
                "unpaired.cli", "unpaired.checkpoint", "unpaired.weights", "unpaired.torch_io",
                "unpaired.config_checks", "unpaired.data", "unpaired.fetch", "unpaired.distributed",
                "unpaired.methods.translation", "unpaired.eval.config", "unpaired.eval.fid")),
    ("nets", ("unpaired.nets", "unpaired.eval.inception")),
    ("reference", ("unpaired.torch_reference",)),
    ("methods", ("unpaired.methods",)),
    ("run", ("unpaired.translate", "unpaired.init_from", "unpaired.config_validation",
             "unpaired.export")),
    ("eval", ("unpaired.eval",)),
    ("loop", ("unpaired.train",)),
    ("experiments", ("unpaired.benchmarks",)),
)
OUTSIDE = ("configs", "launch", "tests")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Every module `name` imports: package-local modules resolved, outside ones by top name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import sub` names module pkg.sub; `from pkg import NAME` runs pkg itself.
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                          for alias in node.names]
        else:
            continue
        for target in candidates:
            top = target.split(".")[0]
            if top in OUTSIDE:
                found.add(top)
            elif top == "unpaired":
                while target not in known:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
    return found


def _floor(name: str) -> int:
    best, floor = -1, None
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), index
    assert floor is not None, f"{name} is on no floor: add it to FLOORS and docs/architecture.md"
    return floor


GRAPH = {name: _imports(name, path, set(_modules())) for name, path in _modules().items()}


def test_every_module_is_on_a_floor_and_imports_only_its_floor_or_below():
    upward = []
    for name, targets in GRAPH.items():
        for target in targets:
            if target in OUTSIDE:
                continue
            if _floor(target) > _floor(name):
                upward.append(f"{name} ({FLOORS[_floor(name)][0]}) -> {target} "
                              f"({FLOORS[_floor(target)][0]})")
    assert upward == []


def test_no_import_circle():
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_core_imports_no_experiment_config_launcher_test_or_torch_reference():
    offenders = []
    for name, targets in GRAPH.items():
        if name.startswith("unpaired.benchmarks"):
            continue
        for target in targets:
            if target in OUTSIDE or target.startswith("unpaired.benchmarks"):
                offenders.append(f"{name} -> {target}")
            elif (target.startswith("unpaired.torch_reference")
                  and not name.startswith("unpaired.torch_reference")):
                offenders.append(f"{name} -> {target} (a test and benchmark dependency)")
    assert offenders == []


def test_the_checker_sees_upward_circular_and_lazy_imports(tmp_path):
    """The scanner itself: a lazy import inside a function and a relative import both count."""
    pkg = tmp_path / "unpaired"
    (pkg / "methods").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "methods" / "__init__.py").write_text("")
    (pkg / "methods" / "a.py").write_text("def f():\n    from unpaired import train\n")
    (pkg / "methods" / "b.py").write_text("from . import a\n")
    (pkg / "train.py").write_text("import configs.cyclegan\n")
    known = {"unpaired", "unpaired.methods", "unpaired.methods.a", "unpaired.methods.b", "unpaired.train"}
    assert _imports("unpaired.methods.a", pkg / "methods" / "a.py", known) == {"unpaired.train"}
    assert _imports("unpaired.methods.b", pkg / "methods" / "b.py", known) == {"unpaired.methods.a"}
    assert _imports("unpaired.train", pkg / "train.py", known) == {"configs"}
    assert _floor("unpaired.train") > _floor("unpaired.methods.a")


def test_library_imports_without_torch_and_without_tests():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import unpaired, unpaired.train, unpaired.translate, unpaired.benchmarks.step\n"
        "import unpaired.torch_reference\n"
        "loaded = [m for m in sys.modules if m == 'tests' or m.startswith('tests.')]\n"
        "assert not loaded, loaded\n"
        "assert sys.modules['torch'] is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-4000:]
