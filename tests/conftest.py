"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobwatch.classifier import BlobClassifier
from handmade_model import write_handmade_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-set test network (`handmade_model`) written as a model file."""
    return write_handmade_model(tmp_path_factory.mktemp("model") / "handmade.pt")


@pytest.fixture(scope="module")
def clf(model_path: Path) -> BlobClassifier:
    """A `BlobClassifier` on the hand-set test network, on the CPU."""
    return BlobClassifier(model_path, device="cpu")
