"""End to end: `dvc status` after an edit names exactly the stages the edit reaches, for the
real dvc.yaml on the tiny built classification pipeline."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e import copy_built, run, set_params


def stale(repo: Path) -> set[str]:
    return set(json.loads(run(repo, "dvc", "status", "--json").stdout))


def touch(repo: Path, rel: str) -> None:
    path = repo / rel
    path.write_text(path.read_text() + "\n# an edit\n")


@pytest.fixture
def repo(built_repo, tmp_path):
    repo = copy_built(built_repo, tmp_path / "repo")
    assert stale(repo) == set()
    return repo


def test_other_tasks_code_and_params_leave_the_pipeline_up_to_date(repo):
    for rel in (
        "visionpipe/tasks/detection/model/detector.py",
        "visionpipe/tasks/detection/data/eda.py",
        "visionpipe/tasks/detection/train.py",
        "visionpipe/tasks/regression/model/targets.py",
        "visionpipe/tasks/regression/evaluate.py",
        "visionpipe/tasks/regression/data/split.py",
    ):
        touch(repo, rel)
        assert stale(repo) == set(), rel
    set_params(repo, {"detection": {"state_loss_weight": 0.9, "score_threshold": 0.3}})
    set_params(repo, {"regression": {"loss": "huber", "head_hidden": 8}})
    assert stale(repo) == set()


def test_bytecode_beside_the_code_is_no_change(repo):
    """Python writes __pycache__/*.pyc beside every module it imports (unless
    PYTHONDONTWRITEBYTECODE is set): that must not make every stage stale."""
    for folder in ("visionpipe/core", "visionpipe/tasks/classification/data", "stages"):
        cache = repo / folder / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "planted.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (repo / "visionpipe/core/stray.pyc").write_bytes(b"\x00")
    assert stale(repo) == set()


def test_evaluate_code_reruns_evaluate_not_train(repo):
    touch(repo, "visionpipe/tasks/classification/evaluate.py")
    assert stale(repo) == {"evaluate"}
    out = run(repo, "dvc", "repro").stdout
    assert "Running stage 'evaluate'" in out
    assert "Running stage 'train'" not in out and "Running stage 'export'" not in out
    assert stale(repo) == set()


def test_the_tasks_model_code_and_params_rerun_train(repo):
    """The check can fail: the task's own model code or section is a train dependency."""
    touch(repo, "visionpipe/tasks/classification/model/__init__.py")
    assert stale(repo) == {"train", "evaluate", "export"}
    run(repo, "git", "checkout", "--", "visionpipe")
    set_params(repo, {"classification": {"label_smoothing": 0.1}})
    assert stale(repo) == {"train", "evaluate"}
    touch(repo, "visionpipe/core/io.py")
    assert {"embed", "prepare", "train", "simulate"} <= stale(repo)


def test_a_threshold_target_reruns_export_and_simulate_and_lands_in_model_json(repo):
    """``simulate.threshold: {flag_share: 0.5}`` is resolved on val by export into model.json;
    simulate and predict flag by the resolved value."""
    set_params(repo, {"simulate": {"threshold": {"flag_share": 0.5}}})
    assert stale(repo) == {"export", "simulate"}
    run(repo, "dvc", "repro")
    assert stale(repo) == set()
    threshold = json.loads((repo / "models/export/model.json").read_text())["threshold"]
    assert threshold["target"] == {"flag_share": 0.5} and threshold["reached"]
    resolved = threshold["resolved_on"]
    val_rows = len((repo / "data/splits/val.csv").read_text().splitlines()) - 1
    assert resolved["count"] == val_rows and resolved["unit"] == "images"
    assert 0.0 <= resolved["flagged_share"] <= 0.5
    log = pd.read_csv(repo / "results/simulate/log.csv")
    assert (log["low_confidence"] == (log["confidence"] < threshold["value"])).all()
    metrics = json.loads((repo / "results/export/metrics.json").read_text())
    assert metrics["low_confidence_threshold"] == threshold["value"]
    image = repo / "data/raw" / pd.read_csv(repo / "data/splits/test.csv")["path"].iloc[0]
    out = run(repo, "python", "-m", "visionpipe.predict", "models/export/model.onnx", str(image))
    record = json.loads(out.stdout.splitlines()[-1])
    assert record["low_confidence"] == (record["confidence"] < threshold["value"])
