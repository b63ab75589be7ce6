"""BlobUNet: a small fully convolutional network that maps a whole difference image (and the
reference median beside it) to a per-pixel new-blob probability."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BlobUNet(nn.Module):
    """U-Net with ``depth`` poolings; channels ``width * 2**level``.

    Parameters
    ----------
    in_channels : int
        Input planes: the prepared difference and the prepared reference median.
    width : int
        Channels of the first level.
    depth : int
        Number of 2x2 poolings after the stem (the receptive field grows to about
        ``stem * 2**depth * 10`` px).
    stem : int
        The input is first folded ``stem x stem`` pixels into channels (pixel unshuffle, no
        information lost) and the output unfolded back, so the U-Net runs at 1/stem of the
        resolution: blobs are 10-20 px across, and this keeps a whole 1024x1024 image fast on a CPU.

    Input ``(N, in_channels, H, W)`` with H and W multiples of ``stem * 2**depth``; output
    ``(N, 1, H, W)`` logits of "this pixel belongs to a new blob".
    """

    def __init__(self, in_channels: int = 2, width: int = 12, depth: int = 3, stem: int = 2) -> None:
        super().__init__()
        self.depth, self.stem = depth, stem
        chans = [width * 2**k for k in range(depth + 1)]
        first = in_channels * stem * stem
        self.down = nn.ModuleList(
            [_block(first, chans[0])] + [_block(chans[k - 1], chans[k]) for k in range(1, depth + 1)]
        )
        self.up = nn.ModuleList([_block(chans[k + 1] + chans[k], chans[k]) for k in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], stem * stem, 1)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return self.stem * 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(x, self.stem) if self.stem > 1 else x
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(
                torch.cat(
                    [F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1
                )
            )
        x = self.head(x)
        return F.pixel_shuffle(x, self.stem) if self.stem > 1 else x
