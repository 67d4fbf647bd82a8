"""ablate: ablation studies for PyTorch.

Define a :class:`Study` in Python, train every variant with fixed seeds (``ablate run``), compare
the runs in MLflow and write a markdown report with honest statistics (``ablate report``).

``import ablate`` is light: it loads the study definition only. torch, MLflow, Ray and the
plotting stack load when the part that needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ablate.protocols import TrainFn
from ablate.source import load_study
from ablate.status import Status
from ablate.study import Study, Trial, Variant
from ablate.tuning import Tuning
from ablate.validate import StudyError

if TYPE_CHECKING:  # loaded on first use (below): they import torch or MLflow
    from ablate.track import history, results
    from ablate.train.run import Diverged, Run

__version__ = "0.1.0"

__all__ = ["Study", "StudyError", "Trial", "Tuning", "Variant", "load_study", "results", "history",
           "Diverged", "Run", "TrainFn", "Status", "__version__"]

_LAZY = {
    "results": ("ablate.track", "results"),
    "history": ("ablate.track", "history"),
    "Diverged": ("ablate.train.run", "Diverged"),
    "Run": ("ablate.train.run", "Run"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")
