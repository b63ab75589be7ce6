"""A deterministic PaperCNN with hand-set weights, for tests that must not depend on training.

The network is a real blob detector, not a placeholder: channel 0 of the first convolution is a
5x5 box filter with a bias of -1 (it fires where the local mean of the prepared image exceeds
1 sigma, i.e. on a blob), the second convolution passes that channel through, the first fully
connected unit sums the pooled responses and the blob logit is an affine function of that sum.
Blank noise gives P(blob) of about 0.12; an obvious blob gives P(blob) close to 1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from blobwatch.modelfile import save_model
from blobwatch.models import PaperCNN

#: Metadata written with the hand-made model.
METADATA = {
    "threshold": 0.5,
    "preparation": {"clip_factor": 0.5, "size": 256},
    "description": "hand-set test network (box filter detector); not a trained model",
}


def handmade_network(size: int = 256) -> PaperCNN:
    """Return the hand-set PaperCNN (eval mode)."""
    net = PaperCNN(size=size)
    with torch.no_grad():
        for param in net.parameters():
            param.zero_()
        conv1, conv2 = net.features[0], net.features[3]
        conv1.weight[0, 0] = 1.0 / 25.0
        conv1.bias[0] = -1.0
        conv2.weight[0, 0, 2, 2] = 1.0
        fc1, fc2 = net.classifier[2], net.classifier[5]
        side = size // 16
        fc1.weight[0, : side * side] = 1.0  # flattened channel 0 comes first
        fc2.weight[1, 0] = 4.0
        fc2.bias[1] = -2.0
    return net.eval()


def write_handmade_model(path: Path, *, threshold: float = 0.5) -> Path:
    """Write the hand-set network as a blobwatch model file and return its path."""
    metadata = {**METADATA, "threshold": threshold}
    save_model(path, handmade_network(), architecture="PaperCNN", arguments={"size": 256}, metadata=metadata)
    return path
