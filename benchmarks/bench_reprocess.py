"""Benchmark ``blobwatch reprocess`` (Dask) with 1 and 2 workers against the serial monitor.

Run: ``.venv/bin/python benchmarks/bench_reprocess.py [--days 200] [--size 1024] [--workers 1 2]``

A simulated ``--days``-day sequence is written to a temporary archive; the baseline, measured in
the same run, is `run_monitor` over it from a fresh database (every image with >= 5 earlier
images, each against up to 30 references).  Then `reprocess` does the same from a fresh database
with each ``--workers`` count.  Every pass must give the same database content (images, offsets,
runs, candidates with their links); the script prints the wall time, images/s and the ratio to
the serial monitor and to 1 worker, with the machine's load average (``os.getloadavg``) before each
pass, since a loaded machine makes the numbers meaningless.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _content(url: str) -> list[tuple]:
    """What a pass decided (no times, timings or report paths)."""
    from sqlalchemy import select

    from blobwatch.monitor.db import Candidate, Image, Run, open_database

    with open_database(url)() as s:
        return (
            [
                tuple(r)
                for r in s.execute(
                    select(Image.id, Image.status, Image.offset_dy, Image.offset_dx).order_by(Image.id)
                )
            ]
            + [
                (r.image_id, r.max_probability, r.parameters["offsets"])
                for r in s.scalars(select(Run).order_by(Run.id))
            ]
            + [
                tuple(r)
                for r in s.execute(
                    select(
                        Candidate.image_id, Candidate.x, Candidate.y, Candidate.status, Candidate.linked_to
                    ).order_by(Candidate.id)
                )
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from blobwatch.classifier import BlobClassifier
    from blobwatch.monitor.reprocess import reprocess
    from blobwatch.monitor.runner import MonitorSettings, run_monitor
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    warnings.simplefilter("ignore")
    settings = MonitorSettings()
    with tempfile.TemporaryDirectory(prefix="bw_bench_reprocess_") as tmp:
        root = Path(tmp)
        sim = simulate_sequence(
            SimulationConfig(n_days=args.days, size=args.size, seed=args.seed, new_blob_days=[args.days - 2])
        )
        archive = root / "archive"
        archive.mkdir()
        for path in write_simulation(sim, root / "sim"):
            if path.name.endswith("_blob.fits"):
                shutil.copy(path, archive / path.name)
        processed = args.days - settings.min_references
        print(
            f"{args.days} simulated {args.size}x{args.size} images, {processed} to process; "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )

        results: dict[str, float] = {}
        contents = {}
        quiet = dict(echo=lambda line: None)
        for tag in ["serial"] + [f"{n} worker(s)" for n in args.workers]:
            url = f"sqlite:///{root / (tag.split()[0] + '.db')}"
            load = os.getloadavg()[0]
            t = time.perf_counter()
            if tag == "serial":
                summary = run_monitor(
                    archive,
                    db=url,
                    reports=root / "reports_serial",
                    settings=settings,
                    classifier=BlobClassifier(),
                    **quiet,
                )
            else:
                summary = reprocess(
                    archive,
                    db=url,
                    reports=root / f"reports_{tag.split()[0]}",
                    settings=settings,
                    workers=int(tag.split()[0]),
                    progress=False,
                    **quiet,
                )
            wall = time.perf_counter() - t
            assert len(summary.processed) == processed, f"{tag}: {len(summary.processed)} processed"
            contents[tag] = _content(url)
            results[tag] = wall
            print(
                f"{tag:>12}: {wall:7.1f} s  {processed / wall:6.2f} images/s  (load average before: {load:.2f})",
                flush=True,
            )
        same = all(c == contents["serial"] for c in contents.values())
        print(f"identical database content in every pass: {same}")
        for tag, wall in results.items():
            if tag != "serial":
                print(f"{tag}: {results['serial'] / wall:.2f}x the serial monitor's speed")
        first = f"{args.workers[0]} worker(s)"
        for tag in results:
            if tag not in ("serial", first):
                print(f"{tag} vs {first}: {results[first] / results[tag]:.2f}x")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
