"""Detection annotations (COCO JSON, a simple per-image JSON, or Pascal VOC XML) as a cleaned
COCO dict.

Three input formats inside the data root: a folder is Pascal VOC (converted by
:func:`~visionpipe.tasks.detection.data.voc_source.voc_to_coco`); a JSON file is told apart by
its top-level type:

* COCO JSON (a dict with ``images``, ``annotations``, ``categories``; segmentation and other
  keys are ignored). The state of a box is ``ann["attributes"][state_key]`` (CVAT's COCO export)
  or else a top-level ``ann[state_key]``.
* simple JSON: a list of ``{"image": "rel/path.png", "parts": [{"name": "mono",
  "bbox": [x, y, w, h], <state_key>: "intact"}, ...]}``, converted by :func:`simple_to_coco`.

Structural mistakes and unknown states stop the run with one line naming the file and the
annotation id (a typo must never silently drop data). Fixable geometry is repaired and counted:
boxes are clipped to the image, empty or off-image boxes dropped, images missing on disk or not
decodable dropped with their boxes, and every image's real size replaces the JSON one. The
report counts each case and lists the first ``MAX_LISTED`` dropped items.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from visionpipe.core import shards
from visionpipe.core.coco import BACKGROUND, COCO_KEYS, MISSED, read_coco
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.images import displayed_size
from visionpipe.core.paths import images_folder, link_outside, under_images
from visionpipe.core.sources.folder import check_image
from visionpipe.tasks.detection.data.voc_source import voc_to_coco
from visionpipe.tasks.detection.data.yolo_source import yolo_to_coco

log = logging.getLogger(__name__)

MAX_LISTED = 200  # dropped items listed by name in the report; the counts are always complete
MANIFEST_COLUMNS = ["path", "image_id", "width", "height", "boxes", "parts", "states", "split"]


@dataclass
class CocoScan:
    """The cleaned COCO dict, one manifest row per kept image, and the data report."""

    coco: dict
    manifest: pd.DataFrame
    report: dict


# --- small validators: each raises UserError naming what is wrong ---------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_field(item: dict, key: str, what: str) -> int:
    value = item.get(key)
    if not _is_int(value):
        raise UserError(f"{what}: {key!r} must be an integer, got {value!r}")
    return value


def _relative(file_name: Any, what: str, images: str = "") -> str:
    """``file_name`` (relative to ``images``, the data.images folder) as a normalized posix
    path relative to the data root that stays inside it (lexically)."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise UserError(f"{what}: file name must be a non-empty string, got {file_name!r}")
    text = file_name.strip().replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(file_name).is_absolute():
        raise UserError(
            f"{what}: path '{file_name}' is absolute; write it relative to the data root"
        )
    norm = under_images(images, posixpath.normpath(text))
    if norm in (".", "..") or norm.startswith("../"):
        raise UserError(f"{what}: path '{file_name}' escapes the data root")
    return norm


def _bbox(value: Any, what: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != 4 or not all(map(_is_number, value)):
        raise UserError(f"{what}: bbox must be 4 finite numbers [x, y, w, h], got {value!r}")
    return [float(v) for v in value]


def state_of(ann: dict, state_key: str) -> Any:
    attributes = ann.get("attributes")
    if isinstance(attributes, dict) and state_key in attributes:
        return attributes[state_key]
    return ann.get(state_key)


# --- format conversion ------------------------------------------------------------------------


def _image_size(path: Path) -> tuple[int, int]:
    """Displayed width and height from the file header (0, 0 when unreadable: the scan drops
    it)."""
    try:
        with Image.open(shards.open_file(path)) as img:
            return displayed_size(img)
    except (OSError, ValueError, DataError, Image.DecompressionBombError):
        return 0, 0


def simple_to_coco(records: Any, root: str | Path, state_key: str, images_dir: str = "") -> dict:
    """Convert the simple per-image JSON to a (raw, not yet validated) COCO dict.

    Image ids 1.. in record order, annotation ids 1.. in order, categories the sorted unique
    part names with ids 1..; width and height are read from the image headers (0 when the file
    cannot be read, which the scan then reports as missing or undecodable). Records that are not
    objects, nameless parts and absolute or escaping image paths raise UserError naming the
    record; everything else is checked by the scan like any COCO file.
    """
    if not isinstance(records, list):
        raise UserError(f"simple format: expected a list of records, got {type(records).__name__}")
    root = Path(root)
    parsed: list[tuple[Any, list[dict]]] = []
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "image" not in record:
            raise UserError(f"record {i}: expected an object with 'image' and 'parts'")
        parts = record.get("parts", [])
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise UserError(f"record {i} ({record['image']!r}): 'parts' must be a list of objects")
        for j, part in enumerate(parts, start=1):
            if not isinstance(part.get("name"), str) or not part["name"].strip():
                raise UserError(
                    f"record {i} ({record['image']!r}) part {j}: 'name' must be a non-empty "
                    f"string, got {part.get('name')!r}"
                )
        parsed.append((record["image"], parts))

    names = sorted({p["name"].strip() for _, parts in parsed for p in parts})
    category_ids = {name: i for i, name in enumerate(names, start=1)}
    images, annotations = [], []
    for image_id, (file_name, parts) in enumerate(parsed, start=1):
        rel = _relative(file_name, f"record {image_id}", images_dir)
        width, height = _image_size(root / rel)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for part in parts:
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_ids[part["name"].strip()],
                "bbox": part.get("bbox"),
                "attributes": {state_key: part[state_key]} if state_key in part else {},
            }
            annotations.append(ann)
    categories = [{"id": i, "name": name} for name, i in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_to_simple(coco: dict, state_key: str = "state") -> list[dict]:
    """The inverse of :func:`simple_to_coco`: one record per image, in image id order."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        part = {"name": names[ann["category_id"]], "bbox": list(ann["bbox"])}
        state = state_of(ann, state_key)
        if state is not None:
            part[state_key] = state
        by_image[ann["image_id"]].append(part)
    return [
        {"image": img["file_name"], "parts": by_image[img["id"]]}
        for img in sorted(coco["images"], key=lambda i: i["id"])
    ]


# --- reading and writing ------------------------------------------------------------------------


# --- the scan -----------------------------------------------------------------------------------


class _Report:
    """Counters of the data report and the capped list of what was dropped, and why."""

    def __init__(self) -> None:
        self.images: Counter[str] = Counter()
        self.annotations: Counter[str] = Counter()
        self.dropped: list[dict] = []
        self.unlisted = 0

    def drop(self, kind: str, item_id: int, reason: str, file: str | None = None) -> None:
        if len(self.dropped) >= MAX_LISTED:
            self.unlisted += 1
            return
        entry: dict[str, Any] = {kind: item_id}
        if file is not None:
            entry["file"] = file
        entry["reason"] = reason
        self.dropped.append(entry)


def _clean_categories(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise UserError("'categories' must be a non-empty list")
    categories, seen_names = {}, {}
    for item in raw:
        if not isinstance(item, dict):
            raise UserError(f"categories: expected objects, got {item!r}")
        cid = _int_field(item, "id", f"category {item.get('id')!r}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"category {cid}: 'name' must be a non-empty string, got {name!r}")
        if cid in categories:
            raise UserError(f"category {cid}: duplicate category id")
        if name.strip() in seen_names:
            raise UserError(
                f"category {cid}: name {name.strip()!r} is also category {seen_names[name.strip()]}"
            )
        categories[cid] = name.strip()
        seen_names[name.strip()] = cid
    return [{"id": cid, "name": categories[cid]} for cid in sorted(categories)]


def _clean_images(raw: Any, images_dir: str = "") -> dict[int, dict]:
    if not isinstance(raw, list):
        raise UserError("'images' must be a list")
    images: dict[int, dict] = {}
    files: dict[str, int] = {}
    for item in raw:
        if not isinstance(item, dict):
            raise UserError(f"images: expected objects, got {item!r}")
        iid = _int_field(item, "id", f"image {item.get('id')!r}")
        what = f"image {iid}"
        if iid in images:
            raise UserError(f"{what}: duplicate image id")
        rel = _relative(item.get("file_name"), what, images_dir)
        if rel in files:
            raise UserError(f"{what}: file '{rel}' is also image {files[rel]}")
        for key in ("width", "height"):
            if key in item and not _is_number(item[key]):
                raise UserError(f"{what}: {key!r} must be a number, got {item[key]!r}")
        files[rel] = iid
        images[iid] = {
            "id": iid,
            "file_name": rel,
            "width": item.get("width"),
            "height": item.get("height"),
        }
    return images


def _parse_annotations(
    raw: Any, images: dict[int, dict], state_key: str, states: Sequence[str]
) -> list[dict]:
    """Type-check every annotation and its state before anything is dropped."""
    if not isinstance(raw, list):
        raise UserError("'annotations' must be a list")
    parsed, seen = [], set()
    for item in raw:
        if not isinstance(item, dict):
            raise UserError(f"annotations: expected objects, got {item!r}")
        aid = _int_field(item, "id", f"annotation {item.get('id')!r}")
        image_id = item.get("image_id")
        image = images.get(image_id) if _is_int(image_id) else None
        what = f"annotation {aid}" + (f" (image {image['file_name']})" if image else "")
        if aid in seen:
            raise UserError(f"{what}: duplicate annotation id")
        seen.add(aid)
        _int_field(item, "image_id", what)
        category_id = _int_field(item, "category_id", what)
        bbox = _bbox(item.get("bbox"), what)
        state = state_of(item, state_key) if states else None  # no states: a plain detector
        if states and state is None:
            raise UserError(f"{what}: no {state_key!r} attribute; allowed states: {list(states)}")
        if states and state not in states:
            raise UserError(
                f"{what}: {state_key} {state!r} is not one of the allowed states {list(states)}"
            )
        ann = {"id": aid, "image_id": image_id, "category_id": category_id, "bbox": bbox}
        parsed.append({**ann, "state": state})
    return sorted(parsed, key=lambda a: a["id"])


def _check_files(root: Path, images: dict[int, dict], report: _Report, workers: int) -> None:
    """Decode every image once; drop missing or broken ones and take the real size."""
    ids = sorted(images)

    def check(iid: int) -> tuple[int, int, str] | str | None:
        path = root / images[iid]["file_name"]
        return check_image(path, root) if shards.is_file(path) else None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, ids)
        for iid, result in tqdm(
            zip(ids, results, strict=True), total=len(ids), desc="checking images", unit="img"
        ):
            image = images[iid]
            if result is None or isinstance(result, str):
                kind = "missing" if result is None else "undecodable"
                report.images[kind] += 1
                report.drop("image_id", iid, result or "file not found", image["file_name"])
                del images[iid]
                continue
            width, height, _ = result
            if (image["width"], image["height"]) != (width, height):
                if image["width"] is not None or image["height"] is not None:
                    report.images["size_mismatch"] += 1
                    log.warning(
                        "image %d (%s): JSON size %sx%s, file is %dx%d; using the file's",
                        iid,
                        image["file_name"],
                        image["width"],
                        image["height"],
                        width,
                        height,
                    )
                image["width"], image["height"] = width, height


def _clip(bbox: list[float], width: int, height: int) -> tuple[list[float], bool] | None:
    """The box clipped to the image (and whether it changed); None when under 1 px remains."""
    x, y, w, h = bbox
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        return bbox, False  # untouched: no float round trip through corners
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return [x1, y1, x2 - x1, y2 - y1], True


def _clean_annotations(
    parsed: list[dict],
    images: dict[int, dict],
    listed_images: set[int],
    categories: set[int],
    report: _Report,
) -> list[dict]:
    kept = []
    for ann in parsed:
        aid, image_id = ann["id"], ann["image_id"]
        image = images.get(image_id)
        file = image["file_name"] if image else None
        if image_id not in listed_images:
            reason, kind = f"unknown image_id {image_id}", "unknown_image"
        elif image is None:
            reason, kind = f"image {image_id} was dropped", "image_missing"
        elif ann["category_id"] not in categories:
            reason, kind = f"unknown category_id {ann['category_id']}", "unknown_category"
        elif ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
            reason, kind = f"non-positive width or height {ann['bbox']}", "non_positive_size"
        elif (clip := _clip(ann["bbox"], image["width"], image["height"])) is None:
            reason = f"bbox {ann['bbox']} lies outside the {image['width']}x{image['height']} image"
            kind = "outside_image"
        else:
            bbox, changed = clip
            report.annotations["clipped"] += int(changed)
            kept.append(
                {
                    "id": aid,
                    "image_id": image_id,
                    "category_id": ann["category_id"],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "attributes": {} if ann["state"] is None else {"state": ann["state"]},
                }
            )
            continue
        report.annotations[kind] += 1
        report.drop("annotation_id", aid, reason, file)
    return kept


def _manifest(coco: dict) -> pd.DataFrame:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    rows = []
    for img in coco["images"]:
        anns = by_image[img["id"]]
        parts = "|".join(sorted({names[a["category_id"]] for a in anns}))
        states = "|".join(sorted({a["attributes"].get("state", "") for a in anns} - {""}))
        split = img.get("split", "")
        rows.append(
            (
                img["file_name"],
                img["id"],
                img["width"],
                img["height"],
                len(anns),
                parts,
                states,
                split,
            )
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _annotations_path(root: Path, annotations: str, key: str = "data.annotations") -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: data path does not exist or is not a directory")
    text = str(annotations).replace("\\", "/")
    norm = posixpath.normpath(text) if text else ""
    absolute = text.startswith("/") or PureWindowsPath(str(annotations)).is_absolute()
    if not norm or absolute or norm in (".", "..") or norm.startswith("../"):
        raise UserError(
            f"{key} '{annotations}': expected a JSON file inside the data root ({root}), a "
            "YOLO data.yaml, or a folder of Pascal VOC XML files"
        )
    path = root / norm
    if path.exists() and (outside := link_outside(path, root)):
        raise UserError(f"{key} '{annotations}': {outside}")
    return path


def _read_raw(path: Path, root: Path, state_key: str, images_dir: str) -> tuple[str, dict]:
    """One annotations file or folder as (format, raw COCO dict); errors name the file."""
    if path.is_dir():  # a folder of Pascal VOC XML files (its errors name the XML file)
        return "voc", voc_to_coco(path, state_key)
    raw = read_coco(path)
    try:
        if isinstance(raw, list):
            return "simple", simple_to_coco(raw, root, state_key, images_dir)
        if isinstance(raw, dict):
            if missing := [k for k in COCO_KEYS if k not in raw]:
                raise UserError(f"not a COCO file: missing top-level key(s) {', '.join(missing)}")
            return "coco", raw
        raise UserError(
            f"expected a COCO object or a list of image records, got {type(raw).__name__}"
        )
    except UserError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def _without_root_category(raw: dict) -> tuple[dict, list[str]]:
    """``raw`` without the categories that only name the others' supercategory and hold no
    box (Roboflow's COCO export lists its dataset as category 0 that way), and their names."""
    categories = raw.get("categories")
    if not isinstance(categories, list) or not all(isinstance(c, dict) for c in categories):
        return raw, []
    try:
        anns = raw.get("annotations") or []
        used = {a.get("category_id") for a in anns if isinstance(a, dict)}
        parents = {c.get("supercategory") for c in categories}
        parents -= {c.get("name") for c in categories if c.get("supercategory") == c.get("name")}
        roots = [c for c in categories if c.get("name") in parents and c.get("id") not in used]
    except TypeError:  # unhashable ids or names: the checks that follow name them
        return raw, []
    if not roots or len(roots) == len(categories):
        return raw, []
    kept = [c for c in categories if c not in roots]
    return {**raw, "categories": kept}, [str(c.get("name")) for c in roots]


@dataclass
class _Parsed:
    """Annotations read and type-checked, before any file is looked at: the categories, the
    images by id, the annotations, the categories dropped as Roboflow's dataset name."""

    categories: list[dict]
    images: dict[int, dict]
    annotations: list[dict]
    dropped_categories: list[str] = field(default_factory=list)


def _parse(
    path: Path, raw: dict, images_dir: str, state_key: str, states: Sequence[str]
) -> _Parsed:
    """Check one raw COCO dict (errors are one line naming ``path``)."""
    raw, dropped = _without_root_category(raw)
    try:
        categories = _clean_categories(raw["categories"])
        images = _clean_images(raw["images"], images_dir)
        parsed = _parse_annotations(raw["annotations"], images, state_key, states)
    except UserError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return _Parsed(categories, images, parsed, dropped)


def _merge_splits(parts: dict[str, _Parsed]) -> _Parsed:
    """Each split's checked annotations as one: images and annotations renumbered 1.. in
    split order, categories joined by name (ids 1.. in first-seen order), each image's
    ``split`` set. An annotation of an image or category its own file lacks stays unknown
    (a negative id), to be counted like any other."""
    names: dict[str, int] = {}
    images: dict[int, dict] = {}
    annotations: list[dict] = []
    for split, part in parts.items():
        category_ids = {
            c["id"]: names.setdefault(c["name"], len(names) + 1) for c in part.categories
        }
        image_ids = {}
        for old, image in part.images.items():
            image_ids[old] = len(images) + 1
            images[len(images) + 1] = {**image, "id": len(images) + 1, "split": split}
        for ann in part.annotations:
            n = len(annotations) + 1
            annotations.append(
                {
                    **ann,
                    "id": n,
                    "image_id": image_ids.get(ann["image_id"], -n),
                    "category_id": category_ids.get(ann["category_id"], -n),
                }
            )
    dropped = [d for p in parts.values() for d in p.dropped_categories if d not in names]
    categories = [{"id": i, "name": name} for name, i in names.items()]
    return _Parsed(categories, images, annotations, list(dict.fromkeys(dropped)))


def _split_files(annotations: Any) -> dict[str, str] | None:
    """A mapping of data.annotations (split -> file), checked; None for a single file."""
    if not isinstance(annotations, dict):
        return None
    unknown = sorted(set(annotations) - {"train", "val", "test"})
    if unknown or "train" not in annotations:
        raise UserError(
            "data.annotations: a mapping names the files of the splits train, val and test "
            f"(train required), got {sorted(annotations)}"
        )
    return {s: annotations[s] for s in ("train", "val", "test") if s in annotations}


def _split_prefix(root: Path, path: Path, images: str) -> str:
    """Where a split file's image names are relative to: ``data.images`` when set, else the
    file's own folder (Roboflow writes the images beside it), or a VOC folder itself."""
    if images:
        return images_folder(root, images)
    folder = path if path.is_dir() else path.parent
    rel = folder.relative_to(root).as_posix()
    return "" if rel == "." else rel


def _read_annotations(
    root: Path, annotations: Any, state_key: str, states: Sequence[str], images: str
) -> tuple[str, _Parsed, Path, dict]:
    """(format, the checked annotations, the file to name in messages, format extras) from
    data.annotations: one file or folder, a YOLO data.yaml, or a mapping of split files."""
    if (files := _split_files(annotations)) is not None:
        parts, formats = {}, set()
        for split, name in files.items():
            path = _annotations_path(root, name, f"data.annotations.{split}")
            if not path.exists():
                raise DataError(f"{path}: data.annotations.{split}: annotations file not found")
            prefix = _split_prefix(root, path, images)
            fmt, raw = _read_raw(path, root, state_key, prefix)
            parts[split] = _parse(path, raw, prefix, state_key, states)
            formats.add(fmt)
        merged = _merge_splits(parts)
        return "+".join(sorted(formats)), merged, _annotations_path(root, files["train"]), {}
    path = _annotations_path(root, annotations)
    if path.suffix.lower() in (".yaml", ".yml"):
        if states:
            raise UserError(
                f"{path}: YOLO labels carry no state; set data.states: [] to train a plain "
                "detector on them"
            )
        if images:
            raise UserError(
                f"data.images '{images}': a YOLO data.yaml names its own image folders; set "
                'data.images: ""'
            )
        raw = yolo_to_coco(root, str(annotations))
        parsed = _parse(path, raw, "", state_key, states)
        split_of = {img["id"]: img["split"] for img in raw["images"]}
        for image_id, image in parsed.images.items():
            image["split"] = split_of[image_id]
        return "yolo", parsed, path, {"yolo": raw["yolo"]}
    images_dir = images_folder(root, images)
    fmt, raw = _read_raw(path, root, state_key, images_dir)
    return fmt, _parse(path, raw, images_dir, state_key, states), path, {}


def _file_names(annotations: Any) -> str | dict[str, str]:
    def norm(name: Any) -> str:
        return posixpath.normpath(str(name).replace("\\", "/"))

    if isinstance(annotations, dict):
        return {split: norm(name) for split, name in annotations.items()}
    return norm(annotations)


def scan_coco(
    root: str | Path,
    annotations: str | dict[str, str],
    state_key: str,
    states: Sequence[str],
    workers: int = 4,
    images: str = "",
) -> CocoScan:
    """Read and clean the annotations ``annotations`` (relative to ``root``, e.g.
    ``annotations/instances_default.json`` of a CVAT export, a YOLO ``data.yaml``, a folder of
    VOC XML, or a mapping of per-split files such as Roboflow's
    ``{train: train/_annotations.coco.json, val: valid/...}``); image file names are relative
    to ``images`` (``data.images``, e.g. ``images``; per-split files: their own folder when
    it is ""), the manifest's to ``root``.

    Raises UserError (one line naming the file and the annotation or image id) for structural
    errors and unknown states; repairs and counts everything else (see the module docstring).
    """
    root = Path(root)
    if states and not state_key:
        raise UserError("data.state_key: must not be empty")
    if len(set(states)) != len(states):
        raise UserError(f"data.states: expected distinct state names, got {list(states)!r}")
    fmt, parsed_source, path, extras = _read_annotations(
        root, annotations, state_key, states, images
    )
    categories, images = parsed_source.categories, parsed_source.images
    parsed, root_categories = parsed_source.annotations, parsed_source.dropped_categories
    if not states and (reserved := {c["name"] for c in categories} & {BACKGROUND, MISSED}):
        raise UserError(
            f"{path}: a part named {sorted(reserved)[0]!r}; without states the evaluation uses "
            f"{BACKGROUND!r} and {MISSED!r} for unmatched boxes: rename it"
        )

    report = _Report()
    listed_images = set(images)
    _check_files(root, images, report, workers)
    kept = _clean_annotations(parsed, images, listed_images, {c["id"] for c in categories}, report)
    if not images:
        raise DataError(f"{path}: none of the {len(listed_images)} listed images is usable")
    if not kept:  # trained on no box, a detector learns nothing and reports a mAP of 0
        dropped = f" ({len(parsed)} listed, none usable)" if parsed else ""
        raise DataError(f"{path}: no boxes to train on{dropped}; check the annotations export")
    coco = {
        "images": [images[i] for i in sorted(images)],
        "annotations": kept,
        "categories": categories,
        "states": list(states),
    }
    manifest = _manifest(coco)
    names = {c["id"]: c["name"] for c in categories}
    part_counts = Counter(names[a["category_id"]] for a in kept)
    state_counts = Counter(a["attributes"].get("state") for a in kept)
    image_counts = {
        "listed": len(listed_images),
        "kept": len(images),
        **{k: report.images[k] for k in ("missing", "undecodable", "size_mismatch")},
        "without_boxes": int((manifest["boxes"] == 0).sum()),
    }
    ann_kinds = ("non_positive_size", "clipped", "outside_image", "unknown_image")
    ann_counts = {
        "listed": len(parsed),
        "kept": len(kept),
        **{k: report.annotations[k] for k in (*ann_kinds, "unknown_category", "image_missing")},
    }
    result = {
        "format": fmt,
        "annotations_file": _file_names(annotations),
        "images": image_counts,
        "annotations": ann_counts,
        "parts": {c["name"]: part_counts[c["name"]] for c in categories},
        **({"categories_dropped": root_categories} if root_categories else {}),
        **extras,
        "states": {s: state_counts[s] for s in states},
        "dropped": report.dropped,
        "dropped_not_listed": report.unlisted,
    }
    for kind, n in [*report.images.items(), *report.annotations.items()]:
        if n:
            log.warning("%s: %d %s", path.name, n, kind.replace("_", " "))
    log.info(
        "%s (%s): %d of %d images, %d of %d boxes kept",
        path.name,
        fmt,
        len(images),
        len(listed_images),
        len(kept),
        len(parsed),
    )
    return CocoScan(coco, manifest, result)
