"""Checks of the comparison statistics on simulated studies with planted effects."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd

from ablate.report.spec import ReportSpec
from ablate.report.stats import compare


def simulate(
    effects: dict[str, float], n_seeds: int, rng: np.random.Generator, mode: str = "max"
) -> tuple[pd.DataFrame, ReportSpec]:
    """Results and spec of a one-factor study: ``final = 0.5 + effect[variant] + noise``.

    The first variant is the baseline. The noise has SD 1 per trial; half of its variance is
    shared by all variants on the same seed (correlation 0.5, as when seeds fix data order and
    initialisation), so the paired differences have SD 1 as well.
    """
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
    gc.freeze()  # statsmodels' Holm calls gc.collect(); keep the existing heap out of it
    try:
        for _ in range(reps):
            calls = compare(*simulate(null, 5, rng))["verdict"] != "no clear effect"
            false_calls += int(calls.sum())
            family_errors += bool(calls.any())
            row = compare(*simulate(planted, 10, rng)).iloc[0]
            detected += bool(row["verdict"] == "helps")
            covered += bool(row["ci_low"] <= planted["treated"] <= row["ci_high"])
    finally:
        gc.unfreeze()
    return {
        "reps": reps,
        "false_positive_rate": false_calls / (3 * reps),
        "familywise_error_rate": family_errors / reps,
        "power": detected / reps,
        "ci_coverage": covered / reps,
    }
