"""A configurable network of the PaperCNN family: what `blobwatch tune` searches over.

With its default arguments `ConfigurableCNN` is the seed's PaperCNN layer for layer (same modules,
same parameter count, same ``state_dict`` keys and shapes), so a PaperCNN state dict loads into
it.  The knobs are the seed's list of future work: the number of convolutional layers, the
filters of each, the kernel size, the pooling, the neurons of the hidden layer and the dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Pooling types by name.
POOLING: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def feature_side(size: int, pool: int, conv_layers: int) -> int:
    """Side of the last feature map: ``size`` pooled ``conv_layers`` times by ``pool`` (floor)."""
    side = int(size)
    for _ in range(conv_layers):
        side //= pool
    return side


class ConfigurableCNN(nn.Module):
    """Convolutional blocks (conv, ReLU, pool) then dropout, FC, ReLU, dropout, FC 2.

    Parameters
    ----------
    size : int
        Side of the square input subframe (256 in the seed).
    filters : sequence of int
        Output channels of each convolutional layer; its length is the number of layers.
    kernel : int
        Convolution kernel size (odd; zero padding keeps the size).
    pool : int
        Pooling window and stride after each convolution.
    pool_type : {'max', 'avg'}
        Max pooling (the seed) or average pooling.
    hidden : int
        Neurons of the hidden fully connected layer.
    dropout : (float, float)
        Dropout before the hidden and before the output layer.

    Raises
    ------
    ValueError
        On an even kernel, an unknown pooling, an empty ``filters``, a dropout outside [0, 1),
        or an input that the pooling would reduce to nothing.
    """

    def __init__(
        self,
        *,
        size: int = 256,
        filters: Sequence[int] = (8, 16),
        kernel: int = 5,
        pool: int = 4,
        pool_type: str = "max",
        hidden: int = 128,
        dropout: Sequence[float] = (0.15, 0.3),
    ) -> None:
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"filters={filters} must hold at least one positive channel count")
        if kernel < 1 or kernel % 2 != 1:
            raise ValueError(f"kernel={kernel} must be odd")
        if pool_type not in POOLING:
            raise ValueError(f"pool_type={pool_type!r} must be one of {sorted(POOLING)}")
        if pool < 1:
            raise ValueError(f"pool={pool} must be >= 1")
        if len(dropout) != 2 or not all(0.0 <= d < 1.0 for d in dropout):
            raise ValueError(f"dropout={tuple(dropout)} must be two rates in [0, 1)")
        side = feature_side(size, pool, len(filters))
        if side < 1:
            raise ValueError(f"size={size} pooled {len(filters)} times by {pool} leaves nothing")
        layers: list[nn.Module] = []
        channels = 1
        for f in filters:
            layers += [
                nn.Conv2d(channels, f, kernel, stride=1, padding=kernel // 2),
                nn.ReLU(),
                POOLING[pool_type](pool),
            ]
            channels = f
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(float(dropout[0])),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(float(dropout[1])),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, 2) for inputs of shape (N, 1, size, size)."""
        return self.classifier(self.features(x))


def parameter_count(
    *,
    size: int = 256,
    filters: Sequence[int] = (8, 16),
    kernel: int = 5,
    pool: int = 4,
    hidden: int = 128,
    **_: object,
) -> int:
    """Number of weights of a `ConfigurableCNN` with these arguments, without building it."""
    n, channels = 0, 1
    for f in filters:
        n += channels * f * kernel * kernel + f
        channels = f
    flat = channels * feature_side(size, pool, len(filters)) ** 2
    return n + flat * hidden + hidden + hidden * 2 + 2
