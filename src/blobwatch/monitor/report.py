"""HTML reports: one page per image, an index of all images and a map of the known blobs.

Pages are Jinja2 templates (``monitor/templates``); figures are PNG files beside each page,
drawn with matplotlib's object interface (no pyplot, Agg canvas).  Every file is written
atomically, figures first and the page last, so a page never points at a missing figure and a
crash never leaves a half-written page.

Layout under the reports folder::

    index.html                      every image, newest first, with status and candidates
    blobmap.html, blobmap.png       every known blob on the detector
    images/<id>_<stem>/report.html  one image: difference, 4x4 probabilities, saliency, provenance
    images/<id>_<stem>/*.png
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from blobwatch import __version__
from blobwatch.atomic import write_bytes_atomic, write_text_atomic
from blobwatch.figures import new_figure, png_bytes
from blobwatch.names import bounded_name
from blobwatch.stats import zscale_limits

__all__ = [
    "CandidateView",
    "ImageReport",
    "SubframeView",
    "format_provenance",
    "render_blobmap",
    "render_index",
    "report_dir",
    "write_blobmap",
    "write_image_report",
    "write_index",
]

_TEMPLATES = Path(__file__).with_name("templates")
#: Longest report folder name in bytes (file systems allow 255; the name comes from the image's).
REPORT_DIR_BYTES = 100
#: Circle drawn around a candidate / known blob when its radius is unknown (px).
DEFAULT_RADIUS = 8.0


@dataclass(frozen=True)
class SubframeView:
    """One subframe's result as shown in a report."""

    index: int
    x0: int
    y0: int
    size: int
    probability: float
    flagged: bool
    saliency_png: str | None = None


@dataclass(frozen=True)
class CandidateView:
    """One candidate as shown in a report (0-based x = column, y = row)."""

    id: int | None
    x: float
    y: float
    probability: float
    significance: float | None
    radius: float | None
    status: str
    note: str = ""

    @property
    def ds9(self) -> str:
        """DS9 / FITS 1-based coordinates ``(x+1, y+1)``."""
        return f"({self.x + 1:.1f}, {self.y + 1:.1f})"


@dataclass
class ImageReport:
    """Everything one image's report shows (arrays plus small records; no database objects).

    Attributes
    ----------
    image_id : int
    name : str
        File name of the blob image.
    path : str
    mjd : float or None
    obs_date : datetime or None
    difference : numpy.ndarray
        The difference image (current minus median stack; new blobs negative, dark).
    prepared : numpy.ndarray or None
        The normalized image the classifier saw (blobs positive), for the saliency panels.
    threshold : float
    subframes : list of SubframeView
    candidates : list of CandidateView
    known_blobs : numpy.ndarray
        ``(N, 3)`` x, y, radius of the catalog blobs.
    saliency : dict
        ``{subframe index: (size, size) map}``: the seed classifier's saliency of the flagged
        subframes and of those holding a candidate.
    localizer_saliency : dict
        The same for the localizing network (``detector='fcn'``), subframes holding a candidate.
    detector : str
        ``'fcn'`` or ``'paper'`` (which found the candidates; ``threshold`` is its threshold).
    subframe_threshold : float or None
        The seed classifier's threshold for the subframe grid when it differs from ``threshold``.
    provenance : dict
        Name -> value rows of the provenance table (model, versions, references, timings...).
    """

    image_id: int
    name: str
    path: str
    mjd: float | None
    obs_date: _dt.datetime | None
    difference: np.ndarray
    threshold: float
    subframes: list[SubframeView]
    candidates: list[CandidateView]
    known_blobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    prepared: np.ndarray | None = None
    saliency: dict[int, np.ndarray] = field(default_factory=dict)
    localizer_saliency: dict[int, np.ndarray] = field(default_factory=dict)
    detector: str = "paper"
    subframe_threshold: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_threshold(self) -> float:
        """Threshold of the seed's subframe grid."""
        return self.threshold if self.subframe_threshold is None else self.subframe_threshold


def format_provenance(
    *,
    image_path: str,
    image_sha256: str,
    image_filter: str | None,
    model_path: str | None,
    model_sha256: str | None,
    model_metadata: dict[str, Any],
    versions: dict[str, str],
    reference_paths: Sequence[str | None],
    method: str,
    offsets: np.ndarray,
    threshold: float,
    run_id: int,
    worker: str,
    timings: dict[str, float],
    detector: str = "paper",
) -> dict[str, Any]:
    """The provenance table of an image report (display strings, in the order shown)."""
    names = [Path(str(p)).name for p in reference_paths]
    offsets = np.asarray(offsets, dtype=float)
    subframe_model = model_metadata.get("subframe_model")
    rows: dict[str, Any] = {
        "image file": image_path,
        "image sha256": image_sha256,
        "filter": image_filter or "—",
        "detector": {
            "fcn": "fcn (localizing network; the seed's subframe CNN beside it)",
            "paper": "paper (seed CNN + matched-filter seeds and dip tests)",
        }.get(detector, detector),
        "model": f"{model_path} (sha256 {model_sha256[:16] + '…' if model_sha256 else '—'})",
        "model metadata": {k: v for k, v in model_metadata.items() if not isinstance(v, (dict, list))},
        "versions": versions,
        "references": f"{len(names)} preceding images, {names[0] if names else '—'} … {names[-1] if names else '—'}",
        "difference method": method,
        "largest reference offset (px)": f"{float(np.max(np.abs(offsets))) if offsets.size else 0.0:.3f}",
        "threshold": f"{threshold:.4f}",
        "run id": run_id,
        "processed by": worker,
        "timings (s)": {k: f"{v:.2f}" for k, v in timings.items()},
    }
    if isinstance(subframe_model, dict):
        sha = subframe_model.get("sha256")
        rows = {
            **{k: v for k, v in rows.items() if k != "model metadata"},
            "subframe model": f"{subframe_model.get('path')} (sha256 {sha[:16] + '…' if sha else '—'})",
            "model metadata": rows["model metadata"],
        }
    return rows


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S UTC") if d else "—"
    env.filters["num"] = lambda v, fmt="{:.3f}": "—" if v is None else fmt.format(v)
    return env


def report_dir(reports: str | os.PathLike, image_id: int, name: str) -> Path:
    """The folder of one image's report: ``<reports>/images/<id>_<stem>``, at most
    `REPORT_DIR_BYTES` bytes (a longer stem is shortened with a hash, `blobwatch.names.bounded_name`)."""
    stem = Path(name).name.split(".")[0] or "image"
    prefix = f"{int(image_id):05d}_"
    return Path(reports) / "images" / (prefix + bounded_name(stem, REPORT_DIR_BYTES - len(prefix)))


# --------------------------------------------------------------------------------------------
# Figures (matplotlib object interface, Agg; return PNG bytes)
# --------------------------------------------------------------------------------------------


def _circles(ax: Any, xyr: ArrayLike, **style: Any) -> None:
    """Draw many circles (x, y, radius rows) as one collection (no per-patch data-limit updates: fast)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    circles = np.asarray(xyr, dtype=float).reshape(-1, 3)
    if len(circles):
        patches = [Circle((x, y), r) for x, y, r in circles]
        ax.add_collection(PatchCollection(patches, **style), autolim=False)


def difference_figure(
    difference: np.ndarray,
    known_blobs: np.ndarray,
    candidates: Sequence[CandidateView],
    *,
    title: str = "",
    size_inches: float = 8.0,
) -> bytes:
    """PNG of the difference image (zscale, grey, origin lower-left like DS9) with known blobs
    circled in green and candidates in red (the seed's Fig. 2); the 256-px subframe grid dotted."""
    data = np.asarray(difference, dtype=np.float32)
    lo, hi = zscale_limits(data)
    fig = new_figure(size_inches, size_inches)
    ax = fig.add_axes((0.08, 0.06, 0.9, 0.88))
    ax.imshow(
        np.nan_to_num(data, nan=float(np.nanmedian(data)) if np.isfinite(data).any() else 0.0),
        cmap="gray",
        vmin=lo,
        vmax=hi,
        origin="lower",
        interpolation="nearest",
    )
    rows, cols = data.shape
    for k in range(256, cols, 256):
        ax.axvline(k - 0.5, color="#4aa3ff", lw=0.5, ls=":")
    for k in range(256, rows, 256):
        ax.axhline(k - 0.5, color="#4aa3ff", lw=0.5, ls=":")
    known = np.asarray(known_blobs, dtype=float).reshape(-1, 3)
    _circles(ax, known + np.array([0.0, 0.0, 3.0]), facecolor="none", edgecolor="#00d000", linewidth=0.8)
    for c in candidates:
        colour = "red" if c.status in ("new", "confirmed") else "orange"
        _circles(
            ax,
            [(c.x, c.y, (c.radius or DEFAULT_RADIUS) + 8)],
            facecolor="none",
            edgecolor=colour,
            linewidth=1.5,
        )
        ax.annotate(
            f"{c.id if c.id is not None else ''}",
            (c.x, c.y),
            xytext=(12, 12),
            textcoords="offset points",
            color=colour,
            fontsize=9,
            weight="bold",
        )
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(-0.5, rows - 0.5)
    ax.set_xlabel("x (column, 0-based)")
    ax.set_ylabel("y (row, 0-based)")
    if title:
        ax.set_title(title, fontsize=10, parse_math=False)  # a file name may hold "$...$"
    return png_bytes(fig)


def probability_grid_figure(
    subframes: Sequence[SubframeView], threshold: float, shape: tuple[int, int]
) -> bytes:
    """PNG of the subframe probabilities as a grid laid out like the image (origin lower-left)."""
    from matplotlib.patches import Rectangle

    fig = new_figure(4.2, 4.0)
    ax = fig.add_axes((0.16, 0.12, 0.68, 0.78))
    xs = sorted({s.x0 for s in subframes})
    ys = sorted({s.y0 for s in subframes})
    grid = np.full((len(ys), len(xs)), np.nan, dtype=np.float32)
    for s in subframes:
        grid[ys.index(s.y0), xs.index(s.x0)] = s.probability
    size = subframes[0].size if subframes else 1
    extent = (min(xs, default=0), max(xs, default=0) + size, min(ys, default=0), max(ys, default=0) + size)
    image = ax.imshow(
        grid, cmap="viridis", vmin=0, vmax=1, origin="lower", interpolation="nearest", extent=extent
    )
    for s in subframes:
        ax.text(
            s.x0 + s.size / 2,
            s.y0 + s.size / 2,
            f"{s.probability:.2f}",
            ha="center",
            va="center",
            color="white" if s.probability < 0.6 else "black",
            fontsize=9,
            weight="bold" if s.flagged else "normal",
        )
        if s.flagged:
            ax.add_patch(Rectangle((s.x0, s.y0), s.size - 1, s.size - 1, fill=False, ec="red", lw=2))
    ax.set_title(f"P(blob) per subframe (threshold {threshold:.2f})", fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    cax = fig.add_axes((0.87, 0.1, 0.03, 0.8))
    fig.colorbar(image, cax=cax)
    return png_bytes(fig)


def saliency_figure(
    subframe: np.ndarray,
    saliency: np.ndarray,
    view: SubframeView,
    candidates: Sequence[CandidateView],
    localizer: np.ndarray | None = None,
) -> bytes:
    """PNG with the prepared subframe (blobs bright) and the seed classifier's gradient saliency
    map side by side (and the localizing network's, when given, as a third panel), axes in
    full-image pixel coordinates, candidates marked."""
    panels = 2 if localizer is None else 3
    fig = new_figure(4.0 * panels, 4.0)
    extent = (view.x0 - 0.5, view.x0 + view.size - 0.5, view.y0 - 0.5, view.y0 + view.size - 0.5)
    width = 0.84 / panels
    axes = [fig.add_axes((0.06 + k / panels, 0.1, width, 0.8)) for k in range(panels)]
    sub = np.asarray(subframe, dtype=np.float32)
    lo, hi = np.percentile(sub, [0.5, 99.5]) if sub.size else (0.0, 1.0)
    axes[0].imshow(sub, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent)
    axes[0].set_title(f"subframe {view.index} (prepared, blobs bright)", fontsize=9)
    maps = [
        (np.asarray(saliency, dtype=np.float32), f"seed CNN |d logit / d pixel|, P={view.probability:.3f}")
    ]
    if localizer is not None:
        maps.append((np.asarray(localizer, dtype=np.float32), "localizing network |d logit / d pixel|"))
    for ax, (sal, title) in zip(axes[1:], maps, strict=True):
        ax.imshow(
            sal,
            cmap="inferno",
            vmin=0,
            vmax=float(np.percentile(sal, 99.9)) or 1.0,
            origin="lower",
            extent=extent,
        )
        ax.set_title(title, fontsize=9)
    for c in candidates:
        if view.x0 <= c.x < view.x0 + view.size and view.y0 <= c.y < view.y0 + view.size:
            for ax in axes:
                _circles(
                    ax,
                    [(c.x, c.y, (c.radius or DEFAULT_RADIUS) + 6)],
                    facecolor="none",
                    edgecolor="red",
                    linewidth=1,
                )
    return png_bytes(fig)


def blobmap_figure(
    known_blobs: Sequence[Any], shape: tuple[int, int] = (1024, 1024), background: np.ndarray | None = None
) -> bytes:
    """PNG of every known blob on the detector (like the seed's Fig. 2, left)."""
    fig = new_figure(8.0, 8.0)
    ax = fig.add_axes((0.08, 0.06, 0.9, 0.88))
    if background is not None:
        lo, hi = zscale_limits(np.asarray(background, dtype=np.float32))
        ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    else:
        ax.set_facecolor("black")
    colours = {"confirmed": "red", "simulator-truth": "#00d000", "import": "#00d000"}
    for source in sorted({b.source for b in known_blobs}):
        _circles(
            ax,
            [(b.x, b.y, b.radius) for b in known_blobs if b.source == source],
            facecolor="white",
            edgecolor=colours.get(source, "cyan"),
            linewidth=0.8,
            alpha=0.9,
        )
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(-0.5, shape[0] - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (column, 0-based)")
    ax.set_ylabel("y (row, 0-based)")
    ax.set_title(f"{len(known_blobs)} known blobs (green: imported, red: confirmed by review)", fontsize=10)
    return png_bytes(fig)


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def write_image_report(report: ImageReport, reports: str | os.PathLike) -> Path:
    """Write one image's figures and page; return the page's path.

    Figures: ``difference.png``, ``probabilities.png`` and ``saliency_<index>.png`` for each
    subframe in ``report.saliency``.  The page is written last.
    """
    folder = report_dir(reports, report.image_id, report.name)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(
        folder / "difference.png",
        difference_figure(
            report.difference,
            report.known_blobs,
            report.candidates,
            title=f"{report.name}: difference (new blobs dark)",
        ),
    )
    write_bytes_atomic(
        folder / "probabilities.png",
        probability_grid_figure(report.subframes, report.grid_threshold, report.difference.shape),
    )
    subframes = []
    for s in report.subframes:
        png = None
        if s.index in report.saliency and report.prepared is not None:
            png = f"saliency_{s.index:02d}.png"
            sub = report.prepared[s.y0 : s.y0 + s.size, s.x0 : s.x0 + s.size]
            write_bytes_atomic(
                folder / png,
                saliency_figure(
                    sub,
                    report.saliency[s.index],
                    s,
                    report.candidates,
                    report.localizer_saliency.get(s.index),
                ),
            )
        subframes.append(SubframeView(**{**s.__dict__, "saliency_png": png}))
    n = int(round(np.sqrt(len(subframes)))) or 1
    grid_rows = []  # top row first, as displayed (origin lower-left)
    by_pos = sorted(subframes, key=lambda s: (-s.y0, s.x0))
    for r in range(0, len(by_pos), n):
        grid_rows.append(by_pos[r : r + n])
    html = (
        _environment()
        .get_template("image.html")
        .render(
            r=report,
            subframes=subframes,
            grid_rows=grid_rows,
            flagged=[s for s in subframes if s.saliency_png],
            version=__version__,
            written=_dt.datetime.now(_dt.timezone.utc),
        )
    )
    page = folder / "report.html"
    write_text_atomic(page, html)
    return page


def render_index(rows: Sequence[dict[str, Any]], *, title: str = "blobwatch monitor") -> str:
    """HTML of the index page; ``rows`` as from `index_rows`."""
    return (
        _environment()
        .get_template("index.html")
        .render(rows=rows, title=title, version=__version__, written=_dt.datetime.now(_dt.timezone.utc))
    )


def index_rows(session: Any, reports: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per image (newest observation first) for the index page."""
    from sqlalchemy import select

    from blobwatch.monitor.db import Candidate, Image, Run

    reports = Path(reports)
    images = list(session.scalars(select(Image).order_by(Image.mjd.desc().nulls_last(), Image.id.desc())))
    runs: dict[int, Run] = {}
    for run in session.scalars(select(Run).order_by(Run.id)):
        runs[run.image_id] = run  # the latest run wins
    cands: dict[int, list[Candidate]] = {}
    for c in session.scalars(select(Candidate).order_by(Candidate.id)):
        if runs.get(c.image_id) is not None and c.run_id == runs[c.image_id].id:
            cands.setdefault(c.image_id, []).append(c)
    rows = []
    for im in images:
        run = runs.get(im.id)
        link = None
        if run is not None and run.report_path:
            try:
                link = Path(run.report_path).resolve().relative_to(reports.resolve()).as_posix()
            except ValueError:
                link = Path(run.report_path).as_uri()
        cs = cands.get(im.id, [])
        rows.append(
            {
                "id": im.id,
                "name": im.name,
                "obs_date": im.obs_date,
                "mjd": im.mjd,
                "status": im.status,
                "reason": im.reason,
                "max_probability": run.max_probability if run else None,
                "candidates": [
                    CandidateView(c.id, c.x, c.y, c.probability, c.significance, c.radius, c.status)
                    for c in cs
                ],
                "alert": any(c.alerted for c in cs),
                "link": link,
            }
        )
    return rows


def write_index(session: Any, reports: str | os.PathLike) -> Path:
    """Write ``<reports>/index.html`` from the database; return its path."""
    path = Path(reports) / "index.html"
    write_text_atomic(path, render_index(index_rows(session, reports)))
    return path


def render_blobmap(blobs: Sequence[Any]) -> str:
    """HTML of the blob-map page for catalog rows ``blobs``."""
    return (
        _environment()
        .get_template("blobmap.html")
        .render(blobs=blobs, version=__version__, written=_dt.datetime.now(_dt.timezone.utc))
    )


def write_blobmap(
    session: Any,
    reports: str | os.PathLike,
    *,
    shape: tuple[int, int] = (1024, 1024),
    background: np.ndarray | None = None,
) -> Path:
    """Write ``<reports>/blobmap.png`` and ``blobmap.html`` from the catalog; return the page."""
    from sqlalchemy import select

    from blobwatch.monitor.db import Blob

    blobs = list(session.scalars(select(Blob).order_by(Blob.id)))
    reports = Path(reports)
    write_bytes_atomic(reports / "blobmap.png", blobmap_figure(blobs, shape, background))
    page = reports / "blobmap.html"
    write_text_atomic(page, render_blobmap(blobs))
    return page
