"""The package is layered (DESIGN.md) with no import cycle, counting every import."""

from __future__ import annotations

import re

from tests.imports import closure, direct_imports, package_files

TASK_PART = re.compile(r"^visionpipe/tasks/(?P<task>[a-z_]+)/(?P<part>[a-z_]+)")
#: which part of a task folder may import which (a stage loads only its own part and model)
PART_IMPORTS = {
    "__init__": set(),
    "data": {"data"},
    "model": {"model"},
    "train": {"model", "train"},
    "evaluate": {"model", "evaluate"},
    "export": {"model", "export"},
}


def layer(path: str) -> str:
    if path.startswith("stages/"):
        return "stages"
    if path in (
        "visionpipe/__init__.py",
        "visionpipe/predict.py",
        "visionpipe/simulate.py",
        "visionpipe/init.py",
        "visionpipe/pack.py",
    ):
        return "entry"
    if path == "visionpipe/tasks/__init__.py":
        return "registry"
    return path.split("/")[1]  # core, deploy, embedded, onboard, tasks


ALLOWED = {
    "core": {"core", "entry"},
    "deploy": {"core", "deploy", "entry"},
    "embedded": {"core", "embedded", "entry"},
    # init reads a user's folder through the pipeline's own prepare scan (the registry), and
    # recognises annotation formats with the detection data part's own readers
    "onboard": {"core", "registry", "tasks", "onboard", "entry"},
    "registry": {"core", "entry"},
    "tasks": {"core", "registry", "tasks", "entry"},
    "entry": {"deploy", "onboard", "entry"},
    "stages": {"core", "deploy", "embedded", "registry", "entry", "stages"},
}


def part_of(path: str) -> tuple[str, str] | None:
    if not (m := TASK_PART.match(path)):
        return None
    part = m["part"].removesuffix(".py")
    return m["task"], part


def test_layers():
    broken = []
    for path in package_files():
        for target in direct_imports(path):
            if target == "visionpipe/__init__.py":
                continue
            if layer(target) not in ALLOWED[layer(path)]:
                broken.append(f"{path} imports {target}")
            if layer(target) == "stages" and target != "stages/__init__.py":
                broken.append(f"{path} imports a stage script {target}")
            src, dst = part_of(path), part_of(target)
            if src and dst:
                if src[0] != dst[0]:
                    broken.append(f"{path} imports another task's {target}")
                elif dst[1] not in PART_IMPORTS[src[1]] | {"__init__"}:
                    broken.append(f"{path} ({src[1]}) imports {target} ({dst[1]})")
    assert not broken, "\n".join(broken)


def test_no_import_cycle():
    graph = {path: direct_imports(path) for path in package_files()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            # a module imports its own package's __init__ by being in it: not an edge back
            if state.get(nxt) == 1 and not node.startswith(nxt.removesuffix("__init__.py")):
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_registry_imports_no_task():
    loaded = closure("visionpipe/tasks/__init__.py")
    assert not [f for f in loaded if f.startswith("visionpipe/tasks/") and f.count("/") > 2]


def test_deploy_imports_no_training_evaluation_or_plots():
    loaded = closure("visionpipe/predict.py", "visionpipe/simulate.py")
    banned = ("engine", "plots", "eda", "image/", "tasks", "augment", "tracking", "draw")
    assert not [f for f in loaded if any(b in f for b in banned)], sorted(loaded)
