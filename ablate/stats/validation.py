"""Checks of the statistics on simulated studies with planted effects (and none).

Every simulated trial's final value is ``0.5 + planted effect + noise`` with noise SD 1, half of
its variance shared by all variants on the same seed (correlation 0.5, as when seeds fix data
order and initialisation), so paired differences have SD 1 as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import product
from typing import Any, Literal

import numpy as np
import pandas as pd

from ablate.design import short_names
from ablate.stats.boundaries import Looks, adaptive_looks
from ablate.stats.compare import compare
from ablate.stats.effects import _one_at_a_time, cell_levels, effects
from ablate.stats.inference import decide, estimate, intervals, judge, paired_stats
from ablate.stats.sequential import MAX_SEEDS, Schedule, replay, rules, scheduled
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.trials import grids
from ablate.stats.verdict import Verdict


def simulate(
    effects: dict[str, float], n_seeds: int, rng: np.random.Generator,
    mode: Literal["max", "min"] = "max",
) -> tuple[pd.DataFrame, ReportSpec]:
    """Results and spec of a one-factor one-at-a-time study; the first variant is the baseline."""
    seed_noise = rng.normal(0.0, np.sqrt(0.5), n_seeds)
    rows = [
        {
            "run_id": f"{v}-{s}",
            "variant": v,
            "label": v,
            "baseline": i == 0,
            "seed": s,
            "status": "finished",
            "factor": v,
            "final": 0.5 + effect + seed_noise[s] + rng.normal(0.0, np.sqrt(0.5)),
        }
        for i, (v, effect) in enumerate(effects.items())
        for s in range(n_seeds)
    ]
    levels = list(effects)
    spec = ReportSpec(
        name="simulated",
        metric="final",
        mode=mode,
        design="one_at_a_time",
        factors={"factor": levels},
        baseline={"factor": levels[0]},
        seeds=list(range(n_seeds)),
        n_variants=len(levels),
    )
    return pd.DataFrame(rows), spec


def planted_effect_figures(reps: int = 400, seed: int = 0) -> dict:
    """False-positive rate, power and CI coverage of :func:`compare`, by simulation.

    * ``false_positive_rate``: share of comparisons called helps/hurts in A/A studies (a factor
      with three null levels besides the baseline, 5 seeds, Holm across the 3 comparisons);
      ``familywise_error_rate``: share of those studies with at least one such call.
    * ``power``: share of studies with a planted effect of one noise SD (10 seeds) called
      ``helps`` (the correct direction).
    * ``ci_coverage``: share of those studies whose 95% CI of the paired difference covers the
      planted difference.
    """
    rng = np.random.default_rng(seed)
    null = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    planted = {"base": 0.0, "treated": 1.0}
    false_calls, family_errors, detected, covered = 0, 0, 0, 0
    for _ in range(reps):
        calls = compare(*simulate(null, 5, rng))["verdict"] != Verdict.NO_CLEAR_EFFECT
        false_calls += int(calls.sum())
        family_errors += bool(calls.any())
        row = compare(*simulate(planted, 10, rng)).iloc[0]
        detected += bool(row["verdict"] == Verdict.HELPS)
        covered += bool(row["ci_low"] <= planted["treated"] <= row["ci_high"])
    return {
        "reps": reps,
        "false_positive_rate": false_calls / (3 * reps),
        "familywise_error_rate": family_errors / reps,
        "power": detected / reps,
        "ci_coverage": covered / reps,
    }


def simulate_factorial(
    effect: Callable[[dict], float],
    factors: dict[str, list],
    n_seeds: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, ReportSpec]:
    """Results and spec of a full factorial: ``final = 0.5 + effect(levels) + noise``.

    The first level of each factor is the baseline's; the first cell is the baseline.
    """
    cells = [dict(zip(factors, levels)) for levels in product(*factors.values())]
    seed_noise = rng.normal(0.0, np.sqrt(0.5), n_seeds)
    rows = [
        {
            "run_id": f"v{i}-{s}",
            "variant": f"v{i}",
            "label": ",".join(f"{k}={v}" for k, v in cell.items() if v != factors[k][0])
            or "baseline",
            "baseline": i == 0,
            "seed": s,
            "status": "finished",
            **cell,
            "final": 0.5 + effect(cell) + seed_noise[s] + rng.normal(0.0, np.sqrt(0.5)),
        }
        for i, cell in enumerate(cells)
        for s in range(n_seeds)
    ]
    spec = ReportSpec(
        name="simulated-factorial",
        metric="final",
        mode="max",
        design="full_factorial",
        factors={k: list(v) for k, v in factors.items()},
        baseline={k: v[0] for k, v in factors.items()},
        seeds=list(range(n_seeds)),
        n_variants=len(cells),
    )
    return pd.DataFrame(rows), spec


FACTORIAL = {"a": [0, 1], "b": [0, 1], "c": [0, 1, 2]}


def factorial_error_rates(reps: int = 200, seed: int = 0, n_seeds: int = 5) -> dict:
    """Family-wise error rate and power of :func:`ablate.stats.effects.effects`, by simulation.

    * ``familywise_error_rate``: share of A/A studies (full factorial of two two-level factors
      and one three-level factor, 12 cells, no effect anywhere) in which any main effect, pair of
      levels, interaction or simple effect gets a verdict other than *no clear effect*.
    * ``tests_per_study``: the size of that family (one Holm correction over all of it).
    * ``power``: share of studies with a main effect of factor ``a`` of one noise SD planted
      (everything else null) in which ``a: 0 → 1`` is called *helps*.
    """
    rng = np.random.default_rng(seed)
    errors, detected, family = 0, 0, 0
    for _ in range(reps):
        null = effects(*simulate_factorial(lambda cell: 0.0, FACTORIAL, n_seeds, rng))
        errors += bool((null["outcome"] != Verdict.NO_CLEAR_EFFECT).any())
        family = len(null)
        planted = effects(
            *simulate_factorial(lambda cell: float(cell["a"]), FACTORIAL, n_seeds, rng)
        ).set_index("term")
        detected += bool(planted.loc["a: 0 → 1", "outcome"] == Verdict.HELPS)
    return {
        "reps": reps,
        "seeds": n_seeds,
        "tests_per_study": family,
        "familywise_error_rate": errors / reps,
        "power": detected / reps,
    }


# ------------------------------------------------------------------- adaptive (sequential)
BOUNDS = (3, 12)  # the adaptive studies simulated: min_seeds, max_seeds


def _verdicts_of(diffs: np.ndarray, counts: list[int], min_effect: float | None,
                 looks: Looks) -> dict[str, np.ndarray]:
    """The family of variant-vs-baseline comparisons on each variant's first ``counts`` paired
    differences, decided as :func:`ablate.stats.compare.compare` decides it (``outcome``,
    ``ci_low``, ``ci_high``; arrays, for speed)."""
    est = paired_stats([d[:n] for d, n in zip(diffs, counts)])
    out = intervals(est["diff"], est["se"], est["n_pairs"], est["p"], ALPHA,
                    min_effect=min_effect, looks=looks)
    tested = np.isfinite(est["p"])
    out["outcome"] = np.array([judge("variant", "", "", *row, "max", min_effect)[1] for row in
                               zip(tested, out["ci_low"], out["ci_high"], est["diff"])])
    return out


def simulate_adaptive(
    effects: list[float], rng: np.random.Generator, min_effect: float | None = None,
    looks: Looks | None = None,
) -> tuple[Schedule, dict[str, np.ndarray]]:
    """One adaptive study of the runner's shape (baseline first; noise as :func:`simulate`'s),
    run round by round through :func:`ablate.stats.sequential.replay`: its schedule and its
    final family (each variant's row from the round where it stopped, as the report shows it).
    ``looks``: the group-sequential looks (default), or :data:`FIXED` for naive repeated
    t-tests that treat every look as if it were the only one."""
    looks = adaptive_looks(*BOUNDS) if looks is None else looks
    high = BOUNDS[1]
    values = (0.5 + np.asarray(effects)[:, None] + rng.normal(0.0, np.sqrt(0.5), high)
              + rng.normal(0.0, np.sqrt(0.5), (len(effects), high)))
    diffs = values[1:] - values[0]
    names = [f"v{i}" for i in range(len(effects))]

    def verdicts(counts: dict[str, int]) -> dict[str, dict[str, Any]]:
        family = _verdicts_of(diffs, [counts[v] for v in names[1:]], min_effect, looks)
        return {v: {key: column[i] for key, column in family.items()}
                for i, v in enumerate(names[1:])}

    plan = replay(names, BOUNDS, verdicts)
    keys = ("outcome", "ci_low", "ci_high")
    return plan, {key: np.array([plan.rows[v][key] for v in names[1:]]) for key in keys}


def sequential_error_rates(reps: int = 300, seed: int = 0) -> dict:
    """Error rates, power and cost of adaptive seeds (3 to 12 per variant), by simulation.

    * ``familywise_sequential`` / ``familywise_naive``: share of A/A studies (4 null variants
      against the baseline, no min_effect, so each runs to 12 seeds unless falsely decided)
      with any helps/hurts, with the group-sequential boundaries and with naive Holm-adjusted
      t-tests at every look.
    * ``power``: share of studies with one variant of effect 1 noise SD called helps;
      ``mean_seeds``: its mean seeds; ``coverage``: share whose final interval covers 1;
      ``fixed_seeds_same_power``: the fewest seeds of a fixed design with at least that power
      (``fixed_power``: its power), so ``mean_seeds`` against it is the saving.
    * ``false_negligible``: share of studies (min_effect = 1 SD) calling a variant whose true
      effect is exactly 1 SD negligible.
    """
    rng = np.random.default_rng(seed)
    fixed = Looks()
    aa, naive, helps, covered, seeds, false_negligible = 0, 0, 0, 0, 0, 0
    for _ in range(reps):
        for looks, errors in ((None, "aa"), (fixed, "naive")):
            _, family = simulate_adaptive([0.0] * 5, rng, looks=looks)
            found = bool(np.isin(family["outcome"], [Verdict.HELPS, Verdict.HURTS]).any())
            aa, naive = (aa + found, naive) if errors == "aa" else (aa, naive + found)
        plan, family = simulate_adaptive([0.0, 1.0], rng)
        helps += bool(family["outcome"][0] == Verdict.HELPS)
        covered += bool(family["ci_low"][0] <= 1.0 <= family["ci_high"][0])
        seeds += plan.counts["v1"]
        _, family = simulate_adaptive([0.0, 1.0], rng, min_effect=1.0)
        false_negligible += bool(family["outcome"][0] == Verdict.NEGLIGIBLE)
    power = helps / reps
    n, fixed_power = _fixed_seeds_for(power, rng, reps)
    return {
        "reps": reps, "min_seeds": BOUNDS[0], "max_seeds": BOUNDS[1],
        "familywise_sequential": aa / reps, "familywise_naive": naive / reps,
        "power": power, "mean_seeds": seeds / reps, "coverage": covered / reps,
        "fixed_seeds_same_power": n, "fixed_power": fixed_power,
        "false_negligible": false_negligible / reps,
    }


def _fixed_seeds_for(power: float, rng: np.random.Generator, reps: int) -> tuple[int, float]:
    """The fewest seeds n of a fixed design (one paired t-test, α = 0.05) whose simulated power
    to find a 1-SD effect reaches ``power``, and that power."""
    for n in range(2, 4 * BOUNDS[1]):
        est = paired_stats(list(1.0 + rng.normal(0.0, 1.0, (reps, n))))
        found = float(((est["p"] < ALPHA) & (est["diff"] > 0)).mean())
        if found >= power:
            return n, found
    return 4 * BOUNDS[1], float("nan")


# ------------------------------------------- one family, one decision (the report's own path)
def previous_family(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """What the report decided before the stopping rule and the report shared one family: the
    comparisons with the baseline and the pairs of levels of a one-at-a-time study as one
    family, decided afresh at the final seeds (``results`` and ``spec`` as
    :func:`ablate.stats.sequential.scheduled` returns them). For comparison only."""
    values, outcome = grids(results, spec)
    contrasts = _one_at_a_time(results, cell_levels(results, spec), short_names(spec.factors),
                               spec)
    rule = rules(spec)
    counts = rule.pop("counts")
    return decide(estimate(contrasts, values, outcome, counts), ALPHA, spec.mode, **rule)


CONSISTENCY_EFFECTS = {"base": 0.0, "null": 0.0, "edge": 0.5, "large": 1.0}  # in noise SDs


def adaptive_consistency(reps: int = 200, seed: int = 0, min_effect: float = 0.5) -> dict:
    """Adaptive one-at-a-time studies run through the report's own functions, by simulation.

    Each study is :func:`simulate`'s (noise SD 1 of the paired differences) with the levels of
    :data:`CONSISTENCY_EFFECTS` (a null one, one at exactly ``min_effect``, one at twice it),
    3 to 12 seeds, ``min_effect`` set; its schedule, comparisons with the baseline and first
    table come from :func:`ablate.stats.sequential.scheduled`, :func:`compare` and
    :func:`effects`, as ``ablate report`` makes them. A second set of ``reps`` A/A studies (4
    null levels, no min_effect) measures the family-wise error rate.

    * ``stops``: variants stopped on a decision; ``disagreements``: those whose verdict in the
      report (the variant table or the first table) is not the one they stopped on, or whose
      "max_seeds reached" row is decided (should be 0); ``old_disagreements``: the same count
      for the previous report, which decided one family of the comparisons with the baseline
      and the pairs of levels at the final seeds.
    * ``false_claims``: share of studies with a false claim among the comparisons with the
      baseline (helps/hurts of the null level or in the wrong direction; negligible of a level
      whose effect is at least ``min_effect``); ``aa_familywise``: share of A/A studies with
      any helps/hurts; ``power``: share calling the large level helps; each for this report
      and ``old_…`` for the previous one, on the same studies.
    * ``…_ci``: 95% Clopper–Pearson intervals of each share (``scipy.stats.binomtest``).
    """
    from scipy.stats import binomtest

    rng = np.random.default_rng(seed)
    truth = {v: e for v, e in CONSISTENCY_EFFECTS.items() if v != "base"}
    claims = [Verdict.HELPS.value, Verdict.HURTS.value]
    counts = dict.fromkeys(["stops", "disagreements", "old_disagreements", "false_claims",
                            "old_false_claims", "power", "old_power", "aa_familywise",
                            "old_aa_familywise"], 0)

    def wrong(outcome: str, effect: float) -> bool:
        if outcome in claims:
            return effect == 0 or (outcome == Verdict.HELPS) != (effect > 0)
        return outcome == Verdict.NEGLIGIBLE and abs(effect) >= min_effect

    def disagree(outcome: str, why: str) -> bool:
        return Verdict(outcome).decided if why == MAX_SEEDS else outcome != why

    for _ in range(reps):
        results, spec = simulate(CONSISTENCY_EFFECTS, BOUNDS[1], rng)
        cut, cut_spec = scheduled(results, replace(spec, min_effect=min_effect,
                                                   adaptive=BOUNDS))
        table = compare(cut, cut_spec).set_index("variant")
        first = effects(cut, cut_spec)
        first = first[first["kind"] == "variant"].set_index("variant")
        old = previous_family(cut, cut_spec)
        old = old[old["kind"] == "variant"].set_index("variant")
        for v, why in cut_spec.stops.items():
            counts["stops"] += why != MAX_SEEDS
            counts["disagreements"] += (disagree(table.loc[v, "outcome"], why)
                                        or disagree(first.loc[v, "outcome"], why))
            counts["old_disagreements"] += disagree(old.loc[v, "outcome"], why)
        for frame, prefix in ((table, ""), (old, "old_")):
            counts[f"{prefix}false_claims"] += any(wrong(frame.loc[v, "outcome"], e)
                                                   for v, e in truth.items())
            counts[f"{prefix}power"] += frame.loc["large", "outcome"] == Verdict.HELPS
        null = {"base": 0.0, "a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
        results, spec = simulate(null, BOUNDS[1], rng)
        cut, cut_spec = scheduled(results, replace(spec, adaptive=BOUNDS))
        counts["aa_familywise"] += compare(cut, cut_spec)["outcome"].isin(claims).any()
        old = previous_family(cut, cut_spec)
        counts["old_aa_familywise"] += old.loc[old["kind"] == "variant",
                                               "outcome"].isin(claims).any()

    out: dict[str, Any] = {"reps": reps, "min_seeds": BOUNDS[0], "max_seeds": BOUNDS[1],
                           "min_effect": min_effect}
    out |= {key: int(counts[key]) for key in ("stops", "disagreements", "old_disagreements")}
    for key in ("false_claims", "old_false_claims", "aa_familywise", "old_aa_familywise",
                "power", "old_power"):
        k = int(counts[key])
        ci = binomtest(k, reps).proportion_ci(0.95, method="exact")
        out[key], out[f"{key}_ci"] = k / reps, (round(ci.low, 4), round(ci.high, 4))
    return out


def simulate_tasks(
    planted: dict[str, list[float]], n_seeds: int, rng: np.random.Generator,
    scales: list[float] | None = None,
) -> tuple[pd.DataFrame, ReportSpec]:
    """Results and spec of a one-at-a-time study on several tasks: ``planted`` maps each
    changed level to its effect on every task (in noise SDs of the paired differences), and
    task t's values are ``scales[t]`` times those of :func:`simulate` (tasks measure in
    different units: standardising makes that irrelevant)."""
    n_tasks = len(next(iter(planted.values())))
    scales = scales or [1.0] * n_tasks
    frames = []
    for t in range(n_tasks):
        effects = {"base": 0.0, **{v: e[t] for v, e in planted.items()}}
        frame, spec = simulate(effects, n_seeds, rng)
        frame["final"] *= scales[t]
        frames.append(frame.assign(task=f"t{t}", variant=f"t{t}-" + frame["variant"],
                                   run_id=f"t{t}-" + frame["run_id"]))
    names = [f"t{t}" for t in range(n_tasks)]
    spec = replace(spec, n_variants=(len(planted) + 1) * n_tasks, tasks=names,
                   task_variants=dict.fromkeys(names, len(planted) + 1))
    return pd.concat(frames, ignore_index=True), spec


TASK_SCENARIOS = {  # planted effect on each of 3 tasks, in SDs of the paired differences
    "no effect": [0.0, 0.0, 0.0],
    "the same effect on every task": [1.0, 1.0, 1.0],
    "an effect on one task only": [2.0, 0.0, 0.0],
    "opposite effects": [1.5, -1.5, 0.0],
}


def task_error_rates(reps: int = 1000, n_seeds: int = 5, seed: int = 0) -> pd.DataFrame:
    """How the across-task verdicts of :func:`ablate.stats.tasks.task_family` behave, by
    simulation: ``reps`` studies per scenario of :data:`TASK_SCENARIOS` (one change on 3
    tasks measured in units 1, 0.01 and 10 apart, ``n_seeds`` seeds), each decided through the
    report's own function.

    One row per scenario: ``covered_95`` (share of studies whose 95% Hartung–Knapp interval
    covers the tasks' mean planted effect), ``covered_normal`` (the same estimate's usual 95%
    normal random-effects interval, for comparison), ``covered_report`` (the same for the
    interval the report shows, at its step's level), ``aggregate_claims`` (share whose
    aggregate interval excludes 0: helps or hurts, or task-dependent saying which way across
    tasks), ``wrong_way`` (share whose aggregate interval excludes 0 against the sign of the
    mean planted effect, or at all where that mean is 0), ``task_dependent``
    (share called task-dependent), ``false_claims`` (share of studies making any claim that is
    false: a per-task helps/hurts where nothing was planted or the other way, an aggregate
    claim the wrong way or with nothing planted, task-dependent where every task has the same
    effect), each with its 95% Clopper–Pearson interval (``*_low``, ``*_high``).
    """
    from statsmodels.stats.proportion import proportion_confint

    from ablate.stats.tasks import ACROSS, TASK, combine, task_family

    rng = np.random.default_rng(seed)
    out = []
    for name, planted in TASK_SCENARIOS.items():
        truth = float(np.mean(planted))
        same = len(set(planted)) == 1
        counts = dict.fromkeys(["covered_95", "covered_normal", "covered_report",
                                "aggregate_claims",
                                "wrong_way", "task_dependent", "false_claims"], 0)
        for _ in range(reps):
            results, spec = simulate_tasks({"changed": planted}, n_seeds, rng, [1.0, 0.01, 10.0])
            family = task_family(results, spec)
            tasks = family[family[TASK] != ACROSS]
            across = family[family[TASK] == ACROSS].iloc[0]
            result = combine(tasks["g"].to_numpy(float),
                             tasks["n_pairs"].to_numpy(float))["result"]
            low, high = result.conf_int(alpha=0.05, use_t=True)[3]
            counts["covered_95"] += bool(low <= truth <= high)
            low, high = result.conf_int(alpha=0.05, use_t=False)[1]
            counts["covered_normal"] += bool(low <= truth <= high)
            counts["covered_report"] += bool(across["ci_low"] <= truth <= across["ci_high"])
            way = np.sign(across["diff"]) if (across["ci_low"] > 0 or across["ci_high"] < 0) \
                else 0.0
            counts["aggregate_claims"] += bool(way)
            wrong = bool(way) and way != np.sign(truth)
            counts["wrong_way"] += wrong
            dependent = across["outcome"] == Verdict.TASK_DEPENDENT
            counts["task_dependent"] += bool(dependent)
            decided = tasks["outcome"].isin([Verdict.HELPS, Verdict.HURTS])
            per_task_false = any(d and np.sign(diff) != np.sign(p) for d, diff, p in
                                 zip(decided, tasks["diff"], planted))
            counts["false_claims"] += bool(per_task_false or wrong or (dependent and same))
        row: dict[str, Any] = {"scenario": name, "planted": planted, "seeds": n_seeds,
                               "reps": reps}
        for key, k in counts.items():
            low, high = proportion_confint(k, reps, alpha=0.05, method="beta")
            row |= {key: k / reps, f"{key}_low": float(low), f"{key}_high": float(high)}
        out.append(row)
    return pd.DataFrame(out)
