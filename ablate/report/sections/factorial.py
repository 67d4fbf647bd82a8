"""The report's factorial analysis: simple effects, cells at a trivial value and every variant
against the baseline."""

from __future__ import annotations

import pandas as pd

from ablate.design import short_names
from ablate.report.fmt import DASH, escape, format_number, format_p, plural, plus_minus
from ablate.report.sections.common import (
    effects_table,
    listed,
    md_table,
    p_header,
    procedure_name,
    seeds_cell,
    verdict_cell,
)
from ablate.stats.compare import summarize
from ablate.stats.effects import FACTORIAL, dominant_factor, trivial_cells, without_trivial
from ablate.stats.spec import ReportSpec
from ablate.stats.verdict import Verdict


def factorial_details(results, family, comparison, spec) -> list[str]:
    if spec.design not in FACTORIAL or family.empty:
        return []
    lines = ["## Factorial analysis", ""]
    simple = family[family["kind"] == "simple"]
    dominant = dominant_factor(family, list(spec.factors))
    if len(simple) and dominant is not None:
        names = short_names(spec.factors)
        name = escape(names[dominant])
        lines += [
            f"### Simple effects within each level of {name}",
            "",
            f"{_why_dominant(family, dominant, names)}; each other factor's effect within each of "
            "its levels (the same family as the table above):",
            "",
            effects_table(simple, spec, "Effect"),
            "",
        ]
    lines += _trivial_section(results, spec)
    lines += [
        "### Every variant against the baseline",
        "",
        f"Each cell against the baseline, paired by seed; these {len(comparison)} comparisons "
        f"are a {procedure_name(spec)} family of their own"
        + (", the stopping rule's: each variant's row is from the round where it stopped."
           if spec.adaptive is not None else "."),
        "",
        _variant_table(comparison, summarize(results, spec), spec),
        "",
    ]
    return lines


def _why_dominant(family: pd.DataFrame, dominant: str, names: dict[str, str]) -> str:
    """Why the simple effects are within ``dominant``: its main effect is the largest, or as
    large as the largest within that one's interval and first in the study's order."""
    main = family[family["kind"] == "main"]
    top = main.loc[main["diff"].abs().idxmax(), "factor"]
    if top == dominant:
        return f"{escape(names[dominant])} has the largest main effect"
    return (f"{escape(names[dominant])}'s main effect is as large as the largest "
            f"({escape(names[top])}'s) within its 95% interval, and {escape(names[dominant])} "
            "comes first in the study's factors")


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
        md_table(["Effect", "Δ all cells", "Δ trained cells", "Pairs kept"], rows, (1, 2, 3)),
        "",
    ]


def _variant_table(comparison: pd.DataFrame, summary: pd.DataFrame, spec: ReportSpec) -> str:
    comp = comparison.set_index("variant")
    summary, which = listed(summary, spec)
    rows = []
    for _, s in summary.iterrows():
        mean = plus_minus(s["mean"], s["ci_low"], s["ci_high"])
        if s["variant"] not in comp.index:
            rows.append([escape(s["label"]), mean, DASH, DASH, Verdict.BASELINE.value,
                         _trials(s, spec)])
            continue
        c = comp.loc[s["variant"]]
        rows.append([escape(s["label"]), mean,
                     plus_minus(c["diff"], c["ci_low"], c["ci_high"], signed=True),
                     format_p(c["p_holm"]), verdict_cell(c), seeds_cell(c)])
    header = ["Variant", f"{escape(spec.metric)} (mean ± 95% CI)", "Δ ± CI", p_header(spec),
              "Verdict", "Seeds"]
    return md_table(header, rows, numeric=(1, 2, 3)) + (f"\n\n{which}" if which else "")


def _trials(row: pd.Series, spec: ReportSpec) -> str:
    lost = [f"{row[f'n_{s}']} {s}" for s in ("diverged", "failed", "missing") if row[f"n_{s}"]]
    return f"{row['n_finished']}/{spec.seeds_of(row['variant'])}" + (
        f" ({', '.join(lost)})" if lost else "")
