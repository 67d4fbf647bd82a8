"""The plan's rows in MLflow's UI: one run per variant with its summary, and the saved view."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, RunTag, ViewType

from ablate.track.base import TrackerBase
from ablate.track.params import dumps, log_params
from ablate.track.records import PlanRuns, pick, replaced
from ablate.track.summary import (
    VariantSummary,
    experiment_note,
    shown,
    study_note,
    task_tag,
    variant_note,
    variant_summary,
)
from ablate.track.ui import (
    NOTE,
    VIEW_TAG,
    plan_token,
    ranked_key,
    ranked_state,
    view_key,
    view_state,
)

if TYPE_CHECKING:
    from ablate.study import Study


class VariantRowWriter(TrackerBase):
    """Writes what MLflow's UI shows of a plan: its variant rows, their figures, its view."""

    def prepare_view(self, study: Study, runs: PlanRuns) -> PlanRuns:
        """What MLflow's UI shows for the plan (call under the study's lock, after its run):
        one top-level run per variant (created if missing; trials are nested under it), the
        plan's id in the tag ``ablate.plans`` of every run of the plan (the view's filter), and
        the experiment's saved view that :func:`runs_url` opens."""
        exp_id, plan = runs.experiment_id, runs.plan
        names = self._names(study, plan)
        found = self._variant_runs(exp_id, params=False)
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
        for key, run in self._trial_runs(exp_id, False, False).items():  # an earlier plan's
            if key in planned:
                self._add_plan(run, plan)
        for run in self._find(exp_id, {"ablate.role": "tuning"}, False, False):
            if run.data.tags.get("ablate.variant") in variants:
                self._add_plan(run, plan)
        self.client.set_tag(runs.parent_run_id, "ablate.plans", plan_token(plan))
        for name, value in {VIEW_TAG + view_key(plan): json.dumps(view_state(study)),
                            VIEW_TAG + ranked_key(plan): json.dumps(ranked_state(study)),
                            "mlflow.experiment.primaryMetric.name": study.metric,
                            NOTE: experiment_note(study)}.items():
            self.client.set_experiment_tag(exp_id, name, value)
        return replace(runs, variants=variants)

    def current_plans(self) -> list[tuple[str, PlanRuns, bool]]:
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
            runs = PlanRuns(exp.experiment_id, newest.info.run_id,
                             newest.data.tags.get("ablate.plan", ""))
            out.append((exp.name, runs, VIEW_TAG + view_key(runs.plan) in exp.tags))
        return out

    def _variant_run_id(self, study: Study, runs: PlanRuns, variant: Any) -> str:
        run = self._variant_runs(runs.experiment_id, params=False).get(variant.id)
        if run is not None:
            return run.info.run_id
        name = self._names(study, runs.plan)[variant.id]
        return self._create_variant_run(study, runs, variant, name, int(time.time() * 1000))

    def _create_variant_run(
        self, study: Study, runs: PlanRuns, variant: Any, name: str, start_time: int
    ) -> str:
        run = self.client.create_run(runs.experiment_id, start_time=start_time, run_name=name,
                                     tags={
            "ablate.role": "variant",
            "ablate.study": study.name,
            "ablate.variant": variant.id,
            "ablate.label": variant.label,
            "ablate.baseline": "true" if variant.baseline else "false",
            "ablate.levels": dumps(variant.levels)[:5000],
            **task_tag(variant),
            "ablate.plans": plan_token(runs.plan),
            NOTE: variant_note(study, variant, None, None),
        })
        log_params(self.client, run.info.run_id, variant.config)
        return run.info.run_id

    def _add_plan(self, run: Any, plan: str) -> None:
        plans, token = run.data.tags.get("ablate.plans", "").split(), plan_token(plan)
        if plan and token not in plans:
            self.client.set_tag(run.info.run_id, "ablate.plans", " ".join([*plans, token][-200:]))

    def update_variant(self, study: Study, runs: PlanRuns, variant: Any) -> None:
        """Recompute one variant's row (mean, CI, counts, status) from the store; the process
        that has just ended one of its trials calls this: one search (the variant's runs: its
        row and its trials) and one write where the figures changed. Its description, which
        repeats the figures in words, is rewritten when the plan ends (one write per trial,
        ~30 ms)."""
        found = [r for r in self._variant_search(runs.experiment_id, variant.id)
                 if not replaced(r)]
        rows = [r for r in found if r.data.tags.get("ablate.role") == "variant"]
        row_id = runs.variants.get(variant.id)
        run = next((r for r in rows if r.info.run_id == row_id), None) or min(
            rows, key=lambda r: (r.info.start_time or 0, r.info.run_id), default=None)
        if run is None:
            return
        trials = pick(r for r in found if r.data.tags.get("ablate.role") == "trial")
        self._write_variant(study, variant, run, variant_summary(study, variant, trials),
                            describe=False)

    def update_summaries(self, study: Study, runs: PlanRuns,
                         verdicts: Mapping[str, str] | None = None,
                         trials: Mapping[tuple[str, int], Any] | None = None) -> None:
        """Every variant row of the plan and the plan run's own summary, written where they
        changed (when a plan ends, and after ``ablate report`` recorded its verdicts); with
        ``verdicts`` (variant id -> the report's verdict), each variant's verdict is written
        with its figures, in the same call. ``trials``: the experiment's trial runs, if just
        read (:meth:`_trial_runs`, with metrics)."""
        exp_id, plan = runs.experiment_id, study.plan
        if trials is None:
            trials = self._trial_runs(exp_id, params=False)
        variant_runs = self._variant_runs(exp_id, params=False)
        summaries, shown_verdicts = {}, {}
        for v in study.variants:
            summaries[v.id] = variant_summary(study, v, trials)
            run = variant_runs.get(v.id)
            if run is not None:
                shown_verdicts[v.id] = self._write_variant(study, v, run, summaries[v.id],
                                                           verdict=(verdicts or {}).get(v.id),
                                                           plan=plan)
        for variant_id, verdict in (verdicts or {}).items():  # variants outside the plan
            run = variant_runs.get(variant_id)
            if variant_id not in summaries and run is not None:
                self.set_tags(run.info.run_id, {"ablate.verdict": verdict,
                                                "ablate.verdict_plan": plan})
        parent = self.client.get_run(runs.parent_run_id)
        totals = {k: sum(getattr(s, k) for s in summaries.values())
                  for k in ("finished", "diverged", "failed")}
        self._write_changes(parent, {**totals, "trials": len(study.trials),
                                     "variants": len(study.variants)},
                            {NOTE: study_note(study, summaries, shown_verdicts)})

    def record_verdicts(self, study: Study, runs: PlanRuns, verdicts: Mapping[str, str]) -> None:
        """The report's verdict per variant id onto the variant rows (tags ``ablate.verdict``
        and ``ablate.verdict_plan``), with the rows' figures: one write per changed row."""
        self.update_summaries(study, runs, verdicts)

    def _write_variant(
        self, study: Study, variant: Any, run: Any, summary: VariantSummary, describe: bool = True,
        verdict: str | None = None, plan: str | None = None,
    ) -> str | None:
        """Write a variant run's summary (and with ``describe`` its description, and a new
        ``verdict`` of this plan) where it changed; returns the verdict it shows. ``plan``:
        the study's plan id, if known (it hashes every variant's id)."""
        tags = run.data.tags
        plan = plan or study.plan
        new = {} if verdict is None else {"ablate.verdict": verdict,
                                           "ablate.verdict_plan": plan}
        if verdict is None:
            verdict = tags.get("ablate.verdict") \
                if tags.get("ablate.verdict_plan") == plan else None
        if verdict is None and "ablate.verdict" in tags:  # another plan's verdict
            self.client.delete_tag(run.info.run_id, "ablate.verdict")
        metrics = {key: shown(value) for key, value in ((study.metric, summary.mean),
                                                         (f"{study.metric}_ci95", summary.ci95))
                   if math.isfinite(value) or key in run.data.metrics}  # first: listed first
        metrics.update(finished=summary.finished, diverged=summary.diverged,
                       failed=summary.failed, seeds=summary.n_seeds)
        self._write_changes(run, metrics, {
            NOTE: variant_note(study, variant, summary, verdict),
            "ablate.seeds": dumps(list(study.seeds)),
            **new,
        } if describe else new)
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
