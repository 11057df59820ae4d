"""init: point the pipeline at your own data folder in one command.

    python -m visionpipe.init mydata [--task classification|regression|detection] [--dry-run]

Recognises the folder's layout (class folders, flat or train/ val/ [test/]; a table naming the
images, its image, label or target and group columns guessed and said so; a COCO file, or one per
split folder as Roboflow exports; a YOLO data.yaml; a Pascal VOC Annotations/ folder), writes
the params that read it into params.yaml (the data section, the task, binary metrics off, an
image size that does not upscale small images, data.states: [] for a plain detector; comments
kept), then runs the pipeline's own prepare scan on them and prints what it found: images per
class or part, files skipped and why, images no row names, and the `dvc repro` to run next. A
folder it cannot read or recognise is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core.errors import UserError
from visionpipe.core.image.size import auto_image_size
from visionpipe.core.images import IMAGE_EXTENSIONS
from visionpipe.core.io import atomic_path
from visionpipe.core.params import Params, params_from_dict
from visionpipe.core.stage import setup_logging
from visionpipe.onboard.layouts import Layout, recognise
from visionpipe.tasks import TASKS, task_data

#: the data keys a layout does not set, reset from the embedded demo's values to neutral ones
NEUTRAL_DATA: dict[str, Any] = {
    "images": "",
    "table": "",
    "sheet": "",
    "image_column": "image",
    "label_column": "label",
    "classes": [],
    "target_column": "target",
    "group_column": "",
    "metadata_columns": [],
    "annotations": "annotations.json",
    "state_key": "state",
}
#: the range init gives model.image_size: auto (never above the default 160, sized for a
#: CPU, and never an upscale)
AUTO_RANGE = [32, 160]


def suited_size(samples: pd.DataFrame) -> int | None:
    """What ``model.image_size: auto`` will train at on these images (the train stage's own
    rule, core.image.size), or None without their sizes."""
    try:
        return auto_image_size(samples, *AUTO_RANGE)
    except UserError:  # no sizes to go by: init prints none rather than stopping
        return None


def updates(layout: Layout, path: str) -> dict[str, dict[str, Any]]:
    """The params sections and keys init writes for ``layout`` found at ``path``."""
    data = {"path": path, **NEUTRAL_DATA, **layout.data}
    return {
        "base": {"task": layout.task},
        "data": data,
        "eda": {"target_vs": ""},
        "evaluate": {"binary_positive": []},
    }


def _unlabelled(
    root: Path, data: dict[str, Any], samples: pd.DataFrame, skipped: list[dict]
) -> int:
    """Images under the images folder that no table row names (tables only; a row that is
    skipped, for a missing label say, still names its image)."""
    if not data.get("table"):
        return 0
    folder = root / data.get("images", "")
    on_disk = {
        p.relative_to(root).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    }
    named = set(samples["path"]) | {str(item.get("path", "")) for item in skipped}
    return len(on_disk - named)


def _counts(task: str, samples: pd.DataFrame, report: dict) -> list[str]:
    if task == "classification":
        per_class = samples["label"].value_counts().sort_index()
        return [f"  {label}: {n} images" for label, n in per_class.items()]
    if task == "regression":
        t = samples["target"]
        groups = samples["group"].nunique() if samples["group"].astype(bool).any() else 0
        grouped = f", {groups} groups" if groups else ""
        return [f"  {len(samples)} images, target {t.min():.4g} .. {t.max():.4g}{grouped}"]
    parts = ", ".join(f"{k} {v}" for k, v in report.get("parts", {}).items())
    states = ", ".join(f"{k} {v}" for k, v in report.get("states", {}).items())
    per_state = f"; per state: {states}" if states else ""
    lines = [f"  {len(samples)} images; boxes per part: {parts}{per_state}"]
    if unlabelled := report.get("yolo", {}).get("without_label_file"):
        lines.append(f"  {unlabelled} images without a label file (background images, no box)")
    if dropped := report.get("categories_dropped"):
        lines.append(f"  categories without boxes dropped: {', '.join(dropped)}")
    return lines


def write_params(path: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Apply ``changes`` to the YAML file, keeping its comments and order (ruamel.yaml)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text())
    for section, values in changes.items():
        for key, value in values.items():
            doc.setdefault(section, {})[key] = value
    out = io.StringIO()
    yaml.dump(doc, out)
    with atomic_path(path) as tmp:
        tmp.write_text(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visionpipe.init",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="your data folder (inside the repo, so DVC can track it)")
    parser.add_argument("--task", choices=sorted(TASKS), help="force the task (a table's reading)")
    parser.add_argument("--params", default="params.yaml", help="params file to update")
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params_file = Path(args.params)
        if not params_file.is_file():
            raise UserError(f"{params_file}: no params file (run init in the repo's root)")
        root = Path(args.path)
        layout = recognise(root, args.task)
        changes = updates(layout, root.as_posix())
        params = _with_changes(params_file, changes)
        result, report = task_data(layout.task).scan(params)
        size = suited_size(result.samples) if layout.task != "detection" else None
        if size is not None:
            changes["model"] = {"image_size": "auto", "auto_size_range": AUTO_RANGE}
            params = _with_changes(params_file, changes)
        if not args.dry_run:
            write_params(params_file, changes)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"{root}: {layout.kind}, read as {layout.task}")
    for note in layout.notes:
        print(f"  {note}")
    for line in _counts(layout.task, result.samples, report):
        print(line)
    skipped = result.skipped
    print(f"  {len(skipped)} skipped" + (":" if skipped else ""))
    for item in skipped[:5]:
        name = item.get("path") or item.get("file") or item.get("file_name") or "?"
        print(f"    {name}: {item.get('reason', '')}")
    if len(skipped) > 5:
        print(
            f"    ... ({len(skipped) - 5} more in results/prepare/data_report.json after prepare)"
        )
    unlabelled = _unlabelled(root, layout.data, result.samples, skipped)
    if unlabelled:
        print(f"  {unlabelled} images under the images folder that no row names (not used)")
    if size is not None:
        print(
            f"  model.image_size: auto ({size} px here: the images' median shorter side, "
            f"within {AUTO_RANGE})"
        )
    if args.dry_run:
        print(f"dry run: {params_file} not changed")
        return 0
    written = ", ".join(f"{s}.{k}" for s, values in changes.items() for k in values)
    print(f"wrote {params_file}: {written}")
    print(f"next: dvc add {root.as_posix()} (to version it), then dvc repro")
    return 0


def _with_changes(params_file: Path, changes: dict[str, dict[str, Any]]) -> Params:
    """The params file with ``changes`` applied, validated as every stage validates it."""
    import yaml

    try:
        raw = yaml.safe_load(params_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{params_file}: not readable YAML ({exc})".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise UserError(f"{params_file}: not a mapping of sections")
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return params_from_dict(raw)


if __name__ == "__main__":
    sys.exit(main())
