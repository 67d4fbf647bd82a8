"""Wall time of a whole study: ``--executor ray`` (one-core trials in parallel) vs in process.

Each configuration is a fresh ``ablate run`` command (new process, new sqlite store, new
checkpoint folder), so the figures include everything a user waits for: imports, Ray's start
and stop, MLflow setup. The in-process run uses torch's default thread count (all cores); the
Ray run gives each trial one core (``--cpus-per-trial 1``) and torch one thread. Runs alternate
(local, ray, ray, local, ...) and the median is reported.

Ray's start-up cost is measured apart: ``ray.init`` of a local instance, then the first round
of tasks (one per core) that import what a trial imports (torch, MLflow, ablate), then
``ray.shutdown``.

    python tests/benchmarks/bench_ray.py [--study studies/quick.py] [--seeds 1] [--repeats 2]
        [--set train.epochs=12] [--detail]
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

STARTUP = """
import logging, os, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(include_dashboard=False, logging_level=logging.WARNING)
t2 = time.perf_counter()

@ray.remote(num_cpus=1)
def warm(_):
    import ablate.execute, ablate.track, torch  # what a trial's task imports
    return os.getpid()

n = int(ray.cluster_resources()["CPU"])
ray.get([warm.remote(i) for i in range(n)])
t3 = time.perf_counter()
ray.get([warm.remote(i) for i in range(n)])
t4 = time.perf_counter()
ray.shutdown()
t5 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.3f} {t5 - t4:.2f}")
"""


# label -> (ablate run arguments, environment); --detail adds the last two
CONFIGS = {
    "local": (["--executor", "local"], {}),
    "ray": (["--executor", "ray"], {}),
    "local, 1 thread": (["--executor", "local"], {"OMP_NUM_THREADS": "1"}),
    "ray, 1 at a time": (["--executor", "ray", "--max-parallel", "1"], {}),
}


def run_study(study: str, seeds: int, config: str, extra: list[str]) -> float:
    flags, env = CONFIGS[config]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ablate.cli", "run", study, "--seeds", str(seeds),
               "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--checkpoint-dir", f"{tmp}/ck",
               *flags, *extra]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp,
                             env={**os.environ, **env})
        seconds = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quick.py"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--detail", action="store_true",
                        help="also in process with one torch thread, and ray one trial at a time")
    args = parser.parse_args()
    extra = [a for o in args.overrides for a in ("--set", o)]

    import torch

    sys.path.insert(0, str(ROOT))
    from ablate.source import load_study

    study = load_study(args.study, seeds=args.seeds)
    print(f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads in process); study "
          f"{study.name!r}: {len(study.trials)} trials")

    out = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True,
                         check=True)
    imp, init, first, second, stop = (float(x) for x in out.stdout.split())
    print(f"Ray start-up: import {imp:.2f} s, ray.init {init:.2f} s, first tasks (worker "
          f"start + imports) {first:.2f} s, later tasks {second * 1000:.0f} ms, shutdown "
          f"{stop:.2f} s: {imp + init + first + stop:.1f} s in all")

    configs = list(CONFIGS) if args.detail else ["local", "ray"]
    times: dict[str, list[float]] = {c: [] for c in configs}
    for i in range(args.repeats):
        for config in (configs if i % 2 == 0 else configs[::-1]):
            seconds = run_study(args.study, args.seeds, config, extra)
            times[config].append(seconds)
            print(f"  {config:16s} {seconds:6.1f} s", flush=True)
    local, ray_ = statistics.median(times["local"]), statistics.median(times["ray"])
    n = len(study.trials)
    print(f"in process: {local:.1f} s ({local / n:.2f} s/trial); ray, {os.cpu_count()} one-core "
          f"trials at once: {ray_:.1f} s ({ray_ / n:.2f} s/trial); speed-up {local / ray_:.2f}x "
          f"(median of {args.repeats}; spread local {min(times['local']):.1f}-"
          f"{max(times['local']):.1f} s, ray {min(times['ray']):.1f}-{max(times['ray']):.1f} s)")
    for config in configs[2:]:
        median = statistics.median(times[config])
        print(f"{config}: {median:.1f} s ({median / n:.2f} s/trial)")


if __name__ == "__main__":
    main()
