"""Benchmark the review app under load: 20 concurrent clients over every page of a 60-day database.

Run: ``.venv/bin/python benchmarks/bench_web.py [--days 60] [--size 1024] [--clients 20] [--db-dir DIR]``

Builds a monitored simulation with `blobwatch.web.testing.monitored_simulation` (``--days``
images of ``--size`` pixels, new blobs on three days, the shipped model; not timed; with
``--db-dir`` it is built once there and reused), then starts ``blobwatch serve`` in its own
process, as a team runs it, with an empty figure cache. Each client walks every page in its
share of one random order of the pages (``--each``: every client walks every page) and fetches
what the browser fetches for it: the HTML, the pixel viewer's
figure (``viewer.json``) and pixels (``.f32``), cut-outs, saliency maps and the summary figures.

Phases, all in the same run against the same server:

1. ``cold``: the clients walk once from an empty figure cache (cut-outs and summary figures are
   made during the walk; the monitor saved every run's stack and difference when it recorded
   the run, so no pixels are rebuilt);
2. ``warm``: they walk again;
3. ``single``: one client walks alone (the baseline: the same requests without load).

Each phase prints request latencies (p50 / p95 / max, and by kind), errors, and the ratio of
its p95 to the single client's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def _kind(url: str) -> str:
    if url.endswith(".f32"):
        return "pixels (.f32)"
    if url.endswith(".png"):
        return "figure (.png)"
    if "viewer.json" in url:
        return "viewer.json"
    if url.startswith("/api/"):
        return "JSON API"
    return "HTML page"


def page_urls(client) -> list[list[str]]:
    """Every page with the requests a browser makes for it (HTML first)."""
    images = client.get("/api/images").json()
    pages = [
        ["/", "/queue"],
        ["/blobs", "/blobs/map.png"],
        ["/history", "/history.png"],
        ["/api"],
        ["/api/images"],
        ["/api/catalog"],
    ]
    newest = images[0]["id"] if images else None
    for im in images:
        detail = client.get(f"/api/images/{im['id']}").json()
        kind = "difference" if detail["run_id"] is not None else "image"
        urls = [f"/images/{im['id']}", f"/images/{im['id']}/viewer.json", f"/images/{im['id']}/{kind}.f32"]
        urls += [f"/subframes/{s['id']}/saliency.png" for s in detail["subframes"] if s["has_saliency"]]
        urls += [
            f"/candidates/{c['id']}/{k}.png"
            for c in detail["candidates"]
            if c["alerted"]
            for k in ("image", "stack", "difference")
        ]
        pages.append(urls)
        if im["id"] == newest:  # Today shows the newest image
            pages[0] += urls[1:]
    for c in client.get("/api/candidates").json():
        pages.append(
            [
                f"/candidates/{c['id']}",
                f"/images/{c['image_id']}/viewer.json?candidate={c['id']}",
                f"/images/{c['image_id']}/difference.f32",
            ]
            + [f"/candidates/{c['id']}/{k}.png" for k in ("image", "stack", "difference")]
        )
    return pages


def walk(
    base: str, pages: list[list[str]], n_clients: int, seed: int, share: bool = True
) -> tuple[list[tuple[str, float]], list[str], float]:
    """``n_clients`` threads request every page's URLs: with ``share`` the clients split one
    random order of the pages (each page once), else each walks every page in its own order."""
    import httpx

    latencies: list[tuple[str, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    order_all = list(pages)
    random.Random(seed).shuffle(order_all)

    def client(k: int) -> None:
        # every page once per walk: client k takes every n-th page of one random order
        order = order_all[k::n_clients] if share else random.Random(seed + k).sample(pages, len(pages))
        with httpx.Client(base_url=base, timeout=300.0) as http:
            for urls in order:
                for url in urls:
                    t0 = time.perf_counter()
                    try:
                        response = http.get(url)
                        ok = response.status_code == 200
                        problem = f"{url}: HTTP {response.status_code}"
                    except httpx.HTTPError as exc:
                        ok, problem = False, f"{url}: {exc!r}"
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append((url, dt))
                        if not ok:
                            errors.append(problem)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def report(
    name: str, latencies: list[tuple[str, float]], errors: list[str], wall: float, baseline_p95: float | None
) -> float:
    times = np.array([dt for _, dt in latencies])
    p50, p95 = np.percentile(times, [50, 95])
    ratio = f"{p95 / baseline_p95:6.2f}" if baseline_p95 else "  1.00"
    print(
        f"{name:8s} {len(times):6d} {wall:7.1f} {p50 * 1e3:8.0f} {p95 * 1e3:8.0f} {times.max() * 1e3:8.0f} "
        f"{len(errors):6d} {ratio}"
    )
    kinds = sorted({_kind(u) for u, _ in latencies})
    for kind in kinds:
        sub = np.array([dt for u, dt in latencies if _kind(u) == kind])
        q50, q95 = np.percentile(sub, [50, 95])
        print(f"  {kind:16s} {len(sub):6d} {'':7s} {q50 * 1e3:8.0f} {q95 * 1e3:8.0f} {sub.max() * 1e3:8.0f}")
    for e in errors[:5]:
        print("  error:", e)
    return float(p95)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--model", help="model file for the monitor run (default: shipped)")
    parser.add_argument("--db-dir", type=Path, help="build the database here once and reuse it")
    parser.add_argument(
        "--each",
        action="store_true",
        help="every client walks every page (default: the clients share one walk)",
    )
    args, _ = parser.parse_known_args(argv)

    warnings.simplefilter("ignore")
    import httpx

    from blobwatch.web.app import WEB_CACHE
    from blobwatch.web.testing import free_port, monitored_simulation

    tmp = None
    folder = args.db_dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="bw_bench_web_")
        folder = Path(tmp.name)
    try:
        db_file = folder / "blobwatch.db"
        if not db_file.exists():
            start = time.perf_counter()
            days = args.days
            monitored_simulation(
                folder,
                n_days=days,
                size=args.size,
                model=args.model,
                new_blob_days=(days // 3, 2 * days // 3, days - 1),
            )
            print(
                f"simulated {days} days of {args.size}x{args.size} images and ran the monitor in "
                f"{time.perf_counter() - start:.0f} s (not timed)"
            )
        reports = folder / "reports"
        shutil.rmtree(reports / WEB_CACHE, ignore_errors=True)  # the cold phase starts empty
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # `blobwatch serve` in its own process (SIGUSR1 dumps its threads' stacks to stderr)
        launch = (
            "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
            "from blobwatch.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        log_file = open(folder / "serve.log", "w")  # noqa: SIM115  (the server writes it until the end; closed below)
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                launch,
                "-q",
                "serve",
                "--db",
                f"sqlite:///{db_file}",
                "--reports",
                str(reports),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"{base}/api/catalog", timeout=5.0)
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the server did not start: see {folder / 'serve.log'}") from None
                    time.sleep(0.5)
            with httpx.Client(base_url=base, timeout=60.0) as http:
                pages = page_urls(http)
            n_req = sum(len(p) for p in pages)
            print(
                f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the start); "
                f"{len(pages)} pages, {n_req} requests per walk; {args.clients} clients"
            )
            print(
                f"{'phase':8s} {'reqs':>6s} {'wall s':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} "
                f"{'errors':>6s} {'p95 / single':>6s}"
            )
            cold = walk(base, pages, args.clients, seed=1, share=not args.each)
            warm = walk(base, pages, args.clients, seed=2, share=not args.each)
            single = walk(base, pages, 1, seed=3)
            base_p95 = float(np.percentile([dt for _, dt in single[0]], 95))
            report("cold", *cold, base_p95)
            report("warm", *warm, base_p95)
            report("single", *single, None)
            print(f"load average {os.getloadavg()[0]:.1f} at the end")
        finally:
            server.terminate()
            server.wait(30)
            log_file.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
