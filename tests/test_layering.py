"""Imports run one way: each package imports only packages on its own floor or below (docs/DESIGN.md), and no
modules import each other in a cycle.

Every `import` and `from ... import` counts, at module level or inside a function.
"""

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Floors, lowest first. A package may import its own floor's *other* packages only where listed in SIDEWAYS.
FLOORS = (
    ("datasets",),
    ("metrics", "teacher"),
    ("student",),
    ("inference",),
    ("evaluation",),
    ("experiments",),
    ("saliency_kd",),  # the public Python API: re-exports of the floors below
)
SIDEWAYS = {}  # e.g. {"teacher": {"metrics"}}; none today
# Above every floor: the command lines and the benchmarks. No package may import them.
TOP = ("train", "export_teacher", "evaluate", "predict", "export_student", "crop", "app", "argtypes", "benchmarks")


def floor_of(name):
    for level, packages in enumerate(FLOORS):
        if name in packages:
            return level
    return None


def _imports(path, root):
    """(module, names taken from it or None, line) for each import of a Python file, relative ones resolved."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    package = Path(path).relative_to(root).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def imported_modules(path, root=ROOT):
    """The absolute module names a Python file imports (relative imports resolved against its package)."""
    return [(module, line) for module, _, line in _imports(path, root)]


def violations(root=ROOT, floors=FLOORS, sideways=SIDEWAYS, top=TOP):
    """Every import in a floor package that goes up a floor, sideways without leave, or to the top."""
    found = []
    packages = [name for floor in floors for name in floor]
    for package in packages:
        for path in sorted(Path(root, package).rglob("*.py")):
            mine = floor_of(package)
            for module, line in imported_modules(path, Path(root)):
                target = module.split(".")[0]
                where = f"{path.relative_to(root)}:{line}: {package} imports {module}"
                if target in top:
                    found.append(f"{where} (a command line or benchmark; the library never imports those)")
                    continue
                level = floor_of(target)
                if level is None or target == package:
                    continue
                if level > mine:
                    found.append(f"{where} (floor {level} is above {package}'s floor {mine})")
                elif level == mine and target not in sideways.get(package, ()):
                    found.append(f"{where} (same floor; not declared in SIDEWAYS)")
    return found


def module_name(path, root=ROOT):
    """`a/b/c.py` -> "a.b.c", `a/b/__init__.py` -> "a.b"."""
    parts = Path(path).relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root=ROOT, floors=FLOORS):
    """{module: {imported module: first line}} over the floor packages' modules.

    `import a.b` and `from a import b` (b a module) point at a.b; `from a.b import name` (name not a module)
    points at a.b, the package's `__init__` when a.b is a package. The parents that Python initialises on the
    way are not edges: a package's `__init__` importing its own submodule is no cycle by itself.
    """
    packages = [name for floor in floors for name in floor]
    paths = sorted(p for package in packages for p in Path(root, package).rglob("*.py"))
    modules = {module_name(p, root): p for p in paths}
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for module, names, line in _imports(path, root):
            targets = [module]
            if names is not None:
                targets = [f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names]
            for target in targets:
                if target in modules and target != name:
                    edges.setdefault(target, line)
    return graph


def cycles(root=ROOT, floors=FLOORS):
    """Every group of modules that import each other (strongly connected components of `import_graph` with more
    than one module), each as one line: the modules, then each import inside the group with its line."""
    graph = import_graph(root, floors)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm; the graph has a few hundred modules, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in sorted(groups):
        edges = [f"{Path(*a.split('.'))}{'/__init__' if Path(root, *a.split('.')).is_dir() else ''}.py:{line} "
                 f"imports {b}" for a in group for b, line in sorted(graph[a].items()) if b in group]
        found.append(f"cycle {' <-> '.join(group)}: " + "; ".join(edges))
    return found


def test_every_package_is_on_a_floor():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= {name for floor in FLOORS for name in floor}, on_disk


def test_no_import_runs_uphill():
    assert violations() == []


def test_no_import_cycles():
    assert cycles() == []


@pytest.mark.parametrize("package, source, expected", [
    ("metrics", "from evaluation.scoring import evaluate\n", "floor 4 is above metrics's floor 1"),
    ("student", "def f():\n    import inference.predictors\n", "floor 3 is above student's floor 2"),
    ("datasets", "from . import x\nfrom teacher import loading\n", "floor 1 is above datasets's floor 0"),
    ("teacher", "from metrics import saliency\n", "same floor"),
    ("inference", "import predict\n", "a command line"),
])
def test_a_planted_uphill_import_is_caught(tmp_path, package, source, expected):
    for name in (n for floor in FLOORS for n in floor):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "planted.py").write_text(source)
    found = violations(root=tmp_path)
    assert len(found) == 1 and expected in found[0] and os.path.join(package, "planted.py") in found[0], found


@pytest.mark.parametrize("files, expected", [
    ({"datasets/a.py": "from datasets import b\n", "datasets/b.py": "def f():\n    import datasets.a\n"},
     "cycle datasets.a <-> datasets.b"),
    ({"teacher/x/__init__.py": "from teacher.x.m import f\n", "teacher/x/m.py": "from teacher.x import g\n"},
     "cycle teacher.x <-> teacher.x.m"),
    ({"student/a.py": "from .b import f\n", "student/b.py": "from .c import g\n", "student/c.py": "import student.a\n"},
     "cycle student.a <-> student.b <-> student.c"),
])
def test_a_planted_cycle_is_caught(tmp_path, files, expected):
    for name in (n for floor in FLOORS for n in floor):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    # Not cycles: a package's __init__ importing its submodules, and a submodule importing a sibling through it.
    (tmp_path / "metrics" / "__init__.py").write_text("from metrics import one, two\n")
    (tmp_path / "metrics" / "one.py").write_text("from metrics import two\n")
    (tmp_path / "metrics" / "two.py").write_text("import numpy\n")
    for relative, source in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(source)
    found = cycles(root=tmp_path)
    assert len(found) == 1 and found[0].startswith(expected + ":"), found


# --- Test modules import no test module: what several share lives in conftest.py (fixtures) or a helper module
# (tests/helpers.py, tests/torch_files.py, ...), so running one test file never collects or runs another's code.

def imports_of_test_modules(tests_dir=ROOT / "tests"):
    """'tests/test_x.py:LINE imports test_y' for each import of one test module by another."""
    test_modules = {p.stem for p in Path(tests_dir).glob("test_*.py")}
    found = []
    for path in sorted(Path(tests_dir).glob("test_*.py")):
        for module, names, line in _imports(path, Path(tests_dir).parent):
            parts = module.split(".")
            targets = [parts[-1]] if parts[-1] in test_modules and parts[:-1] in ([], ["tests"]) else []
            if module == "tests":
                targets = [name for name in names if name in test_modules]
            found += [f"{Path(tests_dir).name}/{path.name}:{line} imports {target}" for target in targets]
    return found


def test_no_test_module_imports_another():
    assert imports_of_test_modules() == []


@pytest.mark.parametrize("source, expected", [
    ("from test_b import helper\n", "imports test_b"),
    ("def f():\n    from tests.test_b import FIXTURE\n", "imports test_b"),
    ("import tests.test_b as b\n", "imports test_b"),
    ("from tests import helpers, test_b\n", "imports test_b"),
])
def test_a_planted_test_module_import_is_caught(tmp_path, source, expected):
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "test_b.py").write_text("def helper():\n    pass\n")
    (tests_dir / "helpers.py").write_text("import numpy\n")
    (tests_dir / "test_c.py").write_text("from tests.helpers import x\nfrom tests import helpers\nimport test_bx\n")
    (tests_dir / "test_a.py").write_text(source)
    found = imports_of_test_modules(tests_dir)
    assert len(found) == 1 and found[0].startswith("tests/test_a.py:") and found[0].endswith(expected), found
