"""The embedded detection default: EL module panels composed from the real elpv cell images.

A panel is one module of ONE cell type (mono or poly, as real modules are): a grid of cells with
a thin dark gap between them and a margin. Each slot holds a cell in one state:

* ``intact``: a functional cell (defect probability 0);
* ``damaged``: a defective cell (probability >= 2/3; the ambiguous 1/3 cells are left out);
* ``absent``: an empty slot, dark with a faint frame, still boxed where the cell belongs;
* ``occluded``: a real cell (functional or defective) partly covered by an opaque rectangle
  over 35-65 % of its area.

Absent and occluded slots are allotted by quota (error diffusion over all slots, positions drawn
at random), so their shares match the fractions exactly; the remaining slots take the next cell
of the module's type, so intact and damaged come in the natural ratio of the available cells.
Every real cell is used at most once across all panels, so a split by panel never leaks a cell.
The same arguments give byte-identical PNGs and JSON. Written (the caller writes nothing)::

    <out_dir>/panels/panel_0001.png ...   8-bit grayscale, like the elpv cells
    <out_dir>/panels.json                  COCO, categories mono and poly, attributes.state
    <out_dir>/LICENSE.md                   the elpv-dataset licence (CC BY-NC-SA)

``panels/`` is replaced as a whole by an atomic rename; anything else in ``out_dir`` (the elpv
class folders written by ``elpv.materialize``) is left alone.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from visionpipe.core.coco import write_coco
from visionpipe.core.errors import DataError
from visionpipe.core.io import atomic_path
from visionpipe.embedded.elpv import licence_text, package_dir, read_labels

log = logging.getLogger(__name__)

PANELS_DIR = "panels"
ANNOTATIONS = "panels.json"
TYPES = ("mono", "poly")  # the categories (parts), ids 1 and 2
STATES = ("intact", "damaged", "absent", "occluded")
BACKGROUND = 12  # panel backsheet and the gaps between cells
EMPTY_SLOT = 22  # an absent cell's slot
EMPTY_FRAME = 48  # the faint frame left where an absent cell belongs


def _cell_pools(rng: np.random.Generator) -> dict[str, list[tuple[str, float]]]:
    """Per cell type, the usable (image, probability) pairs in a seeded random order."""
    labels = read_labels().sort_values("image", kind="stable")
    usable = labels[(labels["probability"] == 0) | (labels["probability"] >= 2 / 3 - 1e-6)]
    pools = {}
    for cell_type in TYPES:
        cells = usable[usable["type"] == cell_type]
        order = rng.permutation(len(cells))
        pools[cell_type] = [
            (str(cells["image"].iloc[i]), float(cells["probability"].iloc[i])) for i in order
        ]
    return pools


def _quota(fraction: float, done: int, slots: int) -> int:
    """Slots of a kind in the next panel so the running total tracks ``fraction`` exactly."""
    return math.floor(fraction * (done + slots) + 1e-9) - math.floor(fraction * done + 1e-9)


def _slot_states(
    rng: np.random.Generator, done: int, slots: int, absent: float, occluded: float
) -> list[str]:
    """Absent / occluded / real ("cell") per slot of the next panel, in slot order."""
    n_absent = _quota(absent, done, slots)
    n_occluded = min(_quota(occluded, done, slots), slots - n_absent)
    kinds = ["absent"] * n_absent + ["occluded"] * n_occluded
    kinds += ["cell"] * (slots - len(kinds))
    return [kinds[i] for i in rng.permutation(slots)]


def _load_cell(src: Path, image: str, size: int) -> np.ndarray:
    with Image.open(src / image) as img:
        return np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR))


def _occlude(rng: np.random.Generator, cell: np.ndarray) -> None:
    """Cover 35-65 % of the cell with an opaque gray-to-black rectangle, in place."""
    size = cell.shape[0]
    coverage = rng.uniform(0.35, 0.65)
    width = int(round(size * rng.uniform(coverage, 1.0)))
    height = min(size, int(round(coverage * size * size / width)))
    x = int(rng.integers(0, size - width + 1))
    y = int(rng.integers(0, size - height + 1))
    cell[y : y + height, x : x + width] = int(rng.integers(0, 100))


def _absent_slot(size: int) -> np.ndarray:
    slot = np.full((size, size), EMPTY_SLOT, dtype=np.uint8)
    frame = max(1, size // 40)
    slot[:frame, :] = slot[-frame:, :] = slot[:, :frame] = slot[:, -frame:] = EMPTY_FRAME
    return slot


def _geometry(rows: int, cols: int, cell_size: int) -> tuple[int, int, int, int]:
    """Gap and margin in pixels, and the panel's width and height."""
    gap = max(2, round(cell_size * 0.04))
    margin = max(4, cell_size // 5)
    width = 2 * margin + cols * cell_size + (cols - 1) * gap
    height = 2 * margin + rows * cell_size + (rows - 1) * gap
    return gap, margin, width, height


def compose_panels(
    out_dir: str | Path,
    panels: int,
    rows: int,
    cols: int,
    cell_size: int,
    seed: int,
    absent_fraction: float = 0.08,
    occluded_fraction: float = 0.08,
) -> dict:
    """Write ``panels`` module panels (0: as many as the cells allow) and their COCO file.

    Returns the COCO dict written to ``out_dir/panels.json`` (``states`` = ``STATES``; each
    real slot's attributes also name its source ``cell`` and ``defect_probability``).
    Raises DataError when the elpv cells cannot fill ``panels`` panels.
    """
    if min(rows, cols, cell_size) < 1 or panels < 0:
        raise DataError(f"elpv panels: bad layout {panels} panels of {rows}x{cols}x{cell_size}px")
    if absent_fraction < 0 or occluded_fraction < 0 or absent_fraction + occluded_fraction > 1:
        raise DataError(
            f"elpv panels: absent_fraction {absent_fraction} + occluded_fraction "
            f"{occluded_fraction} must be non-negative and sum to at most 1"
        )
    out_dir = Path(out_dir)
    src = package_dir()
    rng = np.random.default_rng(seed)
    pools = _cell_pools(rng)
    slots = rows * cols
    gap, margin, width, height = _geometry(rows, cols, cell_size)
    absent = _absent_slot(cell_size)

    tmp = out_dir / f".{PANELS_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images, annotations = [], []
    cells_per_panel = max(1.0, slots * (1 - absent_fraction))
    total = panels or int(sum(len(p) for p in pools.values()) / cells_per_panel)  # estimate
    progress = tqdm(total=total, desc="composing elpv panels", unit="panel")
    while not panels or len(images) < panels:
        kinds = _slot_states(rng, len(images) * slots, slots, absent_fraction, occluded_fraction)
        needed = sum(kind != "absent" for kind in kinds)
        fits = [t for t in TYPES if len(pools[t]) >= needed]
        if not fits:
            break
        weights = np.array([len(pools[t]) for t in fits], dtype=float)
        cell_type = fits[int(rng.choice(len(fits), p=weights / weights.sum()))]
        image_id = len(images) + 1
        canvas = np.full((height, width), BACKGROUND, dtype=np.uint8)
        for slot, kind in enumerate(kinds):
            y = margin + (slot // cols) * (cell_size + gap)
            x = margin + (slot % cols) * (cell_size + gap)
            attributes: dict = {}
            if kind == "absent":
                canvas[y : y + cell_size, x : x + cell_size] = absent
                attributes["state"] = "absent"
            else:
                name, probability = pools[cell_type].pop()
                cell = _load_cell(src, name, cell_size).copy()
                if kind == "occluded":
                    _occlude(rng, cell)
                    state = "occluded"
                else:
                    state = "intact" if probability == 0 else "damaged"
                canvas[y : y + cell_size, x : x + cell_size] = cell
                attributes.update(state=state, cell=Path(name).name, defect_probability=probability)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": TYPES.index(cell_type) + 1,
                    "bbox": [float(x), float(y), float(cell_size), float(cell_size)],
                    "area": float(cell_size * cell_size),
                    "iscrowd": 0,
                    "attributes": attributes,
                }
            )
        file_name = f"{PANELS_DIR}/panel_{image_id:04d}.png"
        Image.fromarray(canvas, mode="L").save(tmp / Path(file_name).name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        progress.update()
    progress.close()

    if panels and len(images) < panels:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"elpv panels: the cells fill only {len(images)} of {panels} panels of "
            f"{rows}x{cols}; set embedded.panels to at most {len(images)} (or 0 for all)"
        )
    if not images:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"elpv panels: not enough cells for one {rows}x{cols} panel")
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, name in enumerate(TYPES, start=1)],
        "states": list(STATES),
    }
    shutil.rmtree(out_dir / PANELS_DIR, ignore_errors=True)
    tmp.rename(out_dir / PANELS_DIR)
    write_coco(out_dir / ANNOTATIONS, coco)
    with atomic_path(out_dir / "LICENSE.md") as licence:
        licence.write_text(licence_text())
    log.info(
        "wrote %d elpv panels (%d boxes) to %s", len(images), len(annotations), out_dir / PANELS_DIR
    )
    return coco
