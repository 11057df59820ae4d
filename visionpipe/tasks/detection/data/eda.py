"""Exploratory figures and a JSON summary of the detection splits (COCO dicts).

Before training a detector it pays to see how crowded the images are, how small the boxes get
(the anchors and the input size must cover them), and how the parts and states are balanced per
split: a state seen a handful of times, or only on one part, is where the state head will fail.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)
from PIL import Image  # noqa: E402

from visionpipe.core.coco import part_names  # noqa: E402
from visionpipe.core.draw import draw_boxes, state_colors  # noqa: E402
from visionpipe.core.eda import SPLIT_COLORS, missing_summary, target_stats  # noqa: E402
from visionpipe.core.errors import DataError, UserError  # noqa: E402
from visionpipe.core.images import open_rgb  # noqa: E402
from visionpipe.core.io import save_figure, significant  # noqa: E402

log = logging.getLogger(__name__)

FIGURES = (
    "boxes_per_image.png",
    "box_sizes.png",
    "box_aspect.png",
    "part_frequency.png",
    "state_frequency.png",
    "part_state.png",
    "samples.png",
)
#: the figures a plain detector's data (no states) has no use for
STATE_FIGURES = ("state_frequency.png", "part_state.png")
SAMPLE_SIDE = 384  # px of the longer side a sample is drawn at (captions stay readable)
MAX_CAPTIONS = 20  # boxes in a sample beyond which captions would hide the image
COUNT_TABLES = ("images", "annotations")  # the COCO source's report: counts per reason
_OTHER_COLORS = ("#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_QUANTILES = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}


def _split_colors(splits: list[str]) -> dict[str, str]:
    others = iter(_OTHER_COLORS * (1 + len(splits)))
    return {s: SPLIT_COLORS.get(s) or next(others) for s in splits}


def _union(lists: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


def box_table(coco_by_split: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per box (split, image_id, part, state, width, height, area, aspect) and one per
    image (split, image_id, path, boxes); an annotation naming an unknown image or part, or
    without a state where the split has states, is a UserError naming the split and annotation
    id. A split without states (a plain detector's) has "" as every box's state."""
    boxes, images = [], []
    for split, coco in coco_by_split.items():
        parts = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        counts = {int(img["id"]): 0 for img in coco["images"]}
        for ann in coco["annotations"]:
            where = f"{split} split: annotation {ann.get('id')}"
            if int(ann["image_id"]) not in counts:
                raise UserError(f"{where}: image_id {ann['image_id']} is not an image")
            if int(ann["category_id"]) not in parts:
                raise UserError(f"{where}: category_id {ann['category_id']} is not a category")
            state = (ann.get("attributes") or {}).get("state")
            if state is None and coco.get("states", True):
                raise UserError(f"{where}: no attributes.state")
            _, _, w, h = (float(v) for v in ann["bbox"])
            counts[int(ann["image_id"])] += 1
            boxes.append(
                {
                    "split": split,
                    "image_id": int(ann["image_id"]),
                    "part": parts[int(ann["category_id"])],
                    "state": "" if state is None else str(state),
                    "width": w,
                    "height": h,
                    "area": w * h,
                    "aspect": w / h if h > 0 else math.nan,
                }
            )
        images += [
            {
                "split": split,
                "image_id": int(img["id"]),
                "path": str(img["file_name"]),
                "boxes": counts[int(img["id"])],
            }
            for img in coco["images"]
        ]
    box_columns = ["split", "image_id", "part", "state", "width", "height", "area", "aspect"]
    return (
        pd.DataFrame(boxes, columns=box_columns).astype(
            {c: float for c in ("width", "height", "area", "aspect")}
        ),
        pd.DataFrame(images, columns=["split", "image_id", "path", "boxes"]),
    )


def quantiles(values: pd.Series) -> dict[str, Any]:
    """count, mean and min/p05/p25/median/p75/p95/max of the finite values (None when empty)."""
    values = values[np.isfinite(values)]
    if values.empty:
        return {"count": 0, "mean": None, **{k: None for k in _QUANTILES}, "max": None}
    return {
        "count": int(len(values)),
        "mean": significant(float(values.mean())),
        **{k: significant(float(values.quantile(q))) for k, q in _QUANTILES.items()},
        "max": significant(float(values.max())),
    }


def _log_bins(values: pd.Series, n: int = 40) -> np.ndarray:
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.empty:
        return np.array([0.5, 2.0])
    low, high = float(positive.min()), float(positive.max())
    if low == high:
        low, high = low / 1.5, high * 1.5
    return np.geomspace(low, high, n + 1)


def _short(value: float, _: Any = None) -> str:
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= 10 * factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _log_axis(ax: plt.Axes) -> None:
    """A log-2 x axis with plain labels (0.5, 1, 2 or 64, 128, 256): log-10 labels say nothing
    on the short ranges box sizes and aspect ratios span."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=9))
    ax.xaxis.set_major_formatter(FuncFormatter(_short))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _step_hists(
    ax: plt.Axes,
    frame: pd.DataFrame,
    column: str,
    edges: np.ndarray,
    colors: dict[str, str],
) -> None:
    for split, color in colors.items():
        values = frame.loc[frame["split"] == split, column]
        values = values[np.isfinite(values)]
        ax.hist(values, bins=edges, histtype="step", lw=1.6, color=color, label=f"{split}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def boxes_per_image_figure(images: pd.DataFrame, colors: dict[str, str], path: Path) -> None:
    top = int(images["boxes"].max()) if len(images) else 0
    edges = np.arange(-0.5, top + 1.5) if top <= 60 else np.histogram_bin_edges([0, top], 40)
    fig, ax = plt.subplots(figsize=(6, 4))
    _step_hists(ax, images, "boxes", edges, colors)
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    ax.set_title("Boxes per image per split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


def box_sizes_figure(boxes: pd.DataFrame, colors: dict[str, str], path: Path) -> None:
    """Width and height on linear bins, area on log bins (it spans orders of magnitude)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, column in zip(axes, ("width", "height", "area"), strict=True):
        values = boxes[column]
        if column == "area":
            edges = _log_bins(values)
            _log_axis(ax)
        else:
            finite = values[np.isfinite(values)]
            edges = np.histogram_bin_edges(finite if len(finite) else [0, 1], bins=40)
        _step_hists(ax, boxes, column, edges, colors)
        ax.set_xlabel(f"box {column} (px{'²' if column == 'area' else ''})")
        ax.set_ylabel("boxes")
    axes[0].legend(fontsize=8)
    fig.suptitle("Box sizes per split")
    fig.tight_layout()
    save_figure(path, fig)


def box_aspect_figure(boxes: pd.DataFrame, colors: dict[str, str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    _step_hists(ax, boxes, "aspect", _log_bins(boxes["aspect"]), colors)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    _log_axis(ax)
    ax.set_xlabel("aspect ratio (width / height, log scale)")
    ax.set_ylabel("boxes")
    ax.set_title("Box aspect ratio per split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


def frequency(
    boxes: pd.DataFrame, column: str, names: list[str], splits: list[str]
) -> pd.DataFrame:
    """Boxes per ``column`` value (rows, in ``names`` order) and split (columns)."""
    return (
        boxes.groupby([column, "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=names, columns=splits, fill_value=0)
        .astype(int)
    )


def frequency_figure(counts: pd.DataFrame, what: str, colors: dict[str, str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(counts) + 3), 4))
    if len(counts):
        counts.plot.bar(ax=ax, color=[colors[s] for s in counts.columns], width=0.8)
        ax.tick_params(axis="x", rotation=30)
    ax.set_xlabel(what)
    ax.set_ylabel("boxes")
    ax.set_title(f"Boxes per {what} and split")
    fig.tight_layout()
    save_figure(path, fig)


def part_state_figure(table: pd.DataFrame, path: Path) -> None:
    """Counts of every part x state pair (all splits): empty cells are pairs never seen."""
    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * cols + 2.5), max(3, 0.5 * rows + 1.8)))
    values = table.to_numpy()
    image = ax.imshow(values, cmap="Blues", aspect="auto", vmin=0)
    high = values.max() if values.size else 0
    for r in range(rows):
        for c in range(cols):
            color = "white" if high and values[r, c] > high / 2 else "black"
            ax.text(c, r, str(values[r, c]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(cols), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(rows), table.index)
    ax.set_xlabel("state")
    ax.set_ylabel("part")
    ax.set_title("Boxes per part and state (all splits)")
    fig.colorbar(image, ax=ax, fraction=0.046, label="boxes")
    fig.tight_layout()
    save_figure(path, fig)


def _sample_picture(
    root: Path, image: dict, anns: list[dict], parts: dict[int, str], colors: dict[str, str]
) -> Image.Image:
    rgb = open_rgb(root / image["file_name"])
    scale = SAMPLE_SIDE / max(rgb.size)  # up or down: captions keep one size in the grid
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    boxes = [
        [v * scale for v in (x, y, x + w, y + h)]
        for x, y, w, h in (map(float, a["bbox"]) for a in anns)
    ]
    names = [parts[int(a["category_id"])] for a in anns]
    # coloured by state; a plain detector's data (no states) by part
    states = [str((a.get("attributes") or {}).get("state", "")) for a in anns]
    keys = states if all(states) else names
    if len(anns) > MAX_CAPTIONS:  # a crowded image: the colours (and the legend) say enough
        return draw_boxes(np.asarray(rgb), boxes, [""] * len(anns), [colors[k] for k in keys])
    one_part = len(parts) == 1  # then the part is in the title, and captions stay short
    captions = [s if one_part else f"{n} {s}".strip() for n, s in zip(names, states, strict=True)]
    return draw_boxes(np.asarray(rgb), boxes, captions, [colors[k] for k in keys], width=1)


def samples_figure(
    coco_by_split: dict[str, dict],
    root: Path,
    samples: int,
    seed: int,
    states: list[str],
    path: Path,
) -> list[str]:
    """``samples`` images of all splits drawn with ``seed``, boxes coloured by state and captioned
    with part and state (no ``states``: coloured by part). Returns the paths shown, in grid
    order."""
    pool = [(split, img) for split, coco in coco_by_split.items() for img in coco["images"]]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), size=min(samples, len(pool)), replace=False)
    all_parts = _union([part_names(c) for c in coco_by_split.values()])
    keys = states or all_parts
    colors = state_colors(keys)
    cols = max(1, min(len(chosen), 4))
    nrows = max(1, math.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 3.0 * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = []
    for ax, index in zip(axes.flat, chosen, strict=False):
        split, image = pool[int(index)]
        coco = coco_by_split[split]
        parts = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        anns = [a for a in coco["annotations"] if int(a["image_id"]) == int(image["id"])]
        ax.imshow(_sample_picture(root, image, anns, parts, colors))
        name = Path(image["file_name"]).name
        ax.set_title(f"{split}: {name if len(name) <= 28 else name[:27] + '…'}", fontsize=7)
        shown.append(str(image["file_name"]))
    handles = [Patch(color=colors[k], label=k) for k in keys]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    title = "Samples with their boxes"
    if len(all_parts) == 1:
        title += f" (part: {all_parts[0]})"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    save_figure(path, fig)
    return shown


def report_counts(report: dict | None) -> dict[str, Any]:
    """What the prepare stage kept, dropped or clipped: the report's ``images`` and
    ``annotations`` count tables, its num_*/percent_* counts, and any other dropped/clipped
    entry (a count, counts per reason, or a list, given as its length)."""
    counts = missing_summary(report)
    for key, value in (report or {}).items():
        if key in counts or isinstance(value, bool):
            continue
        if key not in COUNT_TABLES and not any(word in key for word in ("dropped", "clipped")):
            continue
        if isinstance(value, (int, np.integer)):
            counts[key] = int(value)
        elif isinstance(value, dict):
            counts[key] = {
                str(k): int(v)
                for k, v in value.items()
                if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            }
        elif isinstance(value, list):
            counts[key] = len(value)
    return counts


def _nested(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {str(r): {str(c): int(v) for c, v in row.items()} for r, row in table.iterrows()}


def detection_eda(
    coco_by_split: dict[str, dict],
    root: Path,
    figures: Path,
    samples: int,
    seed: int,
    report: dict | None = None,
) -> dict[str, Any]:
    """Write the detection EDA figures (:data:`FIGURES`; without states, as a plain detector's
    data, none of :data:`STATE_FIGURES`) into ``figures`` and return the summary (plain JSON
    types, no NaN)."""
    root, figures = Path(root), Path(figures)
    boxes, images = box_table(coco_by_split)
    if images.empty:
        raise DataError("eda: the split annotations hold no images")
    figures.mkdir(parents=True, exist_ok=True)
    splits = list(coco_by_split)
    colors = _split_colors(splits)
    parts = _union([part_names(c) for c in coco_by_split.values()] + [boxes["part"].tolist()])
    states = _union(
        [[str(s) for s in c.get("states", [])] for c in coco_by_split.values()]
        + [[s for s in boxes["state"].tolist() if s]]
    )

    boxes_per_image_figure(images, colors, figures / "boxes_per_image.png")
    box_sizes_figure(boxes, colors, figures / "box_sizes.png")
    box_aspect_figure(boxes, colors, figures / "box_aspect.png")
    part_counts = frequency(boxes, "part", parts, splits)
    frequency_figure(part_counts, "part", colors, figures / "part_frequency.png")
    state_summary = {}
    if states:
        state_counts = frequency(boxes, "state", states, splits)
        frequency_figure(state_counts, "state", colors, figures / "state_frequency.png")
        part_state = (
            boxes.groupby(["part", "state"])
            .size()
            .unstack(fill_value=0)
            .reindex(index=parts, columns=states, fill_value=0)
            .astype(int)
        )
        part_state_figure(part_state, figures / "part_state.png")
        state_summary = {
            "state_frequency": {
                "all": {p: int(v) for p, v in state_counts.sum(axis=1).items()},
                **{s: {p: int(v) for p, v in state_counts[s].items()} for s in splits},
            },
            "part_state": _nested(part_state),
        }
    shown = samples_figure(coco_by_split, root, samples, seed, states, figures / "samples.png")
    log.info("eda: %d images, %d boxes, figures in %s", len(images), len(boxes), figures)

    per_split = {s: images[images["split"] == s] for s in splits}
    return {
        "task": "detection",
        "num_images": int(len(images)),
        "num_boxes": int(len(boxes)),
        "parts": parts,
        "states": states,
        "images_per_split": {s: int(len(f)) for s, f in per_split.items()},
        "boxes_per_split": {s: int(f["boxes"].sum()) for s, f in per_split.items()},
        "boxes_per_image": {
            "all": target_stats(images["boxes"].astype(float)),
            **{s: target_stats(f["boxes"].astype(float)) for s, f in per_split.items()},
        },
        "images_without_boxes": {s: int((f["boxes"] == 0).sum()) for s, f in per_split.items()},
        "box_size": {c: quantiles(boxes[c]) for c in ("width", "height", "area", "aspect")},
        "part_frequency": {
            "all": {p: int(v) for p, v in part_counts.sum(axis=1).items()},
            **{s: {p: int(v) for p, v in part_counts[s].items()} for s in splits},
        },
        **state_summary,
        "samples": shown,
        "data_report": report_counts(report),
    }
