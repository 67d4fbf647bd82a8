"""Start-up of ``ablate run``'s worker processes: spawned (a fresh interpreter each, importing
torch, MLflow and ablate itself) vs forked from the template (multiprocessing's forkserver, which
imported them once).

Each measurement is a fresh process that makes a :class:`~ablate.execute.pool.WorkerPool` of
``--workers`` workers over a trivial ``train=fn`` study (one logged step) and a sqlite store
prepared beforehand, starts them (``announce``), gives each one trial and waits for every reply:
the wall time from the start to the last reply, and each worker's CPU seconds (user + system,
read before the pool ends them). Three ways:

* ``spawn``: what workers cost before the template (``method="spawn"``);
* ``template, cold``: the template started at the same moment as the workers are asked for (the
  template's imports are on the clock; its CPU seconds are reported apart);
* ``template, warm``: the template started and ready beforehand, as ``ablate run`` has it once
  the driver has loaded, planned and checked the study (``start_template`` is its first act).

    python tests/benchmarks/bench_workers.py [--repeats 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SELF = Path(__file__).resolve()
STUDY = """
from ablate import Study


def train(config, run):
    run.log({"score": float(run.seed)}, step=0)


study = Study("workers", train=train, seeds=8, metric="score")
"""
WAYS = ("spawn", "template, cold", "template, warm")


def measure(way: str, workers: int, folder: Path) -> dict:
    """One measurement, in this (fresh) process."""
    import psutil

    from ablate.execute.driver import prepare
    from ablate.execute.pool import WorkerPool
    from ablate.execute.ship import ShippedStudy
    from ablate.execute.template import start_template
    from ablate.track import Tracker, quiet_mlflow

    source = ShippedStudy.of(folder / "study.py")
    study = source.load()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with quiet_mlflow():
        tracker = Tracker(uri)
        runs, _ = prepare(study, tracker)
    template_cpu = 0.0
    if way == "template, warm":  # started and ready: one worker forked and ended
        start_template()
        warm = WorkerPool(1, source, uri, folder, method="forkserver")
        warm.announce(1)
        warm.start(study, runs)
        warm.submit(study.trials[-1], None)
        while not [r for r in warm.wait([study.trials[-1].key], None) if r[1] != "started"]:
            pass
        warm.close()
    start = time.perf_counter()
    if way == "template, cold":
        start_template()
    pool = WorkerPool(workers, source, uri, folder,
                      method="spawn" if way == "spawn" else "forkserver")
    pool.announce(workers)
    pool.start(study, runs)
    handles = [pool.submit(t, None) for t in study.trials[:workers]]
    replies = []
    while len(replies) < workers:
        replies += pool.wait([h for h in handles if h not in {r[0] for r in replies}], None)
    seconds = time.perf_counter() - start
    assert all(r.status == "finished" for _, r in replies), replies
    cpu = []
    for worker in pool.workers:
        times = psutil.Process(worker.process.pid).cpu_times()
        cpu.append(times.user + times.system)
    if way != "spawn":
        for child in psutil.Process().children():
            if "forkserver" in " ".join(child.cmdline()):
                times = child.cpu_times()
                template_cpu = times.user + times.system
    pool.close()
    return {"wall": seconds, "cpu": cpu, "template_cpu": template_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.workers, Path(args.folder))))
        return
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; {args.workers} workers; load average at start "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.repeats):
        for way in WAYS[r % 3:] + WAYS[:r % 3]:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "study.py").write_text(STUDY)
                done = subprocess.run(
                    [sys.executable, str(SELF), "--way", way, "--workers", str(args.workers),
                     "--folder", tmp], capture_output=True, text=True, cwd=tmp)
                if done.returncode != 0:
                    raise SystemExit(f"{way} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                results[way].append(json.loads(done.stdout.splitlines()[-1]))
                got = results[way][-1]
                print(f"  repeat {r + 1}: {way}: {got['wall']:.2f} s wall, CPU s per worker "
                      f"{', '.join(f'{c:.2f}' for c in got['cpu'])}", flush=True)
    print(f"\n{'way':18}{'wall s (median, range)':>26}{'CPU s per worker':>20}"
          f"{'template CPU s':>16}")
    for way, runs in results.items():
        walls = [x["wall"] for x in runs]
        cpus = [c for x in runs for c in x["cpu"]]
        template = [x["template_cpu"] for x in runs]
        print(f"{way:18}{statistics.median(walls):>12.2f} ({min(walls):.2f}-{max(walls):.2f})"
              f"{statistics.median(cpus):>20.2f}"
              f"{statistics.median(template) if way != 'spawn' else float('nan'):>16.2f}")
    print(f"n={args.repeats}; load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
