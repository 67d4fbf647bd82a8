"""Distance to the machine's limit: achieved training FLOP/s as a share of a large fp32 matmul.

    python tests/benchmarks/bench_flops.py [--repeats 3]

The CIFAR-shaped ResNet workload of ``bench_overhead.py`` (``ConvNet()`` default widths, 2,560
random 3x32x32 images, batch 256, crop+flip, 2 epochs), run by ablate's loop (``fit``, no-op
MLflow sink, activation statistics off) and by the hand-written loop. FLOPs come from
``torch.utils.flop_counter`` (forward + backward per training image, forward per validation
image, i.e. a third of it); the reference is the FLOP/s of a 2048x2048 fp32 matmul on the same
device and threads.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import Ablate, cifar_workload, hand  # noqa: E402

from ablate.models import ConvNet  # noqa: E402
from ablate.train.cost import train_flops_per_sample  # noqa: E402


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    threads = torch.get_num_threads()
    print(f"machine: {platform.platform()}, torch {torch.__version__}, {threads} threads, cpu")
    title, config, data = cifar_workload(small=False)
    config = {**config, "train.activation_stats": False}
    x, y = next(iter(data.val_batches()))
    per_train = train_flops_per_sample(ConvNet(), x, nn.CrossEntropyLoss(), y)
    epochs = config["train.epochs"]
    total = epochs * (per_train * len(data.y_train) + per_train / 3 * len(data.y_val))
    peak = matmul_flops()
    with tempfile.TemporaryDirectory() as tmp:
        ablate = Ablate(Path(tmp))
        seconds: dict[str, list[float]] = {"ablate (fit)": [], "hand-written": []}
        for _ in range(repeats):
            seconds["ablate (fit)"].append(ablate.fit(config, data)[0])
            seconds["hand-written"].append(hand(config, data)[0])
    print(f"{title}; {per_train / 1e6:.1f} MFLOP per training image (fwd+bwd), "
          f"{total / 1e9:.1f} GFLOP per run")
    print(f"fp32 matmul 2048x2048: {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'loop':16} {'min s':>7} {'median s':>9} {'max s':>7} {'GFLOP/s':>8} {'of matmul':>10}")
    for name, values in seconds.items():
        rate = total / statistics.median(values)
        print(f"{name:16} {min(values):7.2f} {statistics.median(values):9.2f} "
              f"{max(values):7.2f} {rate / 1e9:8.1f} {rate / peak:10.1%}")


if __name__ == "__main__":
    main()
