"""GPU benchmark: ablate's loop vs a hand-written one on CUDA, and every component under
deterministic algorithms.

    python tests/benchmarks/bench_gpu.py            # on a CUDA machine (a few minutes)
    python tests/benchmarks/bench_gpu.py --smoke    # anywhere: tiny sizes on the CPU

The CIFAR-shaped ResNet baseline (``ConvNet()`` default widths) at batch 512 for about 200 steps
on random CIFAR-shaped data, for every combination of deterministic algorithms, bf16 autocast
and ``torch.compile`` on and off: images per second of ablate's ``fit`` (no-op MLflow sink,
activation statistics off) and of a hand-written loop doing the same work, and their ratio.
Then each built-in component (every ConvNet toggle, every CharRNN cell) runs forward and
backward with ``torch.use_deterministic_algorithms(True)``; any that raises is listed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ablate.config import TRAIN_DEFAULTS
from ablate.data import ImageData
from ablate.models import CharRNN, ConvNet
from ablate.train.loop import fit
from ablate.train.run import Run, seed_everything, set_determinism


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def workload(smoke: bool, device: torch.device) -> ImageData:
    n, batch = (64, 32) if smoke else (512 * 100, 512)
    gen = torch.Generator().manual_seed(0)
    return ImageData(
        x_train=torch.randn(n, 3, 32, 32, generator=gen),
        y_train=torch.randint(0, 10, (n,), generator=gen),
        x_val=torch.randn(batch * 4, 3, 32, 32, generator=gen),
        y_val=torch.randint(0, 10, (batch * 4,), generator=gen),
        classes=[str(k) for k in range(10)], mean=(0.0,) * 3, std=(1.0,) * 3,
        batch_size=batch, augment=True).to(device)


def run_ablate(data: ImageData, device, det: bool, bf16: bool, compile_: object, epochs: int,
               folder: Path) -> float:
    config = {**TRAIN_DEFAULTS, "train.epochs": epochs, "train.device": str(device),
              "train.deterministic": det, "train.bf16": bf16, "train.compile": compile_,
              "train.activation_stats": False}
    set_determinism(det, device)
    seed_everything(0)
    run = Run(config=config, seed=0, device=device, checkpoint_dir=folder, metric="val_acc",
              mode="max", sink=lambda metrics, step: None)
    sync(device)
    start = time.perf_counter()
    fit(run, ConvNet, lambda **_: data)
    sync(device)
    run.clear_checkpoint()
    return time.perf_counter() - start


def run_hand(data: ImageData, device, det: bool, bf16: bool, compile_: object,
             epochs: int) -> float:
    set_determinism(det, device)
    seed_everything(0)
    sync(device)
    start = time.perf_counter()
    model = ConvNet().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step_model = model if not compile_ else (
        torch.compile(model) if compile_ is True else torch.compile(model, backend=compile_))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()

    def autocast():
        if device.type == "cuda" and bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    for epoch in range(epochs):
        model.train()
        total = torch.zeros((), device=device)
        for x, y in data.train_batches(seed=0, epoch=epoch):
            with autocast():
                loss = loss_fn(step_model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().float()
        model.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in data.val_batches():
                with autocast():
                    correct += (step_model(x).argmax(-1) == y).sum()
        total.item(), correct.item()  # one read per epoch, like ablate
    sync(device)
    return time.perf_counter() - start


def component_check(device: torch.device) -> list[str]:
    """Every built-in component, forward and backward under deterministic algorithms."""
    set_determinism(True, device)
    problems = []
    x = torch.randn(4, 3, 32, 32, device=device)
    for bn, res, pre, k, pool in itertools.product([True, False], [True, False], [True, False],
                                                   [3, 5], ["adaptive_max", "adaptive_avg",
                                                            "max"]):
        kwargs = dict(batch_norm=bn, residual=res, preact=pre, kernel_size=k, pool=pool)
        try:
            ConvNet(**kwargs).to(device)(x).sum().backward()
        except RuntimeError as exc:
            problems.append(f"ConvNet({kwargs}): {str(exc).splitlines()[0]}")
    ids = torch.randint(0, 64, (4, 16), device=device)
    for cell in ("rnn", "gru", "lstm"):
        try:
            CharRNN(vocab_size=64, cell=cell).to(device)(ids).sum().backward()
        except RuntimeError as exc:
            problems.append(f"CharRNN(cell={cell!r}): {str(exc).splitlines()[0]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
    repeats, epochs = (1, 1) if args.smoke else (args.repeats, 2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    smoke = " — SMOKE MODE: tiny sizes, the figures mean nothing" if args.smoke else ""
    print(f"device: {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads{smoke}")
    data = workload(args.smoke, device)
    images = len(data.y_train) * epochs
    print(f"ConvNet() baseline, batch {data.batch_size}, {data.steps_per_epoch * epochs} steps\n")
    print(f"{'deterministic':>13} {'bf16':>5} {'compile':>8} {'ablate img/s':>13} "
          f"{'hand img/s':>11} {'ablate/hand time':>17}")
    backend = "aot_eager" if args.smoke else True  # inductor on a CPU smoke run is too slow
    with tempfile.TemporaryDirectory() as tmp:
        for det, bf16, comp in itertools.product([True, False], [True, False], [False, backend]):
            a = [run_ablate(data, device, det, bf16, comp, epochs, Path(tmp) / "ck")
                 for _ in range(repeats)]
            h = [run_hand(data, device, det, bf16, comp, epochs) for _ in range(repeats)]
            ta, th = statistics.median(a), statistics.median(h)
            print(f"{str(det):>13} {str(bf16):>5} {str(bool(comp)):>8} {images / ta:13,.0f} "
                  f"{images / th:11,.0f} {ta / th:16.2f}x")
    problems = component_check(device)
    print("\ncomponents under deterministic algorithms: "
          + ("all ran" if not problems else f"{len(problems)} raised:\n  " + "\n  ".join(problems)))


if __name__ == "__main__":
    main()
