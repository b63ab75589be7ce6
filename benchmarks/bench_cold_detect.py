"""Benchmark a cold ``blobwatch detect CURRENT --references <30 files> --json`` against a naive script.

Run: ``.venv/bin/python benchmarks/bench_cold_detect.py [--repeat 3]``

A simulated 31-day 1024x1024 sequence (seed 7, a new blob on day 30) is written to a temporary
folder (not timed).  Every pass is a fresh Python process, timed from its start to its exit
(wall seconds, and CPU seconds of the process from ``getrusage(RUSAGE_CHILDREN)``):

* **naive** (the baseline): a script that reads the 31 files with ``astropy.io.fits.getdata``,
  takes ``numpy.nanmedian`` of the 30 references, subtracts it, prepares the difference
  (`blobwatch.preprocess.prepare`), tiles it and classifies the 16 subframes with the shipped
  classifier, and prints the probabilities as JSON;
* ``blobwatch detect --no-cache``: registration of all 30 references, the default detector;
* ``blobwatch detect``, first run: the reference store (``--cache-dir``) is empty, so every
  reference is read, prepared and registered, and all of it is stored;
* ``blobwatch detect``, repeated: the same command again; the store gives back the references'
  pixels, their registration preparations and the 30 offsets to this current image.

Passes are interleaved (naive, no-cache, first, repeat; ``--repeat`` times) and the best of each
is reported with its ratio to the naive script's best.  All detect passes must print the same JSON.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

NAIVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from astropy.io import fits
    from blobwatch.classifier import BlobClassifier
    from blobwatch.preprocess import prepare, tile

    files = sys.argv[1:]
    images = [np.asarray(fits.getdata(f), dtype=np.float32) for f in files]
    median = np.nanmedian(np.stack(images[1:]), axis=0)
    difference = images[0] - median
    classifier = BlobClassifier()
    prepared = prepare(difference, clip_factor=classifier.clip_factor)
    tiles, _ = tile(np.asarray(prepared.data, dtype=np.float32), size=classifier.size)
    print(json.dumps({"probabilities": [float(p) for p in classifier.predict_proba(tiles)]}))
    """
)


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command`` in a fresh process: (wall s, CPU s, stdout); exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bw_bench_cold_detect_") as tmp:
        root = Path(tmp)
        sim = simulate_sequence(SimulationConfig(n_days=31, seed=args.seed, new_blob_days=[30]))
        files = sorted(str(p) for p in write_simulation(sim, root / "sim") if p.name.endswith("_blob.fits"))
        current, references = files[-1], files[:-1]
        naive_script = root / "naive.py"
        naive_script.write_text(NAIVE)
        cache = root / "store"
        env = {**os.environ, "BLOBWATCH_CACHE": str(root / "unused-cache")}
        python = sys.executable
        detect = [python, "-m", "blobwatch.cli", "detect", current, "--references", *references, "--json"]
        passes = {
            "naive script (getdata x31, nanmedian, prepare, 16 subframes)": [
                python,
                str(naive_script),
                current,
                *references,
            ],
            "blobwatch detect --no-cache": [*detect, "--no-cache"],
            "blobwatch detect, first run (empty reference store)": [*detect, "--cache-dir", str(cache)],
            "blobwatch detect, repeated (reference store filled)": [*detect, "--cache-dir", str(cache)],
        }
        names = list(passes)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        outputs: set[str] = set()
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeat):
            for name in names:
                if "first run" in name:
                    shutil.rmtree(cache, ignore_errors=True)
                wall, cpu, out = _timed(passes[name], env)
                times[name].append((wall, cpu))
                if name != names[0]:
                    outputs.add(out)
            loads.append(os.getloadavg()[0])
        if len(outputs) != 1:
            print("the detect passes printed different results", file=sys.stderr)
            return 1

    base_wall = min(w for w, _ in times[names[0]])
    base_cpu = min(c for _, c in times[names[0]])
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.repeat}, fresh process each; "
        f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}"
    )
    print(f"{'':62} {'wall s':>7} {'/ naive':>7} {'CPU s':>7} {'/ naive':>7}")
    for name in names:
        wall = min(w for w, _ in times[name])
        cpu = min(c for _, c in times[name])
        print(f"{name:62} {wall:7.2f} {wall / base_wall:7.2f} {cpu:7.2f} {cpu / base_cpu:7.2f}")
    print("all detect passes printed the same JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
