"""A small convolutional autoencoder of prepared subframes, and its reconstruction error.

Trained on blob-free subframes only, it learns what a difference image's background looks like
(noise texture, flat-field and illumination residuals, the dips misregistration leaves at existing
blobs); a new blob is what it cannot reproduce.  The error map is the residual ``x - x_hat``
smoothed with a Gaussian about a blob's size and expressed in units of its robust sigma in the
subframe: blobs are positive in prepared subframes, so the signed residual ranks them like a
matched filter does, while snowballs and persistence (negative after the sign flip) do not
score.  ``mode="squared"`` smooths the squared residual instead (any anomaly scores).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ConvAutoencoder", "error_maps", "reconstruct"]


class ConvAutoencoder(nn.Module):
    """Strided-convolution encoder, transposed-convolution decoder.

    Parameters
    ----------
    channels : tuple of int
        Channels after each stride-2 3x3 convolution of the encoder (the decoder mirrors them).
    latent : int
        Channels of the bottleneck (a 1x1 convolution): the code of a ``size`` subframe holds
        ``latent * (size / 2**len(channels))**2`` numbers.

    Input and output ``(N, 1, H, W)``, H and W multiples of ``2**len(channels)``.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 32), latent: int = 4) -> None:
        super().__init__()
        chans = [1, *[int(c) for c in channels]]
        if len(chans) < 2 or min(chans) < 1 or latent < 1:
            raise ValueError(f"channels={channels} and latent={latent} must be positive")
        enc: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        enc.append(nn.Conv2d(chans[-1], latent, 1))
        dec: list[nn.Module] = [nn.Conv2d(latent, chans[-1], 1), nn.ReLU(inplace=True)]
        rev = chans[::-1]
        for k, (cin, cout) in enumerate(itertools.pairwise(rev)):
            dec.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if k < len(rev) - 2:
                dec.append(nn.ReLU(inplace=True))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.multiple = 2 ** (len(chans) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` (same shape)."""
        return self.decoder(self.encoder(x))


def reconstruct(
    model: nn.Module, subframes: np.ndarray, *, device: str | torch.device = "cpu", batch_size: int = 32
) -> np.ndarray:
    """Reconstructions ``(N, H, W)`` float32 of prepared subframes ``(N, H, W)``."""
    x = np.ascontiguousarray(subframes, dtype=np.float32)
    out = np.empty_like(x)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(x[start : start + batch_size, None]).to(device)
            out[start : start + len(chunk)] = model(chunk)[:, 0].float().cpu().numpy()
    return out


def error_maps(
    subframes: np.ndarray, reconstructions: np.ndarray, *, sigma: float = 3.0, mode: str = "signed"
) -> np.ndarray:
    """Smoothed reconstruction error of each subframe, in robust sigmas of that subframe.

    Parameters
    ----------
    subframes, reconstructions : ndarray, (N, H, W)
        Prepared subframes and the autoencoder's output.
    sigma : float
        Gaussian smoothing (px), about a blob's radius.
    mode : str
        ``"signed"`` (``x - x_hat``: blobs positive) or ``"squared"`` (``(x - x_hat)**2``).

    Returns
    -------
    ndarray, float32, (N, H, W)
        ``(e - median(e)) / robust_sigma(e)`` of the smoothed error ``e`` per subframe.
    """
    from scipy import ndimage

    from blobwatch.stats import robust_sigma

    if mode not in ("signed", "squared"):
        raise ValueError(f"mode must be 'signed' or 'squared', got {mode!r}")
    resid = np.asarray(subframes, np.float32) - np.asarray(reconstructions, np.float32)
    if mode == "squared":
        resid = resid * resid
    smooth = ndimage.gaussian_filter(resid, sigma=(0, sigma, sigma), mode="reflect").astype(np.float32)
    flat = smooth.reshape(len(smooth), -1)
    med = np.median(flat, axis=1)
    mad = robust_sigma(flat, axis=1)
    mad = np.where(mad > 0, mad, 1.0).astype(np.float32)
    return ((smooth - med[:, None, None]) / mad[:, None, None]).astype(np.float32)
