"""The design's effects at every epoch of training, from the per-epoch metric history.

The report's tables test each effect on the metric at the final epoch. The same family
(:func:`ablate.stats.effects.effects`: the same contrasts, paired by seed, the same step-down and
intervals; in an adaptive study the stopping rule's family on the seeds each variant was
scheduled for) is recomputed here on the metric at each earlier epoch — each trial's value at that
step of its history in place of its final value — and on the change of the metric over the last
epochs, which says whether an effect is still growing when training ends.

This is descriptive: the final epoch's verdicts are the ones whose error rates the report states.
An effect at epoch k is the effect at that point of the full run, not that of a run trained for k
epochs (a learning-rate schedule set for the whole budget is not at its end there).

A study with tasks recomputes its one family (:func:`ablate.stats.tasks.task_family`: every
task's effects and the aggregates across tasks) at every epoch the same way, when every task
trained for the same epochs; otherwise each task's family on its own epochs, without aggregates
(:func:`task_budget_groups`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ablate.stats.effects import effects
from ablate.stats.sequential import stopping_family
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.tasks import ACROSS, of_task, task_family


def epoch_offset(first_step: int) -> int:
    """What turns a logged step into the epoch the report names: the built-in loop logs epoch
    k at MLflow step k - 1 (offset 1); a loop of its own that logs from step 1 keeps its
    steps (offset 0)."""
    return 1 if first_step == 0 else 0


def metric_steps(results: pd.DataFrame, history: pd.DataFrame, spec: ReportSpec,
                 shown: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """``(values, reason)``: the study metric of each trial of ``results`` at each logged step
    (run ids x steps, NaN where a trial logged none), or an empty table and the reason there
    is no budget to follow: no history of the metric, every finished trial logged it at one
    step only, or the finished trials ended at different steps (the budget differs between
    them, e.g. ``train.epochs`` is a factor), naming the metric as ``shown`` (default: its
    name)."""
    empty, metric = pd.DataFrame(), shown or spec.metric
    data = history[(history["key"] == spec.metric) & history["run_id"].isin(results["run_id"])]
    if data.empty:
        return empty, f"the trials logged no per-epoch history of {metric}"
    values = data.pivot_table(index="run_id", columns="step", values="value", aggfunc="last")
    finished = results.loc[results["status"] == "finished", "run_id"]
    logged = values.reindex(finished).notna()
    if logged.sum(axis=1).max() < 2:
        return empty, (f"every trial logged {metric} at one step only (one epoch, or a "
                       "train function that logs the metric once)")
    last = logged.iloc[:, ::-1].idxmax(axis=1)[logged.any(axis=1)]
    if last.nunique() > 1:
        return empty, (f"the finished trials logged their last {metric} at different "
                       f"steps ({last.min()} to {last.max()}), so an epoch is not the same "
                       "share of the budget across variants")
    return values.loc[:, : last.iloc[0]], None


def at_step(results: pd.DataFrame, values: pd.DataFrame, step: int) -> pd.DataFrame:
    """``results`` with each trial's metric at ``step`` as its ``final`` value (NaN, i.e. a
    missing trial, where it logged none there)."""
    return results.assign(final=results["run_id"].map(values[step]).astype(float))


def effects_at(results: pd.DataFrame, spec: ReportSpec, alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`~ablate.stats.effects.effects` of ``results`` whose ``final`` holds another value
    (the metric at an earlier epoch, or its change): in a scheduled adaptive study the
    comparisons with the baseline are the stopping rule's family on these values."""
    if spec.stopping is not None:
        spec = replace(spec, stopping=stopping_family(results, spec))
    return effects(results, spec, alpha=alpha)


def effects_by_step(results: pd.DataFrame, values: pd.DataFrame, spec: ReportSpec,
                    alpha: float = ALPHA) -> pd.DataFrame:
    """The rows of :func:`effects_at` at every step of ``values`` (:func:`metric_steps`), with
    the ``step`` they are at, in step order."""
    parts = [effects_at(at_step(results, values, step), spec, alpha).assign(step=step)
             for step in values.columns]
    return pd.concat(parts, ignore_index=True)


def growth_window(steps: list[int]) -> tuple[int, int]:
    """The last quarter of the logged steps (at least the last two): ``(start, end)``."""
    k = max(1, round(len(steps) / 4))
    return steps[-1 - k], steps[-1]


def effect_change(results: pd.DataFrame, values: pd.DataFrame, spec: ReportSpec, start: int,
                  end: int, alpha: float = ALPHA) -> pd.DataFrame:
    """Each effect's change from step ``start`` to step ``end``: the family of
    :func:`effects_at` on each trial's metric at ``end`` minus its metric at ``start`` (a
    contrast is linear, so per seed this is the effect at ``end`` minus the effect at
    ``start``), tested and adjusted as a family of its own."""
    change = values[end] - values[start]
    moved = results.assign(final=results["run_id"].map(change).astype(float))
    return effects_at(moved, spec, alpha)


def excludes_zero(rows: pd.DataFrame) -> pd.Series:
    """Whether each row's interval lies entirely on one side of 0."""
    return pd.Series(np.asarray((rows["ci_low"] > 0) | (rows["ci_high"] < 0)), index=rows.index)


def task_budget_groups(results: pd.DataFrame, history: pd.DataFrame, spec: ReportSpec,
                       shown: str | None = None) -> tuple[list[tuple[ReportSpec, pd.DataFrame,
                                                                   pd.DataFrame]],
                                                        dict[str, str]]:
    """How a study with tasks follows its budget: ``(groups, reasons)``. Each group is
    ``(spec, results, values)`` decided as one family at every step: one group of every task
    when they all logged the same steps (the report's own family, aggregates included), else
    one per task (its own family, no aggregate). ``reasons``: task -> why it has no budget to
    follow (:func:`metric_steps`)."""
    values, reason = metric_steps(results, history, spec, shown)
    if reason is None:
        return [(spec, results, values)], {}
    groups, reasons = [], {}
    for task in spec.tasks:
        mine = of_task(results, task)
        values, reason = metric_steps(mine, history, spec, shown)
        if reason is not None:
            reasons[task] = reason
        else:
            groups.append((replace(spec, tasks=[task]), mine, values))
    return groups, reasons


def task_effects_at(results: pd.DataFrame, spec: ReportSpec, alpha: float = ALPHA
                    ) -> pd.DataFrame:
    """:func:`~ablate.stats.tasks.task_family` of ``results`` whose ``final`` holds another
    value (the metric at an earlier epoch, or its change); no aggregate rows when ``spec``
    has one task."""
    family = task_family(results, spec, alpha=alpha)
    if len(spec.tasks) < 2 and len(family):
        family = family[family["task"] != ACROSS]
    return family


def task_effects_by_step(results: pd.DataFrame, values: pd.DataFrame, spec: ReportSpec,
                         alpha: float = ALPHA) -> pd.DataFrame:
    """The rows of :func:`task_effects_at` at every step of ``values``, with their ``step``."""
    parts = [task_effects_at(at_step(results, values, step), spec, alpha).assign(step=step)
             for step in values.columns]
    return pd.concat(parts, ignore_index=True)


def task_effect_change(results: pd.DataFrame, values: pd.DataFrame, spec: ReportSpec,
                       start: int, end: int, alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`effect_change` of a study with tasks: each per-task effect's (and aggregate's)
    change from step ``start`` to ``end``, decided as a family of its own."""
    change = values[end] - values[start]
    return task_effects_at(results.assign(final=results["run_id"].map(change).astype(float)),
                           spec, alpha)
