"""The markdown report: conclusion first, then figures, factorial analysis, methods, provenance.

Everything that comes from a study file (labels, levels, names, environment values) goes through
:func:`escape`, so it renders as text on GitHub: no raw HTML, no broken tables.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report import plots
from ablate.report.spec import ReportSpec
from ablate.report.stats import compare, factorial_effects, importance, summarize

ALPHA = 0.05
DASH = "—"


def escape(value: object) -> str:
    """User text as inert markdown: HTML-escaped, punctuation backslash-escaped, one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def format_number(x: float, signed: bool = False) -> str:
    """3 significant digits (trailing zeros kept); thousands without exponent; ``—`` if missing."""
    if x is None or not np.isfinite(x):
        return DASH
    if abs(x) >= 1000:
        return f"{x:+,.0f}" if signed else f"{x:,.0f}"
    return (f"{x:+#.3g}" if signed else f"{x:#.3g}").rstrip(".")


def format_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _format_count(n: float) -> str:
    if not np.isfinite(n):
        return DASH
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _format_seconds(s: float) -> str:
    if not np.isfinite(s):
        return DASH
    if s >= 7200:
        return f"{s / 3600:.3g} h"
    return f"{s / 60:.3g} min" if s >= 120 else f"{s:.3g} s"


def _plus_minus(centre: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(centre):
        return DASH
    if not np.isfinite(low):
        return f"{format_number(centre, signed)} (no CI)"
    return f"{format_number(centre, signed)} ± {format_number((high - low) / 2)}"


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


def _changes(results: pd.DataFrame, spec: ReportSpec) -> dict[str, str]:
    """Variant → ``factor: baseline level → level`` for each factor that differs."""
    first = results.drop_duplicates("variant").set_index("variant")
    out = {}
    for variant, row in first.iterrows():
        diffs = [
            f"{escape(f)}: {escape(spec.baseline[f])} → {escape(row[f])}"
            for f in spec.factors
            if f in row and f in spec.baseline and str(row[f]) != str(spec.baseline[f])
        ]
        out[variant] = "; ".join(diffs) or "(baseline)"
    return out


def _trials(row: pd.Series, n_seeds: int) -> str:
    lost = [f"{row[f'n_{s}']} {s}" for s in ("diverged", "failed", "missing") if row[f"n_{s}"]]
    return f"{row['n_finished']}/{n_seeds}" + (f" ({', '.join(lost)})" if lost else "")


def _conclusion_table(summary, comparison, results, spec) -> str:
    changes = _changes(results, spec)
    tuned = _tuned_values(results)
    comp = comparison.set_index("variant")
    rows = []
    for _, s in summary.iterrows():
        c = comp.loc[s["variant"]] if s["variant"] in comp.index else None
        verdict = "baseline" if c is None else c["verdict"]
        rows.append(
            [
                escape(s["label"]),
                changes[s["variant"]],
                _plus_minus(s["mean"], s["ci_low"], s["ci_high"]),
                DASH
                if c is None
                else _plus_minus(c["diff"], c["ci_low"], c["ci_high"], signed=True),
                DASH if c is None else format_p(c["p_holm"]),
                DASH if c is None else format_number(c["hedges_g"], signed=True),
                f"**{verdict}**" if verdict in ("helps", "hurts") else verdict,
                _trials(s, len(spec.seeds)),
                _format_count(s["n_params"]),
                _format_seconds(s["train_seconds"]),
                *([tuned.get(s["variant"], DASH)] if tuned else []),
            ]
        )
    header = [
        "Variant",
        "What changed",
        f"{escape(spec.metric)} (mean ± 95% CI)",
        "Δ vs baseline (± 95% CI)",
        "p (Holm)",
        "Hedges' g_z",
        "Verdict",
        "Finished",
        "Params",
        "Time/trial",
        *(["Tuned values"] if tuned else []),
    ]
    return _table(header, rows, numeric=(2, 3, 4, 5, 8, 9))


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


def _verdict_bullets(comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    if comparison.empty:
        return ["- Only one variant ran, so there is nothing to compare against the baseline."]
    counts = comparison["verdict"].value_counts()
    bullets = [
        f"- Of {len(comparison)} changes, {counts.get('helps', 0)} help, "
        f"{counts.get('hurts', 0)} hurt and {counts.get('no clear effect', 0)} show no clear "
        f"effect (paired t-test, Holm-corrected, α = {ALPHA})."
    ]
    for _, c in comparison[comparison["verdict"].isin(["helps", "hurts"])].iterrows():
        bullets.append(
            f"- **{escape(c['label'])}** {c['verdict']}: {escape(spec.metric)} "
            f"{format_number(c['diff'], signed=True)} vs baseline "
            f"(95% CI {format_number(c['ci_low'], signed=True)} to "
            f"{format_number(c['ci_high'], signed=True)}; "
            f"p = {format_p(c['p_holm'])} corrected; g_z = {format_number(c['hedges_g'])}; "
            f"{c['n_pairs']} paired seeds)."
        )
    for verdict in ("no clear effect", "not enough data", "all diverged", "all failed"):
        labels = comparison.loc[comparison["verdict"] == verdict, "label"]
        if len(labels):
            bullets.append(f"- {verdict.capitalize()}: " + ", ".join(map(escape, labels)) + ".")
    return bullets


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


def _figures(results, history, spec, comparison, scores, out_dir, cams) -> list[str]:
    metric, better = escape(spec.metric), "higher" if spec.mode == "max" else "lower"
    figures = [
        (
            plots.forest_plot(comparison, spec, out_dir / "forest.png"),
            f"Difference in {metric} from the baseline, mean over paired seeds with 95% CI, "
            f"coloured by verdict ({better} is better).",
        ),
        (
            plots.learning_curves(history, spec, out_dir / "learning_curves.png"),
            f"{metric} per epoch, mean across seeds (band: ±1 SD across seeds).",
        ),
        (
            plots.seed_plot(results, spec, out_dir / "seeds.png"),
            f"Final {metric} of every finished seed (points) and quartiles (boxes); diverged and "
            "failed trials are counted on the right.",
        ),
        (
            plots.interaction_heatmap(results, spec, out_dir / "interactions.png"),
            f"Mean final {metric} for pairs of the most influential factors (brighter is better).",
        ),
        (
            plots.importance_plot(scores, spec, out_dir / "importance.png"),
            f"Factor importance for {metric} (Optuna fANOVA, share of variance).",
        ),
        (
            plots.cost_plot(results, spec, out_dir / "cost.png"),
            f"Mean final {metric} against cost; the red line is the Pareto front (no other variant "
            "is both cheaper and better).",
        ),
        (
            plots.activation_plot(history, spec, out_dir / "activations.png"),
            "Per-layer activation standard deviation at the final epoch (log scale), mean across "
            "seeds.",
        ),
    ]
    if cams is not None:
        target = out_dir / "cams.png"
        if Path(cams).resolve() != target.resolve():
            shutil.copyfile(cams, target)
        figures.append((target, "Class-activation maps."))
    return [f"![{caption}]({path.name})\n\n*{caption}*" for path, caption in figures if path]


def _factorial_section(effects: dict, scores: pd.Series) -> list[str]:
    lines = []
    if effects:
        lines += ["## Factorial analysis", ""]
        anova = effects["anova"]
        if not anova.empty:
            aliased = anova["aliased_with"].astype(bool).any()
            header = ["Term", "df", "F", "p", "partial η²"] + (["Aliased with"] if aliased else [])
            rows = [
                [
                    escape(r["term"]),
                    f"{r['df']:g}",
                    format_number(r["F"]),
                    format_p(r["p"]),
                    format_number(r["partial_eta_sq"]),
                ]
                + ([escape(r["aliased_with"]) or DASH] if aliased else [])
                for _, r in anova.iterrows()
            ]
            lines += ["Type II ANOVA of the final metric:", "", _table(header, rows, (1, 2, 3, 4))]
            lines.append("")
        lines += [f"- {escape(note)}" for note in effects["notes"]] + [""]
        if not effects["level_means"].empty:
            rows = [
                [escape(r["factor"]), escape(r["level"]), format_number(r["mean"]), str(r["n"])]
                for _, r in effects["level_means"].iterrows()
            ]
            lines += ["Mean final metric per factor level (finished trials):", ""]
            lines += [_table(["Factor", "Level", "Mean", "n"], rows, (2, 3)), ""]
    if not scores.empty:
        rows = [[escape(f), format_number(v)] for f, v in scores.items()]
        lines += ["## Factor importance", "", "Optuna fANOVA importance (seed 0), sums to 1:", ""]
        lines += [_table(["Factor", "Importance"], rows, (1,)), ""]
    return lines


def _methods(summary: pd.DataFrame, comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    n = summary["n_finished"]
    n_text = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    seeds = ", ".join(map(str, spec.seeds))
    return [
        "## Methods",
        "",
        f"- **Design:** {escape(spec.design)}, {spec.n_variants} variants × {len(spec.seeds)} "
        f"seeds ({seeds}); every variant uses the same seeds.",
        f"- **Metric:** final {escape(spec.metric)} ({spec.mode}imised); {n_text} finished "
        "seeds per variant. Diverged, failed and running trials are counted per variant and "
        "excluded from means and pairs.",
        "- **Mean and CI:** 95% Student t-interval of the mean, mean ± t(0.975, n−1)·s/√n "
        "(scipy.stats); none with a single finished seed.",
        "- **Comparison:** each variant against the baseline, paired by seed over the seeds where "
        "both finished: paired t-test (scipy.stats.ttest_rel) and the paired-t 95% CI of the mean "
        "difference (variant − baseline).",
        f"- **Multiple comparisons:** Holm correction across all {len(comparison)} comparisons "
        f"(statsmodels multipletests); α = {ALPHA}.",
        "- **Effect size:** Hedges' g for paired data, g_z = J·d_z, d_z = mean(d)/sd(d) of the "
        "per-seed differences d, J = 1 − 3/(4(n−1) − 1); needs 3 pairs.",
        "- **Verdict:** helps/hurts when the corrected p < α (direction from whether higher or "
        "lower is better), otherwise no clear effect; not enough data with fewer than 2 pairs.",
        "- **Factorial analysis:** OLS with categorical factors and seed as a block, Type II "
        "ANOVA (statsmodels); importance by Optuna's fANOVA evaluator.",
        "",
        *_settings(spec),
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
    results.to_csv(out_dir / "results.csv", index=False)
    summary = summarize(results, spec)
    comparison = compare(results, spec, alpha=ALPHA)
    effects = factorial_effects(results, spec)
    scores = importance(results, spec)
    better = "higher" if spec.mode == "max" else "lower"
    lines = [
        f"# Ablation study: {escape(spec.name)}",
        "",
        f"Metric: **{escape(spec.metric)}** ({better} is better) · design: "
        f"{escape(spec.design)} · {spec.n_variants} variants × {len(spec.seeds)} seeds.",
        "",
    ]
    if spec.command:
        lines += ["Produced by:", "", _fence(spec.command, "sh"), ""]
    status = _status_line(summary, spec)
    if status:
        lines += [status, ""]
    lines += ["## Conclusion", "", _conclusion_table(summary, comparison, results, spec), ""]
    lines += _verdict_bullets(comparison, spec) + [""]
    lines += _tuning_section(tuning, spec)
    figures = _figures(results, history, spec, comparison, scores, out_dir, cams)
    if figures:
        lines += ["## Figures", "", "\n\n".join(figures), ""]
    lines += _factorial_section(effects, scores)
    lines += _methods(summary, comparison, spec)
    lines += _provenance(spec, samples)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
