"""Training and validation datasets of 256x256 subframes, written to disk and streamed back.

The recipe follows the seed (WFC3 ISR 2021-08, sections 3.3 and 3.4):

* Backgrounds are *prepared* non-blob difference images (`blobwatch.preprocess.prepare`: clipped,
  z-scored, finite, sign-flipped so blobs are positive).  Subframes are cut at random positions from
  the left 75% of each image for training and from the right 25% for validation, so the two never
  share a pixel.
* Positives get 1-5 blobs superimposed additively (the difference image is linear in throughput):
  real stamps scaled by U(0.5, 1.5), randomly rotated and flipped, or simulated blob profiles with a
  peak of 1-6 noise sigma; centres anywhere in the subframe, so a blob can be up to half off it.
* Training subframes of both classes alike get nuisance features (`DistractorConfig`): a random
  pedestal and gradient (large-scale residuals of the difference), and on half of them dark Gaussian
  patches of the opposite polarity to a blob, round or elongated, 2-60 px, like the persistence,
  snowballs and trails of a new image after the sign flip.  They teach the network that a blob is
  local, positive contrast, not a raised level or any compact feature.
* Both classes are then augmented identically: N(0, 0.75) noise, a random rot90 and random flips.
* Half of the windows are centred on a known hard case (dip, cosmic-ray residual, snowball or
  persistence, bad pixel, image edge) for both classes, so the network cannot use their presence as
  a cue and evaluation can break false positives down by cause.

On disk a dataset is a directory::

    x.npy            (N, size, size) float16, read with ``mmap_mode="r"``
    meta.npz         per-sample arrays: label, source, x0, y0, rot, flip_x, flip_y, n_blobs,
                     causes (bit flags), peak (strongest blob, sigma), radius and edge distance of
                     the strongest blob, stamp_only
    samples.jsonl    per-sample provenance, one JSON object a line (every blob's position,
                     strength, radius, stamp id or profile)
    manifest.json    generator version, seeds, sources (with sha256), parameters, file hashes
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.errors import InputError
from blobwatch.fits_io import file_sha256
from blobwatch.stats import robust_sigma

#: Bumped whenever the generated samples would change for the same seed and sources.
#: /2: pedestals, gradients and dark distractors on training subframes (`DistractorConfig`).
GENERATOR_VERSION = "blobwatch-dataset/2"

#: Bumped whenever the simulated background images (the source cache) would change; the cache
#: key also holds the SHA-256 of the simulator, difference and preparation code.
SOURCES_VERSION = "blobwatch-dataset/1"

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

#: Fraction of the image width used for training; the rest (right side) is for validation.
TRAIN_FRACTION = 0.75

#: The 20 real WFC3/IR blob stamps shipped with the package (spacetelescope/deepwfc3, BSD-3-Clause;
#: see ``data/LICENSE-ir_blob_stamps.txt``).
DEFAULT_STAMPS = Path(__file__).resolve().parent / "data" / "ir_blob_stamps.fits"


def default_stamps_path() -> Path:
    """Path of the real blob stamps: ``$BLOBWATCH_STAMPS`` or the copy shipped in the package."""
    env = os.environ.get("BLOBWATCH_STAMPS")
    return Path(env) if env else DEFAULT_STAMPS


# --------------------------------------------------------------------------------------------
# Sources and stamps
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def region_bounds(width: int, size: int, region: str) -> tuple[int, int]:
    """Inclusive range of window left edges ``x0`` for ``region`` of an image ``width`` wide.

    ``train``: windows entirely in the left 75%; ``validation``: entirely in the right 25%;
    ``all``: anywhere.
    """
    split = int(round(TRAIN_FRACTION * width))
    if region == "train":
        lo, hi = 0, split - size
    elif region == "validation":
        lo, hi = split, width - size
    elif region == "all":
        lo, hi = 0, width - size
    else:
        raise ValueError(f"region must be 'train', 'validation' or 'all', not {region!r}")
    if hi < lo:
        raise ValueError(f"region {region!r} of a {width}-pixel-wide image cannot hold a {size}-pixel window")
    return lo, hi


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


# --------------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------------


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


def _add_distractors(frame: np.ndarray, rng: np.random.Generator, cfg: DistractorConfig,
                     noise: float) -> list[dict[str, Any]]:
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
        out.append({"kind": "elongated" if elongated else "round", "row": round(float(row), 2),
                    "col": round(float(col), 2), "sigma_long": round(s_long, 2),
                    "sigma_short": round(s_short, 2), "angle_deg": round(float(np.degrees(angle)), 1),
                    "depth_sigma": round(depth / noise, 3)})
    np.maximum(frame + dark, floor, out=frame)
    return out


def _add_pedestal(frame: np.ndarray, rng: np.random.Generator, cfg: DistractorConfig,
                  noise: float) -> dict[str, float]:
    """Add a random pedestal and gradient to ``frame`` in place, within its original range (as
    `blobwatch.preprocess.prepare` clips); return them in noise sigma."""
    lo, hi = float(frame.min()), float(frame.max())
    level = float(rng.normal(0.0, cfg.pedestal_sigma))
    gy, gx = (float(g) for g in rng.normal(0.0, cfg.gradient_sigma, size=2))
    ramp = np.linspace(-0.5, 0.5, frame.shape[0], dtype=np.float32)
    frame += noise * (level + gy * ramp[:, None] + gx * ramp[None, :])
    np.clip(frame, lo, hi, out=frame)
    return {"pedestal_sigma": round(level, 4), "gradient_y_sigma": round(gy, 4),
            "gradient_x_sigma": round(gx, 4)}


def _draw_blobs(
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
            info = {"kind": "stamp", "stamp_id": sid, "scale": scale,
                    "radius": 0.5 * float(np.sqrt(stamps[sid].shape[0] * stamps[sid].shape[1])) / 1.5}
        angle = float(rng.uniform(0.0, 360.0))
        patch = ndimage.rotate(patch, angle, reshape=True, order=1, mode="constant", cval=0.0)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        row, col = rng.uniform(0, size - 1, size=2)
        inside = add_patch(frame, patch.astype(np.float32), row, col)
        info.update(
            row=float(row), col=float(col), angle=angle, inside_fraction=round(inside, 4),
            peak_sigma=float(patch.max()) / noise,
        )
        blobs.append(info)
    return blobs


def _window_positions(
    source: SourceImage,
    rng: np.random.Generator,
    n: int,
    size: int,
    region: str,
    hard_fraction: float,
) -> np.ndarray:
    """Draw ``n`` window corners (y0, x0) in ``region``; a fraction centred on hard cases."""
    h, w = source.data.shape
    xlo, xhi = region_bounds(w, size, region)
    ylo, yhi = 0, h - size
    out = np.empty((n, 2), dtype=np.int64)
    # hard-case pixels whose centred window fits in the region
    rr, cc = np.nonzero(source.causes[:, xlo + size // 2 : xhi + size // 2 + 1] & ~np.uint8(CAUSE_EDGE))
    cc = cc + xlo + size // 2
    i = 0
    attempts = 0
    while i < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"source {source.name!r}: cannot place windows (too much excluded area)")
        if rr.size and rng.random() < hard_fraction:
            j = int(rng.integers(rr.size))
            jitter = rng.integers(-size // 3, size // 3 + 1, size=2)
            y0 = int(np.clip(rr[j] - size // 2 + jitter[0], ylo, yhi))
            x0 = int(np.clip(cc[j] - size // 2 + jitter[1], xlo, xhi))
        else:
            y0 = int(rng.integers(ylo, yhi + 1))
            x0 = int(rng.integers(xlo, xhi + 1))
        if source.exclude is not None and source.exclude[y0 : y0 + size, x0 : x0 + size].any():
            continue
        out[i] = (y0, x0)
        i += 1
    return out


def make_dataset(
    outdir: str | os.PathLike,
    sources: Sequence[SourceImage],
    *,
    n_samples: int,
    region: str,
    seed: int,
    stamps: dict[int, np.ndarray],
    stamp_ids: Sequence[int],
    size: int = 256,
    positive_fraction: float = 0.5,
    hard_fraction: float = 0.5,
    noise_sigma: float = 0.75,
    blobs: BlobConfig | None = None,
    distractors: DistractorConfig | None = None,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Generate a dataset of subframes and write it to ``outdir`` (see module docstring).

    Parameters
    ----------
    outdir : path-like
        Directory to create (must not already hold a dataset).
    sources : sequence of SourceImage
        Prepared non-blob difference images; samples are spread evenly over them.
    n_samples : int
        Number of subframes; ``positive_fraction`` of them get blobs.
    region : {"train", "validation", "all"}
        Where windows may lie in each source (left 75%, right 25%, anywhere).
    seed : int
        Master seed; independent streams are spawned for windows, blobs (seed 3.3) and
        augmentation (seed 3.4).
    stamps : dict
        Real stamps by id; only ``stamp_ids`` are used (the rest are held out).
    stamp_ids : sequence of int
        Stamps allowed in this dataset.
    blobs : BlobConfig, optional
        Blob superposition parameters; ``simulated_fraction=0`` uses real stamps only.
    distractors : DistractorConfig, optional
        Nuisance features (pedestal/gradient, dark patches) for both classes alike (default: none).

    Returns
    -------
    Path
        The dataset directory.
    """
    outdir = Path(outdir)
    if (outdir / "manifest.json").exists():
        raise InputError(outdir, "a dataset already exists here (remove it first)")
    if not sources:
        raise ValueError("make_dataset needs at least one source image")
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    missing = [s for s in stamp_ids if s not in stamps]
    if missing:
        raise ValueError(f"stamp ids {missing} not among the loaded stamps")
    cfg = blobs or BlobConfig()
    if not stamp_ids and cfg.simulated_fraction < 1:
        cfg = BlobConfig(**{**cfg.__dict__, "simulated_fraction": 1.0})
    outdir.mkdir(parents=True, exist_ok=True)

    ss = np.random.SeedSequence(seed)
    s_windows, s_labels, s_blobs, s_aug, s_dark = ss.spawn(5)
    rng_labels = np.random.default_rng(s_labels)
    rng_blobs = np.random.default_rng(s_blobs)
    rng_aug = np.random.default_rng(s_aug)
    rng_dark = np.random.default_rng(s_dark)
    dcfg = distractors or DistractorConfig()

    # even split of samples over sources, windows drawn per source, then shuffled
    per_source = np.full(len(sources), n_samples // len(sources))
    per_source[: n_samples % len(sources)] += 1
    rng_win = np.random.default_rng(s_windows)
    src_idx = np.concatenate([np.full(k, i) for i, k in enumerate(per_source)])
    corners = np.concatenate(
        [_window_positions(s, rng_win, int(k), size, region, hard_fraction) for s, k in zip(sources, per_source)]
    )
    order = rng_win.permutation(n_samples)
    src_idx, corners = src_idx[order], corners[order]
    labels = (rng_labels.random(n_samples) < positive_fraction).astype(np.int8)
    noises = [s.noise for s in sources]

    meta = {
        "label": labels,
        "source": src_idx.astype(np.int16),
        "x0": corners[:, 1].astype(np.int16),
        "y0": corners[:, 0].astype(np.int16),
        "rot": np.zeros(n_samples, np.int8),
        "flip_y": np.zeros(n_samples, np.int8),
        "flip_x": np.zeros(n_samples, np.int8),
        "n_blobs": np.zeros(n_samples, np.int8),
        "n_distractors": np.zeros(n_samples, np.int8),
        "pedestal": np.zeros(n_samples, np.float32),
        "causes": np.zeros(n_samples, np.uint8),
        "peak": np.full(n_samples, np.nan, np.float32),
        "radius": np.full(n_samples, np.nan, np.float32),
        "edge_distance": np.full(n_samples, np.nan, np.float32),
        "stamp_only": np.zeros(n_samples, np.int8),
    }
    x_path = outdir / "x.npy"
    tmp_x = outdir / ".x.npy.tmp"
    x = np.lib.format.open_memmap(tmp_x, mode="w+", dtype=np.float16, shape=(n_samples, size, size))
    try:
        recipe = SampleRecipe(sources=tuple(sources), noises=tuple(noises), stamps=stamps,
                              stamp_ids=tuple(stamp_ids), blobs=cfg, distractors=dcfg,
                              noise_sigma=noise_sigma, size=size, name=name or outdir.name)
        layout = _Layout(source=src_idx, corners=corners, labels=labels)
        streams = _Streams(blobs=rng_blobs, augmentation=rng_aug, distractors=rng_dark)
        lines = _fill(x, meta, recipe, layout, streams, progress=progress)
        x.flush()
        del x
        os.replace(tmp_x, x_path)
    except BaseException:
        tmp_x.unlink(missing_ok=True)
        raise
    with atomic_path(outdir / "meta.npz") as tmp:

        with open(tmp, "wb") as f:
            np.savez(f, **meta)
    write_text_atomic(outdir / "samples.jsonl", "\n".join(lines) + "\n")

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "name": name or outdir.name,
        "seed": seed,
        "seed_streams": {"windows": 0, "labels": 1, "blobs (seed 3.3)": 2, "augmentation (seed 3.4)": 3,
                         "distractors": 4},
        "n_samples": n_samples,
        "n_positive": int(labels.sum()),
        "size": size,
        "region": region,
        "train_fraction": TRAIN_FRACTION,
        "parameters": {
            "positive_fraction": positive_fraction,
            "hard_fraction": hard_fraction,
            "noise_sigma": noise_sigma,
            "blobs": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
            "distractors": {k: list(v) if isinstance(v, tuple) else v for k, v in dcfg.__dict__.items()},
            "stamp_ids": sorted(int(s) for s in stamp_ids),
            "stamp_taper": "cosine, 1 inside 0.35 side, 0 at 0.5 side",
        },
        "cause_flags": {str(k): v for k, v in CAUSE_NAMES.items()},
        "sources": [
            {"name": s.name, "shape": list(s.data.shape), "noise": round(noises[i], 4),
             "sha256": hashlib.sha256(np.ascontiguousarray(s.data).tobytes()).hexdigest(),
             "provenance": s.provenance}
            for i, s in enumerate(sources)
        ],
        "files": {
            name_: file_sha256(outdir / name_) for name_ in ("x.npy", "meta.npz", "samples.jsonl")
        },
        **(extra or {}),
    }
    write_text_atomic(outdir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return outdir


@dataclass(frozen=True)
class SampleRecipe:
    """How the samples of one dataset are made (everything but the per-sample draws).

    Attributes
    ----------
    sources : tuple of SourceImage
        Prepared non-blob difference images.
    noises : tuple of float
        Robust noise of each source (`SourceImage.noise`, computed once).
    stamps : dict
        Real stamps by id.
    stamp_ids : tuple of int
        Stamps allowed in this dataset.
    blobs : BlobConfig
    distractors : DistractorConfig
    noise_sigma : float
        Sigma of the N(0, sigma) noise added to every sample (seed 3.4).
    size : int
        Subframe side.
    name : str
        Dataset name (progress bar).
    """

    sources: tuple[SourceImage, ...]
    noises: tuple[float, ...]
    stamps: dict[int, np.ndarray]
    stamp_ids: tuple[int, ...]
    blobs: BlobConfig
    distractors: DistractorConfig
    noise_sigma: float
    size: int
    name: str


@dataclass(frozen=True)
class _Layout:
    """Where each sample comes from: source index, window corner (row, col) and label."""

    source: np.ndarray
    corners: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class _Streams:
    """The independent random streams of `make_dataset` (seed sections 3.3, 3.4, distractors)."""

    blobs: np.random.Generator
    augmentation: np.random.Generator
    distractors: np.random.Generator


def _fill(x: np.ndarray, meta: dict[str, np.ndarray], recipe: SampleRecipe, layout: _Layout,
          streams: _Streams, *, progress: bool) -> list[str]:
    """Generate every sample into ``x`` and ``meta`` (in place); return the provenance lines."""
    from tqdm import tqdm

    size, dcfg, labels = recipe.size, recipe.distractors, layout.labels
    rng_blobs, rng_aug, rng_dark = streams.blobs, streams.augmentation, streams.distractors
    n_samples = len(labels)
    lines: list[str] = []
    iterator: Iterable[int] = range(n_samples)
    if progress:
        iterator = tqdm(iterator, total=n_samples, desc=f"dataset {recipe.name}", unit="sample")
    for i in iterator:
        k_src = int(layout.source[i])
        src, noise = recipe.sources[k_src], recipe.noises[k_src]
        y0, x0 = int(layout.corners[i, 0]), int(layout.corners[i, 1])
        frame = src.data[y0 : y0 + size, x0 : x0 + size].copy()
        meta["causes"][i] = np.bitwise_or.reduce(src.causes[y0 : y0 + size, x0 : x0 + size], axis=None)
        level: dict[str, float] = {}
        if dcfg.pedestal_sigma > 0 or dcfg.gradient_sigma > 0:  # drawn for both classes alike
            level = _add_pedestal(frame, rng_dark, dcfg, noise)
            meta["pedestal"][i] = level["pedestal_sigma"]
        blob_info: list[dict[str, Any]] = []
        if labels[i]:
            blob_info = _draw_blobs(frame, rng_blobs, recipe.stamps, recipe.stamp_ids, recipe.blobs, noise)
        dark_info: list[dict[str, Any]] = []
        if dcfg.fraction > 0 and rng_dark.random() < dcfg.fraction:  # drawn for both classes alike
            dark_info = _add_distractors(frame, rng_dark, dcfg, noise)
            meta["n_distractors"][i] = len(dark_info)
        frame += rng_aug.normal(0.0, recipe.noise_sigma, size=frame.shape).astype(np.float32)
        k = int(rng_aug.integers(4))
        fy, fx = bool(rng_aug.integers(2)), bool(rng_aug.integers(2))
        x[i] = augment_array(frame, k, fy, fx).astype(np.float16)
        meta["rot"][i], meta["flip_y"][i], meta["flip_x"][i] = k, fy, fx
        if blob_info:
            rc = augment_coords(np.array([[b["row"], b["col"]] for b in blob_info]), size, k, fy, fx)
            for b, (r, c) in zip(blob_info, rc):
                b["y"], b["x"] = round(float(r), 2), round(float(c), 2)  # position after augmentation
                b["edge_distance"] = round(float(min(r, c, size - 1 - r, size - 1 - c)), 2)
                del b["row"], b["col"]
            strongest = max(blob_info, key=lambda b: b["peak_sigma"] * b["inside_fraction"])
            meta["n_blobs"][i] = len(blob_info)
            meta["peak"][i] = strongest["peak_sigma"]
            meta["radius"][i] = strongest["radius"]
            meta["edge_distance"][i] = strongest["edge_distance"]
            meta["stamp_only"][i] = all(b["kind"] == "stamp" for b in blob_info)
        line = {
            "index": i, "label": int(labels[i]), "source": src.name, "x0": x0, "y0": y0,
            "rot90": k, "flip_y": fy, "flip_x": fx,
            "causes": [n for f, n in CAUSE_NAMES.items() if meta["causes"][i] & f],
            "blobs": blob_info,
        }
        if level:
            line["level"] = level
        if dark_info:  # positions before augmentation, like row/col of the window
            line["distractors"] = dark_info
        lines.append(json.dumps(line, separators=(",", ":")))
    return lines


def manifest_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a dataset's ``manifest.json`` (which itself hashes the data files)."""
    return file_sha256(Path(path) / "manifest.json")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a dataset's manifest, raising `InputError` if it is missing or not a dataset."""
    p = Path(path) / "manifest.json"
    if not p.is_file():
        raise InputError(path, "not a blobwatch dataset (no manifest.json)")
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(p, f"unreadable manifest ({exc})") from None
    if not str(manifest.get("generator_version", "")).startswith("blobwatch-dataset/"):
        raise InputError(p, "not a blobwatch dataset manifest")
    return manifest


def read_meta(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-sample arrays of a dataset (labels, causes, blob peak/radius/edge distance, ...)."""
    with np.load(Path(path) / "meta.npz") as f:
        return {k: f[k] for k in f.files}


class SubframeDataset:
    """A dataset directory as a torch-style map dataset streaming from a memory map.

    ``ds[i]`` returns ``(x, label)`` with ``x`` a float32 tensor of shape (1, size, size).
    ``ds.batch(indices)`` returns a stacked batch directly (faster than a DataLoader here).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        try:
            self.x = np.load(self.path / "x.npy", mmap_mode="r")
            self.meta = read_meta(self.path)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(self.path, f"damaged dataset ({exc})") from None
        self.labels = self.meta["label"].astype(np.int64)
        if self.x.ndim != 3 or len(self.x) != len(self.labels):
            raise InputError(self.path, "damaged dataset (x.npy and meta.npz disagree)")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        return torch.from_numpy(np.asarray(self.x[i], np.float32)[None]), int(self.labels[i])

    def batch(self, indices: np.ndarray) -> tuple[Any, Any]:
        """Load samples ``indices`` as tensors ``(N, 1, size, size)`` float32 and ``(N,)`` int64."""
        import torch

        idx = np.asarray(indices)
        srt = np.argsort(idx)
        arr = np.empty((len(idx), 1) + self.x.shape[1:], np.float32)
        arr[srt, 0] = self.x[idx[srt]]
        return torch.from_numpy(arr), torch.from_numpy(self.labels[idx])


# --------------------------------------------------------------------------------------------
# Background sources: prepared non-blob difference images and their hard-case maps
# --------------------------------------------------------------------------------------------


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
            bg = np.nanmedian(blocks.transpose(0, 2, 1, 3).reshape(blocks.shape[0], blocks.shape[2], -1), axis=2)
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
        on_bad = (ndimage.maximum(bad_pixels.astype(np.uint8), labels, idx) > 0
                  if bad_pixels is not None else np.zeros(n, bool))
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
    return SourceImage(name=name, data=data, causes=causes, exclude=exclude,
                       provenance={**(provenance or {}), "clip_factor": clip_factor})


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
        yxr = np.stack([np.asarray(blobs["y"])[on_mirror] + dy, np.asarray(blobs["x"])[on_mirror] + dx,
                        np.asarray(blobs["radius"])[on_mirror]], axis=1)
        for reg in registrations:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = blob_difference(images[d], images[max(0, d - 30) : d], register=reg, workers=workers)
            out.append(source_from_difference(
                f"sim{seed}_day{d:03d}_{'reg' if reg else 'unreg'}", res.data,
                clip_factor=clip_factor, bad_pixels=bad, blobs=yxr,
                provenance={"kind": "simulated", "seed": seed, "day": int(d), "registered": bool(reg),
                            "n_references": res.n_references, "method": res.method,
                            "noise_sigma": float(sim.noise[d]), "shift": [float(dy), float(dx)],
                            "shift_sigma": float(sim.params["shift_sigma"])},
            ))
    return out


def file_source(path: str | os.PathLike, *, clip_factor: float = 0.5) -> SourceImage:
    """A user-supplied non-blob difference image (FITS) as a source (no dip truth)."""
    from blobwatch.fits_io import read_blob_image

    img = read_blob_image(path, check_quality=False)  # a difference image: no blob-image gates
    prov = {"kind": "file", "path": str(path), **{k: v for k, v in img.provenance.items()
                                                 if isinstance(v, (str, int, float))}}
    return source_from_difference(Path(path).stem, img.data, clip_factor=clip_factor, provenance=prov)


# --------------------------------------------------------------------------------------------
# The standard set of datasets (training, validation and the two test sets)
# --------------------------------------------------------------------------------------------

#: Real stamps never used for training (every fourth: sizes 16, 11, 11, 18, 21 px).
HELDOUT_STAMPS = (4, 8, 12, 16, 20)
#: Simulation seeds of the training images and of the unseen test images.
TRAIN_SEEDS = (3301, 3302, 3303, 3304, 3305, 3306)
TEST_SEEDS = (3401, 3402)


@dataclass
class DatasetPlan:
    """Sizes, seeds and sources of the four standard datasets (see `build_datasets`)."""

    n_train: int = 16000
    n_val: int = 4000
    n_test: int = 4000
    seed: int = 33
    train_seeds: Sequence[int] = TRAIN_SEEDS
    test_seeds: Sequence[int] = TEST_SEEDS
    heldout_stamps: Sequence[int] = HELDOUT_STAMPS
    n_days: int = 32
    diff_days: Sequence[int] = (30, 31)
    clip_factor: float = 0.5
    distractor_fraction: float = 0.5
    pedestal_sigma: float = 0.3
    files: Sequence[str] = ()
    stamps_path: str | None = None


def save_source(source: SourceImage, cache: Path) -> None:
    """Cache a source image as ``NAME.npz`` (data, causes, exclude) plus its provenance."""
    arrays = {"data": source.data, "causes": source.causes}
    if source.exclude is not None:
        arrays["exclude"] = source.exclude
    with atomic_path(cache / f"{source.name}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_text_atomic(cache / f"{source.name}.json", json.dumps(source.provenance, indent=1))


def load_source(cache: Path, name: str) -> SourceImage | None:
    """Read a cached source image, or None if it is not cached."""
    npz, js = cache / f"{name}.npz", cache / f"{name}.json"
    if not (npz.is_file() and js.is_file()):
        return None
    with np.load(npz) as f:
        return SourceImage(name=name, data=f["data"], causes=f["causes"],
                           exclude=f["exclude"] if "exclude" in f.files else None,
                           provenance=json.loads(js.read_text()))


def source_code_sha256() -> dict[str, str]:
    """SHA-256 of the modules that make the background images (simulator, difference, prepare).

    Recorded in every manifest and part of the source-cache key: a changed simulator changes
    its random draws, so cached images made by an older version must not be reused.
    """
    from blobwatch import difference, preprocess, simulate

    return {Path(m.__file__).name: file_sha256(Path(m.__file__)) for m in (simulate, difference, preprocess)}


def cached_simulated_sources(seed: int, cache: Path, plan: DatasetPlan) -> list[SourceImage]:
    """`simulated_sources` for one seed, cached under ``cache`` (keyed by every parameter and
    by the code that makes the images)."""
    names = [f"sim{seed}_day{d:03d}_{r}" for d in plan.diff_days for r in ("reg", "unreg")]
    code = json.dumps(source_code_sha256(), sort_keys=True)
    key = f"{SOURCES_VERSION}|{seed}|{plan.n_days}|{list(plan.diff_days)}|{plan.clip_factor}|{code}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    sub = cache / tag
    loaded = [load_source(sub, n) for n in names]
    if all(s is not None for s in loaded):
        return loaded  # type: ignore[return-value]
    sources = simulated_sources(seed, n_days=plan.n_days, diff_days=plan.diff_days,
                                clip_factor=plan.clip_factor)
    sub.mkdir(parents=True, exist_ok=True)
    for s in sources:
        save_source(s, sub)
    return sources


def build_datasets(outdir: str | os.PathLike, plan: DatasetPlan, *, progress: bool = True,
                   log: Any = None) -> dict[str, Path]:
    """Write the four standard datasets under ``outdir``.

    ``train``        left 75% of the training images, training stamps + simulated blobs; a
                     pedestal/gradient on every sample and dark patches on
                     ``plan.distractor_fraction`` of them, both classes alike
    ``val``          right 25% of the same images, same blob recipe (the seed's protocol);
                     the model's threshold is chosen here
    ``test_images``  whole images from simulation seeds never used for training
    ``test_stamps``  right 25% of the training images, positives made only from held-out stamps

    Simulated sources are cached in ``outdir/sources``.
    """
    outdir = Path(outdir)
    say = log or (lambda msg: None)
    stamps = load_stamps(plan.stamps_path)
    held = sorted(int(s) for s in plan.heldout_stamps)
    unknown = [s for s in held if s not in stamps]
    if unknown:
        raise ValueError(f"held-out stamp ids {unknown} are not in the stamp file (ids {sorted(stamps)})")
    train_ids = [s for s in sorted(stamps) if s not in held]
    cache = outdir / "sources"
    train_src: list[SourceImage] = []
    for seed in plan.train_seeds:
        say(f"training images: sequence seed {seed} (simulated, or read from the cache)")
        train_src += cached_simulated_sources(int(seed), cache, plan)
    for f in plan.files:
        say(f"adding user file {f}")
        train_src.append(file_source(f, clip_factor=plan.clip_factor))
    test_src: list[SourceImage] = []
    for seed in plan.test_seeds:
        say(f"test images: sequence seed {seed} (simulated, or read from the cache)")
        test_src += cached_simulated_sources(int(seed), cache, plan)
    common = {"stamps": stamps, "progress": progress}
    prep = {"preparation": {"clip_factor": plan.clip_factor, "subframe": 256},
            "heldout_stamps": held, "training_stamps": train_ids, "code_sha256": source_code_sha256(),
            "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()}}
    out = {}
    # distractors are a training augmentation: the evaluation sets hold only simulated artifacts
    dark = DistractorConfig(pedestal_sigma=plan.pedestal_sigma, gradient_sigma=plan.pedestal_sigma,
                            fraction=plan.distractor_fraction)
    specs = [
        ("train", train_src, plan.n_train, "train", train_ids, BlobConfig(), dark, plan.seed),
        ("val", train_src, plan.n_val, "validation", train_ids, BlobConfig(), None, plan.seed + 1),
        ("test_images", test_src, plan.n_test, "all", train_ids, BlobConfig(), None, plan.seed + 2),
        ("test_stamps", train_src, plan.n_test, "validation", held,
         BlobConfig(simulated_fraction=0.0), None, plan.seed + 3),
    ]
    for name, src, n, region, ids, cfg, dcfg, seed in specs:
        if n <= 0 or not src:
            continue
        say(f"writing {name}: {n} samples")
        out[name] = make_dataset(outdir / name, src, n_samples=n, region=region, seed=seed,
                                 stamp_ids=ids, blobs=cfg, distractors=dcfg, name=name, extra=prep,
                                 **common)
    return out
