"""The inference wrapper: one object that owns a trained model, its threshold and its settings.

`BlobClassifier` loads a blobwatch model file (the shipped model by default), picks a device
(CUDA when available, else the CPU), and turns prepared subframes (z-scored, blobs positive,
shape ``(N, size, size)``) into blob probabilities and gradient saliency maps.  Inference runs
under ``torch.inference_mode()``; gradients are enabled only inside `BlobClassifier.saliency`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blobwatch.errors import BlobwatchError, InputError
from blobwatch.modelfile import load_model
from blobwatch.saliency import BLOB_CLASS, gradient_saliency

log = logging.getLogger(__name__)

#: Threshold used when a model file carries none (the seed's argmax rule).
DEFAULT_THRESHOLD = 0.5
#: Clipping factor used when a model file carries no preparation settings (the seed's 0.5).
DEFAULT_CLIP_FACTOR = 0.5


def resolve_device(device: str | torch.device = "auto", *, strict: bool = False) -> torch.device:
    """Turn a device request into a usable `torch.device` (the one definition, for inference,
    training and evaluation).

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    strict : bool
        What a CUDA request on a machine without CUDA does: False (inference) falls back to the
        CPU with a warning; True (training, evaluation: hours on the wrong device) raises.

    Raises
    ------
    ValueError
        If ``device`` is not a device name torch understands.
    blobwatch.errors.BlobwatchError
        ``strict`` and CUDA requested but not available.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a valid torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        if strict:
            raise BlobwatchError(f"--device {device} requested but CUDA is not available (use auto or cpu)")
        warnings.warn(
            f"device={device!r} requested but CUDA is not available; using the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return dev


def as_subframe_batch(subframes: np.ndarray, size: int) -> np.ndarray:
    """Validate prepared subframes and return them as a float32 ``(N, size, size)`` array.

    Parameters
    ----------
    subframes : numpy.ndarray
        One subframe ``(H, W)`` or a stack ``(N, H, W)``, already prepared (blobs positive).
    size : int
        The side the model expects.

    Raises
    ------
    ValueError
        On a wrong number of dimensions, a wrong subframe size or non-finite values.
    """
    arr = np.asarray(subframes)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"subframes must have shape (N, H, W) or (H, W), got {np.shape(subframes)}")
    if arr.shape[1:] != (size, size):
        raise ValueError(f"subframes must be {size}x{size} for this model, got {arr.shape[1]}x{arr.shape[2]}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"subframes must be real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("subframes contain non-finite values (prepare them first)")
    return arr


class BlobClassifier:
    """A trained blob/non-blob subframe classifier ready for inference.

    Parameters
    ----------
    model : str or path-like, optional
        A blobwatch model file; the model shipped with the package when omitted.
    device : str
        ``"auto"`` (default: CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:N]"``;
        ``"cuda"`` without CUDA falls back to the CPU with a warning.
    batch_size : int
        Subframes per forward pass.

    Attributes
    ----------
    threshold : float
        Operating threshold on the blob probability (from the model file's metadata).
    metadata : dict
        The model file's metadata (preparation, validation metrics, provenance, ...).
    model_path : pathlib.Path
        The file the model was loaded from.
    size : int
        Side of the square subframes the model accepts.
    clip_factor : float
        The clipping factor the model was trained with (``metadata["preparation"]``).
    device : torch.device
        Where the network runs.

    Raises
    ------
    blobwatch.errors.InputError
        If the model file is missing, unreadable or not a blobwatch model.
    """

    def __init__(
        self, model: str | os.PathLike | None = None, *, device: str = "auto", batch_size: int = 64
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.device = resolve_device(device)
        loaded = load_model(model, device=self.device)
        if loaded.architecture in ("BlobUNet", "ConvAutoencoder"):
            raise InputError(
                loaded.path or "<model>", f"is a {loaded.architecture} model, not a subframe classifier"
            )
        self.network = loaded.model
        self.network.eval()
        self.architecture = loaded.architecture
        self.arguments: dict[str, Any] = loaded.arguments
        self.metadata: dict[str, Any] = loaded.metadata
        self.model_path = Path(loaded.path) if loaded.path is not None else None
        self.batch_size = int(batch_size)
        preparation = self.metadata.get("preparation") or {}
        self.size = int(preparation.get("size", self.arguments.get("size", 256)))
        self.clip_factor = float(preparation.get("clip_factor", DEFAULT_CLIP_FACTOR))
        threshold = self.metadata.get("threshold", DEFAULT_THRESHOLD)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"model threshold {self.threshold} is not a probability")
        log.debug(
            "loaded %s (%s) on %s, threshold %.3f",
            self.model_path,
            self.architecture,
            self.device,
            self.threshold,
        )

    def __repr__(self) -> str:
        return (
            f"BlobClassifier(model={str(self.model_path)!r}, architecture={self.architecture!r}, "
            f"device={str(self.device)!r}, threshold={self.threshold:.4g})"
        )

    def logits(self, subframes: np.ndarray) -> np.ndarray:
        """Raw network outputs ``(N, 2)`` (non-blob, blob) as float32."""
        batch = as_subframe_batch(subframes, self.size)
        out = np.empty((batch.shape[0], 2), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                chunk = torch.from_numpy(batch[start : start + self.batch_size]).to(self.device)
                out[start : start + chunk.shape[0]] = self.network(chunk[:, None]).float().cpu().numpy()
        return out

    def predict_proba(self, subframes: np.ndarray) -> np.ndarray:
        """Blob probability of each prepared subframe.

        Parameters
        ----------
        subframes : numpy.ndarray
            ``(N, size, size)`` or ``(size, size)``: prepared (z-scored) subframes, blobs positive.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` float32 probabilities of the blob class (softmax of the two logits).
        """
        logits = torch.from_numpy(self.logits(subframes))
        return torch.softmax(logits, dim=1)[:, BLOB_CLASS].numpy().astype(np.float32)

    def predict(self, subframes: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
        """Boolean blob flags: probability >= ``threshold`` (the model's threshold by default)."""
        t = self.threshold if threshold is None else float(threshold)
        return self.predict_proba(subframes) >= t

    def saliency(self, subframes: np.ndarray) -> np.ndarray:
        """Gradient saliency ``|d logit_blob / d x|`` of each subframe, shape ``(N, H, W)`` float32.

        See `blobwatch.saliency.gradient_saliency`.
        """
        batch = as_subframe_batch(subframes, self.size)
        return gradient_saliency(self.network, batch, device=self.device, batch_size=self.batch_size)
