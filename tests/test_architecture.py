"""The package's shape: no import circles (lazy imports inside functions included), no private names
imported across modules, and imports that run one way only, down the layers."""

import ast
from pathlib import Path

from tests.conftest import REPO


def _imports() -> dict[str, set[tuple[str, str | None]]]:
    """Module -> (imported module, imported name) for every pixbatch import anywhere in the module."""
    found = {}
    for path in (REPO / "pixbatch").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pixbatch"):
                edges |= {(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {(a.name, None) for a in node.names if a.name.startswith("pixbatch")}
        found[name] = edges
    return found


def test_no_import_circles():
    imports = _imports()
    graph = {m: set() for m in imports}
    for m, edges in imports.items():
        for module, name in edges:
            for target in (module, f"{module}.{name}"):
                if target in graph and target != m:
                    graph[m].add(target)
    done, path, cycles = set(), [], []

    def visit(m):
        if m in path:
            cycles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules_and_no_cli_below_it():
    bad = []
    for m, edges in _imports().items():
        for module, name in edges:
            if name and name.startswith("_") and not name.startswith("__") and module != m:
                bad.append(f"{m} imports {module}.{name}")
            if not m.startswith(("pixbatch.cli", "pixbatch.__main__")) and module.startswith("pixbatch.cli"):
                bad.append(f"{m} imports the CLI ({module})")
    assert not bad, bad


def test_the_check_sees_lazy_imports():
    src = (REPO / "pixbatch" / "tasks" / "upscale.py").read_text()
    assert "from pixbatch.runtime.batcher import run_planes" in src  # inside a function
    assert ("pixbatch.runtime.batcher", "run_planes") in _imports()["pixbatch.tasks.upscale"]
    assert Path(__file__).name == "test_architecture.py"


# cli -> train -> eval / bench -> tasks -> runtime (the engine) -> models -> io / ops -> kernels. A module may
# import its own package and any lower layer, never a higher one (train sits above eval: its validation
# uses evaluation's metrics). weights/ and examples/ hold data only.
LAYERS = {"__main__": 7, "cli": 6, "train": 5, "eval": 4, "bench": 4, "tasks": 3, "runtime": 2, "models": 1,
          "io": 0.5, "ops": 0.5, "kernels": 0, "weights": 0, "examples": 0}


def upward_imports() -> list[str]:
    bad = []
    for m, edges in _imports().items():
        parts = m.split(".")
        if len(parts) < 2:
            continue  # pixbatch/__init__.py: the version only
        here = parts[1]
        for module, _ in edges:
            there = module.split(".")[1] if module.count(".") else None
            if there is None or there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                bad.append(f"{m} ({here}) imports {module} ({there})")
    return bad


def test_imports_run_down_the_layers_only():
    packages = {p.name for p in (REPO / "pixbatch").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), packages - set(LAYERS)  # every package has its place
    assert not upward_imports(), "\n".join(upward_imports())
