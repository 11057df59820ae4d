"""dvc.yaml declares, for each stage, the package modules its script really imports."""

import ast
from pathlib import Path

import yaml

from tests.conftest import REPO

# imported by every stage: a change there is a change to every stage's behaviour, but listing
# them everywhere would rerun training for a new log line; they are covered by their own tests
SHARED = {
    "visionpipe/__init__.py",
    "visionpipe/stage.py",
    "visionpipe/params.py",
    "visionpipe/errors.py",
    "visionpipe/io.py",
    "visionpipe/manifests.py",
    "visionpipe/sources/__init__.py",
    "visionpipe/tasks/__init__.py",
    "visionpipe/tasks/base.py",
    "stages/__init__.py",
}


def module_file(name: str) -> str | None:
    base = REPO / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(REPO).as_posix()
    return None


def import_closure(path: str) -> set[str]:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse((REPO / current).read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] in ("visionpipe", "stages") and (f := module_file(name)):
                    todo.append(f)
    return seen


def test_stage_deps_match_imports():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = f"stages/{name}.py"
        assert f"python -m stages.{name} " in stage["cmd"]
        deps = set(stage["deps"])
        needed = import_closure(script) - SHARED
        covered = {
            f for f in needed if any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
        }
        assert covered == needed, f"{name}: undeclared code deps {sorted(needed - covered)}"
        code_deps = {d for d in deps if d.startswith(("visionpipe", "stages"))}
        unused = {d for d in code_deps if not any(f == d or f.startswith(d + "/") for f in needed)}
        assert not unused, f"{name}: declared but not imported {sorted(unused)}"
