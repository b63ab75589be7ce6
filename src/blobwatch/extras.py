"""Optional dependencies: import one, or fail with one line naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from blobwatch.errors import BlobwatchError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(BlobwatchError):
    """An optional dependency of a command is not installed."""


def require(module: str, *, extra: str = "research", package: str | None = None) -> ModuleType:
    """Import ``module``; raise `MissingExtraError` naming ``extra`` when it is not installed.

    Parameters
    ----------
    module : str
        Module to import (e.g. ``"umap"``).
    extra : str
        The blobwatch extra that installs it.
    package : str, optional
        The distribution name, when it differs from the module (``"umap-learn"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{package or module} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'blobwatch[{extra}]'"
        ) from None
