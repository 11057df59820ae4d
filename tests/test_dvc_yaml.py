"""dvc.yaml declares, for each stage and each task, exactly the code the stage imports."""

import pytest
import yaml

from tests.conftest import REPO
from tests.imports import closure, module_file
from visionpipe.tasks import STAGE_MODULES, TASKS, code_deps

# package markers every module loads; empty of behaviour
EXEMPT = {"visionpipe/__init__.py", "stages/__init__.py"}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_code(name: str, task: str) -> set[str]:
    """What the stage loads for ``task``: its script's imports and the task part the registry
    imports for it (visionpipe.tasks.STAGE_MODULES)."""
    roots = [f"stages/{name}.py"]
    if name in STAGE_MODULES:
        roots.append(module_file(f"visionpipe.tasks.{task}.{STAGE_MODULES[name]}"))
    return closure(*roots) - EXEMPT


def declared(name: str, task: str) -> set[str]:
    deps = {d.replace("${base.task}", task) for d in STAGES[name]["deps"]}
    return {d.rstrip("/") for d in deps if d.startswith(("visionpipe", "stages"))}


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep + "/")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_match_imports(name, task):
    assert f"python -m stages.{name} " in STAGES[name]["cmd"]
    needed, deps = stage_code(name, task), declared(name, task)
    undeclared = sorted(f for f in needed if not any(covers(d, f) for d in deps))
    assert not undeclared, f"{name} ({task}): undeclared code deps {undeclared}"
    unused = sorted(d for d in deps if not any(covers(d, f) for f in needed))
    assert not unused, f"{name} ({task}): declared but not imported {unused}"


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(STAGE_MODULES))
def test_registry_code_deps_are_dvc_yamls(name, task):
    """The resume fingerprint hashes code_deps(): the same code as the stage's deps."""
    assert set(code_deps(task, name)) == declared(name, task)


@pytest.mark.parametrize("task", TASKS)
def test_no_task_loads_another_tasks_code(task):
    others = [f"visionpipe/tasks/{t}/" for t in TASKS if t != task]
    for name in STAGES:
        loaded = [f for f in stage_code(name, task) if f.startswith(tuple(others))]
        assert not loaded, f"{name} ({task}) loads {loaded}"


def test_evaluate_code_is_not_a_train_dep():
    for task in TASKS:
        train = stage_code("train", task)
        assert f"visionpipe/tasks/{task}/evaluate.py" not in train
        assert f"visionpipe/tasks/{task}/export.py" not in train
        assert not any(f.startswith(f"visionpipe/tasks/{task}/data/") for f in train)


def test_task_params_are_the_tasks_own_section():
    """A stage's params name the sections it reads; the task's own only through ${base.task},
    so another task's section never reruns it."""
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            assert str(key).split(".")[0] not in TASKS, f"{name}: {key} names one task"
