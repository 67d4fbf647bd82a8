"""Turn per-trial study results into statistics, figures and a markdown report.

Importing this package loads pandas and scipy only; statsmodels, optuna, seaborn and matplotlib
are imported inside the functions that need them.
"""

from ablate.report.effects import effects
from ablate.report.markdown import write_report
from ablate.report.plots import (
    activation_plot,
    cost_plot,
    forest_plot,
    importance_plot,
    interaction_plot,
    learning_curves,
    seed_plot,
)
from ablate.report.spec import ReportSpec, spec_from_study
from ablate.report.stats import compare, factorial_effects, importance, summarize
from ablate.report.validation import (
    factorial_error_rates,
    planted_effect_figures,
    sequential_error_rates,
)

__all__ = [
    "ReportSpec",
    "activation_plot",
    "compare",
    "cost_plot",
    "effects",
    "factorial_effects",
    "factorial_error_rates",
    "forest_plot",
    "importance",
    "importance_plot",
    "interaction_plot",
    "learning_curves",
    "planted_effect_figures",
    "seed_plot",
    "sequential_error_rates",
    "spec_from_study",
    "summarize",
    "write_report",
]
