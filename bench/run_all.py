"""Run every benchmark in turn, each in its own process, with the settings BENCHMARKS.md quotes.

    .venv/bin/python -m bench.run_all      (about 30 minutes on 2 cores)
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS: list[list[str]] = [
    ["bench.bench_pacing", "--rpm", "600", "--seconds", "90"],
    ["bench.bench_pacing", "--rpm", "120", "--seconds", "90", "--capacity", "1"],
    ["bench.bench_mapping"],
    ["bench.bench_destination"],
    ["bench.bench_ledger"],
]


def main() -> int:
    failed = 0
    for module, *args in BENCHMARKS:
        print(f"\n=== python -m {module} {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, "-m", module, *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
