"""blobwatch.figures: PNGs without pyplot's global state."""

from __future__ import annotations

import threading
from pathlib import Path

from blobwatch.figures import new_figure, png_bytes, save_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_are_drawn_in_threads_without_pyplot(tmp_path: Path) -> None:
    results: dict[int, bytes] = {}

    def draw(k: int) -> None:
        fig = new_figure(2.0, 1.5, layout="constrained")
        fig.subplots().plot([0, 1], [k, k + 1])
        results[k] = png_bytes(fig, dpi=50)

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3] and all(png.startswith(PNG_MAGIC) for png in results.values())
    fig = new_figure(2.0, 1.5)
    save_png(fig, tmp_path / "a.png", dpi=40)
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_MAGIC) and [
        p.name for p in tmp_path.iterdir()
    ] == ["a.png"]
