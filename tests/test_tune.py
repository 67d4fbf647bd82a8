"""Per-variant Optuna search: reproducible, resumable, NaN-pruned (no training needed here)."""

from __future__ import annotations

import math

import pytest

from ablate.study import Study
from ablate.train.search import NoTrialCompleted, search
from ablate.tuning import Tuning
from ablate.validate import StudyError

SPACE = {"train.lr": ("log", 1e-4, 1.0), "train.wd": [0.0, 1e-4]}


def objective_for(best_lr: float, calls: list, nan_above: float | None = None, stop_at=None):
    def objective(params, number, report):
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        calls.append((number, params))
        lr = params["train.lr"]
        for step in range(3):
            value = -abs(math.log10(lr) - math.log10(best_lr)) + 0.1 * step
            if nan_above is not None and lr > nan_above and step == 1:
                value = math.nan
            report(value, step)
        return value

    return objective


def run_search(tmp_path, name="v", objective=None, n=12, seed=0):
    return search(name=name, space=SPACE, n_trials=n, seed=seed, mode="max",
                  storage_path=tmp_path / f"{name}.journal", objective=objective)


def test_same_seed_same_search(tmp_path):
    a, b = [], []
    ra = run_search(tmp_path / "a", objective=objective_for(1e-2, a))
    rb = run_search(tmp_path / "b", objective=objective_for(1e-2, b))
    assert a == b and ra == rb
    assert len(a) == 12 and ra.n_complete == 12
    assert 10 ** -2.6 < ra.best_params["train.lr"] < 10 ** -1.4  # found the planted optimum
    other = []
    run_search(tmp_path / "c", objective=objective_for(1e-2, other), seed=1)
    assert other != a


def test_interrupted_search_resumes_without_repeating_and_matches(tmp_path):
    straight = []
    expected = run_search(tmp_path / "s", objective=objective_for(1e-3, straight))
    first = []
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path / "r", objective=objective_for(1e-3, first, stop_at=5))
    second = []
    resumed = run_search(tmp_path / "r", objective=objective_for(1e-3, second))
    assert len(first) == 5 and len(second) == 7  # finished tuning trials are not repeated
    assert [p for _, p in first + second] == [p for _, p in straight]  # the same suggestions
    assert resumed.best_params == expected.best_params
    assert run_search(tmp_path / "r", objective=objective_for(1e-3, [])) == resumed  # done


def test_nan_trials_are_pruned_and_failures_do_not_poison(tmp_path):
    calls = []
    result = run_search(tmp_path, objective=objective_for(1e-3, calls, nan_above=1e-2), n=15)
    assert result.n_pruned > 0 and result.n_complete + result.n_pruned == 15
    assert result.best_params["train.lr"] <= 1e-2

    def flaky(params, number, report):
        if number % 2:
            raise RuntimeError("flaky")
        return -abs(math.log10(params["train.lr"]) + 2)

    result = search(name="f", space=SPACE, n_trials=6, seed=0, mode="max",
                    storage_path=tmp_path / "f.journal", objective=flaky)
    assert result.n_failed == 3 and result.n_complete == 3

    def always_nan(params, number, report):
        report(math.nan, 0)
        return 0.0

    with pytest.raises(NoTrialCompleted, match="all 3 tuning trials"):
        search(name="n", space=SPACE, n_trials=3, seed=0, mode="max",
               storage_path=tmp_path / "n.journal", objective=always_nan)


def net(*, batch_norm=True):
    return None


def images(*, batch_size=8):
    return None


@pytest.mark.parametrize(
    "tuning,pattern",
    [
        (Tuning(space={"train.lr": ("log", 0, 1)}), "is not a search space"),
        (Tuning(space={"train.lr": ("exp", 1e-4, 1)}), "is not a search space"),
        (Tuning(space={"train.lr": [0.1]}), "1 choice"),
        (Tuning(space={"train.lrr": ("log", 1e-4, 1)}), "did you mean 'train.lr'"),
        (Tuning(space={"model.batch_norm": [True, False]}), "is also a factor"),
        (Tuning(space={"train.lr": [0.1, 0.2]}, trials=0), "positive number"),
        (Tuning(epochs=2), "its space is empty"),
        ({"train.lr": ("log", 1e-4, 1)}, "is not a Tuning"),
    ],
)
def test_invalid_tuning_is_rejected(tuning, pattern):
    with pytest.raises(StudyError, match=pattern):
        Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]},
              tuning=tuning)


def test_the_flat_tuning_keywords_name_the_tuning_that_replaces_them():
    with pytest.raises(StudyError, match=r"tune=, tune_trials= are no longer Study arguments.*"
                                         r"Fix: tuning=Tuning\(space=\{'train.lr': \('log', "
                                         r"0.001, 0.1\)\}, trials=5\)"):
        Study("s", model=net, data=images, tune={"train.lr": ("log", 1e-3, 1e-1)},
              tune_trials=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'; did you mean "
                                        "'seeds'\\?"):
        Study("s", model=net, data=images, seed=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'xyzzy'\.$"):
        Study("s", model=net, data=images, xyzzy=3)  # nothing near: no suggestion


def test_tuning_changes_the_variant_ids_and_sets_train_epochs_for_the_search():
    plain = Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]})
    tuned = Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]},
                  tuning=Tuning(space={"train.lr": ("log", 1e-4, 1e-1)}, trials=5, epochs=2))
    assert {v.id for v in plain.variants}.isdisjoint(v.id for v in tuned.variants)
    assert tuned.tuning.settings == {"train.epochs": 2}
    assert tuned.variants[0].config == plain.variants[0].config  # params stay the config


PLANTED = """
import math
from ablate import Study, Tuning

BEST = {"a": -3.0, "b": -1.0}  # log10 of the best learning rate, planted per variant

def train(config, run):
    target = BEST[config["net.kind"]]
    for epoch in range(2):
        lr = config["opt.lr"]
        loss = float("nan") if lr > 0.5 else 1.0
        run.log({"loss": loss, "score": -abs(math.log10(lr) - target) + 0.01 * epoch}, step=epoch)

study = Study("tuning", train=train, config={"opt.lr": 0.1},
              factors={"net.kind": ["a", "b"]}, seeds=2, metric="score",
              tuning=Tuning(space={"opt.lr": ("log", 1e-5, 1.0)}, trials=12, seed=3))
"""


def test_each_variant_gets_its_own_best_value_through_the_runner(tmp_path):
    from mlflow.tracking import MlflowClient

    from ablate.cli import main

    path = tmp_path / "tuning.py"
    path.write_text(PLANTED)
    uri, ck = f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ck"
    args = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ck)]
    assert main(args) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tuning")
    runs = client.search_runs([exp.experiment_id])
    tuning = [r for r in runs if r.data.tags.get("ablate.role") == "tuning"]
    trials = [r for r in runs if r.data.tags.get("ablate.role") == "trial"]
    assert len(tuning) == 2 * 12 and len(trials) == 4  # one search per variant, not per seed
    pruned = [r for r in tuning if r.data.tags["ablate.status"] == "diverged"]
    assert all(float(r.data.params["opt.lr"]) > 0.5 for r in pruned)
    chosen = {}
    for r in trials:
        lr = float(r.data.params["opt.lr"])  # the tuned value is a param of the final trials
        assert r.data.tags["ablate.tuned"] == f'{{"opt.lr": {lr!r}}}'.replace("'", '"')
        chosen.setdefault(r.data.tags["ablate.label"], set()).add(lr)
    (lr_a,), (lr_b,) = chosen["baseline"], chosen["kind=b"]  # both seeds share the value
    assert abs(math.log10(lr_a) + 3) < 0.7 and abs(math.log10(lr_b) + 1) < 0.7
    # a rerun trains nothing and searches nothing
    assert main(args) == 0
    assert len(client.search_runs([exp.experiment_id])) == len(runs)
    # the report shows each variant's search
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Tuning" in text and "12 tuning trials" in text and "Tuned values" in text
