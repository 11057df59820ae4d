"""Errors a user can cause and fix: reported as one line, never as a traceback."""


class UserError(Exception):
    """Bad input (params, paths, data): the stage prints the message and exits non-zero."""


class DataError(UserError):
    """The data on disk cannot be used as configured (missing path, too few classes, ...)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): a library's
    multi-line report shortened to fit a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WriteFailed(UserError, OSError):
    """An output could not be written (a full disk, most often): one line naming the file,
    and still an OSError to code that can do without the file (the decoded-image cache)."""
