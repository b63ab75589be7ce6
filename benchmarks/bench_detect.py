"""Benchmark: how long `blobwatch.detect.detect` takes for one 1024x1024 difference image.

Simulates a CSM-monitor sequence (31 days, a new blob on day 30), builds the registered difference
of day 30 against days 0-29 once, then times, on that same difference and in the same run:

* the seed protocol alone (baseline): ``prepare`` + ``tile`` + classify the 16 subframes;
* the matched filter alone;
* the full ``detect`` (seed protocol + matched filter + dip test + centred-window CNN).

It reports medians over ``--repeats`` runs and the ratio of each to the baseline.

Two further checks (not timings) live here too, so the numbers in docs/detect.md can be rerun:

``--sequence``  the monitor's acceptance check: a 45-day simulated sequence with one new blob on
                day 40; registered differences of days 5-44 against the preceding (up to) 30
                images; `detect` on each; reports whether the blob is found (within 3 px) on days
                40-44 and every candidate elsewhere (false alarms).
``--radius``    radius and position accuracy on single simulated disc and ring blobs.

Run:  .venv/bin/python benchmarks/bench_detect.py [--model PATH] [--repeats 7] [--threads 1]
      .venv/bin/python benchmarks/bench_detect.py --sequence --seed 2021 [--no-stack]
      .venv/bin/python benchmarks/bench_detect.py --radius
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable


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
    parser.add_argument("--sequence", action="store_true", help="run the 45-day acceptance check instead")
    parser.add_argument(
        "--no-stack", action="store_true", help="--sequence: pass plain arrays (no existing-blob test)"
    )
    parser.add_argument("--radius", action="store_true", help="run the radius/position calibration instead")
    args = parser.parse_args(argv)
    if args.sequence:
        return sequence_check(args)
    if args.radius:
        return radius_check(args)

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
        "matched filter (8 scales)": _median_time(
            lambda: matched_filter(prepared, params.sigmas, params.background_sigma), args.repeats
        ),
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


def sequence_check(args: argparse.Namespace) -> int:
    """Detect on every day of a 45-day sequence with a new blob on day 40; print hits and false alarms."""
    import math

    import torch

    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import detect
    from blobwatch.difference import blob_difference
    from blobwatch.fits_io import BlobImage
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    torch.set_num_threads(args.threads)
    sim = simulate_sequence(SimulationConfig(n_days=45, seed=args.seed, new_blob_days=(40,)))
    truth = sim.new_blobs()[0]
    print(
        f"seed {args.seed}: noise {sim.params['noise_sigma']:.4f}, new blob x={float(truth['x']):.1f} "
        f"y={float(truth['y']):.1f} radius {float(truth['radius']):.1f} depth {float(truth['depth']):.3f} {truth['profile']}"
    )
    clf = BlobClassifier(args.model, device=args.device)
    images = [BlobImage(data=sim.images[d], mjd=float(sim.mjd[d]), path=f"day{d:03d}") for d in range(45)]
    false_alarms, found = 0, []
    for day in range(5, 45):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diff = blob_difference(images[day], images[max(0, day - 30) : day])
        start = time.perf_counter()
        det = detect(diff.data if args.no_stack else diff, clf, name=f"day{day:03d}")
        seconds = time.perf_counter() - start
        dy, dx = sim.shifts[day]
        tx, ty = float(truth["x"] + dx), float(truth["y"] + dy)
        hits = [c for c in det.candidates if day >= 40 and math.hypot(c.x - tx, c.y - ty) <= 3.0]
        others = [c for c in det.candidates if c not in hits]
        false_alarms += len(others)
        if hits:
            found.append(day)
        status = "found" if hits else ("MISSED" if day >= 40 else "")
        detail = ", ".join(
            f"off {math.hypot(c.x - tx, c.y - ty):.2f} px P={c.probability:.3f} S/N={c.significance:.1f}"
            for c in hits
        )
        extra = ", ".join(
            f"({c.x:.1f}, {c.y:.1f}) P={c.probability:.3f} S/N={c.significance:.1f}" for c in others
        )
        print(
            f"day {day:2d} {seconds:5.2f}s {status:6s} {detail} {'FALSE: ' + extra if others else ''}",
            flush=True,
        )
    print(f"new blob found on days {found}; false alarms on days 5-44: {false_alarms}")
    return 0 if (40 in found and false_alarms == 0) else 1


def radius_check(args: argparse.Namespace) -> int:
    """Radius estimate and position error for single simulated blobs."""
    import math

    import numpy as np

    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import detect
    from blobwatch.simulate import blob_profile

    clf = BlobClassifier(args.model, device=args.device)
    rng = np.random.default_rng(args.seed)
    base = rng.normal(0.0, 0.004, size=(1024, 1024)).astype(np.float32)
    x, y = 600.4, 400.7
    for kind in ("disc", "ring"):
        for radius in (5.0, 7.0, 10.0):
            for depth in (0.03, 0.1):
                diff = base.copy()
                half = int(math.ceil(radius * 1.8)) + 2
                prof = blob_profile(radius, kind=kind, size=2 * half + 1, center=(y - round(y), x - round(x)))
                diff[round(y) - half : round(y) + half + 1, round(x) - half : round(x) + half + 1] -= (
                    depth * prof
                )
                det = detect(diff, clf)
                best = min(det.candidates, key=lambda c: math.hypot(c.x - x, c.y - y), default=None)
                if best is None:
                    print(f"{kind} r={radius:4.1f} depth={depth:.2f}: not found")
                else:
                    print(
                        f"{kind} r={radius:4.1f} depth={depth:.2f}: radius {best.radius:5.2f}, "
                        f"offset {math.hypot(best.x - x, best.y - y):.2f} px, S/N {best.significance:.1f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
