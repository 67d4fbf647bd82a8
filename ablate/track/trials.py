"""A plan's and its trials' runs from creation to end: what ``ablate run`` writes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Metric, RunTag

from ablate.track.params import dumps, log_params, params_of
from ablate.track.records import (
    MLFLOW_STATUS,
    SUMMARY,
    PlanRuns,
    TrialRecord,
    pick,
    record_of,
    replaced,
)
from ablate.track.rows import VariantRowWriter
from ablate.track.summary import task_tag, trial_note
from ablate.track.ui import NOTE, plan_token

if TYPE_CHECKING:
    from ablate.study import Study, Trial


# what a trial's record (record_of) and the choice among a trial's runs (pick, replaced) read
RECORD_TAGS = ("ablate.variant", "ablate.seed", "ablate.status", "ablate.replaced", "ablate.code",
               "ablate.data", "ablate.kept")


def _task_setting(study: Study, key: str) -> bool:
    """A setting of the tasks (set by one, or the task's name): not the plan's shared one."""
    return bool(study.tasks) and (key == "task" or any(key in t.settings for t in study.tasks))


class RunWriter(VariantRowWriter):
    """Creates, resumes and ends the plan's run and its trial (and tuning) runs."""

    def find_study(self, study: Study) -> PlanRuns | None:
        """The experiment and the parent run of the study's current plan, or None."""
        exp = self.client.get_experiment_by_name(study.name)
        if exp is None or exp.lifecycle_stage != "active":
            return None
        parents = self._search(exp.experiment_id, f"tags.`ablate.role` = 'study' and "
                                                  f"tags.`ablate.plan` = '{study.plan}'")
        if not parents:
            return None
        return PlanRuns(exp.experiment_id, parents[0].info.run_id, study.plan)

    def setup_study(self, study: Study) -> PlanRuns:
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
                    if k not in study.factors and not _task_setting(study, k)}
            log_params(self.client, parent_id, base)
        for other in self._search(exp_id, "tags.`ablate.role` = 'study' and "
                                          "tags.`ablate.plan_status` = 'current'"):
            if other.info.run_id != parent_id:
                self.client.set_tag(other.info.run_id, "ablate.plan_status", "superseded")
        self.client.log_batch(parent_id, tags=[
            RunTag("ablate.plan_status", "current"),
            RunTag("ablate.design", study.design),
            RunTag("ablate.metric", study.metric),
            RunTag("ablate.mode", study.mode),
            RunTag("ablate.factors", dumps(study.factors)[:5000]),
            RunTag("ablate.seeds", dumps(list(study.seeds))),
            RunTag("ablate.n_trials", str(len(study.trials))),
            RunTag("ablate.source", str(study.source or "")),
        ])
        return self.prepare_view(study, PlanRuns(exp_id, parent_id, study.plan))

    def finish_study(self, runs: PlanRuns, study: Study, interrupted: bool) -> None:
        """End the parent run: KILLED when this process was interrupted, FINISHED when every
        trial of the plan has ended; left RUNNING while another process still trains some.
        The rows are written from one read of the trials."""
        if interrupted:
            self.client.set_terminated(runs.parent_run_id, "KILLED")
            return
        trials = self._trial_runs(runs.experiment_id, params=False)
        ended = [trials.get((t.variant.id, t.seed)) for t in study.trials]
        self.update_summaries(study, runs, trials=trials)
        if all(r is not None and record_of(r).status != "running" for r in ended):
            self.client.set_terminated(runs.parent_run_id, "FINISHED")

    def stop_study(self, runs: PlanRuns, study: Study) -> None:
        """A study error that only training could show (a metric never logged): the parent run
        and the plan's variant runs still running are closed FAILED; the next ``ablate run``
        of the study opens them again."""
        self.client.set_terminated(runs.parent_run_id, "FAILED")
        for run_id in runs.variants.values():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "FAILED")

    def trial_records(self, experiment_id: str) -> dict[tuple[str, int], TrialRecord]:
        """Every trial of the experiment, of any plan: (variant id, seed) -> its run."""
        runs = self._trial_runs(experiment_id, params=False, metrics=False, tag_keys=RECORD_TAGS)
        return {key: record_of(run) for key, run in runs.items()}

    def trial_record(self, runs: PlanRuns, trial: Trial) -> TrialRecord | None:
        """The trial's run as the store holds it now (one search: the variant's runs)."""
        variant = self._variant_search(runs.experiment_id, trial.variant.id, metrics=False)
        found = pick(r for r in variant if r.data.tags.get("ablate.role") == "trial"
                     and r.data.tags.get("ablate.seed") == str(trial.seed) and not replaced(r))
        return record_of(found[(trial.variant.id, trial.seed)]) if found else None

    def replace_trials(self, records: list[TrialRecord]) -> None:
        """Keep these runs but never read them again (``--rerun-changed``)."""
        for record in records:
            self.client.set_tag(record.run_id, "ablate.replaced", "true")

    def start_trial(self, study: Study, runs: PlanRuns, trial: Trial) -> str:
        """Create the trial's child run with its tags and params; returns the run id."""
        v = trial.variant
        name = self._run_name(study, v)
        return self._child_run(study, runs, trial, f"{name} s{trial.seed}", {
            "ablate.role": "trial",
            "ablate.seed": str(trial.seed),
            "ablate.baseline": "true" if v.baseline else "false",
            "ablate.levels": dumps(v.levels)[:5000],
            **task_tag(v),
            "ablate.plan": runs.plan,
            "ablate.plans": plan_token(runs.plan),
            NOTE: trial_note(study, trial),
        }, parent=runs.variants.get(v.id) or self._variant_run_id(study, runs, v))

    def start_tuning(self, study: Study, runs: PlanRuns, trial: Trial, number: int) -> str:
        """A child run for one tuning trial of a variant (tag ``ablate.role=tuning``)."""
        name = self._run_name(study, trial.variant)
        return self._child_run(study, runs, trial, f"tune {name} #{number}", {
            "ablate.role": "tuning",
            "ablate.tune_trial": str(number),
            "ablate.plans": plan_token(runs.plan),
        })

    def _child_run(
        self, study: Study, runs: PlanRuns, trial: Trial, name: str, tags: Mapping[str, str],
        parent: str | None = None,
    ) -> str:
        """A nested run (under ``parent``, else the plan's run) with the common tags, and every
        config key as a param, written with the run's next write (its provenance tags, its first
        metrics or its end: one call less per run)."""
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
        """Every resolved config key and the seed, written with the run's next write
        (idempotent: the same values again are accepted, so a resume can complete a run whose
        creation a kill interrupted)."""
        self._defer_params(run_id, params_of(trial.variant.config, {"seed": str(trial.seed)}))

    def resume_trial(self, study: Study, runs: PlanRuns, trial: Trial, run_id: str) -> int:
        """Mark a trial run running again, with all its tags and params (a kill may have come
        between its creation and its params); returns the last step already logged (-1)."""
        v = trial.variant
        self.client.update_run(run_id, status="RUNNING")
        self._log_params(run_id, trial)
        self.set_tags(run_id, {"ablate.status": "running", "ablate.role": "trial",
                               "ablate.study": study.name, "ablate.label": v.label,
                               "ablate.baseline": "true" if v.baseline else "false",
                               "ablate.levels": dumps(v.levels)[:5000], **task_tag(v)})
        keys = [k for k in self.client.get_run(run_id).data.metrics
                if k not in SUMMARY and not k.startswith(("final_", "best_"))]
        if not keys:
            return -1
        return max(m.step for m in self.client.get_metric_history(run_id, keys[0]))

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int, first: str | None = None
    ) -> None:
        """One batched call; ``first`` (the study metric) is logged first, so that a run's
        metrics table in MLflow's UI, which keeps the order of first logging, starts with it."""
        now = int(time.time() * 1000)
        keys = sorted(metrics, key=lambda k: k != first)  # stable: the rest keep their order
        self._log_batch(run_id, metrics=[Metric(k, float(metrics[k]), now, step) for k in keys])

    def end_trial(
        self, run_id: str, status: str, summary: Mapping[str, float], error: str | None = None
    ) -> None:
        """Log summary metrics, the status tag (and traceback), and close the run."""
        now = int(time.time() * 1000)
        tags = [RunTag("ablate.status", status)]
        if error:
            tags.append(RunTag("ablate.error", error.strip().splitlines()[-1][:500]))
        self._log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()],
                        tags=tags)
        if error:
            self.client.log_text(run_id, error, "traceback.txt")
        self.client.set_terminated(run_id, MLFLOW_STATUS[status])

    def interrupt_trial(self, run_id: str) -> None:
        """Ctrl-C: the run stays ``ablate.status=running`` (resumable) and is marked KILLED."""
        self._write_params(run_id)
        self.client.set_terminated(run_id, "KILLED")

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_report(self, runs: PlanRuns, folder: Path) -> None:
        """Attach the report folder to the study's parent run (artifact path ``report``)."""
        self.client.log_artifacts(runs.parent_run_id, str(folder), "report")
