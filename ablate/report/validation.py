"""Checks of the statistics on simulated studies with planted effects (and none).

Every simulated trial's final value is ``0.5 + planted effect + noise`` with noise SD 1, half of
its variance shared by all variants on the same seed (correlation 0.5, as when seeds fix data
order and initialisation), so paired differences have SD 1 as well.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
import pandas as pd

from ablate.report.effects import effects
from ablate.report.spec import ReportSpec
from ablate.report.stats import compare


def simulate(
    effects: dict[str, float], n_seeds: int, rng: np.random.Generator, mode: str = "max"
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
        calls = compare(*simulate(null, 5, rng))["verdict"] != "no clear effect"
        false_calls += int(calls.sum())
        family_errors += bool(calls.any())
        row = compare(*simulate(planted, 10, rng)).iloc[0]
        detected += bool(row["verdict"] == "helps")
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
    """Family-wise error rate and power of :func:`ablate.report.effects.effects`, by simulation.

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
        errors += bool((null["outcome"] != "no clear effect").any())
        family = len(null)
        planted = effects(
            *simulate_factorial(lambda cell: float(cell["a"]), FACTORIAL, n_seeds, rng)
        ).set_index("term")
        detected += bool(planted.loc["a: 0 → 1", "outcome"] == "helps")
    return {
        "reps": reps,
        "seeds": n_seeds,
        "tests_per_study": family,
        "familywise_error_rate": errors / reps,
        "power": detected / reps,
    }
