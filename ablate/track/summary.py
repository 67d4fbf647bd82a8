"""What a plan's rows say: a variant's summary over its seeds, run names and descriptions."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablate.track.params import param
from ablate.track.records import STATUSES

if TYPE_CHECKING:
    from ablate.study import Study, Trial


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
        status = "failed" if status == "timed out" else status  # counted like failed
        counts[status] = counts.get(status, 0) + 1
        value = run.data.metrics.get(f"final_{study.metric}")
        if status == "finished" and value is not None and math.isfinite(value):
            values.append(float(value))
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = ci = math.nan
    if n >= 2:
        std = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
        ci = _t975(n - 1) * std / math.sqrt(n)
    return VariantSummary(len(seeds), counts["finished"], counts["diverged"],
                          counts["failed"], counts["running"], mean, std, ci)


@functools.lru_cache(maxsize=None)
def _t975(df: int) -> float:
    """Student's t quantile 0.975, once per df: ``scipy.special.stdtrit``, the function behind
    ``scipy.stats.t.ppf`` without importing ``scipy.stats`` (~1 s) into the driver."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.975))


def task_tag(variant: Any) -> dict[str, str]:
    """``{"ablate.task": name}`` for a variant of a study with tasks, else nothing (a study
    without tasks writes the tags it always wrote)."""
    return {"ablate.task": variant.task} if variant.task else {}


def run_names(study: Study) -> dict[str, str]:
    """Variant id -> a short run name, distinct within the study: the changed factors
    abbreviated (``bn=off ks=5``), ``baseline`` for the baseline, after the task's name in a
    study with tasks (``cifar: bn=off``). Trial runs add `` s<seed>``."""
    abbr = _abbreviations(list(study.factors))
    names = {}
    for v in study.variants:
        parts = [f"{abbr[k]}={_short_value(x)}" for k, x in v.levels.items()
                 if param(x) != param(study.baseline[k])]
        names[v.id] = (f"{v.task}: " if v.task else "") + (" ".join(parts) or "baseline")
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {vid: name if seen[name] == 1 else f"{name} #{vid[:4]}" for vid, name in names.items()}


def _abbreviations(keys: list[str]) -> dict[str, str]:
    """Factor key -> a short name: the initials of a multi-word name (batch_norm -> bn), a short
    word kept (pool), a long one cut (residual -> res); longer forms where two would clash."""
    from ablate.design import short_names

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
               for k, x in variant.levels.items() if param(x) != param(study.baseline[k])]
    if changed:
        return "; ".join(changed)
    levels = ", ".join(f"`{k}` = {_level_text(x)}" for k, x in variant.levels.items())
    return f"the baseline ({levels or 'no factors'})"


def trial_note(study: Study, trial: Trial) -> str:
    v = trial.variant
    task = f" on task {v.task}" if v.task else ""
    return (f"**{v.label}**{task}, seed {trial.seed} (variant {v.id} of study {study.name}): "
            f"{_what_changed(study, v)}. Its variant's row, one level up, shows the mean over "
            f"the seeds.")


def shown(value: float) -> float:
    """A summary as the UI shows it: 4 significant digits (the report's precision or more)."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


def _fmt_mean(summary: VariantSummary) -> str:
    if not math.isfinite(summary.mean):
        return "-"
    ci = f" ± {summary.ci95:.2g}" if math.isfinite(summary.ci95) else ""
    return f"{summary.mean:.4g}{ci}"


def variant_note(study: Study, variant: Any, summary: VariantSummary | None,
                  verdict: str | None) -> str:
    task = f" on task {variant.task}" if variant.task else ""
    lines = [f"**{variant.label}**{task} (variant {variant.id}): "
             f"{_what_changed(study, variant)}."]
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


def study_note(study: Study, summaries: Mapping[str, VariantSummary],
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


def experiment_note(study: Study) -> str:
    m = study.metric
    return (f"Ablation study **{study.name}**, written by `ablate`. The runs table shows the "
            f"plan's run (the study's summary in its description) and one row per variant: "
            f"`{m}` is its mean over the finished seeds, `{m}_ci95` the half-width of the 95% "
            f"t-interval, `finished`/`diverged`/`failed` its seed counts and the tag "
            f"`ablate.verdict` the verdict of `ablate report`. Expand a variant for its seeds "
            f"(there, `{m}` is each seed's final value). Means leave diverged and failed seeds "
            f"out, exactly as the report does; MLflow's own grouping would average diverged "
            f"runs in.")
