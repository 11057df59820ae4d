"""Boxes with captions drawn on images: EDA samples and the evaluate stage's DVC image plots."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont

from visionpipe.core.io import atomic_path

# the usual states keep their colour in every figure, whatever the dataset lists first
STATE_COLORS: dict[str, str] = {
    "intact": "#2ca02c",
    "damaged": "#d62728",
    "absent": "#1f77b4",
    "occluded": "#ff7f0e",
}
PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
GAP = 8  # px between the ground-truth and the predicted panel
HEADER = 18  # px of the title strip above each panel


def state_colors(states: Sequence[str]) -> dict[str, str]:
    """A colour per state: :data:`STATE_COLORS` for the known ones, the others from
    :data:`PALETTE` in the order they are listed (so the same list always gives the same map)."""
    others = iter(PALETTE * (1 + len(states) // len(PALETTE)))
    return {s: STATE_COLORS[s] if s in STATE_COLORS else next(others) for s in states}


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except (OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _rgb(color: str | tuple) -> tuple[int, int, int]:
    return ImageColor.getrgb(color)[:3] if isinstance(color, str) else tuple(color[:3])


def _text_color(fill: tuple[int, int, int]) -> str:
    return "black" if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 150 else "white"


def as_rgb_array(image: Any) -> np.ndarray:
    """An H x W x 3 uint8 array from an array or tensor, HWC or CHW, uint8 or float 0..255."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0, 255).astype(np.uint8)


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[float], color: tuple, width: int, dash: int
) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            start = (ax + (bx - ax) * t0, ay + (by - ay) * t0)
            end = (ax + (bx - ax) * t1, ay + (by - ay) * t1)
            draw.line([start, end], fill=color, width=width)


def _draw_on(
    image: Image.Image,
    boxes: Any,
    captions: Sequence[str],
    colors: Sequence[str | tuple],
    width: int,
    dashed: bool,
) -> None:
    draw = ImageDraw.Draw(image)
    font = _font(int(np.clip(min(image.size) / 40, 10, 18)))
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    for box, caption, color in zip(boxes, captions, colors, strict=True):
        rgb = _rgb(color)
        if dashed:
            _dashed_rectangle(draw, box, rgb, width, dash=max(4, 3 * width))
        else:
            draw.rectangle(box.tolist(), outline=rgb, width=width)
        if not caption:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        w, h = right - left + 4, bottom - top + 2
        x = float(np.clip(box[0], 0, max(0, image.width - w)))
        y = box[1] - h if box[1] - h >= 0 else max(0.0, box[1])  # above the box, else inside it
        draw.rectangle([x, y, x + w, y + h], fill=rgb)
        draw.text((x + 2 - left, y + 1 - top), caption, fill=_text_color(rgb), font=font)


def draw_boxes(
    image: np.ndarray,
    boxes: Any,
    captions: Sequence[str],
    colors: Sequence[str | tuple],
    width: int = 2,
    dashed: bool = False,
) -> Image.Image:
    """``image`` (H x W x 3 uint8) with ``boxes`` (x1, y1, x2, y2 pixels) outlined in their colour
    and captioned above (inside the image; an empty caption draws none)."""
    picture = Image.fromarray(as_rgb_array(image))
    _draw_on(picture, boxes, captions, colors, width, dashed)
    return picture


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _panel(
    image: np.ndarray,
    target: dict,
    parts: Sequence[str],
    colors: dict[str, str],
    states: Sequence[str],
    title: str,
    predicted: bool,
) -> Image.Image:
    boxes = _numpy(target["boxes"]).reshape(-1, 4)
    labels = _numpy(target["labels"]).astype(int).reshape(-1)
    box_states = _numpy(target["states"]).astype(int).reshape(-1) if states else None
    scores = _numpy(target["scores"]).reshape(-1) if predicted else None
    captions, box_colors = [], []
    for i in range(len(boxes)):
        part = parts[labels[i] - 1] if 0 < labels[i] <= len(parts) else str(labels[i])
        # a plain detector (no states) colours and captions its boxes by part
        key = states[box_states[i]] if box_states is not None else part
        caption = f"{part} {key}" if box_states is not None else part
        captions.append(caption + (f" {scores[i]:.2f}" if predicted else ""))
        box_colors.append(colors.get(key, PALETTE[0]))
    picture = Image.fromarray(as_rgb_array(image))
    _draw_on(picture, boxes, captions, box_colors, 2 if predicted else 1, dashed=not predicted)
    sheet = Image.new("RGB", (picture.width, picture.height + HEADER), "white")
    sheet.paste(picture, (0, HEADER))
    ImageDraw.Draw(sheet).text((3, 2), title, fill="black", font=_font(12))
    return sheet


def save_prediction_images(
    images: Sequence[np.ndarray],
    predictions: Sequence[dict],
    gts: Sequence[dict],
    parts: Sequence[str],
    states: Sequence[str],
    out_dir: Path,
    limit: int,
    score_threshold: float = 0.0,
) -> list[Path]:
    """Up to ``limit`` PNGs ``out_dir/detections_01.png``...: the ground truth (thin dashed
    boxes, part and state) beside the predictions with score >= ``score_threshold`` (part,
    state, score), coloured by state. ``predictions`` are model outputs and ``gts`` training
    targets (label = part index + 1, state index), in the pixels of ``images`` (H x W x 3).
    A plain detector's (``states`` empty) are captioned and coloured by part."""
    out_dir = Path(out_dir)
    colors = state_colors(list(states) or list(parts))
    paths = []
    for i, (image, pred, gt) in enumerate(zip(images, predictions, gts, strict=False)):
        if i >= limit:
            break
        keep = _numpy(pred["scores"]).reshape(-1) >= score_threshold
        kept = {
            k: _numpy(pred[k])[keep] for k in ("boxes", "labels", "states", "scores") if k in pred
        }
        n_gt, n_pred = len(_numpy(gt["labels"]).reshape(-1)), int(keep.sum())
        left = _panel(image, gt, parts, colors, states, f"ground truth ({n_gt})", False)
        right = _panel(image, kept, parts, colors, states, f"predicted ({n_pred})", True)
        sheet = Image.new("RGB", (left.width + GAP + right.width, left.height), "white")
        sheet.paste(left, (0, 0))
        sheet.paste(right, (left.width + GAP, 0))
        path = out_dir / f"detections_{i + 1:02d}.png"
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
        paths.append(path)
    return paths
