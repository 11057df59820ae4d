"""A folder of tar shards in WebDataset layout as a classification manifest.

Each sample is the members of a shard that share a key (the member name up to the first dot of
its file name): one image (``00000042.png``) and its label, in ``00000042.cls`` (the class
name as text) or in ``00000042.json`` (``{"label": ...}``, the key ``data.label_column``; a
``"split"`` of train/val/test keeps a pre-split dataset's split). ``python -m
visionpipe.onboard.pack`` writes such shards from class folders or a table; shards written by
other WebDataset tools read the same way. Manifest paths pass through the shard
(``shard-000000.tar/00000042.png``), so the rest of the pipeline reads them like files
(:mod:`visionpipe.core.shards`).

Bad input is counted in the data report, never taken silently: a shard cut short (its whole
members are used), a member name found twice in one shard, a sample without an image or with
two, one without a label, and an image member that does not decode.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from tqdm import tqdm

from visionpipe.core import shards
from visionpipe.core.errors import DataError
from visionpipe.core.images import IMAGE_EXTENSIONS
from visionpipe.core.sources.folder import MANIFEST_COLUMNS, SPLIT_NAMES, ScanResult, check_image

log = logging.getLogger(__name__)


def shard_files(root: Path) -> list[Path]:
    """The ``.tar`` files under ``root`` (hidden ones left out), in name order."""
    return sorted(
        p
        for p in root.rglob(f"*{shards.SHARD_SUFFIX}")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def holds_shards(root: str | Path) -> bool:
    """Whether ``root`` is a folder of shards: ``.tar`` files at its top and no folders."""
    root = Path(root)
    if not root.is_dir():
        return False
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    has_tar = any(p.is_file() and p.name.endswith(shards.SHARD_SUFFIX) for p in entries)
    return has_tar and not any(p.is_dir() for p in entries)


def sample_key(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension) of a member name: split at the first dot of the file
    name, so ``a/b.seg.png`` is the sample ``a/b`` and ``seg.png``."""
    path = PurePosixPath(name)
    stem, _, ext = path.name.partition(".")
    return str(path.with_name(stem)), ext.lower()


@dataclass
class ShardSample:
    """One complete sample: its image member's path relative to the data folder, its label
    (None when it has none), the split it names ("" when none) and its ``.json`` fields."""

    path: str
    label: str | None
    split: str
    record: dict[str, Any]


def _read_sample(shard: Path, members: dict[str, str], label_key: str) -> tuple[dict, str | None]:
    """The sample's ``.json`` fields and its label: the ``.cls`` member, else the ``.json``
    field ``label_key``."""
    record: Any = {}
    if "json" in members:
        try:
            record = json.loads(shards.read_bytes(shard / members["json"]))
        except (OSError, ValueError, UnicodeDecodeError):
            record = {}
    record = record if isinstance(record, dict) else {}
    value = record.get(label_key)
    label = None if value is None or str(value).strip() == "" else str(value).strip()
    if "cls" in members:
        try:
            text = shards.read_bytes(shard / members["cls"]).decode("utf-8", errors="replace")
        except OSError:
            text = ""
        label = text.strip() or None
    return record, label


def _samples(root: Path, shard: Path, label_key: str, skipped: list[dict]) -> list[ShardSample]:
    """One shard's complete samples; what is not one goes to ``skipped`` with the reason."""
    rel_shard = shard.relative_to(root).as_posix()
    try:
        index = shards.index(shard)
    except DataError as exc:
        skipped.append({"path": rel_shard, "reason": str(exc).removeprefix(f"{shard}: ")})
        return []
    if index.truncated:
        skipped.append(
            {
                "path": rel_shard,
                "reason": f"shard cut short ({index.truncated}): what followed is lost, "
                f"the {len(index.members)} whole member(s) before it are used",
            }
        )
    for name in index.unsafe:
        skipped.append(
            {"path": f"{rel_shard}/{name}", "reason": "member name leads outside the shard"}
        )
    for name in index.clashes:
        skipped.append(
            {
                "path": f"{rel_shard}/{name}",
                "reason": "member name appears more than once in the shard: neither is used",
            }
        )
    by_key: dict[str, dict[str, str]] = {}
    for name in index.members:
        key, ext = sample_key(name)
        by_key.setdefault(key, {})[ext] = name
    out = []
    for key, members in by_key.items():
        images = [n for e, n in members.items() if f".{e.rsplit('.', 1)[-1]}" in IMAGE_EXTENSIONS]
        if len(images) != 1:
            found = ", ".join(sorted(members.values()))
            why = "no image member" if not images else f"{len(images)} image members"
            skipped.append(
                {"path": f"{rel_shard}/{key}", "reason": f"{why} in the sample ({found})"}
            )
            continue
        record, label = _read_sample(shard, members, label_key)
        split = str(record.get("split") or "")
        if split and split not in SPLIT_NAMES:
            raise DataError(f"{shard}: sample {key}: split '{split}' is not train, val or test")
        out.append(ShardSample(f"{rel_shard}/{images[0]}", label, split, record))
    return out


def read_samples(root: Path, label_key: str = "label") -> tuple[list[ShardSample], list[dict]]:
    """Every complete sample of the shards under ``root``, and what was set aside."""
    files = shard_files(root)
    if not files:
        raise DataError(f"{root}: no .tar shards found")
    skipped: list[dict] = []
    samples = [s for shard in files for s in _samples(root, shard, label_key, skipped)]
    return samples, skipped


def shard_frame(root: str | Path, image_column: str) -> tuple[pd.DataFrame, list[dict]]:
    """The samples' ``.json`` fields as a table (one row per sample, in shard order) whose
    ``image_column`` is the image member's path: what a regression scan reads a sheet for."""
    samples, skipped = read_samples(Path(root))
    frame = pd.DataFrame([{**s.record, image_column: s.path} for s in samples])
    if frame.empty:
        frame = pd.DataFrame(columns=[image_column])
    return frame, skipped


def scan_shards(
    root: str | Path, label_key: str = "label", classes: Sequence[str] = (), workers: int = 4
) -> ScanResult:
    """Scan a folder of shards like a folder of class folders: every image decoded once,
    the unusable ones skipped with the reason; DataError (one line) when nothing can train."""
    root = Path(root)
    found, skipped = read_samples(root, label_key)
    candidates = []
    for sample in found:
        if sample.label is None:
            why = f"missing label (no .cls, no '{label_key}' in .json)"
            skipped.append({"path": sample.path, "reason": why})
        else:
            candidates.append((sample.path, sample.label, sample.split))
    splits = {split for _, _, split in candidates}
    if splits - {""} and "" in splits:
        raise DataError(f"{root}: some samples name a split and others do not; name all or none")
    if splits - {""} and not {"train", "val"} <= splits:
        raise DataError(f"{root}: the samples' splits need train and val (found {sorted(splits)})")
    for path, label, _ in candidates:
        if classes and label not in classes:
            raise DataError(
                f"{root / path}: label '{label}' is not in data.classes ({', '.join(classes)})"
            )
    rows = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        paths = (root / path for path, _, _ in candidates)
        checks = pool.map(check_image, paths, itertools.repeat(root))
        for (path, label, split), result in tqdm(
            zip(candidates, checks, strict=True),
            total=len(candidates),
            desc="checking images",
            unit="img",
        ):
            if isinstance(result, str):
                skipped.append({"path": path, "reason": result})
            else:
                rows.append((path, label, split, *result))
    samples = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    found = sorted(samples["label"].unique()) if len(samples) else []
    if len(found) < 2:
        raise DataError(
            f"{root}: the shards hold {len(found)} class(es) with readable images; "
            "need at least two"
        )
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    layout = "shards, presplit" if splits - {""} else "shards"
    return ScanResult(root, layout, list(classes) or found, samples, skipped)
