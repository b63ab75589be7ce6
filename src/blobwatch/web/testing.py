"""Drive the review app in a real browser: a monitored simulation, a server thread, Chromium.

Used by the end-to-end test (``tests/test_web_browser.py``) and the screenshot script
(``scripts/screenshots.py``). The browser is the system's Chromium (Debian's package), driven
by Playwright with an explicit executable path; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Chromium flags for a quiet, offline, sandbox-free headless run (containers, CI).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """Path of the system Chromium, or None where none is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class MonitoredSimulation:
    """A simulated sequence processed by the monitor."""

    db_url: str
    reports: Path
    inbox: Path
    new_blobs: list[dict[str, float]]


def monitored_simulation(
    outdir: str | os.PathLike,
    *,
    n_days: int = 8,
    size: int = 512,
    new_blob_days: tuple[int, ...] = (6,),
    seed: int = 7,
    model: str | os.PathLike | None = None,
    min_references: int = 5,
) -> MonitoredSimulation:
    """Simulate ``n_days`` images, import the blobs that existed before day 0, run the monitor.

    Parameters
    ----------
    outdir : path-like
        Receives ``inbox/`` (the images), ``reports/`` and ``blobwatch.db``.
    n_days, size, new_blob_days, seed
        Passed to `blobwatch.simulate.SimulationConfig` (one clear new blob per listed day).
    model : path-like, optional
        Model file for the monitor; the shipped model by default.
    min_references : int
        References needed before an image is processed.
    """
    from blobwatch.monitor.catalog import import_catalog
    from blobwatch.monitor.db import open_database
    from blobwatch.monitor.runner import MonitorSettings, run_monitor
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    out = Path(outdir)
    inbox, reports = out / "inbox", out / "reports"
    sim = simulate_sequence(
        SimulationConfig(
            n_days=n_days,
            size=size,
            seed=seed,
            n_existing=max(4, size * size // 40000),
            new_blob_days=new_blob_days,
            new_blob_depth=(0.12, 0.15),
            new_blob_radius=(7.0, 8.0),
            cosmic_ray_rate=0.0,
            snowball_rate=0.0,
            persistence_rate=0.0,
            earthlight_probability=0.0,
        )
    )
    write_simulation(sim, inbox)
    db_url = f"sqlite:///{(out / 'blobwatch.db').resolve()}"
    session_factory = open_database(db_url)
    with session_factory() as session:
        import_catalog(session, inbox / "truth_blobs.ecsv")
    summary = run_monitor(
        inbox,
        db=session_factory,
        reports=reports,
        model=model,
        settings=MonitorSettings(min_references=min_references),
        progress=False,
        echo=lambda line: None,
    )
    if summary.failed or not summary.processed:
        raise RuntimeError(
            f"the monitor processed {len(summary.processed)} image(s) and failed on "
            f"{[o.name for o in summary.failed]}: {[o.reason for o in summary.failed]}"
        )
    from astropy.table import Table

    truth = Table.read(inbox / "truth_blobs.ecsv", format="ascii.ecsv")
    new = [
        {"x": float(r["x"]), "y": float(r["y"]), "radius": float(r["radius"]), "day": int(r["day"])}
        for r in truth
        if r["day"] >= 0
    ]
    return MonitoredSimulation(db_url=db_url, reports=reports, inbox=inbox, new_blobs=new)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yield its base URL, stop it on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="blobwatch-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@contextlib.contextmanager
def browser_page(*, width: int = 1400, height: int = 1000, bypass_csp: bool = True) -> Iterator[Any]:
    """A Playwright page in the system Chromium with a fresh profile (closed on exit).

    ``bypass_csp`` lets Playwright evaluate its own scripts (waits); the pages themselves run
    only the app's static scripts. ``bypass_csp=False`` keeps the app's Content-Security-Policy
    in force (what a reviewer's browser does).
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="blobwatch-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height},
            bypass_csp=bypass_csp,
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
