"""The pixel viewer of the image and candidate pages: a Bokeh figure, its pixels sent apart.

`viewer_item` builds the figure as a Bokeh JSON item (`bokeh.embed.json_item`), once per image
shape: an image glyph whose pixels the page's script (``static/app.js``) fills from the app's
float32 download (``/images/{id}/{kind}.f32``), pan / wheel-zoom / box-zoom / reset tools, and
circles (filled by the page from `marker_columns`) on the image's candidates and the catalog's
blobs that open their pages when clicked (Bokeh's ``TapTool`` with ``OpenURL``). The page's script adds, around it, what DS9 shows: x / y / value
under the cursor (0-based and DS9's 1-based), the scale (zscale, min-max, percentiles) and the
colour map. BokehJS is served from the installed ``bokeh`` package (`bokehjs_dir`), never a
CDN, and the page runs no code from the item (no ``CustomJS``), so the scripts stay ``'self'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Colour maps offered (Bokeh palette names, 256 colours each).
COLORMAPS = ("Greys256", "Viridis256", "Inferno256", "Cividis256")
#: Circle colours by candidate status (as in the region files), and the catalog's blobs.
STATUS_COLORS = {
    "new": "#ef4444",
    "confirmed": "#06b6d4",
    "rejected": "#f97316",
    "linked": "#f97316",
    "known": "#22c55e",
}
BLOB_COLOR = "#22c55e"
#: Non-finite pixels (the reference border), as in the PNG figures.
NAN_COLOR = "#1e3a8a"


@dataclass(frozen=True)
class Marker:
    """A clickable circle: 0-based centre, radius (px), colour, label and the page it opens."""

    x: float
    y: float
    radius: float
    color: str
    label: str
    url: str


def bokehjs_dir() -> Path:
    """The folder of BokehJS's static files inside the installed ``bokeh`` package."""
    from bokeh.util.paths import bokehjs_path

    return Path(bokehjs_path())


def bokeh_version() -> str:
    """The installed Bokeh's version (BokehJS and the JSON items must match it)."""
    import bokeh

    return str(bokeh.__version__)


def palettes() -> dict[str, list[str]]:
    """The offered colour maps, low to high (`COLORMAPS`)."""
    import bokeh.palettes as bp

    return {name.removesuffix("256").lower(): list(getattr(bp, name)) for name in COLORMAPS}


def candidate_markers(candidates: Sequence[Any]) -> list[Marker]:
    """Circles on candidates (objects with ``id, x, y, radius, status``), linking to their pages."""
    return [
        Marker(
            float(c.x),
            float(c.y),
            float(max(c.radius or 8.0, 4.0)) * 1.5,
            STATUS_COLORS.get(c.status, STATUS_COLORS["new"]),
            f"candidate #{c.id} ({c.status})",
            f"/candidates/{c.id}",
        )
        for c in candidates
    ]


def blob_markers(blobs: Sequence[Any]) -> list[Marker]:
    """Circles on catalog blobs (objects with ``id, x, y, radius``), linking to their table row."""
    return [
        Marker(
            float(b.x),
            float(b.y),
            float(max(b.radius, 2.0)),
            BLOB_COLOR,
            f"blob #{b.id}",
            f"/blobs?blob={b.id}#blob-{b.id}",
        )
        for b in blobs
    ]


def marker_columns(markers: Sequence[Marker]) -> dict[str, list[Any]]:
    """The circles as the columns of the figure's ``bw-markers`` source (the page sets them)."""
    return {
        "x": [m.x for m in markers],
        "y": [m.y for m in markers],
        "r": [m.radius for m in markers],
        "color": [m.color for m in markers],
        "label": [m.label for m in markers],
        "url": [m.url for m in markers],
    }


def view_ranges(
    shape: tuple[int, int], center: tuple[float, float] | None = None, half: float | None = None
) -> dict[str, list[float]]:
    """The view to open on: the whole image, or ``half`` pixels each way around ``center`` (x, y).

    Pixel (x, y) covers ``[x - 0.5, x + 0.5]``, as in the PNG figures.
    """
    rows, cols = shape
    if center is not None and half is not None:
        return {"x": [center[0] - half, center[0] + half], "y": [center[1] - half, center[1] + half]}
    return {"x": [-0.5, cols - 0.5], "y": [-0.5, rows - 0.5]}


def viewer_item(shape: tuple[int, int], *, size: int = 680) -> dict[str, Any]:
    """The viewer figure for images of ``shape`` as a Bokeh JSON item: no pixels, no circles.

    The figure is the same for every image of one shape, so the app builds it once (Bokeh takes a
    good fraction of a second). The page fills in what belongs to one image: its pixels
    (``bw-pixels``), its circles (``bw-markers``, from `marker_columns`) and the view to open on
    (`view_ranges`).

    Parameters
    ----------
    shape : (rows, cols)
        The image's shape; the ranges are bounded by its edges.
    size : int
        Width and height of the plot in screen pixels.
    """
    from bokeh.embed import json_item
    from bokeh.models import (
        ColumnDataSource,
        HoverTool,
        LinearColorMapper,
        OpenURL,
        Range1d,
        TapTool,
    )
    from bokeh.plotting import figure

    rows, cols = shape
    (x0, x1), (y0, y1) = view_ranges(shape).values()
    x_range = Range1d(start=x0, end=x1, bounds=(x0, x1))
    y_range = Range1d(start=y0, end=y1, bounds=(y0, y1))
    fig = figure(
        name="bw-figure",
        x_range=x_range,
        y_range=y_range,
        width=size,
        height=size,
        tools="pan,wheel_zoom,box_zoom,reset",
        active_scroll="wheel_zoom",
        active_drag="pan",
        x_axis_label="x (column, 0-based)",
        y_axis_label="y (row, 0-based)",
        toolbar_location="right",
        match_aspect=True,
    )
    fig.toolbar.logo = None
    mapper = LinearColorMapper(
        name="bw-mapper", palette=palettes()["greys"], low=0.0, high=1.0, nan_color=NAN_COLOR
    )
    pixels = ColumnDataSource({"image": [np.zeros((1, 1), dtype=np.float32)]}, name="bw-pixels")
    fig.image(
        image="image", x=-0.5, y=-0.5, dw=cols, dh=rows, source=pixels, color_mapper=mapper, name="bw-image"
    )
    circles = ColumnDataSource(marker_columns([]), name="bw-markers")
    ring = fig.circle(
        x="x",
        y="y",
        radius="r",
        source=circles,
        fill_alpha=0.0,
        line_color="color",
        line_width=2,
        hit_dilation=1.0,
        name="bw-circles",
        nonselection_line_alpha=1.0,
        selection_line_width=3,
    )
    fig.add_tools(
        TapTool(renderers=[ring], callback=OpenURL(url="@url", same_tab=True)),
        HoverTool(renderers=[ring], tooltips="@label (click to open)"),
    )
    fig.grid.visible = False
    return dict(json_item(fig))
