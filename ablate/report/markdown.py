"""The markdown report: the answer first, then the evidence, methods and provenance.

Order: findings in sentences (what helped, what hurt, what was unstable, what the data cannot
tell), one narrow table of the design's effects and the forest plot of the same intervals; for
factorial designs the simple effects, cells at a trivial value and every variant against the
baseline; each change's effect over the training budget; variants with their costs; figures;
further analyses; methods; provenance. Each part is written by a module of
:mod:`ablate.report.sections`; this one puts them together. Beside the report: its figures,
``results.csv`` and the tables for a paper (:mod:`ablate.report.paper`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ablate.report import paper, plots
from ablate.report.fmt import escape, format_number, plural
from ablate.report.sections.budget import budget_section, task_budget_section
from ablate.report.sections.common import band, md_table
from ablate.report.sections.conclusion import conclusion, display_order, first_table_rows
from ablate.report.sections.costs import costs_section, tuning_section
from ablate.report.sections.factorial import factorial_details
from ablate.report.sections.methods import methods_section, provenance
from ablate.stats.compare import compare, importance, summarize
from ablate.stats.effects import effects
from ablate.stats.sequential import scheduled
from ablate.stats.spec import ALPHA, ReportSpec


def write_report(
    results: pd.DataFrame,
    history: pd.DataFrame,
    spec: ReportSpec,
    out_dir: str | Path,
    *,
    samples: dict[str, str] | None = None,
    cams: Path | None = None,
    cams_missing: list[str] | None = None,
    tuning: pd.DataFrame | None = None,
) -> Path:
    """Write ``report.md``, its PNG figures, ``results.csv`` (one row per trial) and the
    effects as ``effects.csv`` and ``effects.tex`` (:mod:`ablate.report.paper`) to ``out_dir``.

    ``samples`` maps a variant label to generated text, shown in a code block each; ``cams`` is a
    PNG of class-activation maps, copied beside the report as ``cams.png``; without one,
    ``cams_missing`` names the variants whose trials recorded none. Returns the report's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, spec = scheduled(results, spec)
    results.to_csv(out_dir / "results.csv", index=False)
    if spec.tasks:
        return _write_tasks_report(results, history, spec, out_dir, tuning)
    summary = summarize(results, spec)
    family = effects(results, spec, alpha=ALPHA)
    comparison = compare(results, spec, alpha=ALPHA)
    scores = importance(results, spec)
    lines = _head(summary, spec)
    table_rows = display_order(family)
    forest = plots.forest_plot(first_table_rows(table_rows), spec, out_dir / "forest.png")
    tables = paper.write_tables(table_rows, spec, out_dir)
    lines += conclusion(table_rows, comparison, spec, forest, paper.links(tables))
    lines += factorial_details(results, table_rows, comparison, spec)
    lines += budget_section(results, history, table_rows, spec, out_dir)
    lines += costs_section(results, summary, spec)
    lines += tuning_section(tuning, spec)
    figures = _figures(results, history, spec, scores, out_dir, cams, cams_missing)
    if figures:
        lines += ["## Figures", "", "\n\n".join(figures), ""]
    lines += _importance_section(scores)
    lines += methods_section(summary, family, spec, results)
    lines += provenance(spec, samples)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def _head(summary: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """The title, the design in one line, the notes and what is missing."""
    better = "higher" if spec.mode == "max" else "lower"
    variants = (f"{spec.n_variants // max(len(spec.tasks), 1)} variants × "
                f"{plural(len(spec.tasks), 'task')} ({', '.join(map(escape, spec.tasks))}) × "
                if spec.tasks else f"{spec.n_variants} variants × ")
    lines = [
        f"# Ablation study: {escape(spec.name)}",
        "",
        f"Metric: **{escape(spec.metric)}** ({better} is better) · design: "
        f"{escape(spec.design)} · {variants}"
        + (f"{plural(len(spec.seeds), 'seed')}." if spec.adaptive is None else
           f"{spec.adaptive[0]} to {spec.adaptive[1]} seeds (adaptive).")
        + (f" Smallest effect of interest: ±{band(spec)}." if spec.min_effect is not None
           else ""),
        "",
    ]
    lines += [line for note in spec.notes for line in (f"> {escape(note)}", "")]
    status = _status_line(summary, spec)
    if status:
        lines += [status, ""]
    return lines


def _write_tasks_report(results: pd.DataFrame, history: pd.DataFrame, spec: ReportSpec,
                        out_dir: Path, tuning: pd.DataFrame | None) -> Path:
    """The report of a study with several tasks (:mod:`ablate.report.sections.tasks`): the
    change × task verdicts first with the figure of the effects over the training budget, each
    task's effects, the aggregates, each effect's course over the budget in words, then the
    variants of every task (labelled with their task), figures (each task's learning curves
    among them), methods and provenance."""
    from ablate.report.sections import tasks as sections
    from ablate.stats.tasks import TASK, task_family

    summary = summarize(results, spec)
    summary.insert(1, TASK, summary["variant"].map(dict(zip(results["variant"],
                                                                results[TASK]))))
    family = sections.task_rows(task_family(results, spec, alpha=ALPHA), spec)
    tables = paper.write_tables(family, spec, out_dir)
    lines = _head(summary, spec)
    budget, figure = task_budget_section(results, history, family, spec, out_dir)
    lines += sections.tasks_conclusion(family, spec, paper.links(tables))
    lines += figure  # the effects over the budget, on the first screen
    lines += sections.per_task_sections(family, summary, spec)
    lines += sections.across_section(family, spec)
    lines += budget
    labelled = sections.task_labels(results)
    lines += costs_section(labelled, sections.task_labels(summary), spec)
    lines += tuning_section(tuning, spec)
    figures = [
        (plots.seed_plot(labelled, spec, out_dir / "seeds.png"),
         f"Final {escape(spec.metric)} of every finished seed (points) and quartiles (boxes), "
         "each variant labelled with its task; diverged and failed trials are counted on the "
         "right."),
    ]
    task_of = dict(zip(results["variant"], results[TASK]))
    for task in spec.tasks:  # each task's own baseline in black, its variants around it
        mine = history[history["variant"].map(task_of) == task]
        figures.append((plots.learning_curves(mine, spec,
                                              out_dir / f"learning_curves_{task}.png", task),
                        f"{escape(task)}: {escape(spec.metric)} per epoch, mean across seeds "
                        "(band: ±1 SD across seeds); the task's baseline, in black, is in every "
                        "panel."))
    shown = [f"![{caption}]({path.name})\n\n*{caption}*" for path, caption in figures if path]
    if shown:
        lines += ["## Figures", "", "\n\n".join(shown), ""]
    methods = methods_section(summary, family, spec, results)
    at = next((i for i, line in enumerate(methods) if line.startswith("- **Famil")), None)
    if at is not None:  # one family across tasks: said by the tasks' own lines
        methods[at:at + 1] = sections.tasks_methods()
    lines += methods
    lines += provenance(spec, None)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


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


def _figures(results, history, spec, scores, out_dir, cams, cams_missing) -> list[str]:
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
    shown = [f"![{caption}]({path.name})\n\n*{caption}*" for path, caption in figures if path]
    if cams is None and cams_missing:
        shown.append(f"Class activation maps are not recorded for the trials of "
                     f"{', '.join(escape(label) for label in cams_missing)}: they were trained "
                     f"before ablate kept the maps when a trial ends (the report does not "
                     f"rebuild models).")
    return shown


def _importance_section(scores: pd.Series) -> list[str]:
    if scores.empty:
        return []
    rows = [[escape(f), format_number(v)] for f, v in scores.items()]
    return ["## Factor importance", "", "Optuna fANOVA importance (seed 0), sums to 1:", "",
            md_table(["Factor", "Importance"], rows, (1,)), ""]
