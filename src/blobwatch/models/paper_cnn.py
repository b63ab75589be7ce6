"""The seed's two-layer CNN (WFC3 ISR 2021-08, section 4)."""

from __future__ import annotations

import torch
from torch import nn


class PaperCNN(nn.Module):
    """Two convolutional blocks and two fully connected layers, as in the seed.

    conv 1->8 (5x5, stride 1, zero padding 2), ReLU, 4x4 max-pool; conv 8->16, same;
    flatten; dropout 0.15; FC 128, ReLU; dropout 0.3; FC 2 (logits: non-blob, blob).

    Parameters
    ----------
    size : int
        Side of the square input subframe (the seed uses 256); must be divisible by 16.
    filters : tuple of int
        Output channels of the two convolutional layers.
    kernel : int
        Convolution kernel size (odd, so the padding keeps the size).
    pool : int
        Max-pool window and stride.
    hidden : int
        Width of the first fully connected layer.
    dropout : tuple of float
        Dropout before the first and the second fully connected layers.
    """

    def __init__(
        self,
        *,
        size: int = 256,
        filters: tuple[int, int] = (8, 16),
        kernel: int = 5,
        pool: int = 4,
        hidden: int = 128,
        dropout: tuple[float, float] = (0.15, 0.3),
    ) -> None:
        super().__init__()
        if size % (pool * pool):
            raise ValueError(f"size={size} must be divisible by pool**2={pool * pool}")
        if kernel % 2 != 1:
            raise ValueError(f"kernel={kernel} must be odd")
        pad = kernel // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, filters[0], kernel, stride=1, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(pool),
            nn.Conv2d(filters[0], filters[1], kernel, stride=1, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(pool),
        )
        side = size // (pool * pool)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout[0]),
            nn.Linear(filters[1] * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout[1]),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, 2) for inputs of shape (N, 1, size, size)."""
        return self.classifier(self.features(x))
