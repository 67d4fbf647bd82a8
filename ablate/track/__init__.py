"""MLflow: the only package that imports it; one module per job, the public names here.

Layout (a contract, see README "How it works"):

* experiment = study name, tagged ``mlflow.experimentKind=custom_model_development`` (MLflow's
  "machine learning" kind; MLflow 3's UI picks its view from the URL's ``workflowType``);
* one parent run per plan (tag ``ablate.role=study``, ``ablate.plan`` = the plan's id, a hash
  of its variant ids and seeds; ``ablate.plan_status`` = ``current`` for the plan run last,
  ``superseded`` for the others); its params are the baseline's resolved config;
* one nested child run per trial (tag ``ablate.role=trial``) with tags ``ablate.study``,
  ``ablate.variant``, ``ablate.label``, ``ablate.seed``, ``ablate.status``, ``ablate.baseline``,
  ``ablate.plan`` (the plan that first trained it), ``ablate.code`` (the code fingerprint),
  ``ablate.data`` (the data fingerprint), ``ablate.kept`` (reused with --keep-changed) and
  ``ablate.env.*`` (what it was trained with); params = every resolved config key; per-epoch
  metrics with ``step=epoch``; summary metrics ``final_<metric>``, ``best_<metric>``,
  ``n_params``, ``flops_per_sample``, ``train_seconds``, ``peak_mem_mb``, ``epochs``.

A trial is (variant id, seed) in the whole experiment: a plan reuses the trials an earlier plan
trained when their ids match, and every read (resume, summary, report) takes exactly the trials
of the current plan. A run tagged ``ablate.replaced=true`` (its code changed and the user chose
``--rerun-changed``) is kept but never read again.

Modules: :mod:`~ablate.track.store` (the store's URI, sqlite creation, failures),
:mod:`~ablate.track.records` (statuses, a trial's record, one run per trial),
:mod:`~ablate.track.params` (config values as params), :mod:`~ablate.track.summary` (a variant's
summary, run names, descriptions), :mod:`~ablate.track.ui` (URLs and the saved view),
:mod:`~ablate.track.base` (the connection and shared searches), :mod:`~ablate.track.rows` (the
UI's variant rows), :mod:`~ablate.track.trials` (plan and trial runs from creation to end),
:mod:`~ablate.track.reads` (what reports read), :mod:`~ablate.track.bulk` (histories of many
runs in few calls), :mod:`~ablate.track.tracker` (the Tracker).
"""

from __future__ import annotations

from ablate.track.records import SUMMARY, PlanRuns, TrialRecord
from ablate.track.store import (
    TrackingError,
    bound_http_waits,
    describe_failure,
    quiet_mlflow,
    resolve_uri,
    sqlite_path,
)
from ablate.track.summary import run_names
from ablate.track.tracker import Tracker, history, results
from ablate.track.ui import ranked_url, runs_url, ui_hint, ui_host

# The names used outside this package; the rest are its modules' own.
__all__ = ["SUMMARY", "PlanRuns", "Tracker", "TrackingError", "TrialRecord", "bound_http_waits",
           "describe_failure", "history", "quiet_mlflow", "ranked_url", "resolve_uri", "results",
           "run_names", "runs_url", "sqlite_path", "ui_hint", "ui_host"]
