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

#: (file name, path, what to wait for) of each page.
PAGES = (
    ("today.png", "/", "img[alt='difference image']"),
    ("queue.png", "/queue", "h1"),
    ("blobs.png", "/blobs", "img[alt='map of the known blobs on the detector']"),
    ("history.png", "/history", "img[alt^='known blobs']"),
    ("api.png", "/api", "table"),
)


def _wait_for_images(page) -> None:
    """Wait until every <img> on the page has loaded (figures are rendered on demand)."""
    page.wait_for_function(
        "Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)",
        timeout=120_000)


def shoot(base_url: str, out: Path, *, width: int = 1400) -> list[Path]:
    """Photograph each page of the app at ``base_url`` into ``out``; return the files."""
    from blobwatch.web.testing import browser_page

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with browser_page(width=width, height=900) as page:
        for name, path, selector in PAGES:
            page.goto(base_url + path)
            page.wait_for_selector(selector)
            for img in page.locator("img[loading='lazy']").all():
                img.scroll_into_view_if_needed()
            _wait_for_images(page)
            page.evaluate("window.scrollTo(0, 0)")
            target = out / name
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
            print(f"wrote {target}")
    return written


def _confirm_oldest(db_url: str) -> None:
    """Confirm the oldest open candidate, so the pages show a reviewed one."""
    from sqlalchemy import select

    from blobwatch.monitor.catalog import confirm_candidate
    from blobwatch.monitor.db import Candidate, open_database

    with open_database(db_url)() as session:
        oldest = session.scalars(select(Candidate.id).where(Candidate.status == "new")
                                 .order_by(Candidate.id).limit(1)).first()
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
            sim = monitored_simulation(tmp, n_days=args.days, size=args.size,
                                       new_blob_days=(args.days - 3, args.days - 1), model=args.model)
            db, reports = sim.db_url, sim.reports
            _confirm_oldest(db)
        with serve_in_thread(create_app(db, reports)) as base_url:
            shoot(base_url, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
