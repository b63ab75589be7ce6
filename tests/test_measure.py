"""blobwatch.monitor.measure on the simulator's blobs: centre, radius and depth of a known blob,
also near the image edge and with masked (NaN) pixels."""

from __future__ import annotations

import numpy as np
import pytest

from blobwatch.monitor.measure import loss_map, measure_blob
from blobwatch.simulate import blob_profile

SIZE = 121
DEPTH = 0.1
NOISE = 0.005


def _images(kind: str, radius: float, x: float, y: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Current image and median stack (noise ``NOISE`` each) with one simulated blob at (x, y)."""
    c = (SIZE - 1) / 2
    profile = blob_profile(radius, kind=kind, size=SIZE, center=(y - c, x - c))
    rng = np.random.default_rng(seed)
    stack = (1 + NOISE * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
    current = ((1 - DEPTH * profile) * (1 + NOISE * rng.standard_normal((SIZE, SIZE)))).astype(np.float32)
    return current, stack


def _edge_radius(kind: str, radius: float, level: float = 0.2) -> float:
    """Where the noiseless profile (peak 1) falls to ``level`` along a row through its centre."""
    row = blob_profile(radius, kind=kind, size=SIZE)[SIZE // 2, SIZE // 2 :]
    k = int(np.nonzero(row < level)[0][0])
    return (k - 1) + float((row[k - 1] - level) / (row[k - 1] - row[k]))


@pytest.mark.parametrize("kind", ["disc", "ring"])
@pytest.mark.parametrize("radius", [5.0, 8.0])
def test_a_simulated_blob_is_measured_within_tolerance(kind: str, radius: float) -> None:
    """Centre within 0.3 px of the truth from a guess 2.9 px off, radius (20 % of the peak)
    within 0.4 px, central depth within 0.01 of the simulated 10 %."""
    x, y = 60.37, 59.71
    current, stack = _images(kind, radius, x, y)
    m = measure_blob(loss_map(current, stack), x + 2.2, y - 1.9)
    assert np.hypot(m.x - x, m.y - y) < 0.3
    assert m.radius == pytest.approx(_edge_radius(kind, radius), abs=0.4)
    assert m.depth == pytest.approx(DEPTH, abs=0.01)
    assert abs(m.background) < 0.002 and m.noise == pytest.approx(NOISE * np.sqrt(2), rel=0.2)
    assert m.significance > 10


@pytest.mark.parametrize(("x", "y"), [(9.3, 60.2), (9.3, 9.6), (111.4, 112.1), (4.3, 60.2)])
def test_a_blob_near_the_image_edge_is_measured_where_it_is(x: float, y: float) -> None:
    """The apertures reach past the image: the centre must not be pulled towards the edge."""
    current, stack = _images("disc", 5.0, x, y)
    m = measure_blob(loss_map(current, stack), min(x + 1.2, SIZE - 1), y - 1.9)
    assert np.hypot(m.x - x, m.y - y) < (0.5 if x < 5 else 0.3)  # half the blob cut off at x=4.3
    assert m.radius == pytest.approx(_edge_radius("disc", 5.0), abs=0.4)


def test_masked_pixels_are_left_out() -> None:
    """5 % of the pixels NaN (in the image or the stack): the same blob, within the tolerances."""
    x, y = 60.37, 59.71
    current, stack = _images("disc", 6.0, x, y)
    rng = np.random.default_rng(8)
    current[rng.random(current.shape) < 0.025] = np.nan
    stack[rng.random(stack.shape) < 0.025] = np.nan
    loss = loss_map(current, stack)
    assert np.isnan(loss).mean() > 0.04
    m = measure_blob(loss, x - 1.5, y + 2.0)
    assert np.hypot(m.x - x, m.y - y) < 0.3
    assert m.radius == pytest.approx(_edge_radius("disc", 6.0), abs=0.4)
    assert m.depth == pytest.approx(DEPTH, abs=0.01)
