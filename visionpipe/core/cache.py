"""Decoded images cached on disk at training resolution, and read from there a batch at a time.

Decoding and resizing every image is the slowest part of starting a stage on a CPU, and train,
evaluate and export all need the same pixels. Each split is decoded once into a plain ``.npy``
file; stages read the rows a batch asks for (:class:`DiskImages`, with ``pread``: the operating
system's page cache keeps a file that fits in RAM, and nothing counts against the process), so a
stage's memory does not grow with the number of images.

Two keys find an entry. The content key hashes the decoder version, the image size and each
file's relative path and bytes, so a changed split, image or size misses the cache and nothing
stale is ever read; experiment workspaces (``dvc exp run --temp``, the queue) share it because it
does not depend on where the data folder lives. Hashing every file at every stage start costs as
much as reading the dataset, so a quick key (the data folder, and each file's relative path, size
and modification time) names the content key it was last seen with: a stage that finds it stats
the files and reads none. ``data.cache_check: content`` hashes every time instead.

An entry is written under a temporary name and renamed when complete, so a killed decode leaves
no entry; one cut short later (a full disk, a copy that stopped) is noticed by its size, reported
and decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionpipe.core import shards
from visionpipe.core.errors import DataError, WriteFailed
from visionpipe.core.images import decode_scaled_array, iter_decoded, iter_mapped, load_images
from visionpipe.core.io import atomic_path

log = logging.getLogger(__name__)

# bump when decode_image's output changes (2: EXIF orientation, 16-bit scaling, alpha)
DECODER_VERSION = "rgb-bilinear-2"
KEEP_ENTRIES = 16  # oldest entries beyond this are removed
KEEP_ALIASES = 256
STALE_TEMP_SECONDS = 6 * 3600  # a temporary file this old belongs to a killed decode
RACY_SECONDS = 2.0  # files modified this recently are checked by content
CHECKS = ("stat", "content")


def cache_dir() -> Path:
    """``$VISIONPIPE_CACHE``, else ``$XDG_CACHE_HOME/visionpipe``, else ``~/.cache/visionpipe``."""
    if os.environ.get("VISIONPIPE_CACHE"):
        return Path(os.environ["VISIONPIPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visionpipe"


def cache_key(root: Path, paths: Sequence[str], size: int | str) -> str:
    """The content key: decoder, size, and every file's relative path and bytes."""
    digest = hashlib.sha256(f"{DECODER_VERSION}\n{size}\n".encode())
    for rel in paths:
        digest.update(rel.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(shards.read_bytes(root / rel)).digest())
        except (OSError, DataError):
            digest.update(b"missing")  # load_images reports it with the path
    return digest.hexdigest()[:32]


def quick_key(root: Path, paths: Sequence[str], size: int | str) -> tuple[str, float]:
    """The stat key: decoder, size, the data folder, and every file's relative path, size and
    modification time (nanoseconds), without reading a byte of any image; and the newest
    modification time (seconds), to tell a file that may still be changing."""
    digest = hashlib.sha256(f"{DECODER_VERSION}\n{size}\n{root.resolve()}\n".encode())
    newest = 0.0
    for rel in paths:
        try:
            size, mtime_ns, offset = shards.stat_facts(root / rel)  # a file, or a member
            digest.update(f"{rel}\0{size}\0{mtime_ns}\0{offset}\n".encode())
            newest = max(newest, mtime_ns / 1e9)
        except (OSError, DataError):
            digest.update(f"{rel}\0missing\n".encode())
    return digest.hexdigest()[:32], newest


class BrokenEntry(ValueError):
    """A cache file that is not a whole decoded split (cut short, or not ours)."""


class _OpenedFile:
    """A cache entry's file, opened once its header is checked: an entry pruned by another
    process afterwards stays readable through it (pread ignores the file position, so a forked
    worker shares it safely); a process it is pickled into opens the file again."""

    path: Path
    _fd: int | None = None

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY)

    def _file(self) -> int:
        if self._fd is None:  # unpickled in another process
            self._open_file()
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def index_rows(key: Any, n: int) -> tuple[list[int], bool]:
    """The rows (0..n-1) an index asks for, as a tensor's indexing reads it: an int (or a 0-d
    tensor, as a loop over an index tensor gives), a slice, or a sequence or tensor of ints,
    negative ones counted from the end; and whether it was a single row. A boolean mask would
    be taken as rows 0 and 1, so it is refused rather than read wrong."""
    if isinstance(key, torch.Tensor | np.ndarray) and key.dtype in (torch.bool, np.bool_):
        raise TypeError("boolean masks are not supported: index with the rows' numbers")
    if isinstance(key, torch.Tensor | np.ndarray) and key.ndim == 0:
        key = int(key)
    if isinstance(key, int | np.integer):
        return [range(n)[key]], True  # IndexError past either end
    if isinstance(key, slice):
        return list(range(n)[key]), False
    rows = torch.as_tensor(key, dtype=torch.long).reshape(-1)
    if len(rows) and (int(rows.min()) < -n or int(rows.max()) >= n):
        raise IndexError(f"index out of range for {n} images")
    return (rows % max(n, 1)).tolist(), False


class DiskImages(_OpenedFile):
    """A decoded split in a ``.npy`` file (N x 3 x S x S, uint8), indexed like a tensor:
    ``images[i]``, ``images[a:b]`` and ``images[index_tensor]`` read just those rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(fh)
            except ValueError as exc:
                raise BrokenEntry(f"not a .npy file ({exc})") from None
            self.offset = fh.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[1] != 3:
            raise BrokenEntry(f"holds {dtype} {shape}, not N x 3 x S x S uint8 images")
        self.shape = torch.Size(shape)
        self.row = int(np.prod(shape[1:]))
        expected = self.offset + shape[0] * self.row
        actual = self.path.stat().st_size
        if actual != expected:
            raise BrokenEntry(f"{actual} bytes where {shape[0]} images take {expected}: cut short")
        self._open_file()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows, single = index_rows(key, len(self))
        out = self._read(rows)
        return out[0] if single else out

    def _read(self, rows: Sequence[int]) -> torch.Tensor:
        """The rows, in the order asked, one read per run of consecutive rows."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row)
        fd, start = self._file(), 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            _read_fully(fd, flat[start:end], self.offset + rows[start] * self.row, self.path)
            start = end
        return torch.from_numpy(out)


def _read_fully(fd: int, into: np.ndarray, offset: int, path: Path) -> None:
    """Fill ``into`` from the file at ``offset`` (one call reads at most about 2 GiB)."""
    view = memoryview(into.reshape(-1)).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"{path}: cache entry shorter than its header says")
        done += got


class ConcatImages:
    """Several splits' images indexed as one, each row read from the split it belongs to."""

    def __init__(self, parts: Sequence[DiskImages | torch.Tensor]):
        self.parts = list(parts)
        sizes = [len(p) for p in self.parts]
        self.starts = np.cumsum([0, *sizes])
        shape = self.parts[0].shape[1:] if self.parts else (3, 0, 0)
        self.shape = torch.Size((int(self.starts[-1]), *shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        listed, single = index_rows(key, len(self))
        rows = torch.tensor(listed, dtype=torch.long)
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8)
        part_of = np.searchsorted(self.starts, rows.numpy(), side="right") - 1
        for part in np.unique(part_of):
            mine = torch.from_numpy(np.flatnonzero(part_of == part))
            out[mine] = self.parts[part][rows[mine] - int(self.starts[part])]
        return out[0] if single else out


class RaggedImages(_OpenedFile):
    """Decoded images of different sizes (detection's, scaled per image) in one file:
    ``images[i]`` is a 3 x H x W uint8 tensor, a slice a list of them, read as asked.

    The file is the images' bytes one after the other, then their index (an ``.npy`` array of
    offset, channels, height, width per image), then the index's offset (8 bytes), so it is
    written in one pass while decoding."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            try:
                if size < 8:
                    raise ValueError("shorter than its trailer")
                fh.seek(size - 8)
                start = int.from_bytes(fh.read(8), "little")
                if not 0 <= start < size - 8:
                    raise ValueError("its index is not inside it")
                fh.seek(start)
                index = np.lib.format.read_array(fh, allow_pickle=False)
                if fh.tell() != size - 8:
                    raise ValueError("bytes after its index")
            except ValueError as exc:
                raise BrokenEntry(f"not a whole entry ({exc}): cut short") from None
        if index.ndim != 2 or index.shape[1] != 4:
            raise BrokenEntry(f"index of shape {index.shape}, not N x 4")
        ends = index[:, 0] + index[:, 1:].prod(axis=1)
        if len(index) and (index[:, 0].min() < 0 or ends.max() > start):
            raise BrokenEntry("an image's bytes lie outside the file: cut short")
        self.index = index
        self._open_file()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(key, slice):
            return [self[i] for i in range(len(self))[key]]
        offset, c, h, w = (int(v) for v in self.index[range(len(self))[int(key)]])
        out = np.empty((c, h, w), dtype=np.uint8)
        _read_fully(self._file(), out, offset, self.path)
        return torch.from_numpy(out)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


#: what stages index: a file-backed split, or a tensor where no cache could be written
Images = DiskImages | ConcatImages | torch.Tensor


def cached_images(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    desc: str = "decoding",
    directory: Path | None = None,
    check: str = "stat",
) -> Images:
    """The split's images decoded at ``size``, from the cache when the same files were seen
    (``check``: ``stat`` trusts unchanged sizes and times, ``content`` hashes the bytes)."""
    root = Path(root)
    expected = (len(paths), 3, size, size)

    def read(path: Path) -> DiskImages:
        images = DiskImages(path)
        if images.shape != expected:
            raise BrokenEntry(f"holds {tuple(images.shape)}, expected {expected}")
        return images

    def write(fh: Any) -> None:
        header = {"descr": "|u1", "fortran_order": False, "shape": expected}
        np.lib.format.write_array_header_1_0(fh, header)
        for array in iter_decoded(root, paths, size, desc=desc):
            fh.write(array.tobytes())

    found = _cached(root, paths, str(size), ".npy", read, write, desc, directory, check)
    if found is not None:
        return found
    _fits_in_memory(len(paths) * 3 * size * size, directory or cache_dir())
    return load_images(root, paths, size, desc=desc)


def _fits_in_memory(nbytes: int, directory: Path) -> None:
    """One line instead of running out of memory when the cache cannot be written and the
    split's decoded pixels would take over half of the memory that is free."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > free / 2:
        raise WriteFailed(
            f"{directory}: cannot write the decoded-image cache there, and the split's "
            f"{nbytes / 2**30:.1f} GiB of decoded images do not fit in memory "
            f"({free / 2**30:.1f} GiB free); set VISIONPIPE_CACHE to a folder on a disk with room"
        )


def cached_scaled(
    root: str | Path,
    paths: Sequence[str],
    scales: Sequence[float],
    desc: str = "decoding",
    directory: Path | None = None,
    check: str = "stat",
) -> RaggedImages | list[torch.Tensor]:
    """Each image decoded and resized by its own scale factor (detection's splits), from the
    cache when the same files and scales were seen; a list in memory where none can be
    written."""
    root = Path(root)
    tag = "scaled " + hashlib.sha256(repr([float(s) for s in scales]).encode()).hexdigest()

    def read(path: Path) -> RaggedImages:
        images = RaggedImages(path)
        if len(images) != len(paths):
            raise BrokenEntry(f"holds {len(images)} images, expected {len(paths)}")
        return images

    items = [(root / rel, scale) for rel, scale in zip(paths, scales, strict=True)]

    def write(fh: Any) -> None:
        index = []
        for array in iter_mapped(decode_scaled_array, items, desc=desc):
            index.append((fh.tell(), *array.shape))
            fh.write(array.tobytes())
        start = fh.tell()
        np.lib.format.write_array(fh, np.array(index, dtype=np.int64).reshape(-1, 4))
        fh.write(start.to_bytes(8, "little"))

    found = _cached(root, paths, tag, ".ragged", read, write, desc, directory, check)
    if found is not None:
        return found
    return [torch.from_numpy(a) for a in iter_mapped(decode_scaled_array, items, desc=desc)]


def _cached(
    root: Path,
    paths: Sequence[str],
    tag: str,
    suffix: str,
    read: Callable[[Path], Any],
    write: Callable[[Any], None],
    desc: str,
    directory: Path | None,
    check: str,
) -> Any:
    """The entry for these files and ``tag`` (what they are decoded to), found by the stat
    key's alias, else by the content key, else written by ``write``; None when the cache
    cannot be written."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, not {check!r}")
    directory = directory or cache_dir()
    started = time.time()
    quick, newest = quick_key(root, paths, tag) if check == "stat" else (None, 0.0)
    if quick is not None:
        try:
            key = (directory / f"{quick}.alias").read_text().strip()
        except OSError:
            key = ""
        found = _open(directory / f"{key}{suffix}", read, desc, len(paths)) if key else None
        if found is not None:
            return found
    key = cache_key(root, paths, tag)
    path = directory / f"{key}{suffix}"
    images = _open(path, read, desc, len(paths)) or _write(path, read, write)
    if images is None:  # a read-only or full disk only costs memory and speed
        return None
    # a file written in the seconds before its stat may change again within its clock's
    # resolution without its size or time changing (git's "racy" files): such a split keeps
    # hashing; and the alias is written only if no file changed while it was hashed
    if (
        quick is not None
        and started - newest > RACY_SECONDS
        and quick_key(root, paths, tag)[0] == quick
    ):
        _write_alias(directory, quick, key)
    return images


def _open(path: Path, read: Callable[[Path], Any], desc: str, n: int) -> Any:
    if not path.is_file():
        return None
    try:
        images = read(path)
    except (OSError, BrokenEntry) as exc:
        log.warning("cache entry %s is broken (%s): decoding again", path, exc)
        with contextlib.suppress(OSError):  # a shared cache written by someone else
            path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):  # not ours to touch in a shared cache: still readable
        os.utime(path)  # most recently used (pruning keeps it)
    log.info("%s: %d images from the cache %s", desc, n, path)
    return images


def _write(path: Path, read: Callable[[Path], Any], write: Callable[[Any], None]) -> Any:
    """Decode straight into the entry's file, renamed into place when whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            write(fh)
        _prune(path.parent)
        return read(path)
    except OSError as exc:
        log.warning("cannot write the image cache in %s (%s)", path.parent, exc)
        return None


def _write_alias(directory: Path, quick: str, key: str) -> None:
    try:
        with atomic_path(directory / f"{quick}.alias") as tmp:
            tmp.write_text(key + "\n")
    except OSError as exc:
        log.warning("cannot write the image cache in %s (%s)", directory, exc)


def _by_age(directory: Path, *patterns: str) -> list[Path]:
    """Files matching the patterns, most recently used first (one removed meanwhile is left
    out)."""
    dated = []
    for path in (p for pattern in patterns for p in directory.glob(pattern)):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:
            continue
    return [path for _, path in sorted(dated, reverse=True)]


def _prune(directory: Path, keep: int = KEEP_ENTRIES) -> None:
    """Keep the ``keep`` most recently used entries, aliases to entries that exist, and the
    temporary files of decodes that may still be running."""
    entries = _by_age(directory, "*.npy", "*.ragged")
    for old in entries[keep:]:
        old.unlink(missing_ok=True)
    entries = {p.stem for p in entries[:keep]}
    for i, alias in enumerate(_by_age(directory, "*.alias")):
        try:
            if i >= KEEP_ALIASES or alias.read_text().strip() not in entries:
                alias.unlink(missing_ok=True)
        except OSError:
            continue
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in directory.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink(missing_ok=True)
        except OSError:
            continue
