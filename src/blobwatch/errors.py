"""Exceptions that the command line turns into one clear line and exit code 2."""

from __future__ import annotations

import os


class BlobwatchError(Exception):
    """Base class for errors a user can act on (bad input, bad configuration)."""


class InputError(BlobwatchError):
    """A file given to blobwatch cannot be used.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    problem : str
        What is wrong with it, in a few words.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickle with both arguments (Dask sends a worker's errors back to the client)."""
        return type(self), (self.path, self.problem)
