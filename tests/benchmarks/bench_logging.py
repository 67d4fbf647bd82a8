"""MLflow logging cost per epoch: one call per metric vs one batched call vs asynchronous.

    python tests/benchmarks/bench_logging.py [--repeats 5]

A real sqlite store in a temp dir; per epoch the metrics a built-in trial logs (train/val loss
and accuracy, lr and activation statistics of a 4-stage ConvNet: 24 values). Prints milliseconds
per epoch (min/median/max) for each way, the ratio to ablate's way (one ``log_batch`` per epoch)
and the share of a CIFAR-shaped epoch (2.3 s) and of a quick-study epoch (0.32 s) on this machine
(``bench_overhead.py``).
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

EPOCHS = 10
KEYS = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"] + [
    f"act_{s}/features.{i}" for s in ("mean", "std") for i in range(9)
] + ["act_mean/classifier"]
EPOCH_SECONDS = {"CIFAR-shaped epoch (2.3 s)": 2.3, "quick-study epoch (0.32 s)": 0.32}


def per_metric(client: MlflowClient, run_id: str, step: int) -> None:
    for k in KEYS:
        client.log_metric(run_id, k, 0.5, step=step)


def batched(client: MlflowClient, run_id: str, step: int) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, 0.5, now, step) for k in KEYS])


def asynchronous(client: MlflowClient, run_id: str, step: int):
    now = int(time.time() * 1000)
    return client.log_batch(run_id, metrics=[Metric(k, 0.5, now, step) for k in KEYS],
                            synchronous=False)


WAYS = {"one call per metric": per_metric, "one log_batch per epoch (ablate)": batched,
        "log_batch, synchronous=False": asynchronous}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(f"machine: {platform.platform()}, torch {torch.__version__}, mlflow "
          f"{mlflow.__version__}, {torch.get_num_threads()} threads; {len(KEYS)} metrics per "
          f"epoch, {EPOCHS} epochs per run, sqlite store")
    ms: dict[str, list[float]] = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'm.db'}")
        exp = client.create_experiment("bench")
        for _ in range(repeats):
            for name, log in WAYS.items():  # interleaved, so noise spreads over every way
                run_id = client.create_run(exp).info.run_id
                start = time.perf_counter()
                pending = [log(client, run_id, step) for step in range(EPOCHS)]
                for operation in pending:  # asynchronous work is only deferred: count it
                    if operation is not None:
                        operation.wait()
                ms[name].append((time.perf_counter() - start) / EPOCHS * 1000)
                assert len(client.get_metric_history(run_id, "val_acc")) == EPOCHS
    ref = statistics.median(ms["one log_batch per epoch (ablate)"])
    shares = "  ".join(f"{'share of ' + k:>34}" for k in EPOCH_SECONDS)
    print(f"\n{'way':36} {'min ms':>7} {'median':>7} {'max':>7} {'vs ablate':>9}  {shares}")
    for name, values in ms.items():
        med = statistics.median(values)
        cells = "  ".join(f"{med / 1000 / s:34.2%}" for s in EPOCH_SECONDS.values())
        print(f"{name:36} {min(values):7.1f} {med:7.1f} {max(values):7.1f} {med / ref:8.1f}x  "
              f"{cells}")


if __name__ == "__main__":
    main()
