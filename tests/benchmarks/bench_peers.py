"""One piece of work through a hand-written loop, Optuna, Ray Tune and ``ablate run``: wall time
of the whole process, what a user waits for.

The work (the issue's, lesson 7's ResNet): ``ConvNet()`` — 5x5 stem, widths 16-32-64-128,
three 3x3 layers per stage of which two residual, global max pool — with batch norm on and
off x seeds 0 and 1 = 4 trials, each 2 epochs over 2,048 random 3x32x32 images (512 to
validate), batch 256, SGD lr 0.05 momentum 0.9 weight decay 5e-4, logging train and validation
loss and accuracy to MLflow (sqlite) every epoch. Every configuration is a fresh process with a
fresh store in a fresh folder, timed by its wall clock (imports, start-up and shut-down
included):

* ``hand``: a hand-written loop, torch's default thread count, MLflow's fluent API
  (``mlflow.start_run``, ``log_params``, ``log_metrics`` per epoch) — what a careful researcher
  writes; once more with ``torch.use_deterministic_algorithms(True)``, which ablate's
  ``train.deterministic`` sets by default (its bitwise reproducibility costs ~9% per epoch of
  this CPU work: convolutions take their deterministic kernels);
* ``optuna``: Optuna's ``GridSampler`` over the 4 trials in process, ``optuna-integration``'s
  ``MLflowCallback`` (per-epoch metrics through its ``track_in_mlflow``);
* ``ray tune``: a Ray Tune grid (``tune.grid_search``, one CPU per trial, Ray's defaults) with
  ``MLflowLoggerCallback`` (every ``tune.report`` is logged);
* ``ablate``: ``ablate run`` of the same study (``ablate.models.ConvNet``, the data as an
  ``ImageData``; the built-in loop, so also checkpoints, activation statistics and provenance)
  by default, ``--workers 1``, ``--workers 1 --set train.threads=2`` and ``--executor ray``;
  once more by default with an empty cache folder: a new store is a copy of an empty store that
  ablate migrated once per machine and MLflow version (the script makes it before timing), and
  this configuration shows the first store on a machine, migrated as the peers' stores are.

Configurations run in rotated order (each repeat starts one later), 3 s apart (so that one's
shut-down, e.g. Ray's, is not on the next one's clock); the table gives each one's median, range
and median / the hand loop's median. Peers whose packages are missing are skipped
(``pip install -e '.[bench]'`` installs them).

    python tests/benchmarks/bench_peers.py [--repeats 3] [--only hand,ablate] [--smoke]

``--smoke``: a tiny model and data, and a store created once and copied for each configuration
(its migrations take seconds), for a test that the script works.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve()

# the work: (name, value) pairs shared by every configuration
FULL = {"n_train": 2048, "n_val": 512, "epochs": 2, "widths": (16, 32, 64, 128)}
SMOKE = {"n_train": 64, "n_val": 32, "epochs": 1, "widths": (4, 8)}
BATCH, LR, MOMENTUM, WD = 256, 0.05, 0.9, 5e-4
GRID = [(bn, seed) for bn in (True, False) for seed in (0, 1)]
ONE = [(True, 0)]  # --trials 1: the baseline, seed 0

STUDY = """
import torch

from ablate import Study
from ablate.data import ImageData
from ablate.models import ConvNet


def random_images(batch_size: int = 256, n_train: int = {n_train}, n_val: int = {n_val}):
    gen = torch.Generator().manual_seed(0)
    return ImageData(
        x_train=torch.randn(n_train, 3, 32, 32, generator=gen),
        y_train=torch.randint(0, 10, (n_train,), generator=gen),
        x_val=torch.randn(n_val, 3, 32, 32, generator=gen),
        y_val=torch.randint(0, 10, (n_val,), generator=gen),
        classes=[str(k) for k in range(10)], mean=(0.0,) * 3, std=(1.0,) * 3,
        batch_size=batch_size)


study = Study(
    "peers",
    model=ConvNet,
    data=random_images,
    config={{"model.widths": {widths}, "data.batch_size": {batch}, "train.epochs": {epochs},
            "train.optimizer": "sgd", "train.lr": {lr}, "train.momentum": {momentum},
            "train.weight_decay": {wd}}},
    factors={factors},
    seeds={seeds},
    metric="val_acc",
)
"""

# label -> (how it runs, extra arguments of `ablate run`); the peers' labels name their package
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "hand loop": ("hand", []),
    "hand loop, deterministic algorithms": ("hand", ["--deterministic"]),
    "optuna GridSampler + MLflowCallback": ("optuna", []),
    "ray tune grid + MLflowLoggerCallback": ("tune", []),
    "ablate run (default)": ("ablate", []),
    "ablate run --workers 1": ("ablate", ["--workers", "1"]),
    "ablate run --workers 1 --set train.threads=2": ("ablate", ["--workers", "1", "--set",
                                                                 "train.threads=2"]),
    "ablate run --executor ray": ("ablate", ["--executor", "ray"]),
    "ablate run (default), first store on the machine": ("ablate", []),
}
# ablate creates a new sqlite store by copying an empty one that it migrated once per machine
# and MLflow version (ablate.track.store.empty_store; the script makes it before timing). This
# configuration empties that cache first, so its store is migrated as MLflow (and the peers) do.
NO_STORE_CACHE = {"ablate run (default), first store on the machine"}
PAUSE_S = 3.0  # between configurations
NEEDS = {"optuna": "optuna_integration", "tune": "ray.tune"}  # a peer's package, if any
RAY_NEEDS = "ray"  # ablate's --executor ray


# ------------------------------------------------------------------------ the peers' trial
def make_data(work: dict):
    import torch

    gen = torch.Generator().manual_seed(0)
    n, m = work["n_train"], work["n_val"]
    return (torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen),
            torch.randn(m, 3, 32, 32, generator=gen), torch.randint(0, 10, (m,), generator=gen))


def train_one(work: dict, data, batch_norm: bool, seed: int, log) -> float:
    """One trial as a careful researcher writes it: the metrics accumulate on the device and are
    read once per epoch; ``log(metrics, epoch)`` sends them to the tracker."""
    import torch
    import torch.nn.functional as F

    from ablate.models import ConvNet

    x_train, y_train, x_val, y_val = data
    torch.manual_seed(seed)
    model = ConvNet(widths=tuple(work["widths"]), batch_norm=batch_norm)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    val_acc = 0.0
    for epoch in range(work["epochs"]):
        model.train()
        perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(
            seed * 1000 + epoch))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            x, y = x_train[idx], y_train[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(-1) == y).sum()
        model.eval()
        val_loss, val_correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for i in range(0, len(x_val), BATCH):
                x, y = x_val[i:i + BATCH], y_val[i:i + BATCH]
                out = model(x)
                val_loss += F.cross_entropy(out, y) * len(y)
                val_correct += (out.argmax(-1) == y).sum()
        values = torch.stack([loss_sum / len(perm), correct.float() / len(perm),
                              val_loss / len(x_val), val_correct.float() / len(x_val)]).tolist()
        metrics = dict(zip(("train_loss", "train_acc", "val_loss", "val_acc"), values))
        log(metrics, epoch)
        val_acc = metrics["val_acc"]
    return val_acc


def params(work: dict, batch_norm: bool, seed: int) -> dict:
    return {"batch_norm": batch_norm, "seed": seed, "widths": str(work["widths"]),
            "epochs": work["epochs"], "batch_size": BATCH, "lr": LR, "momentum": MOMENTUM,
            "weight_decay": WD}


def hand(work: dict, uri: str, deterministic: bool = False) -> None:
    import mlflow
    import torch

    torch.use_deterministic_algorithms(deterministic)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("peers")
    data = make_data(work)
    for batch_norm, seed in work["grid"]:
        with mlflow.start_run(run_name=f"bn={batch_norm} s{seed}"):
            mlflow.log_params(params(work, batch_norm, seed))
            value = train_one(work, data, batch_norm, seed,
                              lambda metrics, step: mlflow.log_metrics(metrics, step=step))
            mlflow.log_metric("final_val_acc", value)


def optuna_grid(work: dict, uri: str) -> None:
    import mlflow
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callback = MLflowCallback(tracking_uri=uri, metric_name="val_acc")
    data = make_data(work)
    grid = work["grid"]

    @callback.track_in_mlflow()
    def objective(trial) -> float:
        batch_norm = trial.suggest_categorical("batch_norm", sorted({b for b, _ in grid}))
        seed = trial.suggest_categorical("seed", sorted({s for _, s in grid}))
        mlflow.log_params({k: v for k, v in params(work, batch_norm, seed).items()
                           if k not in ("batch_norm", "seed")})
        return train_one(work, data, batch_norm, seed,
                         lambda metrics, step: mlflow.log_metrics(metrics, step=step))

    grid = work["grid"]
    sampler = optuna.samplers.GridSampler({"batch_norm": sorted({bn for bn, _ in grid}),
                                           "seed": sorted({seed for _, seed in grid})})
    study = optuna.create_study(study_name="peers", direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=len(grid), callbacks=[callback])


def tune_grid(work: dict, uri: str, folder: str) -> None:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    def trainable(config: dict) -> None:
        data = make_data(work)
        train_one(work, data, config["batch_norm"], config["seed"],
                  lambda metrics, step: tune.report({**metrics, "epoch": step}))

    grid = work["grid"]
    space = {"batch_norm": tune.grid_search(sorted({b for b, _ in grid})),
             "seed": tune.grid_search(sorted({s for _, s in grid}))}
    tuner = tune.Tuner(trainable, param_space=space, run_config=tune.RunConfig(
        name="peers", storage_path=folder, verbose=0,
        callbacks=[MLflowLoggerCallback(tracking_uri=uri, experiment_name="peers",
                                        save_artifact=False)]))
    results = tuner.fit()
    assert not results.errors, results.errors


# -------------------------------------------------------------------------------- timing
def available(how: str, extra: list[str]) -> str | None:
    """Why a configuration can't run here (a missing package), or None."""
    module = NEEDS.get(how) or (RAY_NEEDS if "ray" in extra else None)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{module} is not installed (pip install -e '.[bench]')"


def one_run(label: str, work: dict, smoke: bool, store: Path | None = None) -> float:
    """Wall seconds of one configuration in a fresh process and folder (``store``: a migrated
    empty store to copy there first, else the process creates its own)."""
    how, extra = CONFIGS[label]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        if store is not None:
            shutil.copy(store, f"{tmp}/mlflow.db")
        if how == "ablate":
            study = Path(tmp) / "peers_study.py"
            one = len(work["grid"]) == 1
            study.write_text(textwrap.dedent(STUDY.format(
                batch=BATCH, lr=LR, momentum=MOMENTUM, wd=WD,
                factors="{}" if one else '{"model.batch_norm": [True, False]}',
                seeds=1 if one else 2, **work)))
            cmd = [sys.executable, "-m", "ablate.cli", "run", str(study), "--tracking-uri", uri,
                   "--checkpoint-dir", f"{tmp}/ck", *extra]
        else:
            cmd = [sys.executable, str(SELF), "--peer", how, "--uri", uri, "--folder", tmp,
                   "--trials", str(len(work["grid"])), *(["--smoke"] if smoke else []), *extra]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [*filter(None, [os.environ.get("PYTHONPATH")]), str(ROOT)])}
        env.pop("ABLATE_WORKERS", None)  # the user's default, not the test suite's
        if label in NO_STORE_CACHE:
            env["ABLATE_CACHE_DIR"] = f"{tmp}/empty-cache"
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        time.sleep(PAUSE_S)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}): {' '.join(cmd)}\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny model and data")
    parser.add_argument("--trials", type=int, choices=[1, 4], default=4,
                        help="1: the baseline's seed 0 alone (a study with one pending trial, "
                             "which ablate trains in process)")
    parser.add_argument("--only", help="comma-separated words: run the configurations whose "
                        "label contains one (e.g. hand,ablate)")
    parser.add_argument("--peer", choices=["hand", "optuna", "tune"], help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = {**(SMOKE if args.smoke else FULL), "grid": ONE if args.trials == 1 else GRID}
    if args.peer:
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        if args.peer == "hand":
            return hand(work, args.uri, args.deterministic)
        if args.peer == "optuna":
            return optuna_grid(work, args.uri)
        return tune_grid(work, args.uri, args.folder)
    words = [w.strip() for w in args.only.split(",")] if args.only else None
    labels = [label for label in CONFIGS if words is None or any(w in label for w in words)]
    if "hand loop" not in labels:
        labels.insert(0, "hand loop")  # every ratio is to it
    for label in list(labels):
        why = available(*CONFIGS[label])
        if why is not None:
            print(f"skipped: {label}: {why}")
            labels.remove(label)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, torch {torch.__version__} (default threads "
          f"{torch.get_num_threads()}); load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    what = "batch norm on/off x seeds 0, 1" if len(work["grid"]) > 1 else "batch norm, seed 0"
    print(f"work: {len(work['grid'])} trials ({what}) of ConvNet(widths="
          f"{work['widths']}), {work['epochs']} epochs over {work['n_train']} random 3x32x32 "
          f"images ({work['n_val']} to validate), batch {BATCH}, SGD; MLflow sqlite every epoch",
          flush=True)
    if any(CONFIGS[label][0] == "ablate" for label in labels):  # the cached empty store
        subprocess.run([sys.executable, "-c", "from ablate.track.store import empty_store; "
                        "empty_store()"], check=True, capture_output=True, cwd=ROOT)
    times: dict[str, list[float]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as tmp:
        store = None
        if args.smoke:
            store = Path(tmp) / "empty.db"
            subprocess.run([sys.executable, "-c", f"from mlflow.tracking import MlflowClient; "
                            f"MlflowClient('sqlite:///{store}').search_experiments()"],
                           check=True, capture_output=True)
        for r in range(args.repeats):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                times[label].append(one_run(label, work, args.smoke, store))
                print(f"  repeat {r + 1}: {label}: {times[label][-1]:.1f} s", flush=True)
    hand_median = statistics.median(times["hand loop"])
    width = max(map(len, labels)) + 2
    print(f"\n{'configuration':{width}}{'median s':>10}{'range s':>16}{'/ hand':>9}")
    for label, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"{label:{width}}{median:>10.1f}{spread:>16}{median / hand_median:>8.2f}x")
    print(f"n={args.repeats} each; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
