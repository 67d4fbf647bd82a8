"""The effect over the training budget: each change's effect at every epoch, from the logged
per-epoch history (:mod:`ablate.stats.budget`), as a figure and one line per change saying from
which epoch its final verdict holds and whether the effect is still growing when training ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report.fmt import escape, plus_minus
from ablate.report.plots import budget_plot, task_budget_plot
from ablate.report.sections.common import band, procedure_name
from ablate.stats.budget import (
    effect_change,
    effects_by_step,
    epoch_offset,
    excludes_zero,
    growth_window,
    metric_steps,
    task_budget_groups,
    task_effect_change,
    task_effects_by_step,
)
from ablate.stats.spec import ReportSpec
from ablate.stats.tasks import ACROSS, TASK
from ablate.stats.verdict import Verdict

COMPONENT_KINDS = ("variant", "main")  # a change against the baseline (or baseline level)
TITLE = "## Effects over the training budget"
MAX_PANELS = 15  # the figure's panels: 5 rows of 3 at GitHub's width
MAX_TASK_ROWS = 5  # a study with tasks: the changes drawn (a row of panels each)
FIGURE = "budget.png"


def budget_section(results: pd.DataFrame, history: pd.DataFrame, family: pd.DataFrame,
                   spec: ReportSpec, out_dir: Path) -> list[str]:
    """The section's lines; its figure is written to ``out_dir``. ``family`` is the report's
    table of effects (display order), whose rows are the final epoch's. Nothing when there is
    nothing to compare; one line saying why when the history cannot show a budget."""
    final = family[family["kind"].isin(COMPONENT_KINDS)] if len(family) else family
    if final.empty:
        return []
    values, reason = metric_steps(results, history, spec, shown=escape(spec.metric))
    if reason is not None:
        return [TITLE, "", f"Not shown: {reason}.", ""]
    steps = list(values.columns)
    last = steps[-1]
    earlier = effects_by_step(results, values.drop(columns=last), spec)
    earlier = earlier[earlier["kind"].isin(COMPONENT_KINDS)]
    # the last epoch is the table's own rows (the same numbers, recomputed, in a fixed design;
    # in an adaptive one each variant's row from the round where it stopped)
    course = pd.concat([earlier, final.assign(step=last)], ignore_index=True)
    offset = epoch_offset(steps[0])
    course["epoch"] = course["step"] + offset
    start, end = growth_window(steps)
    change = effect_change(results, values, spec, start, end)
    change = change[change["kind"].isin(COMPONENT_KINDS)] if len(change) else change
    keys = list(zip(final["kind"], final["term"]))
    drawn = _largest(final, MAX_PANELS)
    figure = budget_plot(course[course["term"].isin(drawn)], spec, out_dir / FIGURE,
                               first_epoch=steps[0] + offset)
    lines = [TITLE, "", _intro(spec, steps, offset, start + offset, end + offset), ""]
    for kind, term in keys:
        rows = course[(course["kind"] == kind) & (course["term"] == term)]
        moved = change[(change["kind"] == kind) & (change["term"] == term)] if len(change) \
            else change
        growth = _growth(rows.iloc[-1], moved.iloc[0] if len(moved) else None, spec,
                         start + offset, end + offset)
        lines.append(f"- **{escape(term)}:** {_course(rows)}{growth}")
    lines.append("")
    if figure is not None:
        caption = (f"Each change's effect on {escape(spec.metric)} (Δ, paired by seed) at every "
                   "epoch, with the interval that epoch's family gives it (band); points "
                   "coloured by the verdict at that epoch. The last epoch is the first table's"
                   + (f"; the {len(drawn)} largest final effects of {len(final)}."
                      if len(drawn) < len(final) else "."))
        lines += [f"![{caption}]({figure.name})", "", f"*{caption}*", ""]
    return lines


def _largest(final: pd.DataFrame, n: int) -> set[str]:
    """The terms of the ``n`` largest final effects (in size; all when there are no more)."""
    size = final["diff"].abs().fillna(-1).to_numpy()
    keep = np.argsort(-size, kind="stable")[:n]
    return set(final["term"].iloc[keep])


def _intro(spec: ReportSpec, steps: list[int], offset: int, start: int, end: int) -> str:
    adaptive = (" In this adaptive study every epoch uses the seeds each variant was scheduled "
                "for, at the same group-sequential boundaries; the last epoch is the table's "
                "rows, each from the round where its variant stopped."
                if spec.adaptive is not None else "")
    numbering = " Epoch k is the k-th epoch trained (MLflow step k − 1)." if offset else ""
    return (f"Each change's effect at every one of the {len(steps)} epochs, recomputed from the "
            f"{escape(spec.metric)} its trials logged, as the first table computes it at the "
            f"last (the same contrasts paired by seed, the same {procedure_name(spec)} family "
            f"and intervals, each epoch on its own).{adaptive} Descriptive only: the verdicts "
            "that count, with the error rates Methods states, are the final epoch's. Each "
            "epoch's family is at α on its own, so a verdict at a single earlier epoch may be "
            "chance; and an earlier epoch is that point of these runs, not a run trained for "
            "fewer epochs (a learning-rate schedule set for the whole budget has not ended "
            f"there).{numbering} *Still growing:* the effect's change from epoch {start} to "
            f"{end} (per seed), tested the same way as a family of its own, excludes 0 on the "
            "side of the final effect (*shrinking:* on the other side).")


def _course(rows: pd.DataFrame) -> str:
    """When the final verdict holds: ``hurts from epoch 3 on, no clear effect before`` (a
    finding), ``no clear effect at 8 epochs; hurts at epoch 2`` (otherwise: the epochs that
    differ), or ``helps at every epoch (epochs 1–8)``."""
    rows = rows.sort_values("epoch")
    epochs, outcomes = rows["epoch"].astype(int).tolist(), rows["outcome"].tolist()
    final = outcomes[-1]
    onset = len(outcomes) - 1
    while onset > 0 and outcomes[onset - 1] == final:
        onset -= 1
    if onset == 0:
        return f"{escape(final)} at every epoch ({_span(epochs[0], epochs[-1])})"
    runs = _runs(epochs[:onset], outcomes[:onset])
    if not Verdict(final).finding:  # no claim to date: name the epochs that made one
        other = [f"{escape(o)} at {_span(a, b)}" for o, a, b in runs if o != final]
        return f"{escape(final)} at {epochs[-1]} epochs; {', '.join(other)}"
    head = (f"{escape(final)} at {epochs[-1]} epochs only" if onset == len(outcomes) - 1 else
            f"{escape(final)} from epoch {epochs[onset]} on")
    if len(runs) == 1:
        return f"{head}, {escape(runs[0][0])} before"
    before = ", ".join(f"{escape(o)} at {_span(a, b)}" for o, a, b in runs)
    return f"{head}; before: {before}"


def _runs(epochs: list[int], outcomes: list[str]) -> list[tuple[str, int, int]]:
    """Consecutive epochs with one verdict: ``[(verdict, first epoch, last epoch), ...]``."""
    runs: list[tuple[str, int, int]] = []
    for epoch, outcome in zip(epochs, outcomes):
        if runs and runs[-1][0] == outcome:
            runs[-1] = (outcome, runs[-1][1], epoch)
        else:
            runs.append((outcome, epoch, epoch))
    return runs


def _span(a: int, b: int) -> str:
    return f"epoch {a}" if a == b else f"epochs {a}–{b}"


def _growth(final: pd.Series, moved: pd.Series | None, spec: ReportSpec, start: int,
            end: int) -> str:
    """``; still growing over the last 2 epochs (epoch 6 → 8: -0.012 ± 0.008)``."""
    if moved is None or pd.isna(moved["diff"]):
        return "."
    window = "over the last epoch" if end - start == 1 else f"over the last {end - start} epochs"
    estimate = (f"Δ epoch {start} → {end}: "
                f"{plus_minus(moved['diff'], moved['ci_low'], moved['ci_high'], signed=True)}")
    if moved["outcome"] == Verdict.NOT_ENOUGH_DATA:
        return f"; its change {window}: not enough data ({escape(moved['reason'])})."
    if moved["outcome"] == Verdict.NEGLIGIBLE:
        return f"; levelled off {window} (its change lies inside ±{band(spec)}: {estimate})."
    if not excludes_zero(moved.to_frame().T).iloc[0]:
        return f"; no clear change {window} ({estimate})."
    same = (moved["diff"] > 0) == (final["diff"] > 0)
    return f"; {'still growing' if same else 'shrinking'} {window} ({estimate})."


def task_budget_section(results: pd.DataFrame, history: pd.DataFrame, family: pd.DataFrame,
                        spec: ReportSpec, out_dir: Path) -> tuple[list[str], list[str]]:
    """The section of a study with tasks: each change's effect on each task, and across tasks,
    at every epoch (:func:`ablate.stats.budget.task_budget_groups`), a line per task and
    change, and a figure of a row per change and a column per task. ``family`` is the report's
    (display order): its rows are the last epoch's. Returns the section's lines and, apart,
    the figure's, which the report shows on its first screen, under the verdicts."""
    final = family[family["kind"].isin(COMPONENT_KINDS)] if len(family) else family
    if final.empty:
        return [], []
    groups, reasons = task_budget_groups(results, history, spec, shown=escape(spec.metric))
    if not groups:
        why = set(reasons.values())
        return [TITLE, "", f"Not shown: {next(iter(why))}." if len(why) == 1 else
                "Not shown: " + "; ".join(f"{escape(t)}: {r}" for t, r in reasons.items())
                + ".", ""], []
    shared = len(groups) == 1 and len(groups[0][0].tasks) > 1
    courses, changes, windows = [], [], {}
    for gspec, gresults, values in groups:
        steps = list(values.columns)
        offset = epoch_offset(steps[0])
        earlier = task_effects_by_step(gresults, values.drop(columns=steps[-1]), gspec)
        earlier = earlier[earlier["kind"].isin(COMPONENT_KINDS)]
        mine = final[final[TASK].isin([*gspec.tasks, *([ACROSS] if shared else [])])]
        course = pd.concat([earlier, mine.assign(step=steps[-1])], ignore_index=True)
        courses.append(course.assign(epoch=course["step"] + offset))
        start, end = growth_window(steps)
        change = task_effect_change(gresults, values, gspec, start, end)
        if len(change):
            changes.append(change[change["kind"].isin(COMPONENT_KINDS)])
        for task in gspec.tasks:
            windows[task] = (start + offset, end + offset, len(steps))
    course = pd.concat(courses, ignore_index=True)
    change = pd.concat(changes, ignore_index=True) if changes else pd.DataFrame()
    across = final[final[TASK] == ACROSS]
    terms = list(dict.fromkeys(final["term"]))
    drawn = _largest(across if len(across) else final, MAX_TASK_ROWS)
    columns = [*spec.tasks, *([ACROSS] if shared else [])]
    figure = task_budget_plot(course[course["term"].isin(drawn)], spec, out_dir / FIGURE,
                              columns, ACROSS)
    drawn_note = " The figure under Conclusion draws these effects." if figure is not None else ""
    lines = [TITLE, "", _task_intro(spec, shared, windows) + drawn_note, ""]
    for term in terms:
        lines.append(f"- **{escape(term)}**")
        for task in columns:
            rows = course[(course["term"] == term) & (course[TASK] == task)]
            if task in reasons:
                lines.append(f"  - {escape(task)}: not shown ({reasons[task]}).")
            if rows.empty:
                continue
            growth = "."
            if task != ACROSS and len(change):
                moved = change[(change["term"] == term) & (change[TASK] == task)]
                start, end, _ = windows[task]
                growth = _growth(rows.iloc[-1], moved.iloc[0] if len(moved) else None, spec,
                                 start, end)
            lines.append(f"  - {escape(task)}: {_course(rows)}{growth}")
    lines.append("")
    if figure is None:
        return lines, []
    caption = (f"Each change's effect (rows) on each task (columns) at every epoch: Δ "
               f"{escape(spec.metric)} paired by seed"
               + ("; across tasks, the standardised aggregate g" if shared else "")
               + ", with the interval that epoch's family gives it (band); points coloured by "
               "the verdict at that epoch; each panel has its own scale. The last epoch is the "
               "first table's"
               + (f"; the {len(drawn)} largest final effects of {len(terms)}."
                  if len(drawn) < len(terms) else ".")
               + " Effects over the training budget, below, says it in words.")
    return lines, [f"![{caption}]({figure.name})", "", f"*{caption}*", ""]


def _task_intro(spec: ReportSpec, shared: bool,
                windows: dict[str, tuple[int, int, int]]) -> str:
    epochs = sorted({n for _, _, n in windows.values()})
    span = (f"every one of the {epochs[0]} epochs" if len(epochs) == 1 else
            "every epoch of each task")
    family = (f"the report's one {procedure_name(spec)} family — every task's effects and the "
              "aggregates across tasks — recomputed at each epoch on its own" if shared else
              f"each task's own {procedure_name(spec)} family at each epoch (the tasks trained "
              "for different epochs, so there is no aggregate before the last epoch, and an "
              "earlier epoch's family is smaller than the first table's)")
    windows_text = "; ".join(sorted({f"from epoch {a} to {b}" for a, b, _ in windows.values()}))
    return (f"Each change's effect on each task at {span}, recomputed from the "
            f"{escape(spec.metric)} its trials logged: the same contrasts paired by seed, "
            f"{family}; across tasks, the standardised aggregate g. Descriptive only: the "
            "verdicts that count, with the error rates Methods states, are the final epoch's "
            "(the first table's). Each epoch's family is at α on its own, so a verdict at a "
            "single earlier epoch may be chance; and an earlier epoch is that point of these "
            "runs, not a run trained for fewer epochs (a learning-rate schedule set for the "
            "whole budget has not ended there). Epoch k is the k-th epoch trained. *Still "
            f"growing:* a task's effect's change over its last epochs ({windows_text}), per "
            "seed, tested as a family of its own, excludes 0 on the side of the final effect "
            "(*shrinking:* on the other side).")
