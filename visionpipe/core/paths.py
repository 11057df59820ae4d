"""Paths inside the data folder: the images folder, and files that lead out through a link.

Paths in tables and annotation files are checked as text (``..``, absolute paths); a link
inside ``data.path`` can still point anywhere (``~/.ssh``, another project). What resolves
outside the data folder is refused, except DVC's own cache: with ``cache.type: symlink`` every
tracked file is a link into it.
"""

from __future__ import annotations

import functools
import posixpath
import threading
from pathlib import Path, PureWindowsPath

from visionpipe.core.errors import UserError

_LOOKUP = threading.Lock()  # images are checked in threads: one Repo() opened, once


@functools.cache
def _find_dvc_cache() -> Path | None:
    try:
        from dvc.repo import Repo

        with Repo() as repo:
            return Path(repo.cache.local_cache_dir).resolve()
    except Exception:  # noqa: BLE001 - no repo, no cache: nothing more is allowed
        return None


def _dvc_cache_dir() -> Path | None:
    """The local DVC cache of the repository around the working directory (None outside one);
    DVC is imported only when a link leading out is found."""
    with _LOOKUP:
        return _find_dvc_cache()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def link_outside(path: str | Path, root: str | Path) -> str | None:
    """Why ``path`` (under ``root``) may not be read: it resolves, after following links,
    outside ``root`` (and outside DVC's cache); None when it stays inside."""
    target = Path(path).resolve()
    if _within(target, Path(root).resolve()):
        return None
    cache = _dvc_cache_dir()
    if cache is not None and _within(target, cache):
        return None
    return f"a link leading outside the data folder (to {target})"


def images_folder(root: str | Path, images: str) -> str:
    """``data.images`` as a normalized posix path inside ``root`` ("" for ``root`` itself):
    the folder the image paths of tables and annotation files resolve against. One line
    when it is absolute, escapes ``root``, is missing or leads out of it."""
    text = str(images).strip().replace("\\", "/")
    norm = posixpath.normpath(text) if text else "."
    if text.startswith("/") or PureWindowsPath(str(images)).is_absolute():
        raise UserError(f"data.images '{images}': expected a folder inside data.path ({root})")
    if norm == ".." or norm.startswith("../"):
        raise UserError(f"data.images '{images}': escapes data.path ({root})")
    folder = Path(root) / norm
    if not folder.is_dir():
        raise UserError(f"data.images '{images}': no such folder in data.path ({root})")
    if outside := link_outside(folder, root):
        raise UserError(f"data.images '{images}': {outside}")
    return "" if norm == "." else norm


def under_images(images: str, norm: str) -> str:
    """An image path (normalized, relative to the images folder) relative to ``data.path``."""
    return posixpath.normpath(posixpath.join(images, norm)) if images else norm
