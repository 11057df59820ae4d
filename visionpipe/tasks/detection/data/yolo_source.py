"""YOLO detection exports (Ultralytics, Roboflow) as a raw COCO dict, which
:func:`~visionpipe.tasks.detection.data.coco_source.scan_coco` then checks and cleans like any
COCO file.

A ``data.yaml`` names the classes (``names``: a list, or a mapping ``{0: wheel, 1: chain}``;
``nc`` when given must agree) and the splits ``train`` (required), ``val`` and ``test``: each a
folder, a list of folders or a ``.txt`` file listing image paths. Every image has a label file
(Ultralytics' rule: the last ``images`` folder of its path becomes ``labels``, the suffix
``.txt``); one line per box, ``class cx cy w h`` normalized to 0..1, or a polygon ``class x1 y1
... xn yn`` (a segmentation export) read as the box around it. A missing label file is a
background image, as in Ultralytics.

Exports are written on someone else's machine: an absolute ``path:`` key is ignored, and split
entries are looked up the way Ultralytics and Roboflow mean them (``base/entry``, then beside
``data.yaml``, then ``../train/images`` as ``train/images``), never outside the data folder.
Mistakes stop the run with one line naming the file (and line); geometry is not repaired here:
the scan clips boxes and counts the dropped ones. Images are named relative to the data root.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml
from PIL import Image

from visionpipe.core.errors import UserError
from visionpipe.core.images import IMAGE_EXTENSIONS, displayed_size
from visionpipe.core.paths import link_outside

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _join(*parts: str) -> str:
    return posixpath.normpath(posixpath.join(*parts))


def _escapes(rel: str) -> bool:
    return rel == ".." or rel.startswith("../")


def _is_absolute(text: str) -> bool:
    return text.startswith("/") or bool(PureWindowsPath(text).drive)


def _relative_text(value: str) -> str:
    """``value`` with posix slashes, and without its drive or leading slash when absolute."""
    text = value.strip().replace("\\", "/")
    return text[len(PureWindowsPath(text).drive) :].lstrip("/") if _is_absolute(text) else text


def yolo_label_path(image: str) -> str:
    """The label file of ``image`` (posix, relative to the root): the last folder named
    ``images`` becomes ``labels`` and the suffix ``.txt`` (beside the image without one)."""
    *dirs, name = image.split("/")
    if "images" in dirs:
        dirs[len(dirs) - 1 - dirs[::-1].index("images")] = "labels"
    return "/".join([*dirs, posixpath.splitext(name)[0] + ".txt"])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None


def _read_yaml(root: Path, data_yaml: str) -> tuple[Path, str, dict]:
    """The data.yaml file, its folder (relative to ``root``) and its mapping."""
    text = str(data_yaml).strip().replace("\\", "/")
    norm = posixpath.normpath(text) if text else "."
    if _is_absolute(text) or norm == "." or _escapes(norm):
        raise UserError(f"YOLO data.yaml {data_yaml!r}: expected a file inside the data folder")
    path = root / norm
    if not path.is_file():
        raise UserError(f"{path}: no such YOLO data.yaml file")
    if outside := link_outside(path, root):
        raise UserError(f"{path}: {outside}")
    try:
        data = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return path, posixpath.dirname(norm) or ".", data


def _names(data: dict, path: Path) -> list[str]:
    raw = data.get("names")
    if isinstance(raw, dict):
        try:
            index = {int(str(k)): v for k, v in raw.items()}
        except ValueError:
            index = {}
        if len(index) != len(raw) or sorted(index) != list(range(len(raw))):
            raise UserError(f"{path}: names: keys must be class indices 0..n-1, got {list(raw)}")
        raw = [index[i] for i in range(len(raw))]
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{path}: 'names' must be a non-empty list of class names, got {raw!r:.80}")
    names: list[str] = []
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise UserError(f"{path}: names[{i}]: expected a class name, got {value!r} (quote it)")
        name = str(value).strip()
        if not name:
            raise UserError(f"{path}: names[{i}]: empty class name")
        if name in names:
            raise UserError(f"{path}: names[{i}] {name!r} is also names[{names.index(name)}]")
        names.append(name)
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(names)):
        raise UserError(f"{path}: nc is {nc!r} but names lists {len(names)} classes")
    return names


def _base(data: dict, path: Path, yaml_dir: str) -> str:
    """The folder split entries resolve against: ``path:`` when it stays in the data folder."""
    value = data.get("path")
    if value is None or str(value).strip() in ("", "."):
        return yaml_dir
    text = str(value).strip().replace("\\", "/")
    norm = _join(yaml_dir, text)
    if _is_absolute(text) or _escapes(norm):
        log.info("%s: ignoring path %r (the exporter's machine); using its folder", path, value)
        return yaml_dir
    return norm


def _locate(root: Path, path: Path, key: str, entry: str, base: str, yaml_dir: str) -> str | None:
    """The first existing candidate for a split entry inside the data folder; None when a
    val or test entry names nothing (exporters list ``test:`` without a test folder)."""
    rel = _relative_text(entry)
    tries = [_join(base, rel), _join(yaml_dir, rel)]
    if rel.startswith("../"):
        tries.append(_join(yaml_dir, rel[3:]))
    escaping = False
    for found in dict.fromkeys(tries):
        if not (root / found).exists():
            continue
        if _escapes(found):
            escaping = True
            continue
        if outside := link_outside(root / found, root):
            raise UserError(f"{path}: {key} {entry!r}: {outside}")
        return found
    if escaping:
        raise UserError(f"{path}: {key} {entry!r} leads outside the data folder ({root})")
    tried = ", ".join(dict.fromkeys(tries))
    if key != "train":
        log.warning("%s: %s %r: not found (tried %s); no %s images", path, key, entry, tried, key)
        return None
    raise UserError(f"{path}: {key} {entry!r}: not found (tried {tried} in {root})")


def _folder_images(root: Path, folder: str) -> list[str]:
    """Image files under ``folder`` (recursive; hidden files and folders skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root / folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root / folder).as_posix()
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(_join(folder, rel, name))
    return found


def _listed_images(root: Path, listing: str, base: str, yaml_dir: str) -> list[str]:
    """Image paths of a ``.txt`` list: ``./x`` beside the list, others against the base."""
    found = []
    for n, line in enumerate(_read_text(root / listing).splitlines(), start=1):
        text = line.strip().replace("\\", "/")
        if not text:
            continue
        if text.startswith("./"):
            tries = [_join(posixpath.dirname(listing), text[2:])]
        else:
            tries = [_join(base, _relative_text(text)), _join(yaml_dir, _relative_text(text))]
        inside = [t for t in tries if not _escapes(t)]
        if not inside:
            raise UserError(f"{root / listing}:{n}: image {text!r} leads outside the data folder")
        image = next((t for t in inside if (root / t).is_file()), inside[0])  # missing: counted
        if posixpath.splitext(image)[1].lower() in IMAGE_EXTENSIONS:
            found.append(image)
    return found


def _split_images(root: Path, path: Path, key: str, value: Any, base: str, yaml_dir: str) -> list:
    entries = value if isinstance(value, list) else [value]
    if not entries or not all(isinstance(e, str) and e.strip() for e in entries):
        raise UserError(f"{path}: {key}: expected folder(s) or a .txt list, got {value!r:.80}")
    images: list[str] = []
    for entry in entries:
        found = _locate(root, path, key, entry, base, yaml_dir)
        if found is None:
            continue
        if (root / found).is_dir():
            images += _folder_images(root, found)
        elif found.lower().endswith(".txt"):
            images += _listed_images(root, found, base, yaml_dir)
        else:
            raise UserError(f"{path}: {key} {entry!r}: expected a folder or a .txt list of images")
    return sorted(set(images))


def _image_size(path: Path, root: Path) -> tuple[int, int]:
    """Displayed size from the header; (0, 0) when unreadable or outside (the scan drops it)."""
    try:
        if path.is_file() and not link_outside(path, root):
            with Image.open(path) as img:
                return displayed_size(img)
    except (OSError, ValueError, Image.DecompressionBombError):
        pass
    return 0, 0


def _read_labels(label: Path, nc: int, width: int, height: int) -> tuple[list[tuple], int]:
    """The (class, pixel bbox) of every line, and how many lines were polygons."""
    boxes, segments = [], 0
    for n, line in enumerate(_read_text(label).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where, values = f"{label}:{n}", []
        for field in fields:
            try:
                values.append(float(field))
            except ValueError:
                raise UserError(f"{where}: {field!r} is not a number") from None
            if not math.isfinite(values[-1]):
                raise UserError(f"{where}: {field!r} is not a finite number")
        if not values[0].is_integer():
            raise UserError(f"{where}: class {fields[0]!r} is not an integer")
        cls = int(values[0])
        if not 0 <= cls < nc:
            raise UserError(f"{where}: class {cls} is not in 0..{nc - 1} (names in data.yaml)")
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            bbox = [cx * width - w * width / 2, cy * height - h * height / 2, w * width, h * height]
        elif len(values) >= 7 and len(values) % 2 == 1:
            xs = [x * width for x in values[1::2]]
            ys = [y * height for y in values[2::2]]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            segments += 1
        else:
            expected = "'class cx cy w h' or a polygon of 3+ points"
            raise UserError(f"{where}: expected {expected}, got {len(values)} numbers")
        boxes.append((cls, bbox))
    return boxes, segments


def yolo_to_coco(root: Path, data_yaml: str) -> dict[str, Any]:
    """The YOLO export described by ``data_yaml`` (relative to ``root``) as a raw COCO dict:
    image ids 1.. in split order (train, val, test) then path, each with its ``split``;
    category ids the class index + 1; and ``yolo`` counts (images without a label file,
    polygon lines read as boxes)."""
    root = Path(root)
    path, yaml_dir, data = _read_yaml(root, data_yaml)
    names = _names(data, path)
    base = _base(data, path, yaml_dir)
    if data.get("train") is None:
        raise UserError(f"{path}: no 'train' key (the folder of the training images)")
    splits: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for key in SPLITS:
        if data.get(key) is None or (key != "train" and data[key] == ""):
            continue
        files = _split_images(root, path, key, data[key], base, yaml_dir)
        for file in files:
            if file in owner:
                raise UserError(f"{path}: image {file} is in both {owner[file]} and {key}")
            owner[file] = key
        if not files and key == "train":
            raise UserError(f"{path}: train {data[key]!r}: no images found")
        if not files:
            log.warning("%s: %s %r: no images found", path, key, data[key])
        splits[key] = files

    images, annotations = [], []
    counts = {"without_label_file": 0, "segments": 0}
    for split, files in splits.items():
        for file in files:
            image_id = len(images) + 1
            width, height = _image_size(root / file, root)
            size = {"width": width, "height": height}
            images.append({"id": image_id, "file_name": file, **size, "split": split})
            label = root / yolo_label_path(file)
            if not label.is_file():
                counts["without_label_file"] += 1
                continue
            if outside := link_outside(label, root):
                raise UserError(f"{label}: {outside}")
            boxes, segments = _read_labels(label, len(names), width, height)
            counts["segments"] += segments
            for cls, bbox in boxes:
                ann = {"image_id": image_id, "category_id": cls + 1, "bbox": bbox}
                annotations.append({"id": len(annotations) + 1, **ann, "attributes": {}})
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    log.info("%s: %d images (%s), %d boxes, %s", path, len(images), sizes, len(annotations), counts)
    categories = [{"id": i, "name": name} for i, name in enumerate(names, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories, "yolo": counts}
