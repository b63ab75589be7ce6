"""``blobwatch demo OUTDIR``: an interim end-to-end demonstration of the data path.

Simulates a 45-day CSM-monitor sequence with a new blob on day 40, builds the day-40 blob
difference image against the preceding 30 days (plain median and registered median), prepares
it as the seed did, and writes ``OUTDIR/difference_day040.png`` with the true new blob marked.
"""

from __future__ import annotations

import argparse

DEMO_DAYS = 45
NEW_BLOB_DAY = 40
N_REFERENCES = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate a sequence with a new blob and show its difference image",
        description=(
            f"Simulate {DEMO_DAYS} daily blob images with a new blob on day {NEW_BLOB_DAY}, build "
            f"the day-{NEW_BLOB_DAY} difference image against the preceding {N_REFERENCES} (plain "
            "and registered median), and write OUTDIR/difference_day040.png with the true new "
            "blob marked."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="output folder (created if needed)")
    parser.add_argument("--seed", type=int, default=2021, help="simulation seed (default 2021)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Simulate, difference, prepare and plot."""
    import warnings
    from pathlib import Path

    import numpy as np

    from blobwatch.difference import blob_difference, write_difference
    from blobwatch.fits_io import BlobImage
    from blobwatch.preprocess import prepare
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"simulating {DEMO_DAYS} days (seed {args.seed}), new blob on day {NEW_BLOB_DAY} ...")
    sim = simulate_sequence(
        SimulationConfig(n_days=DEMO_DAYS, seed=args.seed, new_blob_days=[NEW_BLOB_DAY])
    )
    images = [
        BlobImage(sim.images[day], float(sim.mjd[day]), f"sim_day{day:03d}", "F153M", {"kind": "simulated"})
        for day in range(DEMO_DAYS)
    ]
    current = images[NEW_BLOB_DAY]
    references = images[NEW_BLOB_DAY - N_REFERENCES : NEW_BLOB_DAY]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = blob_difference(current, references, register=False)
        registered = blob_difference(current, references, register=True)
    write_difference(outdir / f"difference_day{NEW_BLOB_DAY:03d}.fits", registered)

    new = sim.new_blobs()
    truth = [
        (float(row["x"]) + sim.shifts[NEW_BLOB_DAY][1], float(row["y"]) + sim.shifts[NEW_BLOB_DAY][0], float(row["radius"]))
        for row in new
    ]
    true_offsets = sim.shifts[NEW_BLOB_DAY] - sim.shifts[NEW_BLOB_DAY - N_REFERENCES : NEW_BLOB_DAY]
    error = registered.offsets - true_offsets
    print(f"CSM shift scatter of this sequence: {sim.params['shift_sigma']:.3f} px per axis")
    print(
        "registration: rms offset error {:.4f} px (true offsets rms {:.3f} px)".format(
            float(np.sqrt(np.mean(error**2))), float(np.sqrt(np.mean(true_offsets**2)))
        )
    )
    prepared = {
        "median (seed)": prepare(plain.data).data,
        "registered median": prepare(registered.data).data,
    }
    for x, y, radius in truth:
        print(f"true new blob: x={x:.1f} y={y:.1f} (DS9 {x + 1:.1f}, {y + 1:.1f}), radius {radius:.1f} px")
    path = outdir / f"difference_day{NEW_BLOB_DAY:03d}.png"
    _plot(path, prepared, truth)
    print(f"wrote {path}")
    print(f"wrote {outdir / f'difference_day{NEW_BLOB_DAY:03d}.fits'}")
    return 0


def _plot(path, prepared: dict, truth: list[tuple[float, float, float]]) -> None:
    """Side-by-side prepared difference images with the true new blob circled (at the edge)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from blobwatch.atomic import atomic_path

    fig, axes = plt.subplots(1, len(prepared), figsize=(6.2 * len(prepared), 6.4), constrained_layout=True)
    for ax, (title, image) in zip(axes, prepared.items()):
        shown = ax.imshow(image, origin="lower", cmap="gray", vmin=-3, vmax=3, interpolation="nearest")
        for x, y, radius in truth:
            ax.add_patch(Circle((x, y), 3 * radius, fill=False, color="tab:red", lw=1.2))
            ax.annotate("new blob", (x, y + 3 * radius), color="tab:red", ha="center", va="bottom", fontsize=9)
        ax.set_title(f"day {NEW_BLOB_DAY} - {title} of days {NEW_BLOB_DAY - N_REFERENCES}-{NEW_BLOB_DAY - 1}\n"
                     "prepared (negated, clipped, z-scored): blobs bright", fontsize=10)
        ax.set_xlabel("x (column, 0-based)")
        ax.set_ylabel("y (row, 0-based)")
    fig.colorbar(shown, ax=axes, shrink=0.8, label="normalized units (sigma)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
