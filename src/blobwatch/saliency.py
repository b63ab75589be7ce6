"""Gradient saliency maps (seed section 6, Fig. 9): which pixels drive the blob decision.

The saliency of a subframe is ``|d logit_blob / d x|``, the absolute gradient of the network's
blob logit with respect to each input pixel (Simonyan et al. 2014).  Computation returns
arrays; `save_saliency_figure` draws the seed's two-panel figure (subframe | saliency) and
imports matplotlib only when called, for the CLI and report layers.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy import ndimage
from torch import nn

#: Index of the blob class in the network's two logits (non-blob, blob).
BLOB_CLASS = 1


def gradient_saliency(
    network: nn.Module,
    subframes: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    target: int = BLOB_CLASS,
) -> np.ndarray:
    """Absolute input gradient of one logit for each subframe.

    Gradients are enabled only here (the network's parameters receive none: the gradient is
    taken with `torch.autograd.grad` with respect to the input alone).

    Parameters
    ----------
    network : torch.nn.Module
        A classifier in eval mode returning logits ``(N, C)`` for inputs ``(N, 1, H, W)``.
    subframes : numpy.ndarray
        Prepared subframes ``(N, H, W)`` (float32, finite).
    device : str or torch.device
        Where the network lives.
    batch_size : int
        Subframes per backward pass.
    target : int
        Logit to differentiate (the blob class by default).

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32, non-negative.
    """
    arr = np.asarray(subframes, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"subframes must have shape (N, H, W), got {arr.shape}")
    out = np.empty(arr.shape, dtype=np.float32)
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, arr.shape[0], batch_size):
            x = torch.tensor(arr[start : start + batch_size], device=device)[:, None].requires_grad_(True)
            logits = network(x)
            # Each sample's logit depends only on its own input, so the gradient of the sum
            # gives every sample's own gradient in one backward pass.
            (grad,) = torch.autograd.grad(logits[:, target].sum(), x)
            out[start : start + x.shape[0]] = grad[:, 0].abs().detach().float().cpu().numpy()
    return out


def saliency_peak(saliency: np.ndarray, *, sigma: float = 2.0) -> tuple[float, float]:
    """Position ``(row, col)`` of the maximum of a saliency map after Gaussian smoothing.

    Raw gradient maps are speckled (max-pooling routes the gradient to single pixels); smoothing
    over a few pixels, about a blob's core, makes the peak a stable position estimate.
    """
    sal = np.asarray(saliency, dtype=np.float32)
    if sal.ndim != 2:
        raise ValueError(f"saliency must be a 2-D map, got shape {sal.shape}")
    smooth = ndimage.gaussian_filter(sal, sigma, mode="nearest") if sigma > 0 else sal
    row, col = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return float(row), float(col)


def save_saliency_figure(
    path: str | os.PathLike,
    subframe: np.ndarray,
    saliency: np.ndarray,
    *,
    title: str | None = None,
    origin: tuple[int, int] = (0, 0),
    dpi: int = 100,
) -> None:
    """Write a two-panel PNG: the prepared subframe and its saliency map (seed Fig. 9).

    Parameters
    ----------
    path : path-like
        Output PNG (written atomically).
    subframe, saliency : numpy.ndarray
        2-D arrays of the same shape.
    title : str, optional
        Figure title (e.g. the subframe index and its probability).
    origin : tuple of int
        ``(x0, y0)`` of the subframe in the full image, so the axes show image pixels
        (0-based, x = column, y = row).
    dpi : int
        Resolution.
    """
    from blobwatch.figures import new_figure, save_png

    sub = np.asarray(subframe, dtype=np.float32)
    sal = np.asarray(saliency, dtype=np.float32)
    if sub.ndim != 2 or sub.shape != sal.shape:
        raise ValueError(f"subframe {sub.shape} and saliency {sal.shape} must be 2-D and the same shape")
    x0, y0 = origin
    extent = (x0 - 0.5, x0 + sub.shape[1] - 0.5, y0 - 0.5, y0 + sub.shape[0] - 0.5)
    fig = new_figure(9.0, 4.4, dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    lim = float(np.percentile(np.abs(sub), 99.5)) or 1.0
    im0 = axes[0].imshow(
        sub, origin="lower", cmap="gray", vmin=-lim, vmax=lim, extent=extent, interpolation="nearest"
    )
    axes[0].set_title("prepared subframe (blobs positive)")
    fig.colorbar(im0, ax=axes[0], shrink=0.8, label="z")
    top = float(np.percentile(sal, 99.9)) or 1.0
    im1 = axes[1].imshow(
        sal, origin="lower", cmap="inferno", vmin=0.0, vmax=top, extent=extent, interpolation="nearest"
    )
    axes[1].set_title("saliency |d logit_blob / d x|")
    fig.colorbar(im1, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("x (column, 0-based)")
    axes[0].set_ylabel("y (row, 0-based)")
    if title:
        fig.suptitle(title, parse_math=False)
    save_png(fig, path)
