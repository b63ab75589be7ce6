"""Benchmark the daily monitor run: one new image, from reading 31 images to the report.

Run: ``.venv/bin/python benchmarks/bench_monitor.py [--repeat 3] [--model PATH]``

A simulated 31-day 1024x1024 sequence is written to a temporary inbox; days 0-29 are registered
in a fresh SQLite database and marked processed, as on the day before (not timed).  Then day 30 arrives and ``run_monitor`` is timed, best
of ``--repeat`` (the database is restored between repeats): discovery and hashing of 31 files,
registration of the new one, reading the 30 references (from the reference store that the run of
the day before filled, ``<reports>/.reference-store``; kept between repeats), registered difference, preparation,
16-subframe classification, candidate localization, saliency maps, the report pages, the
database transaction and a notification to a local JSON webhook.

Baseline, measured in the same run: the bare data path on the same files, without the monitor
(`read_blob_image` x 31, `blob_difference`, `detect` with the same classifier, saliency of the
flagged subframes).  The pass that registers days 0-29 also stores their offsets to the fixed
frame (register once), so the monitor's daily run registers only day 30, while the baseline
registers all 30 references.  The ratio monitor / baseline is the cost of the monitor layer (database,
report, notification, bookkeeping).  Also timed once: the whole ``blobwatch monitor`` command in a
fresh process (Python start-up, imports, model loading included), as a cron job would run it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _clear_reports(reports: Path) -> None:
    """Remove the report pages of the day, keeping the reference store (as on the day before)."""
    from blobwatch.monitor.runner import STORE_FOLDER

    for path in reports.glob("*") if reports.exists() else ():
        if path.name != STORE_FOLDER:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _whole_inbox(days: int, seed: int) -> int:
    """The monitor command over a fresh ``days``-day inbox: wall, CPU and peak RSS (/usr/bin/time)."""
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bw_bench_inbox_") as tmp:
        root = Path(tmp)
        sim = simulate_sequence(
            SimulationConfig(n_days=days, seed=seed, new_blob_days=[days // 3, 2 * days // 3, days - 1])
        )
        inbox = root / "inbox"
        inbox.mkdir()
        for path in write_simulation(sim, root / "sim"):
            if path.name.endswith("_blob.fits"):
                shutil.move(path, inbox / path.name)
        exe = Path(sys.executable).with_name("blobwatch")
        rss_file = root / "rss.txt"
        loads = [os.getloadavg()[0]]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(
            [
                *("/usr/bin/time", "-f", "%M", "-o", str(rss_file)),
                *(str(exe), "monitor", str(inbox), "--db", f"sqlite:///{root / 'bw.db'}"),
                *("--reports", str(root / "reports"), "--no-progress"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "BLOBWATCH_NOTIFY": ""},
        )
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        loads.append(os.getloadavg()[0])
        processed = sum(" processed " in line for line in proc.stdout.splitlines())
        rss = int(rss_file.read_text().split()[-1]) / 1024 if rss_file.exists() else float("nan")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"blobwatch monitor over a fresh {days}-day 1024x1024 inbox (exit {proc.returncode}): ")
    print(
        f"{processed} images processed in {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"({wall / max(processed, 1):.2f} s wall per image); peak RSS {rss:.0f} MiB; "
        f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
    )
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
    return 0 if proc.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument(
        "--inbox-days",
        type=int,
        default=0,
        metavar="N",
        help="instead: the blobwatch monitor command over a fresh N-day inbox (new blobs on days "
        "N/3, 2N/3 and N-1) with an empty database and reference store, its wall and CPU "
        "seconds and peak RSS",
    )
    args = parser.parse_args(argv)
    if args.inbox_days:
        return _whole_inbox(args.inbox_days, args.seed)

    import torch
    from sqlalchemy import update

    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import detect
    from blobwatch.difference import blob_difference
    from blobwatch.fits_io import read_blob_image
    from blobwatch.modelfile import shipped_model_path
    from blobwatch.monitor.db import Image, Run, open_database
    from blobwatch.monitor.runner import MonitorSettings, run_monitor
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation
    from monitor_support import webhook_server

    model = Path(args.model) if args.model else shipped_model_path()
    if not model.is_file():
        print(f"model {model} not found; pass --model", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, best of {args.repeat}; model {model}"
    )
    with tempfile.TemporaryDirectory(prefix="bw_bench_monitor_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        sim = simulate_sequence(SimulationConfig(n_days=31, seed=args.seed, new_blob_days=[30]))
        files = sorted(p for p in write_simulation(sim, root / "sim") if p.name.endswith("_blob.fits"))
        print(
            f"simulated 31 images of {sim.images.shape[1]}x{sim.images.shape[2]} in "
            f"{time.perf_counter() - start:.1f} s (not timed)",
            flush=True,
        )
        inbox = root / "inbox"
        inbox.mkdir()
        for path in files[:-1]:
            shutil.copy(path, inbox / path.name)
        db_file = root / "blobwatch.db"
        Session = open_database(f"sqlite:///{db_file}")
        settings = MonitorSettings()
        # register days 0-29 (none has 30 earlier images, so none is processed)
        run_monitor(
            inbox,
            db=Session,
            reports=root / "reports",
            model=model,
            settings=MonitorSettings(min_references=30),
            echo=lambda line: None,
        )
        with Session() as s:  # the history was processed on earlier days
            s.execute(update(Image).values(status="processed"))
            s.commit()
        snapshot = root / "registered.db"
        with sqlite3.connect(db_file) as a, sqlite3.connect(snapshot) as b:
            a.backup(b)
        shutil.copy(files[-1], inbox / files[-1].name)

        # baseline: the bare data path on the same files
        classifier = BlobClassifier(model)

        def baseline() -> None:
            images = [read_blob_image(p) for p in files]
            diff = blob_difference(images[-1], images[:-1])
            detection = detect(diff, classifier)
            detection.saliency_maps()

        base_times, base_cpu = [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            baseline()
            base_times.append(time.perf_counter() - t)
            base_cpu.append(time.process_time() - c)

        # the monitor's daily run (classifier loaded inside, as the command does)
        times, cpu, runs = [], [], []
        with webhook_server() as hook:
            for _ in range(args.repeat):
                Session.kw["bind"].dispose()
                with sqlite3.connect(snapshot) as a, sqlite3.connect(db_file) as b:
                    a.backup(b)
                _clear_reports(root / "reports")
                t, c = time.perf_counter(), time.process_time()
                summary = run_monitor(
                    inbox,
                    db=Session,
                    reports=root / "reports",
                    model=model,
                    notify=[hook.url],
                    settings=settings,
                    echo=lambda line: None,
                )
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                assert [o.name for o in summary.processed] == [files[-1].name], summary.outcomes
                with Session() as s:
                    runs.append(s.query(Run).one().timings)
        best = int(np.argmin(times))

        # the command in a fresh process, once
        Session.kw["bind"].dispose()
        with sqlite3.connect(snapshot) as a, sqlite3.connect(db_file) as b:
            a.backup(b)
        _clear_reports(root / "reports")
        exe = Path(sys.executable).with_name("blobwatch")
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        # /usr/bin/time reports the command's own peak RSS (a child's ru_maxrss can include the
        # parent's pages from before its exec)
        rss_file = root / "rss.txt"
        timer = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() else []
        proc = subprocess.run(
            [
                *timer,
                str(exe),
                "monitor",
                str(inbox),
                "--db",
                f"sqlite:///{db_file}",
                "--reports",
                str(root / "reports"),
                "--model",
                str(model),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "BLOBWATCH_NOTIFY": ""},
        )
        command_time = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        command_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        command_rss = int(rss_file.read_text().split()[-1]) / 1024 if rss_file.exists() else float("nan")
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)

    bt, bc = min(base_times), min(base_cpu)
    print()
    print(f"load average (1 min) during the run: {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':62} {'wall s':>7} {'/ base':>6} {'CPU s':>7} {'/ base':>6}")
    print(f"{'baseline: read 31 + difference + detect + saliency':62} {bt:7.2f} {1:6.2f} {bc:7.2f} {1:6.2f}")
    print(
        f"{'monitor daily run, one new image (in process, loads model)':62} {min(times):7.2f} "
        f"{min(times) / bt:6.2f} {min(cpu):7.2f} {min(cpu) / bc:6.2f}"
    )
    print(
        f"{f'blobwatch monitor command, fresh process (exit {proc.returncode})':62} {command_time:7.2f} "
        f"{command_time / bt:6.2f} {command_cpu:7.2f} {command_cpu / bc:6.2f}"
    )
    print(f"peak RSS of the blobwatch monitor command (/usr/bin/time): {command_rss:.0f} MiB")
    print(
        "steps of the best in-process run (wall s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in runs[best].items())
    )
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
