"""Sky-like test sequences: what the detector does *not* assume, with ground truth.

The training simulator (`blobwatch.simulate`) moves the blob pattern by sub-pixel translations,
draws white noise and keeps new blobs clear of edges and other blobs.  The regression suite must
not share those assumptions, so this module renders sequences in which, drawn per sequence and
per case (see ``docs/regression.md`` for every range):

- the current image's blob pattern is offset by 0-3 px, rotated, scaled and defocused (blurred)
  relative to the references (a third of the sequences keep to translations; the others draw
  their largest rotation and scale change log-uniformly up to 0.5 deg and 0.2 %);
- the noise is white, correlated pixel to pixel, or 1/f-like;
- a structured flat-field residual (fixed, plus a part that changed) and an illumination
  gradient that changed since the references;
- a new blob lies anywhere: next to the 5-px border, on a subframe corner, on top of or touching
  an existing blob, beside a snowball or persistence patch; ring, disc or real-stamp shaped (the
  5 real stamps held out of training, only); its depth is set for a matched-filter S/N of about
  3 to 50.

Blobs are injected into the RAW current image (the mirror's throughput map), before any
difference or preparation.  One sequence gives ``n_references`` reference images (the median
stack) and ``cases`` current images, half of them with one new blob, each with its own draws.

Seeds of the three uses are kept apart here (`split_seeds`): the regression suite, its
calibration split, and training data for detectors; the standard training datasets
(`blobwatch.dataset.TRAIN_SEEDS`, ``TEST_SEEDS``) lie outside all three.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from blobwatch import simulate as sim
from blobwatch.dataset import HELDOUT_STAMPS, load_stamps, taper_stamp
from blobwatch.stats import jsonable

__all__ = [
    "PLACEMENTS",
    "PROFILES",
    "SPLIT_SEEDS",
    "VariationConfig",
    "VariedCase",
    "VariedSequence",
    "simulate_varied_sequence",
    "split_seeds",
    "training_stamps",
    "transform_points",
]

#: First seed and capacity of each split.  Ranges never overlap (tested), and none holds a
#: seed of the standard training datasets.
SPLIT_SEEDS: dict[str, tuple[int, int]] = {
    "suite": (910_000, 10_000),
    "calibration": (920_000, 10_000),
    "training": (930_000, 60_000),
}

#: Where a new blob is put, and how often.
PLACEMENTS: dict[str, float] = {
    "anywhere": 0.40,
    "edge": 0.15,
    "corner": 0.10,
    "overlap": 0.15,
    "touching": 0.10,
    "artifact": 0.10,
}

#: Profile of a new blob, and how often.
PROFILES: dict[str, float] = {"ring": 0.35, "disc": 0.35, "stamp": 0.30}

#: Noise models of a sequence, equally likely.
NOISE_MODELS = ("white", "correlated", "1/f")


def training_stamps() -> tuple[int, ...]:
    """The real stamps a detector may be trained on: all but the 5 held out for the suite."""
    return tuple(k for k in sorted(load_stamps()) if k not in HELDOUT_STAMPS)


def split_seeds(split: str, n: int) -> list[int]:
    """The first ``n`` sequence seeds of ``split`` ('suite', 'calibration' or 'training')."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    first, capacity = SPLIT_SEEDS[split]
    if not 0 <= n <= capacity:
        raise ValueError(f"split {split!r} holds at most {capacity} sequences, {n} asked")
    return list(range(first, first + n))


@dataclass(frozen=True)
class VariationConfig:
    """Ranges of what varies (all drawn per sequence, then per case within the sequence's range).

    Attributes
    ----------
    size, border : int
        Image side and width of the non-finite border (1024 and 5 for WFC3/IR).
    n_references : int
        Images in the reference median (the seed's 30).
    cases : int
        Current images per sequence; the first half get new blobs, the rest none.
    new_blobs : int
        New blobs in each image that gets any (1 for the suite; more for training images).
    max_offset : float
        Largest offset (px) of the current blob pattern; each case draws 0..max uniformly.
    max_rotation_deg, max_scale, max_blur : float
        Largest rotation (deg), fractional scale change and defocus (Gaussian sigma, px) of the
        current blob pattern; a sequence draws its own maximum in 0..these.
    snr_range : (float, float)
        Target matched-filter S/N of new blobs (log-uniform).
    max_depth : float
        Central throughput loss is capped here (blobs lose at most ~30 %).
    stamps : tuple of int
        Real stamps used for stamp-shaped blobs: the 5 held out of training for the suite and its
        calibration split; training images must use the other 15 (`training_stamps`).
    """

    size: int = 1024
    border: int = 5
    n_references: int = 30
    cases: int = 10
    new_blobs: int = 1
    max_offset: float = 3.0
    max_rotation_deg: float = 0.5
    max_scale: float = 0.002
    max_blur: float = 1.0
    snr_range: tuple[float, float] = (3.0, 50.0)
    max_depth: float = 0.30
    stamps: tuple[int, ...] = tuple(HELDOUT_STAMPS)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.size < 2 * self.border + 128:
            raise ValueError(f"size must be >= 2*border + 128, got {self.size}")
        if self.n_references < 1 or self.cases < 1 or self.new_blobs < 1:
            raise ValueError("n_references, cases and new_blobs must be >= 1")
        for name in ("max_offset", "max_rotation_deg", "max_scale", "max_blur", "max_depth"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        lo, hi = self.snr_range
        if not 0 < lo <= hi:
            raise ValueError(f"snr_range must satisfy 0 < low <= high, got {self.snr_range}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        d = asdict(self)
        d["snr_range"] = list(self.snr_range)
        d["stamps"] = list(self.stamps)
        return d


@dataclass
class VariedCase:
    """One current image of a sequence and its truth.

    Attributes
    ----------
    index : int
        Case number within the sequence.
    image : ndarray, float32
        The raw current blob image.
    mjd : float
        Its observation time (after every reference).
    transform : dict
        ``dy``, ``dx`` (px), ``offset`` (px), ``rotation_deg``, ``scale``, ``blur`` (px),
        ``gradient_change`` and ``flat_change`` of this image.
    blobs : list of dict
        The new blobs (none for a quiet image), each with ``x``, ``y`` (0-based column and row in the current image), ``radius``,
        ``depth``, ``profile``, ``stamp`` (id or None), ``placement``, ``target_snr``,
        ``signal_energy`` (sum of the squared unit-depth signal), ``noise_gain`` (how much more
        noise a matched filter sees under the sequence's noise than under white noise), ``edge_distance`` and
        ``neighbour`` (distance to the nearest existing blob, in units of their two radii).
    artifacts : list of dict
        Snowballs and persistence patches of the current image (``kind``, ``x``, ``y``, ``size``).
    noise : float
        Per-pixel noise sigma of the current image (fraction of the background).
    templates : list of (ndarray, (slice, slice))
        Each new blob's unit-depth signal in the image and where it lies (the template of a
        matched filter that knows the blob exactly).
    """

    index: int
    image: np.ndarray
    mjd: float
    transform: dict[str, float]
    blobs: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    noise: float
    templates: list[tuple[np.ndarray, tuple[slice, slice]]] = field(default_factory=list, repr=False)

    @property
    def blob(self) -> dict[str, Any] | None:
        """The first new blob, or None for a quiet image."""
        return self.blobs[0] if self.blobs else None


@dataclass
class VariedSequence:
    """References and current images of one sequence.

    Attributes
    ----------
    seed : int
    references : ndarray, float32, (n_references, size, size)
    reference_mjd : ndarray
    reference_noise : ndarray
        Per-pixel noise sigma of each reference.
    existing : dict of ndarray
        ``x``, ``y``, ``radius``, ``depth`` of the blobs on the mirror (reference frame).
    cases : list of VariedCase
    params : dict
        The sequence's draws (noise model, flat structure, transform maxima, simulator params).
    """

    seed: int
    references: np.ndarray
    reference_mjd: np.ndarray
    reference_noise: np.ndarray
    existing: dict[str, np.ndarray]
    cases: list[VariedCase]
    params: dict[str, Any]


# --------------------------------------------------------------------------------------------
# fields
# --------------------------------------------------------------------------------------------


def _frequency2(shape: tuple[int, int]) -> np.ndarray:
    fy = sp_fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = sp_fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return fy * fy + fx * fx


def _filtered_field(rng: np.random.Generator, shape: tuple[int, int], transfer: np.ndarray) -> np.ndarray:
    """White noise filtered by ``transfer`` (rfft2 layout), scaled to unit variance."""
    white = rng.standard_normal(shape, dtype=np.float32)
    field = sp_fft.irfft2(sp_fft.rfft2(white) * transfer, s=shape).astype(np.float32)
    std = float(field.std())
    return field / std if std > 0 else field


def noise_power(model: dict[str, Any], f2: np.ndarray) -> np.ndarray | None:
    """Power spectrum (rfft2 layout, mean 1) of the unit-variance noise of ``model``; None for white."""
    kind = model["kind"]
    if kind == "white":
        return None
    if kind == "correlated":
        power = np.exp(-4.0 * math.pi**2 * model["sigma"] ** 2 * f2)
        return power / power.mean()
    if kind == "1/f":
        f0 = 1.0 / f2.shape[0]  # as in noise_field (square images: 1 / max(shape))
        pink = (f2 + f0 * f0) ** (-model["alpha"] / 2.0)
        w = float(model["fraction"])
        return (1.0 - w) + w * pink / pink.mean()
    raise ValueError(f"unknown noise model {kind!r}")


def noise_field(
    rng: np.random.Generator, shape: tuple[int, int], model: dict[str, Any], f2: np.ndarray | None = None
) -> np.ndarray:
    """Unit-variance noise of one image: white, correlated pixel to pixel, or 1/f-like plus white.

    Parameters
    ----------
    model : dict
        ``kind`` ('white', 'correlated', '1/f'); 'correlated' needs ``sigma`` (px, Gaussian
        correlation), '1/f' needs ``alpha`` (power-spectrum slope) and ``fraction`` (variance
        share of the 1/f part).
    f2 : ndarray, optional
        Squared spatial frequencies in rfft2 layout (computed when not given).
    """
    kind = model["kind"]
    if kind == "white":
        return rng.standard_normal(shape, dtype=np.float32)
    f2 = _frequency2(shape) if f2 is None else f2
    if kind == "correlated":
        return _filtered_field(rng, shape, np.exp(-2.0 * math.pi**2 * model["sigma"] ** 2 * f2))
    if kind == "1/f":
        f0 = 1.0 / max(shape)
        pink = _filtered_field(rng, shape, (f2 + f0 * f0) ** (-model["alpha"] / 4.0))
        w = float(model["fraction"])
        return math.sqrt(1.0 - w) * rng.standard_normal(shape, dtype=np.float32) + math.sqrt(w) * pink
    raise ValueError(f"unknown noise model {kind!r}")


def matched_filter_gain(
    template: np.ndarray, slices: tuple[slice, slice], shape: tuple[int, int], power: np.ndarray | None
) -> float:
    """How much more noise a filter matched to ``template`` sees under noise of spectrum ``power``
    than under white noise of the same per-pixel variance (1 for white noise)."""
    if power is None:
        return 1.0
    canvas = np.zeros(shape, dtype=np.float64)
    canvas[slices] = template
    spectrum = np.abs(sp_fft.rfft2(canvas)) ** 2
    return float(math.sqrt((power * spectrum).sum() / max(spectrum.sum(), 1e-300)))


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, f2: np.ndarray | None = None
) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``scale`` (px)."""
    f2 = _frequency2(shape) if f2 is None else f2
    return _filtered_field(rng, shape, np.exp(-2.0 * math.pi**2 * scale**2 * f2))


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


def transform_points(
    y: np.ndarray, x: np.ndarray, transform: dict[str, float], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image positions of mirror positions under a case's transform (rotation and scale about
    the image centre, then the offset)."""
    c = (size - 1) / 2.0
    theta = math.radians(transform["rotation_deg"])
    s = transform["scale"]
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    yy, xx = np.asarray(y, float) - c, np.asarray(x, float) - c
    new_y = c + s * (sin_t * xx + cos_t * yy) + transform["dy"]
    new_x = c + s * (cos_t * xx - sin_t * yy) + transform["dx"]
    return new_y, new_x


def _stamp_profile(stamp: np.ndarray, zoom: float) -> np.ndarray:
    """A real stamp as a peak-1 loss profile: background removed, tapered, lightly smoothed."""
    edge = np.concatenate([stamp[0], stamp[-1], stamp[1:-1, 0], stamp[1:-1, -1]])
    profile = taper_stamp(stamp - np.median(edge))
    profile = ndimage.gaussian_filter(profile, 0.5)
    if zoom != 1.0:
        profile = ndimage.zoom(profile, zoom, order=1)
    profile = np.clip(profile, 0.0, None)
    peak = float(profile.max())
    return (profile / peak).astype(np.float32) if peak > 0 else profile.astype(np.float32)


def _place_patch(
    shape: tuple[int, int], patch: np.ndarray, y: float, x: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``patch`` (its centre at ``((h - 1) / 2, (w - 1) / 2)``) moved to the sub-pixel position
    (y, x): the part inside the image and its slices."""
    pad = 2
    canvas = np.pad(patch, pad)
    cy, cx = (canvas.shape[0] - 1) / 2.0, (canvas.shape[1] - 1) / 2.0
    oy, ox = y - cy, x - cx  # where the canvas's first pixel must go
    y0, x0 = math.floor(oy), math.floor(ox)
    moved = ndimage.shift(canvas, (oy - y0, ox - x0), order=1, mode="constant")
    r0, c0 = max(y0, 0), max(x0, 0)
    r1, c1 = min(y0 + canvas.shape[0], shape[0]), min(x0 + canvas.shape[1], shape[1])
    return moved[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0], (slice(r0, r1), slice(c0, c1))


# --------------------------------------------------------------------------------------------
# the sequence
# --------------------------------------------------------------------------------------------


class _Renderer:
    """Renders the images of one sequence from its drawn parameters."""

    def __init__(self, seed: int, config: VariationConfig) -> None:
        self.config = config
        size, border = config.size, config.border
        s_par, s_blob, s_det, s_var, self.s_day, self.s_case = np.random.SeedSequence(seed).spawn(6)
        sim_config = sim.SimulationConfig(n_days=config.n_references + 1, size=size, border=border, seed=seed)
        p = sim._draw_params(sim_config, np.random.default_rng(s_par))
        p["seed"] = seed
        self.p = p
        table = sim._draw_blobs(sim_config, p, np.random.default_rng(s_blob))
        self.kinds = [str(k) for k in table["profile"]]
        self.shapes = [sim._shape_of(row) for row in table]
        self.existing = {k: np.asarray(table[k], dtype=np.float64) for k in ("x", "y", "radius", "depth")}
        self.detector = sim.draw_detector(p, size, np.random.default_rng(s_det))
        self.basis = sim._legendre_basis(size, p["gradient_order"])
        self.f2 = _frequency2((size, size))
        rng = np.random.default_rng(s_var)
        kind = NOISE_MODELS[int(rng.integers(len(NOISE_MODELS)))]
        model: dict[str, Any] = {"kind": kind}
        if kind == "correlated":
            model["sigma"] = float(rng.uniform(0.5, 1.5))
        elif kind == "1/f":
            model["alpha"] = float(rng.uniform(0.5, 1.5))
            model["fraction"] = float(rng.uniform(0.2, 0.6))
        self.noise_model = model
        self.noise_power = noise_power(model, self.f2)
        flat_scale = float(rng.uniform(3.0, 30.0))
        self.flat_amplitude = float(sim._log_uniform(rng, 0.0005, 0.005))
        self.flat_change = float(rng.uniform(0.0, 0.3))
        self.flat = (1.0 + self.flat_amplitude * smooth_field(rng, (size, size), flat_scale, self.f2)).astype(
            np.float32
        )
        self.flat_scale = flat_scale
        # a third of the sequences keep to translations; the others reach a maximum drawn
        # log-uniformly over two decades below the config's, so small changes are common and
        # the largest are rare (the corner of a 1024-px image moves 6.3 px at 0.5 deg)
        self.max_rotation = _maximum(rng, config.max_rotation_deg)
        self.max_scale = _maximum(rng, config.max_scale)
        self.max_blur = float(rng.uniform(0.0, config.max_blur))
        self.gradient_change = float(rng.uniform(0.0, 1.0))
        self.stamps = {k: v for k, v in load_stamps().items() if k in config.stamps}
        if not self.stamps:
            raise ValueError(f"none of the stamps {config.stamps} is in the stamp file")

    def params(self) -> dict[str, Any]:
        return {
            "noise_model": self.noise_model,
            "flat_structure": {
                "scale_px": self.flat_scale,
                "amplitude": self.flat_amplitude,
                "changed_fraction": self.flat_change,
            },
            "max_rotation_deg": self.max_rotation,
            "max_scale": self.max_scale,
            "max_blur": self.max_blur,
            "max_gradient_change": self.gradient_change,
            "simulator": jsonable(self.p),
        }

    def throughput(self, pos_y: np.ndarray, pos_x: np.ndarray) -> np.ndarray:
        size = self.config.size
        t = np.ones((size, size), dtype=np.float32)
        ex = self.existing
        for i in range(len(pos_y)):
            sim._apply_blob(
                t, pos_y[i], pos_x[i], ex["radius"][i], ex["depth"][i], self.kinds[i], self.shapes[i]
            )
        return t

    def illumination(self, rng: np.random.Generator, extra: float = 0.0) -> np.ndarray:
        p = self.p
        coeffs = self.detector.gradient
        jitter = (
            rng.normal(0.0, p["gradient_day_jitter"] * p["gradient_amplitude"], coeffs.shape) / coeffs.size
        )
        change = rng.normal(0.0, 1.0, coeffs.shape)
        change *= extra * p["gradient_amplitude"] / max(np.abs(change).sum(), 1e-12)
        total = coeffs + jitter + change
        total[0, 0] = 0.0
        return sim._illumination(total, self.basis)

    def finish(
        self, clean: np.ndarray, rng: np.random.Generator, noise: float, flat: np.ndarray
    ) -> tuple[np.ndarray, sim.Transients]:
        """Noise, flat field, detector features, transients and the border, on a clean image."""
        size, border = self.config.size, self.config.border
        img = clean * (1.0 + np.float32(noise) * noise_field(rng, (size, size), self.noise_model, self.f2))
        img *= flat
        self.detector.apply(img, rng, self.p)
        transients = sim.add_transients(img, rng, self.p, (border, size - border))
        return img, transients


def _maximum(rng: np.random.Generator, largest: float) -> float:
    """0 for a third of the draws, else log-uniform in [largest / 100, largest]."""
    translation_only = rng.uniform() < 1.0 / 3.0
    value = float(sim._log_uniform(rng, largest / 100.0, largest)) if largest > 0 else 0.0
    return 0.0 if translation_only else value


def _draw_transform(rng: np.random.Generator, r: _Renderer) -> dict[str, float]:
    offset = float(rng.uniform(0.0, r.config.max_offset))
    angle = float(rng.uniform(0.0, 2 * math.pi))
    return {
        "dy": offset * math.sin(angle),
        "dx": offset * math.cos(angle),
        "offset": offset,
        "rotation_deg": float(rng.uniform(-1.0, 1.0) * r.max_rotation),
        "scale": float(1.0 + rng.uniform(-1.0, 1.0) * r.max_scale),
        "blur": float(rng.uniform(0.0, r.max_blur)),
        "gradient_change": float(rng.uniform(0.0, r.gradient_change)),
        "flat_change": r.flat_change,
    }


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    prob = np.asarray([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=prob / prob.sum()))]


def _new_blob_profile(rng: np.random.Generator, r: _Renderer) -> tuple[np.ndarray, dict[str, Any]]:
    """A peak-1 loss profile for a new blob and what it is."""
    kind = _choice(rng, PROFILES)
    if kind == "stamp":
        ids = sorted(r.stamps)
        stamp_id = ids[int(rng.integers(len(ids)))]
        zoom = float(rng.uniform(0.8, 1.3))
        profile = _stamp_profile(r.stamps[stamp_id], zoom)
        radius = 0.35 * min(profile.shape)
        # a real blob need not sit in the middle of its cut-out: its centre is its loss centroid
        yy, xx = np.mgrid[: profile.shape[0], : profile.shape[1]]
        total = float(profile.sum())
        offset = (
            float((profile * yy).sum() / total - (profile.shape[0] - 1) / 2),
            float((profile * xx).sum() / total - (profile.shape[1] - 1) / 2),
        )
        return profile, {
            "profile": "stamp",
            "stamp": int(stamp_id),
            "radius": float(radius),
            "centroid_offset": offset,
        }
    radius = float(rng.uniform(4.0, 11.0))
    profile = sim.blob_profile(radius, kind=kind, rng=rng)
    return profile, {"profile": kind, "stamp": None, "radius": radius}


def _place(
    rng: np.random.Generator,
    r: _Renderer,
    placement: str,
    radius: float,
    ex_y: np.ndarray,
    ex_x: np.ndarray,
    artifact: tuple[float, float, float] | None,
) -> tuple[float, float, str]:
    """Centre (row, col) of a new blob for ``placement``, and the placement used ('anywhere'
    when an image holds no existing blob to overlap or touch)."""
    size, border = r.config.size, r.config.border
    lo, hi = border + 1.0, size - 2.0 - border
    inside = np.flatnonzero((ex_y > lo + 10) & (ex_y < hi - 10) & (ex_x > lo + 10) & (ex_x < hi - 10))
    if placement in ("overlap", "touching") and inside.size == 0:
        placement = "anywhere"
    if placement == "edge":
        depth = float(rng.uniform(1.0, 12.0))
        along = float(rng.uniform(lo, hi))
        side = int(rng.integers(4))
        near = border + depth if side % 2 == 0 else size - 1 - border - depth
        y, x = (near, along) if side < 2 else (along, near)
    elif placement == "corner":
        step = size // 4
        k = rng.integers(1, 4, 2)
        y, x = (k * step - 0.5 + rng.uniform(-3.0, 3.0, 2)).tolist()
    elif placement in ("overlap", "touching"):
        i = int(inside[int(rng.integers(inside.size))])
        er = r.existing["radius"][i]
        dist = rng.uniform(0.0, 0.6) * er if placement == "overlap" else er + radius + rng.uniform(-1.0, 1.0)
        angle = rng.uniform(0.0, 2 * math.pi)
        y, x = ex_y[i] + dist * math.sin(angle), ex_x[i] + dist * math.cos(angle)
    elif placement == "artifact":
        assert artifact is not None
        ay, ax, asize = artifact
        dist = asize + radius + rng.uniform(1.0, 6.0)
        angle = rng.uniform(0.0, 2 * math.pi)
        y, x = ay + dist * math.sin(angle), ax + dist * math.cos(angle)
    else:
        y, x = rng.uniform(lo, hi, 2).tolist()
    return float(np.clip(y, lo, hi)), float(np.clip(x, lo, hi)), placement


def _render_case(r: _Renderer, index: int, with_blob: bool, ref_noise: np.ndarray, mjd: float) -> VariedCase:
    cfg = r.config
    size, border = cfg.size, cfg.border
    rng = np.random.default_rng(np.random.SeedSequence([int(r.p["seed"]), 1, index]))
    transform = _draw_transform(rng, r)
    ex_y, ex_x = transform_points(r.existing["y"], r.existing["x"], transform, size)
    throughput = r.throughput(ex_y, ex_x)
    illum = r.illumination(rng, transform["gradient_change"])
    noise = float(r.p["noise_sigma"] * math.exp(rng.normal(0.0, r.p["noise_day_scatter"])))
    flat = r.flat
    if r.flat_change > 0:
        changed = smooth_field(rng, (size, size), r.flat_scale, r.f2)
        flat = flat * (1.0 + np.float32(r.flat_change * r.flat_amplitude) * changed)

    injected = [
        _inject(rng, r, transform, throughput, illum, ex_y, ex_x, noise, ref_noise)
        for _ in range(cfg.new_blobs if with_blob else 0)
    ]
    if transform["blur"] > 0:
        loss = ndimage.gaussian_filter(1.0 - throughput, transform["blur"])
        throughput = (1.0 - loss).astype(np.float32)
    for blob, unit, _, (rows, cols), _ in injected:
        throughput[rows, cols] -= np.float32(blob["depth"]) * unit.astype(np.float32)
    image, transients = r.finish(illum * throughput, rng, noise, flat)
    artifacts = [{"kind": "snowball", "y": a[0], "x": a[1], "size": a[2]} for a in transients.snowballs]
    artifacts += [{"kind": "persistence", "y": a[0], "x": a[1], "size": a[2]} for a in transients.persistence]
    for *_, forced_artifact in injected:
        if forced_artifact is not None:
            ay, ax, arad, aamp = forced_artifact
            sim._add_round(image, ay, ax, aamp, sim._Snowball(arad))
            artifacts.append({"kind": "snowball", "y": ay, "x": ax, "size": arad})
    sim.mask_border(image, border)
    return VariedCase(
        index=index,
        image=image,
        mjd=mjd,
        transform=transform,
        blobs=[i[0] for i in injected],
        artifacts=artifacts,
        noise=noise,
        templates=[(i[2], i[3]) for i in injected],
    )


def _inject(
    rng: np.random.Generator,
    r: _Renderer,
    transform: dict[str, float],
    throughput: np.ndarray,
    illum: np.ndarray,
    ex_y: np.ndarray,
    ex_x: np.ndarray,
    noise: float,
    ref_noise: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, tuple[slice, slice], tuple[float, ...] | None]:
    """Draw one new blob: its record, its extra loss per unit depth (blurred like the pattern),
    its unit-depth signal in the image (the matched filter's template) and where they go, and
    the snowball forced beside it for the 'artifact' placement."""
    cfg = r.config
    size, border = cfg.size, cfg.border
    forced_artifact = None
    placement = _choice(rng, PLACEMENTS)
    if placement == "artifact":
        forced_artifact = (
            float(rng.uniform(border + 40, size - border - 40)),
            float(rng.uniform(border + 40, size - border - 40)),
            float(rng.uniform(*r.p["snowball_radius"])),
            float(rng.uniform(0.05, max(r.p["snowball_amplitude"][1], 0.06))),
        )
    profile, info = _new_blob_profile(rng, r)
    y, x, placement = _place(
        rng,
        r,
        placement,
        info["radius"],
        ex_y,
        ex_x,
        None if forced_artifact is None else forced_artifact[:3],
    )
    dy, dx = info.pop("centroid_offset", (0.0, 0.0))
    y, x = y - dy, x - dx  # the profile's centroid lands on the drawn centre
    unit, (rows, cols) = _place_patch((size, size), profile, y, x)
    y, x = y + dy, x + dx
    unit = unit * throughput[rows, cols]  # extra loss per unit depth (on top of old blobs)
    if transform["blur"] > 0:
        pad = int(math.ceil(3 * transform["blur"])) + 1
        unit = ndimage.gaussian_filter(np.pad(unit, pad), transform["blur"])
        r0, c0 = rows.start - pad, cols.start - pad
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + unit.shape[0], size), min(c0 + unit.shape[1], size)
        unit = unit[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
        rows, cols = slice(rr0, rr1), slice(cc0, cc1)
    science = np.zeros((size, size), dtype=bool)
    science[border : size - border, border : size - border] = True
    template = np.where(science[rows, cols], unit * illum[rows, cols], 0.0).astype(np.float32)
    energy = float(np.sum(template.astype(np.float64) ** 2))
    sigma_diff = math.sqrt(noise**2 + 0.5 * math.pi * float(np.mean(ref_noise**2)) / len(ref_noise))
    gain = matched_filter_gain(template, (rows, cols), (size, size), r.noise_power)
    target = float(math.exp(rng.uniform(*np.log(cfg.snr_range))))
    depth = float(np.clip(target * sigma_diff * gain / math.sqrt(max(energy, 1e-12)), 1e-4, cfg.max_depth))
    dist = np.hypot(ex_y - y, ex_x - x) / (r.existing["radius"] + info["radius"])
    blob = {
        "x": x,
        "y": y,
        **info,
        "depth": depth,
        "placement": placement,
        "target_snr": target,
        "signal_energy": energy,
        "noise_gain": gain,
        "edge_distance": float(min(y, x, size - 1 - y, size - 1 - x) - border),
        "neighbour": float(dist.min()) if dist.size else float("inf"),
    }
    return blob, unit, template, (rows, cols), forced_artifact


def simulate_varied_sequence(seed: int, config: VariationConfig | None = None) -> VariedSequence:
    """Render one sequence: ``n_references`` references and ``cases`` current images.

    Deterministic for a given seed and config.  Case ``k`` has a new blob when
    ``k < cases // 2 + cases % 2`` (the first half, rounded up).
    """
    config = config or VariationConfig()
    config.validate()
    r = _Renderer(int(seed), config)
    rng = np.random.default_rng(r.s_day)
    n_ref = config.n_references
    start = float(r.p["start_mjd"])
    mjd = start + np.arange(n_ref) + rng.uniform(-0.1, 0.1, n_ref)
    shifts = rng.normal(0.0, r.p["shift_sigma"], (n_ref, 2))
    ref_noise = r.p["noise_sigma"] * np.exp(rng.normal(0.0, r.p["noise_day_scatter"], n_ref))
    refs = np.empty((n_ref, config.size, config.size), dtype=np.float32)
    for d in range(n_ref):
        t = r.throughput(r.existing["y"] + shifts[d, 0], r.existing["x"] + shifts[d, 1])
        refs[d], _ = r.finish(r.illumination(rng) * t, rng, float(ref_noise[d]), r.flat)
        sim.mask_border(refs[d], config.border)
    n_blob = config.cases // 2 + config.cases % 2
    cases = [
        _render_case(r, k, k < n_blob, ref_noise, start + n_ref + 0.5 + 0.01 * k) for k in range(config.cases)
    ]
    params = r.params()
    params["reference_shifts"] = shifts.tolist()
    return VariedSequence(
        seed=int(seed),
        references=refs,
        reference_mjd=mjd,
        reference_noise=ref_noise,
        existing=r.existing,
        cases=cases,
        params=params,
    )
