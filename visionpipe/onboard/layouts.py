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

from visionpipe.core.errors import DataError, UserError
from visionpipe.core.images import IMAGE_EXTENSIONS
from visionpipe.core.sources.folder import SPLIT_NAMES
from visionpipe.core.sources.table import read_table

TABLE_SUFFIXES = (".csv", ".xlsx", ".xlsm")
#: column names that say "these rows belong together" (one plant photographed many times)
GROUP_NAMES = re.compile(r"plant|group|subject|patient|specimen|animal|field|plot", re.I)
#: how deep below the folder tables and annotation files are looked for
MAX_DEPTH = 2


@dataclass
class Layout:
    """A recognised layout: the task, the data params to write, what was found and guessed."""

    kind: str  # "class folders", "pre-split class folders", "table", "COCO", "Pascal VOC"
    task: str
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files with these suffixes at most MAX_DEPTH folders down, shallowest first."""
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and len(p.relative_to(root).parts) <= MAX_DEPTH + 1
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _best_images_folder(root: Path, names: list[str], near: Path) -> tuple[str, int]:
    """The folder (relative to ``root``) under which most of ``names`` exist: the data folder,
    the folder of the file naming them, or an ``images`` folder beside either."""
    candidates = [root, near, root / "images", near / "images", root / "JPEGImages"]
    best, hits = "", -1
    for folder in dict.fromkeys(c for c in candidates if c.is_dir()):
        count = sum((folder / name).is_file() for name in names[:200])
        if count > hits:
            best, hits = folder.relative_to(root).as_posix(), count
    return ("" if best == "." else best), hits


def yolo(root: Path) -> Layout | None:
    """An Ultralytics or Roboflow YOLO export (data.yaml beside labels/): recognised, so that
    the refusal is one line saying what it is."""
    if (root / "data.yaml").is_file() and (root / "labels").is_dir():
        raise UserError(
            f"{root}: a YOLO export (data.yaml, labels/); this version reads class folders, "
            "tables, COCO and Pascal VOC, not YOLO txt labels yet"
        )
    return None


def voc(root: Path) -> Layout | None:
    folders = [root / "Annotations"] if (root / "Annotations").is_dir() else []
    if not folders or not any(folders[0].rglob("*.xml")):
        return None
    data = {"annotations": "Annotations", "state_key": "state"}
    notes = ["found Annotations/, a folder of Pascal VOC XML files"]
    if (root / "JPEGImages").is_dir():
        data["images"] = "JPEGImages"
        notes.append("guessed images: JPEGImages/, where VOC keeps the images")
    states = _voc_states(folders[0], "state")
    return _detection("Pascal VOC", data, states, notes, root / "Annotations")


def _voc_states(folder: Path, key: str) -> list[str]:
    from xml.etree import ElementTree as ET

    seen: Counter[str] = Counter()
    for path in sorted(folder.rglob("*.xml"))[:500]:
        try:
            tree = ET.parse(path).getroot()
        except ET.ParseError:
            continue  # prepare names the broken file
        for attribute in tree.iter("attribute"):
            name = (attribute.findtext("name") or "").strip()
            if name == key:
                seen[(attribute.findtext("value") or "").strip()] += 1
    return sorted(seen)


def coco(root: Path) -> Layout | None:
    for path in _files(root, (".json",)):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(raw, dict) or not {"images", "annotations", "categories"} <= set(raw):
            continue
        rel = path.relative_to(root).as_posix()
        names = [str(im.get("file_name", "")) for im in raw["images"] if isinstance(im, dict)]
        images, hits = _best_images_folder(root, names, path.parent)
        notes = [f"found {rel}, a COCO file ({len(names)} images listed)"]
        shown = images or "the data folder"
        notes.append(
            f"guessed images: {shown}, where {hits} of the first {min(len(names), 200)} exist"
        )
        data = {"annotations": rel, "images": images, "state_key": "state"}
        states = sorted(
            {
                str(a["attributes"]["state"])
                for a in raw["annotations"]
                if isinstance(a, dict)
                and isinstance(a.get("attributes"), dict)
                and "state" in a["attributes"]
            }
        )
        return _detection("COCO", data, states, notes, path)
    return None


def _detection(kind: str, data: dict, states: list[str], notes: list[str], source: Path) -> Layout:
    if not states:
        raise UserError(
            f"{source}: no box has a 'state' attribute; this version trains detectors with a "
            "state per part only (a plain detector is not available yet)"
        )
    notes.append(f"found states: {', '.join(states)} (the 'state' attribute's values)")
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


def table(root: Path, task: str | None) -> Layout | None:
    for path in _files(root, TABLE_SUFFIXES):
        try:
            frame = read_table(path)
        except (UserError, DataError):
            continue
        image_column = _image_column(frame)
        if image_column is None:
            continue
        rel = path.relative_to(root).as_posix()
        names = frame[image_column].dropna().astype(str).str.replace("\\", "/").tolist()
        images, hits = _best_images_folder(root, names, path.parent)
        others = [str(c) for c in frame.columns if str(c) != image_column]
        numeric = [c for c in others if _numeric(frame[c])]
        labels = [
            c
            for c in others
            if c not in numeric and 2 <= frame[c].nunique() <= max(2, len(frame) // 2)
        ]
        notes = [
            f"found {rel}; guessed its image column: '{image_column}'",
            f"guessed images: {images or 'the data folder'}, where {hits} of the first "
            f"{min(len(names), 200)} image paths exist",
        ]
        data: dict[str, Any] = {"table": rel, "sheet": "", "image_column": image_column}
        data["images"] = images
        chosen = task or ("classification" if labels else "regression" if numeric else None)
        if chosen == "classification":
            if not labels:
                raise UserError(f"{path}: no column looks like a class label (a few text values)")
            data["label_column"] = labels[0]
            notes.append(
                f"guessed label column: '{labels[0]}' (text, {frame[labels[0]].nunique()} values)"
            )
        elif chosen == "regression":
            if not numeric:
                raise UserError(f"{path}: no numeric column to use as the regression target")
            data["target_column"] = numeric[-1]
            notes.append(f"guessed target column: '{numeric[-1]}' (numeric; the last such column)")
            group = next((c for c in others if GROUP_NAMES.search(c) and c != numeric[-1]), "")
            data["group_column"] = group
            if group:
                notes.append(
                    f"guessed group column: '{group}' (by its name; a group stays in one split)"
                )
            data["metadata_columns"] = []
        else:
            raise UserError(f"{path}: no label or numeric target column besides the image paths")
        return Layout("table", chosen, data, notes)
    return None


def class_folders(root: Path) -> Layout | None:
    subs = _subfolders(root)
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


#: tried in this order: the annotation formats, then tables, then plain class folders
RECOGNISERS: list[Callable[[Path, str | None], Layout | None]] = [
    lambda root, _task: yolo(root),
    lambda root, _task: voc(root),
    lambda root, _task: coco(root),
    table,
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
        "images, a COCO file or a Pascal VOC Annotations/ folder)"
    )
