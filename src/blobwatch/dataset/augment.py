"""What is added to a subframe: real and simulated blobs, distractors, pedestals, rotations
and flips."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.errors import InputError

__all__ = [
    "DEFAULT_STAMPS",
    "BlobConfig",
    "DistractorConfig",
    "add_distractors",
    "add_patch",
    "add_pedestal",
    "augment_array",
    "augment_coords",
    "default_stamps_path",
    "draw_blobs",
    "load_stamps",
    "simulated_blob",
    "taper_stamp",
]


#: The 20 real WFC3/IR blob stamps shipped with the package (spacetelescope/deepwfc3, BSD-3-Clause;
#: see ``data/LICENSE-ir_blob_stamps.txt``).
DEFAULT_STAMPS = Path(__file__).resolve().parent.parent / "data" / "ir_blob_stamps.fits"


def default_stamps_path() -> Path:
    """Path of the real blob stamps: ``$BLOBWATCH_STAMPS`` or the copy shipped in the package."""
    env = os.environ.get("BLOBWATCH_STAMPS")
    return Path(env) if env else DEFAULT_STAMPS


def load_stamps(path: str | os.PathLike | None = None) -> dict[int, np.ndarray]:
    """Read the real blob stamps (``EXTNAME='BLOB'``), keyed by ``EXTVER``.

    Raises
    ------
    InputError
        If the file is missing or holds no BLOB extensions.
    """
    from astropy.io import fits

    path = Path(path) if path is not None else default_stamps_path()
    if not path.is_file():
        raise InputError(path, "blob stamp file not found")
    stamps: dict[int, np.ndarray] = {}
    try:
        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                if hdu.header.get("EXTNAME", "").strip().upper() == "BLOB" and hdu.data is not None:
                    stamps[int(hdu.header.get("EXTVER", len(stamps) + 1))] = np.asarray(hdu.data, np.float32)
    except OSError as exc:
        raise InputError(path, f"not a readable FITS file ({exc})") from None
    if not stamps:
        raise InputError(path, "no BLOB image extensions")
    return stamps


def taper_stamp(stamp: np.ndarray) -> np.ndarray:
    """Multiply a stamp by a round cosine taper so it blends in without a square edge.

    The weight is 1 inside 35% of the stamp side from the centre and falls to 0 at 50%.
    """
    n_r, n_c = stamp.shape
    r = np.hypot(
        (np.arange(n_r)[:, None] - (n_r - 1) / 2) / n_r,
        (np.arange(n_c)[None, :] - (n_c - 1) / 2) / n_c,
    )
    w = np.clip((0.5 - r) / 0.15, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    return (stamp * w).astype(np.float32)


def simulated_blob(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one simulated blob map (peak 1) with its parameters.

    Uses `blobwatch.simulate.blob_profile` (the simulator's own profile, ring or disc, with a
    random shape) so that training blobs and simulated images share one shape model.  Radii are
    4-11 px (blobs are 10-20 px across, later ones smaller).
    """
    from blobwatch import simulate

    radius = float(rng.uniform(4.0, 11.0))
    kind = str(rng.choice(simulate.BLOB_KINDS))
    amap = simulate.blob_profile(radius, kind=kind, rng=rng)
    return np.asarray(amap, np.float32), {"kind": "simulated", "profile": kind, "radius": round(radius, 3)}


def augment_coords(rc: np.ndarray, size: int, k: int, flip_y: bool, flip_x: bool) -> np.ndarray:
    """Map (row, col) positions through ``np.rot90(a, k)`` then the flips of `augment_array`."""
    rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2).copy()
    n = size - 1
    for _ in range(k % 4):
        rc = np.stack([n - rc[:, 1], rc[:, 0]], axis=1)
    if flip_y:
        rc[:, 0] = n - rc[:, 0]
    if flip_x:
        rc[:, 1] = n - rc[:, 1]
    return rc


def augment_array(a: np.ndarray, k: int, flip_y: bool, flip_x: bool) -> np.ndarray:
    """Rotate by ``k`` x 90 degrees (counter-clockwise) and flip rows and/or columns."""
    a = np.rot90(a, k)
    if flip_y:
        a = a[::-1, :]
    if flip_x:
        a = a[:, ::-1]
    return a


def add_patch(frame: np.ndarray, patch: np.ndarray, row: float, col: float) -> float:
    """Add ``patch`` centred at (row, col) to ``frame`` in place, clipping at the borders.

    Returns the fraction of the patch's absolute flux that landed inside the frame.
    """
    ph, pw = patch.shape
    r0 = int(round(row - (ph - 1) / 2))
    c0 = int(round(col - (pw - 1) / 2))
    fr0, fc0 = max(r0, 0), max(c0, 0)
    fr1, fc1 = min(r0 + ph, frame.shape[0]), min(c0 + pw, frame.shape[1])
    if fr1 <= fr0 or fc1 <= fc0:
        return 0.0
    sub = patch[fr0 - r0 : fr1 - r0, fc0 - c0 : fc1 - c0]
    frame[fr0:fr1, fc0:fc1] += sub
    total = float(np.abs(patch).sum()) or 1.0
    return float(np.abs(sub).sum()) / total


@dataclass
class BlobConfig:
    """How blobs are superimposed on positive subframes."""

    n_min: int = 1
    n_max: int = 5
    stamp_scale: tuple[float, float] = (0.5, 1.5)  # seed: stamp x U(0.5, 1.5)
    sim_peak_sigma: tuple[float, float] = (1.0, 6.0)  # simulated blob peak in noise sigma
    simulated_fraction: float = 0.5  # fraction of blobs that are simulated (rest: real stamps)


@dataclass
class DistractorConfig:
    """Nuisance features that are not blobs, added to subframes of both classes alike.

    * A pedestal and a linear gradient (in background noise sigma): large-scale residuals of a
      difference image (earthlight, persistence halos) raise or tilt a whole subframe.  A network
      trained on flat backgrounds can take a raised level for blob flux: a model trained without
      this gave P = 1.0 to pure noise raised by 0.3 sigma.
    * Dark patches: in a prepared subframe blobs are positive; persistence, snowballs and
      satellite trails are bright in the new image, so they are negative there.
    """

    pedestal_sigma: float = 0.0  # N(0, s) offset of the whole subframe
    gradient_sigma: float = 0.0  # N(0, s) change across the subframe, along rows and along columns
    fraction: float = 0.0  # fraction of samples (either class) that get 1..n_max dark patches
    n_max: int = 3
    depth_sigma: tuple[float, float] = (1.0, 6.0)  # peak depth in background noise sigma
    sigma_px: tuple[float, float] = (2.0, 60.0)  # Gaussian sigma of the long axis, log-uniform
    elongated_fraction: float = 0.5  # the rest are round (axis ratio 0.8-1)

    def __post_init__(self) -> None:
        for name in ("pedestal_sigma", "gradient_sigma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"DistractorConfig.{name}={value} must be finite and >= 0")
        for name in ("fraction", "elongated_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DistractorConfig.{name}={getattr(self, name)} must be in [0, 1]")
        if self.n_max < 1:
            raise ValueError(f"DistractorConfig.n_max={self.n_max} must be >= 1")


def add_distractors(
    frame: np.ndarray, rng: np.random.Generator, cfg: DistractorConfig, noise: float
) -> list[dict[str, Any]]:
    """Add 1..``cfg.n_max`` dark Gaussian patches to ``frame`` in place; return their parameters.

    The result is floored at the frame's minimum before the patches (after the pedestal and any
    blobs), to mimic `blobwatch.preprocess.prepare` clipping a real dark feature at its lower
    clip limit.  Known flaw, kept so that the shipped model's dataset stays reproducible: real
    stamps have negative pixels, so in positives that minimum can lie below the clip limit and
    patches there can be deeper than in negatives (docs/training.md).
    """
    size = frame.shape[0]
    floor = float(frame.min())
    yy, xx = np.ogrid[:size, :size]
    dark = np.zeros_like(frame)
    out: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, cfg.n_max + 1))):
        elongated = bool(rng.random() < cfg.elongated_fraction)
        s_long = float(np.exp(rng.uniform(*np.log(cfg.sigma_px))))
        s_short = max(1.5, s_long * float(rng.uniform(0.08, 0.5) if elongated else rng.uniform(0.8, 1.0)))
        angle = float(rng.uniform(0.0, np.pi))
        row, col = rng.uniform(0, size - 1, size=2)
        depth = float(rng.uniform(*cfg.depth_sigma)) * noise
        c, s = np.cos(angle), np.sin(angle)
        u = ((xx - col) * c + (yy - row) * s) / s_long
        v = (-(xx - col) * s + (yy - row) * c) / s_short
        dark -= (depth * np.exp(-0.5 * (u * u + v * v))).astype(np.float32)
        out.append(
            {
                "kind": "elongated" if elongated else "round",
                "row": round(float(row), 2),
                "col": round(float(col), 2),
                "sigma_long": round(s_long, 2),
                "sigma_short": round(s_short, 2),
                "angle_deg": round(float(np.degrees(angle)), 1),
                "depth_sigma": round(depth / noise, 3),
            }
        )
    np.maximum(frame + dark, floor, out=frame)
    return out


def add_pedestal(
    frame: np.ndarray, rng: np.random.Generator, cfg: DistractorConfig, noise: float
) -> dict[str, float]:
    """Add a random pedestal and gradient to ``frame`` in place, within its original range (as
    `blobwatch.preprocess.prepare` clips); return them in noise sigma."""
    lo, hi = float(frame.min()), float(frame.max())
    level = float(rng.normal(0.0, cfg.pedestal_sigma))
    gy, gx = (float(g) for g in rng.normal(0.0, cfg.gradient_sigma, size=2))
    ramp = np.linspace(-0.5, 0.5, frame.shape[0], dtype=np.float32)
    frame += noise * (level + gy * ramp[:, None] + gx * ramp[None, :])
    np.clip(frame, lo, hi, out=frame)
    return {
        "pedestal_sigma": round(level, 4),
        "gradient_y_sigma": round(gy, 4),
        "gradient_x_sigma": round(gx, 4),
    }


def draw_blobs(
    frame: np.ndarray,
    rng: np.random.Generator,
    stamps: dict[int, np.ndarray],
    stamp_ids: Sequence[int],
    cfg: BlobConfig,
    noise: float,
) -> list[dict[str, Any]]:
    """Superimpose 1-5 blobs on ``frame`` in place and return their descriptions."""
    from scipy import ndimage

    size = frame.shape[0]
    n = int(rng.integers(cfg.n_min, cfg.n_max + 1))
    blobs: list[dict[str, Any]] = []
    for _ in range(n):
        use_sim = (not stamp_ids) or rng.random() < cfg.simulated_fraction
        if use_sim:
            shape, info = simulated_blob(rng)
            peak = float(rng.uniform(*cfg.sim_peak_sigma)) * noise
            patch = shape * peak
            info["scale"] = peak
        else:
            sid = int(rng.choice(np.asarray(stamp_ids)))
            scale = float(rng.uniform(*cfg.stamp_scale))
            patch = taper_stamp(stamps[sid]) * scale
            info = {
                "kind": "stamp",
                "stamp_id": sid,
                "scale": scale,
                "radius": 0.5 * float(np.sqrt(stamps[sid].shape[0] * stamps[sid].shape[1])) / 1.5,
            }
        angle = float(rng.uniform(0.0, 360.0))
        patch = ndimage.rotate(patch, angle, reshape=True, order=1, mode="constant", cval=0.0)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        row, col = rng.uniform(0, size - 1, size=2)
        inside = add_patch(frame, patch.astype(np.float32), row, col)
        info.update(
            row=float(row),
            col=float(col),
            angle=angle,
            inside_fraction=round(inside, 4),
            peak_sigma=float(patch.max()) / noise,
        )
        blobs.append(info)
    return blobs
