"""What ``ablate report`` reads from the tracking store (and the verdicts it writes back).

Everything comes from the store: results, histories, the environment and code each trial
recorded, the generated text of language models and the class activation maps the training
loop attached to each trial when it ended. Nothing here trains, rebuilds a model or loads data
(``ablate.train`` and ``ablate.data`` are never imported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablate.stats.spec import ReportSpec, spec_from_study

CAMS = "cams.npz"  # the artifact ablate.train.artifacts attaches to each trial


class NothingToReport(Exception):
    """The store has no run of this plan (the message says which plans it has)."""


@dataclass
class Collected:
    """What a report is written from: :func:`ablate.report.write_report`'s inputs, plus the
    study's parent run (``runs``) that the report is attached to."""

    results: pd.DataFrame
    history: pd.DataFrame
    spec: ReportSpec
    runs: Any
    samples: dict[str, str] | None
    cams: Path | None
    cams_missing: list[str] | None
    tuning: pd.DataFrame | None


def collect(study: Any, tracker: Any, *, command: str, study_file: str,
            folder: Path) -> Collected:
    """Read the report's inputs for ``study``'s current plan; the CAM figure is drawn into
    ``folder``. A plan whose every trial was trained under other plans gets its own parent run.

    Raises:
        NothingToReport: no run of this plan is in the store.
    """
    results = tracker.results(study)  # exactly the trials of this plan
    left_out = tracker.left_out(study)
    if results.empty:
        raise NothingToReport(_no_runs(study, tracker.uri, study_file, left_out))
    runs = tracker.find_study(study)
    if runs is None:  # every trial was trained under other plans: give this one its run
        runs = tracker.setup_study(study)
        tracker.finish_study(runs, study, interrupted=False)
    history = tracker.history(study)
    samples = _samples(study, tracker, results)
    spec = spec_from_study(
        study,
        command=command,
        environment=environment(results),
        notes=_notes(results, left_out),
        mlflow={"tracking URI": _shown_uri(tracker.uri, command),
                "experiment id": runs.experiment_id,
                "study (parent) run id": runs.parent_run_id},
    )
    cams, cams_missing = _cams(study, tracker, results, history, folder)
    tuning = tracker.tuning(study) if study.tuning.space else None
    return Collected(results, history, spec, runs, samples, cams, cams_missing, tuning)


def record_verdicts(tracker: Any, study: Any, runs: Any, results: Any, spec: Any) -> None:
    """The report's verdict for each variant (its comparison with the baseline, as the
    report's variant table gives it) onto the variant's row in MLflow (tag ablate.verdict)."""
    from ablate.stats.compare import compare
    from ablate.stats.verdict import Verdict

    if spec.tasks:
        verdicts = _task_verdicts(results, spec)
    else:
        verdicts = {row.variant: str(row.verdict) for row in compare(results, spec).itertuples()}
    for v in study.variants:
        if v.baseline:  # the baseline of each task, in a study with tasks
            verdicts[v.id] = Verdict.BASELINE.value
    tracker.record_verdicts(study, runs, verdicts)


def _task_verdicts(results: Any, spec: ReportSpec) -> dict[str, str]:
    """A study with tasks: each variant's verdict against its task's baseline as the report's
    table of that task gives it (one family across tasks), else (factorial designs, whose
    tables have effects, not variants) its task's comparisons with the baseline."""
    from ablate.stats.compare import compare
    from ablate.stats.tasks import of_task, task_family, task_spec

    family = task_family(results, spec)
    rows = family[family["kind"] == "variant"] if len(family) else family
    verdicts = dict(zip(rows["variant"], rows["verdict"].astype(str))) if len(rows) else {}
    for task in spec.tasks:
        for row in compare(of_task(results, task), task_spec(spec, task)).itertuples():
            verdicts.setdefault(str(row.variant), str(row.verdict))
    return verdicts


def _cams(study: Any, tracker: Any, results: Any, history: Any,
          folder: Path) -> tuple[Path | None, list[str] | None]:
    """The CAM figure from the ``cams.npz`` of one finished seed per variant (studies with
    ``train.cams``); without it, the variants whose trials recorded none."""
    if not study.uses_builtin_loop or not study.variants[0].config.get("train.cams"):
        return None, None
    from ablate.report.cams import (
        NO_WEIGHTS,
        NOT_RECORDED,
        cam_figure,
        not_applicable,
        not_recorded,
        read_record,
    )

    base = _data_settings(study.baseline_variant.config)
    rows: list[tuple[str, Any]] = []
    for v in study.variants:
        done = results[(results["variant"] == v.id) & (results["status"] == "finished")]
        run_id = done.sort_values("seed").iloc[0]["run_id"] if len(done) else None
        if run_id is None or _data_settings(v.config) != base:  # other data: other images
            rows.append((v.label, NO_WEIGHTS))
            continue
        file = tracker.download(run_id, CAMS, folder / v.id)
        if file is not None:
            rows.append((v.label, read_record(file)))
        else:
            rows.append((v.label, NOT_RECORDED if v.config.get("train.cams")
                         else NO_WEIGHTS))
    if not_applicable(rows):  # not image classification: no CAMs to show
        return None, None
    recorded = any(not isinstance(r, str) for _, r in rows)
    if not recorded and "val_acc" not in set(history["key"]):
        return None, None  # an old store whose loop logged no accuracy: not classification
    missing = not_recorded(rows)
    path = cam_figure(rows, folder / "cams.png")
    return path, (missing or None) if path is None else None


def _data_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The ``data.*`` settings of a config (lists as tuples, as the data factory gets them)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
            if k.startswith("data.")}


MAX_SAMPLES = 16  # variants whose generated text the report shows, at most


def _samples(study: Any, tracker: Any, results: Any) -> dict[str, str] | None:
    """The last generated text of each variant's first finished seed (language models), for
    the first :data:`MAX_SAMPLES` variants of the study (baseline first): one artifact read
    each, and 2,048 code blocks would bury the report."""
    samples = {}
    kept = results[results["status"] != "failed"]
    first = dict(zip(kept["variant"][::-1], kept["run_id"][::-1]))  # each variant's first row
    for v in study.variants[:MAX_SAMPLES]:
        if v.id in first:
            text = tracker.last_text(first[v.id], "samples")
            if text is not None:
                samples[v.label] = text
    return samples or None


def _notes(results: Any, left_out: list[tuple[str, int]]) -> list[str]:
    """One line each on what the report left out, on trials kept from older code or other
    data (``--keep-changed``) and on trials trained differently."""
    notes = []
    if left_out:
        n = sum(count for _, count in left_out)
        groups = "; ".join(f"{what} ({count})" for what, count in left_out[:4])
        notes.append(f"This report covers the {len(results)} trials of this plan only. Left out: "
                     f"{n} trial run{'s' * (n != 1)} of other plans of this study, which differ "
                     f"in: {groups}{'; ...' if len(left_out) > 4 else ''}.")
    kept, explained = _kept(results)
    notes += kept
    differs = [k for k, v in environment(results).items()
               if v.startswith("DIFFERS") and k not in explained]
    if differs:
        notes.append(f"Warning: these trials were trained in different environments or code "
                     f"(different {', '.join(differs)}: see Environment), so a difference "
                     f"between variants may come from there.")
    return notes


def _kept(results: Any) -> tuple[list[str], set[str]]:
    """The note on trials that ``--keep-changed`` reused although they were trained with older
    code or on other data (their ``ablate.kept`` tag, ``<code>/<data>``, names the code and
    data it accepted them for), and the environment keys that note explains."""
    if "kept" not in results.columns or results.empty:
        return [], set()
    kept = results["kept"].fillna("").astype(str)
    rows = results[kept != ""]
    if rows.empty:
        return [], set()
    accepted = kept[kept != ""].str.split("/", n=1, expand=True).reindex(columns=[0, 1])
    accepted = accepted.fillna("")
    code = rows["code"].fillna("").astype(str) if "code" in rows else pd.Series("", rows.index)
    data = rows["data"].fillna("").astype(str) if "data" in rows else pd.Series("", rows.index)
    older = code != accepted[0]
    other = (data != "") & (accepted[1] != "") & (data != accepted[1])
    total, parts = len(results), []
    if older.any():
        before = ", ".join(sorted(set(code[older])))
        parts.append(f"{int(older.sum())} of {total} trials were trained with older code (kept "
                     f"with --keep-changed: code fingerprint {before}, the study's is "
                     f"{_most(accepted[0][older])})")
    if other.any():
        parts.append(f"{int(other.sum())} of {total} trials were trained on other data (kept "
                     f"with --keep-changed: their data changed since; data fingerprint "
                     f"{', '.join(sorted(set(data[other])))}, now "
                     f"{', '.join(sorted(set(accepted[1][other])))})")
    if not parts:
        return [], set()
    note = "; ".join(parts) + ". A difference between variants may come from there."
    return [note[0].upper() + note[1:]], {"code fingerprint"} if older.any() else set()


def _most(values: Any) -> str:
    return str(values.value_counts().index[0])


def environment(results: Any) -> dict[str, str]:
    """What the trials were trained with, from their own records (``ablate.env.*`` tags and the
    code fingerprint): one value per key, or every value with its trial count where the trials
    differ; and the data fingerprint(s), which differ by design where the data settings do."""
    env = {}
    for column in [c for c in results.columns if c.startswith("env.")] + ["code", "data"]:
        if column not in results.columns:
            continue
        values = results[column].fillna("").astype(str)
        values = values[values != ""]
        if values.empty:
            continue
        counts = values.value_counts()
        name = {"code": "code fingerprint", "data": "data fingerprint"}.get(
            column, column[len("env."):].replace("_", " "))
        listed = ", ".join(f"{v} ({n} trial{'s' * (n != 1)})" for v, n in counts.items())
        env[name] = (counts.index[0] if len(counts) == 1 else
                     listed if column == "data" else "DIFFERS: " + listed)
    return env


def _shown_uri(uri: str, command: str = "") -> str:
    """The tracking URI as the user gave it (``--tracking-uri``, which ``command`` then holds,
    or ``MLFLOW_TRACKING_URI``): absolute stays absolute, relative stays relative. Only
    MLflow's own default, which MLflow spells as an absolute path of this machine although it
    means ``mlflow.db`` in the folder ablate ran in, is named relative to that folder: a report
    names no path the user did not give (a reader's clone has none of them)."""
    import os

    from ablate.track import sqlite_path

    path = sqlite_path(uri)
    given = "--tracking-uri" in command.split() or bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if given or path is None or not path.is_absolute():
        return uri
    try:
        return f"sqlite:///{path.relative_to(Path.cwd())}"
    except ValueError:
        return uri


def _no_runs(study: Any, uri: str, study_file: str, left_out: list[tuple[str, int]]) -> str:
    """Why ``ablate report`` has nothing to report, naming the settings that do have runs."""
    if not left_out:
        return (f"study {study.name!r} has no runs in {uri} yet. Fix: run `ablate run "
                f"{study_file}` first (with the same --tracking-uri).")
    groups = "; ".join(f"{what} ({n} run{'s' * (n != 1)})" for what, n in left_out[:5])
    return (f"no run of study {study.name!r} in {uri} matches this plan (its settings, factors "
            f"and seeds). Runs exist that differ in: {groups}. Fix: pass the same --set/--seeds "
            f"as the `ablate run` that trained them, or run this plan first.")
