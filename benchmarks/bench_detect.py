"""Benchmark: how long `blobwatch.detect.detect` takes for one 1024x1024 difference image.

Simulates a CSM-monitor sequence (31 days, a new blob on day 30), builds the registered difference
of day 30 against days 0-29 once, then times, on that same difference and in the same run:

* the seed protocol alone (baseline): ``prepare`` + ``tile`` + classify the 16 subframes;
* the matched filter alone;
* the full ``detect`` (seed protocol + matched filter + dip test + centred-window CNN).

It reports medians over ``--repeats`` runs and the ratio of each to the baseline.

Run:  .venv/bin/python benchmarks/bench_detect.py [--model PATH] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Callable


def _median_time(func: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import DetectionParameters, detect, matched_filter
    from blobwatch.difference import blob_difference
    from blobwatch.fits_io import BlobImage
    from blobwatch.preprocess import prepare, tile
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    torch.set_num_threads(args.threads)
    sim = simulate_sequence(SimulationConfig(n_days=31, seed=args.seed, new_blob_days=(30,)))
    images = [BlobImage(data=sim.images[d], mjd=float(sim.mjd[d]), path=f"day{d:03d}") for d in range(31)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        difference = blob_difference(images[30], images[:30]).data
    clf = BlobClassifier(args.model, device=args.device)
    params = DetectionParameters()

    def seed_protocol() -> None:
        prepared = prepare(difference, clip_factor=clf.clip_factor).data
        subframes, _ = tile(prepared, size=clf.size)
        clf.predict_proba(subframes)

    prepared = prepare(difference, clip_factor=clf.clip_factor).data
    detection = detect(difference, clf)  # warm-up, and the result to report
    results = {
        "seed protocol (prepare + 16 subframes)": _median_time(seed_protocol, args.repeats),
        "matched filter (8 scales)": _median_time(lambda: matched_filter(prepared, params.sigmas, params.background_sigma), args.repeats),
        "detect (full)": _median_time(lambda: detect(difference, clf), args.repeats),
    }
    base = results["seed protocol (prepare + 16 subframes)"]
    truth = sim.new_blobs()[0]
    dy, dx = sim.shifts[30]
    summary = {
        "device": str(clf.device),
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "seconds": results,
        "ratio_to_seed_protocol": {k: v / base for k, v in results.items()},
        "candidates": [(round(c.x, 2), round(c.y, 2), round(c.probability, 4)) for c in detection.candidates],
        "truth": (round(float(truth["x"] + dx), 2), round(float(truth["y"] + dy), 2)),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"device {summary['device']}, torch threads {args.threads}, median of {args.repeats} runs")
        for name, seconds in results.items():
            print(f"  {name:<42} {seconds * 1000:8.1f} ms   x{seconds / base:5.2f}")
        print(f"  candidates: {summary['candidates']}  truth: {summary['truth']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
