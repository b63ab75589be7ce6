"""``blobwatch demo OUTDIR``: the daily monitor, end to end, on a simulated 45-day sequence.

1. simulate 45 daily CSM-monitor blob images with a new blob appearing on day 40
   (``OUTDIR/inbox``, with the simulator's truth);
2. import the blobs that existed before day 0 into the catalog;
3. run the monitor with the shipped model over the inbox (database ``OUTDIR/blobwatch.db``,
   reports ``OUTDIR/reports``), sending its notifications to a JSON webhook on 127.0.0.1 that
   the demo runs itself (plus any ``--notify`` URL);
4. print a per-day table and check: exit 0 only if day 40 alerted within 3 px of the true new blob
   and no other day alerted.

Re-running over an existing OUTDIR starts fresh: the demo deletes what an earlier demo wrote
there, saying so first with the number of images and review decisions replaced (it refuses to
touch a non-empty folder that no demo wrote).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEMO_DAYS = 45
NEW_BLOB_DAY = 40
#: The new blob must be found within this distance (px) of the truth.
TOLERANCE = 3.0
_MARKER = ".blobwatch-demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate 45 days with a new blob on day 40 and run the monitor over them",
        description=(
            f"Simulate {DEMO_DAYS} daily blob images with a new blob on day {NEW_BLOB_DAY}, import the "
            "existing blobs into the catalog, run the monitor with the shipped model (notifications to a "
            "local JSON webhook), print which days alerted and where the reports are. Exit 0 only if day "
            f"{NEW_BLOB_DAY} alerted within {TOLERANCE:g} px of the new blob and no other day alerted. "
            "An OUTDIR written by an earlier demo is emptied first."
        ),
    )
    parser.add_argument(
        "outdir", metavar="OUTDIR", help="output folder (created; emptied if an earlier demo wrote it)"
    )
    parser.add_argument("--seed", type=int, default=2021, help="simulation seed (default 2021)")
    parser.add_argument(
        "--model", metavar="PATH", default=None, help="model file (default: the shipped model)"
    )
    parser.add_argument(
        "--notify",
        metavar="URL",
        action="append",
        default=[],
        help="also notify this apprise URL (repeatable)",
    )
    parser.set_defaults(func=run_demo)


@contextlib.contextmanager
def _webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A JSON webhook on 127.0.0.1 (any free port) recording what it receives."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                received.append(json.loads(body))
            except ValueError:
                received.append({"message": body.decode("utf-8", "replace")})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/blobwatch-demo", received
    finally:
        server.shutdown()
        server.server_close()


def _earlier_demo(outdir: Path) -> str:
    """What replacing an earlier demo's output loses: its images and review decisions."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from blobwatch.errors import BlobwatchError
    from blobwatch.monitor.db import Candidate, Image, open_database

    try:
        session_factory = open_database(f"sqlite:///{outdir / 'blobwatch.db'}", create=False)
    except (BlobwatchError, SQLAlchemyError):  # no database (or not one): only files
        return "its files"
    try:
        with session_factory() as session:
            images = session.scalar(select(func.count()).select_from(Image))
            decided = session.scalar(
                select(func.count()).select_from(Candidate).where(Candidate.reviewed_by.is_not(None))
            )
    finally:
        session_factory.kw["bind"].dispose()  # the file is deleted next
    return f"its database with {images} images and {decided} review decision(s)"


def _prepare_outdir(outdir: Path) -> None:
    """Create ``outdir``, or empty it if an earlier demo wrote it, saying what is replaced."""
    from blobwatch.errors import InputError

    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "exists and is not a directory")
    if outdir.is_dir() and any(outdir.iterdir()):
        if not (outdir / _MARKER).exists():
            raise InputError(outdir, "directory is not empty and was not written by 'blobwatch demo'")
        print(
            f"0. replacing the output of an earlier demo in {outdir}: {_earlier_demo(outdir)} "
            "(review decisions made there are lost; give another OUTDIR to keep them)",
            flush=True,
        )
        for child in outdir.iterdir():
            if child.name == _MARKER:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / _MARKER).write_text("written by blobwatch demo; re-running the demo empties this folder\n")


def run_demo(args: argparse.Namespace) -> int:
    """Simulate, import, monitor, report, check."""
    import numpy as np
    from sqlalchemy import select

    from blobwatch.errors import InputError
    from blobwatch.monitor.catalog import import_catalog
    from blobwatch.monitor.db import Candidate, Image, Run, open_database
    from blobwatch.monitor.runner import run_monitor
    from blobwatch.simulate import SimulationConfig, image_filename, simulate_sequence, write_simulation

    if args.model is not None and not Path(args.model).is_file():
        raise InputError(args.model, "model file not found")
    outdir = Path(args.outdir).resolve()
    _prepare_outdir(outdir)
    inbox, reports = outdir / "inbox", outdir / "reports"

    print(
        f"1. simulating {DEMO_DAYS} days (seed {args.seed}), a new blob on day {NEW_BLOB_DAY} -> {inbox}",
        flush=True,
    )
    sim = simulate_sequence(SimulationConfig(n_days=DEMO_DAYS, seed=args.seed, new_blob_days=(NEW_BLOB_DAY,)))
    write_simulation(sim, inbox)
    new = sim.new_blobs()
    dy, dx = sim.shifts[NEW_BLOB_DAY]
    truth = [(float(r["x"]) + dx, float(r["y"]) + dy, float(r["radius"]), float(r["depth"])) for r in new]
    for x, y, radius, depth in truth:
        print(
            f"   true new blob: x={x:.1f} y={y:.1f} (DS9 {x + 1:.1f}, {y + 1:.1f}), radius {radius:.1f} px, "
            f"depth {100 * depth:.1f}%"
        )

    Session = open_database(f"sqlite:///{outdir / 'blobwatch.db'}")
    with Session() as session:
        result = import_catalog(session, inbox / "truth_blobs.ecsv")
    print(f"2. catalog: imported {len(result.added)} blobs that existed before day 0", flush=True)

    print(
        f"3. monitor {inbox} (model: {args.model or 'shipped'}; an image is processed once 5 earlier exist)",
        flush=True,
    )
    with _webhook() as (hook_url, received):
        summary = run_monitor(
            inbox,
            db=Session,
            reports=reports,
            notify=[hook_url, *args.notify],
            model=args.model,
            echo=lambda line: print("   " + line, flush=True),
        )
    print(
        f"   {len(summary.processed)} images processed in {summary.seconds:.0f} s; "
        f"{len(received)} notification(s) received by the demo webhook"
    )
    for message in received:
        print("   --- notification ---")
        for line in str(message.get("message", "")).splitlines():
            print(f"   | {line}")

    # per-day table from the database
    names = {image_filename(day): day for day in range(DEMO_DAYS)}
    rows = []
    with Session() as session:
        for image in session.scalars(select(Image).order_by(Image.mjd)):
            day = names.get(image.name)
            run = session.scalars(select(Run).where(Run.image_id == image.id).order_by(Run.id.desc())).first()
            cands = (
                []
                if run is None
                else list(
                    session.scalars(
                        select(Candidate).where(Candidate.run_id == run.id).order_by(Candidate.id)
                    )
                )
            )
            rows.append((day, image, run, cands))
    print()
    print(
        f"{'day':>3}  {'date (UTC)':<10}  {'max P':>6}  {'alert':<5}  candidates (new: x, y 0-based; DS9 in parentheses)"
    )
    alert_days = []
    found_ok = False
    for day, image, run, cands in rows:
        new_c = [c for c in cands if c.status == "new"]
        other = [c for c in cands if c.status != "new"]
        if new_c:
            alert_days.append(day)
        if day == NEW_BLOB_DAY and truth:
            found_ok = any(np.hypot(c.x - x, c.y - y) <= TOLERANCE for c in new_c for x, y, _, _ in truth)
        text = "; ".join(
            f"x={c.x:.1f} y={c.y:.1f} ({c.x + 1:.1f}, {c.y + 1:.1f}) P={c.probability:.3f}" for c in new_c
        )
        if other:
            text += ("  " if text else "") + f"[{len(other)} known/linked, not alerted]"
        max_p = f"{run.max_probability:.3f}" if run and run.max_probability is not None else "  -   "
        state = "YES" if new_c else ("no" if run else f"({image.status})")
        date = image.obs_date.strftime("%Y-%m-%d") if image.obs_date else "?"
        print(f"{day if day is not None else '?':>3}  {date:<10}  {max_p:>6}  {state:<5}  {text}")
    print()
    print(f"reports: {reports / 'index.html'}")
    print(f"         {summary.processed[-1].report if summary.processed else '-'} (newest image)")
    print(
        f"database: sqlite:///{outdir / 'blobwatch.db'}   "
        f"(review: blobwatch serve --db sqlite:///{outdir / 'blobwatch.db'} --reports {reports})"
    )
    quiet = [d for d in alert_days if d != NEW_BLOB_DAY]
    ok = found_ok and not quiet and not summary.failed
    print(
        f"check: day {NEW_BLOB_DAY} alerted within {TOLERANCE:g} px of the new blob: {'yes' if found_ok else 'NO'}; "
        f"other days alerted: {quiet if quiet else 'none'}; failed images: {len(summary.failed)} -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1
