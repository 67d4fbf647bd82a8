"""Turn per-trial study results into figures and a markdown report.

The statistics the report shows are computed by :mod:`ablate.stats`. Importing this package loads
pandas and scipy only; statsmodels, optuna, seaborn and matplotlib are imported inside the
functions that need them.
"""

from ablate.report.markdown import write_report
from ablate.report.plots import (
    activation_plot,
    budget_plot,
    cost_plot,
    forest_plot,
    importance_plot,
    interaction_plot,
    learning_curves,
    seed_plot,
)

__all__ = [
    "activation_plot",
    "budget_plot",
    "cost_plot",
    "forest_plot",
    "importance_plot",
    "interaction_plot",
    "learning_curves",
    "seed_plot",
    "write_report",
]
