"""Per-variant Optuna search: reproducible, resumable, NaN-pruned (no training needed here)."""

from __future__ import annotations

import math

import pytest

from ablate.study import Study, StudyError
from ablate.train.tune import NoTrialCompleted, search

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
    "kwargs,pattern",
    [
        ({"tune": {"train.lr": ("log", 0, 1)}}, "is not a search space"),
        ({"tune": {"train.lr": ("exp", 1e-4, 1)}}, "is not a search space"),
        ({"tune": {"train.lr": [0.1]}}, "1 choice"),
        ({"tune": {"train.lrr": ("log", 1e-4, 1)}}, "did you mean 'train.lr'"),
        ({"tune": {"model.batch_norm": [True, False]}}, "is also a factor"),
        ({"tune": {"train.lr": [0.1, 0.2]}, "tune_trials": 0}, "positive number"),
        ({"tune_epochs": 2}, "tune= is empty"),
    ],
)
def test_invalid_tuning_is_rejected(kwargs, pattern):
    with pytest.raises(StudyError, match=pattern):
        Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]}, **kwargs)


def test_tuning_changes_the_variant_ids_and_sets_train_epochs_for_the_search():
    plain = Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]})
    tuned = Study("s", model=net, data=images, factors={"model.batch_norm": [True, False]},
                  tune={"train.lr": ("log", 1e-4, 1e-1)}, tune_trials=5, tune_epochs=2)
    assert {v.id for v in plain.variants}.isdisjoint(v.id for v in tuned.variants)
    assert tuned.tune_config == {"train.epochs": 2}
    assert tuned.variants[0].config == plain.variants[0].config  # params stay the config
