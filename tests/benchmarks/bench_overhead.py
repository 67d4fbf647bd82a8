"""Seconds per epoch of ablate's built-in loop vs a hand-written PyTorch loop, on the CPU.

Workloads: the quick study's baseline (studies/quick.py: a small ConvNet on digits), and a
CIFAR-shaped ResNet (ConvNet's default widths on random 3x32x32 data, batch 256, augmented, 2
epochs). Configurations, all on the same data tensors and the same batches:

* run_trial: one trial exactly as ``ablate run`` trains it (MLflow sqlite store, lock, per-epoch
  checkpoint), with ``train.activation_stats`` on (the default) and off;
* fit(): the built-in loop alone with a no-op metrics sink (no MLflow), on and off;
* hand: ConvNet, SGD or Adam with the config's lr/momentum/weight decay and gradient clipping
  (torch's OneCycleLR where the config says onecycle), ``train_batches``/``val_batches``, one
  host sync per epoch.

Seconds per epoch = whole run (model building included) / epochs. Each ablate run is followed by
a hand run; the ablate order reverses each repeat. The Tracker's methods (and the executor's
end-of-trial ``gc.collect``) are timed in place to show where run_trial's extra time goes.

    python tests/benchmarks/bench_overhead.py [--repeats 3] [--threads N] [--quick]
"""

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from ablate.config import TRAIN_DEFAULTS
from ablate.data import ImageData, digits
from ablate.execute import trial as lifecycle
from ablate.execute.driver import prepare
from ablate.models import ConvNet
from ablate.source import load_study
from ablate.study import Study
from ablate.track import Tracker
from ablate.train.loop import fit
from ablate.train.run import Run, seed_everything, set_determinism

ROOT = Path(__file__).resolve().parents[2]
SEED = 0
CPU = torch.device("cpu")
HAND = "hand-written loop"
CONFIGS = {  # label -> (path, train.activation_stats)
    "run_trial, act. stats on (default)": ("run_trial", True),
    "run_trial, act. stats off": ("run_trial", False),
    "fit(), no-op sink, act. stats on": ("fit", True),
    "fit(), no-op sink, act. stats off": ("fit", False),
}
TRACKER_METHODS = ("trial_record", "start_trial", "set_tags", "log_metrics", "end_trial")
FREE = "gc.collect() in execute.trial._free_memory"  # run at the end of every trial


def quick_workload(small: bool) -> tuple[str, dict, ImageData]:
    config = dict(load_study(ROOT / "studies" / "quick.py").variants[0].config)
    data = digits(**{k[5:]: v for k, v in config.items() if k.startswith("data.")})
    if small:
        data = dataclasses.replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256],
                                   x_val=data.x_val[:128], y_val=data.y_val[:128])
    return f"quick study baseline, ConvNet widths {config['model.widths']} on digits", config, data


def cifar_workload(small: bool) -> tuple[str, dict, ImageData]:
    n_train, n_val = (256, 256) if small else (2560, 512)
    gen = torch.Generator().manual_seed(SEED)
    data = ImageData(
        x_train=torch.randn(n_train, 3, 32, 32, generator=gen),
        y_train=torch.randint(0, 10, (n_train,), generator=gen),
        x_val=torch.randn(n_val, 3, 32, 32, generator=gen),
        y_val=torch.randint(0, 10, (n_val,), generator=gen),
        classes=[str(k) for k in range(10)], mean=(0.0,) * 3, std=(1.0,) * 3,
        batch_size=256, augment=True)
    config = {**TRAIN_DEFAULTS, "train.epochs": 2, "data.batch_size": 256, "data.augment": True}
    return "CIFAR-shaped ResNet, ConvNet default widths (16, 32, 64, 128)", config, data


class Ablate:
    """Runs trials through ablate, one fresh study per run (so no trial is skipped as done)."""

    def __init__(self, root: Path) -> None:
        self.root, self.count = root, 0
        self.tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
        self.call_seconds: dict[str, float] = {}  # call -> seconds in the last trial
        for name in TRACKER_METHODS:
            setattr(self.tracker, name, self._timed(name, getattr(self.tracker, name)))
        if hasattr(lifecycle, "_free_memory"):  # timed in place (run_trial looks it up by name)
            lifecycle._free_memory = self._timed(FREE, lifecycle._free_memory)

    def _timed(self, name, method):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.call_seconds[name] = self.call_seconds.get(name, 0.0) + spent

        return call

    def run_trial(self, config: dict, data: ImageData) -> tuple[float, float]:
        self.count += 1
        study = Study(f"bench-{self.count}", model=ConvNet, data=lambda **_: data,
                      config=config, seeds=[SEED])
        runs, _ = prepare(study, self.tracker)  # per study: untimed
        self.call_seconds.clear()
        start = time.perf_counter()
        outcome = lifecycle.train_trial(study, study.trials[0], self.tracker, runs, self.root)
        seconds = time.perf_counter() - start
        if outcome.status != "finished":
            raise RuntimeError(f"trial {outcome.status}: {outcome.error}")
        return seconds, outcome.value

    def fit(self, config: dict, data: ImageData) -> tuple[float, float]:
        self.count += 1
        set_determinism(True, CPU)
        seed_everything(SEED)
        run = Run(config=config, seed=SEED, device=CPU, metric="val_acc", mode="max",
                  checkpoint_dir=self.root / f"fit-{self.count}", sink=lambda metrics, step: None)
        start = time.perf_counter()
        fit(run, ConvNet, lambda **_: data)
        seconds = time.perf_counter() - start
        run.clear_checkpoint()
        return seconds, run.metric_history[-1]


def hand(config: dict, data: ImageData) -> tuple[float, float]:
    """What a careful researcher writes: no per-step sync, one ``.tolist()`` per epoch."""
    plain = {"train.nesterov": False, "train.layer_lrs": None, "train.warmup_epochs": 0.0}
    assert all(config[k] == v for k, v in plain.items()), "the hand loop does SGD/Adam only"
    assert config["train.optimizer"] in ("sgd", "adam"), "the hand loop does SGD/Adam only"
    assert config["train.schedule"] in ("constant", "onecycle"), "and no other schedule"
    seed_everything(SEED)  # the same initial weights as ablate's trial
    start = time.perf_counter()
    model = ConvNet(**{**data.model_kwargs, **{k[6:]: v for k, v in config.items()
                                                 if k.startswith("model.")}})
    lr, epochs = config["train.lr"], config["train.epochs"]
    if config["train.optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, betas=(config["train.momentum"], 0.999),
            weight_decay=config["train.weight_decay"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config["train.momentum"],
                              weight_decay=config["train.weight_decay"])
    clip = config["train.grad_clip"]
    sched = None
    if config["train.schedule"] == "onecycle":  # 30% warm-up, lr/25 -> lr -> lr/25e4, cosine
        sched = OneCycleLR(opt, lr, total_steps=epochs * data.steps_per_epoch, cycle_momentum=False)
    loss_fn = nn.CrossEntropyLoss()
    n_train, n_val = len(data.y_train), len(data.y_val)
    for epoch in range(epochs):
        model.train()
        train_loss = torch.zeros(())
        for x, y in data.train_batches(seed=SEED, epoch=epoch):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            opt.step()
            if sched is not None:
                sched.step()
            train_loss += loss.detach() * len(y)
        model.eval()
        val_loss, correct = torch.zeros(()), torch.zeros(())
        with torch.no_grad():
            for x, y in data.val_batches():
                out = model(x)
                val_loss += loss_fn(out, y) * len(y)
                correct += (out.argmax(-1) == y).sum()
        metrics = torch.stack([train_loss / n_train, val_loss / n_val, correct / n_val]).tolist()
    return time.perf_counter() - start, metrics[2]


def bench(ablate: Ablate, workload, repeats: int) -> None:
    title, config, data = workload
    config = {**config, "train.device": "cpu", "train.deterministic": True}
    epochs = int(config["train.epochs"])
    print(f"\n## {title}")
    print(f"{len(data.y_train):,} train / {len(data.y_val):,} val images "
          f"{'x'.join(map(str, data.x_train.shape[1:]))}, batch {data.batch_size}, augment "
          f"{data.augment}, {epochs} epochs x {data.steps_per_epoch} steps, lr "
          f"{config['train.lr']} {config['train.schedule']}")
    ablate.run_trial(config, data), hand(config, data)  # warm-up: imports, kernels, sqlite
    times: dict[str, list[float]] = {HAND: [], **{label: [] for label in CONFIGS}}
    tracker_runs: list[tuple[dict[str, float], float]] = []
    acc: dict[str, float] = {}
    for r in range(repeats):
        for label in list(CONFIGS)[:: 1 if r % 2 == 0 else -1]:
            path, stats = CONFIGS[label]
            cfg = {**config, "train.activation_stats": stats}
            seconds, acc[path] = getattr(ablate, path)(cfg, data)
            times[label].append(seconds / epochs)
            if path == "run_trial":
                tracker_runs.append((dict(ablate.call_seconds), seconds))
            seconds, acc["hand"] = hand(config, data)
            times[HAND].append(seconds / epochs)
    med = {label: statistics.median(t) for label, t in times.items()}
    print(f"\n{'configuration':<36}{'runs':>5}{'min':>9}{'median':>9}{'max':>9}   "
          f"s/epoch   ablate/hand")
    for label, t in times.items():
        ratio = "" if label == HAND else f"{med[label] / med[HAND]:>12.2f}x"
        print(f"{label:<36}{len(t):>5}{min(t):>9.3f}{med[label]:>9.3f}{max(t):>9.3f}"
              f"{'':>10}{ratio}")
    labels = list(CONFIGS)
    print(f"\ndifferences of median s/epoch: fit() internals over hand "
          f"{med[labels[3]] - med[HAND]:+.3f}, activation stats "
          f"{med[labels[2]] - med[labels[3]]:+.3f}, executor + MLflow "
          f"{med[labels[0]] - med[labels[2]]:+.3f}")

    def per_trial(*names: str) -> float:  # median seconds per trial inside these calls
        return statistics.median(sum(c.get(n, 0.0) for n in names) for c, _ in tracker_runs)

    named = ("start_trial", "log_metrics", "end_trial")
    share = [sum(c.get(n, 0.0) for n in named) / s for c, s in tracker_runs]
    share_all = [sum(c.get(n, 0.0) for n in TRACKER_METHODS) / s for c, s in tracker_runs]
    print(f"MLflow per trial (median s): start_trial {per_trial('start_trial'):.3f}, log_metrics "
          f"{per_trial('log_metrics') / epochs:.3f} per epoch, end_trial "
          f"{per_trial('end_trial'):.3f}; trial_record + set_tags "
          f"{per_trial('trial_record', 'set_tags'):.3f}")
    print(f"MLflow share of run_trial time (median): {100 * statistics.median(share):.1f}% "
          f"(start_trial + log_metrics + end_trial), {100 * statistics.median(share_all):.1f}% "
          f"(all tracker calls)")
    print(f"run_trial over fit() (medians): {(med[labels[0]] - med[labels[2]]) * epochs:.3f} s per "
          f"trial; inside it: tracker calls {per_trial(*TRACKER_METHODS):.3f} s, {FREE} "
          f"{per_trial(FREE):.3f} s")
    print(f"last val_acc: run_trial {acc['run_trial']:.4f}, fit() {acc['fit']:.4f}, "
          f"hand {acc['hand']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer images (smoke)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)  # run_trial sets it too (train.deterministic)
    began = time.perf_counter()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow tables..."
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, mlflow "
          f"{mlflow.__version__}, {torch.get_num_threads()} threads, deterministic algorithms, "
          f"{repeats} repeat(s)")
    with tempfile.TemporaryDirectory() as tmp:
        ablate = Ablate(Path(tmp))
        for workload in (quick_workload(args.quick), cifar_workload(args.quick)):
            bench(ablate, workload, repeats)
    print(f"\ntotal {time.perf_counter() - began:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
