"""A study with several tasks: each effect per task and across tasks, decided as one family.

**Per task.** Each task's results are the design of a study of their own: its contrasts
(:func:`ablate.stats.effects.design_contrasts`: each variant against that task's baseline and
pairs of levels, or a factorial's main effects and interactions; simple effects, which the
first screen does not show, are left out), paired by seed, with the paired t statistics of
:func:`ablate.stats.inference.estimate`, in the metric's units.

**Across tasks.** Tasks measure in different units (an accuracy on digits, a loss on text), and
their seed-to-seed noise differs, so an effect is first made comparable: each task's estimate
is standardised by the spread of its own paired differences, Hedges' g_z = J·Δ/SD(d) with
J = 1 − 3/(4(n − 1) − 1) (the standardised paired effect; its t statistic is g_z·√n/J). The
aggregate is a random-effects meta-analysis over the tasks that tested the effect
(``statsmodels.stats.meta_analysis.combine_effects``): Paule–Mandel between-task variance,
each task weighted by its paired seeds (within-task variance 1/n, the variance of a
standardised paired mean with no effect; weights that do not depend on the estimate itself,
which with 3 to 5 seeds is too noisy to weight by), and the Hartung–Knapp–Sidik–Jonkman
interval: the weighted spread of the tasks' estimates around their mean with a t
distribution on k − 1 degrees of freedom (k tasks), so the tasks are the unit that varies.
With equal seeds on every task it is the one-sample t-interval of the tasks' g_z.

**Task-dependent.** Whether the tasks disagree beyond chance is Cochran's Q test of
homogeneity (``test_homogeneity`` of a second ``combine_effects`` with each g_z's large-sample
variance 1/n + g²/(2n)). An effect across tasks is *task-dependent* when that test rejects, or
when two tasks decide it in opposite directions; its verdict then also says which way the
aggregate goes, if its interval says so.

**One family.** Every per-task test (with ``min_effect``, its equivalence claim too), every
aggregate and every homogeneity test is one step-down family (Holm, or Holm–Shaffer's with
equivalence claims: :func:`ablate.stats.inference.step_down_claims`), and every interval is at
the level of the step that decides it, so what the report's first screen claims — per task and
across tasks — has a family-wise error rate of α.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ablate.stats.effects import MAIN_FAMILY, dependencies, design_contrasts
from ablate.stats.inference import (
    equivalence_p,
    estimate,
    fragility,
    judge,
    step_down_claims,
    untested_reason,
)
from ablate.stats.spec import ALPHA, ReportSpec, chance_of
from ablate.stats.trials import baseline_variant
from ablate.stats.verdict import Verdict

TASK = "task"  # the results' and the family's column naming a row's task
ACROSS = "across tasks"  # the task of an aggregate row
AGGREGATED = ("variant", "pair", "main", "interaction")  # the kinds aggregated across tasks
MIN_TASKS = 2  # an aggregate needs the effect tested on at least so many tasks
METHOD_RE = "iterated"  # Paule-Mandel: statsmodels' DerSimonian-Laird ("chi2") is not
# truncated at 0, and a negative between-task variance would make weights negative


def task_spec(spec: ReportSpec, task: str) -> ReportSpec:
    """The spec of one task's results: its variants, its baseline's config and chance."""
    config = spec.task_configs.get(task, spec.config)
    return replace(spec, n_variants=spec.task_variants.get(task, spec.n_variants),
                   config=config, chance=chance_of(spec.metric, config), tasks=[],
                   task_configs={}, task_variants={})


def of_task(results: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of one task."""
    return results[results[TASK] == task]


def standardised(diff: np.ndarray, sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Hedges' g_z of paired estimates: J·diff/sd, J = 1 − 3/(4(n − 1) − 1) (NaN below 3
    pairs or without spread)."""
    diff, sd, n = (np.asarray(x, float) for x in (diff, sd, n))
    ok = (n >= 3) & (sd > 0) & np.isfinite(diff)
    out = np.full(len(diff), np.nan)
    out[ok] = (1 - 3 / (4 * (n[ok] - 1) - 1)) * diff[ok] / sd[ok]
    return out


def combine(g: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """The random-effects aggregate of tasks' standardised effects ``g`` (with ``n`` paired
    seeds each; module doc): ``diff`` (the mean effect), ``se`` (its Hartung–Knapp–Sidik–
    Jonkman standard error; the interval is diff ± t(k − 1)·se), ``k``, ``p`` (the t-test of
    no effect on k − 1 degrees of freedom), ``tau2`` (between-task variance), ``q`` and
    ``p_heterogeneity`` (Cochran's Q test that every task has the same effect), and
    ``result``, statsmodels' own (its ``conf_int(alpha, use_t=True)[3]`` is the interval)."""
    from statsmodels.stats.meta_analysis import combine_effects

    g, n = np.asarray(g, float), np.asarray(n, float)
    k = len(g)
    with warnings.catch_warnings():  # a tau² of 0 or equal estimates: nothing to warn about
        warnings.simplefilter("ignore")
        pooled = combine_effects(g, 1 / n, method_re=METHOD_RE, use_t=True)
        spread = combine_effects(g, 1 / n + g ** 2 / (2 * n), method_re=METHOD_RE)
    se = float(np.sqrt(pooled.var_hksj_re))
    diff = float(pooled.mean_effect_re)
    p = float(2 * stats.t.sf(abs(diff) / se, k - 1)) if se > 0 else (
        1.0 if diff == 0 else 0.0)
    homogeneity = spread.test_homogeneity()
    return {"diff": diff, "se": se, "k": k, "p": p, "tau2": float(pooled.tau2),
            "q": float(homogeneity.statistic), "p_heterogeneity": float(homogeneity.pvalue),
            "result": pooled}


def task_family(results: pd.DataFrame, spec: ReportSpec, alpha: float = ALPHA) -> pd.DataFrame:
    """Each task's family of effects and each effect across tasks, decided together (module
    doc). One row per (task, effect), in the tasks' order, then one per effect across tasks
    (``task`` = :data:`ACROSS`), with the columns of :func:`ablate.stats.effects.effects`
    plus ``task``; an aggregate row's ``diff``, ``ci_low`` and ``ci_high`` are standardised
    (g_z), ``n_pairs`` counts tasks, and it has ``p_heterogeneity`` (adjusted:
    ``p_heterogeneity_adj``), ``tau2``, ``helps_on``, ``hurts_on`` and ``n_tasks`` (tasks that
    ran the effect). Empty when no task has anything to compare."""
    parts, dominants = [], {}
    for task in spec.tasks:
        rows = of_task(results, task)
        if baseline_variant(rows) is None or rows["variant"].nunique() < 2:
            continue
        design = design_contrasts(rows, task_spec(spec, task))
        # the first screen's effects: a factorial's simple effects are not shown, so not tested
        contrasts = [c for c in design.contrasts if c.kind != "simple"]
        if not contrasts:
            continue
        parts.append(estimate(contrasts, design.values, design.outcome)
                     .assign(**{TASK: task}))
        dominants[task] = design.dominant
    if not parts:
        return pd.DataFrame()
    per_task = pd.concat(parts, ignore_index=True)
    per_task["g"] = standardised(per_task["diff"], per_task["sd"], per_task["n_pairs"])
    tested = np.isfinite(per_task["p"].to_numpy(float))
    per_task.loc[~tested, "g"] = np.nan
    across = _aggregates(per_task, spec)
    return _decided(per_task, across, spec, alpha, dominants)


def _aggregates(per_task: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """One row per effect the tasks share (in the first task's order), combined (module
    doc): not tested with fewer than :data:`MIN_TASKS` tasks that tested it."""
    rows = []
    shared = per_task[per_task["kind"].isin(AGGREGATED)]
    for (kind, term), group in shared.groupby(["kind", "term"], sort=False):
        used = group[np.isfinite(group["g"])]
        row = {"kind": kind, "term": term, "factor": group["factor"].iloc[0],
               "variant": "", "reference": group["reference"].iloc[0],
               "meaning": group["meaning"].iloc[0], "within": "", TASK: ACROSS,
               "n_seeds": len(group), "n_partial": 0, "lost_diverged": 0, "lost_failed": 0,
               "lost_missing": len(group) - len(used), "unstable": "", "all_lost": "",
               "n_pairs": len(used), "sd": np.nan, "tied": False, "scale": np.nan,
               "hedges_g": np.nan, "diff": np.nan, "se": np.nan, "p": np.nan, "g": np.nan,
               "tau2": np.nan, "q": np.nan, "p_heterogeneity": np.nan,
               "n_tasks": len(group)}
        if len(used) >= MIN_TASKS:
            combined = combine(used["g"].to_numpy(float), used["n_pairs"].to_numpy(float))
            combined.pop("result")
            row.update(combined, n_pairs=combined.pop("k"))
            row["g"] = row["diff"]
        rows.append(row)
    return pd.DataFrame(rows)


def _decided(per_task: pd.DataFrame, across: pd.DataFrame, spec: ReportSpec, alpha: float,
             dominants: dict[str, str | None]) -> pd.DataFrame:
    """One step-down over every claim (module doc), the deciding intervals and verdicts."""
    n_task, n_across = len(per_task), len(across)
    p_het = across["p_heterogeneity"].to_numpy(float) if n_across else np.empty(0)
    p_diff = np.concatenate([per_task["p"].to_numpy(float),
                             across["p"].to_numpy(float) if n_across else np.empty(0), p_het])
    p_equiv = np.full(len(p_diff), np.nan)
    p_equiv[:n_task] = [equivalence_p(d, e, int(k), spec.min_effect) if np.isfinite(p)
                        else np.nan for d, e, k, p in zip(per_task["diff"], per_task["se"],
                                                          per_task["n_pairs"], per_task["p"])]
    adjusted, adjusted_equiv, level = step_down_claims(p_diff, p_equiv, alpha)
    family = pd.concat([per_task, across], ignore_index=True)
    m = n_task + n_across
    n = family["n_pairs"].to_numpy(int)
    half = stats.t.isf(level[:m] / 2, np.maximum(n - 1, 1)) * family["se"].to_numpy(float)
    family = family.assign(p_holm=adjusted[:m], p_equiv_adj=adjusted_equiv[:m],
                           confidence=1 - level[:m], ci_low=family["diff"] - half,
                           ci_high=family["diff"] + half)
    verdicts = []
    for i, row in family.iterrows():
        min_effect = spec.min_effect if row[TASK] != ACROSS else None
        verdicts.append(judge(row["kind"], row["all_lost"], row["unstable"],
                              bool(np.isfinite(row["p"])), row["ci_low"], row["ci_high"],
                              row["diff"], spec.mode, min_effect))
    family["verdict"] = [v for v, _ in verdicts]
    family["outcome"] = [o for _, o in verdicts]
    family["p_heterogeneity_adj"] = np.nan
    if n_across:
        family.loc[n_task:, "p_heterogeneity_adj"] = adjusted[m:]
    family = _task_dependent(family, alpha)
    family["reason"] = [_reason(r) if r["outcome"] == Verdict.NOT_ENOUGH_DATA else ""
                        for _, r in family.iterrows()]
    family = family.assign(**fragility(family, alpha, spec.min_effect), family=MAIN_FAMILY)
    family.loc[family[TASK] == ACROSS, "more_seeds"] = np.nan  # more tasks, not seeds
    return _with_dependencies(family, spec, dominants)


def _task_dependent(family: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Each aggregate's ``helps_on``/``hurts_on`` (tasks deciding each way) and its verdict
    *task-dependent* where the homogeneity test rejects or tasks decide opposite ways."""
    family["helps_on"], family["hurts_on"] = np.nan, np.nan
    per_task = family[family[TASK] != ACROSS]
    for i in family.index[family[TASK] == ACROSS]:
        row = family.loc[i]
        mine = per_task[(per_task["kind"] == row["kind"]) & (per_task["term"] == row["term"])]
        decided = mine[mine["outcome"].isin([Verdict.HELPS, Verdict.HURTS,
                                             Verdict.INTERACTION_FOUND])]
        signs = set(np.sign(decided["diff"]))
        family.loc[i, "helps_on"] = int((mine["outcome"] == Verdict.HELPS).sum())
        family.loc[i, "hurts_on"] = int((mine["outcome"] == Verdict.HURTS).sum())
        heterogeneous = row["p_heterogeneity_adj"] < alpha
        if not (heterogeneous or len(signs) > 1):
            continue
        way = row["outcome"] if row["outcome"] in (Verdict.HELPS, Verdict.HURTS) else None
        family.loc[i, "outcome"] = Verdict.TASK_DEPENDENT.value
        family.loc[i, "verdict"] = Verdict.TASK_DEPENDENT.value + (
            f"; {way} across tasks" if way else "")
    return family


def _reason(row: pd.Series) -> str:
    if row[TASK] == ACROSS:
        return (f"tested on {int(row['n_pairs'])} of {int(row['n_tasks'])} tasks; "
                f"{MIN_TASKS} are needed")
    return untested_reason(int(row["n_pairs"]), bool(row["tied"]),
                           0.0 if abs(row["diff"]) <= 1e-6 * row["scale"] else row["diff"])


def _with_dependencies(family: pd.DataFrame, spec: ReportSpec,
                       dominants: dict[str, str | None]) -> pd.DataFrame:
    """``depends`` and ``crossover`` of each task's main effects (within that task, as a
    study of its own would say them); empty for aggregates."""
    parts = []
    for task, dominant in dominants.items():
        rows = family[family[TASK] == task]
        parts.append(dependencies(rows, task_spec(spec, task), dominant))
    extra = pd.concat(parts) if parts else pd.DataFrame(columns=["depends", "crossover"])
    return family.join(extra.reindex(family.index).fillna(""))

