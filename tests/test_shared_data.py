"""The suite passes on a clone with no ../shared beside it: every test that reads the shared data (directly,
through a module-level name or helper built from it, or by running a benchmark script that reads it) either
skips when it is absent or adapts to it. Checked on the source, so it costs nothing and holds without the
data being removed."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SEEDS = {"DATA", "COMPACT", "SHARED_DATA"}  # tests.conftest's and benchmarks/benchlib.py's names of the data
ADAPTS = {"is_dir", "is_file", "exists"}  # a test that looks whether the data is there adapts to it
ENV = "PIXBATCH_SHARED_DATA"  # a subprocess test that sets it runs the script without the data as well


def names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def strings_in(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def data_scripts() -> set[str]:
    """File names of the benchmark scripts that read the shared data."""
    return {p.name for p in (REPO / "benchmarks").glob("*.py") if names_in(ast.parse(p.read_text())) & SEEDS}


def spawns(fn: ast.FunctionDef) -> bool:
    """Whether a test starts a process (``subprocess.run`` and friends)."""
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "subprocess"
               for n in ast.walk(fn))


def module_reach(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level name -> the names its definition uses, closed transitively over the module."""
    direct: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            direct[node.name] = names_in(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for name in names_in(t):
                    direct[name] = names_in(node.value) if node.value is not None else set()
    reach = {k: set(v) for k, v in direct.items()}
    changed = True
    while changed:
        changed = False
        for uses in reach.values():
            more = set().union(*(reach.get(n, set()) for n in uses)) - uses
            if more:
                uses |= more
                changed = True
    return reach


def reaches(names: set[str], reach: dict[str, set[str]]) -> bool:
    return bool((names | set().union(*(reach.get(n, set()) for n in names))) & SEEDS)


def guarded(fn: ast.FunctionDef, reach: dict[str, set[str]], module_marked: bool) -> bool:
    """Skips without the data (a skip marker, pytest.skip) or adapts to it (looks whether it is there)."""
    if module_marked or any("requires_data" in names_in(d) or reaches(names_in(d), reach) for d in fn.decorator_list):
        return True
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and (
                node.attr == "skip" or (node.attr in ADAPTS and reaches(names_in(node.value), reach))):
            return True
    return False


def unguarded_tests() -> list[str]:
    scripts = data_scripts()
    bad = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        reach = module_reach(tree)
        module_marked = any(isinstance(n, ast.Assign) and "pytestmark" in names_in(n.targets[0])
                            and "requires_data" in names_in(n.value) for n in tree.body)
        fixtures = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test_")}
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
                continue
            used = names_in(fn) | ({a.arg for a in fn.args.args} & fixtures)
            reads = reaches(used, reach)
            runs = [s for s in scripts if any(s in text for text in strings_in(fn))] if spawns(fn) else []
            where = f"{path.relative_to(REPO)}::{fn.name}"
            if reads and not guarded(fn, reach, module_marked):
                bad.append(f"{where} reads the shared data with no skip or check for it")
            if runs and ENV not in strings_in(fn) and not guarded(fn, reach, module_marked):
                bad.append(f"{where} runs {runs} (which read the shared data) but never without the data")
    return bad


def test_every_test_that_reads_the_shared_data_skips_or_adapts_without_it():
    bad = unguarded_tests()
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_test_that_needs_the_data(tmp_path):
    """The guard itself: an unguarded reader (directly and through a helper) and a script run are found."""
    sample = ast.parse(
        "from tests.conftest import DATA\nSET = DATA / 'x'\n"
        "def helper():\n    return SET\n"
        "def test_reads():\n    assert helper()\n"
        "def test_runs():\n    subprocess.run(['bench_conv_pixel_shuffle.py'])\n")
    reach = module_reach(sample)
    assert "DATA" in reach["helper"]
    tests = [n for n in sample.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert not any(guarded(fn, reach, False) for fn in tests) and spawns(tests[1]) and not spawns(tests[0])
    assert "bench_conv_pixel_shuffle.py" in data_scripts()
    assert Path(__file__).name in {p.name for p in (REPO / "tests").glob("test_*.py")}
