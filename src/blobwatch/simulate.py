"""Realistic simulated CSM-monitor blob images with ground truth.

A simulated blob image is

``illumination(row, col) * T(row - dy_day, col - dx_day) * (1 + sigma_day * N(0, 1))``

followed by detector features that do *not* move with the CSM: fixed bad pixels, unstable
pixels, cosmic-ray residuals, snowballs, persistence patches and the 5-px non-finite border.
``T`` is the throughput map of the CSM mirror, the product over blobs of
``1 - depth * profile``, shifted each day by a random sub-pixel CSM mis-registration.

Parameters that no public source pins down are drawn over wide ranges from the seed and
recorded in `Simulation.params` (see ``docs/simulation.md`` for every range and its source).
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erfc

from blobwatch import __version__
from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.stats import jsonable

__all__ = [
    "BLOB_KINDS",
    "DQ_BAD",
    "DQ_BLOB",
    "DQ_HOT",
    "DQ_UNSTABLE",
    "DetectorFeatures",
    "Simulation",
    "SimulationConfig",
    "Transients",
    "add_transients",
    "blob_profile",
    "draw_blob_shape",
    "draw_detector",
    "mask_border",
    "simulate_sequence",
    "write_simulation",
]

#: Blob profile kinds.
BLOB_KINDS = ("ring", "disc")

#: WFC3/IR data-quality bits used in the optional flt-style files.
DQ_BAD = 4  # bad detector pixel (cold or dead)
DQ_HOT = 16  # hot pixel
DQ_UNSTABLE = 32  # unstable response
DQ_BLOB = 512  # known blob (bad-pixel-table flag)

_SQRT2 = math.sqrt(2.0)
_MJD_2021 = 59215.0  # 2021-01-01
_MJD_2026 = 61041.0  # 2026-01-01


# ----------------------------------------------------------------------------------------
# configuration and result
# ----------------------------------------------------------------------------------------
@dataclass
class SimulationConfig:
    """What to simulate.  ``None`` for a parameter means: draw it from the seed.

    Parameters
    ----------
    n_days : int
        Number of daily images (day 0 first).
    size : int
        Image side in pixels (1024 for real blob images).
    border : int
        Width of the non-finite reference-pixel border (5 for WFC3/IR).
    seed : int or None
        Random seed; ``None`` draws one from the OS and records it.
    n_existing : int or None
        Blobs present before the sequence starts (drawn 100-200 when ``None``).
    new_blob_days : sequence of int
        Days on which one new blob appears (repeat a day for several blobs).
    new_blob_rate : float
        Expected number of additional new blobs per day (Poisson, days 1 onwards).
    new_blob_depth, new_blob_radius : float or (low, high) or None
        Central loss and radius of new blobs: a value, a range, or ``None`` for the typical
        range (depth 3-15 %, radius 5-10 px).
    noise_sigma : float or None
        Sequence noise level (fraction of the background) around which daily levels scatter.
    flat_residual_sigma : float or None
        Fixed pixel-to-pixel response residual (flat-field error) that does not change from day
        to day: it survives median stacking but cancels in a difference image.
    shift_sigma : float or None
        Standard deviation (px) of the daily CSM mis-registration along each axis.
    ring_fraction : float or None
        Fraction of blobs with a ring profile (the others are filled discs).
    gradient_amplitude : float or None
        Amplitude of the low-order illumination gradient.
    earthlight_probability : float or None
        Probability that a day shows an earthlight raise on the leftmost columns.
    bad_pixel_fraction : float or None
        Fraction of pixels that are fixed bad pixels (hot, cold or dead).
    n_unstable : int or None
        Number of unstable pixels that change value from day to day.
    cosmic_ray_rate : float or None
        Mean number of cosmic-ray residuals per image.
    snowball_rate : float or None
        Mean number of snowball residuals per image.
    persistence_rate : float or None
        Mean number of persistence patches per image.
    background : float or None
        Airglow background in e-/s, used only for the flt-style files.
    start_mjd : float or None
        MJD of day 0 (drawn 2021-2026 when ``None``).
    """

    n_days: int = 45
    size: int = 1024
    border: int = 5
    seed: int | None = None
    n_existing: int | None = None
    new_blob_days: Sequence[int] = ()
    new_blob_rate: float = 0.0
    new_blob_depth: float | tuple[float, float] | None = None
    new_blob_radius: float | tuple[float, float] | None = None
    noise_sigma: float | None = None
    flat_residual_sigma: float | None = None
    shift_sigma: float | None = None
    ring_fraction: float | None = None
    gradient_amplitude: float | None = None
    earthlight_probability: float | None = None
    bad_pixel_fraction: float | None = None
    n_unstable: int | None = None
    cosmic_ray_rate: float | None = None
    snowball_rate: float | None = None
    persistence_rate: float | None = None
    background: float | None = None
    start_mjd: float | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad argument."""
        if int(self.n_days) < 1:
            raise ValueError(f"n_days must be >= 1, got {self.n_days}")
        if int(self.border) < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if int(self.size) < 2 * int(self.border) + 64:
            raise ValueError(f"size must be >= 2*border + 64, got {self.size}")
        if self.n_existing is not None and int(self.n_existing) < 0:
            raise ValueError(f"n_existing must be >= 0, got {self.n_existing}")
        for day in self.new_blob_days:
            if not 0 <= int(day) < int(self.n_days):
                raise ValueError(f"new blob day {day} is outside 0..{int(self.n_days) - 1}")
        if not self.new_blob_rate >= 0:
            raise ValueError(f"new_blob_rate must be >= 0, got {self.new_blob_rate}")
        for name in (
            "noise_sigma",
            "flat_residual_sigma",
            "shift_sigma",
            "gradient_amplitude",
            "cosmic_ray_rate",
            "snowball_rate",
            "persistence_rate",
            "bad_pixel_fraction",
        ):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("ring_fraction", "earthlight_probability", "bad_pixel_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.background is not None and not self.background > 0:
            raise ValueError(f"background must be > 0, got {self.background}")
        for name, lo, hi in (("new_blob_depth", 0.0, 1.0), ("new_blob_radius", 1.0, 64.0)):
            value = getattr(self, name)
            if value is None:
                continue
            low, high = (value, value) if np.isscalar(value) else tuple(value)
            if not (lo < low <= high <= hi):
                raise ValueError(f"{name} must lie within ({lo}, {hi}], got {value}")


@dataclass
class Simulation:
    """An in-memory simulated sequence.

    Attributes
    ----------
    images : ndarray, float32, (n_days, size, size)
        Blob images, background ~1, NaN border.
    mjd : ndarray, float64, (n_days,)
        Exposure start of each image (MJD).
    shifts : ndarray, float64, (n_days, 2)
        Blob-pattern shift of each day as (dy, dx) in pixels.
    noise : ndarray, float64, (n_days,)
        Per-pixel noise sigma of each day (fraction of the background).
    blobs : astropy.table.Table
        Every blob: id, x, y (0-based, unshifted), radius, depth, profile, day (day of
        appearance, < 0 before the sequence) and its shape parameters.
    params : dict
        Every drawn or given parameter (JSON-serializable), the seed included.
    bad_pixels : ndarray, bool, (size, size)
        The fixed bad-pixel mask (hot, cold and dead pixels; not the border).
    unstable_pixels : ndarray, bool, (size, size)
        The unstable pixels.
    hot_pixels : ndarray, bool, (size, size)
        The hot subset of ``bad_pixels``.
    """

    images: np.ndarray
    mjd: np.ndarray
    shifts: np.ndarray
    noise: np.ndarray
    blobs: Any
    params: dict
    bad_pixels: np.ndarray
    unstable_pixels: np.ndarray
    hot_pixels: np.ndarray
    daily: list[dict] = field(default_factory=list)

    @property
    def n_days(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def new_blobs(self) -> Any:
        """The rows of `blobs` that appear during the sequence (day >= 0)."""
        return self.blobs[self.blobs["day"] >= 0]


# ----------------------------------------------------------------------------------------
# single-blob profiles
# ----------------------------------------------------------------------------------------
def draw_blob_shape(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Draw the shape parameters of one blob profile.

    Parameters
    ----------
    kind : {'ring', 'disc'}
        Profile kind.
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    dict
        ``axis_ratio`` (0.85-1, slight ellipticity), ``angle`` (rad), ``edge`` (soft-edge
        width as a fraction of the radius) and, for rings, ``dip_radius``, ``dip_width`` and
        ``dip_depth`` (the less-lossy zone between the core and the outer ring); for discs
        ``dome`` (extra central loss).
    """
    if kind not in BLOB_KINDS:
        raise ValueError(f"kind must be one of {BLOB_KINDS}, got {kind!r}")
    shape = {
        "axis_ratio": float(rng.uniform(0.85, 1.0)),
        "angle": float(rng.uniform(0.0, math.pi)),
        "edge": float(rng.uniform(0.1, 0.35)),
        "dip_radius": 0.0,
        "dip_width": 0.0,
        "dip_depth": 0.0,
        "dome": 0.0,
    }
    if kind == "ring":
        shape["dip_radius"] = float(rng.uniform(0.3, 0.45))
        shape["dip_width"] = float(rng.uniform(0.08, 0.16))
        shape["dip_depth"] = float(rng.uniform(0.3, 0.8))
    else:
        shape["dome"] = float(rng.uniform(0.0, 0.35))
    return shape


_DEFAULT_SHAPES = {
    "ring": {
        "axis_ratio": 1.0,
        "angle": 0.0,
        "edge": 0.15,
        "dip_radius": 0.38,
        "dip_width": 0.12,
        "dip_depth": 0.55,
        "dome": 0.0,
    },
    "disc": {
        "axis_ratio": 1.0,
        "angle": 0.0,
        "edge": 0.15,
        "dip_radius": 0.0,
        "dip_width": 0.0,
        "dip_depth": 0.0,
        "dome": 0.15,
    },
}


def _box_half(radius: float, shape: dict[str, float]) -> int:
    """Half-width of a box that holds the whole profile (loss < 1e-4 outside)."""
    reach = radius * (1.0 + 3.0 * shape["edge"]) / max(shape["axis_ratio"], 0.5)
    return int(math.ceil(reach)) + 1


def _profile_map(
    dy: np.ndarray, dx: np.ndarray, radius: float, kind: str, shape: dict[str, float]
) -> np.ndarray:
    """Unnormalized loss profile at offsets (dy, dx) from the blob centre."""
    cos_a, sin_a = math.cos(shape["angle"]), math.sin(shape["angle"])
    along = dx * cos_a + dy * sin_a
    across = (-dx * sin_a + dy * cos_a) / shape["axis_ratio"]
    u = np.sqrt(along * along + across * across) / radius
    loss = 0.5 * erfc((u - 1.0) / (shape["edge"] * _SQRT2))
    if kind == "ring":
        dip = shape["dip_depth"] * np.exp(-0.5 * ((u - shape["dip_radius"]) / shape["dip_width"]) ** 2)
        loss = loss * (1.0 - dip)
    else:
        loss = loss * (1.0 - shape["dome"] * np.minimum(u, 1.0) ** 2)
    return loss


def _profile_peak(radius: float, kind: str, shape: dict[str, float]) -> float:
    """Maximum of the unnormalized radial profile (it depends on the shape, not the radius)."""
    return _profile_peak_cached(
        kind, shape["edge"], shape["dip_radius"], shape["dip_width"], shape["dip_depth"], shape["dome"]
    )


@functools.lru_cache(maxsize=4096)
def _profile_peak_cached(
    kind: str, edge: float, dip_radius: float, dip_width: float, dip_depth: float, dome: float
) -> float:
    u = np.linspace(0.0, 1.5, 301)
    shape = {
        "axis_ratio": 1.0,
        "angle": 0.0,
        "edge": edge,
        "dip_radius": dip_radius,
        "dip_width": dip_width,
        "dip_depth": dip_depth,
        "dome": dome,
    }
    return float(_profile_map(np.zeros_like(u), u, 1.0, kind, shape).max())


def blob_profile(
    radius: float,
    *,
    kind: str = "disc",
    size: int | None = None,
    center: tuple[float, float] = (0.0, 0.0),
    shape: dict[str, float] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Fractional throughput-loss map of one blob, peak 1.

    Multiply by the blob's central depth ``d`` and use ``1 - d * profile`` as a throughput
    map (or ``image * (1 - d * profile)`` to superimpose the blob on an image).

    Parameters
    ----------
    radius : float
        Blob radius in pixels (where the soft edge falls to half).
    kind : {'ring', 'disc'}
        'ring': defocused obscured pupil (lossy core, less loss at ~0.3-0.45 radius, lossy
        outer ring); 'disc': filled disc with a soft edge.
    size : int, optional
        Side of the square output; default just large enough for the whole blob (odd).
    center : (float, float)
        Sub-pixel offset (dy, dx) of the blob centre from the central pixel
        ``((size - 1) / 2, (size - 1) / 2)``.
    shape : dict, optional
        Shape parameters as returned by `draw_blob_shape`; missing keys take typical values.
    rng : numpy.random.Generator, optional
        If given and ``shape`` is None, the shape is drawn at random.

    Returns
    -------
    ndarray, float32, (size, size)
        Loss in [0, 1] with maximum 1 (for a blob centred in the box).
    """
    if kind not in BLOB_KINDS:
        raise ValueError(f"kind must be one of {BLOB_KINDS}, got {kind!r}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if shape is None and rng is not None:
        shape = draw_blob_shape(kind, rng)
    full = {**_DEFAULT_SHAPES[kind], **(shape or {})}
    if size is None:
        size = 2 * _box_half(radius, full) + 1
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    size = int(size)
    c = (size - 1) / 2.0
    grid = np.arange(size, dtype=np.float64) - c
    dy = grid[:, None] - float(center[0])
    dx = grid[None, :] - float(center[1])
    loss = _profile_map(dy, dx, float(radius), kind, full) / _profile_peak(float(radius), kind, full)
    return np.clip(loss, 0.0, 1.0).astype(np.float32)


def _apply_blob(
    throughput: np.ndarray,
    y: float,
    x: float,
    radius: float,
    depth: float,
    kind: str,
    shape: dict[str, float],
) -> None:
    """Multiply ``throughput`` in place by one blob centred at (y, x) (0-based, sub-pixel)."""
    half = _box_half(radius, shape)
    iy, ix = int(round(y)), int(round(x))
    n_rows, n_cols = throughput.shape
    y0, y1 = max(iy - half, 0), min(iy + half + 1, n_rows)
    x0, x1 = max(ix - half, 0), min(ix + half + 1, n_cols)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - y
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - x
    loss = _profile_map(dy, dx, radius, kind, shape) / _profile_peak(radius, kind, shape)
    throughput[y0:y1, x0:x1] *= (1.0 - depth * np.clip(loss, 0.0, 1.0)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# parameter drawing
# ----------------------------------------------------------------------------------------
def _log_uniform(rng: np.random.Generator, low: float, high: float, n: int | None = None):
    return np.exp(rng.uniform(math.log(low), math.log(high), n))


def _range(value: float | tuple[float, float] | None, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    if isinstance(value, (tuple, list, np.ndarray)):
        low, high = value
        return float(low), float(high)
    return float(value), float(value)


def _draw_params(config: SimulationConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Draw every sequence-level parameter that the config leaves open."""

    def pick(name: str, draw):
        # always draw, so that overriding one parameter leaves the others unchanged
        drawn = draw()
        value = getattr(config, name)
        return drawn if value is None else value

    p: dict[str, Any] = {}
    # counts and rates are for the full 1014x1014 science area; smaller test images get
    # proportionally fewer blobs and artifacts
    area = (int(config.size) - 2 * int(config.border)) ** 2 / 1014.0**2
    p["area_scale"] = float(area)
    p["n_existing"] = int(pick("n_existing", lambda: round(rng.integers(100, 201) * min(area, 1.0))))
    p["noise_sigma"] = float(pick("noise_sigma", lambda: _log_uniform(rng, 0.005, 0.05)))
    p["noise_day_scatter"] = float(rng.uniform(0.05, 0.3))  # lognormal sigma of daily level
    p["flat_residual_sigma"] = float(pick("flat_residual_sigma", lambda: _log_uniform(rng, 0.0005, 0.01)))
    p["shift_sigma"] = float(pick("shift_sigma", lambda: rng.uniform(0.05, 0.6)))
    p["ring_fraction"] = float(pick("ring_fraction", lambda: rng.uniform(0.3, 0.7)))
    p["gradient_amplitude"] = float(pick("gradient_amplitude", lambda: _log_uniform(rng, 0.003, 0.05)))
    p["gradient_order"] = int(rng.integers(1, 4))
    p["gradient_day_jitter"] = float(rng.uniform(0.0, 0.2))  # fraction of the amplitude
    p["earthlight_probability"] = float(pick("earthlight_probability", lambda: rng.uniform(0.0, 0.3)))
    p["earthlight_amplitude"] = [0.005, float(rng.uniform(0.02, 0.1))]
    p["earthlight_columns"] = [float(rng.uniform(120, 260)), float(rng.uniform(20, 80))]
    p["bad_pixel_fraction"] = float(pick("bad_pixel_fraction", lambda: _log_uniform(rng, 0.001, 0.01)))
    p["bad_pixel_mix"] = {"hot": float(rng.uniform(0.3, 0.6)), "dead": float(rng.uniform(0.02, 0.15))}
    p["n_unstable"] = int(pick("n_unstable", lambda: round(rng.integers(10, 201) * area)))
    p["unstable_scatter"] = float(rng.uniform(0.02, 0.3))
    p["cosmic_ray_rate"] = float(pick("cosmic_ray_rate", lambda: _log_uniform(rng, 10.0, 300.0) * area))
    p["cosmic_ray_track_fraction"] = float(rng.uniform(0.1, 0.5))
    p["cosmic_ray_negative_fraction"] = float(rng.uniform(0.02, 0.2))
    p["cosmic_ray_amplitude"] = [0.01, float(rng.uniform(0.1, 1.0))]
    p["snowball_rate"] = float(pick("snowball_rate", lambda: rng.uniform(0.0, 0.5) * area))
    p["snowball_radius"] = [3.0, 8.0]
    p["snowball_amplitude"] = [0.02, float(rng.uniform(0.1, 0.5))]
    p["persistence_rate"] = float(pick("persistence_rate", lambda: rng.uniform(0.0, 0.3) * area))
    p["persistence_sigma"] = [8.0, 60.0]
    p["persistence_amplitude"] = [0.003, float(rng.uniform(0.01, 0.05))]
    p["background"] = float(pick("background", lambda: rng.uniform(0.3, 2.0)))
    p["exptime"] = float(rng.uniform(300.0, 1400.0))
    p["start_mjd"] = float(pick("start_mjd", lambda: rng.uniform(_MJD_2021, _MJD_2026)))
    p["existing_radius"] = [4.0, 12.0]
    p["existing_depth"] = [0.01, 0.30]
    p["new_blob_depth"] = list(_range(config.new_blob_depth, (0.03, 0.15)))
    p["new_blob_radius"] = list(_range(config.new_blob_radius, (5.0, 10.0)))
    p["new_blob_margin"] = 20
    return p


def _draw_radius(rng: np.random.Generator, n: int) -> np.ndarray:
    """Radii 4-12 px skewed small (later-found blobs are mostly smaller; DHB 7.5)."""
    return 4.0 + 8.0 * rng.beta(1.2, 3.5, n)


def _draw_depth(rng: np.random.Generator, n: int) -> np.ndarray:
    """Central losses 1-30 %, log-uniform with extra weight on weak blobs."""
    u = rng.uniform(0.0, 1.0, n) ** 1.6
    return np.exp(math.log(0.01) + u * (math.log(0.30) - math.log(0.01)))


def _draw_blobs(config: SimulationConfig, p: dict[str, Any], rng: np.random.Generator):
    """The blob catalogue: existing blobs and the new ones with their day of appearance."""
    from astropy.table import Table

    size, border = int(config.size), int(config.border)
    n_old = p["n_existing"]
    radius = _draw_radius(rng, n_old)
    depth = _draw_depth(rng, n_old)
    lo = border + radius * 0.5
    hi = size - 1 - border - radius * 0.5
    x = rng.uniform(lo, hi)
    y = rng.uniform(lo, hi)
    day = -rng.integers(1, 4000, n_old)

    new_days = sorted(int(d) for d in config.new_blob_days)
    if config.new_blob_rate > 0 and config.n_days > 1:
        counts = rng.poisson(config.new_blob_rate, int(config.n_days) - 1)
        new_days += [d + 1 for d in np.repeat(np.arange(len(counts)), counts).tolist()]
        new_days.sort()
    n_new = len(new_days)
    r_lo, r_hi = p["new_blob_radius"]
    d_lo, d_hi = p["new_blob_depth"]
    new_radius = rng.uniform(r_lo, r_hi, n_new)
    new_depth = np.exp(rng.uniform(math.log(d_lo), math.log(d_hi), n_new))
    new_x = np.empty(n_new)
    new_y = np.empty(n_new)
    margin = border + p["new_blob_margin"]
    px, py, pr = list(x), list(y), list(radius)
    for i in range(n_new):
        m = max(margin, border + new_radius[i] + 5)
        for _attempt in range(200):  # keep new blobs clear of other blobs (typical case)
            cx, cy = rng.uniform(m, size - 1 - m, 2)
            dist = np.hypot(np.asarray(px) - cx, np.asarray(py) - cy)
            if np.all(dist > np.asarray(pr) + new_radius[i] + 3):
                break
        new_x[i], new_y[i] = cx, cy
        px.append(cx)
        py.append(cy)
        pr.append(new_radius[i])

    all_radius = np.concatenate([radius, new_radius])
    n = n_old + n_new
    kinds = np.where(rng.uniform(0, 1, n) < p["ring_fraction"], "ring", "disc")
    shapes = [draw_blob_shape(str(k), rng) for k in kinds]
    table = Table()
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["x"] = np.concatenate([x, new_x]).astype(np.float64)
    table["y"] = np.concatenate([y, new_y]).astype(np.float64)
    table["radius"] = all_radius.astype(np.float64)
    table["depth"] = np.concatenate([depth, new_depth]).astype(np.float64)
    table["profile"] = kinds.astype("U4")
    table["day"] = np.concatenate([day, np.asarray(new_days, dtype=np.int64)]).astype(np.int64)
    for key in ("axis_ratio", "angle", "edge", "dip_radius", "dip_width", "dip_depth", "dome"):
        table[key] = np.array([s[key] for s in shapes], dtype=np.float64)
    table["x"].unit = table["y"].unit = table["radius"].unit = "pix"
    table["x"].description = "0-based column of the unshifted blob centre"
    table["y"].description = "0-based row of the unshifted blob centre"
    table["depth"].description = "fractional throughput loss at the profile peak"
    table["day"].description = "day of appearance (< 0: before the sequence)"
    table.meta["seed"] = p.get("seed")
    return table


def _shape_of(row) -> dict[str, float]:
    return {
        k: float(row[k])
        for k in ("axis_ratio", "angle", "edge", "dip_radius", "dip_width", "dip_depth", "dome")
    }


# ----------------------------------------------------------------------------------------
# image components
# ----------------------------------------------------------------------------------------
def _legendre_basis(n: int, order: int) -> np.ndarray:
    """Legendre polynomials P_0..P_order on [-1, 1] sampled at n points, shape (order+1, n)."""
    t = np.linspace(-1.0, 1.0, n)
    return np.polynomial.legendre.legvander(t, order).T


def _illumination(coeffs: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Smooth illumination 1 + sum_ij c_ij P_i(row) P_j(col) (c_00 = 0)."""
    return (1.0 + basis.T @ coeffs @ basis).astype(np.float32)


def _add_cosmic_rays(
    image: np.ndarray, rng: np.random.Generator, p: dict[str, Any], valid: tuple[int, int]
) -> int:
    """Add cosmic-ray residuals (single pixels and short tracks) in place; return the count."""
    n = int(rng.poisson(p["cosmic_ray_rate"]))
    if n == 0:
        return 0
    lo, hi = valid
    lengths = np.where(rng.uniform(0, 1, n) < p["cosmic_ray_track_fraction"], rng.integers(2, 16, n), 1)
    a_lo, a_hi = p["cosmic_ray_amplitude"]
    amp = _log_uniform(rng, a_lo, a_hi, n)
    sign = np.where(rng.uniform(0, 1, n) < p["cosmic_ray_negative_fraction"], -1.0, 1.0)
    y0 = rng.uniform(lo, hi, n)
    x0 = rng.uniform(lo, hi, n)
    theta = rng.uniform(0, 2 * math.pi, n)
    idx = np.repeat(np.arange(n), lengths)
    step = np.arange(idx.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.clip(np.round(y0[idx] + step * np.sin(theta[idx])).astype(np.intp), lo, hi - 1)
    cols = np.clip(np.round(x0[idx] + step * np.cos(theta[idx])).astype(np.intp), lo, hi - 1)
    # deposits fluctuate along the track
    values = (sign * amp)[idx] * rng.uniform(0.5, 1.0, idx.size)
    np.add.at(image, (rows, cols), values.astype(np.float32))
    return n


def _add_round(image: np.ndarray, y: float, x: float, amp: float, profile) -> None:
    """Add ``amp * profile(dy, dx)`` in a local box (profile returns values ~0 beyond reach)."""
    reach = profile.reach
    iy, ix = int(round(y)), int(round(x))
    y0, y1 = max(iy - reach, 0), min(iy + reach + 1, image.shape[0])
    x0, x1 = max(ix - reach, 0), min(ix + reach + 1, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - y
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - x
    image[y0:y1, x0:x1] += (amp * profile(dy, dx)).astype(np.float32)


class _Snowball:
    """Bright round residual: a flat-topped disc with a soft edge."""

    def __init__(self, radius: float) -> None:
        self.radius = radius
        self.reach = int(math.ceil(radius + 4))

    def __call__(self, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        r = np.hypot(dy, dx)
        return 0.5 * erfc((r - self.radius) / (0.15 * self.radius * _SQRT2 + 0.5))


class _Persistence:
    """Bright diffuse patch: an elliptical Gaussian."""

    def __init__(self, sigma_y: float, sigma_x: float, angle: float) -> None:
        self.sy, self.sx, self.angle = sigma_y, sigma_x, angle
        self.reach = int(math.ceil(3.5 * max(sigma_x, sigma_y)))

    def __call__(self, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        a = (dx * c + dy * s) / self.sx
        b = (-dx * s + dy * c) / self.sy
        return np.exp(-0.5 * (a * a + b * b))


@dataclass
class DetectorFeatures:
    """Fixed detector features of a sequence: they do not move with the CSM.

    Attributes
    ----------
    gain : ndarray, float32, (size, size)
        Multiplicative response: white flat-field residual, cold pixels, NaN for dead pixels.
    offset : ndarray, float32, (size, size)
        Additive signal of hot pixels.
    bad_pixels, hot_pixels, unstable_pixels : ndarray, bool, (size, size)
        The pixel masks.
    unstable_rows, unstable_cols : ndarray
        Indices of the unstable pixels.
    unstable_base : ndarray
        Mean response of each unstable pixel.
    gradient : ndarray
        Legendre coefficients of the sequence's illumination gradient.
    """

    gain: np.ndarray
    offset: np.ndarray
    bad_pixels: np.ndarray
    hot_pixels: np.ndarray
    unstable_pixels: np.ndarray
    unstable_rows: np.ndarray
    unstable_cols: np.ndarray
    unstable_base: np.ndarray
    gradient: np.ndarray

    def apply(self, img: np.ndarray, rng: np.random.Generator, p: dict[str, Any]) -> None:
        """Apply gain, hot-pixel offset and the day's unstable-pixel responses in place."""
        img *= self.gain
        img += self.offset
        img[self.unstable_rows, self.unstable_cols] *= (
            self.unstable_base * np.exp(rng.normal(0.0, p["unstable_scatter"], self.unstable_rows.size))
        ).astype(np.float32)


def draw_detector(p: dict[str, Any], size: int, rng: np.random.Generator) -> DetectorFeatures:
    """Draw the fixed detector features of a sequence (records ``p["gradient_coefficients"]``)."""
    n_pix = size * size
    n_bad = int(round(p["bad_pixel_fraction"] * n_pix))
    flat_idx = rng.choice(n_pix, n_bad + int(p["n_unstable"]), replace=False)
    bad_idx, unstable_idx = flat_idx[:n_bad], flat_idx[n_bad:]
    kind_u = rng.uniform(0, 1, n_bad)
    mix = p["bad_pixel_mix"]
    is_dead = kind_u < mix["dead"]
    is_hot = (~is_dead) & (kind_u < mix["dead"] + mix["hot"])
    is_cold = ~(is_dead | is_hot)
    # multiplicative response of each pixel: flat-field residuals (fixed pattern) ...
    gain = (1.0 + p["flat_residual_sigma"] * rng.standard_normal(n_pix)).astype(np.float32)
    offset = np.zeros(n_pix, dtype=np.float32)  # additive signal (hot pixels)
    gain[bad_idx[is_cold]] = rng.uniform(0.0, 0.8, int(is_cold.sum()))
    offset[bad_idx[is_hot]] = _log_uniform(rng, 0.05, 20.0, int(is_hot.sum()))
    gain[bad_idx[is_dead]] = np.nan
    masks = np.zeros((3, n_pix), dtype=bool)
    masks[0, bad_idx] = True
    masks[1, bad_idx[is_hot]] = True
    masks[2, unstable_idx] = True
    unstable_rows, unstable_cols = np.unravel_index(unstable_idx, (size, size))
    unstable_base = rng.uniform(0.7, 1.5, unstable_idx.size)
    order = p["gradient_order"]
    coeffs = rng.normal(0.0, 1.0, (order + 1, order + 1))
    coeffs[0, 0] = 0.0
    coeffs *= p["gradient_amplitude"] / max(np.abs(coeffs).sum(), 1e-12)
    p["gradient_coefficients"] = coeffs.tolist()
    bad, hot, unstable = masks.reshape(3, size, size)
    return DetectorFeatures(
        gain=gain.reshape(size, size),
        offset=offset.reshape(size, size),
        bad_pixels=bad,
        hot_pixels=hot,
        unstable_pixels=unstable,
        unstable_rows=unstable_rows,
        unstable_cols=unstable_cols,
        unstable_base=unstable_base,
        gradient=coeffs,
    )


def mask_border(img: np.ndarray, border: int) -> None:
    """Set the ``border``-pixel frame of ``img`` to NaN in place (the reference pixels)."""
    if border:
        img[:border, :] = np.nan
        img[-border:, :] = np.nan
        img[:, :border] = np.nan
        img[:, -border:] = np.nan


@dataclass
class Transients:
    """What `add_transients` put into one image: positions (row, col) and sizes (px)."""

    n_cosmic_rays: int
    snowballs: list[tuple[float, float, float]]
    persistence: list[tuple[float, float, float]]


def add_transients(
    img: np.ndarray, rng: np.random.Generator, p: dict[str, Any], valid: tuple[int, int]
) -> Transients:
    """Add the day's cosmic-ray residuals, snowballs and persistence patches in place."""
    n_cr = _add_cosmic_rays(img, rng, p, valid)
    snowballs = []
    for _ in range(int(rng.poisson(p["snowball_rate"]))):
        sb = _Snowball(float(rng.uniform(*p["snowball_radius"])))
        y, x = rng.uniform(valid[0], valid[1], 2)
        _add_round(img, y, x, float(rng.uniform(*p["snowball_amplitude"])), sb)
        snowballs.append((float(y), float(x), sb.radius))
    persistence = []
    for _ in range(int(rng.poisson(p["persistence_rate"]))):
        sig_low, sig_high = p["persistence_sigma"]
        sig = rng.uniform(sig_low, sig_high, 2)
        pp = _Persistence(float(sig[0]), float(sig[1]), float(rng.uniform(0, math.pi)))
        y, x = rng.uniform(valid[0], valid[1], 2)
        _add_round(img, y, x, float(_log_uniform(rng, *p["persistence_amplitude"])), pp)
        persistence.append((float(y), float(x), float(2.0 * max(sig))))
    return Transients(n_cosmic_rays=n_cr, snowballs=snowballs, persistence=persistence)


# ----------------------------------------------------------------------------------------
# the sequence
# ----------------------------------------------------------------------------------------
def simulate_sequence(config: SimulationConfig | None = None) -> Simulation:
    """Simulate a daily sequence of CSM-monitor blob images with ground truth.

    Parameters
    ----------
    config : SimulationConfig, optional
        What to simulate; default `SimulationConfig()` with a random seed.

    Returns
    -------
    Simulation
        Images, times, shifts, noise levels, blob catalogue, parameters and pixel masks.

    Raises
    ------
    ValueError
        If the configuration is invalid (the message names the argument).
    """
    config = dataclasses.replace(config) if config is not None else SimulationConfig()
    config.validate()
    if config.seed is not None:
        seed = int(config.seed)
    else:
        entropy = np.random.SeedSequence().entropy  # drawn from the OS: a (128-bit) int
        assert isinstance(entropy, int)
        seed = entropy % (2**63)
    n_days, size, border = int(config.n_days), int(config.size), int(config.border)
    # independent streams, so e.g. the blob population does not change with n_days
    s_par, s_blob, s_det, s_day = np.random.SeedSequence(seed).spawn(4)
    rng_par = np.random.default_rng(s_par)
    p = _draw_params(config, rng_par)
    p["seed"] = seed
    p.update(
        n_days=n_days,
        size=size,
        border=border,
        new_blob_days_requested=[int(d) for d in config.new_blob_days],
        new_blob_rate=float(config.new_blob_rate),
        simulator_version=__version__,
    )

    blobs = _draw_blobs(config, p, np.random.default_rng(s_blob))

    # --- fixed detector features (do not move with the CSM) ---
    detector = draw_detector(p, size, np.random.default_rng(s_det))
    basis = _legendre_basis(size, p["gradient_order"])
    coeffs0 = detector.gradient
    cols = np.arange(size, dtype=np.float64)

    # --- daily quantities ---
    rng_day = np.random.default_rng(s_day)
    mjd = p["start_mjd"] + np.arange(n_days) + rng_day.uniform(-0.1, 0.1, n_days)
    mjd[0] = p["start_mjd"]
    shifts = rng_day.normal(0.0, p["shift_sigma"], (n_days, 2))
    noise = p["noise_sigma"] * np.exp(rng_day.normal(0.0, p["noise_day_scatter"], n_days))

    images = np.empty((n_days, size, size), dtype=np.float32)
    valid = (border, size - border)
    kinds = [str(k) for k in blobs["profile"]]
    shapes = [_shape_of(row) for row in blobs]
    days = np.asarray(blobs["day"])
    bx, by = np.asarray(blobs["x"], dtype=float), np.asarray(blobs["y"], dtype=float)
    bradius, bdepth = np.asarray(blobs["radius"], dtype=float), np.asarray(blobs["depth"], dtype=float)
    daily: list[dict] = []
    for d in range(n_days):
        dy, dx = shifts[d]
        throughput = np.ones((size, size), dtype=np.float32)
        for i in np.flatnonzero(days <= d):
            _apply_blob(throughput, by[i] + dy, bx[i] + dx, bradius[i], bdepth[i], kinds[i], shapes[i])
        jitter = (
            rng_day.normal(0.0, p["gradient_day_jitter"] * p["gradient_amplitude"], coeffs0.shape)
            / coeffs0.size
        )
        jitter[0, 0] = 0.0
        illum = _illumination(coeffs0 + jitter, basis)
        earthlight = bool(rng_day.uniform() < p["earthlight_probability"])
        e_amp = 0.0
        if earthlight:
            e_amp = float(_log_uniform(rng_day, *p["earthlight_amplitude"]))
            c0, width = p["earthlight_columns"]
            illum *= (1.0 + e_amp * 0.5 * erfc((cols - c0) / (width * _SQRT2)))[None, :].astype(np.float32)
        img = illum * throughput
        img *= 1.0 + np.float32(noise[d]) * rng_day.standard_normal((size, size), dtype=np.float32)
        detector.apply(img, rng_day, p)
        transients = add_transients(img, rng_day, p, valid)
        mask_border(img, border)
        images[d] = img
        daily.append(
            {
                "earthlight": e_amp,
                "cosmic_rays": transients.n_cosmic_rays,
                "snowballs": len(transients.snowballs),
                "persistence": len(transients.persistence),
            }
        )

    return Simulation(
        images=images,
        mjd=mjd,
        shifts=shifts,
        noise=noise,
        blobs=blobs,
        params=jsonable(p),
        bad_pixels=detector.bad_pixels,
        unstable_pixels=detector.unstable_pixels,
        hot_pixels=detector.hot_pixels,
        daily=daily,
    )


# ----------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------
def image_filename(day: int) -> str:
    """File name of the blob image of ``day``."""
    return f"csm_day{day:03d}_blob.fits"


def flt_filename(day: int) -> str:
    """File name of the flt-style file of ``day``."""
    return f"csm_day{day:03d}_flt.fits"


def _observation_header(sim: Simulation, day: int):
    """WFC3-like primary header keywords of one day."""
    from astropy.io import fits
    from astropy.time import Time

    t = Time(float(sim.mjd[day]), format="mjd", scale="utc")
    iso = t.isot
    hdr = fits.Header()
    hdr["TELESCOP"] = ("HST", "telescope used to acquire data")
    hdr["INSTRUME"] = ("WFC3", "identifier for instrument used to acquire data")
    hdr["DETECTOR"] = ("IR", "detector in use: UVIS or IR")
    hdr["FILTER"] = ("F153M", "element selected from filter wheel")
    hdr["OBSTYPE"] = ("IMAGING", "observation type")
    hdr["TARGNAME"] = ("DARK-EARTH", "dark-Earth airglow (CSM monitor)")
    hdr["DATE-OBS"] = (iso[:10], "UT date of start of observation (yyyy-mm-dd)")
    hdr["TIME-OBS"] = (iso[11:19], "UT time of start of observation (hh:mm:ss)")
    hdr["EXPSTART"] = (float(sim.mjd[day]), "exposure start time (Modified Julian Date)")
    hdr["EXPTIME"] = (float(sim.params["exptime"]), "exposure duration (seconds)")
    hdr["EXPEND"] = (
        float(sim.mjd[day]) + float(sim.params["exptime"]) / 86400.0,
        "exposure end time (Modified Julian Date)",
    )
    hdr["ORIGIN"] = ("blobwatch simulate", "simulated CSM-monitor data")
    hdr["SIMULATD"] = (True, "this image is simulated")
    hdr["SIMVERS"] = (__version__, "blobwatch version")
    hdr["SIMSEED"] = (int(sim.params["seed"]), "simulation seed")
    hdr["SIMDAY"] = (int(day), "day index in the simulated sequence")
    hdr["SIMDX"] = (float(sim.shifts[day, 1]), "[pix] blob-pattern shift along x (columns)")
    hdr["SIMDY"] = (float(sim.shifts[day, 0]), "[pix] blob-pattern shift along y (rows)")
    hdr["SIMNOISE"] = (float(sim.noise[day]), "per-pixel noise sigma / background")
    return hdr


def _write_hdul(path: Path, hdul) -> None:
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True)


def write_simulation(sim: Simulation, outdir: str | os.PathLike, *, flt: bool = False) -> list[Path]:
    """Write a simulation: daily FITS images, truth tables and parameters.

    Parameters
    ----------
    sim : Simulation
        Output of `simulate_sequence`.
    outdir : path
        Output directory (created if needed).  Layout: ``csm_day{DAY:03d}_blob.fits``,
        ``truth_blobs.ecsv``, ``truth_shifts.ecsv``, ``simulation.json`` and, with ``flt``,
        ``csm_day{DAY:03d}_flt.fits``.
    flt : bool
        Also write WFC3 flt-style files (SCI/ERR/DQ, 1014x1014 science area, e-/s).

    Returns
    -------
    list of Path
        Every file written.
    """
    from astropy.io import fits
    from astropy.table import Table

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    border = int(sim.params["border"])
    size = int(sim.params["size"])
    names = []
    for day in range(sim.n_days):
        hdr = _observation_header(sim, day)
        hdr["BUNIT"] = ("UNITLESS", "blob image: background normalized to ~1")
        path = out / image_filename(day)
        _write_hdul(path, fits.HDUList([fits.PrimaryHDU(sim.images[day], header=hdr)]))
        written.append(path)
        names.append(path.name)
        if flt:
            written.append(_write_flt(sim, day, out / flt_filename(day), border, size))

    blobs = sim.blobs.copy(copy_data=True)
    blobs.meta["seed"] = int(sim.params["seed"])
    blobs.meta["comments"] = [
        "blobwatch simulated blob catalogue: x, y are 0-based (x = column, y = row),",
        "unshifted; the blob pattern of day d is shifted by (dx, dy) of truth_shifts.ecsv.",
        "DS9/FITS 1-based coordinates are (x + 1, y + 1).",
    ]
    path = out / "truth_blobs.ecsv"
    with atomic_path(path) as tmp:
        blobs.write(tmp, format="ascii.ecsv", overwrite=True)
    written.append(path)

    shifts = Table()
    shifts["day"] = np.arange(sim.n_days, dtype=np.int64)
    shifts["file"] = names
    shifts["mjd"] = np.asarray(sim.mjd, dtype=np.float64)
    shifts["dx"] = np.asarray(sim.shifts[:, 1], dtype=np.float64)
    shifts["dy"] = np.asarray(sim.shifts[:, 0], dtype=np.float64)
    shifts["noise"] = np.asarray(sim.noise, dtype=np.float64)
    for key in ("earthlight", "cosmic_rays", "snowballs", "persistence"):
        shifts[key] = [d[key] for d in sim.daily] if sim.daily else np.zeros(sim.n_days)
    shifts["dx"].unit = shifts["dy"].unit = "pix"
    shifts.meta["seed"] = int(sim.params["seed"])
    path = out / "truth_shifts.ecsv"
    with atomic_path(path) as tmp:
        shifts.write(tmp, format="ascii.ecsv", overwrite=True)
    written.append(path)

    path = out / "simulation.json"
    write_text_atomic(path, json.dumps(sim.params, indent=2, sort_keys=True) + "\n")
    written.append(path)
    return written


def _write_flt(sim: Simulation, day: int, path: Path, border: int, size: int) -> Path:
    """One WFC3 flt-style file: SCI (e-/s), ERR (e-/s), DQ, without the border."""
    from astropy.io import fits

    sl = slice(border, size - border)
    background = float(sim.params["background"])
    sci = sim.images[day][sl, sl] * np.float32(background)
    finite = np.isfinite(sci)
    dq = np.zeros(sci.shape, dtype=np.int16)
    dq[sim.bad_pixels[sl, sl] & ~sim.hot_pixels[sl, sl]] |= DQ_BAD
    dq[sim.hot_pixels[sl, sl]] |= DQ_HOT
    dq[sim.unstable_pixels[sl, sl]] |= DQ_UNSTABLE
    dq[~finite] |= DQ_BAD
    dq[_known_blob_mask(sim)[sl, sl]] |= DQ_BLOB
    err = np.full(sci.shape, np.float32(sim.noise[day] * background), dtype=np.float32)
    sci = np.where(finite, sci, np.float32(0.0)).astype(np.float32)
    primary = fits.PrimaryHDU(header=_observation_header(sim, day))
    primary.header["FILETYPE"] = ("SCI", "type of data found in data file")
    primary.header["NEXTEND"] = (3, "number of extensions")
    hdus = [primary]
    for name, data, unit in (
        ("SCI", sci, "ELECTRONS/S"),
        ("ERR", err, "ELECTRONS/S"),
        ("DQ", dq, "UNITLESS"),
    ):
        hdu = fits.ImageHDU(data, name=name, ver=1)
        hdu.header["BUNIT"] = unit
        hdu.header["LTV1"] = (-float(border), "offset in X to subsection start")
        hdu.header["LTV2"] = (-float(border), "offset in Y to subsection start")
        hdus.append(hdu)
    _write_hdul(path, fits.HDUList(hdus))
    return path


def _known_blob_mask(sim: Simulation, threshold: float = 0.3) -> np.ndarray:
    """Pixels where a pre-sequence blob's loss exceeds ``threshold`` of its peak (DQ 512)."""
    size = int(sim.params["size"])
    mask_map = np.ones((size, size), dtype=np.float32)
    for row in sim.blobs[sim.blobs["day"] < 0]:
        # unit depth: pixels with loss profile > threshold end up below 1 - threshold
        _apply_blob(
            mask_map,
            float(row["y"]),
            float(row["x"]),
            float(row["radius"]),
            1.0,
            str(row["profile"]),
            _shape_of(row),
        )
    return mask_map < 1.0 - threshold
