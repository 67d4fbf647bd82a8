"""Markdown pieces the report's sections share: tables, code fences and the effect-table cells."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ablate.report.fmt import escape, format_number, format_p, plural, plus_minus
from ablate.stats.spec import ReportSpec
from ablate.stats.verdict import Verdict


def md_table(header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    """A GitHub markdown table of already-escaped cells (pandas' ``to_markdown``)."""
    align = ["right" if i in numeric else "left" for i in range(len(header))]
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    return frame.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)


def fence(text: str, info: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}{info}\n{text.rstrip()}\n{marks}"


def seeds_cell(row: pd.Series) -> str:
    """``2/3 (1 diverged)``: seeds a contrast used, why it lost the others, and on how many a
    factorial average had to leave out a lost cell (``partial``)."""
    lost = [f"{row[f'lost_{s}']} {s}" for s in ("diverged", "failed", "missing")
            if row[f"lost_{s}"]]
    if row.get("n_partial", 0):
        lost.append(f"{row['n_partial']} partial")
    return f"{row['n_pairs']}/{row['n_seeds']}" + (f" ({', '.join(lost)})" if lost else "")


def verdict_cell(row: pd.Series) -> str:
    """The verdict as printed: in bold when it is a finding (:attr:`Verdict.finding`), in
    italics with the seeds a firm verdict needs when it is fragile (a finding near the
    threshold, :func:`ablate.stats.inference.fragility`), and with what a main effect depends
    on where its simple effects disagree (``crossover``)."""
    kind, more, depends = verdict_form(row)
    text = escape(row["verdict"])
    depends = f"; depends on {escape(depends)}" if depends else ""
    if kind == "fragile":
        seeds = f": +{plural(more, 'seed')}" if more else ""
        return f"*{text}* (fragile{seeds}){depends}"
    return (f"**{text}**" if kind == "finding" else text) + depends


def verdict_form(row: pd.Series) -> tuple[str, int | None, str]:
    """How a verdict is marked, whatever the markup (:func:`verdict_cell`, the LaTeX table):
    ``fragile``, ``finding`` or ``plain``; the seeds a firm verdict needs (fragile ones); what a
    main effect depends on where its simple effects disagree ("" elsewhere)."""
    depends = str(row["depends"]) if row.get("crossover") else ""
    if is_fragile(row):
        return "fragile", extra_seeds(row), depends
    return ("finding" if Verdict(row["outcome"]).finding else "plain"), None, depends


def is_fragile(row: pd.Series) -> bool:
    fragile = row.get("fragile", False)
    return bool(fragile) and not pd.isna(fragile)


def extra_seeds(row: pd.Series) -> int | None:
    """The seeds beyond those used that a fragile verdict needs to be firm, if estimated."""
    k = row.get("more_seeds", np.nan)
    return int(k) if k is not None and np.isfinite(k) else None


def fragile_words(row: pd.Series) -> str:
    """``fragile: about 4 more seeds for a firm verdict`` (or just ``fragile``)."""
    more = extra_seeds(row)
    return "fragile" + (f": about {more} more seed{'s' * (more != 1)} for a firm verdict"
                        if more else "")


def procedure_name(spec: ReportSpec) -> str:
    """The step-down the report's families use: ``Holm`` or ``Holm–Shaffer``."""
    return "Holm" if spec.min_effect is None else "Holm–Shaffer"


def p_header(spec: ReportSpec) -> str:
    """Holm's adjusted p, or the step-down's when it also weighs equivalence or looks."""
    return "p (Holm)" if spec.min_effect is None and spec.adaptive is None else "p (adj.)"


def effects_table(rows: pd.DataFrame, spec: ReportSpec, first: str) -> str:
    header = [first, f"Δ {escape(spec.metric)} ± CI", p_header(spec), "Verdict", "Seeds"]
    body = [
        [escape(r["term"]), plus_minus(r["diff"], r["ci_low"], r["ci_high"], signed=True),
         format_p(r["p_holm"]), verdict_cell(r), seeds_cell(r)]
        for _, r in rows.iterrows()
    ]
    return md_table(header, body, numeric=(1, 2))


def band(spec: ReportSpec) -> str:
    """``0.01 val_acc``: the smallest effect of interest with its unit."""
    return f"{format_number(spec.min_effect)} {escape(spec.metric)}"


MAX_LISTED = 40  # a table with a row per variant lists at most so many (see listed)


def listed(summary: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, str]:
    """The rows of ``summary`` (one per variant, baseline first) that a per-variant table
    shows: all of them, or past :data:`MAX_LISTED` the baseline and the best and worst by
    mean, in that order (a table of 2,048 rows buries the report; ``results.csv`` has every
    trial); with a sentence that says so ("" when all are listed)."""
    if len(summary) <= MAX_LISTED:
        return summary, ""
    ranked = summary.iloc[1:].dropna(subset=["mean"]).sort_values(
        "mean", ascending=spec.mode != "max", kind="stable")
    best = ranked.iloc[: MAX_LISTED // 2]
    worst = ranked.iloc[len(best):].iloc[-(MAX_LISTED - 1 - len(best)):]
    return pd.concat([summary.iloc[:1], best, worst]), (
        f"Of {len(summary)} variants, the baseline and the {len(best)} best and {len(worst)} "
        f"worst by mean {escape(spec.metric)} are listed; `results.csv` has every trial.")
