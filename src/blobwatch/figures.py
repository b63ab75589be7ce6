"""PNG figures with matplotlib's object interface: no pyplot, so no global figure state, safe
in threads (the web app draws figures in worker threads) and nothing to close."""

from __future__ import annotations

import io
import os
from typing import Any, Literal

from blobwatch.atomic import atomic_path

__all__ = ["new_figure", "png_bytes", "save_png"]


def new_figure(
    width: float, height: float, *, dpi: float = 100, layout: Literal["constrained", "tight"] | None = None
) -> Any:
    """A `matplotlib.figure.Figure` of ``width`` x ``height`` inches on an Agg canvas.

    ``layout="constrained"`` lays out axes, colorbars and titles without overlap.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, *, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (fast zlib level 2: figures are written often and are small)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 2})
    return buffer.getvalue()


def save_png(fig: Any, path: str | os.PathLike, *, dpi: float | None = None) -> None:
    """Write the figure as a PNG file, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
