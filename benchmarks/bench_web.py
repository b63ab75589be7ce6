"""Benchmark the review app: latency of each page and figure, first request vs cached.

Run: ``.venv/bin/python benchmarks/bench_web.py [--repeat 5] [--days 12] [--model FILE]``

Builds a monitored simulation (1024x1024 images, the shipped model by default; not timed), then
requests every page and figure of the newest image through FastAPI's test client. The first
request of a figure re-reads the image and its references, rebuilds the registered median stack
and renders the PNG; later requests are served from the app's cache. Each row gives the first
request, the best of ``--repeat`` later ones (the baseline, measured in the same run) and their
ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--model", help="model file for the monitor run (default: shipped)")
    args, _ = parser.parse_known_args(argv)

    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from blobwatch.web.app import create_app
    from blobwatch.web.testing import monitored_simulation

    with tempfile.TemporaryDirectory(prefix="bw_bench_web_") as tmp:
        start = time.perf_counter()
        sim = monitored_simulation(tmp, n_days=args.days, size=1024,
                                   new_blob_days=(args.days - 1,), model=args.model)
        print(f"{os.cpu_count()} CPUs; simulated {args.days} days of 1024x1024 images and ran the "
              f"monitor in {time.perf_counter() - start:.1f} s (not timed)")
        client = TestClient(create_app(sim.db_url, sim.reports), base_url="http://127.0.0.1")
        newest = client.get("/api/images").json()[0]
        cand = client.get("/api/candidates").json()
        urls = ["/", "/queue", "/blobs", "/history", "/api/images", "/api/catalog",
                f"/images/{newest['id']}/difference.png", f"/images/{newest['id']}/stack.png",
                "/blobs/map.png", "/history.png"]
        if cand:
            urls += [f"/candidates/{cand[0]['id']}/difference.png"]
        print(f"{'request':42s} {'first (ms)':>11s} {'cached (ms)':>12s} {'ratio':>7s}")
        for url in urls:
            t0 = time.perf_counter()
            response = client.get(url)
            first = time.perf_counter() - t0
            assert response.status_code == 200, (url, response.status_code)
            warm = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                client.get(url)
                warm.append(time.perf_counter() - t0)
            best = min(warm)
            print(f"{url:42s} {first * 1e3:11.1f} {best * 1e3:12.1f} {first / best:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
