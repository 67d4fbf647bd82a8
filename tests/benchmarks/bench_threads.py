"""Wall time of the quick study in process at ``train.threads=1`` (the default) vs 2 threads.

``train.threads`` is part of every variant's config because torch's results depend on the
thread count; its default of 1 makes the in-process and Ray executors agree bitwise. This checks
what the default costs: each configuration is a fresh ``ablate run`` command (new process, new
sqlite store, new checkpoint folder), runs alternate (1, 2, 2, 1, ...), and the medians and their
ratio are printed with the spread.

    python tests/benchmarks/bench_threads.py [--study studies/quick.py] [--seeds 1]
        [--repeats 3] [--set train.epochs=4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one_run(study: str, seeds: int, threads: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ablate.cli", "run", study, "--seeds", str(seeds),
               "--tracking-uri", f"sqlite:///{tmp}/m.db", "--checkpoint-dir", f"{tmp}/ck",
               "--set", f"train.threads={threads}", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quick.py"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    extra = [a for o in args.overrides for a in ("--set", o)]
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.repeats):
        for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
            times[threads].append(one_run(args.study, args.seeds, threads, extra))
            print(f"  repeat {r + 1}: {threads} thread(s) {times[threads][-1]:.1f} s", flush=True)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"study {Path(args.study).name} --seeds {args.seeds} {' '.join(extra)}")
    for threads, values in times.items():
        print(f"train.threads={threads}: median {statistics.median(values):.1f} s "
              f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")
    ratio = statistics.median(times[1]) / statistics.median(times[2])
    print(f"ratio 1 thread / 2 threads: {ratio:.2f}x (below 1: the default is faster)")


if __name__ == "__main__":
    main()
