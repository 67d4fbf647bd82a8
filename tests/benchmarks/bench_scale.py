"""How `ablate run`, a no-op rerun and `ablate report` grow with the number of trials, against
the same MLflow calls made by hand.

A study of ``log2(trials / seeds)`` two-level factors (full factorial) and ``--seeds`` seeds,
with a trivial ``train=fn`` that logs ``--steps`` steps of two metrics, in a temp dir with a
sqlite store. Each command runs in a fresh process (interpreter start and imports included) and
is timed by its wall clock:

* ``ablate run``, then ``ablate run`` again (every trial done: a no-op), then ``ablate report``;
* by hand, with ``MlflowClient`` on a separate sqlite store, in a fresh process each: *run*
  creates a parent run and one nested run per trial (tags, params, one ``log_batch`` per step,
  the final metric and status, ``set_terminated``); *rerun* searches the trial runs (MLflow's
  paging) and finds none missing; *report* searches them and reads every run's histories with
  ``get_metric_history`` (one call per run and key, MLflow's public API).

Then, in-process (imports excluded), the report's reads: ablate's ``Tracker.results``,
``left_out`` and ``history`` against the hand-written search plus history reads, both per run
and key and through the sqlite store's bulk read (``get_metric_history_bulk``, one query per
metric key for a batch of runs).

``--phases run,rerun`` leaves the report out (and the in-process reads, which read its store).
A fresh store's creation (its migrations) is done before the clock starts, for both.

    python tests/benchmarks/bench_scale.py [--trials 512] [--seeds 2] [--steps 3] [--keep DIR]
        [--run-arg=--workers=1] [--phases run,rerun,report]

4,096 trials (the issue's scale: 11 factors, 2 seeds): ``--trials 4096 --phases run,rerun``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve()

STUDY = """
from ablate import Study

def train(config, run):
    for step in range({steps}):
        run.log({{"loss": 1.0 / (step + 1),
                  "score": step + 0.01 * run.seed + sum(config[f"f{{i}}"] for i in range({k}))}},
                step=step)

study = Study("scale", train=train, factors={{f"f{{i}}": [0, 1] for i in range({k})}},
              design="full_factorial", seeds={seeds}, metric="score")
"""


def factors_for(trials: int, seeds: int) -> int:
    k = (trials // seeds).bit_length() - 1
    if k < 1 or seeds * 2 ** k != trials:
        raise SystemExit(f"--trials must be --seeds ({seeds}) x a power of 2 (>= 2); "
                         f"got {trials}")
    return k


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return seconds


# ------------------------------------------------------------------------------ by hand
def _trial_runs(client, exp_id: str) -> list:
    from mlflow.entities import ViewType
    from mlflow.utils import get_results_from_paginated_fn

    return get_results_from_paginated_fn(
        lambda n, token: client.search_runs([exp_id], "tags.role = 'trial'",
                                            ViewType.ACTIVE_ONLY, max_results=n,
                                            page_token=token), 1000)


def _hand_history(client, runs: list, skip: set[str]) -> list[tuple]:
    return [(r.info.run_id, key, m.step, m.value) for r in runs for key in r.data.metrics
            if key not in skip for m in client.get_metric_history(r.info.run_id, key)]


def _hand_history_bulk(client, runs: list, skip: set[str]) -> list[tuple]:
    store = client._tracking_client.store  # SqlAlchemyStore: one query per key and 500 runs
    keys = list(dict.fromkeys(k for r in runs for k in r.data.metrics if k not in skip))
    ids = [r.info.run_id for r in runs]
    return [(m.run_id, key, m.step, m.value) for key in keys
            for i in range(0, len(ids), 500)
            for m in store.get_metric_history_bulk(ids[i:i + 500], key, 10 ** 9)]


def hand(phase: str, db: str, trials: int, seeds: int, steps: int) -> None:
    """One phase of the hand-written reference (run in its own process)."""
    import logging

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    k = factors_for(trials, seeds)
    client = MlflowClient(f"sqlite:///{db}")
    skip = {"final_score"}
    if phase == "run":
        exp_id = client.create_experiment("scale")
        parent = client.create_run(exp_id, run_name="study").info.run_id
        for v in range(2 ** k):
            levels = {f"f{i}": (v >> i) & 1 for i in range(k)}
            for seed in range(seeds):
                run_id = client.create_run(exp_id, run_name=f"v{v} s{seed}", tags={
                    "mlflow.parentRunId": parent, "role": "trial", "variant": str(v),
                    "seed": str(seed)}).info.run_id
                client.log_batch(run_id, params=[Param(key, str(x)) for key, x in
                                                 levels.items()] + [Param("seed", str(seed))])
                score = 0.0
                for step in range(steps):
                    score = step + 0.01 * seed + sum(levels.values())
                    client.log_batch(run_id, metrics=[
                        Metric("loss", 1.0 / (step + 1), int(time.time() * 1000), step),
                        Metric("score", score, int(time.time() * 1000), step)])
                client.log_batch(run_id, metrics=[Metric("final_score", score,
                                                         int(time.time() * 1000), 0)],
                                 tags=[RunTag("status", "finished")])
                client.set_terminated(run_id, "FINISHED")
        client.set_terminated(parent, "FINISHED")
        return
    exp_id = client.get_experiment_by_name("scale").experiment_id  # also opens the store
    start = time.perf_counter()
    runs = _trial_runs(client, exp_id)
    searched = time.perf_counter() - start
    if phase == "rerun":
        done = {(r.data.tags["variant"], r.data.tags["seed"]) for r in runs
                if r.data.tags.get("status") == "finished"}
        todo = [(str(v), str(s)) for v in range(2 ** k) for s in range(seeds)
                if (str(v), str(s)) not in done]
        assert not todo, f"{len(todo)} trials missing"
        return
    rows = _hand_history(client, runs, skip)
    per_run = time.perf_counter() - start
    start = time.perf_counter()
    runs = _trial_runs(client, exp_id)
    bulk = _hand_history_bulk(client, runs, skip)
    bulk_seconds = time.perf_counter() - start
    assert len(rows) == len(bulk) == trials * steps * 2, (len(rows), len(bulk))
    if phase == "reads":
        print(json.dumps({"search": searched, "per_run": per_run, "bulk": bulk_seconds}))


def ablate_reads(study_file: str, db: str) -> None:
    """The report's reads through ablate's Tracker, in-process (imports excluded)."""
    from ablate.source import load_study
    from ablate.track import Tracker, quiet_mlflow

    study = load_study(study_file)
    with quiet_mlflow():
        tracker = Tracker(f"sqlite:///{db}")
        tracker.check()  # opens the store
        out = {}
        start = time.perf_counter()
        results = tracker.results(study)
        out["results"] = time.perf_counter() - start
        tracker.left_out(study)
        out["left_out"] = time.perf_counter() - start - out["results"]
        mark = time.perf_counter()
        history = tracker.history(study)
        out["history"] = time.perf_counter() - mark
    assert len(results) == len(study.trials), len(results)
    assert len(history) == 2 * len(study.trials) * len(history["step"].unique())
    print(json.dumps(out))


# --------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temp dir")
    parser.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument of `ablate run` (e.g. --run-arg=--workers=1)")
    parser.add_argument("--phases", default="run,rerun,report",
                        help="which commands to time, in order (run first)")
    parser.add_argument("--hand", choices=["run", "rerun", "report", "reads"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--ablate-reads", nargs=2, metavar=("STUDY", "DB"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hand:
        return hand(args.hand, args.db, args.trials, args.seeds, args.steps)
    if args.ablate_reads:
        return ablate_reads(*args.ablate_reads)
    k = factors_for(args.trials, args.seeds)
    import mlflow

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, mlflow {mlflow.__version__}, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"study: {k} two-level factors (full factorial, {2 ** k} variants) x {args.seeds} "
          f"seeds = {args.trials} trials, {args.steps} logged steps of 2 metrics each; sqlite"
          + (f"; ablate run {' '.join(args.run_arg)}" if args.run_arg else ""))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        study = work / "scale_study.py"
        study.write_text(textwrap.dedent(STUDY.format(k=k, seeds=args.seeds, steps=args.steps)))
        env_py = [sys.executable]
        store = ["--tracking-uri", f"sqlite:///{work / 'ablate.db'}"]
        cli = [*env_py, "-m", "ablate.cli"]
        me = [*env_py, str(SELF), "--trials", str(args.trials), "--seeds", str(args.seeds),
              "--steps", str(args.steps), "--db", str(work / "hand.db")]
        seconds = {}
        phases = args.phases.split(",")
        for db in ("ablate.db", "hand.db"):  # created and migrated outside the clock
            subprocess.run([*env_py, "-c", f"from mlflow.tracking import MlflowClient; "
                            f"MlflowClient('sqlite:///{work / db}').search_experiments()"],
                           cwd=work, check=True, capture_output=True)
        for phase, ablate_cmd in (
            ("run", [*cli, "run", str(study), *store, "--checkpoint-dir", str(work / "ck"),
                     *args.run_arg]),
            ("rerun", [*cli, "run", str(study), *store, "--checkpoint-dir", str(work / "ck"),
                       *args.run_arg]),
            ("report", [*cli, "report", str(study), *store, "--out", str(work / "report")]),
        ):
            if phase not in phases:
                continue
            seconds[phase] = (timed(ablate_cmd, work), timed([*me, "--hand", phase], work))
            print(f"  {phase}: ablate {seconds[phase][0]:.1f} s, hand {seconds[phase][1]:.1f} s",
                  flush=True)
        reads = hand_reads = None
        if "report" in phases:
            reads = json.loads(subprocess.run(
                [*env_py, str(SELF), "--ablate-reads", str(study), str(work / "ablate.db")],
                cwd=work, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            hand_reads = json.loads(subprocess.run(
                [*me, "--hand", "reads"], cwd=work, capture_output=True, text=True,
                check=True).stdout.splitlines()[-1])
    n = args.trials
    print(f"\n{'command (fresh process)':28}{'ablate s':>10}{'ms/trial':>10}{'hand s':>10}"
          f"{'ms/trial':>10}{'ablate/hand':>13}")
    for phase, (a, h) in seconds.items():
        print(f"{phase:28}{a:>10.1f}{1000 * a / n:>10.1f}{h:>10.1f}{1000 * h / n:>10.1f}"
              f"{a / h:>12.1f}x")
    if reads is None or hand_reads is None:
        print(f"\ntotal {time.perf_counter() - began:.0f} s, load average "
              f"{os.getloadavg()[0]:.2f}")
        return
    print(f"\nthe report's reads in-process (imports excluded), {n} trials:")
    print(f"  ablate: results {reads['results']:.2f} s, left_out {reads['left_out']:.2f} s "
          f"(one search each), history {reads['history']:.2f} s (a search, then the histories)")
    print(f"  hand: search {hand_reads['search']:.2f} s; search + get_metric_history per run "
          f"and key {hand_reads['per_run']:.2f} s; search + bulk history "
          f"{hand_reads['bulk']:.2f} s")
    print(f"  history / hand: {reads['history'] / hand_reads['per_run']:.2f}x (per-run reads), "
          f"{reads['history'] / hand_reads['bulk']:.2f}x (bulk reads)")
    print(f"\ntotal {time.perf_counter() - began:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
