"""Benchmark: `blobwatch.monitor.measure.measure_blob` on simulated blobs, beside photutils'
quadratic centroid.

Draws ``--blobs`` blobs of the simulator (`blobwatch.simulate.blob_profile`, half 'disc' and half
'ring', radius 4-10 px, depth 3-15 %, noise 0.3-1 % in the image and in the stack, shapes drawn
at random), each with a first guess up to 3 px off, and prints:

* the centre error of `measure_blob` (its loss-weighted centroid) and of
  `photutils.centroids.centroid_quadratic` (a quadratic fitted around the brightest loss pixel
  of a 25x25 cut-out, ``fit_boxsize`` 5 and 11): median, 90th percentile, share over 0.3 px;
* the radius and depth error of `measure_blob` against its own measurement of the noiseless blob
  (the same definitions: where the profile falls to 20 % of its peak, and that peak);
* the time per blob of each.

Run:  .venv/bin/python benchmarks/bench_measure.py [--blobs 200] [--seed 42]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    args, _ = parser.parse_known_args(argv)

    from photutils.centroids import centroid_quadratic

    from blobwatch.monitor.measure import loss_map, measure_blob
    from blobwatch.simulate import blob_profile, draw_blob_shape

    rng = np.random.default_rng(args.seed)
    size, half = 160, 12
    errors: dict[str, list[float]] = {"measure_blob": [], "quadratic 5x5": [], "quadratic 11x11": []}
    seconds = dict.fromkeys(errors, 0.0)
    radius_error, depth_error = [], []
    for i in range(args.blobs):
        kind = ("disc", "ring")[i % 2]
        radius, depth, noise = rng.uniform(4.0, 10.0), rng.uniform(0.03, 0.15), rng.uniform(0.003, 0.01)
        x, y = 80 + rng.uniform(-0.5, 0.5), 80 + rng.uniform(-0.5, 0.5)
        centre = (y - (size - 1) / 2, x - (size - 1) / 2)
        blob = depth * blob_profile(
            radius, kind=kind, size=size, center=centre, shape=draw_blob_shape(kind, rng)
        )
        stack = (1 + noise * rng.standard_normal((size, size))).astype(np.float32)
        current = ((1 - blob) * (1 + noise * rng.standard_normal((size, size)))).astype(np.float32)
        loss = loss_map(current, stack)
        gx, gy = x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)

        start = time.perf_counter()
        m = measure_blob(loss, gx, gy)
        seconds["measure_blob"] += time.perf_counter() - start
        errors["measure_blob"].append(float(np.hypot(m.x - x, m.y - y)))
        clean = measure_blob(blob.astype(np.float32), x, y)
        radius_error.append(abs(m.radius - clean.radius))
        depth_error.append(abs(m.depth - clean.depth))

        r0, c0 = int(round(gy)) - half, int(round(gx)) - half
        cutout = loss[r0 : r0 + 2 * half + 1, c0 : c0 + 2 * half + 1]
        cutout = cutout - np.float32(np.median(loss))
        for box in (5, 11):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "quadratic fit does not have a maximum"
                qx, qy = centroid_quadratic(cutout, fit_boxsize=box)
            seconds[f"quadratic {box}x{box}"] += time.perf_counter() - start
            errors[f"quadratic {box}x{box}"].append(float(np.hypot(qx + c0 - x, qy + r0 - y)))

    for name, values in errors.items():
        e = np.array(values)
        print(
            f"{name:16s} centre error: median {np.nanmedian(e):.3f} px, p90 {np.nanpercentile(e, 90):.3f} px, "
            f"over 0.3 px {np.mean(~(e <= 0.3)):.1%}; {1e3 * seconds[name] / args.blobs:.2f} ms per blob"
        )
    print(
        f"measure_blob radius error: median {np.median(radius_error):.3f} px, "
        f"p90 {np.percentile(radius_error, 90):.3f} px; depth error: median {np.median(depth_error):.4f}, "
        f"p90 {np.percentile(depth_error, 90):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
