"""Run every ``benchmarks/bench_*.py`` in turn and report which failed.

Run: ``.venv/bin/python benchmarks/run_all.py [extra args passed to every benchmark]``
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    failed = []
    for script in scripts:
        print(f"=== {script.name} ===", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(script), *extra], cwd=here.parent)
        print(
            f"=== {script.name}: exit {result.returncode} in {time.perf_counter() - start:.1f} s ===\n",
            flush=True,
        )
        if result.returncode:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
