"""What ``ablate report`` and the API read: a plan's trials, their histories, their files."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.track.base import TrackerBase
from ablate.track.bulk import histories
from ablate.track.params import as_level, param, unparam
from ablate.track.records import ENVIRONMENT, SUMMARY

if TYPE_CHECKING:
    import pandas as pd

    from ablate.study import Study, Trial

ACTIVATIONS = "activations.json"  # a trial's activation statistics (see RunReader.activations)
ACTIVATION_PREFIXES = ("act_mean/", "act_std/")


class RunReader(TrackerBase):
    """Reads a plan's trial runs: one row each, their per-epoch histories, tuning, files."""

    def results(self, study: Study) -> pd.DataFrame:
        """One row per trial of the study's current plan (see :func:`results`)."""
        import pandas as pd

        task = ["task"] if study.tasks else []  # a study with tasks: each trial's task
        columns = ["run_id", "variant", *task, "label", "baseline", "seed", "status",
                   *study.factors,
                   "final", "best", "n_params", "flops_per_sample", "train_seconds",
                   "peak_mem_mb", "epochs", "device", "tuned", "error", "code", "data", "kept",
                   *(f"env.{k}" for k in ENVIRONMENT)]
        rows = []
        for trial, run in self._plan_runs(study):
            tags, metrics = run.data.tags, run.data.metrics
            levels = json.loads(tags.get("ablate.levels", "{}"))
            rows.append({
                "run_id": run.info.run_id,
                "variant": trial.variant.id,
                "label": tags.get("ablate.label", ""),
                "baseline": tags.get("ablate.baseline") == "true",
                "seed": trial.seed,
                "status": _counted(tags.get("ablate.status", "")),
                **{k: as_level(levels.get(k)) for k in study.factors},
                "final": metrics.get(f"final_{study.metric}", float("nan")),
                "best": metrics.get(f"best_{study.metric}", float("nan")),
                **{k: metrics.get(k, float("nan")) for k in SUMMARY},
                "device": tags.get("ablate.device", ""),
                "tuned": tags.get("ablate.tuned", ""),
                "error": tags.get("ablate.error", ""),
                "code": tags.get("ablate.code", ""),
                "data": tags.get("ablate.data", ""),
                "kept": tags.get("ablate.kept", ""),
                **{f"env.{k}": tags.get(f"ablate.env.{k}", "") for k in ENVIRONMENT},
            })
            if task:
                rows[-1]["task"] = trial.variant.task
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
            else:  # against the baseline of its task, in a study with tasks
                what = _differences(run.data.params, _base_of(study, run.data.params, base),
                                    study)
            groups[what] = groups.get(what, 0) + 1
        return sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))

    def stored_configs(self, study: Study) -> dict[str, dict[str, str]]:
        """Variant id -> its resolved config as logged (params, ``seed`` aside) for every
        variant of the experiment with a trial run (of any plan; replaced runs aside)."""
        exp_id = self.experiment_id(study)
        if exp_id is None:
            return {}
        configs: dict[str, dict[str, str]] = {}
        for (variant, _), run in sorted(self._trial_runs(exp_id).items()):
            if variant not in configs:
                configs[variant] = {k: v for k, v in run.data.params.items() if k != "seed"}
        return configs

    def tuning(self, study: Study) -> pd.DataFrame:
        """One row per tuning trial: variant, label, number, status, final value, tuned params."""
        import pandas as pd

        exp_id = self.experiment_id(study)
        keys = list(study.tuning.space)
        columns = ["run_id", "variant", "label", "number", "status", "value", *keys]
        if exp_id is None or not keys:
            return pd.DataFrame(columns=columns)
        planned = {v.id for v in study.variants}
        rows = []
        for run in self._find(exp_id, {"ablate.role": "tuning"}):
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
                **{k: unparam(params[k]) if k in params else None for k in keys},
            })
        df = pd.DataFrame(rows, columns=columns)
        order = {v.id: i for i, v in enumerate(study.variants)}
        df["_order"] = df["variant"].map(order).fillna(len(order))
        return (df.sort_values(["_order", "number"]).drop(columns="_order")
                .reset_index(drop=True))

    def last_text(self, run_id: str, folder: str) -> str | None:
        """The last (by name) text artifact under ``folder`` of a run, or None (read in place
        when the run, found by a search, keeps its artifacts on this machine)."""
        here = _local_folder(self._artifact_uris.get(run_id))
        if here is not None:
            target = here / folder
            names = sorted(p.name for p in target.iterdir() if p.is_file()) \
                if target.is_dir() else []
            return (target / names[-1]).read_text(encoding="utf-8", errors="replace") \
                if names else None
        files = sorted(f.path for f in self.client.list_artifacts(run_id, folder) if not f.is_dir)
        if not files:
            return None
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

    def _plan_runs(self, study: Study) -> list[tuple[Trial, Any]]:
        """``(trial, its run)`` for each trial of the current plan that has a run, in the
        study's order (one search; their params are not read)."""
        exp_id = self.experiment_id(study)
        found = self._trial_runs(exp_id, params=False) if exp_id is not None else {}
        return [(t, found[t.variant.id, t.seed]) for t in study.trials
                if (t.variant.id, t.seed) in found]

    def history(self, study: Study, keys: list[str] | None = None) -> pd.DataFrame:
        """Per-epoch metrics of every trial run, long format: one search, then each metric key
        of a batch of runs in one read where the store allows it (see :func:`histories`), and
        each run's activation statistics."""
        import pandas as pd

        skip = {f"final_{study.metric}", f"best_{study.metric}", *SUMMARY}
        runs = self._plan_runs(study)
        wanted = {run.info.run_id: [k for k in run.data.metrics
                                    if k not in skip and (keys is None or k in keys)]
                  for _, run in runs}
        values = histories(self.client, wanted)
        acts = keys is None or any(k.startswith(ACTIVATION_PREFIXES) for k in keys)
        rows = []
        for trial, run in runs:
            run_id, label = run.info.run_id, run.data.tags.get("ablate.label", "")
            head = (run_id, trial.variant.id, label, trial.seed)
            for key in wanted[run_id]:
                rows += [(*head, key, m.step, m.value) for m in values[run_id, key]]
            for key, step, value in (self._activations(run) if acts else ()):
                if keys is None or key in keys:
                    rows.append((*head, key, step, value))
        return pd.DataFrame(rows, columns=["run_id", "variant", "label", "seed", "key", "step",
                                           "value"])

    def activations(self, run_id: str) -> list[tuple[str, int, float]]:
        """A trial's activation statistics (artifact ``activations.json``, written by the
        built-in loop) as ``(key, step, value)``, keys ``act_mean/<layer>``, ``act_std/<layer>``;
        none for runs without the file."""
        return self._activations(self.client.get_run(run_id))

    def _activations(self, run: Any) -> list[tuple[str, int, float]]:
        """:meth:`activations` of a run already read: a local artifact folder is read in
        place (no MLflow call), any other through the client."""
        folder = _local_folder(run.info.artifact_uri)
        if folder is not None:
            path = folder / ACTIVATIONS
            if not path.is_file():
                return []
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            run_id = run.info.run_id
            if ACTIVATIONS not in {f.path for f in self.client.list_artifacts(run_id)}:
                return []
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(run_id, ACTIVATIONS, tmp)
                data = json.loads(Path(local).read_text(encoding="utf-8"))
        return [(key, int(step), float(row[j]))
                for step, row in zip(data["steps"], data["values"])
                for j, key in enumerate(data["keys"])]


def _local_folder(artifact_uri: str | None) -> Path | None:
    """The folder of a run's artifacts when it is on this machine's file system, else None."""
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    try:
        if not artifact_uri or not is_local_uri(artifact_uri, is_tracking_or_registry_uri=False):
            return None
        return Path(local_file_uri_to_path(artifact_uri))
    except Exception:  # an unusual URI: read it through MLflow
        return None


def _differences(params: Mapping[str, str], base: Mapping[str, Any], study: Study) -> str:
    """What a run's settings have that the plan's baseline doesn't (factors aside)."""
    diff = []
    for key in sorted(set(params) | set(base)):
        if key in study.factors or key == "seed":
            continue
        mine = param(base[key]) if key in base else None
        theirs = params.get(key)
        if mine != theirs:
            diff.append(f"{key}={theirs if theirs is not None else '(unset)'}")
    return ", ".join(diff) if diff else "other factor levels"


def _base_of(study: Study, params: Mapping[str, str], base: Mapping[str, Any]
             ) -> Mapping[str, Any]:
    """The base config of the task a run's params name (a study with tasks), else ``base``."""
    task = params.get("task")
    if not study.tasks or task is None:
        return base
    config = study.task_configs.get(task)
    return base if config is None else {**config, **study.baseline}


def _counted(status: str) -> str:
    """The status as statistics and summaries count it: a trial that ran past
    ``train.timeout`` is ``failed`` there (its MLflow tag keeps ``timed out``, its error says
    so)."""
    return "failed" if status == "timed out" else status

