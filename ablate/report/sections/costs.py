"""The report's variants with their costs (params, FLOPs, time, memory) and the tuning searches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ablate.report.fmt import (
    DASH,
    escape,
    format_count,
    format_mb,
    format_number,
    format_seconds,
    plus_minus,
)
from ablate.report.sections.common import listed, md_table
from ablate.stats.spec import ReportSpec

COSTS = {"n_params": ("Params", format_count), "flops_per_sample": ("FLOPs/sample", format_count),
         "train_seconds": ("Time/trial", format_seconds), "peak_mem_mb": ("Peak memory", format_mb)}


def costs_section(results: pd.DataFrame, summary: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Each variant's mean and its costs; cost columns no trial logged are left out."""
    tuned = _tuned_values(results)
    costs = [c for c in COSTS if summary[c].notna().any()]
    shown, which = listed(summary, spec)
    rows = [
        [escape(s["label"]), plus_minus(s["mean"], s["ci_low"], s["ci_high"]),
         *(COSTS[c][1](s[c]) for c in costs), *([tuned.get(s["variant"], DASH)] if tuned else [])]
        for _, s in shown.iterrows()
    ]
    header = ["Variant", f"{escape(spec.metric)} (mean ± 95% CI)",
              *(COSTS[c][0] for c in costs), *(["Tuned values"] if tuned else [])]
    numeric = tuple(range(1, 2 + len(costs)))
    lines = ["## Variants and costs", "", md_table(header, rows, numeric), "",
             *([which, ""] if which else []), _cost_note(costs), ""]
    return lines + _ui_note(summary, spec)


def _cost_note(costs: list[str]) -> str:
    notes = ["Means over finished seeds."]
    if "flops_per_sample" in costs:
        notes.append("FLOPs: one training step's forward and backward pass per sample "
                     "(torch.utils.flop_counter).")
    if "train_seconds" in costs:
        notes.append("Time: training wall time per trial on the machine that ran it.")
    memory = ("on CUDA the most memory torch allocated during the trial (peak statistics reset "
              "when it starts), on CPU under Linux the process's peak resident memory during "
              "the trial, Python and torch included")
    if "peak_mem_mb" in costs:
        notes.append(f"Peak memory: {memory}; — where it could not be measured per trial.")
    else:
        notes.append("No peak memory: no trial here logged it. The built-in training loop "
                     f"measures it per trial: {memory}; train=fn studies and other systems "
                     "have no figure.")
    return " ".join(notes)


def _ui_note(summary: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Where MLflow's UI group means (diverged runs' values included) differ from the report's."""
    differ = summary[np.isfinite(summary["ui_mean"]) & ~np.isclose(
        summary["ui_mean"], summary["mean"], rtol=1e-9, atol=0, equal_nan=True)]
    if differ.empty:
        return []
    items = ", ".join(f"{escape(r['label'])} (UI {format_number(r['ui_mean'])}, report "
                      f"{format_number(r['mean'])})" for _, r in differ.head(10).iterrows())
    if len(differ) > 10:
        items += f" and {len(differ) - 10} more"
    return [f"The variant rows of MLflow's UI show these same means (diverged and failed "
            f"trials left out). MLflow's own \"group by\" of the trial runs would average every "
            f"run that logged a final {escape(spec.metric)}, diverged runs included, and differ "
            f"for: {items}.", ""]


def _tuned_values(results: pd.DataFrame) -> dict[str, str]:
    """Variant -> the tuned settings its trials used (tag ``ablate.tuned``), formatted."""
    if "tuned" not in results:
        return {}
    out = {}
    firsts = results.dropna(subset=["tuned"]).groupby("variant")["tuned"].first()
    for variant, text in firsts.items():
        if text:
            values = json.loads(text)
            out[variant] = ", ".join(f"{escape(k)}={escape(_short(v))}" for k, v in values.items())
    return out


def _short(value: object) -> str:
    return format_number(value) if isinstance(value, float) else str(value)


def tuning_section(tuning: pd.DataFrame | None, spec: ReportSpec) -> list[str]:
    """Per variant: the best values its own search found, the best score, the trial counts."""
    if tuning is None or tuning.empty or not spec.tune:
        return []
    keys = list(spec.tune["space"])
    rows = []
    for variant, group in tuning.groupby("variant", sort=False):
        done = group[group["status"] == "finished"]
        best = (done.loc[done["value"].idxmax() if spec.mode == "max" else done["value"].idxmin()]
                if len(done) else None)
        counts = group["status"].value_counts()
        rows.append([
            escape(group["label"].iloc[0]),
            DASH if best is None else ", ".join(f"{escape(k)}={escape(_short(best[k]))}"
                                                for k in keys),
            DASH if best is None else format_number(best["value"]),
            f"{len(group)} ({counts.get('finished', 0)} finished, "
            f"{counts.get('diverged', 0)} pruned, {counts.get('failed', 0)} failed)",
        ])
    space = "; ".join(f"{escape(k)}: {escape(v)}" for k, v in spec.tune["space"].items())
    settings = ", ".join(f"{escape(k)}={escape(v)}" for k, v in spec.tune["config"].items())
    return [
        "## Tuning",
        "",
        f"Each variant got its own search with the same budget: {spec.tune['trials']} tuning "
        f"trials of Optuna's TPE sampler (seeded, seed {spec.tune['seed']}) over {space}"
        + (f", trained with {settings}" if settings else "")
        + f", scored on the final {escape(spec.metric)}; tuning trials whose loss became NaN or "
        "infinite were pruned. Each variant's seeds were then trained with its best values.",
        "",
        md_table(["Variant", "Best values", f"Best {escape(spec.metric)}", "Tuning trials"], rows,
               numeric=(2,)),
        "",
    ]
