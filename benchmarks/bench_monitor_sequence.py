"""Benchmark a monitor run over a whole sequence (as ``blobwatch demo`` does): reference preparation reuse.

Run: ``.venv/bin/python benchmarks/bench_monitor_sequence.py [--days 20] [--repeat 1]``

A simulated ``--days``-day 1024x1024 sequence is written to a temporary inbox and ``run_monitor``
processes it from a fresh database (every image with >= 5 earlier images: ``days - 5`` images,
each against up to 30 references).  Baseline, measured in the same run: the same pass with the
`blobwatch.difference.PreparedCache` switched off (every reference prepared for registration again
for every image, as before the cache).  Both passes must give identical results (maximum
probability and candidates of every image); the ratio baseline / cached is the speed-up.
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

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    import blobwatch.difference as difference
    from blobwatch.classifier import BlobClassifier
    from blobwatch.monitor.db import Candidate, Run, open_database
    from blobwatch.monitor.runner import MonitorSettings, run_monitor
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    warnings.simplefilter("ignore")
    classifier = BlobClassifier()
    real_cache = difference.PreparedCache
    with tempfile.TemporaryDirectory(prefix="bw_bench_sequence_") as tmp:
        root = Path(tmp)
        sim = simulate_sequence(
            SimulationConfig(n_days=args.days, seed=args.seed, new_blob_days=[args.days - 2])
        )
        inbox = root / "inbox"
        for path in write_simulation(sim, root / "sim"):
            if path.name.endswith("_blob.fits"):
                inbox.mkdir(exist_ok=True)
                shutil.copy(path, inbox / path.name)

        def one_pass(cached: bool, tag: str) -> tuple[float, float, list]:
            difference.PreparedCache = real_cache if cached else (lambda capacity, **kw: None)
            try:
                session = open_database(f"sqlite:///{root / f'{tag}.db'}")
                t, c = time.perf_counter(), time.process_time()
                summary = run_monitor(
                    inbox,
                    db=session,
                    reports=root / f"reports_{tag}",
                    classifier=classifier,
                    settings=MonitorSettings(),
                    echo=lambda line: None,
                )
                wall, cpu = time.perf_counter() - t, time.process_time() - c
            finally:
                difference.PreparedCache = real_cache
            with session() as s:
                result = [
                    (r.image_id, round(r.max_probability, 6)) for r in s.query(Run).order_by(Run.image_id)
                ]
                result += [
                    (c.image_id, round(c.x, 3), round(c.y, 3), c.status)
                    for c in s.query(Candidate).order_by(Candidate.id)
                ]
            session.kw["bind"].dispose()
            assert len(summary.processed) == args.days - 5, summary.outcomes
            return wall, cpu, result

        rows = {False: [], True: []}
        results = {}
        for k in range(args.repeat):
            for cached in (False, True):
                wall, cpu, result = one_pass(cached, f"{'cached' if cached else 'plain'}{k}")
                rows[cached].append((wall, cpu))
                results.setdefault(cached, result)
                print(
                    f"{'cached' if cached else 'plain '} pass {k + 1}: {wall:6.1f} s wall, {cpu:6.1f} s CPU",
                    flush=True,
                )
    identical = results[False] == results[True]
    (bw, bc), (cw, cc) = (min(rows[False]), min(rows[True]))
    print(
        f"\n{args.days} days ({args.days - 5} images processed), {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; numpy {np.__version__}"
    )
    print(f"baseline (no PreparedCache): {bw:6.1f} s wall {bc:6.1f} s CPU")
    print(f"with PreparedCache:          {cw:6.1f} s wall {cc:6.1f} s CPU")
    print(f"speed-up: {bw / cw:.2f}x wall, {bc / cc:.2f}x CPU; identical results: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
