"""Network architectures, looked up by name so model files never need code branches."""

from __future__ import annotations

from typing import Any

from torch import nn

from blobwatch.models.autoencoder import ConvAutoencoder
from blobwatch.models.blob_unet import BlobUNet
from blobwatch.models.configurable_cnn import ConfigurableCNN
from blobwatch.models.paper_cnn import PaperCNN

#: Architecture name -> class.  A model file stores the name and the keyword arguments.
#: ConfigurableCNN is the PaperCNN family that `blobwatch tune` searches (its default is PaperCNN).
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "PaperCNN": PaperCNN,
    "BlobUNet": BlobUNet,
    "ConfigurableCNN": ConfigurableCNN,
    "ConvAutoencoder": ConvAutoencoder,
}


def build_model(architecture: str, arguments: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered architecture with its keyword arguments."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {architecture!r} (known: {known})") from None
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (arguments or {}).items()}
    return cls(**kwargs)
