"""Training of the localizing network (`blobwatch.models.BlobUNet`).

Training images come from `blobwatch.variation` on the 'training' seed split (disjoint from the
regression suite and its calibration split): raw sequences with several new blobs injected into
each raw current image, differenced by the daily job's registration (`blobwatch.regression`
caches them like the suite).  Patches of 128x128 are cut around every new blob (positives,
centre anywhere in the patch), around existing blobs (where misregistration leaves dips) and at
random; the target is a disc mask of each new blob.  Optionally (``extra_stamps``) more blobs
shaped like the training stamps, at zooms down to compact sizes, are injected into each raw
current image as the generator does it (the current image times one minus the loss; the
registered references are in its frame, so the difference changes by the same amount).  The
loop is plain PyTorch: Adam with a one-cycle learning rate, binary cross-entropy, random flips
and quarter turns; ``init`` fine-tunes an existing model instead of starting afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.regression import Case

__all__ = ["FCNTrainConfig", "blob_mask", "cut_patches", "inject_stamps", "train_fcn"]


@dataclass
class FCNTrainConfig:
    """What and how to train.

    Attributes
    ----------
    outdir : str
        Run folder (model, metrics, log).
    cache : str
        Cache of the training cases (as for the suite).
    sequences : int
        Training-split sequences; each gives ``cases`` current images with ``new_blobs`` new blobs.
    val_sequences : int
        The last of them are kept for validation loss.
    patch : int
        Patch side (px).
    negatives_per_case : int
        Patches without a forced blob per case (half at existing blobs, half at random).
    epochs, batch_size, lr : int, int, float
        Adam with a cosine decay from ``lr``.
    width, depth : int
        BlobUNet size.
    pos_weight : float
        Weight of blob pixels in the cross-entropy.
    extra_stamps : int
        Extra stamp-shaped blobs injected into each training image (`inject_stamps`).
    stamp_zoom : (float, float)
        Zoom range of those stamps (the generator's is 0.8-1.3).
    init : str or None
        A localizing model file to fine-tune (its width and depth are used).
    peak_smooth : float
        Smoothing (px) of the probability map before its peaks are taken, recorded in the model
        file (``peak_smooth_sigma``) for `blobwatch.fcn.FCNDetector`.
    seed : int
        Patch positions, augmentation, initialization.
    device : str
        'cpu', 'cuda' or 'auto'.
    threads : int or None
        torch CPU threads.
    """

    outdir: str = "runs/fcn"
    cache: str = ""
    sequences: int = 48
    val_sequences: int = 3
    cases: int = 6
    new_blobs: int = 12
    patch: int = 128
    negatives_per_case: int = 12
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    width: int = 12
    depth: int = 3
    pos_weight: float = 5.0
    extra_stamps: int = 0
    stamp_zoom: tuple[float, float] = (0.6, 1.3)
    init: str | None = None
    peak_smooth: float = 0.5
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def blob_mask(
    shape: tuple[int, int], blobs: Sequence[dict[str, Any]], *, fraction: float = 0.8
) -> np.ndarray:
    """uint8 mask of the new blobs: discs of ``fraction`` x radius around each centre."""
    mask = np.zeros(shape, dtype=np.uint8)
    for b in blobs:
        r = max(fraction * float(b["radius"]), 2.0)
        r0, r1 = max(int(b["y"] - r - 1), 0), min(int(b["y"] + r + 2), shape[0])
        c0, c1 = max(int(b["x"] - r - 1), 0), min(int(b["x"] + r + 2), shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        mask[r0:r1, c0:c1] |= ((yy - b["y"]) ** 2 + (xx - b["x"]) ** 2 <= r * r).astype(np.uint8)
    return mask


def inject_stamps(
    case: Case,
    rng: np.random.Generator,
    n: int,
    stamps: Sequence[int],
    *,
    zoom: tuple[float, float] = (0.6, 1.3),
    snr: tuple[float, float] = (5.0, 40.0),
    max_depth: float = 0.3,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The case's difference with ``n`` more stamp-shaped blobs injected into its raw current image.

    Each blob is one of ``stamps`` (ids in the shipped stamp file: pass the training stamps only),
    rotated, flipped and zoomed, placed anywhere in the science area, with a depth for a
    white-noise matched-filter S/N drawn log-uniformly from ``snr`` (at most ``max_depth``).
    The current image is multiplied by one minus the loss; the references are registered to its
    frame, so the difference loses ``loss x current``.

    Returns
    -------
    (ndarray, list of dict)
        The new difference (float32) and the injected blobs (``x``, ``y``, ``radius``, ``depth``,
        ``stamp``), in the form of the case's truth.
    """
    from blobwatch.dataset import load_stamps
    from blobwatch.stats import robust_sigma
    from blobwatch.variation import _place_patch, _stamp_profile

    table = load_stamps()
    current = case.current.astype(np.float32)
    loss = np.zeros_like(current)
    sigma = robust_sigma(case.difference[np.isfinite(case.difference)])
    size, margin = current.shape[0], case.border + 4
    blobs = []
    for _ in range(n):
        stamp_id = int(stamps[int(rng.integers(len(stamps)))])
        profile = np.rot90(table[stamp_id], int(rng.integers(4)))
        if rng.uniform() < 0.5:
            profile = profile[:, ::-1]
        profile = _stamp_profile(np.ascontiguousarray(profile), float(rng.uniform(*zoom)))
        y, x = rng.uniform(margin, size - 1 - margin, 2)
        unit, where = _place_patch(current.shape, profile, float(y), float(x))
        signal = float(np.sqrt(np.sum((unit * current[where]) ** 2)))
        target = float(np.exp(rng.uniform(*np.log(snr))))
        depth = float(np.clip(target * sigma / max(signal, 1e-12), 1e-4, max_depth))
        loss[where] = 1.0 - (1.0 - loss[where]) * (1.0 - depth * unit)
        blobs.append(
            {
                "x": float(x),
                "y": float(y),
                "radius": 0.35 * min(profile.shape),
                "depth": depth,
                "stamp": stamp_id,
            }
        )
    return (case.difference - loss * current).astype(np.float32), blobs


def cut_patches(
    case: Case,
    rng: np.random.Generator,
    patch: int,
    negatives: int,
    *,
    extra_stamps: int = 0,
    stamps: Sequence[int] = (),
    stamp_zoom: tuple[float, float] = (0.6, 1.3),
) -> tuple[np.ndarray, np.ndarray]:
    """Input planes ``(n, 2, patch, patch)`` float16 and masks ``(n, patch, patch)`` uint8 of one case.

    With ``extra_stamps`` (and the ``stamps`` they may be drawn from), that many more blobs are
    injected first (`inject_stamps`), each with a patch of its own.
    """
    from blobwatch.fcn import fcn_inputs

    blobs = list(case.truth.get("blobs") or ([case.blob] if case.blob else []))
    difference = case.difference
    if extra_stamps:
        difference, extra = inject_stamps(case, rng, extra_stamps, stamps, zoom=stamp_zoom)
        blobs += extra
    planes = fcn_inputs(difference, case.reference)
    mask = blob_mask(planes.shape[1:], blobs)
    size = planes.shape[1]
    centres = [
        (b["y"] + rng.uniform(-0.35, 0.35) * patch, b["x"] + rng.uniform(-0.35, 0.35) * patch) for b in blobs
    ]
    ey, ex, _ = case.existing_in_image()
    for k in range(negatives):
        if k % 2 == 0 and ey.size:
            i = int(rng.integers(ey.size))
            centres.append((ey[i] + rng.uniform(-20, 20), ex[i] + rng.uniform(-20, 20)))
        else:
            centres.append(tuple(rng.uniform(0, size, 2)))
    xs, ys = [], []
    half = patch // 2
    for cy, cx in centres:
        r0 = int(np.clip(round(cy) - half, 0, size - patch))
        c0 = int(np.clip(round(cx) - half, 0, size - patch))
        xs.append(planes[:, r0 : r0 + patch, c0 : c0 + patch])
        ys.append(mask[r0 : r0 + patch, c0 : c0 + patch])
    return np.stack(xs).astype(np.float16), np.stack(ys)


def _augment(x: Any, y: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    import torch

    k = int(rng.integers(4))
    if k:
        x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    if rng.uniform() < 0.5:
        x, y = torch.flip(x, (3,)), torch.flip(y, (3,))
    return x, y


def train_fcn(
    cfg: FCNTrainConfig, cases: Sequence[Case], *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train a BlobUNet on patches of ``cases`` (the last ``val_sequences`` sequences validate).

    Writes ``model.pt`` (with metadata) and ``metrics.json`` in ``cfg.outdir``; returns the metrics.
    """
    import torch
    from torch.nn import functional as F

    from blobwatch.classifier import resolve_device
    from blobwatch.modelfile import save_model
    from blobwatch.models.blob_unet import BlobUNet

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device, strict=True)
    seeds = sorted({c.seed for c in cases})
    n_val = min(cfg.val_sequences, len(seeds) - 1)  # at least one sequence trains
    val_seeds = set(seeds[len(seeds) - n_val :]) if n_val > 0 else set()

    t0 = time.perf_counter()
    parts: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {False: [], True: []}
    for case in cases:
        parts[case.seed in val_seeds].append(
            cut_patches(
                case,
                rng,
                cfg.patch,
                cfg.negatives_per_case,
                extra_stamps=cfg.extra_stamps,
                stamps=cfg.extra.get("stamps", ()),
                stamp_zoom=cfg.stamp_zoom,
            )
        )
        case.release()
    data = {
        v: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
        for v, ps in parts.items()
        if ps
    }
    patch_seconds = time.perf_counter() - t0
    x_train, y_train = data[False]
    log(
        f"patches: {len(x_train)} training, {len(data[True][0]) if True in data else 0} validation "
        f"({patch_seconds:.0f} s)"
    )

    if cfg.init:
        from blobwatch.modelfile import load_model

        initial = load_model(cfg.init)
        if initial.architecture != "BlobUNet":
            raise ValueError(f"{cfg.init}: not a localizing model ({initial.architecture})")
        cfg.width, cfg.depth = int(initial.arguments["width"]), int(initial.arguments["depth"])
        model = initial.model.to(device)
    else:
        model = BlobUNet(in_channels=2, width=cfg.width, depth=cfg.depth).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(len(x_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    pos_weight = torch.tensor([cfg.pos_weight], device=device)
    history = []
    t_train = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        t_epoch = time.perf_counter()
        for start in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[start : start + cfg.batch_size])
            xb = torch.from_numpy(x_train[idx].astype(np.float32)).to(device)
            yb = torch.from_numpy(y_train[idx][:, None].astype(np.float32)).to(device)
            xb, yb = _augment(xb, yb, rng)
            loss = F.binary_cross_entropy_with_logits(model(xb), yb, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        row = {
            "epoch": epoch + 1,
            "train_loss": total / seen,
            "seconds": time.perf_counter() - t_epoch,
            "samples_per_second": seen / (time.perf_counter() - t_epoch),
        }
        if True in data:
            row["val_loss"] = _evaluate_loss(model, *data[True], cfg, device, pos_weight)
        history.append(row)
        log(
            "epoch {epoch}: train loss {train_loss:.4f}".format(**row)
            + (f", val loss {row['val_loss']:.4f}" if "val_loss" in row else "")
            + f" ({row['seconds']:.0f} s, {row['samples_per_second']:.1f} samples/s)"
        )
    train_seconds = time.perf_counter() - t_train

    out = Path(cfg.outdir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "history": history,
        "patch_seconds": patch_seconds,
        "train_seconds": train_seconds,
        "train_patches": int(len(x_train)),
        "val_patches": int(len(data[True][0])) if True in data else 0,
        "training_seeds": seeds,
        "validation_seeds": sorted(val_seeds),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    metadata = {
        "kind": "localizing",
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "training": metrics,
        "threshold": 0.5,
        "peak_smooth_sigma": float(cfg.peak_smooth),
        "torch": str(torch.__version__),
    }
    if cfg.init:  # the starting point, by content: its path may later hold another model
        metadata["init_sha256"] = hashlib.sha256(Path(cfg.init).read_bytes()).hexdigest()
        metadata["init_training_seconds"] = (initial.metadata.get("training") or {}).get("train_seconds")
    save_model(
        out / "model.pt",
        model.cpu(),
        architecture="BlobUNet",
        arguments={"in_channels": 2, "width": cfg.width, "depth": cfg.depth, "stem": model.stem},
        metadata=metadata,
    )
    from blobwatch.atomic import write_text_atomic

    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def _evaluate_loss(
    model: Any, x: np.ndarray, y: np.ndarray, cfg: FCNTrainConfig, device: Any, pos_weight: Any
) -> float:
    import torch
    from torch.nn import functional as F

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), 64):
            xb = torch.from_numpy(x[start : start + 64].astype(np.float32)).to(device)
            yb = torch.from_numpy(y[start : start + 64][:, None].astype(np.float32)).to(device)
            total += float(F.binary_cross_entropy_with_logits(model(xb), yb, pos_weight=pos_weight)) * len(xb)
    return total / len(x)
