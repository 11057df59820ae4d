"""Pascal VOC XML (a folder of ``Annotations/*.xml``, as CVAT and labelImg export it) as a raw
COCO dict, which :func:`~visionpipe.tasks.detection.data.coco_source.scan_coco` then checks and
cleans like any COCO file.

Each XML file is one image: ``<filename>`` (relative to ``data.images``, e.g. ``JPEGImages``),
``<size>``, and an ``<object>`` per box with ``<name>`` (the part) and ``<bndbox>``
(``xmin, ymin, xmax, ymax`` in pixels, read as continuous coordinates as CVAT writes them, so
the box is ``[xmin, ymin, xmax - xmin, ymax - ymin]``). The state of a box is CVAT's object
attribute ``<attributes><attribute><name>state</name><value>damaged</value>``, or a child
element ``<state>`` of the object. A file that is not valid XML, or an object without a name or
a readable box, stops prepare with one line naming the file and the object.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from visionpipe.core.errors import UserError


def _text(element: ET.Element | None, tag: str) -> str:
    found = element.find(tag) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _number(element: ET.Element | None, tag: str, what: str) -> float:
    text = _text(element, tag)
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what}: <{tag}> must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{what}: <{tag}> must be a finite number, got {text!r}")
    return value


def voc_state(obj: ET.Element, state_key: str) -> str | None:
    """The object's own CVAT attribute ``state_key`` (``<attributes><attribute>``, not a
    nested part's), else its child element named ``state_key``; None when it has neither."""
    for attribute in obj.findall("attributes/attribute"):
        if _text(attribute, "name") == state_key:
            return _text(attribute, "value")
    own = next((child for child in obj if child.tag == state_key), None)
    return (own.text or "").strip() if own is not None else None


def voc_files(folder: Path) -> list[Path]:
    """The ``.xml`` files under ``folder``, sorted (a folder named ``x.xml`` is no file)."""
    return sorted(p for p in folder.rglob("*.xml") if p.is_file())


def parse_voc(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path}: not valid XML ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if root.tag != "annotation":
        raise UserError(f"{path}: not a Pascal VOC file (root element <{root.tag}>)")
    return root


def voc_to_coco(folder: str | Path, state_key: str) -> dict[str, Any]:
    """Every ``*.xml`` under ``folder`` (sorted) as a raw COCO dict: image ids 1.. in file
    order, category ids 1.. in name order, sizes from ``<size>`` (checked against the files
    later), states as attributes."""
    folder = Path(folder)
    files = voc_files(folder)
    if not files:
        raise UserError(f"{folder}: no Pascal VOC .xml files")
    parsed = []
    for path in files:
        root = parse_voc(path)
        file_name = _text(root, "filename")
        if not file_name:
            raise UserError(f"{path}: no <filename>")
        size = root.find("size")
        width = int(_number(size, "width", str(path))) if _text(size, "width") else None
        height = int(_number(size, "height", str(path))) if _text(size, "height") else None
        boxes = []
        for k, obj in enumerate(root.findall("object"), start=1):
            what = f"{path} object {k}"
            name = _text(obj, "name")
            if not name:
                raise UserError(f"{what}: no <name>")
            box = obj.find("bndbox")
            if box is None:
                raise UserError(f"{what} ({name}): no <bndbox>")
            x1, y1, x2, y2 = (_number(box, t, what) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((name, [x1, y1, x2 - x1, y2 - y1], voc_state(obj, state_key)))
        parsed.append((file_name, width, height, boxes))

    names = sorted({name for *_, boxes in parsed for name, _, _ in boxes})
    category_ids = {name: i for i, name in enumerate(names, start=1)}
    images, annotations = [], []
    for image_id, (file_name, width, height, boxes) in enumerate(parsed, start=1):
        image = {"id": image_id, "file_name": file_name}
        if width is not None and height is not None:
            image.update(width=width, height=height)
        images.append(image)
        for name, bbox, state in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[name],
                    "bbox": bbox,
                    "attributes": {} if state is None else {state_key: state},
                }
            )
    categories = [{"id": i, "name": name} for name, i in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
