"""Images inside tar shards (WebDataset layout), read in place as if they were files.

DVC costs about the same per tracked file, whatever its size, so a dataset of a million loose
images makes every ``dvc status`` wait; packed into a few hundred tar shards
(``python -m visionpipe.onboard.pack``) it costs per shard. The pipeline reads a member
through a path that passes through the shard, ``shards/shard-000003.tar/00012345.png``:
:func:`split_member` tells such a path, :func:`read_bytes` and :func:`open_file` give the
member's bytes without unpacking anything (each shard's member offsets are indexed once per
process), so manifests, the decoded cache, prepare's checks and every reader of images take
shard members and files alike.

A shard cut short keeps the members that are whole and reports the rest; a member name that
appears twice in one shard is reported and neither copy is read, so no wrong sample is ever
taken silently.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from visionpipe.core.errors import DataError

SHARD_SUFFIX = ".tar"


@dataclass
class ShardIndex:
    """Where each member's bytes are in one shard, and what could not be indexed."""

    path: Path
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (offset, size)
    clashes: list[str] = field(default_factory=list)  # names found more than once
    unsafe: list[str] = field(default_factory=list)  # absolute names, or names with ..
    truncated: str = ""  # why the shard's end is unreadable ("": whole)


_lock = threading.Lock()
_indexes: dict[tuple[str, int, int], ShardIndex] = {}


def index(path: str | Path) -> ShardIndex:
    """The shard's member index (built once per process and shard version)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        found = _indexes.get(key)
    if found is None:
        found = _build_index(path, st.st_size)
        with _lock:
            _indexes[key] = found
    return found


def _build_index(path: Path, file_size: int) -> ShardIndex:
    out = ShardIndex(path)
    seen: dict[str, tuple[int, int]] = {}
    end = 0  # where the last member's data (padded to whole blocks) ends
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if not info.isfile():
                    continue
                name = posixpath.normpath(info.name)  # "./a.png" (tar -C dir .) is "a.png"
                if name.startswith(("/", "../")) or name == "..":
                    out.unsafe.append(info.name)  # would resolve outside the shard
                    continue
                if info.offset_data + info.size > file_size:
                    out.truncated = f"ends inside member {info.name}"
                    break
                if name in seen:
                    out.clashes.append(name)
                seen[name] = (info.offset_data, info.size)
    except tarfile.ReadError as exc:
        if not seen:
            raise DataError(f"{path}: not a readable tar shard ({exc})") from None
        out.truncated = f"unreadable after {len(seen)} members ({exc})"
    if not out.truncated and not _end_marker(path, end):
        # tarfile stops quietly at the end of the file: a shard cut between two members
        # looks whole but for the two zero blocks every complete archive ends with
        out.truncated = f"no end-of-archive marker after {len(seen)} members"
    clashing = set(out.clashes)
    out.clashes = sorted(clashing)
    out.members = {name: where for name, where in seen.items() if name not in clashing}
    return out


def _end_marker(path: Path, end: int) -> bool:
    """Whether two zero blocks follow the last member, as they end every whole tar file."""
    with open(path, "rb") as fh:
        fh.seek(end)
        marker = fh.read(2 * tarfile.BLOCKSIZE)
    return len(marker) == 2 * tarfile.BLOCKSIZE and not marker.strip(b"\0")


def split_member(path: str | Path) -> tuple[Path, str] | None:
    """(shard, member name) when ``path`` passes through a ``.tar`` file; else None."""
    text = os.fspath(path)
    if SHARD_SUFFIX + "/" not in text.replace(os.sep, "/"):
        return None
    parts = Path(text).parts
    for i, part in enumerate(parts[:-1]):
        if part.endswith(SHARD_SUFFIX):
            shard = Path(*parts[: i + 1])
            if shard.is_file():
                return shard, "/".join(parts[i + 1 :])
    return None


def _locate(path: str | Path, found: tuple[Path, str]) -> tuple[ShardIndex, tuple[int, int]]:
    """The member's shard index and (offset, size); ``found``: ``split_member(path)``."""
    shard, name = found
    shard_index = index(shard)
    where = shard_index.members.get(name)
    if where is None:
        why = "appears more than once in" if name in shard_index.clashes else "is not in"
        raise FileNotFoundError(f"{path}: member {name} {why} {shard}")
    return shard_index, where


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file, or of a shard member."""
    found = split_member(path)
    return Path(path).read_bytes() if found is None else _member_bytes(path, found)


def _member_bytes(path: str | Path, found: tuple[Path, str]) -> bytes:
    shard_index, (offset, size) = _locate(path, found)
    fd = os.open(shard_index.path, os.O_RDONLY)
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(data) != size:
        raise OSError(f"{path}: shard cut short while reading")
    return data


class MemberBytes(io.BytesIO):
    """A member's bytes that print as its path, so a decoder's message names the member."""

    def __init__(self, data: bytes, path: str | Path):
        super().__init__(data)
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return repr(self.path)


def open_file(path: str | Path) -> io.BytesIO | Path:
    """What a decoder opens: the path itself, or a shard member's bytes in memory."""
    found = split_member(path)
    return Path(path) if found is None else MemberBytes(_member_bytes(path, found), path)


def is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file, or a readable member of a shard."""
    if Path(path).is_file():
        return True
    found = split_member(path)
    if found is None:
        return False
    try:
        _locate(path, found)
        return True
    except (OSError, DataError):
        return False


def stat_facts(path: str | Path) -> tuple[int, int, int]:
    """(size, modification time in ns, offset) of a file (offset 0), or of a member (its
    shard's time, its place in the shard), so a repacked shard changes them."""
    found = split_member(path)
    if found is None:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns, 0
    shard_index, (offset, size) = _locate(path, found)
    return size, shard_index.path.stat().st_mtime_ns, offset
