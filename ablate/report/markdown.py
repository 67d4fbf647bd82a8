"""The markdown report: the answer first, then the evidence, methods and provenance.

Order: findings in sentences (what helped, what hurt, what was unstable, what the data cannot
tell), one narrow table of the design's effects and the forest plot of the same intervals; for
factorial designs the simple effects, cells at a trivial value and every variant against the
baseline; variants with their costs; figures; further analyses; methods; provenance.

Everything that comes from a study file (labels, levels, names, environment values) goes through
:func:`escape`, so it renders as text on GitHub: no raw HTML, no broken tables.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report import plots
from ablate.report.boundaries import SPENDING
from ablate.report.effects import (
    FACTORIAL,
    dominant_factor,
    effects,
    trivial_cells,
    without_trivial,
)
from ablate.report.fmt import (
    DASH,
    escape,
    format_count,
    format_mb,
    format_number,
    format_p,
    format_seconds,
    interval,
    p_phrase,
    plural,
    plus_minus,
)
from ablate.report.sequential import MAX_SEEDS, scheduled
from ablate.report.spec import ALPHA, ReportSpec
from ablate.report.stats import compare, importance, summarize
from ablate.study import short_names

DECIDED = ("helps", "hurts", "interaction found", "negligible")
KIND_ORDER = ("helps", "hurts", "interaction found", "negligible", "unstable", "no clear effect",
              "undecided", "not enough data", "all diverged", "all failed")
MAX_NAMED = 8


def _table(header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    """A GitHub markdown table of already-escaped cells (pandas' ``to_markdown``)."""
    align = ["right" if i in numeric else "left" for i in range(len(header))]
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    return frame.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)


def _fence(text: str, info: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


# ------------------------------------------------------------------------------ the answer
def _seeds(row: pd.Series) -> str:
    """``2/3 (1 diverged)``: seeds a contrast used, why it lost the others, and on how many a
    factorial average had to leave out a lost cell (``partial``)."""
    lost = [f"{row[f'lost_{s}']} {s}" for s in ("diverged", "failed", "missing")
            if row[f"lost_{s}"]]
    if row.get("n_partial", 0):
        lost.append(f"{row['n_partial']} partial")
    return f"{row['n_pairs']}/{row['n_seeds']}" + (f" ({', '.join(lost)})" if lost else "")


def _verdict(row: pd.Series) -> str:
    text = escape(row["verdict"])
    return f"**{text}**" if row["outcome"] in (*DECIDED, "unstable") else text


def _display_order(family: pd.DataFrame) -> pd.DataFrame:
    """Main effects grouped by factor (largest effect first), then interactions by size, then
    simple effects; other designs keep the study's order."""
    if family.empty or not family["kind"].isin(["main", "interaction"]).any():
        return family
    family = family.assign(_size=family["diff"].abs().fillna(-1))
    family["_factor"] = family.groupby("factor")["_size"].transform("max")
    main = family[family["kind"] == "main"].sort_values(["_factor", "factor", "_size"],
                                                        ascending=False)
    inter = family[family["kind"] == "interaction"].sort_values("_size", ascending=False)
    simple = family[family["kind"] == "simple"]
    return pd.concat([main, inter, simple]).drop(columns=["_factor", "_size"])


def _first_table_rows(family: pd.DataFrame) -> pd.DataFrame:
    """The first table shows every test but the simple effects (they get their own)."""
    return family[family["kind"] != "simple"] if len(family) else family


def _p_header(spec: ReportSpec) -> str:
    """Holm's adjusted p, or the step-down's when it also weighs equivalence or looks."""
    return "p (Holm)" if spec.min_effect is None and spec.adaptive is None else "p (adj.)"


def _effects_table(rows: pd.DataFrame, spec: ReportSpec, first: str) -> str:
    header = [first, f"Δ {escape(spec.metric)} ± CI", _p_header(spec), "Verdict", "Seeds"]
    body = [
        [escape(r["term"]), plus_minus(r["diff"], r["ci_low"], r["ci_high"], signed=True),
         format_p(r["p_holm"]), _verdict(r), _seeds(r)]
        for _, r in rows.iterrows()
    ]
    return _table(header, body, numeric=(1, 2))


def _phrase(row: pd.Series, metric: str) -> str:
    """``term (val_acc +0.08 ± 0.06, p = 0.010)`` for running text; an interaction says what
    its difference of differences is."""
    g = f", g_z = {format_number(row['hedges_g'])}" if np.isfinite(row["hedges_g"]) else ""
    estimate = plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True)
    if row["kind"] == "interaction":
        return (f"{escape(row['term'])} ({metric} {estimate}, {p_phrase(row['p_holm'])}: "
                f"{escape(row['meaning'])})")
    return f"{escape(row['term'])} ({metric} {estimate}{g}, {p_phrase(row['p_holm'])})"


def _named(items: list[str]) -> str:
    more = len(items) - MAX_NAMED
    return "; ".join(items[:MAX_NAMED]) + (f"; and {more} more in the tables below" if more > 0
                                            else "")


def _by_size(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.iloc[np.argsort(-rows["diff"].abs().fillna(-1).to_numpy(), kind="stable")]


def _unstable_phrase(row: pd.Series) -> str:
    label = escape(row["label"])
    if row["outcome"] == "all diverged":
        return f"{label} (diverged on every seed)"
    if row["outcome"] == "all failed":
        return f"{label} (failed on every seed)"
    return f"{label} ({escape(row['unstable'])})"


def _findings(family: pd.DataFrame, comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """The opening sentences, each group ordered by effect size."""
    metric = escape(spec.metric)
    lines = []
    for outcome, title in (("helps", "Helps"), ("hurts", "Hurts"),
                           ("interaction found", "Interactions")):
        rows = _by_size(family[family["outcome"] == outcome])
        if len(rows):
            items = [_phrase(r, metric) for _, r in rows.iterrows()]
            lines.append(f"- **{title}:** {_named(items)}.")
    lost = comparison[comparison["outcome"].isin(["unstable", "all diverged", "all failed"])]
    if len(lost):
        items = [_unstable_phrase(r) for _, r in lost.iterrows()]
        lines.append("- **Unstable** (k/n: lost to divergence or failure on k of the n seeds "
                     f"where the baseline finished): {_named(items)}.")
    negligible = _by_size(family[family["outcome"] == "negligible"])
    if len(negligible):
        items = [f"{escape(r['term'])} ({interval(r['ci_low'], r['ci_high'])})"
                 for _, r in negligible.iterrows()]
        lines.append(f"- **Negligible** (the whole interval lies inside ±{_band(spec)}, the "
                     f"smallest effect that matters: these do not matter): {_named(items)}.")
    unclear = _by_size(family[family["outcome"].isin(["no clear effect", "undecided"])
                              & (family["kind"] != "simple")])
    if len(unclear):
        items = [f"{escape(r['term'])} ({interval(r['ci_low'], r['ci_high'])})"
                 for _, r in unclear.iterrows()]
        seeds = int(family["n_pairs"].max())
        hint = (f" With {plural(seeds, 'paired seed')} each test has {seeds - 1} degrees of "
                "freedom, so intervals are wide; more seeds narrow them fast."
                if 2 <= seeds < 5 else "")
        if spec.min_effect is None:
            lines.append("- **Cannot tell** (no clear effect: the data fit every effect in the "
                         f"interval, 0 included): {_named(items)}.{hint} No clear effect is "
                         "not evidence of no effect: an interval that includes 0 also includes "
                         "effects as large as its bounds. To find out which changes do not "
                         "matter, set min_effect (the smallest effect that matters).")
        else:
            lines.append(f"- **Undecided** (the interval includes 0 and crosses ±{_band(spec)}: "
                         "the data fit both no effect and one that matters): "
                         f"{_named(items)}.{hint}")
    few = family[family["outcome"] == "not enough data"]
    if len(few):
        lines.append("- **Not enough data** (fewer than 2 seeds where both sides finished): "
                     f"{_named([escape(t) for t in few['term']])}.")
    if spec.adaptive is not None:
        lines.append(f"- {_saving_line(spec)}")
    lines.append(f"- {_count_line(family, spec)}")
    return lines


def _band(spec: ReportSpec) -> str:
    """``0.01 val_acc``: the smallest effect of interest with its unit."""
    return f"{format_number(spec.min_effect)} {escape(spec.metric)}"


COUNT_WORDS = {"helps": ("helps", "help"), "hurts": ("hurts", "hurt"),
               "no clear effect": ("with no clear effect",) * 2,
               "not enough data": ("with not enough data",) * 2}


def _count_line(family: pd.DataFrame, spec: ReportSpec) -> str:
    """``Of 16 tests: 1 helps, 3 hurt, 1 unstable, 11 with no clear effect (...)``."""
    counts = family["outcome"].value_counts()
    parts = [f"{n} {COUNT_WORDS.get(kind, (kind, kind))[n != 1]}"
             for kind in KIND_ORDER if (n := int(counts.get(kind, 0)))]
    how = "Holm-adjusted" if spec.min_effect is None else "step-down adjusted (Holm–Shaffer)"
    looks = ", at group-sequential boundaries" if spec.adaptive is not None else ""
    return (f"Of {plural(len(family), 'test')}: {', '.join(parts)} (paired over seeds, "
            f"{how} across all {len(family)}{looks}, α = {ALPHA}).")


def _saving_line(spec: ReportSpec) -> str:
    """``Seeds (adaptive, 3 to 12 per variant): 60 of 192 trials, 132 (69%) saved ...``."""
    low, high = spec.adaptive
    full = spec.n_variants * high
    used = spec.n_planned
    return (f"**Seeds** (adaptive, {low} to {high} per variant, until each comparison is "
            f"decided): {used} of the {full} trials of giving every variant {high} seeds, "
            f"{full - used} ({(full - used) / full:.0%}) saved; each variant's seeds and why it "
            "stopped are under Seeds per variant.")


def _conclusion(family: pd.DataFrame, comparison: pd.DataFrame, spec: ReportSpec,
                forest: Path | None) -> list[str]:
    lines = ["## Conclusion", ""]
    if family.empty:
        return lines + ["Only one variant ran, so there is nothing to compare against the "
                        "baseline.", ""]
    lines += _findings(family, comparison, spec) + [""]
    shown = _first_table_rows(family)
    first = "Effect" if spec.design in FACTORIAL else "Change"
    lines += [_effects_table(shown, spec, first), ""]
    lines.append(
        "Δ: the change's effect on the metric, paired by seed"
        + (", averaged over the other factors; an interaction is a difference of differences"
           if spec.design in FACTORIAL else "")
        + f". ± CI: the {'Holm' if spec.min_effect is None else 'step-down'}-adjusted "
        + ("repeated (group-sequential) " if spec.adaptive is not None else "")
        + "interval that decides the verdict (it excludes 0 exactly when the verdict is helps, "
        "hurts or interaction found"
        + (f"; it lies inside ±{_band(spec)} exactly when it is negligible, which comes first"
           if spec.min_effect is not None else "")
        + "; see Methods). Seeds: seeds where both sides finished, of the "
        + ("seeds scheduled for both" if spec.adaptive is not None else "study's")
        + ("; partial: seeds where a cell of the average was lost (it is averaged over the "
           "cells that finished there; which cells were lost is under Unstable)."
           if (family.get("n_partial", pd.Series(dtype=int)) > 0).any() else ".")
    )
    lines += ["", *_aliasing(spec)]
    if forest is not None:
        caption = "The table's effects with the same intervals, coloured by verdict" + (
            f"; the shaded band is ±{_band(spec)}, the smallest effect that matters."
            if spec.min_effect is not None else ".")
        lines += [f"![{caption}]({forest.name})", "", f"*{caption}*", ""]
    return lines + _seeds_section(comparison, spec)


def _seeds_section(comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Adaptive studies: each variant's seeds and why it stopped there."""
    if spec.adaptive is None or comparison.empty:
        return []
    low, high = spec.adaptive
    rows = []
    for _, c in comparison.iterrows():
        n = spec.seeds_of(c["variant"])
        stop = spec.stops.get(c["variant"])
        why = ("still running" if stop is None else
               f"{MAX_SEEDS} ({high}), still {escape(c['outcome'])}" if stop == MAX_SEEDS
               else f"decided at {n} seeds: {escape(stop)}")
        rows.append([escape(c["label"]), str(n), why])
    base = max(spec.seed_counts.values(), default=low)
    return ["### Seeds per variant", "",
            f"Every variant started with {plural(low, 'seed')}; after each round a variant "
            f"whose comparison with the baseline was decided stopped, the others got the next "
            f"seed, up to {high}. The baseline ran every seed a variant ran ({base}).", "",
            _table(["Variant", "Seeds", "Stopped because"], rows, (1,)), ""]


def _aliasing(spec: ReportSpec) -> list[str]:
    """Fractional designs: which two-factor interactions each main effect is confounded with."""
    if spec.design != "fractional" or not spec.aliases:
        return []
    names = short_names(spec.factors)

    def term(name: str) -> str:
        return " × ".join(escape(names.get(part, part)) for part in name.split(":"))

    items = [f"{term(main)} with {', '.join(term(t) for t in aliased)}"
             for main, aliased in spec.aliases.items() if main in spec.factors]
    return ["Fractional design: each main effect is confounded (aliased) with the two-factor "
            f"interactions listed, so an apparent main effect may be one of them: "
            f"{'; '.join(items)}.", ""]


# --------------------------------------------------------------------- factorial details
def _factorial_details(results, family, comparison, spec) -> list[str]:
    if spec.design not in FACTORIAL or family.empty:
        return []
    lines = ["## Factorial analysis", ""]
    simple = family[family["kind"] == "simple"]
    dominant = dominant_factor(family)
    if len(simple) and dominant is not None:
        name = escape(short_names(spec.factors)[dominant])
        lines += [
            f"### Simple effects within each level of {name}",
            "",
            f"{name} has the largest main effect; each other factor's effect within each of its "
            "levels (same Holm family as the table above):",
            "",
            _effects_table(simple, spec, "Effect"),
            "",
        ]
    lines += _trivial_section(results, spec)
    lines += [
        "### Every variant against the baseline",
        "",
        f"Each cell against the baseline, paired by seed; these {len(comparison)} comparisons "
        "are a Holm family of their own.",
        "",
        _variant_table(comparison, summarize(results, spec), spec),
        "",
    ]
    return lines


def _trivial_section(results: pd.DataFrame, spec: ReportSpec) -> list[str]:
    trivial = trivial_cells(results, spec)
    if trivial is None:
        return []
    labels = dict(zip(results["variant"], results["label"]))
    names = ", ".join(escape(labels[v]) for v in trivial["variants"])
    partly = "; ".join(f"{escape(labels[v])} ({k} of {plural(n, 'seed')})"
                       for v, (k, n) in trivial["partly"].items())
    table = without_trivial(results, spec, trivial["variants"])
    rows = [[escape(r["term"]), format_number(r["all"], signed=True),
             format_number(r["trained"], signed=True), f"{r['kept']}/{r['pairs']}"]
            for _, r in table.iterrows()]
    return [
        "### Cells at a trivial value",
        "",
        f"{plural(len(trivial['variants']), 'variant')} sit {escape(trivial['rule'])}, "
        f"{escape(spec.metric)} ≈ {format_number(trivial['value'])}, on every seed: {names}."
        + (f" Some seeds of others do too: {partly}." if partly else "")
        + " A main effect averages over every cell, these included, so a factor that pushes "
        "some cells there shows a large average effect even where it changes little among the "
        "cells that trained, and the other factors' effects are diluted; the interactions and "
        "simple effects show where. The same main effects over the matched pairs of cells "
        "where neither is at the trivial value (mean over seeds; descriptive, not tested):",
        "",
        _table(["Effect", "Δ all cells", "Δ trained cells", "Pairs kept"], rows, (1, 2, 3)),
        "",
    ]


def _variant_table(comparison: pd.DataFrame, summary: pd.DataFrame, spec: ReportSpec) -> str:
    comp = comparison.set_index("variant")
    rows = []
    for _, s in summary.iterrows():
        mean = plus_minus(s["mean"], s["ci_low"], s["ci_high"])
        if s["variant"] not in comp.index:
            rows.append([escape(s["label"]), mean, DASH, DASH, "baseline", _trials(s, spec)])
            continue
        c = comp.loc[s["variant"]]
        rows.append([escape(s["label"]), mean,
                     plus_minus(c["diff"], c["ci_low"], c["ci_high"], signed=True),
                     format_p(c["p_holm"]), _verdict(c), _seeds(c)])
    header = ["Variant", f"{escape(spec.metric)} (mean ± 95% CI)", "Δ ± CI", _p_header(spec),
              "Verdict", "Seeds"]
    return _table(header, rows, numeric=(1, 2, 3))


def _trials(row: pd.Series, spec: ReportSpec) -> str:
    lost = [f"{row[f'n_{s}']} {s}" for s in ("diverged", "failed", "missing") if row[f"n_{s}"]]
    return f"{row['n_finished']}/{spec.seeds_of(row['variant'])}" + (
        f" ({', '.join(lost)})" if lost else "")


# ------------------------------------------------------------------------- variants, costs
COSTS = {"n_params": ("Params", format_count), "flops_per_sample": ("FLOPs/sample", format_count),
         "train_seconds": ("Time/trial", format_seconds), "peak_mem_mb": ("Peak memory", format_mb)}


def _costs(results: pd.DataFrame, summary: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Each variant's mean and its costs; cost columns no trial logged are left out."""
    tuned = _tuned_values(results)
    costs = [c for c in COSTS if summary[c].notna().any()]
    rows = [
        [escape(s["label"]), plus_minus(s["mean"], s["ci_low"], s["ci_high"]),
         *(COSTS[c][1](s[c]) for c in costs), *([tuned.get(s["variant"], DASH)] if tuned else [])]
        for _, s in summary.iterrows()
    ]
    header = ["Variant", f"{escape(spec.metric)} (mean ± 95% CI)",
              *(COSTS[c][0] for c in costs), *(["Tuned values"] if tuned else [])]
    numeric = tuple(range(1, 2 + len(costs)))
    lines = ["## Variants and costs", "", _table(header, rows, numeric), "", _cost_note(costs), ""]
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
                      f"{format_number(r['mean'])})" for _, r in differ.iterrows())
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


def _tuning_section(tuning: pd.DataFrame | None, spec: ReportSpec) -> list[str]:
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
        _table(["Variant", "Best values", f"Best {escape(spec.metric)}", "Tuning trials"], rows,
               numeric=(2,)),
        "",
    ]


def _status_line(summary: pd.DataFrame, spec: ReportSpec) -> str | None:
    finished, diverged, failed = (
        int(summary[f"n_{s}"].sum()) for s in ("finished", "diverged", "failed")
    )
    missing = max(spec.n_planned - finished - diverged - failed, 0)
    if finished >= spec.n_planned:
        return None
    parts = [
        f"{n} {what}"
        for n, what in ((diverged, "diverged"), (failed, "failed"), (missing, "running/missing"))
        if n
    ]
    return f"> **{finished} of {spec.n_planned} trials finished**; {', '.join(parts)}."


# -------------------------------------------------------------------------------- figures
def _figures(results, history, spec, scores, out_dir, cams) -> list[str]:
    metric = escape(spec.metric)
    figures = [
        (plots.interaction_plot(results, spec, out_dir / "interactions.png"),
         f"Mean final {metric} for pairs of factors, averaged over seeds and the other factors; "
         "lines that are not parallel show an interaction."),
        (plots.learning_curves(history, spec, out_dir / "learning_curves.png"),
         f"{metric} per epoch, mean across seeds (band: ±1 SD across seeds); the baseline, in "
         "black, is in every panel."),
        (plots.seed_plot(results, spec, out_dir / "seeds.png"),
         f"Final {metric} of every finished seed (points) and quartiles (boxes); diverged and "
         "failed trials are counted on the right."),
        (plots.cost_plot(results, spec, out_dir / "cost.png"),
         f"Mean final {metric} against cost. The red line, where drawn, is the Pareto front over "
         "FLOPs (or parameters): no other variant is both cheaper and better; wall time, on "
         "the right, depends on the machine and its load, so no front is drawn there."),
        (plots.activation_plot(history, spec, out_dir / "activations.png"),
         "Per-layer activation standard deviation at the final epoch, mean across seeds (band: "
         "min to max across seeds); on a log scale a layer whose SD is 0 (dead) leaves a gap."),
        (plots.importance_plot(scores, spec, out_dir / "importance.png"),
         f"Factor importance for {metric} (Optuna fANOVA, share of variance)."),
    ]
    if cams is not None:
        target = out_dir / "cams.png"
        if Path(cams).resolve() != target.resolve():
            shutil.copyfile(cams, target)
        figures.append((target, "Class activation maps of each variant with a CAM, on the same "
                                "validation images (one seed each)."))
    return [f"![{caption}]({path.name})\n\n*{caption}*" for path, caption in figures if path]


# ------------------------------------------------------------------------ more analyses
def _importance_section(scores: pd.Series) -> list[str]:
    if scores.empty:
        return []
    rows = [[escape(f), format_number(v)] for f, v in scores.items()]
    return ["## Factor importance", "", "Optuna fANOVA importance (seed 0), sums to 1:", "",
            _table(["Factor", "Importance"], rows, (1,)), ""]


# -------------------------------------------------------------------------------- methods
def _methods(summary: pd.DataFrame, family: pd.DataFrame, spec: ReportSpec) -> list[str]:
    n = summary["n_finished"]
    n_text = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    seeds = ", ".join(map(str, spec.seeds))
    factorial = spec.design in FACTORIAL
    lines = [
        "## Methods",
        "",
        f"- **Design:** {escape(spec.design)}, {spec.n_variants} variants × "
        + (f"{plural(len(spec.seeds), 'seed')} ({seeds}); every variant uses the same seeds."
           if spec.adaptive is None else
           f"{spec.adaptive[0]} to {spec.adaptive[1]} seeds, adaptive (below); variants that "
           "continue all get the same next seed, and the baseline runs every seed any variant "
           "runs."),
        f"- **Metric:** final {escape(spec.metric)} ({spec.mode}imised); {n_text} finished "
        "seeds per variant. Diverged, failed and running trials are counted per variant and "
        "left out of means and pairs (MLflow's UI group means include diverged runs that logged "
        "a value).",
        "- **Mean and CI of a variant:** 95% Student t-interval of the mean, mean ± "
        "t(0.975, n−1)·s/√n (scipy.stats); none with a single finished seed.",
        "- **Paired contrasts:** each comparison is computed per seed, over the seeds where the "
        "variants it compares finished, and tested with a one-sample t-test of those per-seed "
        "values (the paired t-test; scipy.stats)."
        + (" A factorial effect averages, on each seed, the matched cell differences whose "
           "cells both finished there, so a cell lost on one seed drops only its own pairs."
           if factorial else ""),
    ]
    if factorial:
        lines.append(
            "- **Factorial effects:** a main effect is the difference between two levels of a "
            "factor averaged over the other factors (per seed: the mean over matched cells of "
            "the cell difference; in a fractional design the difference of the two levels' "
            "means, aliased as stated under the first table), for every pair of levels; a "
            "two-factor interaction is the difference of differences (B's effect when A is "
            "changed minus B's effect at A's baseline level), averaged over the other "
            "factors; simple effects are each factor's effect within each level of the factor "
            "with the largest main effect."
        )
    else:
        lines.append(
            "- **Comparisons:** each variant against the baseline, and every pair of levels of "
            "a factor whose levels were each run with everything else at the baseline."
        )
    lines += [
        f"- **Multiple comparisons:** Holm's step-down correction across all {len(family)} "
        f"tests of the first table{' and the simple effects' if factorial else ''} "
        f"(adjusted p-values as statsmodels' multipletests gives them); α = {ALPHA}."
        + (" The per-variant comparisons with the baseline are a second Holm family."
           if factorial else ""),
        "- **Intervals (Holm-consistent):** with the family's p-values sorted, p(1) ≤ … ≤ p(m), "
        "Holm rejects the first r; a rejected test of rank k shows the paired-t interval at "
        "confidence 1 − α/(m − k + 1), the level its own step used, and every other test the "
        "level where Holm stopped, 1 − α/(m − r). So an interval excludes 0 exactly when Holm "
        "rejects, and the verdict is read off the interval.",
        *_min_effect_methods(spec),
        *_sequential_methods(spec),
        "- **Verdict:** helps/hurts (interaction found, for interactions) when the interval "
        "excludes 0, direction from whether higher or lower is better; "
        + ("otherwise no clear effect (which is not evidence of no effect: the interval "
           "also fits effects as large as its bounds). " if spec.min_effect is None else
           f"negligible when it lies inside ±{_band(spec)} (before helps/hurts: a real but "
           "unimportant effect is negligible); otherwise undecided. ")
        + "*Unstable (k/n diverged)* when the changed side diverged or failed on k of the "
        "n seeds where the other side finished (whatever its finished seeds show; if they "
        "differ clearly too, the verdict says so)"
        + (" — judged per variant against the baseline, since a lost cell has a matched "
           "partner in every factor and so cannot be pinned on one" if factorial else "")
        + "; all diverged / all failed when it never finished; not enough data with fewer "
        "than 2 usable seeds.",
        "- **Effect size:** Hedges' g for paired data, g_z = J·d_z, d_z = mean(d)/sd(d) of the "
        "per-seed differences d, J = 1 − 3/(4(n−1) − 1); given in the sentences above only with "
        "5 or more pairs and when the differences vary (|d_z| ≤ 100).",
    ]
    if factorial:
        lines.append(
            "- **Cells at a trivial value:** with a known chance level (1/num_classes for an "
            "accuracy whose config sets `model.num_classes`), cells whose every finished seed "
            "is within 10% of the way from chance to the best cell's mean. Otherwise, for an "
            "accuracy, the lowest finished trial's value when it is at most 0.5 and at least "
            "two cells have every finished seed within 5% of the way from it to the best cell "
            "(a floor several configurations fall to). Other metrics: not flagged."
        )
    return lines + ["", *_settings(spec)]


def _min_effect_methods(spec: ReportSpec) -> list[str]:
    if spec.min_effect is None:
        return []
    return [
        f"- **Smallest effect of interest (min_effect = {_band(spec)}):** *negligible* is an "
        "equivalence finding: the interval shown lies inside ±min_effect, i.e. both one-sided "
        "tests (two one-sided tests, TOST) reject an effect of min_effect or more, each at half "
        "the interval's level. Each comparison can so make two claims, \"differs from 0\" and "
        "\"smaller than min_effect\", and at most one of their null hypotheses is true, so the "
        "step-down above runs over both kinds of claim (Shaffer's refinement of Holm's): the "
        "k-th smallest p-value is tested at α/t, t being the number of comparisons that still "
        "have a claim to settle, and a comparison leaves the count only once both its claims "
        "are accepted. This controls the family-wise rate of false claims of either kind at α; "
        "the price is that a clear effect frees no level for the others (Holm's does). Each "
        "interval is at the level of the step that settled its last claim, else where the "
        "procedure stopped, so the verdicts are read off the intervals shown.",
    ]


def _sequential_methods(spec: ReportSpec) -> list[str]:
    if spec.adaptive is None:
        return []
    low, high = spec.adaptive
    return [
        f"- **Adaptive seeds (group-sequential):** every variant started with {low} seeds; "
        "after each round every variant was compared with the baseline (one family, as "
        "above), a decided variant (helps, hurts, negligible, unstable, all diverged/failed) "
        f"stopped and the others got the next seed, up to {high}. The schedule is replayed from "
        "the recorded results (each round decided on the trials scheduled by then), so it is "
        f"the same after a resume and here. Repeated looks are paid for by the {SPENDING} "
        f"α(t) = 2 − 2Φ(z₁₋α/2/√t) (Lan and DeMets 1983) over the looks at {low}, …, {high} "
        "paired seeds (t = n/max_seeds): the boundaries of the paired t-statistics are set so "
        "that a null comparison crosses at look k, and not before, with probability α(t_k) − "
        "α(t_{k−1}), computed on 131,072 simulated null paths (fixed seed; the t-statistic's "
        "law does not depend on the variance); a look whose share is too small to simulate "
        "gets that share as its nominal level (the union bound). A comparison's p-value is the "
        "smallest overall level at which it crosses its look's boundary, and its interval is a "
        "repeated confidence interval: the intervals of all looks cover the true difference "
        "together with probability 1 − α, so the one where a variant stopped is valid whatever "
        "made it stop, and the family-wise error rate over all looks stays at α (it is "
        "conservative at the stopping time). Factorial effects use the seeds all their cells "
        "were scheduled for.",
    ]


def _settings(spec: ReportSpec) -> list[str]:
    """The base settings every variant shares (the budget: epochs, data size, model size)."""
    shared = {k: v for k, v in spec.config.items() if k not in spec.factors}
    if not shared:
        return []
    rows = [[escape(k), escape(v if isinstance(v, str) else repr(v))] for k, v in shared.items()]
    return ["### Settings shared by every variant", "", _table(["setting", "value"], rows), ""]


def _provenance(spec: ReportSpec, samples: dict[str, str] | None) -> list[str]:
    lines = []
    if samples:
        lines += ["## Text samples", ""]
        for label, text in samples.items():
            lines += [f"**{escape(label)}**", "", _fence(str(text), "text"), ""]
    if spec.environment:
        rows = [[escape(k), escape(v)] for k, v in spec.environment.items()]
        lines += ["## Environment", "", _table(["Key", "Value"], rows), ""]
    if spec.mlflow:
        lines += ["## MLflow", ""] + [f"- {escape(k)}: {escape(v)}" for k, v in spec.mlflow.items()]
        lines.append("")
    if spec.command:
        lines += ["## Reproduce", "", _fence(spec.command, "sh"), ""]
    return lines


def write_report(
    results: pd.DataFrame,
    history: pd.DataFrame,
    spec: ReportSpec,
    out_dir: str | Path,
    *,
    samples: dict[str, str] | None = None,
    cams: Path | None = None,
    tuning: pd.DataFrame | None = None,
) -> Path:
    """Write ``report.md``, its PNG figures and ``results.csv`` (one row per trial) to ``out_dir``.

    ``samples`` maps a variant label to generated text, shown in a code block each; ``cams`` is a
    PNG of class-activation maps, copied beside the report as ``cams.png``. Returns the report's
    path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, spec = scheduled(results, spec)
    results.to_csv(out_dir / "results.csv", index=False)
    summary = summarize(results, spec)
    family = effects(results, spec, alpha=ALPHA)
    comparison = compare(results, spec, alpha=ALPHA)
    scores = importance(results, spec)
    better = "higher" if spec.mode == "max" else "lower"
    lines = [
        f"# Ablation study: {escape(spec.name)}",
        "",
        f"Metric: **{escape(spec.metric)}** ({better} is better) · design: "
        f"{escape(spec.design)} · {spec.n_variants} variants × "
        + (f"{plural(len(spec.seeds), 'seed')}." if spec.adaptive is None else
           f"{spec.adaptive[0]} to {spec.adaptive[1]} seeds (adaptive).")
        + (f" Smallest effect of interest: ±{_band(spec)}." if spec.min_effect is not None
           else ""),
        "",
    ]
    lines += [line for note in spec.notes for line in (f"> {escape(note)}", "")]
    status = _status_line(summary, spec)
    if status:
        lines += [status, ""]
    table_rows = _display_order(family)
    forest = plots.forest_plot(_first_table_rows(table_rows), spec, out_dir / "forest.png")
    lines += _conclusion(table_rows, comparison, spec, forest)
    lines += _factorial_details(results, table_rows, comparison, spec)
    lines += _costs(results, summary, spec)
    lines += _tuning_section(tuning, spec)
    figures = _figures(results, history, spec, scores, out_dir, cams)
    if figures:
        lines += ["## Figures", "", "\n\n".join(figures), ""]
    lines += _importance_section(scores)
    lines += _methods(summary, family, spec)
    lines += _provenance(spec, samples)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
