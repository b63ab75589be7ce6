"""Benchmark the data path: read 1 + 30 blob images, build the difference, prepare and tile it.

Run: ``.venv/bin/python benchmarks/bench_datapath.py [--repeat 3] [--threads N]``

Times, best of ``--repeat`` runs, each stage and the whole path, and reports them as ratios to
a naive baseline measured in the same run (``astropy.io.fits.getdata`` for every file,
``numpy.nanmedian`` over the stack, the same preparation).  The images are a simulated
31-day sequence (`blobwatch.simulate`) written to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def _best(fn, repeat: int):
    """Best wall time of ``repeat`` runs; the CPU seconds of that run go to ``CPU_SECONDS``."""
    best, best_cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if wall < best:
            best, best_cpu = wall, cpu
    _best.last_cpu = best_cpu  # type: ignore[attr-defined]
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from astropy.io import fits

    from blobwatch.difference import blob_difference, nan_median_stack
    from blobwatch.fits_io import read_blob_image, read_blob_images
    from blobwatch.preprocess import prepare, tile
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    warnings.simplefilter("ignore")
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"threads={args.threads or 'all'}, best of {args.repeat}"
    )
    with tempfile.TemporaryDirectory(prefix="bw_bench_") as tmp:
        start = time.perf_counter()
        sim = simulate_sequence(SimulationConfig(n_days=31, seed=args.seed, new_blob_days=[30]))
        files = [p for p in write_simulation(sim, tmp) if p.name.endswith("_blob.fits")]
        files = sorted(files)
        print(
            f"simulated and wrote {len(files)} images of {sim.images.shape[1]}x{sim.images.shape[2]} "
            f"in {time.perf_counter() - start:.1f} s (not timed)"
        )
        current_path, ref_paths = files[-1], files[:-1]

        def baseline():
            cur = fits.getdata(current_path).astype(np.float32)
            stack = np.stack([fits.getdata(p).astype(np.float32) for p in ref_paths])
            diff = cur - np.nanmedian(stack, axis=0)
            return tile(prepare(diff).data)

        def read_all():
            cur = read_blob_image(current_path)
            refs = read_blob_images(ref_paths, expected_shape=cur.data.shape, workers=args.threads)
            return cur, refs

        cpu = {}
        t_base, _ = _best(baseline, args.repeat)
        cpu["base"] = _best.last_cpu
        stack = np.stack([fits.getdata(p).astype(np.float32) for p in ref_paths])
        t_npmed, _ = _best(lambda s=stack: np.nanmedian(s, axis=0), args.repeat)
        cpu["t_npmed"] = _best.last_cpu
        t_ourmed, _ = _best(lambda s=stack: nan_median_stack(s, workers=args.threads), args.repeat)
        cpu["t_ourmed"] = _best.last_cpu
        del stack
        t_read, (cur, refs) = _best(read_all, args.repeat)
        cpu["t_read"] = _best.last_cpu
        t_diff, plain = _best(
            lambda: blob_difference(cur, refs, register=False, workers=args.threads), args.repeat
        )
        cpu["t_diff"] = _best.last_cpu
        t_prep, _ = _best(lambda: tile(prepare(plain.data).data), args.repeat)
        cpu["t_prep"] = _best.last_cpu
        t_reg, registered = _best(
            lambda: blob_difference(cur, refs, register=True, workers=args.threads), args.repeat
        )
        cpu["t_reg"] = _best.last_cpu

        def full_plain():
            c, r = read_all()
            return tile(prepare(blob_difference(c, r, register=False, workers=args.threads).data).data)

        def full_registered():
            c, r = read_all()
            return tile(prepare(blob_difference(c, r, register=True, workers=args.threads).data).data)

        t_full, _ = _best(full_plain, args.repeat)
        cpu["t_full"] = _best.last_cpu
        t_full_reg, _ = _best(full_registered, max(1, args.repeat - 1))
        cpu["t_full_reg"] = _best.last_cpu

    rows = [
        ("baseline: getdata x31 + np.nanmedian + prepare + tile", t_base, cpu["base"]),
        ("median of 30: numpy.nanmedian", t_npmed, cpu["t_npmed"]),
        ("median of 30: nan_median_stack", t_ourmed, cpu["t_ourmed"]),
        ("read 31 files (read_blob_images, sha256, checks)", t_read, cpu["t_read"]),
        ("difference, median (no registration)", t_diff, cpu["t_diff"]),
        ("prepare + tile", t_prep, cpu["t_prep"]),
        ("difference, registered (30 offsets + alignment)", t_reg, cpu["t_reg"]),
        ("full path without registration", t_full, cpu["t_full"]),
        ("full path with registration", t_full_reg, cpu["t_full_reg"]),
    ]
    print(
        f"load average before: {os.getloadavg()[0]:.1f} (wall times grow with other jobs; CPU seconds much less)"
    )
    print(f"{'stage':56s} {'wall s':>7s} {'/ base':>7s} {'CPU s':>7s} {'/ base':>7s}")
    for name, seconds, cpu_s in rows:
        print(f"{name:56s} {seconds:7.3f} {seconds / t_base:7.2f} {cpu_s:7.3f} {cpu_s / cpu['base']:7.2f}")
    print(
        f"registration costs {t_reg - t_diff:.2f} s extra ({(t_reg - t_diff) / len(ref_paths) * 1e3:.0f} ms per reference)"
    )
    true = sim.shifts[-1] - sim.shifts[:-1]
    err = registered.offsets - true
    print(
        f"registration rms offset error {np.sqrt(np.mean(err**2)):.4f} px "
        f"(true offsets rms {np.sqrt(np.mean(true**2)):.3f} px)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
