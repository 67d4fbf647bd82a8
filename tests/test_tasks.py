"""Studies with several tasks (``tasks=``): their form and checks, ids, the per-task and
across-task statistics, the MLflow layout and the report, end to end."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablate import Study
from ablate.cli import main
from ablate.source import load_study
from ablate.stats.tasks import ACROSS, TASK, combine, standardised, task_family
from ablate.stats.validation import simulate_tasks, task_error_rates
from ablate.stats.verdict import Verdict
from ablate.track.summary import run_names
from ablate.track.ui import ranked_state, view_state
from ablate.validate import StudyError

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def train(config, run):
    run.log({"score": 0.5}, step=0)


def other_data(batch_size: int = 32):
    """A second data function (never called: the studies here are only planned)."""


def study(**kwargs):
    base = {"train": train, "config": {"x.scale": 1.0}, "factors": {"x.bn": [True, False]},
            "metric": "score"}
    return Study("multi", **{**base, **kwargs})


def builtin(**kwargs):
    from ablate.data import digits
    from ablate.models import ConvNet

    base = {"model": ConvNet, "data": digits, "factors": {"model.batch_norm": [True, False]}}
    return Study("multi", **{**base, **kwargs})


# ------------------------------------------------------------------------------ form and ids
def test_every_variant_runs_on_every_task_each_with_its_own_id():
    s = study(tasks={"a": {"x.scale": 1.0}, "b": {"x.scale": 0.01}})
    assert [(v.task, v.label, v.baseline) for v in s.variants] == [
        ("a", "baseline", True), ("a", "bn=False", False),
        ("b", "baseline", True), ("b", "bn=False", False)]
    assert len({v.id for v in s.variants}) == 4
    assert [v.config["task"] for v in s.variants] == ["a", "a", "b", "b"]
    assert s.variants[2].config["x.scale"] == 0.01  # the task's setting wins
    assert len(s.trials) == 4 * 3
    assert list(run_names(s).values()) == ["a: baseline", "a: bn=off", "b: baseline",
                                           "b: bn=off"]


def test_a_task_may_replace_the_data_function():
    from ablate.data import digits

    s = builtin(data=None, tasks={"digits": {"data": digits},
                                  "other": {"data": other_data, "data.batch_size": 8}})
    assert s.data_for(s.variants[0].config) is digits
    assert s.data_for(s.variants[2].config) is other_data
    assert s.variants[2].config["data.batch_size"] == 8
    assert "data.noise" in s.variants[0].config and "data.noise" not in s.variants[2].config
    assert s.fingerprint != builtin(tasks={"digits": {}, "noisy": {"data.noise": 0.2}}
                                    ).fingerprint  # the task's data function is code


# The plan id, variant ids, run names and saved views of shipped studies without tasks, as
# they were before tasks existed: adding tasks changed none of them.
BEFORE_TASKS = {
    "quick.py": ("08b442a2", ["ad51958c", "d0cea8e3", "48a2d204"],
                 ["baseline", "ks=5", "res=off"]),
    "custom_train.py": ("9757d14c", ["1ba5b67a", "6b608be2", "c0da5880"],
                        ["baseline", "act=tanh", "act=none"]),
}


@pytest.mark.parametrize("name", sorted(BEFORE_TASKS))
def test_a_study_without_tasks_keeps_its_ids_names_and_views(name):
    s = load_study(STUDIES / name)
    plan, ids, names = BEFORE_TASKS[name]
    assert s.plan == plan
    assert [v.id for v in s.variants][:3] == ids
    assert list(run_names(s).values())[:3] == names
    assert not s.tasks and all(v.task == "" and "task" not in v.config for v in s.variants)
    for state in (view_state(s), ranked_state(s)):
        assert not any("ablate.task" in c for c in state["selectedColumns"])


def test_the_runs_table_of_a_study_with_tasks_shows_the_task():
    s = study(tasks={"a": {}, "b": {"x.scale": 2.0}})
    for state in (view_state(s), ranked_state(s)):
        assert state["selectedColumns"][0] == "tags.`ablate.task`"


# --------------------------------------------------------------------------- unhappy paths
@pytest.mark.parametrize("tasks, words", [
    ({}, "names no task"),
    ({"a": {}}, "names one task ('a')"),
    ([{"a": 1}], "is not a dict of task name"),
    ({"a b": {}, "c": {"x.scale": 2.0}}, "task name 'a b' can't be used"),
    ({"a": 3, "b": {}}, "task 'a' has settings 3, which is not a dict"),
    ({"a": {"x.bn": False}, "b": {}}, "task 'a' sets 'x.bn', a factor"),
    ({"a": {"task": "x"}, "b": {}}, "sets 'task', the key that names"),
    ({"a": {"data": other_data}, "b": {}}, "train=fn, which loads its own data"),
    ({"a": {"x.scale": 2.0}, "b": {"x.scale": 2.0}}, "have the same settings"),
    ({"a": {"x.scale": 2.0}, "A": {}}, "differ only in case"),
    ({"a": {"train.timeout": 5}, "b": {}}, "bounds every trial of the study alike"),
    ({"a": {"x.s": {1, 2}}, "b": {}}, "is not plain data"),
])
def test_bad_tasks_are_refused_naming_the_fix(tasks, words):
    with pytest.raises(StudyError, match="Fix") as err:
        study(tasks=tasks)
    assert words in str(err.value)


def test_a_task_key_the_data_function_does_not_take_says_did_you_mean():
    with pytest.raises(StudyError, match=r"task 'b' key 'data.nois' .*did you mean 'data.noise'"):
        builtin(tasks={"a": {}, "b": {"data.nois": 0.1}})


def test_a_task_value_of_the_wrong_type_names_the_task():
    with pytest.raises(StudyError, match=r"task 'b' train.lr='x' does not fit"):
        builtin(tasks={"a": {}, "b": {"train.lr": "x"}})


def test_a_task_without_data_and_a_data_that_is_no_function_are_refused():
    with pytest.raises(StudyError, match="task 'b' has no data"):
        builtin(data=None, tasks={"a": {"data": other_data}, "b": {}})
    with pytest.raises(StudyError, match="not callable.*not its result"):
        builtin(tasks={"a": {"data": 3}, "b": {}})


def test_tasks_and_adaptive_seeds_are_refused():
    with pytest.raises(StudyError, match="seeds='adaptive'.*one per task"):
        study(tasks={"a": {}, "b": {"x.scale": 2.0}}, seeds="adaptive")


def test_the_task_key_is_reserved_and_set_cannot_change_a_tasks_setting():
    with pytest.raises(StudyError, match="'task' is reserved"):
        study(config={"task": 1}, tasks={"a": {}, "b": {"x.scale": 2.0}})
    s = study(tasks={"a": {}, "b": {"x.scale": 2.0}})
    with pytest.raises(StudyError, match=r"task\(s\) 'b' .* set 'x.scale' themselves"):
        s.with_overrides({"x.scale": 3.0})
    assert s.with_overrides({"x.other": 3}).task_names == ["a", "b"]


def rows(n: int = 40, features: int = 6):
    """A tabular data function (never called: the studies here are only planned)."""


def test_a_task_may_replace_the_model_function():
    from ablate.data import digits
    from ablate.models import MLP, ConvNet

    s = builtin(config={"model.widths": (8, 16)},
                tasks={"digits": {"data": digits},
                       "rows": {"data": rows, "model": MLP, "model.widths": (8, 8)}},
                factors={"model.batch_norm": [True, False], "model.residual": [True, False]})
    assert s.model_for(s.variants[0].config) is ConvNet
    assert s.model_for(s.variants[3].config) is MLP and s.data_for(s.variants[3].config) is rows
    assert s.variants[3].config["model.widths"] == (8, 8)
    assert "model.kernel_size" in s.variants[0].config  # each task's model's own defaults
    assert "model.kernel_size" not in s.variants[3].config
    assert s.fingerprint != builtin(  # the task's model function is code
        config={"model.widths": (8, 16)}, tasks={"digits": {"data": digits},
                                                 "rows": {"data": rows, "model.widths": (8, 8)}},
        factors={"model.batch_norm": [True, False], "model.residual": [True, False]}
    ).fingerprint
    # every task sets its model: model= may be left out
    both = builtin(model=None, tasks={"a": {"model": ConvNet}, "b": {"model": MLP, "data": rows}})
    assert both.model_for(both.variants[2].config) is MLP


def test_a_tasks_model_that_lacks_a_factor_or_setting_is_refused_naming_task_and_fix():
    from ablate.models import MLP

    with pytest.raises(StudyError, match=r"task 'rows': factor 'model.kernel_size' is not a "
                                         r"keyword of its model MLP.*Fix: give MLP a "
                                         r"'kernel_size' keyword"):
        builtin(factors={"model.kernel_size": [3, 5]},
                tasks={"digits": {}, "rows": {"data": rows, "model": MLP}})
    with pytest.raises(StudyError, match=r"task 'rows': config key 'model.pool' .*Fix: move "
                                         r"'model.pool' from config= into the settings"):
        builtin(config={"model.pool": "max"},
                tasks={"digits": {}, "rows": {"data": rows, "model": MLP}})
    with pytest.raises(StudyError, match=r"task 'rows' key 'model.kernel_size' is not "
                                         r"accepted by MLP"):
        builtin(tasks={"digits": {}, "rows": {"data": rows, "model": MLP,
                                              "model.kernel_size": 3}})


@pytest.mark.parametrize("tasks, words", [
    ({"a": {"model": "MLP"}, "b": {}}, "sets 'model' to 'MLP', which is not callable"),
    ({"a": {"model": rows}, "b": {}, "c": {"model": rows}}, "have the same settings"),
])
def test_bad_task_models_are_refused_naming_the_fix(tasks, words):
    with pytest.raises(StudyError, match="Fix") as err:
        builtin(tasks=tasks)
    assert words in str(err.value)


def test_a_task_model_needs_the_built_in_loop_and_a_model_somewhere():
    from ablate.models import MLP

    with pytest.raises(StudyError, match="sets 'model', but .* train=fn, which builds its own"):
        study(tasks={"a": {"model": MLP}, "b": {}})
    with pytest.raises(StudyError, match="task 'b' has no model"):
        builtin(model=None, tasks={"a": {"model": MLP}, "b": {}})


def test_plan_builds_and_tries_each_tasks_own_model(tmp_path, monkeypatch, capsys):
    """`ablate plan` builds every task's model on its own data: a tabular task's MLP on rows
    (a ConvNet could not take them), and a task model that can't take its data is refused."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mixed.py"
    path.write_text(textwrap.dedent(MIXED_STUDY))
    assert main(["plan", str(path)]) == 0
    bad = path.read_text().replace('"model": MLP, ', "")  # the ConvNet on rows
    path.write_text(bad)
    assert main(["plan", str(path)]) == 2
    assert "variant 'baseline' of task 'rows': ConvNet can't take" in capsys.readouterr().err


MIXED_STUDY = """
import numpy as np
from ablate import Study
from ablate.data import digits, from_arrays
from ablate.models import MLP, ConvNet

def rows(n: int = 120):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 6)) + y[:, None]).astype("float32")
    return from_arrays(x[:90], y[:90], x[90:], y[90:])

study = Study("mixed", model=ConvNet, data=digits, seeds=3,
              config={"model.widths": (4, 8), "train.epochs": 1},
              factors={"model.batch_norm": [True, False], "model.residual": [True, False]},
              tasks={"digits": {}, "rows": {"data": rows, "model": MLP, "model.widths": (8, 8)}})
"""


# ------------------------------------------------------------------------------ statistics
def test_standardised_effects_are_hedges_g_z():
    d = np.array([0.1, 0.3, 0.2, 0.4, 0.0])
    g = standardised([d.mean()], [d.std(ddof=1)], [5])[0]
    assert g == pytest.approx((1 - 3 / 15) * d.mean() / d.std(ddof=1))
    assert np.isnan(standardised([1.0], [0.0], [5])[0])  # no spread: not standardised


def test_the_aggregate_is_statsmodels_random_effects_with_the_knapp_hartung_interval():
    from statsmodels.stats.meta_analysis import combine_effects

    g, n = np.array([1.2, 0.8, 1.5]), np.array([5.0, 5.0, 5.0])
    out = combine(g, n)
    assert out["diff"] == pytest.approx(g.mean())  # equal seeds: equal weights
    # with equal weights, HKSJ is the one-sample t-interval of the tasks' estimates
    assert out["se"] == pytest.approx(g.std(ddof=1) / np.sqrt(3))
    low, high = out["result"].conf_int(alpha=0.05, use_t=True)[3]
    assert high - out["diff"] == pytest.approx(4.302653 * out["se"], rel=1e-5)
    q = combine_effects(g, 1 / n + g ** 2 / (2 * n)).test_homogeneity()
    assert out["p_heterogeneity"] == pytest.approx(q.pvalue)


def family_of(planted, seeds=6, seed=1):
    results, spec = simulate_tasks(planted, seeds, np.random.default_rng(seed), [1, 0.01, 10])
    return task_family(results, spec)


def test_the_same_large_effect_everywhere_is_decided_on_every_task_and_not_task_dependent():
    family = family_of({"x": [3.0, 3.0, 3.0]})
    tasks = family[family[TASK] != ACROSS]
    assert list(tasks["outcome"]) == ["helps"] * 3
    across = family[family[TASK] == ACROSS].iloc[0]
    assert across["outcome"] != Verdict.TASK_DEPENDENT and across["helps_on"] == 3
    assert across["diff"] > 0 and across["n_pairs"] == 3


def test_opposite_decided_effects_are_task_dependent():
    family = family_of({"x": [4.0, -4.0, 0.0]})
    across = family[family[TASK] == ACROSS].iloc[0]
    assert across["outcome"] == Verdict.TASK_DEPENDENT
    assert (across["helps_on"], across["hurts_on"]) == (1, 1)


def test_an_effect_on_one_task_only_is_task_dependent_by_the_homogeneity_test():
    family = family_of({"x": [6.0, 0.0, 0.0]}, seeds=10)
    across = family[family[TASK] == ACROSS].iloc[0]
    assert across["p_heterogeneity_adj"] < 0.05
    assert across["outcome"] == Verdict.TASK_DEPENDENT


def test_one_family_covers_per_task_aggregate_and_homogeneity_tests():
    family = family_of({"x": [1.0, 1.0, 1.0], "y": [0.0, 0.0, 0.0]})
    raw = np.concatenate([family["p"].dropna(), family["p_heterogeneity"].dropna()])
    assert len(raw) == 3 * 3 + 3 + 3  # per task x, y and the pair x → y; aggregates; Q tests
    smallest = family["p"].min()
    assert family.loc[family["p"].idxmin(), "p_holm"] == pytest.approx(
        min(1.0, len(raw) * smallest))


def test_an_aggregate_needs_two_tested_tasks():
    results, spec = simulate_tasks({"x": [1.0, 1.0, 1.0]}, 6, np.random.default_rng(0))
    results = results[~((results["task"] != "t0") & (results["seed"] > 1))]  # 2 seeds left
    across = task_family(results, spec).query(f"{TASK} == @ACROSS").iloc[0]
    assert across["outcome"] == Verdict.NOT_ENOUGH_DATA
    assert "tested on 1 of 3 tasks" in across["reason"]


def test_task_error_rates_reports_every_scenario_with_binomial_intervals():
    table = task_error_rates(reps=3, n_seeds=5)
    assert list(table["scenario"]) == ["no effect", "the same effect on every task",
                                       "an effect on one task only", "opposite effects"]
    assert (table["covered_95_low"] <= table["covered_95"]).all()


@pytest.mark.slow
def test_task_verdicts_keep_their_error_rates_on_simulated_studies():
    table = task_error_rates(reps=300, n_seeds=5).set_index("scenario")
    assert table.loc["no effect", "false_claims_high"] > 0.0
    assert table["false_claims"].max() <= 0.08  # the one family: about α or less
    assert table.loc["the same effect on every task", "covered_95"] >= 0.88
    assert table.loc["the same effect on every task", "task_dependent"] <= 0.05
    assert table.loc["opposite effects", "task_dependent"] >= 0.3


# ------------------------------------------------------------------------------ end to end
TASKS_STUDY = """
import random
from ablate import Study

SCALE = {"a": 1.0, "b": 0.01, "c": 10.0}
EFFECT = {("bn", "a"): 1.0, ("bn", "b"): 1.0, ("bn", "c"): 1.0,
          ("res", "a"): -1.5, ("res", "b"): 0.0, ("res", "c"): 1.5}

def train(config, run):
    rng = random.Random(f"{config['task']}-{run.seed}")
    shared = rng.gauss(0, 0.1)                 # seed noise shared by every variant of a task
    own = random.Random(f"{config['task']}-{run.seed}-{config['x.bn']}-{config['x.res']}")
    effect = (EFFECT["bn", config["task"]] * (not config["x.bn"])
              + EFFECT["res", config["task"]] * (not config["x.res"]))
    for epoch in range(2):
        value = config["x.scale"] * (0.5 + 0.1 * effect * (epoch + 1) / 2 + shared
                                     + own.gauss(0, 0.03))
        run.log({"loss": 1.0, "score": value}, step=epoch)

study = Study("multi", train=train, config={"x.scale": 1.0},
              factors={"x.bn": [True, False], "x.res": [True, False]},
              tasks={t: {"x.scale": s} for t, s in SCALE.items()},
              seeds=6, metric="score")
"""


def test_a_multi_task_study_runs_reports_and_reruns_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "multi.py"
    path.write_text(textwrap.dedent(TASKS_STUDY))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main(["run", str(path), *args]) == 0
    out = tmp_path / "report"
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(out)]) == 0

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("multi")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    trials = [r for r in runs if r.data.tags.get("ablate.role") == "trial"]
    assert len(trials) == 3 * 3 * 6
    assert {r.data.tags["ablate.task"] for r in trials} == {"a", "b", "c"}
    assert all(r.data.params["task"] == r.data.tags["ablate.task"] for r in trials)
    rows = [r for r in runs if r.data.tags.get("ablate.role") == "variant"]
    assert sorted(r.info.run_name for r in rows)[:2] == ["a: baseline", "a: bn=off"]
    verdicts = {r.info.run_name: r.data.tags.get("ablate.verdict") for r in rows}
    assert verdicts["b: baseline"] == "baseline" and verdicts["b: bn=off"] == "helps"
    view = json.loads(exp.tags[next(k for k in exp.tags if "ablate-plan-" in k)])
    assert view["selectedColumns"][0] == "tags.`ablate.task`"

    text = (out / "report.md").read_text()
    assert "3 variants × 3 tasks (a, b, c) × 6 seeds" in text
    conclusion = text.split("## Conclusion", 1)[1].split("## Per task", 1)[0]
    header = next(line for line in conclusion.splitlines() if line.startswith("| Change"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Change", "a", "b", "c", "Across tasks (g ± CI)", "Helps on"]
    row = {re.split(r"\|", line)[1].strip(): line for line in conclusion.splitlines()
           if line.startswith("| ") and "---" not in line}
    assert "3 of 3" in row["bn=False"] and row["bn=False"].count("**helps**") >= 2
    assert "**task-dependent**" in row["res=False"]
    assert "(hurts on 1)" in row["res=False"]
    assert "**Task-dependent (the tasks disagree beyond chance):** res=False" in conclusion
    for task in ("a", "b", "c"):
        assert f"### {task}\n" in text
    assert "## Across tasks" in text and "Homogeneity" in text
    assert "Hartung–Knapp–Sidik–Jonkman" in text and "Paule–Mandel" in text
    effects = pd.read_csv(out / "effects.csv")
    assert set(effects["task"]) == {"a", "b", "c", ACROSS}
    assert "across tasks: res=False" in (out / "effects.tex").read_text()

    assert main(["run", str(path), *args]) == 0  # everything is done: nothing trains again
    again = client.search_runs([exp.experiment_id], max_results=500)
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in runs)
    assert all(r.info.end_time == before.info.end_time for r, before in zip(
        sorted(again, key=lambda r: r.info.run_id), sorted(runs, key=lambda r: r.info.run_id))
        if r.data.tags.get("ablate.role") == "trial")


BUILTIN_STUDY = """
import numpy as np
from torch import nn
from ablate import Study
from ablate.data import from_arrays

def blobs(n: int = 240, features: int = 8, classes: int = 2):
    rng = np.random.default_rng(features)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, features)) + y[:, None]).astype("float32")
    return from_arrays(x[:180], y[:180], x[180:], y[180:])

def rings(n: int = 240, radius: float = 1.0):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)).astype("float32") * 0.3
    x[:, 0] += radius * y
    return from_arrays(x[:180], y[:180], x[180:], y[180:])

def mlp(in_features: int, num_classes: int, width: int = 16):
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))

study = Study("shapes", model=mlp, seeds=3,
              config={"train.epochs": 2, "train.optimizer": "adam", "train.lr": 0.01},
              factors={"model.width": [16, 4]},
              tasks={"blobs": {"data": blobs}, "rings": {"data": rings, "data.radius": 2.0}})
"""


@pytest.mark.slow
def test_the_built_in_loop_trains_tasks_of_different_shapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "shapes.py"
    path.write_text(textwrap.dedent(BUILTIN_STUDY))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["plan", str(path)]) == 0  # each task's data loaded, each model tried on it
    assert main(["run", str(path), "--tracking-uri", uri]) == 0
    assert main(["report", str(path), "--tracking-uri", uri, "--out", "r"]) == 0
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    assert results.groupby("task")["status"].apply(lambda s: (s == "finished").all()).all()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("shapes")
    trials = [r for r in client.search_runs([exp.experiment_id], max_results=100)
              if r.data.tags.get("ablate.role") == "trial"]
    data = {r.data.tags["ablate.task"]: r.data.tags["ablate.data"] for r in trials}
    assert len(trials) == 12 and data["blobs"] != data["rings"]
    assert "### rings" in (tmp_path / "r" / "report.md").read_text()


def test_min_effect_judges_each_tasks_own_effect_never_the_standardised_aggregate():
    """README: min_effect is in the metric's units, for every task's own Δ; the aggregate is
    standardised (g), so it is never called negligible."""
    from dataclasses import replace

    results, spec = simulate_tasks({"x": [0.0, 0.0, 0.0]}, 12, np.random.default_rng(3))
    family = task_family(results, replace(spec, min_effect=3.0))
    tasks = family[family[TASK] != ACROSS]
    assert list(tasks["outcome"]) == [Verdict.NEGLIGIBLE] * 3
    across = family[family[TASK] == ACROSS].iloc[0]
    assert across["outcome"] == Verdict.NO_CLEAR_EFFECT
    without = task_family(results, spec)  # the same data without min_effect: no clear effect
    assert set(without["outcome"]) == {Verdict.NO_CLEAR_EFFECT}
