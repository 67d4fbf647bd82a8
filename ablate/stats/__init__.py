"""The statistics of a study's results: pure functions over the per-trial results table.

Which trials count (:mod:`~ablate.stats.trials`); paired contrasts, the step-down and the
intervals that decide verdicts (:mod:`~ablate.stats.inference`); the design's family of effects
(:mod:`~ablate.stats.effects`); summaries, comparisons with the baseline, ANOVA and importance
(:mod:`~ablate.stats.compare`); group-sequential boundaries and the adaptive schedule
(:mod:`~ablate.stats.boundaries`, :mod:`~ablate.stats.sequential`); several tasks, per task and
across them (:mod:`~ablate.stats.tasks`); the one vocabulary of
verdicts (:mod:`~ablate.stats.verdict`); checks of all of it on simulated studies
(:mod:`~ablate.stats.validation`).

This package sits below the report and the executors, which both read it, and imports neither
(nor plotting, MLflow or Ray). Importing it loads numpy, pandas and scipy only; statsmodels and
optuna are imported inside the functions that need them.
"""

from ablate.stats.compare import compare, factorial_effects, importance, summarize
from ablate.stats.effects import effects
from ablate.stats.sequential import Schedule, schedule, scheduled
from ablate.stats.spec import ALPHA, ReportSpec, spec_from_study
from ablate.stats.validation import (
    adaptive_consistency,
    factorial_error_rates,
    planted_effect_figures,
    sequential_error_rates,
    task_error_rates,
)
from ablate.stats.verdict import Verdict

__all__ = [
    "ALPHA",
    "ReportSpec",
    "Schedule",
    "Verdict",
    "adaptive_consistency",
    "compare",
    "effects",
    "factorial_effects",
    "factorial_error_rates",
    "importance",
    "planted_effect_figures",
    "schedule",
    "scheduled",
    "sequential_error_rates",
    "spec_from_study",
    "summarize",
    "task_error_rates",
]
