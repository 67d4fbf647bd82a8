"""MLflow: the only module that imports it.

Layout (a contract, see README "How it works"):

* experiment = study name, tagged ``mlflow.experimentKind=custom_model_development`` so MLflow's
  UI opens on the runs table;
* one parent run per plan (tag ``ablate.role=study``, ``ablate.plan`` = the plan's id, a hash
  of its variant ids and seeds; ``ablate.plan_status`` = ``current`` for the plan run last,
  ``superseded`` for the others); its params are the baseline's resolved config;
* one nested child run per trial (tag ``ablate.role=trial``) with tags ``ablate.study``,
  ``ablate.variant``, ``ablate.label``, ``ablate.seed``, ``ablate.status``, ``ablate.baseline``,
  ``ablate.plan`` (the plan that first trained it), ``ablate.code`` (the code fingerprint) and
  ``ablate.env.*`` (what it was trained with); params = every resolved config key; per-epoch
  metrics with ``step=epoch``; summary metrics ``final_<metric>``, ``best_<metric>``,
  ``n_params``, ``flops_per_sample``, ``train_seconds``, ``peak_mem_mb``, ``epochs``.

A trial is (variant id, seed) in the whole experiment: a plan reuses the trials an earlier plan
trained when their ids match, and every read (resume, summary, report) takes exactly the trials
of the current plan. A run tagged ``ablate.replaced=true`` (its code changed and the user chose
``--rerun-changed``) is kept but never read again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from ablate.study import Study, Trial

if TYPE_CHECKING:
    import pandas as pd

STATUSES = ("finished", "diverged", "failed", "running")
DONE = ("finished", "diverged")  # a trial with one of these statuses is never trained again
# What each trial records about the code and machine it was trained with (tags ablate.env.*).
ENVIRONMENT = ("ablate", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn",
               "platform", "cpu", "gpu", "threads", "device")
_MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}
_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch
SUMMARY = ("n_params", "flops_per_sample", "train_seconds", "peak_mem_mb", "epochs")


class TrackingError(RuntimeError):
    """The tracking store can't be used; nothing was trained."""


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    status: str
    code: str = ""  # the code fingerprint it was trained with

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class StudyRuns:
    experiment_id: str
    parent_run_id: str  # the parent run of the plan
    plan: str = ""  # the plan's id
    variants: Mapping[str, str] = field(default_factory=dict)  # variant id -> its variant run


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default."""
    import mlflow

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


class Tracker:
    """Reads and writes one study's runs in one tracking store."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_uri(uri)
        path = sqlite_path(self.uri)
        if path is not None:
            prepare_sqlite_store(path, self.uri)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as exc:  # e.g. an unknown scheme: bogus://x
            raise TrackingError(
                f"can't use the MLflow tracking URI {self.uri!r}: {type(exc).__name__}: "
                f"{_first_line(exc)}. Fix: pass --tracking-uri sqlite:///mlflow.db (a local "
                f"file), http://HOST:PORT (a tracking server) or a folder; nothing was written."
            ) from None

    # ----------------------------------------------------------------------------- setup
    def check(self, timeout: float = 10.0) -> None:
        """Fail fast (one try, short timeout) if the store can't be reached or opened."""
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                 "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout))
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise TrackingError(
                f"can't reach the MLflow tracking store {self.uri!r}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}. Fix: start the tracking "
                f"server or pass a reachable --tracking-uri (or unset MLFLOW_TRACKING_URI to use "
                f"the local sqlite default). Nothing was trained."
            ) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def find_study(self, study: Study) -> StudyRuns | None:
        """The experiment and the parent run of the study's current plan, or None."""
        exp = self.client.get_experiment_by_name(study.name)
        if exp is None or exp.lifecycle_stage != "active":
            return None
        parents = self._search(exp.experiment_id, f"tags.`ablate.role` = 'study' and "
                                                  f"tags.`ablate.plan` = '{study.plan}'")
        if not parents:
            return None
        return StudyRuns(exp.experiment_id, parents[0].info.run_id, study.plan)

    def experiment_id(self, study: Study) -> str | None:
        exp = self.client.get_experiment_by_name(study.name)
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None

    def setup_study(self, study: Study) -> StudyRuns:
        """Get or create the experiment and the study's parent run (call under a lock)."""
        exp = self.client.get_experiment_by_name(study.name)
        if exp is not None and exp.lifecycle_stage != "active":
            self.client.restore_experiment(exp.experiment_id)
        if exp is None:
            exp_id = self.client.create_experiment(
                study.name,
                tags={"mlflow.experimentKind": "custom_model_development",
                      "ablate.study": study.name},
            )
        else:
            exp_id = exp.experiment_id
            self.client.set_experiment_tag(exp_id, "mlflow.experimentKind",
                                           "custom_model_development")
        found = self.find_study(study)
        if found is not None:
            parent_id = found.parent_run_id
            self.client.update_run(parent_id, status="RUNNING")
        else:
            parent_id = self.client.create_run(
                exp_id, run_name=f"{study.name} (plan {study.plan})",
                tags={"ablate.role": "study", "ablate.study": study.name,
                      "ablate.plan": study.plan}).info.run_id
            base = {k: v for k, v in study.baseline_variant.config.items()
                    if k not in study.factors}
            params = [Param(k, _param(v)) for k, v in sorted(base.items())]
            for i in range(0, len(params), _PARAM_BATCH):
                self.client.log_batch(parent_id, params=params[i:i + _PARAM_BATCH])
        for other in self._search(exp_id, "tags.`ablate.role` = 'study' and "
                                          "tags.`ablate.plan_status` = 'current'"):
            if other.info.run_id != parent_id:
                self.client.set_tag(other.info.run_id, "ablate.plan_status", "superseded")
        self.client.log_batch(parent_id, tags=[
            RunTag("ablate.plan_status", "current"),
            RunTag("ablate.design", study.design),
            RunTag("ablate.metric", study.metric),
            RunTag("ablate.mode", study.mode),
            RunTag("ablate.factors", _dumps(study.factors)[:5000]),
            RunTag("ablate.seeds", _dumps(list(study.seeds))),
            RunTag("ablate.n_trials", str(len(study.trials))),
            RunTag("ablate.source", str(study.source or "")),
        ])
        return self.prepare_view(study, StudyRuns(exp_id, parent_id, study.plan))

    def finish_study(self, runs: StudyRuns, study: Study, interrupted: bool) -> None:
        """End the parent run: KILLED when this process was interrupted, FINISHED when every
        trial of the plan has ended; left RUNNING while another process still trains some."""
        if interrupted:
            self.client.set_terminated(runs.parent_run_id, "KILLED")
            return
        records = self.trial_records(runs.experiment_id)
        ended = [records.get((t.variant.id, t.seed)) for t in study.trials]
        self.update_summaries(study, runs)
        if all(r is not None and r.status != "running" for r in ended):
            self.client.set_terminated(runs.parent_run_id, "FINISHED")

    # ----------------------------------------------------------------------------- trials
    def trial_records(self, experiment_id: str) -> dict[tuple[str, int], TrialRecord]:
        """Every trial of the experiment, of any plan: (variant id, seed) -> its run."""
        return {key: _record(run) for key, run in self._trial_runs(experiment_id).items()}

    def trial_record(self, runs: StudyRuns, trial: Trial) -> TrialRecord | None:
        flt = (f"tags.`ablate.role` = 'trial' and "
               f"tags.`ablate.variant` = '{trial.variant.id}' and "
               f"tags.`ablate.seed` = '{trial.seed}'")
        found = _pick(r for r in self._search(runs.experiment_id, flt) if not _replaced(r))
        return _record(found[(trial.variant.id, trial.seed)]) if found else None

    def _trial_runs(self, experiment_id: str) -> dict[tuple[str, int], Any]:
        """One run per (variant id, seed) in the experiment (see :func:`_pick`)."""
        return _pick(r for r in self._search(experiment_id, "tags.`ablate.role` = 'trial'")
                     if not _replaced(r))

    def replace_trials(self, records: list[TrialRecord]) -> None:
        """Keep these runs but never read them again (``--rerun-changed``)."""
        for record in records:
            self.client.set_tag(record.run_id, "ablate.replaced", "true")

    def start_trial(self, study: Study, runs: StudyRuns, trial: Trial) -> str:
        """Create the trial's child run with its tags and params; returns the run id."""
        v = trial.variant
        name = run_names(study).get(v.id, v.label)
        return self._child_run(study, runs, trial, f"{name} s{trial.seed}", {
            "ablate.role": "trial",
            "ablate.seed": str(trial.seed),
            "ablate.baseline": "true" if v.baseline else "false",
            "ablate.levels": _dumps(v.levels)[:5000],
            "ablate.plan": runs.plan,
            "ablate.plans": plan_token(runs.plan),
            NOTE: _trial_note(study, trial),
        }, parent=runs.variants.get(v.id) or self._variant_run_id(study, runs, v))

    def start_tuning(self, study: Study, runs: StudyRuns, trial: Trial, number: int) -> str:
        """A child run for one tuning trial of a variant (tag ``ablate.role=tuning``)."""
        name = run_names(study).get(trial.variant.id, trial.variant.label)
        return self._child_run(study, runs, trial, f"tune {name} #{number}", {
            "ablate.role": "tuning",
            "ablate.tune_trial": str(number),
            "ablate.plans": plan_token(runs.plan),
        })

    def _child_run(
        self, study: Study, runs: StudyRuns, trial: Trial, name: str, tags: Mapping[str, str],
        parent: str | None = None,
    ) -> str:
        """A nested run (under ``parent``, else the plan's run) with the common tags and every
        config key as a param."""
        v = trial.variant
        run = self.client.create_run(runs.experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent or runs.parent_run_id,
            "ablate.study": study.name,
            "ablate.variant": v.id,
            "ablate.label": v.label,
            "ablate.status": "running",
            **tags,
        })
        self._log_params(run.info.run_id, trial)
        return run.info.run_id

    def _log_params(self, run_id: str, trial: Trial) -> None:
        """Every resolved config key and the seed (idempotent: the same values again are
        accepted, so a resume can complete a run whose creation a kill interrupted)."""
        params = [Param(k, _param(val)) for k, val in sorted(trial.variant.config.items())]
        params.append(Param("seed", str(trial.seed)))
        for i in range(0, len(params), _PARAM_BATCH):
            self.client.log_batch(run_id, params=params[i:i + _PARAM_BATCH])

    def tuning(self, study: Study) -> pd.DataFrame:
        """One row per tuning trial: variant, label, number, status, final value, tuned params."""
        import pandas as pd

        exp_id = self.experiment_id(study)
        keys = list(study.tune)
        columns = ["run_id", "variant", "label", "number", "status", "value", *keys]
        if exp_id is None or not keys:
            return pd.DataFrame(columns=columns)
        planned = {v.id for v in study.variants}
        rows = []
        for run in self._search(exp_id, "tags.`ablate.role` = 'tuning'"):
            tags, params = run.data.tags, run.data.params
            if tags.get("ablate.variant") not in planned:
                continue
            rows.append({
                "run_id": run.info.run_id,
                "variant": tags["ablate.variant"],
                "label": tags.get("ablate.label", ""),
                "number": int(tags.get("ablate.tune_trial", -1)),
                "status": tags.get("ablate.status", ""),
                "value": run.data.metrics.get(f"final_{study.metric}", float("nan")),
                **{k: _unparam(params[k]) if k in params else None for k in keys},
            })
        df = pd.DataFrame(rows, columns=columns)
        order = {v.id: i for i, v in enumerate(study.variants)}
        df["_order"] = df["variant"].map(order).fillna(len(order))
        return (df.sort_values(["_order", "number"]).drop(columns="_order")
                .reset_index(drop=True))

    def resume_trial(self, study: Study, runs: StudyRuns, trial: Trial, run_id: str) -> int:
        """Mark a trial run running again, with all its tags and params (a kill may have come
        between its creation and its params); returns the last step already logged (-1)."""
        v = trial.variant
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {"ablate.status": "running", "ablate.role": "trial",
                               "ablate.study": study.name, "ablate.label": v.label,
                               "ablate.baseline": "true" if v.baseline else "false",
                               "ablate.levels": _dumps(v.levels)[:5000]})
        self._log_params(run_id, trial)
        keys = [k for k in self.client.get_run(run_id).data.metrics
                if k not in SUMMARY and not k.startswith(("final_", "best_"))]
        if not keys:
            return -1
        return max(m.step for m in self.client.get_metric_history(run_id, keys[0]))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def last_text(self, run_id: str, folder: str) -> str | None:
        """The last (by name) text artifact under ``folder`` of a run, or None."""
        files = sorted(f.path for f in self.client.list_artifacts(run_id, folder) if not f.is_dir)
        if not files:
            return None
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, files[-1], tmp)
            return Path(local).read_text(encoding="utf-8", errors="replace")

    def download(self, run_id: str, artifact: str, folder: Path) -> Path | None:
        """Download one artifact of a run into ``folder``; None if the run has no such file."""
        parent = str(Path(artifact).parent) if "/" in artifact else None
        names = {f.path for f in self.client.list_artifacts(run_id, parent)}
        if artifact not in names:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, artifact, str(folder)))

    def log_report(self, runs: StudyRuns, folder: Path) -> None:
        """Attach the report folder to the study's parent run (artifact path ``report``)."""
        self.client.log_artifacts(runs.parent_run_id, str(folder), "report")

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int, first: str | None = None
    ) -> None:
        """One batched call; ``first`` (the study metric) is logged first, so that a run's
        metrics table in MLflow's UI, which keeps the order of first logging, starts with it."""
        now = int(time.time() * 1000)
        keys = sorted(metrics, key=lambda k: k != first)  # stable: the rest keep their order
        self.client.log_batch(run_id, metrics=[Metric(k, float(metrics[k]), now, step)
                                               for k in keys])

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def end_trial(
        self, run_id: str, status: str, summary: Mapping[str, float], error: str | None = None
    ) -> None:
        """Log summary metrics, the status tag (and traceback), and close the run."""
        now = int(time.time() * 1000)
        tags = [RunTag("ablate.status", status)]
        if error:
            tags.append(RunTag("ablate.error", error.strip().splitlines()[-1][:500]))
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()], tags=tags
        )
        if error:
            self.client.log_text(run_id, error, "traceback.txt")
        self.client.set_terminated(run_id, _MLFLOW_STATUS[status])

    def interrupt_trial(self, run_id: str) -> None:
        """Ctrl-C: the run stays ``ablate.status=running`` (resumable) and is marked KILLED."""
        self.client.set_terminated(run_id, "KILLED")

    # ----------------------------------------------------------------------- the UI's rows
    def prepare_view(self, study: Study, runs: StudyRuns) -> StudyRuns:
        """What MLflow's UI shows for the plan (call under the study's lock, after its run):
        one top-level run per variant (created if missing; trials are nested under it), the
        plan's id in the tag ``ablate.plans`` of every run of the plan (the view's filter), and
        the experiment's saved view that :func:`runs_url` opens."""
        exp_id, plan = runs.experiment_id, runs.plan
        names = run_names(study)
        found = self._variant_runs(exp_id)
        start = int(time.time() * 1000)
        variants: dict[str, str] = {}
        for i, v in enumerate(study.variants):  # start times in the study's order: rows' order
            run = found.get(v.id)
            if run is None:
                variants[v.id] = self._create_variant_run(study, runs, v, names[v.id], start + i)
            else:
                variants[v.id] = run.info.run_id
                self._add_plan(run, plan)
        planned = {(t.variant.id, t.seed) for t in study.trials}
        for key, run in self._trial_runs(exp_id).items():  # trials an earlier plan trained
            if key in planned:
                self._add_plan(run, plan)
        for run in self._search(exp_id, "tags.`ablate.role` = 'tuning'"):
            if run.data.tags.get("ablate.variant") in variants:
                self._add_plan(run, plan)
        self.client.set_tag(runs.parent_run_id, "ablate.plans", plan_token(plan))
        for key, value in {VIEW_TAG + view_key(plan): json.dumps(view_state(study)),
                           "mlflow.experiment.primaryMetric.name": study.metric,
                           NOTE: _experiment_note(study)}.items():
            self.client.set_experiment_tag(exp_id, key, value)
        return replace(runs, variants=variants)

    def current_plans(self) -> list[tuple[str, StudyRuns, bool]]:
        """``(study name, its current plan's runs, whether the plan has its saved view)`` for
        each ablate study in the store (what ``ablate ui`` links to)."""
        out = []
        for exp in self.client.search_experiments(ViewType.ACTIVE_ONLY):
            if "ablate.study" not in exp.tags:
                continue
            plans = self._search(exp.experiment_id, "tags.`ablate.role` = 'study' and "
                                                    "tags.`ablate.plan_status` = 'current'")
            if not plans:
                continue
            newest = max(plans, key=lambda r: r.info.start_time or 0)
            runs = StudyRuns(exp.experiment_id, newest.info.run_id,
                             newest.data.tags.get("ablate.plan", ""))
            out.append((exp.name, runs, VIEW_TAG + view_key(runs.plan) in exp.tags))
        return out

    def _variant_runs(self, experiment_id: str) -> dict[str, Any]:
        """Variant id -> its variant run (the oldest, should two exist)."""
        runs = self._search(experiment_id, "tags.`ablate.role` = 'variant'")
        newest_first = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id),
                              reverse=True)
        return {r.data.tags["ablate.variant"]: r for r in newest_first}

    def _variant_run_id(self, study: Study, runs: StudyRuns, variant: Any) -> str:
        run = self._variant_runs(runs.experiment_id).get(variant.id)
        if run is not None:
            return run.info.run_id
        return self._create_variant_run(study, runs, variant, run_names(study)[variant.id],
                                        int(time.time() * 1000))

    def _create_variant_run(
        self, study: Study, runs: StudyRuns, variant: Any, name: str, start_time: int
    ) -> str:
        run = self.client.create_run(runs.experiment_id, start_time=start_time, run_name=name,
                                     tags={
            "ablate.role": "variant",
            "ablate.study": study.name,
            "ablate.variant": variant.id,
            "ablate.label": variant.label,
            "ablate.baseline": "true" if variant.baseline else "false",
            "ablate.levels": _dumps(variant.levels)[:5000],
            "ablate.plans": plan_token(runs.plan),
            NOTE: _variant_note(study, variant, None, None),
        })
        params = [Param(k, _param(val)) for k, val in sorted(variant.config.items())]
        for i in range(0, len(params), _PARAM_BATCH):
            self.client.log_batch(run.info.run_id, params=params[i:i + _PARAM_BATCH])
        return run.info.run_id

    def _add_plan(self, run: Any, plan: str) -> None:
        plans, token = run.data.tags.get("ablate.plans", "").split(), plan_token(plan)
        if plan and token not in plans:
            self.client.set_tag(run.info.run_id, "ablate.plans", " ".join([*plans, token][-200:]))

    def update_variant(self, study: Study, runs: StudyRuns, variant: Any) -> None:
        """Recompute one variant's row (mean, CI, counts, status) from the store; the process
        that has just ended one of its trials calls this. Its description, which repeats the
        figures in words, is rewritten when the plan ends (one write per trial, ~30 ms)."""
        run_id = runs.variants.get(variant.id)
        run = (self.client.get_run(run_id) if run_id
               else self._variant_runs(runs.experiment_id).get(variant.id))
        if run is None:
            return
        flt = (f"tags.`ablate.role` = 'trial' and "
               f"tags.`ablate.variant` = '{variant.id}'")
        trials = _pick(r for r in self._search(runs.experiment_id, flt) if not _replaced(r))
        self._write_variant(study, variant, run, variant_summary(study, variant, trials),
                            describe=False)

    def update_summaries(self, study: Study, runs: StudyRuns) -> None:
        """Every variant row of the plan and the plan run's own summary, written where they
        changed (when a plan ends, and after ``ablate report`` recorded its verdicts)."""
        exp_id = runs.experiment_id
        trials = self._trial_runs(exp_id)
        variant_runs = self._variant_runs(exp_id)
        summaries, verdicts = {}, {}
        for v in study.variants:
            summaries[v.id] = variant_summary(study, v, trials)
            run = variant_runs.get(v.id)
            if run is not None:
                verdicts[v.id] = self._write_variant(study, v, run, summaries[v.id])
        parent = self.client.get_run(runs.parent_run_id)
        totals = {k: sum(getattr(s, k) for s in summaries.values())
                  for k in ("finished", "diverged", "failed")}
        self._write_changes(parent, {**totals, "trials": len(study.trials),
                                     "variants": len(study.variants)},
                            {NOTE: _study_note(study, summaries, verdicts)})

    def record_verdicts(self, study: Study, runs: StudyRuns, verdicts: Mapping[str, str]) -> None:
        """The report's verdict per variant id onto the variant rows (tag ``ablate.verdict``)."""
        variant_runs = self._variant_runs(runs.experiment_id)
        for variant_id, verdict in verdicts.items():
            run = variant_runs.get(variant_id)
            if run is not None:
                self.set_tags(run.info.run_id, {"ablate.verdict": verdict,
                                                "ablate.verdict_plan": study.plan})
        self.update_summaries(study, runs)

    def _write_variant(
        self, study: Study, variant: Any, run: Any, summary: VariantSummary, describe: bool = True
    ) -> str | None:
        """Write a variant run's summary (and with ``describe`` its description) where it
        changed; returns the verdict it shows."""
        tags = run.data.tags
        verdict = tags.get("ablate.verdict") if tags.get("ablate.verdict_plan") == study.plan \
            else None
        if verdict is None and "ablate.verdict" in tags:  # another plan's verdict
            self.client.delete_tag(run.info.run_id, "ablate.verdict")
        metrics = {key: _shown(value) for key, value in ((study.metric, summary.mean),
                                                         (f"{study.metric}_ci95", summary.ci95))
                   if math.isfinite(value) or key in run.data.metrics}  # first: listed first
        metrics.update(finished=summary.finished, diverged=summary.diverged,
                       failed=summary.failed, seeds=summary.n_seeds)
        self._write_changes(run, metrics, {
            NOTE: _variant_note(study, variant, summary, verdict),
            "ablate.seeds": _dumps(list(study.seeds)),
        } if describe else {})
        status = "FINISHED" if summary.ended == summary.n_seeds else "RUNNING"
        if run.info.status != status:
            if status == "FINISHED":
                self.client.set_terminated(run.info.run_id, "FINISHED")
            else:
                self.client.update_run(run.info.run_id, status="RUNNING")
        return verdict

    def _write_changes(
        self, run: Any, metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None:
        """One batched call with the metrics and tags whose values differ from the run's.

        Summary metrics are logged with the time they were computed (ms) as their step: MLflow
        shows the value of the highest step, so a summary computed earlier but written later
        (two trials of a variant ending at once on Ray) never hides a newer one."""
        now = int(time.time() * 1000)
        old = run.data.metrics
        changed = [Metric(k, float(v), now, now) for k, v in metrics.items()
                   if not (k in old and (old[k] == v or (math.isnan(old[k]) and math.isnan(v))))]
        new_tags = [RunTag(k, v[:7900]) for k, v in tags.items()
                    if run.data.tags.get(k) != v[:7900]]
        if changed or new_tags:
            self.client.log_batch(run.info.run_id, metrics=changed, tags=new_tags)

    def activations(self, run_id: str) -> list[tuple[str, int, float]]:
        """A trial's activation statistics (artifact ``activations.json``, written by the
        built-in loop) as ``(key, step, value)``, keys ``act_mean/<layer>``, ``act_std/<layer>``;
        none for runs without the file."""
        names = {f.path for f in self.client.list_artifacts(run_id)}
        if ACTIVATIONS not in names:
            return []
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, ACTIVATIONS, tmp)
            data = json.loads(Path(local).read_text(encoding="utf-8"))
        return [(key, int(step), float(row[j]))
                for step, row in zip(data["steps"], data["values"])
                for j, key in enumerate(data["keys"])]

    # ----------------------------------------------------------------------------- reading
    def _search(self, experiment_id: str, flt: str) -> list[Any]:
        out: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], flt, ViewType.ACTIVE_ONLY,
                                           max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def results(self, study: Study) -> pd.DataFrame:
        """One row per trial of the study's current plan (see :func:`results`)."""
        import pandas as pd

        columns = ["run_id", "variant", "label", "baseline", "seed", "status", *study.factors,
                   "final", "best", "n_params", "flops_per_sample", "train_seconds",
                   "peak_mem_mb", "epochs", "device", "tuned", "error", "code",
                   *(f"env.{k}" for k in ENVIRONMENT)]
        exp_id = self.experiment_id(study)
        found = self._trial_runs(exp_id) if exp_id is not None else {}
        rows = []
        for trial in study.trials:
            run = found.get((trial.variant.id, trial.seed))
            if run is None:
                continue
            tags, metrics = run.data.tags, run.data.metrics
            levels = json.loads(tags.get("ablate.levels", "{}"))
            rows.append({
                "run_id": run.info.run_id,
                "variant": trial.variant.id,
                "label": tags.get("ablate.label", ""),
                "baseline": tags.get("ablate.baseline") == "true",
                "seed": trial.seed,
                "status": tags.get("ablate.status", ""),
                **{k: _level(levels.get(k)) for k in study.factors},
                "final": metrics.get(f"final_{study.metric}", float("nan")),
                "best": metrics.get(f"best_{study.metric}", float("nan")),
                **{k: metrics.get(k, float("nan")) for k in SUMMARY},
                "device": tags.get("ablate.device", ""),
                "tuned": tags.get("ablate.tuned", ""),
                "error": tags.get("ablate.error", ""),
                "code": tags.get("ablate.code", ""),
                **{f"env.{k}": tags.get(f"ablate.env.{k}", "") for k in ENVIRONMENT},
            })
        return pd.DataFrame(rows, columns=columns)

    def left_out(self, study: Study) -> list[tuple[str, int]]:
        """Trial runs of the experiment outside the current plan, grouped by the settings in
        which they differ from it: ``[(description, run count), ...]``, largest group first."""
        exp_id = self.experiment_id(study)
        if exp_id is None:
            return []
        planned = {(t.variant.id, t.seed) for t in study.trials}
        configs = {v.id: v.config for v in study.variants}
        base = study.baseline_variant.config
        groups: dict[str, int] = {}
        for key, run in self._trial_runs(exp_id).items():
            if key in planned:
                continue
            if key[0] in configs:  # a planned variant on a seed outside the plan
                what = f"seed {key[1]} (not among the plan's seeds)"
            else:
                what = _differences(run.data.params, base, study)
            groups[what] = groups.get(what, 0) + 1
        return sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))

    def history(self, study: Study, keys: list[str] | None = None) -> pd.DataFrame:
        """Per-epoch metrics of every trial run, long format."""
        import pandas as pd

        table = self.results(study)
        rows = []
        skip = {f"final_{study.metric}", f"best_{study.metric}", *SUMMARY}
        for rec in table.itertuples():
            run = self.client.get_run(rec.run_id)
            for key in run.data.metrics:
                if key in skip or (keys is not None and key not in keys):
                    continue
                for m in self.client.get_metric_history(rec.run_id, key):
                    rows.append((rec.run_id, rec.variant, rec.label, rec.seed, key, m.step,
                                 m.value))
            if keys is None or any(k.startswith(ACTIVATION_PREFIXES) for k in keys):
                for key, step, value in self.activations(rec.run_id):
                    if keys is None or key in keys:
                        rows.append((rec.run_id, rec.variant, rec.label, rec.seed, key, step,
                                     value))
        return pd.DataFrame(rows, columns=["run_id", "variant", "label", "seed", "key", "step",
                                           "value"])


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


def _replaced(run: Any) -> bool:
    return run.data.tags.get("ablate.replaced") == "true"


def _pick(runs: Any) -> dict[tuple[str, int], Any]:
    """One run per (variant id, seed): a finished or diverged one if any (the newest of those),
    else the newest. Two runs of one trial only arise from stores written before trials were
    locked, or by a concurrent creation; reads must still be deterministic."""
    best: dict[tuple[str, int], Any] = {}
    for run in runs:
        tags = run.data.tags
        key = (tags["ablate.variant"], int(tags["ablate.seed"]))
        rank = (tags.get("ablate.status") in DONE, run.info.start_time or 0, run.info.run_id)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, run)
    return {k: run for k, (_, run) in best.items()}


def _record(run: Any) -> TrialRecord:
    tags = run.data.tags
    return TrialRecord(run.info.run_id, tags.get("ablate.status", ""), tags.get("ablate.code", ""))


def _differences(params: Mapping[str, str], base: Mapping[str, Any], study: Study) -> str:
    """What a run's settings have that the plan's baseline doesn't (factors aside)."""
    diff = []
    for key in sorted(set(params) | set(base)):
        if key in study.factors or key == "seed":
            continue
        mine = _param(base[key]) if key in base else None
        theirs = params.get(key)
        if mine != theirs:
            diff.append(f"{key}={theirs if theirs is not None else '(unset)'}")
    return ", ".join(diff) if diff else "other factor levels"


# How long a study waits for a tracking server that stopped answering, unless the user set
# these: 3 retries 1, 2 and 4 s apart, 30 s per request (MLflow's defaults wait minutes per
# call, so a study whose server died seemed to hang).
HTTP_WAITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def bound_http_waits() -> None:
    """Apply :data:`HTTP_WAITS` to this process (and the Ray workers it starts)."""
    for key, value in HTTP_WAITS.items():
        os.environ.setdefault(key, value)


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if not rest or rest.startswith(":memory:") else Path(rest)


def prepare_sqlite_store(path: Path, uri: str) -> None:
    """Make sure ``path`` is a complete MLflow sqlite store, or say exactly what is wrong.

    A new store is created and migrated in a temporary file beside ``path``, under a lock that
    every ``ablate`` process on this machine takes for that file, and renamed into place only
    when MLflow's migrations are done: another process, or a kill during the migrations, can
    never see or leave a half-created store. An existing store that is half-created (by an
    older version, or by MLflow itself) is refused with the fix. Raises :class:`TrackingError`.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TrackingError(
            f"tracking store {uri!r}: folder {str(folder)!r} does not exist. Fix: create it, or "
            f"pass another --tracking-uri. Nothing was written."
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TrackingError(
            f"tracking store {uri!r}: {'the file' if path.exists() else 'its folder'} "
            f"{str(path if path.exists() else folder)!r} is not writable (sqlite writes its "
            f"journal beside the file). Fix: pass --tracking-uri sqlite:////WRITABLE/PATH/"
            f"mlflow.db or run from a writable folder. Nothing was written."
        )
    if _complete_store(path, uri):
        return
    from filelock import FileLock

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"ablate-store-{digest}.lock"
    with FileLock(str(lock)):
        if _complete_store(path, uri):  # another process created it while we waited
            return
        for stale in folder.glob(f".{path.name}.creating-*"):  # left by a killed creator
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.creating-")
        os.close(fd)
        try:
            _create_tables(Path(tmp))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _complete_store(path: Path, uri: str) -> bool:
    """True for a complete store; False for none (no file, an empty file, no tables)."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)  # rw: a killed
        # writer may have left a hot journal, which only a read-write connection rolls back
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
            runs = (con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    if "runs" in tables else 0)
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(
            f"tracking store {uri!r} is not a readable sqlite database ({exc}). Fix: pass "
            f"another --tracking-uri, or move {str(path)!r} away if it is not an MLflow store. "
            f"Nothing was written."
        ) from None
    if not tables:
        return False
    half = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if half or "alembic_version" not in tables:
        found = f"table {half[0]!r}" if half else "no 'alembic_version' table"
        raise TrackingError(
            f"tracking store {uri!r} was left half-created: MLflow's table creation was "
            f"interrupted there ({found}; {runs} run(s) recorded). Fix: if you need none of its "
            f"runs, delete {str(path)!r} and run again (ablate creates a new store safely); "
            f"otherwise repair it with `mlflow db upgrade {uri}` on a backup copy. Nothing was "
            f"written."
        )
    return True


def _create_tables(path: Path) -> None:
    """MLflow's schema, migrated to the installed version, in the new file ``path``."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs for a new store

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of the root cause of a store error (MLflow wraps SQLAlchemy, which
    wraps the driver: the driver's words say what happened, e.g. a read-only database)."""
    root = exc
    for _ in range(20):  # a chain is short; the bound only guards against a pathological one
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    for candidate in (root, exc):
        line = _first_line(candidate)
        if line and not line.startswith("(raised as a result of"):
            return f"{type(candidate).__name__}: {line}"
    return type(exc).__name__


UI_HOST = "http://127.0.0.1:5000"  # where `ablate ui` serves by default


def ui_host(uri: str) -> str:
    """Where the UI of a store is: a tracking server's own address, else `ablate ui`'s."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_HOST


def ui_hint(uri: str) -> str:
    """How to serve that URL: `` (serve it: ablate ui ...)`` for a local store (naming the store
    unless it is the default), nothing for a tracking server, which serves its own UI."""
    if uri.startswith(("http://", "https://")):
        return ""
    store = "" if uri == resolve_uri(None) else f" --tracking-uri {shlex.quote(uri)}"
    return f"  (serve it: ablate ui{store})"


def runs_url(runs: StudyRuns, host: str = UI_HOST, view: bool = True) -> str:
    """The plan's runs in MLflow's model-training view, one row per variant (the experiment's
    saved view :func:`view_key`; ``view=False`` for an experiment that has none)."""
    url = (f"{host.rstrip('/')}/#/experiments/{runs.experiment_id}/runs"
           f"?workflowType=machine_learning")
    return url + (f"&viewStateShareKey={view_key(runs.plan)}" if view and runs.plan else "")


def plan_token(plan: str) -> str:
    """How a plan is named in the tag ``ablate.plans`` (the plans a run belongs to)."""
    return f"plan-{plan}"


def view_key(plan: str) -> str:
    """The key of a plan's saved view (experiment tag ``mlflow.sharedViewState.<key>``)."""
    return f"ablate-plan-{plan}"


# ------------------------------------------------------------------------ the UI's rows
NOTE = "mlflow.note.content"  # a run's (or experiment's) description in MLflow's UI
VIEW_TAG = "mlflow.sharedViewState."  # + key: a saved view of the runs page (MLflow 2.9+)
ACTIVATIONS = "activations.json"  # a trial's activation statistics (see Tracker.activations)
ACTIVATION_PREFIXES = ("act_mean/", "act_std/")


@dataclass(frozen=True)
class VariantSummary:
    """A variant over the plan's seeds, as its row shows it and as ``ablate report`` counts:
    the mean, SD and 95% t-interval half-width of the final metric over the *finished* seeds
    (diverged and failed seeds are counted, never averaged)."""

    n_seeds: int
    finished: int
    diverged: int
    failed: int
    running: int
    mean: float
    std: float
    ci95: float  # t(0.975, n-1)·s/√n; NaN with fewer than 2 finished seeds

    @property
    def ended(self) -> int:
        return self.finished + self.diverged + self.failed


def variant_summary(study: Study, variant: Any, trials: Mapping[tuple[str, int], Any]
                    ) -> VariantSummary:
    """The summary of ``variant`` over the plan's seeds (an adaptive round's: those scheduled
    for it) from its trial runs."""
    counts = dict.fromkeys(STATUSES, 0)
    values = []
    seeds = study.seeds_of(variant)
    for seed in seeds:
        run = trials.get((variant.id, seed))
        if run is None:
            continue
        status = run.data.tags.get("ablate.status", "")
        counts[status] = counts.get(status, 0) + 1
        value = run.data.metrics.get(f"final_{study.metric}")
        if status == "finished" and value is not None and math.isfinite(value):
            values.append(float(value))
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = ci = math.nan
    if n >= 2:
        from scipy import stats

        std = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
        ci = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return VariantSummary(len(seeds), counts["finished"], counts["diverged"],
                          counts["failed"], counts["running"], mean, std, ci)


def run_names(study: Study) -> dict[str, str]:
    """Variant id -> a short run name, distinct within the study: the changed factors
    abbreviated (``bn=off ks=5``), ``baseline`` for the baseline. Trial runs add `` s<seed>``."""
    abbr = _abbreviations(list(study.factors))
    names = {}
    for v in study.variants:
        parts = [f"{abbr[k]}={_short_value(x)}" for k, x in v.levels.items()
                 if _param(x) != _param(study.baseline[k])]
        names[v.id] = " ".join(parts) or "baseline"
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {vid: name if seen[name] == 1 else f"{name} #{vid[:4]}" for vid, name in names.items()}


def _abbreviations(keys: list[str]) -> dict[str, str]:
    """Factor key -> a short name: the initials of a multi-word name (batch_norm -> bn), a short
    word kept (pool), a long one cut (residual -> res); longer forms where two would clash."""
    from ablate.study import short_names

    tails = short_names(keys)

    def abbr(name: str) -> str:
        words = [w for w in name.replace(".", "_").replace("-", "_").split("_") if w]
        if len(words) > 1:
            return "".join(w[0] for w in words)
        word = words[0] if words else name
        return word if len(word) <= 5 else word[:3]

    for form in (lambda k: abbr(tails[k]), lambda k: tails[k], lambda k: k):
        out = {k: form(k) for k in keys}
        if len(set(out.values())) == len(keys):
            return out
    return out


def _short_value(value: Any) -> str:
    if value is True or value is False:
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_short_value(x) for x in value) + ")"
    text = str(value)
    return text if len(text) <= 14 else text[:13] + "…"


def _level_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _what_changed(study: Study, variant: Any) -> str:
    """The full "what changed" of a variant, for its description."""
    changed = [f"`{k}` = {_level_text(x)} (baseline: {_level_text(study.baseline[k])})"
               for k, x in variant.levels.items() if _param(x) != _param(study.baseline[k])]
    if changed:
        return "; ".join(changed)
    levels = ", ".join(f"`{k}` = {_level_text(x)}" for k, x in variant.levels.items())
    return f"the baseline ({levels or 'no factors'})"


def _trial_note(study: Study, trial: Trial) -> str:
    v = trial.variant
    return (f"**{v.label}**, seed {trial.seed} (variant {v.id} of study {study.name}): "
            f"{_what_changed(study, v)}. Its variant's row, one level up, shows the mean over "
            f"the seeds.")


def _shown(value: float) -> float:
    """A summary as the UI shows it: 4 significant digits (the report's precision or more)."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


def _fmt_mean(summary: VariantSummary) -> str:
    if not math.isfinite(summary.mean):
        return "-"
    ci = f" ± {summary.ci95:.2g}" if math.isfinite(summary.ci95) else ""
    return f"{summary.mean:.4g}{ci}"


def _variant_note(study: Study, variant: Any, summary: VariantSummary | None,
                  verdict: str | None) -> str:
    lines = [f"**{variant.label}** (variant {variant.id}): {_what_changed(study, variant)}."]
    if summary is not None:
        waiting = summary.n_seeds - summary.ended
        lines.append(
            f"`{study.metric}`: **{_fmt_mean(summary)}** — the mean over its {summary.finished} "
            f"finished seed(s) and the half-width of its 95% t-interval (`{study.metric}_ci95`). "
            f"Diverged ({summary.diverged}) and failed ({summary.failed}) seeds are counted but "
            f"left out of the mean, as in `ablate report`"
            + (f"; {waiting} seed(s) not finished yet." if waiting else "."))
    if verdict:
        lines.append(f"Verdict of `ablate report` (paired with the baseline by seed): "
                     f"**{verdict}**.")
    lines.append("Expand this row for its seeds (one child run each).")
    return "\n\n".join(lines)


def _study_note(study: Study, summaries: Mapping[str, VariantSummary],
                verdicts: Mapping[str, str | None]) -> str:
    n_var, n_seeds = len(study.variants), len(study.seeds)
    total = {k: sum(getattr(s, k) for s in summaries.values())
             for k in ("finished", "diverged", "failed", "running")}
    missing = len(study.trials) - sum(s.ended + s.running for s in summaries.values())
    names = run_names(study)
    rows = [f"| {names[v.id]} | {v.label} | {_fmt_mean(summaries[v.id])} | "
            f"{summaries[v.id].finished} | {summaries[v.id].diverged} | "
            f"{summaries[v.id].failed} | {verdicts.get(v.id) or '-'} |" for v in study.variants]
    text = "\n\n".join([
        f"**Study {study.name}**: {study.design} design, {n_var} variants × {n_seeds} seeds "
        f"{list(study.seeds)} = {len(study.trials)} trials; metric `{study.metric}` "
        f"({study.mode} is better); plan {study.plan}.",
        f"Trials: {total['finished']} finished, {total['diverged']} diverged, "
        f"{total['failed']} failed, {total['running']} running, {missing} not trained yet.",
        "Each variant is a row of this experiment's runs table; expand it for its seeds. Means "
        "are over finished seeds only, as in `ablate report`: diverged and failed seeds are "
        "counted but left out of the mean and its 95% CI.",
        f"| run | what changed | {study.metric} mean ± 95% CI | finished | diverged | failed "
        f"| verdict |\n|---|---|---:|---:|---:|---:|---|\n" + "\n".join(rows),
        f"Report: `ablate report {study.source or 'STUDY.py'}` (its files are attached to this "
        f"run under `report/`).",
    ])
    return text if len(text) <= 7900 else text[:7890] + "\n\n…"


def _experiment_note(study: Study) -> str:
    m = study.metric
    return (f"Ablation study **{study.name}**, written by `ablate`. The runs table shows the "
            f"plan's run (the study's summary in its description) and one row per variant: "
            f"`{m}` is its mean over the finished seeds, `{m}_ci95` the half-width of the 95% "
            f"t-interval, `finished`/`diverged`/`failed` its seed counts and the tag "
            f"`ablate.verdict` the verdict of `ablate report`. Expand a variant for its seeds "
            f"(there, `{m}` is each seed's final value). Means leave diverged and failed seeds "
            f"out, exactly as the report does; MLflow's own grouping would average diverged "
            f"runs in.")


def view_state(study: Study) -> dict[str, Any]:
    """The saved view of the plan's runs: the plan and its variants as rows (trials nested,
    which MLflow only does when sorted by start time), the study metric first among columns."""
    m = study.metric
    metrics = [f"metrics.`{k}`" for k in (m, f"{m}_ci95", "finished", "diverged", "failed")]
    columns = [*metrics, "tags.`ablate.verdict`", *(f"params.`{k}`" for k in study.factors)]
    return {
        "searchFilter": f"tags.`ablate.plans` LIKE '%{plan_token(study.plan)}%'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {"attributes.`Run Name`": 240, "tags.`ablate.verdict`": 320},
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": None,
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
    }


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's INFO chatter (database migrations, run links) during a study."""
    import logging

    names = {"mlflow": logging.WARNING, "alembic": logging.WARNING,
             # logs every failed query with its traceback; ablate reports the failure itself
             "mlflow.store.db.utils": logging.CRITICAL}
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg, level in zip(loggers, names.values()):
        lg.setLevel(level)
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=False)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def _unparam(text: str) -> Any:
    """A param's value as logged by :func:`_param` (JSON, or a plain string)."""
    try:
        return _level(json.loads(text))
    except ValueError:
        return text


def _level(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


__all__ = ["STATUSES", "SUMMARY", "StudyRuns", "Tracker", "TrackingError", "TrialRecord",
           "history", "results", "runs_url"]
