"""Atomic file output: an interrupted stage leaves the old file or none, never half a file.

Files get the permissions the user's umask gives any new file (0644 under 022), not the 0600
of a temporary file, so a service account or a colleague can read the exported models.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionpipe.core.errors import WriteFailed

if TYPE_CHECKING:  # annotations only: predict writes no CSV and starts without pandas
    import pandas as pd


def _new_file_mode() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return 0o666 & ~mask


#: the mode an ordinary new file gets under this process's umask (read once, at import)
FILE_MODE = _new_file_mode()


def _write_failed(path: Path, exc: OSError) -> WriteFailed | None:
    """One line for a write that failed for want of space; None for any other error. (Torch
    reports a full disk as errno ENOSPC only when it writes to a Python file object: see
    :func:`visionpipe.core.checkpoint.save_torch`.)"""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(exc, WriteFailed):
        return None
    free = shutil.disk_usage(path.parent).free / 2**20
    return WriteFailed(f"{path}: cannot write it ({exc.strerror}); {free:.0f} MB free on its disk")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block
    succeeds. A write that fails for want of space is a :class:`WriteFailed` (one line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as exc:
        failed = _write_failed(path, exc)
        if failed is None:
            raise
        raise failed from None
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt. For writers
    that call back into Python: a KeyboardInterrupt raised inside torch's write callback
    comes out of ``torch.save`` as an opaque RuntimeError ("unexpected pos"). Only where
    Ctrl-C would raise KeyboardInterrupt (Python's default handler, in the main thread): an
    ignored SIGINT stays ignored, another handler or an enclosing deferral stays in charge."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Any]:
    """A binary file object whose contents replace ``path`` only when the block succeeds; for
    writers that take a file object (torch.save, torch.jit.save), so that a full disk is an
    OSError ENOSPC (a :class:`WriteFailed`) and Ctrl-C waits for the file to be whole."""
    with interrupts_deferred(), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def significant(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` significant digits for a JSON report; None (JSON null)
    when missing or not finite, so a report never holds NaN."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def save_figure(path: str | Path, fig: Any) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
