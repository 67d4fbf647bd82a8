"""What one MLflow tracking server sustains with many trials logging at once: PostgreSQL vs sqlite.

For each backend store, a fresh PostgreSQL cluster (``initdb`` in a temp dir, fsync on, as a
real server) or sqlite file, and one ``mlflow server`` on it (``--workers 4``, MLflow's default),
all on 127.0.0.1. Then 2, 8 and 32 concurrent writers, each like one trial: it creates a run
with 20 params, then logs one ``log_batch`` of 24 metrics per "epoch" (ablate's per-epoch call:
loss, accuracy, learning rate and activation statistics) back to back, through
``MlflowClient`` (its HTTP retries included), for ``--seconds`` or ``--batches``, whichever
ends first. Writers are threads of this one process (32 processes would not fit 2 cores).
Reported per level: metrics logged per second, ``log_batch`` latency p50/p99/mean, and errors
(calls that failed after the client's retries).

Sizing: a trial that logs one batch per epoch of T seconds spends latency/T of its time
logging. With W trials, the server must absorb W/T batches per second. A level that sustained
X batches/s at mean latency L with c writers shows the server keeps latency at or below L for
any load up to X (fewer requests in flight than c), so it serves W = X*T trials with logging
under 1% of trial time when L <= 0.01*T. The table gives, per epoch length, the largest such W
over the measured levels (a throughput bound: the rows and indexes of a store that grows for
hours are not simulated).

    python tests/benchmarks/bench_tracking.py [--writers 2 8 32] [--seconds 8] [--batches 400]
        [--metrics 24] [--workers 4] [--backends postgresql sqlite] [--epochs 1 10 60]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS = 20


def measure(url: str, writers: int, *, seconds: float, batches: int, metrics: int = 24,
            experiment: str | None = None) -> dict:
    """``writers`` threads logging to ``url`` at once; throughput, latencies and errors."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    setup = MlflowClient(url)
    name = experiment or f"bench-{writers}-{time.time_ns()}"
    exp_id = setup.create_experiment(name)
    names = [f"act_mean/layer{i}" for i in range(metrics - 3)] + ["loss", "acc", "lr"]
    barrier = threading.Barrier(writers + 1)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    errors = [0] * writers
    stop_at = [0.0]

    def writer(i: int) -> None:
        client = MlflowClient(url)
        try:
            run = client.create_run(exp_id, run_name=f"trial-{i}")
            client.log_batch(run.info.run_id, params=[Param(f"p{k}", str(k))
                                                      for k in range(PARAMS)])
        except Exception:
            errors[i] += 1
            barrier.wait()
            return
        barrier.wait()
        for step in range(batches):
            if time.perf_counter() > stop_at[0]:
                break
            now = int(time.time() * 1000)
            batch = [Metric(n, 1.0 / (step + 1 + j), now, step) for j, n in enumerate(names)]
            t0 = time.perf_counter()
            try:
                client.log_batch(run.info.run_id, metrics=batch)
            except Exception:
                errors[i] += 1
                continue
            latencies[i].append(time.perf_counter() - t0)
        try:
            client.set_terminated(run.info.run_id)
        except Exception:
            errors[i] += 1

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600  # set for real when everyone is ready
    barrier.wait()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    for t in threads:
        t.join(timeout=seconds + 180)
    elapsed = time.perf_counter() - start
    lat = sorted(x for per in latencies for x in per)
    done = len(lat)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {
        "writers": writers, "batches": done, "seconds": elapsed,
        "metrics_per_s": done * metrics / elapsed, "batches_per_s": done / elapsed,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "errors": sum(errors), "hung": sum(t.is_alive() for t in threads),
    }


def sizing(rows: list[dict], epoch_s: float, share: float = 0.01) -> int:
    """Most concurrent trials (one batch per epoch of ``epoch_s``) with logging <= share."""
    ok = [r["batches_per_s"] * epoch_s for r in rows
          if r["errors"] == 0 and r["mean_ms"] / 1000 <= share * epoch_s]
    return int(max(ok)) if ok else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="per level (default 8)")
    parser.add_argument("--batches", type=int, default=400, help="most per writer and level")
    parser.add_argument("--metrics", type=int, default=24, help="metrics per log_batch")
    parser.add_argument("--workers", type=int, default=4, help="mlflow server --workers")
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"],
                        choices=["postgresql", "sqlite"])
    parser.add_argument("--epochs", type=float, nargs="+", default=[1, 10, 60],
                        help="epoch lengths (s) for the sizing table")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # bounded, even if it hangs
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run

    sys.path.insert(0, str(ROOT))
    import mlflow

    from ablate.track import quiet_mlflow
    from tests.cluster import mlflow_server, postgres

    print(f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"mlflow {mlflow.__version__}; mlflow server --workers {args.workers} on 127.0.0.1; "
          f"one log_batch = {args.metrics} metrics; {args.seconds:g} s (at most {args.batches} "
          f"batches per writer) per level", flush=True)
    results: dict[str, list[dict]] = {}
    with quiet_mlflow():
        run_levels(args, results, mlflow_server, postgres)
    print_tables(args, results)


def run_levels(args, results, mlflow_server, postgres) -> None:
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
            store_cm = (postgres(durable=True) if backend == "postgresql"
                        else contextlib.nullcontext(f"sqlite:///{tmp}/store.db"))
            with store_cm as store, mlflow_server(store, Path(tmp) / "server",
                                                  workers=args.workers) as url:
                measure(url, 2, seconds=1, batches=5, metrics=args.metrics)  # warm the workers
                rows = results[backend] = []
                for w in args.writers:
                    row = measure(url, w, seconds=args.seconds, batches=args.batches,
                                  metrics=args.metrics)
                    rows.append(row)
                    print(f"{backend:10s} {w:3d} writers: {row['metrics_per_s']:8.0f} metrics/s "
                          f"({row['batches_per_s']:6.1f} batches/s), log_batch p50 "
                          f"{row['p50_ms']:6.1f} ms p99 {row['p99_ms']:7.1f} ms mean "
                          f"{row['mean_ms']:6.1f} ms, errors {row['errors']}"
                          + (f", hung {row['hung']}" if row["hung"] else ""), flush=True)


def print_tables(args, results: dict[str, list[dict]]) -> None:
    print("\n| store | writers | metrics/s | log_batch p50 | p99 | mean | errors |")
    print("|---|---|---|---|---|---|---|")
    for backend, rows in results.items():
        for r in rows:
            print(f"| {backend} | {r['writers']} | {r['metrics_per_s']:,.0f} | "
                  f"{r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['mean_ms']:.0f} ms | "
                  f"{r['errors']} |")
    print(f"\nConcurrent trials one server serves with logging under 1% of trial time (one "
          f"log_batch of {args.metrics} metrics per epoch):\n")
    print("| store | " + " | ".join(f"epoch {e:g} s" for e in args.epochs) + " |")
    print("|---|" + "---|" * len(args.epochs))
    for backend, rows in results.items():
        print(f"| {backend} | " + " | ".join(f"{sizing(rows, e):,}" for e in args.epochs)
              + " |")


if __name__ == "__main__":
    main()
