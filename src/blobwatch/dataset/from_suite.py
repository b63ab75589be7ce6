"""A PaperCNN training set made like the sky: the regression generator's training split, cut as at inference.

`blobwatch.dataset.make_dataset` adds blobs to prepared subframes of simulated differences; a
network trained on that is near chance on the regression suite (docs/tune.md).  This module writes,
in the same on-disk format (`SubframeDataset` reads it; ``blobwatch train`` and ``blobwatch tune``
take it), the prepared 256x256 subframes of the whole-image cases of the regression generator's
*training* seed split (`blobwatch.variation`, seeds disjoint from the suite and its calibration
split; raw-injected blobs from ring/disc profiles and the 15 training stamps, offsets 0-3 px,
non-translational changes, correlated noise, edges, overlaps, artifacts):

* both the plain (the seed's, unregistered) and the registered difference of every case, prepared
  and cut exactly as the calibration split is (`blobwatch.evaluate.suite_subframes`);
* labels as the calibration split defines them: a subframe holding a new blob's centre is
  positive, one holding part of a blob but no centre is dropped;
* split by sequence: the last ``val_sequences`` sequences make ``val``, the rest ``train``;
* training subframes get a random rot90 and flips (the dihedral group: the sky has no preferred
  orientation); each positive is written ``positive_copies`` times in distinct orientations, so
  that blob subframes are as common as blank ones.  Validation subframes are written once, as cut.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import write_text_atomic
from blobwatch.dataset.augment import augment_array, augment_coords
from blobwatch.dataset.io import write_sample_records
from blobwatch.errors import InputError
from blobwatch.fits_io import file_sha256

__all__ = ["SUITE_GENERATOR_VERSION", "make_suite_datasets", "orientations"]

#: Generator version of these datasets (`read_manifest` accepts any ``blobwatch-dataset/...``).
SUITE_GENERATOR_VERSION = "blobwatch-dataset/suite-1"
#: The 8 orientations (rot90 count, flip rows, flip columns) of the dihedral group.
_DIHEDRAL = tuple((k, fy, False) for k in range(4) for fy in (False, True))
_PROTOCOL_CODE = {"plain": 0, "registered": 1}


def orientations(rng: np.random.Generator, copies: int) -> list[tuple[int, bool, bool]]:
    """``copies`` distinct orientations of the dihedral group, drawn at random (at most 8)."""
    pick = rng.choice(len(_DIHEDRAL), size=min(max(copies, 1), len(_DIHEDRAL)), replace=False)
    return [_DIHEDRAL[int(i)] for i in pick]


def _write(
    outdir: Path,
    parts: list[dict[str, np.ndarray]],
    lines: list[str],
    manifest: dict[str, Any],
) -> Path:
    """Write ``x.npy`` (float16), ``meta.npz``, ``samples.jsonl`` and ``manifest.json`` to ``outdir``."""
    if (outdir / "manifest.json").exists():
        raise InputError(outdir, "a dataset already exists here (remove it first)")
    outdir.mkdir(parents=True, exist_ok=True)
    meta = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "x"}
    n = len(meta["label"])
    size = int(parts[0]["x"].shape[-1])
    tmp_x = outdir / ".x.npy.tmp"
    try:
        x = np.lib.format.open_memmap(tmp_x, mode="w+", dtype=np.float16, shape=(n, size, size))
        start = 0
        for p in parts:
            x[start : start + len(p["x"])] = p["x"]
            start += len(p["x"])
        x.flush()
        del x
        os.replace(tmp_x, outdir / "x.npy")
    except BaseException:
        tmp_x.unlink(missing_ok=True)
        raise
    write_sample_records(outdir, meta, lines)
    manifest = {
        **manifest,
        "n_samples": n,
        "n_positive": int(meta["label"].sum()),
        "size": size,
        "files": {name: file_sha256(outdir / name) for name in ("x.npy", "meta.npz", "samples.jsonl")},
    }
    write_text_atomic(outdir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return outdir


def _sequence_samples(
    sub: Any,
    source: int,
    rng: np.random.Generator | None,
    positive_copies: int,
    blobs_of: Callable[[int], list[dict[str, Any]]],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Samples (arrays and provenance lines) of one sequence's subframes; ``rng`` None: as cut."""
    size = int(sub.x.shape[-1])
    xs: list[np.ndarray] = []
    rows: list[tuple[int, int, bool, bool, int]] = []
    lines: list[str] = []
    for i in range(len(sub.label)):
        if rng is None:
            views = [(0, False, False)]
        else:
            views = orientations(rng, positive_copies if sub.label[i] else 1)
            if rng.random() < 0.5:  # column flips complete the group
                views = [(k, fy, True) for k, fy, _ in views]
        x0, y0 = (int(v) for v in sub.offsets[i])
        inside = [
            b for b in blobs_of(int(sub.case[i])) if x0 <= b["x"] < x0 + size and y0 <= b["y"] < y0 + size
        ]
        for copy, (k, fy, fx) in enumerate(views):
            xs.append(augment_array(sub.x[i], k, fy, fx))
            rows.append((i, k, fy, fx, copy))
            blob_lines = []
            if inside:
                rc = augment_coords(np.array([[b["y"] - y0, b["x"] - x0] for b in inside]), size, k, fy, fx)
                for b, (r, c) in zip(inside, rc, strict=True):
                    blob_lines.append(
                        {
                            "y": round(float(r), 2),
                            "x": round(float(c), 2),
                            "radius": round(float(b["radius"]), 2),
                            "snr": round(float(b["snr"]), 2),
                            "profile": b.get("profile"),
                            "stamp": b.get("stamp"),
                            "placement": b.get("placement"),
                        }
                    )
            lines.append(
                json.dumps(
                    {
                        "label": int(sub.label[i]),
                        "sequence": int(sub.seq[i]),
                        "case": int(sub.case[i]),
                        "difference": str(sub.protocol[i]),
                        "x0": x0,
                        "y0": y0,
                        "rot90": k,
                        "flip_y": fy,
                        "flip_x": fx,
                        "copy": copy,
                        "blobs": blob_lines,
                    },
                    separators=(",", ":"),
                )
            )
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    out = {
        "x": np.stack(xs).astype(np.float16) if xs else np.zeros((0, size, size), np.float16),
        "label": sub.label[idx].astype(np.int8),
        "source": np.full(len(idx), source, np.int16),
        "sequence": sub.seq[idx].astype(np.int64),
        "case": sub.case[idx].astype(np.int8),
        "difference": np.array([_PROTOCOL_CODE[str(p)] for p in sub.protocol[idx]], np.int8),
        "x0": sub.offsets[idx, 0].astype(np.int16),
        "y0": sub.offsets[idx, 1].astype(np.int16),
        "rot": np.array([r[1] for r in rows], np.int8),
        "flip_y": np.array([r[2] for r in rows], np.int8),
        "flip_x": np.array([r[3] for r in rows], np.int8),
        "copy": np.array([r[4] for r in rows], np.int8),
        "n_blobs": sub.n_blobs[idx].astype(np.int8),
        "snr": sub.snr[idx].astype(np.float32),
        # fields of make_dataset's meta that have no meaning here (evaluate's breakdowns skip NaN)
        "causes": np.zeros(len(idx), np.uint8),
        "peak": np.full(len(idx), np.nan, np.float32),
        "radius": np.full(len(idx), np.nan, np.float32),
        "edge_distance": np.full(len(idx), np.nan, np.float32),
        "stamp_only": np.zeros(len(idx), np.int8),
    }
    return out, lines


def make_suite_datasets(
    outdir: str | os.PathLike,
    cases: Sequence[Any],
    *,
    size: int = 256,
    clip_factor: float = 0.5,
    val_sequences: int = 6,
    positive_copies: int = 2,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Write ``OUTDIR/train`` and ``OUTDIR/val`` from whole-image cases (see module docstring).

    Parameters
    ----------
    outdir : path-like
        Output folder (must not hold these datasets yet).
    cases : sequence of blobwatch.regression.Case
        The training split's cases (several sequences; a sequence goes wholly to one set).
    size, clip_factor : int, float
        Subframe side and preparation clipping (`blobwatch.preprocess.prepare`).
    val_sequences : int
        The last (highest-seed) sequences that make the validation set; at least one trains.
    positive_copies : int
        Orientations (1-8) each training positive is written in; blank subframes get one.
    seed : int
        Seed of the orientations.
    extra : dict, optional
        More manifest entries (the variation settings, the command).

    Returns
    -------
    dict
        ``{'train': path, 'val': path}`` (``val`` absent when ``val_sequences`` is 0).

    Raises
    ------
    InputError
        If a dataset already exists there.
    ValueError
        If there are no cases or fewer than two sequences for a validation set.
    """
    from tqdm import tqdm

    from blobwatch.evaluate import suite_subframes

    out = Path(outdir)
    for name in ("train", "val"):
        if (out / name / "manifest.json").exists():
            raise InputError(out / name, "a dataset already exists here (remove it first)")
    seeds = sorted({int(c.seed) for c in cases})
    if not seeds:
        raise ValueError("no cases to make a dataset from")
    n_val = min(max(val_sequences, 0), len(seeds) - 1)
    val_seeds = set(seeds[len(seeds) - n_val :]) if n_val else set()
    rng = np.random.default_rng(seed)
    by_seed: dict[int, list[Any]] = {s: [] for s in seeds}
    for c in cases:
        by_seed[int(c.seed)].append(c)
    parts: dict[str, list[dict[str, np.ndarray]]] = {"train": [], "val": []}
    lines: dict[str, list[str]] = {"train": [], "val": []}
    sources: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for s in tqdm(seeds, desc="sequences", unit="seq", disable=not progress):
        seq_cases = by_seed[s]
        which = "val" if s in val_seeds else "train"
        blobs = {
            int(c.index): list(c.truth.get("blobs") or ([c.blob] if c.blob is not None else []))
            for c in seq_cases
        }
        sub = suite_subframes(seq_cases, size=size, clip_factor=clip_factor)
        arrays, seq_lines = _sequence_samples(
            sub, len(sources[which]), rng if which == "train" else None, positive_copies, blobs.__getitem__
        )
        parts[which].append(arrays)
        lines[which].extend(seq_lines)
        truth_path = Path(seq_cases[0].folder) / "truth.json"
        sources[which].append(
            {
                "name": f"{seq_cases[0].split}/seq{s}",
                "sequence": s,
                "cases": len(seq_cases),
                "new_blobs": int(sum(len(b) for b in blobs.values())),
                "truth_sha256": hashlib.sha256(truth_path.read_bytes()).hexdigest(),
                "key": seq_cases[0].truth.get("key") or json.loads(truth_path.read_text()).get("key"),
            }
        )
    recipe = (
        "the prepared subframes (blobwatch.evaluate.suite_subframes: prepare + 16 tiles, as at "
        "inference) of the plain and the registered difference of every case of the regression "
        "generator's training seed split; a subframe holding a new blob's centre is positive, one "
        "holding only part of a blob is dropped; split by sequence (the last sequences validate); "
        "training subframes get a random dihedral orientation, positives written in "
        f"{positive_copies} distinct ones; validation subframes as cut"
    )
    result: dict[str, Path] = {}
    for name in ("train", "val"):
        if not parts[name]:
            continue
        for i, line in enumerate(lines[name]):
            lines[name][i] = '{"index":' + str(i) + "," + line[1:]
        manifest = {
            "generator_version": SUITE_GENERATOR_VERSION,
            "name": name,
            "seed": seed,
            "region": f"{name} sequences",
            "recipe": recipe,
            "preparation": {"clip_factor": clip_factor, "size": size},
            "parameters": {
                "noise_sigma": 0.0,
                "positive_copies": positive_copies if name == "train" else 1,
                "augmentation": "random rot90 and flips" if name == "train" else "none",
                "val_sequences": n_val,
                "differences": ["plain", "registered"],
                "label": "a new blob's centre inside the subframe; partial blobs dropped",
            },
            "sources": sources[name],
            **(extra or {}),
        }
        result[name] = _write(out / name, parts[name], lines[name], manifest)
        m = json.loads((out / name / "manifest.json").read_text())
        log(
            f"{name}: {m['n_samples']} subframes, {m['n_positive']} with a new blob, {len(sources[name])} sequences"
        )
    return result
