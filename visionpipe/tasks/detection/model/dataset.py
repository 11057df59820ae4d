"""Detection data: decoded split images with their torchvision targets.

Images are decoded once into the decoded-image cache (visionpipe.core.cache) as uint8, already
shrunk to the size the model's transform would resize them to (never enlarged), and read from
there an image at a time, so neither large photos nor many of them fill memory and no epoch
pays for decoding again. Boxes are scaled with them; :func:`to_coco_results` maps
predictions back to the original pixels, where the COCO ground truth lives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visionpipe.core.augment import augment_batch
from visionpipe.core.cache import RaggedImages, cached_scaled
from visionpipe.core.images import fit_scale
from visionpipe.core.params import BOX_MOVING_AUGMENTATIONS, Augment


@dataclass
class DetectionSet:
    """One split: images (uint8, 3 x H x W, scaled), targets in the same pixels, and what maps
    them back to the COCO file (image ids, scale factors, paths)."""

    images: RaggedImages | list[torch.Tensor]  # indexed an image at a time
    targets: list[dict[str, torch.Tensor]]
    image_ids: list[int]
    scales: list[float]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.images)


def image_targets(coco: dict, states: Sequence[str]) -> dict[int, dict[str, torch.Tensor]]:
    """Per image id: boxes (x1, y1, x2, y2 in original pixels), labels, and states unless
    ``states`` is empty (a plain detector's data)."""
    label_of = {
        c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))
    }
    state_of = {name: i for i, name in enumerate(states)}
    rows: dict[int, list[tuple[list[float], int, int]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        state = state_of[ann["attributes"]["state"]] if states else -1
        rows[ann["image_id"]].append(([x, y, x + w, y + h], label_of[ann["category_id"]], state))
    out = {}
    for image_id, items in rows.items():
        out[image_id] = {
            "boxes": torch.tensor([b for b, _, _ in items], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([lab for _, lab, _ in items], dtype=torch.int64),
        }
        if states:
            out[image_id]["states"] = torch.tensor([s for _, _, s in items], dtype=torch.int64)
    return out


def load_split(
    root: str | Path,
    coco: dict,
    states: Sequence[str],
    min_size: int,
    max_size: int,
    desc: str = "decoding",
    check: str = "stat",
) -> DetectionSet:
    """Every image of a split's COCO file, decoded and scaled (into the decoded-image cache,
    read an image at a time), with its targets."""
    root = Path(root)
    images = sorted(coco["images"], key=lambda im: im["id"])
    scales = [fit_scale(im["width"], im["height"], min_size, max_size) for im in images]
    targets = image_targets(coco, states)
    files = [im["file_name"] for im in images]
    tensors = cached_scaled(root, files, scales, desc=desc, check=check)
    scaled = []
    for im, scale in zip(images, scales, strict=True):
        t = targets[im["id"]]
        scaled.append({**t, "boxes": t["boxes"] * scale})
    return DetectionSet(
        images=tensors,
        targets=scaled,
        image_ids=[im["id"] for im in images],
        scales=scales,
        paths=[im["file_name"] for im in images],
    )


def flip(
    image: torch.Tensor, target: dict[str, torch.Tensor], horizontal: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The image mirrored left-right (or top-bottom) with its boxes moved to match."""
    height, width = image.shape[-2:]
    boxes = target["boxes"].clone()
    if horizontal:
        image = image.flip(-1)
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    else:
        image = image.flip(-2)
        boxes[:, [1, 3]] = height - target["boxes"][:, [3, 1]]
    return image, {**target, "boxes": boxes}


def rotate90(
    image: torch.Tensor, target: dict[str, torch.Tensor], k: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The image turned ``k`` quarter turns counter-clockwise, its boxes turned with it."""
    boxes = target["boxes"].clone()
    for _ in range(k % 4):
        width = image.shape[-1]
        image = torch.rot90(image, 1, dims=(-2, -1))
        # a point (x, y) lands on (y, width - x)
        boxes = torch.stack(
            [boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], dim=1
        )
    return image, {**target, "boxes": boxes}


def augment(
    image: torch.Tensor,
    target: dict[str, torch.Tensor],
    cfg: Augment,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ``augment.ops`` a detector takes, in their order, drawn from ``gen``: hflip and
    vflip each with probability 1/2 and rot90 a uniform number of quarter turns (0-3), the
    boxes moved with the pixels; then color_jitter (core.augment's), which leaves them."""
    for name in cfg.ops:
        if name == "rot90":
            image, target = rotate90(image, target, int(torch.randint(4, (), generator=gen)))
        elif name in BOX_MOVING_AUGMENTATIONS and torch.rand((), generator=gen) < 0.5:
            image, target = flip(image, target, horizontal=name == "hflip")
    pixels_only = [name for name in cfg.ops if name not in BOX_MOVING_AUGMENTATIONS]
    if pixels_only:
        image = augment_batch(image[None], dataclasses.replace(cfg, ops=pixels_only), gen)[0]
    return image, target


def to_coco_results(
    outputs: Sequence[dict[str, torch.Tensor]],
    image_ids: Sequence[int],
    scales: Sequence[float],
    coco: dict,
    states: Sequence[str],
) -> list[dict[str, Any]]:
    """Model outputs (scaled pixels, labels) -> COCO result records in the file's pixels and
    category ids, with the predicted state and its probability (a detector with states)."""
    category_ids = [c["id"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    records = []
    for out, image_id, scale in zip(outputs, image_ids, scales, strict=True):
        boxes = out["boxes"].detach().float().cpu() / scale
        for i in range(len(boxes)):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            record = {
                "image_id": int(image_id),
                "category_id": category_ids[int(out["labels"][i]) - 1],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(out["scores"][i]),
            }
            if states:
                record["state"] = states[int(out["states"][i])]
                record["state_score"] = float(out["state_scores"][i])
            records.append(record)
    return records
