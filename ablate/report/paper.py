"""Tables for a paper, written beside ``report.md``: ``effects.csv`` (every effect the report's
tables show, one row each, with full-precision numbers; a study with tasks adds each row's
task and the aggregates' homogeneity tests) and ``effects.tex`` (the first screen's
table as a booktabs ``tabular`` to ``\\input`` inside a ``table`` of your own; needs
``\\usepackage{booktabs}``). Both are read off the rows the report prints, so they cannot
disagree with it."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pandas as pd

from ablate.report.fmt import DASH, format_p, plus_minus
from ablate.report.sections.common import is_fragile, procedure_name, seeds_cell, verdict_form
from ablate.report.sections.conclusion import first_table_rows
from ablate.stats.effects import FACTORIAL, LEVELS_FAMILY
from ablate.stats.spec import ReportSpec
from ablate.stats.tasks import ACROSS, TASK

CSV, TEX = "effects.csv", "effects.tex"
COLUMNS = {  # effects() column -> effects.csv column
    "kind": "kind", "term": "effect", "factor": "factor", "within": "within", "diff": "diff",
    "ci_low": "ci_low", "ci_high": "ci_high", "confidence": "ci_level", "p": "p",
    "p_holm": "p_adjusted", "p_equiv_adj": "p_equivalence_adjusted", "verdict": "verdict",
    "outcome": "outcome", "fragile": "fragile", "more_seeds": "more_seeds_for_firm",
    "depends": "depends_on", "hedges_g": "hedges_g", "n_pairs": "seeds_paired",
    "n_seeds": "seeds", "lost_diverged": "lost_diverged", "lost_failed": "lost_failed",
    "lost_missing": "lost_missing", "reason": "reason",
}
TASK_COLUMNS = {  # and, in a study with tasks, the aggregates' (ablate.stats.tasks)
    "p_heterogeneity": "p_homogeneity", "p_heterogeneity_adj": "p_homogeneity_adjusted",
    "tau2": "tau2", "helps_on": "helps_on_tasks", "hurts_on": "hurts_on_tasks",
    "n_tasks": "tasks",
}
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "→": r"$\rightarrow$", "←": r"$\leftarrow$", "×": r"$\times$", "−": r"$-$", "±": r"$\pm$",
    "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "·": r"$\cdot$", "…": r"\dots{}",
    "—": "---", "–": "--", "°": r"$^{\circ}$", "µ": r"$\mu$",
}
GREEK_UPPER = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi",
               "Omega"}


def write_tables(family: pd.DataFrame, spec: ReportSpec, out_dir: Path) -> list[Path]:
    """Write ``effects.csv`` and ``effects.tex`` for the report's effects (``family`` in the
    report's display order) into ``out_dir``; nothing (``[]``) when there is no effect."""
    if family.empty:
        return []
    csv, tex = out_dir / CSV, out_dir / TEX
    effects_frame(family, spec).to_csv(csv, index=False)
    rows = first_table_rows(family)
    if TASK in rows:  # a study with tasks: each row names its task (or "across tasks")
        rows = rows.assign(term=rows[TASK].astype(str) + ": " + rows["term"].astype(str))
    tex.write_text(latex_table(rows, spec), encoding="utf-8")
    return [csv, tex]


def links(paths: list[Path]) -> list[str]:
    """The report's line pointing at the tables (none without them)."""
    if not paths:
        return []
    return [f"For a paper: every effect of this report's tables in [{CSV}]({CSV}) (full "
            f"precision, one row each) and the table above as a booktabs LaTeX tabular in "
            f"[{TEX}]({TEX}) (`\\input` it inside a table; needs `\\usepackage{{booktabs}}`).",
            ""]


def table_of(family: pd.DataFrame) -> pd.Series:
    """Which of the report's tables shows each row: ``first`` (under Conclusion), ``levels``
    (between levels of a factor, an adaptive study's second family) or ``simple`` (the simple
    effects under Factorial analysis)."""
    table = pd.Series("first", index=family.index, dtype=object)
    if "family" in family:
        table[family["family"] == LEVELS_FAMILY] = "levels"
    table[family["kind"] == "simple"] = "simple"
    return table


def effects_frame(family: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """``effects.csv``: one row per effect, in the order the report shows them (first table,
    between levels, simple effects), with the metric, the estimate, its interval and level,
    p and adjusted p, the verdict as printed and its kind, fragility and the seeds used and
    lost."""
    table = table_of(family)
    order = {"first": 0, "levels": 1, "simple": 2}
    rows = family.assign(_table=table).iloc[
        table.map(order).to_numpy().argsort(kind="stable")]
    out = pd.DataFrame({"table": rows["_table"], "metric": spec.metric})
    if TASK in rows:  # a study with tasks: which one; an aggregate's estimate is a g_z
        out.insert(1, TASK, rows[TASK])
        out.loc[rows[TASK] == ACROSS, "metric"] = f"g_z of {spec.metric}"
    for source, name in COLUMNS.items():
        out[name] = rows[source] if source in rows else pd.NA
    if TASK in rows:
        for source, name in TASK_COLUMNS.items():
            out[name] = rows[source]
    out["fragile"] = [is_fragile(r) for _, r in rows.iterrows()]
    return out.reset_index(drop=True)


def latex_escape(value: object) -> str:
    """User text as LaTeX text that compiles with pdflatex's defaults: special characters
    escaped, whitespace collapsed, the arrows, signs and Greek letters ablate writes in math
    mode; any other character beyond Latin-1 as ``[U+XXXX]`` rather than an error."""
    out = []
    for char in " ".join(str(value).split()):
        if char in LATEX_SPECIAL:
            out.append(LATEX_SPECIAL[char])
        elif ord(char) < 0x100:
            out.append(char)
        else:
            out.append(_greek(char) or f"[U+{ord(char):04X}]")
    return "".join(out)


def _greek(char: str) -> str | None:
    name = unicodedata.name(char, "")
    match = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (\w+)", name)
    if match is None:
        return None
    letter = match.group(2).lower().replace("lamda", "lambda")
    if match.group(1) == "CAPITAL":
        letter = letter.capitalize()
        if letter not in GREEK_UPPER:
            return None
    return None if letter == "omicron" else f"$\\{letter}$"


def latex_table(rows: pd.DataFrame, spec: ReportSpec) -> str:
    """The first screen's table (``rows``: its effects, and an adaptive study's pairs of
    levels under a rule of their own) as a booktabs ``tabular`` of five columns, as the
    markdown table has them: the effect, Δ ± the interval that decides its verdict, the
    adjusted p, the verdict (bold: a finding; italic with a dagger: fragile) and the seeds."""
    first = "Effect" if spec.design in FACTORIAL else "Change"
    p_name = ("$p$ (Holm)" if spec.min_effect is None and spec.adaptive is None
              else "$p$ (adj.)")
    header = [first, f"$\\Delta$ {latex_escape(spec.metric)} $\\pm$ CI", p_name, "Verdict",
              "Seeds"]
    levels = table_of(rows) == "levels"
    better = "higher" if spec.mode == "max" else "lower"
    lines = [
        f"% {TEX}: written by `ablate report` (study {latex_escape(spec.name)}, metric "
        f"{latex_escape(spec.metric)}, {better} is better). Needs \\usepackage{{booktabs}}.",
        f"% Delta: the change's effect, paired by seed. +- CI: the {_ascii(procedure_name(spec))}-"
        "adjusted interval that decides the verdict (its level: the report's Methods).",
        "% Bold verdict: a finding; italic with a dagger: fragile (adjusted p within a factor "
        "of 2 of alpha).",
        r"\begin{tabular}{lrrll}",
        r"\toprule",
        _row(header),
        r"\midrule",
        *(_row(_cells(r)) for _, r in rows[~levels].iterrows()),
    ]
    if levels.any():
        lines += [r"\midrule",
                  r"\multicolumn{5}{l}{\emph{Between levels of a factor (a second family)}} \\",
                  *(_row(_cells(r)) for _, r in rows[levels].iterrows())]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return " & ".join(cells) + r" \\"


def _cells(row: pd.Series) -> list[str]:
    return [latex_escape(row["term"]), _estimate(row), _p(row["p_holm"]), _verdict(row),
            latex_escape(seeds_cell(row))]


def _estimate(row: pd.Series) -> str:
    """``$-0.057 \\pm 0.026$``, or the estimate with ``(no CI)``, or ``---``."""
    text = plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True)
    if text == DASH:
        return "---"
    number, _, note = text.partition(" (")
    cell = "$" + number.replace(",", "{,}").replace("±", r"\pm") + "$"
    return cell + (f" ({latex_escape(note)}" if note else "")


def _p(p: float) -> str:
    text = format_p(p)
    return "---" if text == DASH else f"${text}$"


def _verdict(row: pd.Series) -> str:
    """As the markdown table prints it (:func:`ablate.report.sections.common.verdict_cell`)."""
    kind, more, depends = verdict_form(row)
    text = latex_escape(row["verdict"])
    depends = f"; depends on {latex_escape(depends)}" if depends else ""
    if kind == "fragile":
        seeds = f" (+{more} seed{'s' * (more != 1)})" if more else ""
        return f"\\emph{{{text}}}$^{{\\dagger}}${seeds}{depends}"
    return (f"\\textbf{{{text}}}" if kind == "finding" else text) + depends


def _ascii(text: str) -> str:
    return text.replace("–", "-")
