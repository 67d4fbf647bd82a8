"""Wall time of the quick study at ``train.threads=1`` (the default) vs 2 threads, in process and
in the default worker processes.

``train.threads`` is part of every variant's config because torch's results depend on the
thread count; its default of 1 makes the in-process and Ray executors agree bitwise. This checks
what the default costs, and what the default ``--workers auto`` (CPUs / train.threads worker
processes) wins back: three configurations, each a fresh ``ablate run`` command (new process,
new sqlite store, new checkpoint folder), run in rotating order (A B C, B C A, C A B, ...):
``--workers 1`` at 1 thread, ``--workers 1`` at 2 threads (the old default), and the default
workers at 1 thread. Medians, spread and ratios are printed.

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
CONFIGS = {  # label -> extra arguments of `ablate run`
    "threads=1 workers=1": ["--set", "train.threads=1", "--workers", "1"],
    "threads=2 workers=1": ["--set", "train.threads=2", "--workers", "1"],
    "threads=1 workers=auto": ["--set", "train.threads=1"],
}


def one_run(study: str, seeds: int, config: list[str], extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ablate.cli", "run", study, "--seeds", str(seeds),
               "--tracking-uri", f"sqlite:///{tmp}/m.db", "--checkpoint-dir", f"{tmp}/ck",
               *config, *extra]
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
    labels = list(CONFIGS)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(args.repeats):
        for label in labels[r % 3:] + labels[:r % 3]:
            times[label].append(one_run(args.study, args.seeds, CONFIGS[label], extra))
            print(f"  repeat {r + 1}: {label} {times[label][-1]:.1f} s", flush=True)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"study {Path(args.study).name} --seeds {args.seeds} {' '.join(extra)}")
    for label, values in times.items():
        print(f"{label}: median {statistics.median(values):.1f} s "
              f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")
    median = {label: statistics.median(values) for label, values in times.items()}
    old, one = median["threads=2 workers=1"], median["threads=1 workers=1"]
    print(f"threads=1 / threads=2, both in process: {one / old:.2f}x; the default (threads=1, "
          f"workers=auto) / the old default (threads=2 in process): "
          f"{median['threads=1 workers=auto'] / old:.2f}x (below 1: the default is faster)")


if __name__ == "__main__":
    main()
