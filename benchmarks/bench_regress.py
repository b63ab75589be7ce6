"""Benchmark: the quick regression suite (about 40 cases plus 40 calibration cases).

Runs ``blobwatch regress --quick`` for the matched filter (the baseline) and `detect` in one
process, in the same run, and reports the seconds per case of each detector and the ratio to the
matched filter; with a cold cache it also reports how long building the cases took.

Run:  .venv/bin/python benchmarks/bench_regress.py [--cache DIR] [--detector detect]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per detector."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", help="suite cache (default: a fresh temporary folder, so the build is timed)"
    )
    parser.add_argument("--detector", action="append", help="detectors besides mf (default: detect)")
    args, _ = parser.parse_known_args(argv)
    from blobwatch.cli import main as blobwatch

    names = ["mf", *(args.detector or ["detect"])]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or str(Path(tmp) / "cache")
        out = Path(tmp) / "out"
        start = time.perf_counter()
        code = blobwatch(
            [
                "regress",
                "--quick",
                "--cache",
                cache,
                "--out",
                str(out),
                *[a for n in names for a in ("--detector", n)],
            ]
        )
        total = time.perf_counter() - start
        if code:
            return code
        payload = json.loads((out / "scores.json").read_text())
    per_case = {d["detector"]: d["seconds_per_case"] for d in payload["detectors"]}
    print(f"regress --quick: {total:.1f} s in all (cache {'given' if args.cache else 'cold'})")
    for name, seconds in per_case.items():
        print(f"{name:>8}: {seconds:.3f} s per case, {seconds / per_case['mf']:.2f}x the matched filter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
