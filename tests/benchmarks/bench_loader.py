"""Images/s of ImageData's device-resident augmented batches vs a DataLoader doing the same work.

Both sides: CIFAR-shaped random data, shuffling, random crop (pad 4, zeros) + horizontal flip,
batch_size 256, one full epoch per repeat after one warm-up epoch.

    python tests/benchmarks/bench_loader.py [--device cuda] [--images 10000] [--repeats 5]
"""

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ablate.data import ImageData

PAD = 4


class AugmentedTensors(Dataset):
    """The usual per-image pipeline: pad, random crop, random flip, with torch ops."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        _, h, w = self.x[i].shape
        img = F.pad(self.x[i], (PAD, PAD, PAD, PAD))
        dy, dx = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
        img = img[:, dy : dy + h, dx : dx + w]
        return (img.flip(-1) if torch.rand(()) < 0.5 else img), self.y[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(epoch_fn, n: int, repeats: int, device: torch.device) -> list[float]:
    epoch_fn(0)  # warm-up (worker start-up, allocator, kernels)
    rates = []
    for e in range(1, repeats + 1):
        sync(device)
        start = time.perf_counter()
        epoch_fn(e)
        sync(device)
        rates.append(n / (time.perf_counter() - start))
    return rates


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    device, n = torch.device(args.device), args.images

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    data = ImageData(
        x,
        y,
        x[:0],
        y[:0],
        classes=[str(k) for k in range(10)],
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        batch_size=256,
        augment=True,
    ).to(device)

    def device_epoch(epoch: int) -> None:
        for _ in data.train_batches(seed=0, epoch=epoch):
            pass

    results = {"ImageData (on device)": images_per_second(device_epoch, n, args.repeats, device)}
    for workers in args.workers:
        loader = DataLoader(
            AugmentedTensors(x, y),
            batch_size=256,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )

        def loader_epoch(epoch: int, loader=loader) -> None:
            for xb, yb in loader:
                xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

        name = f"DataLoader num_workers={workers}"
        results[name] = images_per_second(loader_epoch, n, args.repeats, device)

    accel = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}{accel}")
    print(f"machine: {platform.platform()}, {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"{n} images 3x32x32, batch 256, crop(pad {PAD}) + flip, {args.repeats} epochs each\n")
    print(f"{'loader':<26}{'min':>12}{'median':>12}{'max':>12}   images/s")
    for name, rates in results.items():
        row = (min(rates), statistics.median(rates), max(rates))
        print(f"{name:<26}" + "".join(f"{v:>12,.0f}" for v in row))
    ours = statistics.median(results["ImageData (on device)"])
    print()
    for name, rates in list(results.items())[1:]:
        print(f"ratio (median) ImageData / {name}: {ours / statistics.median(rates):.1f}x")


if __name__ == "__main__":
    main()
