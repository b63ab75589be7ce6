"""Model files: weights plus the metadata needed to use them, loaded without unpickling.

A model file is a ``torch.save`` of a plain dictionary of tensors, strings, numbers, lists and
dicts, so ``torch.load(weights_only=True)`` reads it:

``format``        ``"blobwatch-model/1"``
``architecture``  name in `blobwatch.models.ARCHITECTURES`
``arguments``     keyword arguments of the architecture
``state_dict``    the weights
``metadata``      preparation parameters, threshold, dataset manifest hash, validation metrics,
                  library versions, training command, ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blobwatch.atomic import atomic_path
from blobwatch.errors import InputError
from blobwatch.models import build_model

FORMAT = "blobwatch-model/1"
#: File name of the model shipped inside the package (``blobwatch/data``).
SHIPPED_MODEL = "papercnn.pt"


@dataclass
class ModelFile:
    """A loaded model file: the network (in eval mode) and its metadata."""

    model: nn.Module
    architecture: str
    arguments: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def shipped_model_path() -> Path:
    """Path of the model shipped with the package."""
    return Path(str(resources.files("blobwatch") / "data" / SHIPPED_MODEL))


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    architecture: str,
    arguments: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Write a model file atomically (see module docstring for the layout)."""
    payload = {
        "format": FORMAT,
        "architecture": architecture,
        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu") -> ModelFile:
    """Load a model file with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like, optional
        Model file; the shipped model when omitted.
    device : str or torch.device
        Where to put the weights.

    Raises
    ------
    InputError
        If the file is missing, is not a blobwatch model file, or its weights do not fit.
    """
    path = Path(path) if path is not None else shipped_model_path()
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable model file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a blobwatch model file (expected format {FORMAT!r})")
    try:
        model = build_model(payload["architecture"], payload["arguments"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(path, f"model weights do not match the architecture ({first})") from None
    model.to(device).eval()
    return ModelFile(
        model=model,
        architecture=payload["architecture"],
        arguments=dict(payload["arguments"]),
        metadata=dict(payload.get("metadata", {})),
        path=str(path),
    )
