"""Imports run one way: each package imports only packages on its own floor or below (docs/DESIGN.md).

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


def imported_modules(path, root=ROOT):
    """The absolute module names a Python file imports (relative imports resolved against its package)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    package = Path(path).relative_to(root).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.append((module, node.lineno))
    return names


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


def test_every_package_is_on_a_floor():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= {name for floor in FLOORS for name in floor}, on_disk


def test_no_import_runs_uphill():
    assert violations() == []


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
