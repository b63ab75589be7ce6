"""Benchmark: the localizing network on one 1024x1024 difference, beside the seed protocol.

Simulates a 31-day sequence (a new blob on day 30), builds the registered difference of day 30
once, then times in the same run (medians over ``--repeats``):

* the seed protocol (baseline): ``prepare`` + ``tile`` + PaperCNN on the 16 subframes;
* the seed chain, ``detect`` (PaperCNN + matched-filter seeds and tests; ``--detector paper``);
* the localizing network: its inputs, the network on the whole image, the peaks and refinement;
* the default detector, ``detect_fcn`` (the network's candidates, the seed's 16 subframes beside
  them and each candidate's matched-filter significance): what ``blobwatch detect`` runs for one
  difference.

Run:  .venv/bin/python benchmarks/bench_fcn.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import warnings

from bench_detect import _median_time  # the same timing rule as the detect benchmark


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per step with its ratio to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=2024)
    args, _ = parser.parse_known_args(argv)

    import torch

    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import detect
    from blobwatch.difference import blob_difference
    from blobwatch.fcn import FCNDetector, detect_fcn
    from blobwatch.fits_io import BlobImage
    from blobwatch.preprocess import prepare, tile
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    torch.set_num_threads(args.threads)
    sim = simulate_sequence(SimulationConfig(n_days=31, seed=args.seed, new_blob_days=(30,)))
    images = [BlobImage(data=sim.images[d], mjd=float(sim.mjd[d]), path=f"day{d}") for d in range(31)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = blob_difference(images[30], images[:30])
    clf = BlobClassifier(device="cpu")
    fcn = FCNDetector(device="cpu")

    def seed_protocol() -> None:
        clf.predict_proba(tile(prepare(result.data, clip_factor=clf.clip_factor).data)[0])

    for warm_up in (
        seed_protocol,
        lambda: detect(result, clf),
        lambda: fcn.candidates(result.data, result.stack),
        lambda: detect_fcn(result, fcn, clf),
    ):
        warm_up()
    base = _median_time(seed_protocol, args.repeats)
    rows = [
        ("seed protocol (baseline)", base),
        ("detect --detector paper (the seed chain)", _median_time(lambda: detect(result, clf), args.repeats)),
        (
            "fcn candidates (inputs + network + peaks)",
            _median_time(lambda: fcn.candidates(result.data, result.stack), args.repeats),
        ),
        (
            "detect_fcn (the default detector)",
            _median_time(lambda: detect_fcn(result, fcn, clf), args.repeats),
        ),
    ]
    print(f"torch threads {torch.get_num_threads()}, {args.repeats} repeats, medians:")
    for name, seconds in rows:
        print(f"{name:>44}: {seconds:6.3f} s  ({seconds / base:5.2f}x the baseline)")
    found = [c for c in fcn.candidates(result.data, result.stack) if c.probability >= fcn.threshold]
    truth = sim.new_blobs()[0]
    print(
        f"fcn found {len(found)} candidate(s); the new blob is at x={truth['x'] + sim.shifts[30, 1]:.1f}, "
        f"y={truth['y'] + sim.shifts[30, 0]:.1f}: "
        + ", ".join(f"({c.x:.1f}, {c.y:.1f}) P={c.probability:.3f}" for c in found)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
