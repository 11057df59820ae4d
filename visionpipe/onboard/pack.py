"""Pack a folder of images into tar shards (WebDataset layout), so DVC tracks a few hundred
files instead of one per image.

    python -m visionpipe.onboard.pack data/raw data/shards                 # class folders
    python -m visionpipe.onboard.pack data/raw data/shards --table labels.csv --label-column grade
    python -m visionpipe.onboard.pack data/raw data/shards --annotations annotations.json
    dvc add data/shards         # then data.path: data/shards (and data.annotations for COCO)

Each sample is ``<key>.<ext>`` (the image's bytes, unchanged) with ``<key>.cls`` (the class
name, from class folders) and ``<key>.json`` (the source path, the split of a pre-split folder,
or every column of the table's row). A COCO set is rewritten to ``annotations.json`` beside the
shards with each ``file_name`` pointing into its shard. Shards are ``shard-000000.tar`` ...,
``--shard-size`` samples each, written deterministically (sorted input, zero times and owners),
so packing the same images again gives the same bytes and DVC sees no change.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.core.errors import UserError
from visionpipe.core.io import atomic_path, write_json
from visionpipe.core.sources.folder import _detect_layout, _visible_dirs
from visionpipe.core.sources.table import read_table
from visionpipe.core.stage import setup_logging

SHARD_NAME = "shard-{:06d}.tar"


@dataclass
class Sample:
    """One image to pack, and the members written beside it."""

    source: Path
    meta: dict[str, Any]
    label: str | None = None  # written as <key>.cls when set


@dataclass
class Packed:
    shards: list[Path] = field(default_factory=list)
    samples: int = 0
    missing: list[str] = field(default_factory=list)  # listed, but no such file
    members: dict[str, str] = field(default_factory=dict)  # source path: member path


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def write_shards(samples: Iterable[Sample], dest: Path, shard_size: int) -> Packed:
    """Write the samples into ``dest/shard-NNNNNN.tar``, ``shard_size`` per shard."""
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: at least 1 sample per shard")
    dest.mkdir(parents=True, exist_ok=True)
    packed = Packed()
    batch: list[Sample] = []

    def flush() -> None:
        path = dest / SHARD_NAME.format(len(packed.shards))
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in batch:
                key = f"{packed.samples:08d}"
                member = key + sample.source.suffix.lower()
                _add(tar, member, sample.source.read_bytes())
                if sample.label is not None:
                    _add(tar, f"{key}.cls", sample.label.encode())
                _add(tar, f"{key}.json", json.dumps(sample.meta, default=str).encode())
                packed.members[sample.meta["source"]] = f"{path.name}/{member}"
                packed.samples += 1
        packed.shards.append(path)
        batch.clear()

    for sample in samples:
        if not sample.source.is_file():
            packed.missing.append(sample.meta["source"])
            continue
        batch.append(sample)
        if len(batch) == shard_size:
            flush()
    if batch:
        flush()
    for old in dest.glob("shard-*.tar"):  # fewer shards than an earlier packing
        if old not in packed.shards:
            old.unlink()
    return packed


def folder_samples(src: Path) -> Iterator[Sample]:
    """Class folders, flat or pre-split (train/ val/ [test/]), in sorted order."""
    layout, split_roots = _detect_layout(src)
    for split, split_root in split_roots.items():
        for class_dir in _visible_dirs(split_root):
            files = sorted(
                p
                for p in class_dir.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.parts)
            )
            for path in files:
                meta = {"source": path.relative_to(src).as_posix(), "label": class_dir.name}
                if layout == "presplit":
                    meta["split"] = split
                yield Sample(path, meta, label=class_dir.name)


def table_samples(
    src: Path,
    table: str,
    image_column: str,
    sheet: str = "",
    images: str = "",
    label_column: str = "",
) -> Iterator[Sample]:
    """One sample per table row, with every column of the row in its ``.json`` (and
    ``label_column``'s value, where the row has one, as its ``.cls``)."""
    frame = read_table(src / table, sheet)
    for column in (image_column, label_column):
        if column and column not in frame.columns:
            raise UserError(
                f"{src / table}: no column '{column}' (columns: {', '.join(frame.columns)})"
            )
    base = src / images if images else src
    for _, row in frame.iterrows():
        record = {k: _plain(v) for k, v in row.items()}
        rel = str(record[image_column]).replace("\\", "/")
        label = record.get(label_column) if label_column else None
        yield Sample(base / rel, {**record, "source": rel}, None if label is None else str(label))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def pack_coco(src: Path, annotations: str, dest: Path, shard_size: int, images: str = "") -> Packed:
    """A COCO set's images into shards, and its annotations rewritten beside them."""
    path = src / annotations
    try:
        coco = json.loads(path.read_text())
        entries = sorted(coco["images"], key=lambda im: im["id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a readable COCO file ({exc})") from None
    base = src / images if images else src
    samples = (
        Sample(base / im["file_name"], {"source": im["file_name"], "id": im["id"]})
        for im in entries
    )
    packed = write_shards(samples, dest, shard_size)
    for im in coco["images"]:
        im["file_name"] = packed.members.get(im["file_name"], im["file_name"])
    write_json(dest / "annotations.json", coco)
    return packed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visionpipe.onboard.pack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="the data folder (class folders, or a table's or COCO's)")
    parser.add_argument("dest", help="the folder to write the shards into")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--table", default="", help="a table inside src, one row per image")
    parser.add_argument("--sheet", default="", help="the table's sheet (Excel)")
    parser.add_argument("--image-column", default="image", help="the table's image column")
    parser.add_argument(
        "--label-column", default="", help="the table's class column, also written as .cls"
    )
    parser.add_argument("--annotations", default="", help="a COCO JSON file inside src")
    parser.add_argument("--images", default="", help="the folder inside src images are under")
    args = parser.parse_args(argv)
    setup_logging()
    src, dest = Path(args.src), Path(args.dest)
    try:
        if not src.is_dir():
            raise UserError(f"{src}: no such folder")
        inside = dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents
        if inside and not args.table and not args.annotations:  # it would be a class folder
            raise UserError(f"{dest}: inside {src}; write the shards beside the class folders")
        if args.annotations:
            packed = pack_coco(src, args.annotations, dest, args.shard_size, args.images)
        elif args.table:
            samples = table_samples(
                src, args.table, args.image_column, args.sheet, args.images, args.label_column
            )
            packed = write_shards(samples, dest, args.shard_size)
        else:
            packed = write_shards(folder_samples(src), dest, args.shard_size)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in packed.shards) / 2**20
    print(f"{dest}: {packed.samples} images in {len(packed.shards)} shard(s), {size:.1f} MB")
    if packed.missing:
        shown = ", ".join(packed.missing[:5]) + (" ..." if len(packed.missing) > 5 else "")
        print(f"  {len(packed.missing)} listed image(s) not found, not packed: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
