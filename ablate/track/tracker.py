"""The Tracker: everything ablate reads from and writes to one store, and the read-only API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.track.reads import RunReader
from ablate.track.trials import RunWriter

if TYPE_CHECKING:
    import pandas as pd

    from ablate.study import Study


class Tracker(RunWriter, RunReader):
    """Reads and writes one study's runs in one tracking store: the plan's and its trials' runs
    (:class:`~ablate.track.trials.RunWriter`), the UI's variant rows
    (:class:`~ablate.track.rows.VariantRowWriter`) and the reads
    (:class:`~ablate.track.reads.RunReader`), over one connection
    (:class:`~ablate.track.base.TrackerBase`)."""


def results(study: Study, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial of ``study`` read from MLflow alone.

    Columns: ``run_id``, ``variant``, ``label``, ``baseline``, ``seed``, ``status``, one column
    per factor (dotted key), ``final`` and ``best`` (the study metric), ``n_params``,
    ``flops_per_sample``, ``train_seconds``, ``peak_mem_mb``, ``epochs``, ``error``.
    """
    return Tracker(tracking_uri).results(study)


def history(study: Study, tracking_uri: str | None = None) -> pd.DataFrame:
    """Per-epoch metrics of every trial (``run_id``, ``variant``, ``label``, ``seed``, ``key``,
    ``step``, ``value``)."""
    return Tracker(tracking_uri).history(study)
