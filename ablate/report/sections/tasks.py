"""The report of a study with several tasks: per-task and across-task verdicts first (one
compact table of change × task, with the aggregate and "helps on k of n"), then each task's
effects, the aggregates with their homogeneity tests, and how they were computed
(:mod:`ablate.stats.tasks`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.report.fmt import escape, format_p, p_phrase, plural, plus_minus
from ablate.report.sections.common import (
    effects_table,
    md_table,
    procedure_name,
    verdict_cell,
)
from ablate.report.sections.conclusion import display_order, first_table_rows, table_note
from ablate.stats.effects import FACTORIAL
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.tasks import ACROSS, MIN_TASKS, TASK, task_spec
from ablate.stats.verdict import Verdict

G = "g"  # how the report names the standardised effect across tasks


def task_rows(family: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """The family in the report's order: each task's rows in its display order (tasks in the
    study's order), then the aggregates in the first task's order."""
    parts = [display_order(family[family[TASK] == task]) for task in spec.tasks]
    return pd.concat([*parts, family[family[TASK] == ACROSS]])


def tasks_conclusion(family: pd.DataFrame, spec: ReportSpec, tables: list[str]) -> list[str]:
    """The first screen: what holds across tasks in sentences, the change × task table and
    its note."""
    lines = ["## Conclusion", ""]
    across = family[family[TASK] == ACROSS]
    if family.empty or across.empty:
        return lines + ["No change ran on two or more tasks, so there is nothing to compare "
                        "across tasks.", ""]
    lines += _findings(family, spec) + [""]
    lines += [_compact_table(family, spec), "", _compact_note(family, spec), "",
              *(tables or [])]
    return lines


def _per_task(family: pd.DataFrame, kind: str, term: str) -> pd.DataFrame:
    return family[(family[TASK] != ACROSS) & (family["kind"] == kind) & (family["term"] == term)]


def _ways(family: pd.DataFrame, row: pd.Series) -> str:
    """``helps on 2 of 3 tasks (digits, moons), hurts on 1 (cifar)``."""
    mine = _per_task(family, row["kind"], row["term"])
    n = len(mine)
    parts: list[str] = []
    for verdict in (Verdict.HELPS, Verdict.HURTS, Verdict.INTERACTION_FOUND):
        tasks = list(mine.loc[mine["outcome"] == verdict, TASK])
        if tasks:
            parts.append(f"{verdict.value} on {len(tasks)}" + (f" of {n} tasks" if not parts
                                                                else "")
                         + f" ({', '.join(escape(t) for t in tasks)})")
    return ", ".join(parts) or f"decided on none of {n} tasks"


def _phrase(family: pd.DataFrame, row: pd.Series) -> str:
    estimate = plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True)
    homogeneity = (f"; tasks differ: homogeneity {p_phrase(row['p_heterogeneity_adj'])}"
                   if row["p_heterogeneity_adj"] < ALPHA else "")
    return (f"{escape(row['term'])} ({G} = {estimate}, {p_phrase(row['p_holm'])}; "
            f"{_ways(family, row)}{homogeneity})")


def _findings(family: pd.DataFrame, spec: ReportSpec) -> list[str]:
    across = family[family[TASK] == ACROSS]
    lines = []
    groups = ((Verdict.HELPS, "Helps across tasks"), (Verdict.HURTS, "Hurts across tasks"),
              (Verdict.INTERACTION_FOUND, "Interactions across tasks"),
              (Verdict.TASK_DEPENDENT, "Task-dependent (the tasks disagree beyond chance)"))
    for verdict, title in groups:
        rows = across[across["outcome"] == verdict]
        if len(rows):
            items = [_phrase(family, r) for _, r in rows.iterrows()]
            lines.append(f"- **{title}:** {'; '.join(items)}.")
    unclear = across[across["outcome"].isin([Verdict.NO_CLEAR_EFFECT.value,
                                             Verdict.UNDECIDED.value])]
    everywhere = [r for _, r in unclear.iterrows() if _same_way_everywhere(family, r)]
    if everywhere:
        items = [_phrase(family, r) for r in everywhere]
        lines.append("- **The same way on every task that ran it** (each task's verdict decided "
                     "in the one family), though the aggregate cannot tell: "
                     f"{'; '.join(items)}. With {plural(len(spec.tasks), 'task')} the "
                     "random-effects interval, which asks whether the effect generalises "
                     "beyond these tasks, is wide.")
        unclear = unclear.drop([r.name for r in everywhere])
    if len(unclear):
        items = [_phrase(family, r) for _, r in unclear.iterrows()]
        lines.append("- **Cannot tell across tasks** (the aggregate's interval includes 0 and "
                     f"the tasks do not disagree beyond chance): {'; '.join(items)}. Not "
                     "evidence of no effect: the interval also fits effects as large as its "
                     "bounds.")
    few = across[across["outcome"] == Verdict.NOT_ENOUGH_DATA]
    if len(few):
        items = [f"{escape(r['term'])} ({escape(r['reason'])})" for _, r in few.iterrows()]
        lines.append(f"- **Not enough data across tasks:** {'; '.join(items)}.")
    lines.append(f"- {_count_line(family, spec)}")
    return lines


def _same_way_everywhere(family: pd.DataFrame, row: pd.Series) -> bool:
    mine = _per_task(family, row["kind"], row["term"])
    outcomes = set(mine["outcome"])
    return len(mine) >= 2 and len(outcomes) == 1 and outcomes <= {
        Verdict.HELPS.value, Verdict.HURTS.value, Verdict.INTERACTION_FOUND.value}


def _count_line(family: pd.DataFrame, spec: ReportSpec) -> str:
    across = family[family[TASK] == ACROSS]
    per_task = family[family[TASK] != ACROSS]
    homogeneity = int(np.isfinite(across["p_heterogeneity"].to_numpy(float)).sum())
    tested = int(family["p"].notna().sum()) + homogeneity
    counts = across["outcome"].value_counts()
    counted = ", ".join(v.counted(n) for v in Verdict if (n := int(counts.get(v.value, 0))))
    task_counts = per_task["outcome"].value_counts()
    per = ", ".join(v.counted(n) for v in Verdict if (n := int(task_counts.get(v.value, 0))))
    return (f"Across tasks, of {plural(len(across), 'change')}: {counted}. Per task, of "
            f"{plural(len(per_task), 'test')}: {per}. One family of {tested} tests (every "
            f"per-task test, every aggregate and every homogeneity test), "
            f"{procedure_name(spec)}-adjusted together, α = {ALPHA}.")


def _compact_table(family: pd.DataFrame, spec: ReportSpec) -> str:
    """Change × task: each task's verdict and Δ ± CI, the aggregate's and the tasks' count."""
    across = family[family[TASK] == ACROSS]
    first = "Effect" if spec.design in FACTORIAL else "Change"
    header = [first, *(escape(t) for t in spec.tasks), f"Across tasks ({G} ± CI)",
              "Helps on"]
    body = []
    for _, row in across.iterrows():
        mine = _per_task(family, row["kind"], row["term"])
        cells = []
        for task in spec.tasks:
            hit = mine[mine[TASK] == task]
            if hit.empty:
                cells.append("—")
                continue
            r = hit.iloc[0]
            cells.append(f"{verdict_cell(r)} "
                         f"{plus_minus(r['diff'], r['ci_low'], r['ci_high'], signed=True)}")
        aggregate = (f"{verdict_cell(row)} "
                     f"{plus_minus(row['diff'], row['ci_low'], row['ci_high'], signed=True)}")
        helps = f"{int(row['helps_on'])} of {len(mine)}"
        if row["hurts_on"]:
            helps += f" (hurts on {int(row['hurts_on'])})"
        body.append([escape(row["term"]), *cells, aggregate, helps])
    return md_table(header, body)


def _compact_note(family: pd.DataFrame, spec: ReportSpec) -> str:
    return (f"Per task: the verdict and Δ {escape(spec.metric)} ± CI, paired by seed against "
            f"that task's baseline, in the metric's units. Across tasks: the random-effects "
            f"mean of the tasks' standardised effects ({G} = Hedges' g_z, each task's Δ over "
            "the SD of its paired differences, so tasks in other units or with other noise "
            "count alike) with its Hartung–Knapp interval (t on tasks − 1 degrees of freedom: "
            "the tasks are the unit that varies); *task-dependent* when the tasks disagree "
            "beyond chance (Cochran's Q test of homogeneity rejects, or two tasks decide it "
            "opposite ways), with which way the aggregate goes if its interval says so. Every "
            f"interval is the {procedure_name(spec)}-adjusted one that decides its verdict, "
            "all claims of this table (per task, across tasks and homogeneity) in one family. "
            f"Helps on: tasks where the change helps, of those that ran it. The aggregate "
            f"needs the change tested on {MIN_TASKS} tasks or more; Methods says more.")


def per_task_sections(family: pd.DataFrame, summary: pd.DataFrame,
                      spec: ReportSpec) -> list[str]:
    """Each task's effects, as the first table of a study of its own would show them (its
    intervals at the levels of the one family)."""
    lines = ["## Per task", ""]
    for task in spec.tasks:
        rows = first_table_rows(display_order(family[family[TASK] == task]))
        base = summary[(summary[TASK] == task) & summary["baseline"]]
        lines += [f"### {escape(task)}", ""]
        if len(base):
            b = base.iloc[0]
            lines += [f"Baseline: {escape(spec.metric)} "
                      f"{plus_minus(b['mean'], b['ci_low'], b['ci_high'])} (mean ± 95% CI "
                      f"over {plural(int(b['n_finished']), 'finished seed')}).", ""]
        if rows.empty:
            lines += ["Nothing to compare on this task.", ""]
            continue
        tspec = task_spec(spec, task)
        first = "Effect" if spec.design in FACTORIAL else "Change"
        lines += [effects_table(rows, tspec, first), ""]
    shown = family[family[TASK] != ACROSS]
    lines += [table_note(first_table_rows(shown), spec), ""]
    return lines


def across_section(family: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """The aggregates in full: estimate, adjusted p, the homogeneity test and τ²."""
    across = family[family[TASK] == ACROSS]
    if across.empty:
        return []
    first = "Effect" if spec.design in FACTORIAL else "Change"
    header = [first, f"{G} ± CI", "p (adj.)", "Homogeneity (adj. p)", "τ²", "Verdict",
              "Tasks"]
    body = []
    for _, r in across.iterrows():
        q = (f"Q = {r['q']:.2f}, {p_phrase(r['p_heterogeneity_adj'])}"
             if np.isfinite(r["q"]) else "—")
        tau = f"{r['tau2']:.2g}" if np.isfinite(r["tau2"]) else "—"
        body.append([escape(r["term"]),
                     plus_minus(r["diff"], r["ci_low"], r["ci_high"], signed=True),
                     format_p(r["p_holm"]), q, tau, verdict_cell(r),
                     f"{int(r['n_pairs'])}/{int(r['n_tasks'])}"])
    return ["## Across tasks", "",
            md_table(header, body, numeric=(1, 2, 4)), "",
            f"{G}: the random-effects mean of the tasks' Hedges' g_z; τ²: the between-task "
            "variance of the standardised effect (Paule–Mandel); Tasks: tasks that "
            "tested the change, of those that ran it. Homogeneity: Cochran's Q test that "
            "every task has the same standardised effect, its p adjusted in the one family.",
            ""]


def tasks_methods() -> list[str]:
    """How the across-task aggregate, the homogeneity test and the family are computed, and
    why (stated in Methods)."""
    return [
        "- **Tasks:** every variant ran on every seed of each task; each task's effects are "
        "paired by seed against that task's baseline, as in a study of its own, in the "
        "metric's units.",
        f"- **Across tasks:** each task's estimate is standardised by the spread of its own "
        "paired differences — Hedges' g_z = J·Δ/SD(d), J = 1 − 3/(4(n − 1) − 1), whose t "
        "statistic is the task's own paired t — so that tasks measured in other units or with "
        "other seed-to-seed noise count alike. The aggregate is a random-effects meta-analysis "
        "over the tasks that tested the change (statsmodels' combine_effects): "
        "Paule–Mandel between-task variance τ² (statsmodels' DerSimonian–Laird estimate is "
        "not truncated at 0), each task weighted by its paired seeds "
        "(within-task variance 1/n; weights that do not depend on the estimate itself, whose "
        "own variance estimate 1/n + g²/(2n) is too noisy with 3 to 5 seeds and pulls the "
        "aggregate toward 0), and the Hartung–Knapp–Sidik–Jonkman interval: the weighted "
        "spread of the tasks' estimates with a t distribution on k − 1 degrees of freedom (k "
        "tasks; with the same seeds on every task, the one-sample t-interval of the tasks' "
        "g_z). The tasks, not the seeds, are the unit that varies: a DerSimonian–Laird "
        "normal interval undercovers with 3 tasks (it ignores that τ² is estimated from 3 "
        f"values). At least {MIN_TASKS} tasks must have tested a change for an aggregate.",
        "- **Task-dependent:** Cochran's Q test that every task has the same standardised "
        "effect (each g_z with its large-sample variance 1/n + g²/(2n); chi-squared on k − 1 "
        "degrees of freedom), or two tasks deciding the change opposite ways. Either makes "
        "the verdict across tasks *task-dependent*; it adds which way the aggregate goes "
        "when its interval excludes 0.",
        f"- **One family:** every per-task test (with min_effect, its equivalence claim too), "
        "every aggregate and every homogeneity test are adjusted together by one step-down, "
        "and every interval is shown at the level of the step that decides it: the claims of "
        "the first screen, per task and across tasks, have a family-wise error rate of "
        f"α = {ALPHA}. The price is wider per-task intervals than a study of one task would "
        "show.",
    ]


def task_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (results, summary, history) with each label prefixed by its task
    (``digits: batch_norm=False``), for the tables and figures over every variant."""
    if TASK not in frame or frame.empty:
        return frame
    return frame.assign(label=frame[TASK].astype(str) + ": " + frame["label"].astype(str))

