"""COCO annotation files as every stage of the detection task reads them: parse, write with
stable bytes, subset by image, and the per-split files the split stage writes beside its
manifests. (Checking a user's COCO file is prepare's job: tasks/detection/data.)"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visionpipe.core.errors import DataError, UserError
from visionpipe.core.io import atomic_path

COCO_KEYS = ("images", "annotations", "categories")
#: the labels evaluation gives unmatched boxes (a detection of no box; a box no detection
#: found), so no part of a plain detector (and no state) may be named so
BACKGROUND, MISSED = "background", "missed"


def read_coco(path: str | Path) -> Any:
    """Parse a JSON annotation file; a missing or malformed file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotations file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read annotations: {exc}") from None


def write_coco(path: str | Path, coco: dict) -> None:
    """Write atomically with images, annotations and categories in id order and sorted keys,
    so the same content always gives the same bytes (and the same DVC hash)."""
    out = dict(coco)
    for key in COCO_KEYS:
        if key in out:
            out[key] = sorted(out[key], key=lambda item: item["id"])
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def subset_coco(coco: dict, image_ids: Iterable[int]) -> dict:
    """``coco`` restricted to ``image_ids`` and their annotations (same categories and states)."""
    wanted = set(image_ids)
    known = {img["id"] for img in coco["images"]}
    if unknown := sorted(wanted - known):
        raise ValueError(f"subset_coco: image id {unknown[0]} is not in the COCO dict")
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in coco["images"] if img["id"] in wanted]
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in wanted]
    return out


def part_names(coco: dict) -> list[str]:
    """Part names in label order: label i + 1 is the i-th category by id (0 is background)."""
    return [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]


def split_coco_path(splits: Path, name: str) -> Path:
    """The COCO file of one split, written beside its image manifest."""
    return Path(splits) / f"{name}.json"


def read_split_coco(splits: Path, name: str) -> dict:
    path = split_coco_path(splits, name)
    if not path.is_file():
        raise UserError(f"{path}: split annotations not found (run the split stage)")
    return read_coco(path)
