"""The custom Vega-Lite templates in .dvc/plots/ render through the real dvc CLI.

dvc.yaml picks each plot's template by task (`template: ${base.task}_predictions`, ...), so every
task's templates must render the evaluate stage's two plot-data files (predictions.csv and the
long-format curves.csv) without a missing-field or template error, in `plots show` and in
`plots diff` between two commits.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e import dvc_json, run

TEMPLATES = REPO / ".dvc" / "plots"
TASKS = ("classification", "regression", "detection")
KINDS = ("predictions", "errors", "curves")

# the three top-level plot definitions of dvc.yaml, nothing else
DVC_YAML = """\
plots:
  - Test predictions:
      template: ${base.task}_predictions
      x: predicted
      y:
        results/evaluate/predictions.csv: "true"
  - Test errors:
      template: ${base.task}_errors
      x: predicted
      y:
        results/evaluate/predictions.csv: "true"
  - Test curves:
      template: ${base.task}_curves
      x: x
      y:
        results/evaluate/curves.csv: "y"
"""

# axis titles each rendered plot must carry: shows the template of the right task was picked
AXIS_TITLES = {
    "classification": {
        "Test predictions": {"predicted", "true"},
        "Test errors": {"predicted", "true"},
        "Test curves": {"false positive rate", "true positive rate", "recall", "precision"},
    },
    "regression": {
        "Test predictions": {"actual", "predicted"},
        "Test errors": {"actual", "residual (predicted - actual)"},
        "Test curves": {"absolute error tolerance", "share of samples within tolerance"},
    },
    "detection": {
        "Test predictions": {"predicted", "true"},
        "Test errors": {"predicted", "true"},
        "Test curves": {"recall", "precision"},
    },
}

CLASSES = ("crack", "finger", "ok")


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _classification_data(root: Path, shift: int = 0) -> None:
    predictions = []
    for i in range(12):
        true = CLASSES[i % 3]
        predicted = CLASSES[(i + (i % (4 + shift) == 0)) % 3]
        predictions.append(
            {"path": f"img_{i:02d}.png", "true": true, "predicted": predicted, "confidence": 0.9}
        )
    curves = []
    for j, name in enumerate(CLASSES):
        q = 0.1 * j + 0.05 * shift
        roc = [(0.0, 0.0), (0.1, 0.6 - q), (0.4, 0.9 - q), (1.0, 1.0)]
        pr = [(0.0, 1.0), (0.5, 0.8 - q), (1.0, 0.4 - q)]
        for curve, points in (("roc", roc), ("pr", pr)):
            curves += [
                {"curve": curve, "class": name, "point": k, "x": x, "y": y}
                for k, (x, y) in enumerate(points)
            ]
    _write_csv(root / "results/evaluate/predictions.csv", predictions)
    _write_csv(root / "results/evaluate/curves.csv", curves)


def _regression_data(root: Path, shift: int = 0) -> None:
    predictions = []
    for i in range(12):
        true = 10.0 + 1.5 * i
        predicted = true + ((-1) ** i) * (0.2 + 0.1 * i) + 0.5 * shift
        predictions.append(
            {
                "path": f"img_{i:02d}.png",
                "true": true,
                "predicted": round(predicted, 4),
                "residual": round(predicted - true, 4),
                "abs_error": round(abs(predicted - true), 4),
            }
        )
    errors = sorted(p["abs_error"] for p in predictions)
    curves = [{"curve": "rec", "class": "all", "point": 0, "x": 0.0, "y": 0.0}]
    curves += [
        {"curve": "rec", "class": "all", "point": k, "x": e, "y": round(k / len(errors), 4)}
        for k, e in enumerate(errors, start=1)
    ]
    _write_csv(root / "results/evaluate/predictions.csv", predictions)
    _write_csv(root / "results/evaluate/curves.csv", curves)


def _detection_data(root: Path, shift: int = 0) -> None:
    """One row per kept detection or missed part: state against state, with the two kinds of
    error (background, missed); PR curves per part, as the detection task writes them."""
    states = ("intact", "damaged", "absent", "occluded")
    predictions = []
    for i in range(14):
        true = states[i % 4]
        predicted = states[(i + (i % (5 + shift) == 0)) % 4]
        if i == 12:
            true = "background"
        if i == 13:
            predicted = "missed"
        predictions.append({"image_id": i // 3, "true": true, "predicted": predicted})
    curves = []
    for j, part in enumerate(("mono", "poly")):
        q = 0.1 * j + 0.05 * shift
        curves += [
            {"curve": "precision_recall", "class": part, "point": k, "x": k / 10, "y": 1 - q * k}
            for k in range(11)
        ]
    _write_csv(root / "results/evaluate/predictions.csv", predictions)
    _write_csv(root / "results/evaluate/curves.csv", curves)


WRITERS = {
    "classification": _classification_data,
    "regression": _regression_data,
    "detection": _detection_data,
}


def _project(root: Path, task: str) -> Path:
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    plots = root / ".dvc" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for t in TASKS:
        for kind in KINDS:
            shutil.copy2(TEMPLATES / f"{t}_{kind}.json", plots)
    (root / "params.yaml").write_text(f"base:\n  task: {task}\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    WRITERS[task](root)
    return root


def _axis_titles(spec) -> set[str]:
    found = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            title = value.get("title") if isinstance(value, dict) else None
            if key in ("x", "y") and isinstance(title, str):
                found.add(title)
            found |= _axis_titles(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= _axis_titles(item)
    return found


def _check_rendered(out: dict, task: str, revs: list[str]) -> None:
    assert not out.get("errors"), out.get("errors")
    assert set(out["data"]) == set(AXIS_TITLES[task])
    for name, rendered in out["data"].items():
        assert len(rendered) == 1, name
        assert rendered[0]["type"] == "vega"
        assert rendered[0]["revisions"] == revs
        content = rendered[0]["content"]
        assert content, name
        assert "<DVC_METRIC" not in json.dumps(content), name
        values = content["data"]["values"]
        assert values, name
        assert {v["rev"] for v in values} == set(revs), name
        assert AXIS_TITLES[task][name] <= _axis_titles(content), (name, _axis_titles(content))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_template_is_json_with_data_anchor(task, kind):
    text = (TEMPLATES / f"{task}_{kind}.json").read_text()
    spec = json.loads(text)
    assert spec["$schema"].endswith("vega-lite/v5.json")
    assert spec["data"] == {"values": "<DVC_METRIC_DATA>"}
    assert "<DVC_METRIC_DATA>" in text


@pytest.mark.parametrize("task", TASKS)
def test_plots_show_renders_every_plot(tmp_path, task):
    root = _project(tmp_path, task)
    _check_rendered(dvc_json(root, "plots", "show"), task, ["workspace"])
    # the HTML page dvc writes carries the filled specs
    run(root, "dvc", "plots", "show", "-o", "html")
    page = (root / "html" / "index.html").read_text()
    assert "<DVC_METRIC" not in page
    assert page.count("vegaEmbed(") == 3


@pytest.mark.parametrize("task", TASKS)
def test_plots_diff_between_commits(tmp_path, task):
    root = _project(tmp_path, task)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "first")
    WRITERS[task](root, shift=1)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "second")
    _check_rendered(dvc_json(root, "plots", "diff", "HEAD~1", "HEAD"), task, ["HEAD~1", "HEAD"])
