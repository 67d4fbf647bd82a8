"""The effect over the training budget: each change's effect at every epoch of the logged history
(ablate.stats.budget, ablate.report.sections.budget), on planted per-epoch effects."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pandas as pd
import pytest

from ablate.report import write_report
from ablate.report.sections.budget import budget_section
from ablate.stats import ReportSpec, effects
from ablate.stats.budget import effects_by_step, metric_steps

EPOCHS = 6
# the effect of each change on the metric at epochs 1..6 (the built-in loop's steps 0..5)
PLANTED = {
    "always": [0.3] * EPOCHS,
    "late": [0.0, 0.0, 0.3, 0.3, 0.3, 0.3],  # helps from epoch 3 on
    "growing": [0.06 * (e + 1) for e in range(EPOCHS)],  # still growing at the end
    "never": [0.0] * EPOCHS,
}


def planted_study(planted=PLANTED, n_seeds=6, epochs=EPOCHS, noise=0.02, seed=0):
    """A one-at-a-time study whose changes have the planted effect at each epoch: results (the
    final epoch's value as ``final``), the per-epoch history of ``score`` and the spec."""
    rng = np.random.default_rng(seed)
    levels = ["base", *planted]
    shared = rng.normal(0, 0.05, (n_seeds, epochs))  # seed noise every variant shares
    rows, history = [], []
    for i, level in enumerate(levels):
        course = [0.0] * epochs if level == "base" else planted[level]
        label = "baseline" if level == "base" else f"change={level}"
        for s in range(n_seeds):
            run = f"{level}-{s}"
            values = 0.5 + np.asarray(course) + shared[s] + rng.normal(0, noise, epochs)
            rows.append({"run_id": run, "variant": f"v{i}", "label": label, "baseline": i == 0,
                         "seed": s, "status": "finished", "x.change": level,
                         "final": values[-1], "epochs": epochs})
            history += [(run, f"v{i}", label, s, "score", step, v)
                        for step, v in enumerate(values)]
    spec = ReportSpec(name="planted", metric="score", mode="max", design="one_at_a_time",
                      factors={"x.change": levels}, baseline={"x.change": "base"},
                      seeds=list(range(n_seeds)), n_variants=len(levels))
    history = pd.DataFrame(history, columns=["run_id", "variant", "label", "seed", "key", "step",
                                             "value"])
    return pd.DataFrame(rows), history, spec


def budget_lines(text: str) -> dict[str, str]:
    """The section's line per change: its label -> the line."""
    section = text.split("## Effects over the training budget", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^- \*\*(.+?):\*\* (.+)$", section,
                                                       re.MULTILINE)}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results, history, spec = planted_study()
    out = tmp_path_factory.mktemp("budget")
    return write_report(results, history, spec, out).read_text(), out


def test_a_planted_late_effect_helps_from_its_epoch_on(report):
    lines = budget_lines(report[0])
    assert lines["change=late"].startswith("helps from epoch 3 on, no clear effect before")
    assert lines["change=always"].startswith("helps at every epoch (epochs 1–6)")
    assert lines["change=never"].startswith("no clear effect at every epoch")


def test_a_growing_effect_is_still_growing_and_a_flat_one_is_not(report):
    lines = budget_lines(report[0])
    assert "still growing over the last 2 epochs (Δ epoch 4 → 6: +0.1" in lines["change=growing"]
    for flat in ("change=always", "change=late", "change=never"):
        assert "no clear change over the last 2 epochs" in lines[flat], lines[flat]


def test_the_section_says_it_is_descriptive_and_draws_the_figure(report):
    text, out = report
    section = text.split("## Effects over the training budget", 1)[1].split("\n## ", 1)[0]
    assert "Descriptive only: the verdicts that count" in section
    assert "not a run trained for fewer epochs" in section
    assert "](budget.png)" in section
    png = (out / "budget.png").read_bytes()
    width = int.from_bytes(png[16:20], "big")  # the PNG header's width
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 850 <= width <= 950


def test_the_last_epoch_recomputed_from_the_history_is_the_table():
    """The budget's method is the table's: at the final epoch the recomputed family equals
    ``effects`` on the final values, row for row."""
    results, history, spec = planted_study()
    values, reason = metric_steps(results, history, spec)
    assert reason is None and list(values.columns) == list(range(EPOCHS))
    by_step = effects_by_step(results, values, spec)
    last = by_step[by_step["step"] == EPOCHS - 1].drop(columns="step").reset_index(drop=True)
    table = effects(results, spec)
    columns = ["diff", "ci_low", "ci_high", "p_holm", "confidence"]
    assert list(last["term"]) == list(table["term"])
    assert np.allclose(last[columns].to_numpy(float), table[columns].to_numpy(float))
    assert list(last["outcome"]) == list(table["outcome"])
    # and an earlier epoch is tested on that epoch's values: the late change has no effect yet
    first = by_step[(by_step["step"] == 0) & (by_step["term"] == "change=late")].iloc[0]
    assert first["outcome"] == "no clear effect" and abs(first["diff"]) < 0.05


def test_an_effect_that_turns_says_what_it_was_before(tmp_path):
    results, history, spec = planted_study(
        {"turns": [-0.3, -0.3, 0.0, 0.0, 0.3, 0.3], "last": [0, 0, 0, 0, 0, 0.3],
         "early": [0.3, 0.3, 0, 0, 0, 0]})
    lines = budget_lines(write_report(results, history, spec, tmp_path).read_text())
    assert lines["change=turns"].startswith(
        "helps from epoch 5 on; before: hurts at epochs 1–2, no clear effect at epochs 3–4")
    assert lines["change=last"].startswith("helps at 6 epochs only, no clear effect before")
    # no finding at the end: the epochs that made one are named
    assert lines["change=early"].startswith("no clear effect at 6 epochs; helps at epochs 1–2")


@pytest.mark.parametrize("case, reason", [
    ("one epoch", "every trial logged score at one step only"),
    ("no history", "the trials logged no per-epoch history of score"),
    ("budgets differ", "the finished trials logged their last score at different steps (4 to 5)"),
])
def test_the_section_is_skipped_with_one_line_why(tmp_path, case, reason):
    results, history, spec = planted_study()
    if case == "one epoch":
        history = history[history["step"] == 0]
    elif case == "no history":
        history = history[history["key"] != "score"]
    else:  # one variant trained an epoch less
        history = history[~((history["variant"] == "v1") & (history["step"] == 5))]
    text = write_report(results, history, spec, tmp_path).read_text()
    section = text.split("## Effects over the training budget", 1)[1].split("\n## ", 1)[0]
    assert len(section.strip().splitlines()) == 1  # one line
    assert section.strip().startswith(f"Not shown: {reason}")
    assert not (tmp_path / "budget.png").exists()


def test_no_section_without_a_comparison(tmp_path):
    results, history, spec = planted_study({"never": [0.0] * EPOCHS})
    one = results[results["baseline"]]
    assert budget_section(one, history, effects(one, spec), spec, tmp_path) == []


STUDY = """
import random
from ablate import Study

LATE = {"base": 0.0, "late": 0.3}

def train(config, run):
    shared = random.Random(run.seed)  # seed noise every variant shares: pairing helps
    own = random.Random(f"{run.seed}/{config['x.change']}")
    for epoch in range(EPOCHS):
        effect = LATE[config["x.change"]] if epoch >= 2 else 0.0  # from the third epoch on
        run.log({"score": 0.5 + effect + shared.gauss(0, 0.05) + own.gauss(0, 0.02)},
                step=epoch)

study = Study("late", train=train, config={"x.base": 1},
              factors={"x.change": ["base", "late"]}, seeds=4, metric="score")
"""


def test_ablate_report_from_a_real_store(tmp_path, monkeypatch):
    """`ablate run` of a train function that logs a planted late effect per epoch into a real
    sqlite store, then `ablate report`: the section reads the store's histories."""
    from ablate.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "late.py"
    path.write_text(textwrap.dedent(STUDY).replace("EPOCHS", "4"))
    assert main(["run", str(path), "--tracking-uri", uri]) == 0
    out = tmp_path / "report"
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(out)]) == 0
    lines = budget_lines((out / "report.md").read_text())
    assert lines["change=late"].startswith("helps from epoch 3 on, no clear effect before")
    assert (out / "budget.png").exists()
    table = pd.read_csv(out / "effects.csv")  # the tables for a paper, from the same rows
    assert table[["effect", "verdict"]].values.tolist() == [["change=late", "helps"]]
    assert "\\toprule" in (out / "effects.tex").read_text()


def test_the_figure_draws_the_largest_effects_of_many(tmp_path):
    planted = {f"c{i:02d}": [0.02 * i] * 3 for i in range(20)}
    results, history, spec = planted_study(planted, n_seeds=4, epochs=3)
    family = effects(results, spec)
    text = "\n".join(budget_section(results, history, family, spec, tmp_path))
    assert len(budget_lines(text)) == 20  # every change has its line
    assert "; the 15 largest final effects of 20.](budget.png)" in text


# ------------------------------------------------------------------ a study with several tasks
TASK_PLANTED = {"late": [0.0, 0.0, 0.3, 0.3, 0.3, 0.3], "never": [0.0] * EPOCHS}


def planted_tasks(epochs=(EPOCHS, EPOCHS, EPOCHS), scales=(1.0, 0.01, 10.0)):
    """Three tasks (in different units) of the same planted one-at-a-time study, each with its
    own number of ``epochs``: results, history and spec of a study with tasks."""
    from dataclasses import replace

    frames, histories, names = [], [], ["a", "b", "c"]
    for t, (name, n, scale) in enumerate(zip(names, epochs, scales)):
        planted = {k: ([0.0] * (n - EPOCHS) + v)[-n:] for k, v in TASK_PLANTED.items()}
        results, history, spec = planted_study(planted, epochs=n, seed=t)
        prefix = f"{name}-"
        results = results.assign(task=name, variant=prefix + results["variant"],
                                 run_id=prefix + results["run_id"], final=results["final"] * scale)
        history = history.assign(variant=prefix + history["variant"],
                                 run_id=prefix + history["run_id"], value=history["value"] * scale)
        frames.append(results)
        histories.append(history)
    spec = replace(spec, tasks=names, n_variants=3 * len(names),
                   task_variants=dict.fromkeys(names, 3))
    return pd.concat(frames, ignore_index=True), pd.concat(histories, ignore_index=True), spec


def task_budget_lines(text: str) -> dict[tuple[str, str], str]:
    """The section's line per (change, task) of a study with tasks."""
    section = text.split("## Effects over the training budget", 1)[1].split("\n## ", 1)[0]
    out, change = {}, ""
    for line in section.splitlines():
        if m := re.match(r"^- \*\*(.+?)\*\*$", line):
            change = m.group(1)
        elif m := re.match(r"^  - (.+?): (.+)$", line):
            out[change, m.group(1)] = m.group(2)
    return out


def test_a_study_with_tasks_shows_each_task_and_the_aggregate_at_every_epoch(tmp_path):
    results, history, spec = planted_tasks()
    text = write_report(results, history, spec, tmp_path).read_text()
    lines = task_budget_lines(text)
    for task in ("a", "b", "c"):
        assert lines["change=late", task].startswith("helps from epoch 3 on")
        assert "helps" not in lines["change=never", task].split(";")[0]
    # the aggregate at every epoch too (with 3 tasks its t has 2 degrees of freedom: a planted
    # effect of the same size everywhere is rarely decided across tasks)
    assert re.match(r"(no clear effect|helps) (at|from) ", lines["change=late", "across tasks"])
    assert "recomputed at each epoch on its own" in text and "Descriptive only" in text
    assert (tmp_path / "budget.png").exists() and "](budget.png)" in text
    # the section's lines come after the across-task table, before the variants; its figure
    # is on the first screen, under the verdicts and before each task's tables
    assert text.index("## Across tasks") < text.index("## Effects over the training budget")
    assert text.index("## Conclusion") < text.index("](budget.png)") < text.index("## Per task")
    assert text.count("](budget.png)") == 1
    assert "The figure under Conclusion draws these effects." in text
    caption = next(line for line in text.splitlines() if line.startswith("*Each change's"))
    assert caption.count("*") == 2, caption  # one italic span: no emphasis nested inside


def test_tasks_of_different_budgets_follow_each_its_own_epochs_without_aggregate(tmp_path):
    results, history, spec = planted_tasks(epochs=(EPOCHS, EPOCHS, EPOCHS + 2))
    text = write_report(results, history, spec, tmp_path).read_text()
    lines = task_budget_lines(text)
    assert lines["change=late", "c"].startswith("helps from epoch 5 on")  # 2 epochs later
    assert lines["change=late", "a"].startswith("helps from epoch 3 on")
    assert ("change=late", "across tasks") not in lines
    assert "trained for different epochs, so there is no aggregate" in text


def test_a_study_with_tasks_draws_each_tasks_learning_curves_from_its_own_trials(
        tmp_path, monkeypatch):
    """One learning-curve figure per task, each drawn from that task's trials only: its own
    baseline (one, in black) and its variants, never another task's."""
    from ablate.report import plots

    drawn: dict[str, set[str]] = {}
    real = plots.learning_curves

    def spy(history, spec, path, task=None):
        assert path.name == f"learning_curves_{task}.png"  # the title names the task
        drawn[path.name] = set(history["variant"])
        return real(history, spec, path, task)

    monkeypatch.setattr(plots, "learning_curves", spy)
    results, history, spec = planted_tasks()
    text = write_report(results, history, spec, tmp_path).read_text()
    figures = text.split("## Figures", 1)[1].split("\n## ", 1)[0]
    for task in ("a", "b", "c"):
        name = f"learning_curves_{task}.png"
        assert drawn[name] == {f"{task}-v0", f"{task}-v1", f"{task}-v2"}
        assert (tmp_path / name).stat().st_size > 10_000
        assert f"![{task}: score per epoch" in figures and f"]({name})" in figures
    assert set(drawn) == {f"learning_curves_{t}.png" for t in ("a", "b", "c")}
