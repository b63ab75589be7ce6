"""Benchmark: PaperCNN training throughput (samples/s) of `blobwatch.train` vs a plain PyTorch loop.

Writes one synthetic on-disk dataset of ``--samples`` 256x256 subframes (float16 memmap, as
``make-dataset`` does) in a temporary directory, then measures in the same run, on the same data
and model:

* baseline: a plain PyTorch loop (``DataLoader(SubframeDataset, batch_size=100, shuffle=True)``,
  default contiguous memory format, Adam, cross-entropy);
* ``blobwatch.train.train`` (memmap batch loading, channels-last), one epoch, no validation;
* the same with ``channels_last=False``, to show where the speed-up comes from.

Each is run ``--repeats`` times (one epoch each, after a warm-up batch); medians and ratios to the
baseline are printed.

Run:  .venv/bin/python benchmarks/bench_training.py [--samples 600] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def _plain_loop(path: Path, seed: int) -> float:
    """One epoch of a textbook PyTorch loop; returns samples per second."""
    import torch
    from torch.utils.data import DataLoader

    from blobwatch.dataset import SubframeDataset
    from blobwatch.models import PaperCNN

    torch.manual_seed(seed)
    ds = SubframeDataset(path)
    model = PaperCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(ds, batch_size=100, shuffle=True, num_workers=0)
    model.train()
    xb, yb = next(iter(loader))  # warm-up batch
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(xb), yb).backward()
    start = time.perf_counter()
    n = 0
    for xb, yb in loader:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        n += len(yb)
    return n / (time.perf_counter() - start)


def _blobwatch(path: Path, out: Path, seed: int, channels_last: bool) -> float:
    """One epoch of `blobwatch.train.train`; returns samples per second (training loop only)."""
    from blobwatch.dataset import SubframeDataset
    from blobwatch.train import TrainConfig, train

    res = train(
        TrainConfig(
            dataset=str(path),
            outdir=str(out),
            epochs=1,
            adam_epochs=1,
            seed=seed,
            device="cpu",
            progress=False,
            channels_last=channels_last,
        )
    )
    return len(SubframeDataset(path)) / res.seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from blobwatch import dataset as D

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    src = [
        D.SourceImage(
            "noise", rng.normal(0, 1, (1024, 1024)).astype(np.float32), np.zeros((1024, 1024), np.uint8)
        )
    ]
    results: dict[str, list[float]] = {
        "plain PyTorch loop (baseline)": [],
        "blobwatch.train (channels-last)": [],
        "blobwatch.train (contiguous)": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = D.make_dataset(
            tmp_path / "ds",
            src,
            n_samples=args.samples,
            region="train",
            seed=args.seed,
            stamps=D.load_stamps(),
            stamp_ids=[1, 2, 3],
        )
        for r in range(args.repeats):
            results["plain PyTorch loop (baseline)"].append(_plain_loop(path, args.seed))
            results["blobwatch.train (channels-last)"].append(
                _blobwatch(path, tmp_path / f"a{r}", args.seed, True)
            )
            results["blobwatch.train (contiguous)"].append(
                _blobwatch(path, tmp_path / f"b{r}", args.seed, False)
            )
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["plain PyTorch loop (baseline)"]
    if args.json:
        print(
            json.dumps(
                {
                    "samples": args.samples,
                    "threads": args.threads,
                    "samples_per_s": med,
                    "ratio_to_baseline": {k: v / base for k, v in med.items()},
                },
                indent=1,
            )
        )
        return 0
    print(
        f"PaperCNN training, batch 100, {args.samples} samples of 256x256, {args.threads} torch threads, "
        f"median of {args.repeats}"
    )
    print(f"{'loop':<34} {'samples/s':>10} {'vs baseline':>12}")
    for k, v in med.items():
        print(f"{k:<34} {v:10.1f} {v / base:11.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
