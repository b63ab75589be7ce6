"""Autoencoder anomaly detection: train `blobwatch.models.autoencoder.ConvAutoencoder` on
blob-free subframes, and find new blobs as what it cannot reconstruct.

Training subframes are the blob-free subframes (`blobwatch.subframes`) of whole-image cases of
the 'training' seed split (never the suite's or the calibration split's seeds).  A whole image
is prepared, cut into its 16 subframes, each is reconstructed, and the smoothed reconstruction
error (`blobwatch.models.autoencoder.error_maps`, robust sigmas) is put back together into one
map; candidates are its local maxima, scored by their error.  The score of a subframe is the
maximum of its map.  The threshold is chosen on the calibration split
(`blobwatch.regression.calibrate`) by ``blobwatch train-autoencoder``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.errors import InputError
from blobwatch.regression import Candidates, Case

__all__ = [
    "SHIPPED_AUTOENCODER",
    "AutoencoderConfig",
    "AutoencoderDetector",
    "AutoencoderScorer",
    "clean_subframes",
    "shipped_autoencoder_path",
    "train_autoencoder",
    "untile",
]

#: File name of the autoencoder shipped in ``blobwatch/data``.
SHIPPED_AUTOENCODER = "autoencoder.pt"
ARCHITECTURE = "ConvAutoencoder"


def shipped_autoencoder_path() -> Path:
    """Path of the autoencoder shipped with the package."""
    return Path(str(resources.files("blobwatch") / "data" / SHIPPED_AUTOENCODER))


@dataclass
class AutoencoderConfig:
    """What and how to train.

    Attributes
    ----------
    outdir : str
        Run folder (``model.pt``, ``metrics.json``).
    channels, latent : tuple of int, int
        Network size (`ConvAutoencoder`).
    epochs, batch_size, lr : int, int, float
        Adam with a one-cycle learning rate peaking at ``lr``; mean squared error.
    sigma, mode : float, str
        Smoothing (px) and kind of the error map (`error_maps`).
    registered : bool
        Train and score on the registered difference (the daily job's input); else the plain one.
    clip_factor : float
        Preparation (`blobwatch.preprocess.prepare`).
    max_subframes : int or None
        Use at most this many training subframes (random, seeded).
    val_fraction : float
        Share of the training sequences kept for the validation loss.
    seed : int
        Initialization, order, augmentation.
    device : str
        'cpu', 'cuda' or 'auto'.
    threads : int or None
        torch CPU threads.
    """

    outdir: str = "runs/autoencoder"
    channels: tuple[int, ...] = (8, 16, 32, 32)
    latent: int = 4
    epochs: int = 8
    batch_size: int = 16
    lr: float = 3e-3
    sigma: float = 3.0
    mode: str = "signed"
    registered: bool = True
    clip_factor: float = 0.5
    max_subframes: int | None = None
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def clean_subframes(
    cases: Sequence[Case], *, registered: bool = True, clip_factor: float = 0.5, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Blob-free prepared subframes of ``cases`` (float32 ``(n, size, size)``) and the seed of
    the sequence each comes from."""
    from blobwatch.subframes import subframe_set

    subs = subframe_set(cases, registered=registered, clip_factor=clip_factor, size=size, causes=False)
    keep = subs.label == 0
    seeds = np.array([cases[k].seed for k in subs.case[keep]], dtype=np.int64)
    return subs.x[keep], seeds


def _augment(x: Any, rng: np.random.Generator) -> Any:
    import torch

    k = int(rng.integers(4))
    x = torch.rot90(x, k, (2, 3)) if k else x
    return torch.flip(x, (3,)) if rng.uniform() < 0.5 else x


def _mean_loss(model: Any, x: np.ndarray, device: Any) -> float:
    import torch

    from blobwatch.models.autoencoder import reconstruct

    if not len(x):
        return float("nan")
    rec = reconstruct(model, x, device=device)
    with torch.no_grad():
        return float(np.mean((rec - x) ** 2, dtype=np.float64))


def train_autoencoder(
    cfg: AutoencoderConfig, x: np.ndarray, seeds: np.ndarray, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train a `ConvAutoencoder` on blob-free subframes ``x`` (the last ``val_fraction`` of the
    sequences in ``seeds`` validate); write ``model.pt`` and ``metrics.json``; return the metrics.

    The model file's threshold is a placeholder (5 robust sigmas) until the caller calibrates it.
    """
    import torch
    from torch.nn import functional as F

    from blobwatch.atomic import write_text_atomic
    from blobwatch.classifier import resolve_device
    from blobwatch.modelfile import save_model
    from blobwatch.models.autoencoder import ConvAutoencoder

    if len(x) == 0:
        raise ValueError("no blob-free training subframes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device, strict=True)
    uniq = np.unique(seeds)
    n_val = min(round(cfg.val_fraction * len(uniq)), len(uniq) - 1)
    val_mask = np.isin(seeds, uniq[len(uniq) - n_val :]) if n_val > 0 else np.zeros(len(seeds), bool)
    x_train, x_val = x[~val_mask], x[val_mask]
    if cfg.max_subframes is not None and len(x_train) > cfg.max_subframes:
        x_train = x_train[np.sort(rng.choice(len(x_train), cfg.max_subframes, replace=False))]
    log(f"subframes: {len(x_train)} training, {len(x_val)} validation")

    model = ConvAutoencoder(cfg.channels, cfg.latent).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(len(x_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    history = []
    t_train = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        total, seen, t_epoch = 0.0, 0, time.perf_counter()
        for start in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[start : start + cfg.batch_size])
            xb = _augment(torch.from_numpy(x_train[idx][:, None]).to(device), rng)
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        row = {
            "epoch": epoch + 1,
            "train_loss": total / seen,
            "val_loss": _mean_loss(model, x_val, device),
            "seconds": time.perf_counter() - t_epoch,
        }
        history.append(row)
        log(
            "epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f} ({seconds:.0f} s)".format(
                **row
            )
        )
    train_seconds = time.perf_counter() - t_train

    out = Path(cfg.outdir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "history": history,
        "train_seconds": train_seconds,
        "train_subframes": len(x_train),
        "val_subframes": len(x_val),
        "training_seeds": [int(s) for s in uniq],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    metadata = {
        "kind": "anomaly",
        "threshold": 5.0,
        "config": config,
        "training": metrics,
        "torch": str(torch.__version__),
        "preparation": {
            "size": int(x.shape[-1]),
            "clip_factor": cfg.clip_factor,
            "difference": "registered" if cfg.registered else "plain",
        },
        "scoring": {"sigma": cfg.sigma, "mode": cfg.mode, "units": "robust sigmas of the smoothed error"},
    }
    save_model(
        out / "model.pt",
        model.cpu(),
        architecture=ARCHITECTURE,
        arguments={"channels": list(cfg.channels), "latent": cfg.latent},
        metadata=metadata,
    )
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def untile(tiles: np.ndarray, offsets: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Put ``(n, s, s)`` subframes back at their ``(x0, y0)`` offsets into an image of ``shape``."""
    out = np.zeros(shape, dtype=np.float32)
    size = tiles.shape[-1]
    for t, (x0, y0) in zip(tiles, offsets, strict=True):
        out[y0 : y0 + size, x0 : x0 + size] = t
    return out


class AutoencoderScorer:
    """A trained autoencoder ready to score difference images.

    Parameters
    ----------
    model : path-like, optional
        Autoencoder model file (the shipped one by default).
    device : str
        'cpu', 'cuda' or 'auto'.

    Raises
    ------
    InputError
        If the file is missing, unreadable or not an autoencoder.
    """

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu") -> None:
        from blobwatch.classifier import resolve_device
        from blobwatch.modelfile import load_model

        self.device = resolve_device(device)
        loaded = load_model(model if model is not None else shipped_autoencoder_path(), device=self.device)
        if loaded.architecture != ARCHITECTURE:
            raise InputError(
                loaded.path or "<model>", f"is a {loaded.architecture} model, not an autoencoder"
            )
        self.network = loaded.model
        self.metadata = loaded.metadata
        self.path = loaded.path
        prep, scoring = self.metadata.get("preparation", {}), self.metadata.get("scoring", {})
        self.size = int(prep.get("size", 256))
        self.clip_factor = float(prep.get("clip_factor", 0.5))
        self.registered = prep.get("difference", "registered") == "registered"
        self.sigma = float(scoring.get("sigma", 3.0))
        self.mode = str(scoring.get("mode", "signed"))
        self.threshold = float(self.metadata.get("threshold", 5.0))

    def subframe_errors(self, subframes: np.ndarray) -> np.ndarray:
        """Error maps ``(n, size, size)`` of prepared subframes."""
        from blobwatch.models.autoencoder import error_maps, reconstruct

        rec = reconstruct(self.network, subframes, device=self.device)
        return error_maps(subframes, rec, sigma=self.sigma, mode=self.mode)

    def subframe_scores(self, subframes: np.ndarray) -> np.ndarray:
        """Anomaly score of each prepared subframe: the maximum of its error map."""
        return self.subframe_errors(subframes).reshape(len(subframes), -1).max(axis=1)

    def error_image(self, difference: np.ndarray) -> np.ndarray:
        """The error map of a whole difference image (prepared and cut into subframes)."""
        from blobwatch.preprocess import prepare, tile

        tiles, offsets = tile(prepare(difference, clip_factor=self.clip_factor).data, size=self.size)
        return untile(self.subframe_errors(tiles), offsets, difference.shape)


@dataclass
class AutoencoderDetector:
    """The autoencoder as a regression-suite detector: local maxima of the error map of the
    difference it was trained on (registered or plain); score = error in robust sigmas."""

    model: str | None = None
    device: str = "cpu"
    floor: float = 3.0
    name: str = "autoencoder"
    localizes: bool = True
    description: str = "convolutional autoencoder, smoothed reconstruction error (anomaly detection)"
    _scorer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._scorer = AutoencoderScorer(self.model, device=self.device)
        self.native_threshold = self._scorer.threshold
        self.registered = self._scorer.registered

    def __call__(self, case: Case) -> Candidates:
        from blobwatch.detectors import local_peaks

        diff = case.difference if self.registered else case.plain_difference
        return local_peaks(self._scorer.error_image(diff), floor=self.floor, border=case.border)
