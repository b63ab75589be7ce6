"""The standard set of datasets (training, validation, two test sets), their plan, and the
cache of simulated sources."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.dataset.augment import BlobConfig, DistractorConfig, load_stamps
from blobwatch.dataset.io import make_dataset
from blobwatch.dataset.sources import SourceImage, file_source, simulated_sources
from blobwatch.fits_io import file_sha256

__all__ = [
    "HELDOUT_STAMPS",
    "SOURCES_VERSION",
    "TEST_SEEDS",
    "TRAIN_SEEDS",
    "DatasetPlan",
    "build_datasets",
    "cached_simulated_sources",
    "load_source",
    "save_source",
    "source_code_sha256",
]


#: Bumped whenever the simulated background images (the source cache) would change; the cache
#: key also holds the SHA-256 of the simulator, difference and preparation code.
SOURCES_VERSION = "blobwatch-dataset/1"

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
    with atomic_path(cache / f"{source.name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
    write_text_atomic(cache / f"{source.name}.json", json.dumps(source.provenance, indent=1))


def load_source(cache: Path, name: str) -> SourceImage | None:
    """Read a cached source image, or None if it is not cached."""
    npz, js = cache / f"{name}.npz", cache / f"{name}.json"
    if not (npz.is_file() and js.is_file()):
        return None
    with np.load(npz) as f:
        return SourceImage(
            name=name,
            data=f["data"],
            causes=f["causes"],
            exclude=f["exclude"] if "exclude" in f.files else None,
            provenance=json.loads(js.read_text()),
        )


def source_code_sha256() -> dict[str, str]:
    """SHA-256 of the modules that make the background images (simulator, difference, prepare).

    Recorded in every manifest and part of the source-cache key: a changed simulator changes
    its random draws, so cached images made by an older version must not be reused.
    """
    from blobwatch import difference, preprocess, simulate

    files = [Path(inspect.getfile(m)) for m in (simulate, difference, preprocess)]
    return {f.name: file_sha256(f) for f in files}


def cached_simulated_sources(seed: int, cache: Path, plan: DatasetPlan) -> list[SourceImage]:
    """`simulated_sources` for one seed, cached under ``cache`` (keyed by every parameter and
    by the code that makes the images)."""
    names = [f"sim{seed}_day{d:03d}_{r}" for d in plan.diff_days for r in ("reg", "unreg")]
    code = json.dumps(source_code_sha256(), sort_keys=True)
    key = f"{SOURCES_VERSION}|{seed}|{plan.n_days}|{list(plan.diff_days)}|{plan.clip_factor}|{code}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    sub = cache / tag
    loaded = [s for s in (load_source(sub, n) for n in names) if s is not None]
    if len(loaded) == len(names):
        return loaded
    sources = simulated_sources(
        seed, n_days=plan.n_days, diff_days=plan.diff_days, clip_factor=plan.clip_factor
    )
    sub.mkdir(parents=True, exist_ok=True)
    for s in sources:
        save_source(s, sub)
    return sources


def build_datasets(
    outdir: str | os.PathLike, plan: DatasetPlan, *, progress: bool = True, log: Any = None
) -> dict[str, Path]:
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
    prep = {
        "preparation": {"clip_factor": plan.clip_factor, "subframe": 256},
        "heldout_stamps": held,
        "training_stamps": train_ids,
        "code_sha256": source_code_sha256(),
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()},
    }
    out = {}
    # distractors are a training augmentation: the evaluation sets hold only simulated artifacts
    dark = DistractorConfig(
        pedestal_sigma=plan.pedestal_sigma,
        gradient_sigma=plan.pedestal_sigma,
        fraction=plan.distractor_fraction,
    )
    specs = [
        ("train", train_src, plan.n_train, "train", train_ids, BlobConfig(), dark, plan.seed),
        ("val", train_src, plan.n_val, "validation", train_ids, BlobConfig(), None, plan.seed + 1),
        ("test_images", test_src, plan.n_test, "all", train_ids, BlobConfig(), None, plan.seed + 2),
        (
            "test_stamps",
            train_src,
            plan.n_test,
            "validation",
            held,
            BlobConfig(simulated_fraction=0.0),
            None,
            plan.seed + 3,
        ),
    ]
    for name, src, n, region, ids, cfg, dcfg, seed in specs:
        if n <= 0 or not src:
            continue
        say(f"writing {name}: {n} samples")
        out[name] = make_dataset(
            outdir / name,
            src,
            n_samples=n,
            region=region,
            seed=seed,
            stamp_ids=ids,
            blobs=cfg,
            distractors=dcfg,
            name=name,
            extra=prep,
            stamps=stamps,
            progress=progress,
        )
    return out
