"""PNG figures for the review app: arrays in, PNG bytes out (matplotlib Agg, imported lazily).

Images are shown as an astronomer sees them in DS9: ``origin="lower"``, zscale grey levels,
and axes in 0-based pixel coordinates (x = column, y = row).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blobwatch.stats import zscale_limits  # the one definition (also used by the app for shared limits)

#: Colour of the ring around a candidate in its cut-outs (red, as on the seed's monitor page).
CANDIDATE_COLOR = "#ef4444"


@dataclass(frozen=True)
class Circle:
    """A circle drawn over an image, in 0-based pixel coordinates."""

    x: float
    y: float
    radius: float
    color: str


def _figure(width_in: float, height_in: float):
    # a bare Figure (no pyplot): savefig renders PNG with the Agg canvas, no global backend
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def image_png(
    data: np.ndarray,
    *,
    title: str = "",
    circles: Sequence[Circle] = (),
    origin_xy: tuple[float, float] = (0.0, 0.0),
    limits: tuple[float, float] | None = None,
    size_in: float = 7.0,
) -> bytes:
    """Render an image with zscale grey levels and optional circles.

    Parameters
    ----------
    data : ndarray, shape (rows, cols)
        The image; non-finite pixels are drawn in the colour map's "bad" colour.
    title : str
        Figure title.
    circles : sequence of Circle
        Overlays in the coordinates of the full image.
    origin_xy : (x0, y0)
        Pixel coordinate of ``data[0, 0]`` (for cut-outs).
    limits : (lo, hi), optional
        Display limits; zscale when omitted.
    size_in : float
        Figure width in inches (100 dpi).
    """
    import matplotlib
    from matplotlib.patches import Circle as MplCircle

    data = np.asarray(data, dtype=np.float32)
    lo, hi = limits if limits is not None else zscale_limits(data)
    rows, cols = data.shape
    x0, y0 = origin_xy
    fig = _figure(size_in, size_in * 0.92)
    ax = fig.add_subplot()
    extent = (x0 - 0.5, x0 + cols - 0.5, y0 - 0.5, y0 + rows - 0.5)
    cm = matplotlib.colormaps["gray"].with_extremes(bad="#1e3a8a")
    # whole frames are downsampled for display (anti-aliased); cut-outs show every pixel
    ax.imshow(
        data,
        origin="lower",
        cmap=cm,
        vmin=lo,
        vmax=hi,
        extent=extent,
        interpolation="nearest" if max(rows, cols) <= 256 else "antialiased",
    )
    for c in circles:
        ax.add_patch(MplCircle((c.x, c.y), c.radius, fill=False, color=c.color, lw=1.4))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x (column, 0-based)")
    ax.set_ylabel("y (row, 0-based)")
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def cutout(data: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """The ``(2 half + 1)`` square box of ``data`` centred on the 0-based pixel (x, y).

    Parts of the box outside the image are NaN, so the box stays centred.
    """
    data = np.asarray(data, dtype=np.float32)
    xi, yi = int(round(x)), int(round(y))
    box = np.full((2 * half + 1, 2 * half + 1), np.nan, dtype=np.float32)
    r0, r1 = max(yi - half, 0), min(yi + half + 1, data.shape[0])
    c0, c1 = max(xi - half, 0), min(xi + half + 1, data.shape[1])
    if r1 > r0 and c1 > c0:
        box[r0 - (yi - half) : r1 - (yi - half), c0 - (xi - half) : c1 - (xi - half)] = data[r0:r1, c0:c1]
    return box


def cutout_png(
    data: np.ndarray,
    *,
    x: float,
    y: float,
    half: int,
    title: str,
    circles: Sequence[Circle] = (),
    limits: tuple[float, float] | None = None,
) -> bytes:
    """A square cut-out (see `cutout`) of ``data`` centred on the 0-based pixel (x, y), as a PNG.

    Display limits default to the zscale limits of the cut-out itself.
    """
    xi, yi = int(round(x)), int(round(y))
    return image_png(
        cutout(data, x, y, half),
        title=title,
        circles=circles,
        origin_xy=(xi - half, yi - half),
        limits=limits,
        size_in=3.6,
    )


def blob_map_png(
    x: np.ndarray,
    y: np.ndarray,
    radius: np.ndarray,
    depth: np.ndarray,
    *,
    science_box: tuple[int, int, int, int],
    highlight: Sequence[int] = (),
    labels: Sequence[str] = (),
    title: str = "",
    magnify: float = 3.0,
) -> bytes:
    """Every known blob on the detector, sized by its radius and coloured by depth.

    Parameters
    ----------
    x, y, radius, depth : ndarray
        Blob centres (0-based pixels of the full image), radii (pixels) and fractional depths.
    science_box : (x0, y0, x1, y1)
        The detector's science area in the same pixel frame (exclusive upper bounds).
    highlight : sequence of int
        Indices of blobs to label with ``labels`` (those confirmed in review).
    labels : sequence of str
        Text for each highlighted blob (default: its index).
    title : str
        Figure title.
    magnify : float
        Circles are drawn with ``magnify`` times the blob radius (true to scale at 1), so
        that 5-10 px blobs stay visible on a 1014-pixel map.
    """
    import matplotlib
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle as MplCircle
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = science_box
    fig = _figure(8.2, 7.0)
    ax = fig.add_subplot()
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, facecolor="#0f172a", edgecolor="#64748b"))
    depth = np.asarray(depth, dtype=np.float32)
    if len(x):
        patches = [
            MplCircle((float(cx), float(cy)), magnify * max(float(r), 1.0))
            for cx, cy, r in zip(x, y, radius, strict=True)
        ]
        coll = PatchCollection(
            patches, cmap=matplotlib.colormaps["plasma"], edgecolor="white", linewidths=0.4
        )
        coll.set_array(np.where(np.isfinite(depth), depth, 0.0) * 100.0)
        hi = float(np.nanmax(depth)) * 100.0 if np.isfinite(depth).any() else 1.0
        coll.set_clim(0.0, max(hi, 1.0))
        ax.add_collection(coll)
        fig.colorbar(coll, ax=ax, label="depth (% throughput loss)", shrink=0.85)
        for n, i in enumerate(highlight):
            text = labels[n] if n < len(labels) else str(i)
            ax.annotate(
                text,
                (float(x[i]), float(y[i])),
                xytext=(7, 7),
                textcoords="offset points",
                color="white",
                fontsize=8,
                fontweight="bold",
            )
    ax.set_xlim(x0 - 0.5, x1 - 0.5)
    ax.set_ylim(y0 - 0.5, y1 - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (column, 0-based)")
    ax.set_ylabel("y (row, 0-based)")
    scale = "to scale" if magnify == 1 else f"circle radius = {magnify:g} x blob radius"
    ax.set_title(title or f"{len(x)} known blobs ({scale})", fontsize=10)
    return _png(fig)


def history_png(
    mjd: np.ndarray,
    blob_count: np.ndarray,
    max_probability: np.ndarray,
    alert: np.ndarray,
    *,
    threshold: float | None = None,
) -> bytes:
    """`history_figure` as PNG bytes."""
    return _png(history_figure(mjd, blob_count, max_probability, alert, threshold=threshold))


def history_figure(
    mjd: np.ndarray,
    blob_count: np.ndarray,
    max_probability: np.ndarray,
    alert: np.ndarray,
    *,
    threshold: float | None = None,
):
    """Known blobs (axis from 0) and the maximum subframe probability against date (MJD).

    Parameters
    ----------
    mjd : ndarray
        Observation dates of the processed images.
    blob_count : ndarray
        Number of known blobs in the catalog on each date.
    max_probability : ndarray
        Highest subframe probability of each image (NaN where not processed).
    alert : ndarray of bool
        Images that raised an alert.
    threshold : float, optional
        The classifier's threshold, drawn as a dashed line.
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    when = mjd_to_datetime64(mjd)
    blob_count = np.asarray(blob_count)
    fig = _figure(10.5, 4.8)
    ax_count, ax_prob = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    if mjd.size:
        ax_count.step(when, blob_count, where="post", color="#0369a1", lw=1.6)
        ax_count.plot(when, blob_count, "o", color="#0369a1", ms=3)
        ax_prob.plot(
            when, max_probability, "o-", color="#475569", ms=3, lw=0.8, label="max subframe probability"
        )
        alert = np.asarray(alert, dtype=bool)
        if alert.any():
            ax_prob.plot(
                when[alert],
                np.asarray(max_probability)[alert],
                "o",
                color=CANDIDATE_COLOR,
                ms=7,
                label="alert",
            )
        # from 0, so the count reads as a quantity; a margin of 1.5 blobs above the top
        ax_count.set_ylim(0, int(blob_count.max()) + 1.5)
    if threshold is not None:
        ax_prob.axhline(threshold, color="#b45309", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax_count.set_ylabel("known blobs")
    ax_count.grid(alpha=0.3)
    ax_prob.set_ylabel("probability")
    ax_prob.set_ylim(-0.03, 1.03)
    ax_prob.set_xlabel("observation date (UTC)")
    ax_prob.grid(alpha=0.3)
    if mjd.size or threshold is not None:
        ax_prob.legend(fontsize=8, loc="upper left")
    ax_count.set_title("Known blobs and classifier output over time", fontsize=10)
    ax_count.yaxis.get_major_locator().set_params(integer=True)
    if mjd.size:
        fig.autofmt_xdate()
    return fig


def mjd_to_datetime64(mjd: np.ndarray) -> np.ndarray:
    """MJD (UTC days since 1858-11-17) as ``datetime64[ms]`` for date axes."""
    ms = np.round(np.asarray(mjd, dtype=np.float64) * 86_400_000.0).astype(np.int64)
    return np.datetime64("1858-11-17T00:00:00", "ms") + ms.astype("timedelta64[ms]")
