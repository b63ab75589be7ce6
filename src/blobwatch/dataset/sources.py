"""Background sources of a dataset: prepared non-blob difference images and their
hard-case cause maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.stats import robust_sigma

__all__ = [
    "CAUSE_BAD_PIXEL",
    "CAUSE_COSMIC_RAY",
    "CAUSE_DIP",
    "CAUSE_EDGE",
    "CAUSE_NAMES",
    "CAUSE_SNOWBALL",
    "SourceImage",
    "cause_map",
    "file_source",
    "simulated_sources",
    "source_from_difference",
]


#: Hard-case bit flags stored per pixel (cause maps) and per subframe (``causes``).
CAUSE_DIP = 1
CAUSE_COSMIC_RAY = 2
CAUSE_SNOWBALL = 4  # snowballs and persistence: bright, opposite polarity to a blob
CAUSE_BAD_PIXEL = 8
CAUSE_EDGE = 16
CAUSE_NAMES: dict[int, str] = {
    CAUSE_DIP: "dip",
    CAUSE_COSMIC_RAY: "cosmic_ray",
    CAUSE_SNOWBALL: "snowball_persistence",
    CAUSE_BAD_PIXEL: "bad_pixel",
    CAUSE_EDGE: "edge",
}


@dataclass
class SourceImage:
    """A prepared non-blob difference image that subframes are cut from.

    Parameters
    ----------
    name : str
        Unique name (recorded in the manifest).
    data : ndarray
        Prepared image (float32, blobs positive, mean 0, std 1, finite).
    causes : ndarray
        Per-pixel hard-case bit flags (uint8, same shape), see ``CAUSE_*``.
    exclude : ndarray, optional
        Boolean mask of pixels no window may contain (e.g. a genuinely new blob).
    provenance : dict
        Where the image came from (simulation seed, day, registration, file, ...).
    """

    name: str
    data: np.ndarray
    causes: np.ndarray
    exclude: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        self.causes = np.asarray(self.causes, dtype=np.uint8)
        if self.data.ndim != 2 or self.causes.shape != self.data.shape:
            raise ValueError(f"source {self.name!r}: data and causes must be 2-D arrays of one shape")
        if not np.isfinite(self.data).all():
            raise ValueError(f"source {self.name!r}: data must be finite (use preprocess.prepare)")
        if self.exclude is not None:
            self.exclude = np.asarray(self.exclude, dtype=bool)

    @property
    def noise(self) -> float:
        """Robust per-pixel noise (MAD standard deviation) of the image."""
        return robust_sigma(self.data[::4, ::4]) or 1.0


def _robust_z(difference: np.ndarray, block: int = 16) -> np.ndarray:
    """Sign-flipped, background-subtracted difference in robust-sigma units (NaN -> 0).

    The background is a median over ``block``-pixel blocks, median-filtered over 5 blocks, so
    earthlight and illumination changes are not mistaken for compact residuals.
    """
    from scipy import ndimage

    finite = np.isfinite(difference)
    d = np.where(finite, difference, np.nan).astype(np.float32)
    h, w = d.shape
    ph, pw = -h % block, -w % block
    padded = np.pad(d, ((0, ph), (0, pw)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bg = np.nanmedian(
                blocks.transpose(0, 2, 1, 3).reshape(blocks.shape[0], blocks.shape[2], -1), axis=2
            )
    bg = np.where(np.isfinite(bg), bg, np.nanmedian(bg) if np.isfinite(bg).any() else 0.0)
    bg = ndimage.median_filter(bg, size=5, mode="nearest")
    bg_full = np.repeat(np.repeat(bg, block, 0), block, 1)[:h, :w]
    resid = np.where(finite, d - bg_full, 0.0)
    vals = resid[finite][::7]
    sigma = robust_sigma(vals) if vals.size else 1.0
    return (-resid / (sigma or 1.0)).astype(np.float32)


def cause_map(
    difference: np.ndarray,
    *,
    bad_pixels: np.ndarray | None = None,
    blobs: np.ndarray | None = None,
    edge_margin: int = 6,
    point_sigma: float = 6.0,
) -> np.ndarray:
    """Per-pixel hard-case flags (``CAUSE_*``) of a difference image.

    Parameters
    ----------
    difference : ndarray
        The raw difference image (current minus reference median; NaN where unusable).
    bad_pixels : ndarray of bool, optional
        Known bad or unstable detector pixels (simulation truth or a bad-pixel table).
    blobs : ndarray, optional
        (n, 3) rows (y, x, radius) of blobs already on the mirror, at their position in the
        current image; a visible residual inside one is a *dip* (mis-registration residual).
    edge_margin : int
        Pixels within this distance of a non-finite pixel are flagged ``CAUSE_EDGE``.
    point_sigma : float
        Significance (robust sigma) above which a compact feature counts.

    Returns
    -------
    ndarray of uint8
        Bit flags, same shape as ``difference``.

    Notes
    -----
    Residuals are found in the unclipped difference: compact (<= 30 px) bright features are
    cosmic-ray residuals, larger bright ones snowballs; diffuse bright patches (significant after
    smoothing with sigma 4 px) persistence; features on a known bad pixel are bad pixels.
    Without ``blobs`` no dips are flagged (real files carry no truth).
    """
    from scipy import ndimage

    flags = np.zeros(difference.shape, np.uint8)
    invalid = ~np.isfinite(difference)
    if invalid.any():  # image borders and other large unusable areas, not single dead pixels
        lab, n_inv = ndimage.label(invalid)
        area = ndimage.sum_labels(invalid, lab, np.arange(1, n_inv + 1))
        big = np.concatenate([[False], area >= 50])[lab]
        near = ndimage.maximum_filter(big.astype(np.uint8), size=2 * edge_margin + 1) > 0
        flags[near] |= CAUSE_EDGE
    z = _robust_z(difference)

    dip_mask = np.zeros(difference.shape, bool)
    if blobs is not None and len(blobs):
        zs = np.abs(ndimage.gaussian_filter(z, 1.5))
        noise_s = 1.0 / (2.0 * np.sqrt(np.pi) * 1.5)  # std of white noise after smoothing
        h, w = z.shape
        for y, x, r in np.asarray(blobs, float):
            reach = int(np.ceil(r + 2))
            y0, y1 = max(int(y) - reach, 0), min(int(y) + reach + 1, h)
            x0, x1 = max(int(x) - reach, 0), min(int(x) + reach + 1, w)
            if y1 <= y0 or x1 <= x0:
                continue
            if zs[y0:y1, x0:x1].max() > 5.0 * noise_s:
                yy, xx = np.ogrid[y0:y1, x0:x1]
                disc = (yy - y) ** 2 + (xx - x) ** 2 <= (r + 2) ** 2
                dip_mask[y0:y1, x0:x1] |= disc
        flags[dip_mask] |= CAUSE_DIP

    strong = (np.abs(z) > point_sigma) & ~dip_mask
    labels, n = ndimage.label(strong, structure=np.ones((3, 3)))
    if n:
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(z), labels, idx)
        on_bad = (
            ndimage.maximum(bad_pixels.astype(np.uint8), labels, idx) > 0
            if bad_pixels is not None
            else np.zeros(n, bool)
        )
        kind = np.where(on_bad, CAUSE_BAD_PIXEL, np.where(area <= 30, CAUSE_COSMIC_RAY, CAUSE_SNOWBALL))
        lut = np.concatenate([[0], kind]).astype(np.uint8)
        flags |= lut[labels]
    diffuse = ndimage.gaussian_filter(z, 4.0) < -7.0 / (2.0 * np.sqrt(np.pi) * 4.0)
    labels, n = ndimage.label(diffuse)
    if n:
        area = ndimage.sum_labels(np.ones_like(z), labels, np.arange(1, n + 1))
        lut = np.concatenate([[0], np.where(area >= 100, CAUSE_SNOWBALL, 0)]).astype(np.uint8)
        flags |= lut[labels]
    return flags


def source_from_difference(
    name: str,
    difference: np.ndarray,
    *,
    clip_factor: float = 0.5,
    bad_pixels: np.ndarray | None = None,
    blobs: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    provenance: dict[str, Any] | None = None,
) -> SourceImage:
    """Prepare a non-blob difference image (`blobwatch.preprocess.prepare`) as a source."""
    from blobwatch.preprocess import prepare

    prepared = prepare(difference, clip_factor=clip_factor)
    data = np.asarray(getattr(prepared, "data", prepared), np.float32)
    causes = cause_map(difference, bad_pixels=bad_pixels, blobs=blobs)
    return SourceImage(
        name=name,
        data=data,
        causes=causes,
        exclude=exclude,
        provenance={**(provenance or {}), "clip_factor": clip_factor},
    )


def simulated_sources(
    seed: int,
    *,
    n_days: int = 32,
    diff_days: Sequence[int] = (30, 31),
    registrations: Sequence[bool] = (True, False),
    clip_factor: float = 0.5,
    workers: int | None = None,
) -> list[SourceImage]:
    """Simulate one CSM-monitor sequence and return its prepared non-blob differences.

    Each day in ``diff_days`` is differenced against the median of its (up to 30) preceding
    days, once per entry of ``registrations``; unregistered differences carry dips.  The
    simulation has no new blobs, so every difference is a genuine non-blob image.
    """
    import warnings

    from blobwatch.difference import blob_difference
    from blobwatch.fits_io import BlobImage
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    sim = simulate_sequence(SimulationConfig(n_days=n_days, seed=seed, new_blob_rate=0.0))
    blobs = sim.blobs
    images = [BlobImage(data=sim.images[d], mjd=float(sim.mjd[d]), path=None) for d in range(sim.n_days)]
    bad = sim.bad_pixels | sim.unstable_pixels
    out: list[SourceImage] = []
    for d in diff_days:
        if not 5 <= d < sim.n_days:
            raise ValueError(f"diff day {d} needs 5 earlier days within the {sim.n_days}-day sequence")
        dy, dx = sim.shifts[d]
        on_mirror = np.asarray(blobs["day"]) <= d
        yxr = np.stack(
            [
                np.asarray(blobs["y"])[on_mirror] + dy,
                np.asarray(blobs["x"])[on_mirror] + dx,
                np.asarray(blobs["radius"])[on_mirror],
            ],
            axis=1,
        )
        for reg in registrations:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = blob_difference(images[d], images[max(0, d - 30) : d], register=reg, workers=workers)
            out.append(
                source_from_difference(
                    f"sim{seed}_day{d:03d}_{'reg' if reg else 'unreg'}",
                    res.data,
                    clip_factor=clip_factor,
                    bad_pixels=bad,
                    blobs=yxr,
                    provenance={
                        "kind": "simulated",
                        "seed": seed,
                        "day": int(d),
                        "registered": bool(reg),
                        "n_references": res.n_references,
                        "method": res.method,
                        "noise_sigma": float(sim.noise[d]),
                        "shift": [float(dy), float(dx)],
                        "shift_sigma": float(sim.params["shift_sigma"]),
                    },
                )
            )
    return out


def file_source(path: str | os.PathLike, *, clip_factor: float = 0.5) -> SourceImage:
    """A user-supplied non-blob difference image (FITS) as a source (no dip truth)."""
    from blobwatch.fits_io import read_blob_image

    img = read_blob_image(path, check_quality=False)  # a difference image: no blob-image gates
    prov = {
        "kind": "file",
        "path": str(path),
        **{k: v for k, v in img.provenance.items() if isinstance(v, (str, int, float))},
    }
    return source_from_difference(Path(path).stem, img.data, clip_factor=clip_factor, provenance=prov)
