"""Figure: a simulated CSM-monitor sequence next to the 20 real WFC3/IR blob stamps.

Writes ``docs/simulated_vs_real.png``:

* a full simulated blob image (newest day), a zoom on it, and the simulated difference image
  (newest image minus the median of the preceding ones, as Quicklook does);
* the 20 real stamps (shipped in the package, or ``--stamps``) above 20
  simulated stamps picked at random (not chosen by eye) from the simulated median stack, both
  in the classifier's normalized units (negated, clipped at 0.5 x zscale limits, z-scored, so
  blobs are positive), shown with the same colour scale.

Usage::

    python scripts/figure_simulation.py [--seed 7] [--days 31] [--out docs/simulated_vs_real.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from blobwatch.dataset import DEFAULT_STAMPS


def normalize_like_stamps(image: np.ndarray, clip_factor: float = 0.5) -> np.ndarray:
    """Negate, clip at ``clip_factor`` x zscale limits, z-score; non-finite -> median (0).

    Parameters
    ----------
    image : ndarray
        Blob image, stack or difference (blobs dark).
    clip_factor : float
        Factor applied to the zscale limits of the negated image (seed section 3.1).

    Returns
    -------
    ndarray, float32
        Normalized image with blobs positive.
    """
    from astropy.visualization import ZScaleInterval

    data = -np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    data = data - smooth_background(data)
    centre = np.median(data[finite])
    zmin, zmax = ZScaleInterval().get_limits(data[finite] - centre)
    clipped = np.clip(data - centre, clip_factor * zmin, clip_factor * zmax)
    mean = clipped[finite].mean()
    std = clipped[finite].std()
    out = (clipped - mean) / std
    out[~finite] = np.median(out[finite])
    return out.astype(np.float32)


def smooth_background(image: np.ndarray, block: int = 16, width: int = 5) -> np.ndarray:
    """Large-scale background: median of ``block`` x ``block`` cells, median-filtered, upsampled.

    Removes the illumination gradient and earthlight (which cancel in a real difference image)
    so that the z-scoring below is set by the pixel noise, not by the gradient.
    """
    from scipy import ndimage

    rows, cols = image.shape
    nr, nc = rows // block, cols // block
    cells = image[: nr * block, : nc * block].reshape(nr, block, nc, block).transpose(0, 2, 1, 3)
    med = np.nanmedian(cells.reshape(nr, nc, block * block), axis=2)
    med = np.where(np.isfinite(med), med, np.nanmedian(med))
    med = ndimage.median_filter(med, size=width, mode="nearest")
    return ndimage.zoom(med, (rows / nr, cols / nc), order=1, mode="nearest")[:rows, :cols]


def read_real_stamps(path: Path) -> list[np.ndarray]:
    """The real blob stamps as float32 arrays."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        return [h.data.astype(np.float32) for h in hdul[1:]]


def cut_stamps(normalized: np.ndarray, blobs, rng: np.random.Generator, n: int = 20) -> list[np.ndarray]:
    """Cut ``n`` randomly chosen existing blobs with boxes sized like the real stamps (9-21 px)."""
    size = normalized.shape[0]
    old = blobs[blobs["day"] < 0]
    keep = [i for i in range(len(old)) if 20 < old["x"][i] < size - 21 and 20 < old["y"][i] < size - 21]
    pick = rng.choice(keep, size=min(n, len(keep)), replace=False)
    stamps = []
    for i in pick:
        side = int(np.clip(2 * round(old["radius"][i]) + 5, 9, 21))
        y0 = int(round(old["y"][i])) - side // 2
        x0 = int(round(old["x"][i])) - side // 2
        stamps.append(normalized[y0 : y0 + side, x0 : x0 + side])
    return stamps


def main(argv: list[str] | None = None) -> int:
    """Build the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.016,
        help="per-image noise sigma (default 0.016, the geometric middle of the randomized range 0.005-0.05)",
    )
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "simulated_vs_real.png"
    )
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval
    from matplotlib.patches import Circle

    from blobwatch.atomic import atomic_path
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    last = args.days - 1
    sim = simulate_sequence(
        SimulationConfig(n_days=args.days, seed=args.seed, new_blob_days=(last,), noise_sigma=args.noise)
    )
    image = sim.images[last]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN border
            stack = np.nanmedian(sim.images[max(0, last - 30) : last], axis=0)
    diff = image - stack
    new = sim.new_blobs()[0]
    nx, ny = new["x"] + sim.shifts[last, 1], new["y"] + sim.shifts[last, 0]

    real = read_real_stamps(args.stamps)
    simulated = cut_stamps(normalize_like_stamps(stack), sim.blobs, np.random.default_rng(args.seed))

    # the strongest existing blob (depth x area) shows the mis-registration dip best
    old = sim.blobs[
        (sim.blobs["day"] < 0)
        & (sim.blobs["x"] > 80)
        & (sim.blobs["x"] < image.shape[1] - 80)
        & (sim.blobs["y"] > 80)
        & (sim.blobs["y"] < image.shape[0] - 80)
    ]
    strong = old[int(np.argmax(old["depth"] * old["radius"] ** 2))]
    sx, sy = strong["x"] + sim.shifts[last, 1], strong["y"] + sim.shifts[last, 0]

    fig = plt.figure(figsize=(15, 13.5))
    grid = fig.add_gridspec(3, 1, height_ratios=[10.4, 0.75, 0.75], hspace=0.22)
    top = grid[0].subgridspec(2, 3, wspace=0.18, hspace=0.22)
    p = sim.params
    z = ZScaleInterval()
    box = 96

    def window(cx: float, cy: float) -> tuple[int, int]:
        y0 = int(np.clip(int(round(cy)) - box // 2, 5, image.shape[0] - 5 - box))
        x0 = int(np.clip(int(round(cx)) - box // 2, 5, image.shape[1] - 5 - box))
        return y0, x0

    def show_zoom(ax, data, y0, x0, lo, hi):
        ax.imshow(
            data[y0 : y0 + box, x0 : x0 + box],
            origin="lower",
            cmap="gray",
            vmin=lo,
            vmax=hi,
            interpolation="nearest",
            extent=(x0 - 0.5, x0 + box - 0.5, y0 - 0.5, y0 + box - 0.5),
        )

    wins = {"new": window(nx, ny), "old": window(sx, sy)}
    shift_txt = f"(dx, dy) = ({sim.shifts[last, 1]:+.2f}, {sim.shifts[last, 0]:+.2f}) px"
    for row, (data, name) in enumerate(((image, "blob image"), (diff, "difference"))):
        finite = data[np.isfinite(data)]
        lo, hi = z.get_limits(finite)
        ax = fig.add_subplot(top[row, 0])
        ax.imshow(data, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for (y0, x0), colour in ((wins["new"], "lime"), (wins["old"], "orange")):
            ax.add_patch(plt.Rectangle((x0, y0), box, box, fill=False, color=colour, lw=1))
        if row == 0:
            ax.set_title(
                f"simulated blob image, day {last} (zscale)\n{len(sim.blobs) - 1} existing "
                f"blobs; noise {100 * sim.noise[last]:.2f}%, flat residual "
                f"{100 * p['flat_residual_sigma']:.2f}%",
                fontsize=10,
            )
        else:
            ax.set_title(
                f"difference: day {last} - median(days {max(0, last - 30)}..{last - 1})\n"
                f"(zscale); CSM shift sigma {p['shift_sigma']:.2f} px",
                fontsize=10,
            )
        # zooms share one linear scale per row so that depths compare
        if row == 0:
            lo, hi = np.nanpercentile(data, [0.5, 99.5])
        else:
            spread = 4.0 * np.nanstd(np.clip(finite, *np.percentile(finite, [5, 95])))
            lo, hi = -2 * spread, spread
        ax = fig.add_subplot(top[row, 1])
        show_zoom(ax, data, *wins["new"], lo, hi)
        ax.add_patch(Circle((nx, ny), new["radius"] + 6, fill=False, color="lime", lw=0.8))
        ax.set_title(
            f"{name}, green box: NEW blob on day {last}\nr = {new['radius']:.1f} px, depth "
            f"{100 * new['depth']:.1f}%, {new['profile']} (circle)",
            fontsize=10,
        )
        ax = fig.add_subplot(top[row, 2])
        show_zoom(ax, data, *wins["old"], lo, hi)
        ax.set_title(
            f"{name}, orange box: strongest old blob\nr = {strong['radius']:.1f} px, depth "
            f"{100 * strong['depth']:.1f}%" + (f"; dip from {shift_txt}" if row else ""),
            fontsize=10,
        )

    for row, (stamps, label) in enumerate(
        ((real, "real stamps (deepwfc3)"), (simulated, "simulated (random picks)"))
    ):
        strip = grid[1 + row].subgridspec(1, 20, wspace=0.08)
        for k in range(20):
            ax = fig.add_subplot(strip[k])
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(stamps):
                ax.imshow(stamps[k], origin="lower", cmap="gray", vmin=-3, vmax=3, interpolation="nearest")
            if k == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
            if row == 0 and k == 10:
                ax.set_title(
                    "blob stamps normalized as the classifier sees them (blobs positive, clipped "
                    "to about +-3 sigma, grey scale -3..3); simulated ones cut from the "
                    "median of the 30 images above",
                    fontsize=10,
                    x=0.0,
                )
    fig.suptitle(f"blobwatch simulator (seed {args.seed}) vs real WFC3/IR blob stamps", fontsize=12)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
