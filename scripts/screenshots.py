#!/usr/bin/env python
"""Screenshots of every page of the review app, for docs/web.md and the README.

Without ``--db`` it builds a fresh monitored simulation in a temporary folder (simulate a short
sequence with new blobs three days and one day before the end, import the blobs that existed
before it, run the monitor with the shipped model), confirms the oldest open candidate as a
reviewer would (with `blobwatch.monitor.catalog.confirm_candidate`), serves the app on
127.0.0.1 and photographs each page in the system Chromium. With ``--db`` it photographs an
existing database as it is.

    .venv/bin/python scripts/screenshots.py --out docs/screenshots
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

#: (file name, path, what to wait for, whole page?) of each page; ``{candidate}`` is the newest
#: image's first candidate.
PAGES = (
    ("today.png", "/", "div.viewer[data-state=ready]", False),
    ("candidate.png", "/candidates/{candidate}", "div.viewer[data-state=ready]", True),
    ("queue.png", "/queue", "h1", False),
    ("blobs.png", "/blobs", "img[alt='map of the known blobs on the detector']", False),
    ("history.png", "/history", "img[alt^='known blobs']", False),
    ("api.png", "/api", "table", False),
)
#: Largest PNG kept in the repository (bytes).
MAX_BYTES = 300_000


def _wait_for_images(page) -> None:
    """Wait until every <img> on the page has loaded (figures are rendered on demand)."""
    page.wait_for_function(
        "Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)", timeout=300_000
    )


def shrink_png(path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Re-save ``path`` with an adaptive palette (fewer colours until under ``max_bytes``)."""
    from PIL import Image

    with Image.open(path) as shot:
        rgb = shot.convert("RGB")
    for colors in (256, 128, 64, 32):
        rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= max_bytes:
            break
    return path.stat().st_size


def shoot(base_url: str, out: Path, *, width: int = 1400) -> list[Path]:
    """Photograph each page of the app at ``base_url`` into ``out``; return the files."""
    import json
    from urllib.request import urlopen

    from blobwatch.web.testing import browser_page

    with urlopen(f"{base_url}/api/candidates") as response:
        candidates = json.load(response)
    open_ones = [c for c in candidates if c["status"] == "new"] or candidates
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with browser_page(width=width, height=1000) as page:
        for name, path, selector, full in PAGES:
            if "{candidate}" in path:
                if not open_ones:
                    continue
                path = path.format(candidate=open_ones[0]["id"])
            page.goto(base_url + path)
            page.wait_for_selector(selector, timeout=300_000)
            for img in page.locator("img[loading='lazy']").all():
                img.scroll_into_view_if_needed()
            _wait_for_images(page)
            page.evaluate("window.scrollTo(0, 0)")
            target = out / name
            page.screenshot(path=str(target), full_page=full)
            size = shrink_png(target)
            written.append(target)
            print(f"wrote {target} ({size / 1e3:.0f} kB)")
    return written


def _confirm_oldest(db_url: str) -> None:
    """Confirm the oldest open candidate, so the pages show a reviewed one."""
    from sqlalchemy import select

    from blobwatch.monitor.catalog import confirm_candidate
    from blobwatch.monitor.db import Candidate, open_database

    with open_database(db_url)() as session:
        oldest = session.scalars(
            select(Candidate.id).where(Candidate.status == "new").order_by(Candidate.id).limit(1)
        ).first()
        if oldest is not None:
            blob = confirm_candidate(session, oldest, reviewer="A. Astronomer")
            print(f"confirmed candidate {oldest} as blob {blob.id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="output folder")
    parser.add_argument("--db", help="database URL to photograph (default: a fresh simulation)")
    parser.add_argument("--reports", help="reports folder of --db")
    parser.add_argument("--model", help="model file for the simulation's monitor run (default: shipped)")
    parser.add_argument("--days", type=int, default=12, help="simulated days (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024, help="simulated image size (default: %(default)s)")
    args = parser.parse_args(argv)

    from blobwatch.web.app import create_app
    from blobwatch.web.testing import chromium_path, monitored_simulation, serve_in_thread

    if chromium_path() is None:
        print("screenshots: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="blobwatch-shots-") as tmp:
        db, reports = args.db, args.reports
        if db is None:
            sim = monitored_simulation(
                tmp,
                n_days=args.days,
                size=args.size,
                new_blob_days=(args.days - 3, args.days - 1),
                model=args.model,
            )
            db, reports = sim.db_url, sim.reports
            _confirm_oldest(db)
        with serve_in_thread(create_app(db, reports)) as base_url:
            shoot(base_url, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
