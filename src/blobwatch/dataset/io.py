"""A dataset on disk: `make_dataset` writes the subframes, metadata and manifest;
`SubframeDataset` streams them back."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.dataset.augment import (
    BlobConfig,
    DistractorConfig,
    add_distractors,
    add_pedestal,
    augment_array,
    augment_coords,
    draw_blobs,
)
from blobwatch.dataset.sources import CAUSE_EDGE, CAUSE_NAMES, SourceImage
from blobwatch.errors import InputError
from blobwatch.fits_io import file_sha256

__all__ = [
    "GENERATOR_VERSION",
    "TRAIN_FRACTION",
    "SampleRecipe",
    "SubframeDataset",
    "make_dataset",
    "manifest_sha256",
    "read_manifest",
    "read_meta",
    "region_bounds",
    "write_sample_records",
]


#: Bumped whenever the generated samples would change for the same seed and sources.
#: /2: pedestals, gradients and dark distractors on training subframes (`DistractorConfig`).
GENERATOR_VERSION = "blobwatch-dataset/2"

#: Fraction of the image width used for training; the rest (right side) is for validation.
TRAIN_FRACTION = 0.75


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
        [
            _window_positions(s, rng_win, int(k), size, region, hard_fraction)
            for s, k in zip(sources, per_source, strict=True)
        ]
    )
    order = rng_win.permutation(n_samples)
    src_idx, corners = src_idx[order], corners[order]
    labels = (rng_labels.random(n_samples) < positive_fraction).astype(np.int8)
    noises = [s.noise for s in sources]

    meta: dict[str, np.ndarray] = {
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
        recipe = SampleRecipe(
            sources=tuple(sources),
            noises=tuple(noises),
            stamps=stamps,
            stamp_ids=tuple(stamp_ids),
            blobs=cfg,
            distractors=dcfg,
            noise_sigma=noise_sigma,
            size=size,
            name=name or outdir.name,
        )
        layout = _Layout(source=src_idx, corners=corners, labels=labels)
        streams = _Streams(blobs=rng_blobs, augmentation=rng_aug, distractors=rng_dark)
        lines = _fill(x, meta, recipe, layout, streams, progress=progress)
        x.flush()
        del x
        os.replace(tmp_x, x_path)
    except BaseException:
        tmp_x.unlink(missing_ok=True)
        raise
    write_sample_records(outdir, meta, lines)

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "name": name or outdir.name,
        "seed": seed,
        "seed_streams": {
            "windows": 0,
            "labels": 1,
            "blobs (seed 3.3)": 2,
            "augmentation (seed 3.4)": 3,
            "distractors": 4,
        },
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
            {
                "name": s.name,
                "shape": list(s.data.shape),
                "noise": round(noises[i], 4),
                "sha256": hashlib.sha256(np.ascontiguousarray(s.data).tobytes()).hexdigest(),
                "provenance": s.provenance,
            }
            for i, s in enumerate(sources)
        ],
        "files": {name_: file_sha256(outdir / name_) for name_ in ("x.npy", "meta.npz", "samples.jsonl")},
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


def _fill(
    x: np.ndarray,
    meta: dict[str, np.ndarray],
    recipe: SampleRecipe,
    layout: _Layout,
    streams: _Streams,
    *,
    progress: bool,
) -> list[str]:
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
            level = add_pedestal(frame, rng_dark, dcfg, noise)
            meta["pedestal"][i] = level["pedestal_sigma"]
        blob_info: list[dict[str, Any]] = []
        if labels[i]:
            blob_info = draw_blobs(frame, rng_blobs, recipe.stamps, recipe.stamp_ids, recipe.blobs, noise)
        dark_info: list[dict[str, Any]] = []
        if dcfg.fraction > 0 and rng_dark.random() < dcfg.fraction:  # drawn for both classes alike
            dark_info = add_distractors(frame, rng_dark, dcfg, noise)
            meta["n_distractors"][i] = len(dark_info)
        frame += rng_aug.normal(0.0, recipe.noise_sigma, size=frame.shape).astype(np.float32)
        k = int(rng_aug.integers(4))
        fy, fx = bool(rng_aug.integers(2)), bool(rng_aug.integers(2))
        x[i] = augment_array(frame, k, fy, fx).astype(np.float16)
        meta["rot"][i], meta["flip_y"][i], meta["flip_x"][i] = k, fy, fx
        if blob_info:
            rc = augment_coords(np.array([[b["row"], b["col"]] for b in blob_info]), size, k, fy, fx)
            for b, (r, c) in zip(blob_info, rc, strict=True):
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
            "index": i,
            "label": int(labels[i]),
            "source": src.name,
            "x0": x0,
            "y0": y0,
            "rot90": k,
            "flip_y": fy,
            "flip_x": fx,
            "causes": [n for f, n in CAUSE_NAMES.items() if meta["causes"][i] & f],
            "blobs": blob_info,
        }
        if level:
            line["level"] = level
        if dark_info:  # positions before augmentation, like row/col of the window
            line["distractors"] = dark_info
        lines.append(json.dumps(line, separators=(",", ":")))
    return lines


def write_sample_records(outdir: Path, meta: dict[str, np.ndarray], lines: Sequence[str]) -> None:
    """Write a dataset's per-sample arrays (``meta.npz``) and provenance lines (``samples.jsonl``)."""
    with atomic_path(outdir / "meta.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **meta)
    write_text_atomic(outdir / "samples.jsonl", "\n".join(lines) + "\n")


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
        arr = np.empty((len(idx), 1, *self.x.shape[1:]), np.float32)
        arr[srt, 0] = self.x[idx[srt]]
        return torch.from_numpy(arr), torch.from_numpy(self.labels[idx])
