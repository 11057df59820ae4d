"""Errors a user can cause and fix: reported as one line, never as a traceback."""


class UserError(Exception):
    """Bad input (params, paths, data): the stage prints the message and exits non-zero."""


class DataError(UserError):
    """The data on disk cannot be used as configured (missing path, too few classes, ...)."""
