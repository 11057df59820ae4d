"""Detection's suspects stage: the state of every annotated box (a plain detector: its part),
checked by confident learning on crops of the boxes (visionpipe.core.suspects).

Each box is cropped from its image with a margin, so the features see the part and a little
of what surrounds it, and resized to ``suspects.image_size``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from visionpipe.core.cache import index_rows
from visionpipe.core.coco import part_names, read_split_coco
from visionpipe.core.images import open_rgb
from visionpipe.core.manifests import SPLITS
from visionpipe.core.params import Params
from visionpipe.core.suspects import LabelledItems, find_suspects

#: the share of a box's size added on each side of its crop
MARGIN = 0.1


def crop(image: Image.Image, bbox: list[float], size: int) -> np.ndarray:
    """``bbox`` (x, y, w, h) with :data:`MARGIN` around it, clipped to the image, as a
    ``3 x size x size`` uint8 array."""
    x, y, w, h = (float(v) for v in bbox)
    dx, dy = MARGIN * w, MARGIN * h
    box = (
        max(0.0, x - dx),
        max(0.0, y - dy),
        min(float(image.width), x + w + dx),
        min(float(image.height), y + h + dy),
    )
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:  # a degenerate box: its centre pixel
        cx, cy = min(x, image.width - 1), min(y, image.height - 1)
        box = (cx, cy, cx + 1, cy + 1)
    part = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(part, dtype=np.uint8).transpose(2, 0, 1).copy()


class BoxCrops:
    """The boxes' crops, cut when asked (``crops[index_tensor]``: N x 3 x size x size uint8),
    so the stage holds no more than a batch of them; consecutive boxes of one image decode it
    once."""

    def __init__(self, root: Path, boxes: list[tuple[str, list[float]]], size: int):
        self.root, self.boxes, self.size = root, boxes, size
        self.shape = torch.Size((len(boxes), 3, size, size))
        self._last: tuple[str, Image.Image] | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def _image(self, path: str) -> Image.Image:
        if self._last is None or self._last[0] != path:
            self._last = (path, open_rgb(self.root / path))
        return self._last[1]

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows, single = index_rows(key, len(self))
        out = torch.empty((len(rows), 3, self.size, self.size), dtype=torch.uint8)
        for i, row in enumerate(rows):
            path, bbox = self.boxes[row]
            out[i] = torch.from_numpy(crop(self._image(path), bbox, self.size))
        return out[0] if single else out


def box_items(root: Path, splits: Path, size: int) -> tuple[LabelledItems, list[str]]:
    """Every annotated box of every split, its crop and its state (or, without states, its
    part); and the states (``[]`` for a plain detector)."""
    rows, boxes, states = [], [], []
    for name in SPLITS:
        coco = read_split_coco(splits, name)
        states = [str(s) for s in coco.get("states", [])]
        parts = dict(
            zip(sorted(c["id"] for c in coco["categories"]), part_names(coco), strict=True)
        )
        by_image: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        for image in coco["images"]:
            for ann in by_image.get(int(image["id"]), []):
                part = parts[int(ann["category_id"])]
                label = ann["attributes"]["state"] if states else part
                x, y, w, h = (round(float(v)) for v in ann["bbox"])
                rows.append(
                    {
                        "path": image["file_name"],
                        "split": name,
                        "item": f"{part} box {x},{y},{w},{h} (annotation {ann['id']})",
                        "label": states[label] if isinstance(label, int) else str(label),
                    }
                )
                boxes.append((image["file_name"], ann["bbox"]))
    kind = "state" if states else "part"
    return LabelledItems(pd.DataFrame(rows), BoxCrops(root, boxes, size), "class", kind), states


def suspects(params: Params, args: argparse.Namespace) -> None:
    items, states = box_items(Path(params.data.path), Path(args.splits), params.suspects.image_size)
    find_suspects(items, params, args, {"boxes_of": "states" if states else "parts"})
