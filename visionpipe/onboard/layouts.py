"""Recognising a user's data folder: which layout it is, and the data params that read it.

Each recogniser looks at the folder only (file names, a table's columns, an annotation file's
keys) and returns a :class:`Layout`: the task, the ``data`` params, and what it guessed and why,
so ``python -m visionpipe.init`` can say so. The counts themselves come from the pipeline's own
prepare scan, run on the written params.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core import shards
from visionpipe.core.coco import COCO_KEYS
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.images import IMAGE_EXTENSIONS
from visionpipe.core.sources.folder import SPLIT_NAMES, _visible_dirs
from visionpipe.core.sources.shards import holds_shards, shard_files
from visionpipe.core.sources.table import TABLE_EXTENSIONS, read_table
from visionpipe.tasks.detection.data.coco_source import state_of
from visionpipe.tasks.detection.data.voc_source import parse_voc, voc_files, voc_state

#: column names that say "these rows belong together" (one plant photographed many times)
GROUP_NAMES = re.compile(r"plant|group|subject|patient|specimen|animal|field|plot", re.I)
#: columns that are never the label or the target: the split a row was in, a group or an id
NOT_A_LABEL = re.compile(r"^(split|subset|fold|set)$|plant|group|subject|patient|_id$|^id$", re.I)
#: at most this many file names are looked for on disk when guessing the images folder
PROBE = 200
#: how deep below the folder tables and annotation files are looked for
MAX_DEPTH = 2


@dataclass
class Layout:
    """A recognised layout: the task, the data params to write, what was found and guessed."""

    kind: str  # "class folders", "pre-split class folders", "table", "COCO", "per-split COCO",
    # "Pascal VOC", "YOLO"
    task: str
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files with these suffixes at most MAX_DEPTH folders down, shallowest first."""
    try:
        found = [
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in suffixes
            and len(p.relative_to(root).parts) <= MAX_DEPTH + 1
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
    except OSError as exc:
        raise UserError(f"{exc.filename or root}: cannot read ({exc.strerror or exc})") from None
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def _best_images_folder(root: Path, names: list[str], near: Path) -> tuple[str, int]:
    """The folder (relative to ``root``) under which most of ``names`` exist: the data folder,
    the folder of the file naming them, or an ``images`` folder beside either."""
    candidates = [root, near, root / "images", near / "images", root / "JPEGImages"]
    best, hits = "", -1
    for folder in dict.fromkeys(c for c in candidates if c.is_dir()):
        count = sum((folder / name).is_file() for name in names[:PROBE])
        if count > hits:
            best, hits = folder.relative_to(root).as_posix(), count
    return ("" if best == "." else best), hits


def yolo(root: Path) -> Layout | None:
    """An Ultralytics or Roboflow YOLO export: a ``data.yaml`` (or any YAML at most two folders
    down) naming ``train`` and the class ``names``. YOLO labels carry no state: a plain
    detector."""
    import yaml

    for path in _files(root, (".yaml", ".yml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(raw, dict) or "train" not in raw or "names" not in raw:
            continue
        rel = path.relative_to(root).as_posix()
        names = raw["names"]
        count = len(names) if isinstance(names, list | dict) else "?"
        splits = [s for s in ("train", "val", "test") if raw.get(s)]
        kept = (
            "kept as they are, test carved from train when absent"
            if len(splits) > 1
            else "split into train, val and test by split.*"
        )
        notes = [
            f"found {rel}, a YOLO export ({count} classes; splits {', '.join(splits)}, {kept})",
            "YOLO labels carry no state: a plain detector (data.states: [])",
        ]
        data = {"annotations": rel, "images": "", "states": []}
        return Layout("YOLO", "detection", data, notes)
    return None


def voc(root: Path) -> Layout | None:
    folder = root / "Annotations"
    files = voc_files(folder) if folder.is_dir() else []
    if not files:
        return None
    names, states = [], Counter()
    for path in files:
        try:
            tree = parse_voc(path)
        except UserError:
            continue  # prepare names the broken file, with its line
        names.append(tree.findtext("filename", "").strip())
        states.update(s for obj in tree.findall("object") if (s := voc_state(obj, "state")))
    images, hits = _best_images_folder(root, names, folder)
    notes = [
        f"found Annotations/, {len(files)} Pascal VOC XML files",
        f"guessed images: {images or 'the data folder'}, where {hits} of the first "
        f"{min(len(names), PROBE)} exist",
    ]
    data = {"annotations": "Annotations", "images": images, "state_key": "state"}
    return _detection("Pascal VOC", data, sorted(states), notes, "Annotations/")


#: the folder names of a per-split export (Roboflow: train/, valid/, test/) and their splits
SPLIT_FOLDERS = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def _coco_files(root: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in _files(root, (".json",)):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, MemoryError):
            continue
        if isinstance(raw, dict) and set(COCO_KEYS) <= set(raw):
            found.append((path, raw))
    return found


def _states(raws: list[dict]) -> list[str]:
    boxes = [a for raw in raws if isinstance(raw["annotations"], list) for a in raw["annotations"]]
    return sorted(map(str, {state_of(a, "state") for a in boxes if isinstance(a, dict)} - {None}))


def _per_split(root: Path, files: list[tuple[Path, dict]]) -> Layout | None:
    """COCO files one per split folder (Roboflow's export: train/, valid/ [test/], each with
    its images and _annotations.coco.json, in the data folder or one folder down): their
    splits are kept."""
    groups: dict[Path, dict[str, tuple[Path, dict]]] = {}
    for path, raw in files:
        if split := SPLIT_FOLDERS.get(path.parent.name.lower()):
            groups.setdefault(path.parent.parent, {}).setdefault(split, (path, raw))
    by_split = next((g for g in groups.values() if "train" in g and len(g) >= 2), None)
    if by_split is None:
        return None
    mapping = {
        s: by_split[s][0].relative_to(root).as_posix()
        for s in SPLIT_FOLDERS.values()
        if s in by_split
    }
    counts = ", ".join(f"{s} {len(by_split[s][1]['images'])}" for s in mapping)
    notes = [
        f"found one COCO file per split folder ({', '.join(mapping.values())}; images listed: "
        f"{counts}); the splits are kept, test carved from train when absent",
        "images: beside each split's file",
    ]
    data = {"annotations": mapping, "images": "", "state_key": "state"}
    raws = [raw for _, raw in by_split.values()]
    return _detection("per-split COCO", data, _states(raws), notes, "the COCO files")


def coco(root: Path) -> Layout | None:
    files = _coco_files(root)
    if not files:
        return None
    if layout := _per_split(root, files):
        return layout
    path, raw = files[0]
    listed = raw["images"] if isinstance(raw["images"], list) else []
    rel = path.relative_to(root).as_posix()
    others = [p.relative_to(root).as_posix() for p, _ in files[1:]]
    names = [str(im.get("file_name", "")) for im in listed if isinstance(im, dict)]
    images, hits = _best_images_folder(root, names, path.parent)
    notes = [
        f"found {rel}, a COCO file ({len(names)} images listed)",
        f"guessed images: {images or 'the data folder'}, where {hits} of the first "
        f"{min(len(names), PROBE)} exist",
    ]
    if others:
        more = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        notes.append(f"also found {len(others)} other COCO file(s), not read: {more}")
    data = {"annotations": rel, "images": images, "state_key": "state"}
    return _detection("COCO", data, _states([raw]), notes, rel)


def _detection(kind: str, data: dict, states: list[str], notes: list[str], source: str) -> Layout:
    if states:
        notes.append(f"found states: {', '.join(states)} (the 'state' attribute's values)")
    else:
        notes.append(
            f"{source}: no box has a 'state' attribute: a plain detector (data.states: [])"
        )
    return Layout(kind, "detection", {**data, "states": states}, notes)


def _image_column(frame: pd.DataFrame) -> str | None:
    best, share = None, 0.0
    for column in frame.columns:
        values = frame[column].dropna().astype(str)
        if values.empty:
            continue
        hits = values.str.lower().str.endswith(tuple(IMAGE_EXTENSIONS)).mean()
        if hits > share:
            best, share = str(column), hits
    return best if share >= 0.5 else None


def _numeric(series: pd.Series) -> bool:
    values = pd.to_numeric(series.dropna(), errors="coerce")
    return len(values) > 0 and values.notna().mean() >= 0.9


def _sheets(path: Path) -> list[str]:
    """The sheets of a workbook in order ("" for a CSV: it has one table)."""
    if path.suffix.lower() == ".csv":
        return [""]
    try:
        return [str(name) for name in pd.ExcelFile(path).sheet_names]
    except Exception as exc:  # noqa: BLE001 - any reader failure: the workbook is unusable
        raise UserError(f"{path}: cannot read the workbook ({exc})") from None


def _label_candidates(frame: pd.DataFrame, others: list[str]) -> list[str]:
    """Columns with a few repeated values (text, or small integers such as 0/1 labels), not
    named like a split, a group or an id."""
    out = []
    for column in others:
        values = frame[column].dropna()
        few = 2 <= values.nunique() <= min(100, max(2, len(frame) // 2))
        integral = _numeric(values) and bool((pd.to_numeric(values) % 1 == 0).all())
        if few and (not _numeric(values) or integral) and not NOT_A_LABEL.search(column):
            out.append(column)
    return out


def table(root: Path, task: str | None) -> Layout | None:
    first_error: UserError | None = None
    for path in _files(root, TABLE_EXTENSIONS):
        try:
            for sheet in _sheets(path):
                if layout := _table_layout(root, path, sheet, task):
                    return layout
        except (UserError, DataError) as exc:
            first_error = first_error or UserError(str(exc))
    if first_error is not None:  # a table was there but could not be read: say why
        raise first_error
    return None


def _table_layout(root: Path, path: Path, sheet: str, task: str | None) -> Layout | None:
    frame = read_table(path, sheet)
    image_column = _image_column(frame)
    if image_column is None:
        return None
    rel = path.relative_to(root).as_posix()
    names = frame[image_column].dropna().astype(str).str.replace("\\", "/").tolist()
    images, hits = _best_images_folder(root, names, path.parent)
    others = [str(c) for c in frame.columns if str(c) != image_column]
    labels = _label_candidates(frame, others)
    numeric = [c for c in others if _numeric(frame[c]) and not NOT_A_LABEL.search(c)]
    targets = [c for c in numeric if c not in labels]
    where = f"{rel}, sheet '{sheet}'" if sheet else rel
    notes = [
        f"found {where}; guessed its image column: '{image_column}'",
        f"guessed images: {images or 'the data folder'}, where {hits} of the first "
        f"{min(len(names), PROBE)} image paths exist",
    ]
    data: dict[str, Any] = {"table": rel, "sheet": sheet, "image_column": image_column}
    data["images"] = images
    chosen = task or ("regression" if targets and not labels else "classification")
    if chosen == "classification":
        if not labels:
            raise UserError(f"{path}: no column looks like a class label (a few repeated values)")
        data["label_column"] = labels[0]
        values = frame[labels[0]].nunique()
        notes.append(f"guessed label column: '{labels[0]}' ({values} values)")
    elif chosen == "regression":
        targets = targets or numeric  # asked for: small integers may be the target too
        if not targets:
            raise UserError(f"{path}: no numeric column to use as the regression target")
        data["target_column"] = targets[0]
        notes.append(f"guessed target column: '{targets[0]}' (the first numeric one)")
        group = next((c for c in others if GROUP_NAMES.search(c)), "")
        data["group_column"] = group
        if group:
            notes.append(
                f"guessed group column: '{group}' (by its name; a group stays in one split)"
            )
        data["metadata_columns"] = []
    else:
        raise UserError(f"{path}: a table names images one by one; {chosen} reads annotations")
    return Layout("table", chosen, data, notes)


def class_folders(root: Path) -> Layout | None:
    subs = _visible_dirs(root)  # the folders the class-folder scan reads
    names = {s.name for s in subs}
    if {"train", "val"} <= names and names <= set(SPLIT_NAMES):
        return Layout(
            "pre-split class folders",
            "classification",
            {"table": ""},
            [
                "found train/ and val/ holding the class folders "
                "(test/ carved from train/ when absent)"
            ],
        )
    with_images = [s for s in subs if _has_images(s)]
    if len(with_images) >= 2:
        return Layout(
            "class folders",
            "classification",
            {"table": ""},
            [f"found {len(with_images)} folders of images, one per class"],
        )
    return None


def shard_folder(root: Path) -> Layout | None:
    """Tar shards in WebDataset layout (``python -m visionpipe.pack``): labels from each
    sample's ``.cls``, else from a ``label`` (or the one text) field of its ``.json``."""
    if not holds_shards(root):
        return None
    files = shard_files(root)
    data: dict[str, Any] = {"table": ""}
    notes = [f"found {len(files)} .tar shard(s)"]
    try:
        names = list(shards.index(files[0]).members)[:8]
    except DataError:
        names = []
    if any(n.endswith(".cls") for n in names):
        notes.append("labels from each sample's .cls member")
    elif (first := next((n for n in names if n.endswith(".json")), None)) is not None:
        try:
            record = json.loads(shards.read_bytes(files[0] / first))
        except (OSError, ValueError):
            record = {}
        source = record.get("source")  # the image's path, also in the table's image column
        keys = [k for k, v in record.items() if isinstance(v, str) and v != source]
        label = "label" if "label" in record else (keys[0] if len(keys) == 1 else None)
        if label:
            data["label_column"] = label
            notes.append(f"labels from the .json field '{label}'")
    return Layout("tar shards (WebDataset)", "classification", data, notes)


#: tried in this order: the annotation formats, then tables, then shards and class folders
RECOGNISERS: list[Callable[[Path, str | None], Layout | None]] = [
    lambda root, _task: yolo(root),
    lambda root, _task: voc(root),
    lambda root, _task: coco(root),
    table,
    lambda root, _task: shard_folder(root),
    lambda root, _task: class_folders(root),
]


def recognise(root: Path, task: str | None = None) -> Layout:
    """The first layout that fits ``root`` (``task`` forces a table's reading); one line
    when the folder is missing, unreadable or fits none."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    try:
        next(root.iterdir(), None)
    except OSError as exc:
        raise UserError(f"{root}: cannot read the folder ({exc.strerror or exc})") from None
    for recogniser in RECOGNISERS:
        if layout := recogniser(root, task):
            if task and layout.task != task:
                raise UserError(
                    f"{root}: a {layout.kind} layout is read as {layout.task}, not {task}"
                )
            return layout
    raise UserError(
        f"{root}: no layout recognised (class folders, train/ val/ folders, a table naming the "
        "images, tar shards, a COCO file, a YOLO data.yaml or a Pascal VOC Annotations/ folder)"
    )
