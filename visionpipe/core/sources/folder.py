"""A folder of class folders, flat or already split into train/val[/test], as a manifest.

Every file is opened and fully decoded once here, so a corrupt, truncated or non-image file is
skipped and listed in the data report instead of killing training halfway.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from visionpipe.core.errors import DataError
from visionpipe.core.images import IMAGE_EXTENSIONS, TooLarge, open_checked
from visionpipe.core.paths import link_outside

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "label", "split", "width", "height", "mode"]


@dataclass
class ScanResult:
    """Usable samples (paths relative to ``root``) and the files that were skipped, with why."""

    root: Path
    layout: str  # "flat" or "presplit"
    classes: list[str]
    samples: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _detect_layout(root: Path) -> tuple[str, dict[str, Path]]:
    """Return ("presplit", {split: dir}) or ("flat", {"": root})."""
    names = {d.name for d in _visible_dirs(root)}
    split_dirs = names & set(SPLIT_NAMES)
    if not split_dirs:
        return "flat", {"": root}
    if not {"train", "val"} <= split_dirs:
        raise DataError(
            f"{root}: has {', '.join(sorted(split_dirs))}/ but a pre-split dataset needs "
            "train/ and val/ (test/ optional); rename the class folder or add the split"
        )
    others = sorted(names - set(SPLIT_NAMES))
    if others:
        raise DataError(
            f"{root}: mixes split folders with other folders ({', '.join(others)}); "
            "use either class folders or train/val[/test] folders"
        )
    return "presplit", {s: root / s for s in SPLIT_NAMES if s in split_dirs}


def check_image(path: Path, root: Path | None = None) -> tuple[int, int, str] | str:
    """Decode an image as training will (:func:`~visionpipe.core.images.open_checked`); return
    its (width, height) as decoded and the file's mode, or the reason it is unusable: broken,
    too large for the decoder, or (given ``root``) a link leading out of it."""
    if root is not None and (outside := link_outside(path, root)):
        return outside
    try:
        rgb, mode = open_checked(path)
        return rgb.width, rgb.height, mode
    except TooLarge as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            return f"not an image file ({path.suffix or 'no extension'})"
        cause = exc.__cause__ if isinstance(exc, DataError) and exc.__cause__ else exc
        return f"corrupt or truncated image: {type(cause).__name__}: {cause}"


def scan_folder(root: str | Path, workers: int = 4) -> ScanResult:
    """Scan a dataset folder; raise DataError (one line naming the path) when it cannot be used."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data path does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: data path is not a directory")
    layout, split_roots = _detect_layout(root)

    candidates: list[tuple[str, str, Path]] = []  # (split, label, file)
    classes_by_split: dict[str, list[str]] = {}
    for split, split_root in split_roots.items():
        class_dirs = _visible_dirs(split_root)
        classes_by_split[split] = [d.name for d in class_dirs]
        for class_dir in class_dirs:
            files = sorted(
                p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
            if not files:
                raise DataError(f"{class_dir}: empty class folder")
            candidates += [(split, class_dir.name, f) for f in files]

    main_split = "train" if layout == "presplit" else ""
    classes = classes_by_split[main_split]
    if len(classes) < 2:
        where = split_roots[main_split]
        found = f" ({', '.join(classes)})" if classes else ""
        raise DataError(f"{where}: found {len(classes)} class folder(s){found}; need at least two")
    for split, names in classes_by_split.items():
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"{split_roots[split] / extra[0]}: class not present in train/")

    rows, skipped = [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = pool.map(check_image, (f for _, _, f in candidates), itertools.repeat(root))
        for (split, label, path), result in tqdm(
            zip(candidates, checks, strict=True),
            total=len(candidates),
            desc="checking images",
            unit="img",
        ):
            rel = path.relative_to(root).as_posix()
            if isinstance(result, str):
                skipped.append({"path": rel, "reason": result})
            else:
                width, height, mode = result
                rows.append((rel, label, split, width, height, mode))
    samples = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)

    counts = samples.groupby("label").size() if len(samples) else pd.Series(dtype=int)
    for label in classes:
        if counts.get(label, 0) == 0:
            raise DataError(f"{split_roots[main_split] / label}: no readable images")
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    return ScanResult(root, layout, classes, samples, skipped)


def data_report(scan: ScanResult) -> dict:
    """Summary written next to the manifest: counts per class and every skipped file."""
    per_class = scan.samples.groupby("label").size().reindex(scan.classes, fill_value=0)
    return {
        "root": str(scan.root),
        "layout": scan.layout,
        "classes": scan.classes,
        "num_images": int(len(scan.samples)),
        "images_per_class": {k: int(v) for k, v in per_class.items()},
        "num_skipped": len(scan.skipped),
        "skipped": scan.skipped,
    }
