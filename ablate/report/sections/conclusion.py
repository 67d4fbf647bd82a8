"""The report's first screen: findings in sentences, the table of the design's effects, the
forest plot's caption, fractional aliasing and, for adaptive studies, each variant's seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablate.design import short_names
from ablate.report.fmt import escape, format_number, interval, p_phrase, plural, plus_minus
from ablate.report.sections.common import (
    band,
    effects_table,
    fragile_words,
    is_fragile,
    md_table,
    procedure_name,
)
from ablate.stats.effects import FACTORIAL, LEVELS_FAMILY
from ablate.stats.inference import FRAGILE_FACTOR, MIN_PAIRS
from ablate.stats.sequential import MAX_SEEDS
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.verdict import Verdict

MAX_NAMED = 8
LOST = (Verdict.UNSTABLE, Verdict.ALL_DIVERGED, Verdict.ALL_FAILED)  # under **Unstable**
UNCLEAR = (Verdict.NO_CLEAR_EFFECT, Verdict.UNDECIDED)  # under **Cannot tell** / **Undecided**


def conclusion(family: pd.DataFrame, comparison: pd.DataFrame, spec: ReportSpec,
               forest: Path | None, tables: list[str] | None = None) -> list[str]:
    """The first screen; ``tables``: lines pointing at the table files, shown under the
    table's note."""
    lines = ["## Conclusion", ""]
    if family.empty:
        return lines + ["Only one variant ran, so there is nothing to compare against the "
                        "baseline.", ""]
    lines += _findings(family, comparison, spec) + [""]
    shown = first_table_rows(family)
    levels = shown[_in_levels(shown)]
    first = "Effect" if spec.design in FACTORIAL else "Change"
    lines += [effects_table(shown[~_in_levels(shown)], spec, first), ""]
    if len(levels):
        lines += [f"Between levels of a factor: a second family of {plural(len(levels), 'test')}, "
                  "adjusted on its own at the same boundaries (the stopping rule compares each "
                  "variant with the baseline only, so these pairs do not enter its family):", "",
                  effects_table(levels, spec, first), ""]
    lines.append(table_note(shown, spec))
    lines += ["", *(tables or []), *_aliasing(spec)]
    if forest is not None:
        caption = "The table's effects with the same intervals, coloured by verdict" + (
            f"; the shaded band is ±{band(spec)}, the smallest effect that matters."
            if spec.min_effect is not None else ".")
        lines += [f"![{caption}]({forest.name})", "", f"*{caption}*", ""]
    return lines + _seeds_section(comparison, spec)


def _in_levels(rows: pd.DataFrame) -> pd.Series:
    if "family" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["family"] == LEVELS_FAMILY


def table_note(rows: pd.DataFrame, spec: ReportSpec) -> str:
    """What Δ, ± CI and Seeds of the tables mean, stated so that it is true of the rows shown:
    the claims an interval decides, and the rows it does not decide (lost seeds, too little
    data)."""
    factorial = spec.design in FACTORIAL
    outcomes = set(rows["outcome"]) if len(rows) else set()
    unstable = Verdict.UNSTABLE.value in outcomes
    untested = [v.value for v in (Verdict.NOT_ENOUGH_DATA, Verdict.ALL_DIVERGED,
                                  Verdict.ALL_FAILED) if v.value in outcomes]
    claims = "helps, hurts or interaction found" if factorial else "helps or hurts"
    note = ("Δ: the change's effect on the metric, paired by seed"
            + (", averaged over the other factors; an interaction is a difference of differences"
               if factorial else "")
            + f". ± CI: the {procedure_name(spec)}-adjusted "
            + ("repeated (group-sequential) " if spec.adaptive is not None else "")
            + "interval that decides the verdict, at the level Methods states. It excludes 0 "
            "exactly when the test rejects no difference: the verdict is then " + claims)
    if spec.min_effect is not None:
        note += (f", or negligible when the interval also lies inside ±{band(spec)} (a real but "
                 "unimportant effect). It lies inside that band exactly when the test rejects an "
                 "effect of min_effect or more: negligible, which comes first")
    note += "."
    if unstable:
        note += (" A change that lost seeds its reference finished is unstable whatever its "
                 "interval; the verdict then adds which way its finished seeds differ, if the "
                 "interval says so.")
    if untested:
        words = [f"{v} (fewer than {MIN_PAIRS} paired seeds, or differences that do not vary)"
                 if v == Verdict.NOT_ENOUGH_DATA else v for v in untested]
        note += (f" {' and '.join(words)[0].upper()}{' and '.join(words)[1:]}: not tested, "
                 "no interval.")
    if spec.adaptive is not None:
        note += (" A variant that stopped shows the row of the round where it stopped, the "
                 "verdict it stopped on.")
    note += (" Seeds: seeds where both sides finished, of the "
             + ("seeds scheduled for both" if spec.adaptive is not None else "study's")
             + ("; partial: seeds where a cell of the average was lost (it is averaged over the "
                "cells that finished there; which cells were lost is under Unstable)."
                if (rows.get("n_partial", pd.Series(dtype=int)) > 0).any() else "."))
    return note


def display_order(family: pd.DataFrame) -> pd.DataFrame:
    """Main effects grouped by factor (largest effect first), then interactions by size, then
    simple effects; other designs keep the study's order."""
    if family.empty or not family["kind"].isin(["main", "interaction"]).any():
        return family
    family = family.assign(_size=family["diff"].abs().fillna(-1), _factor=np.nan)
    main = family[family["kind"] == "main"]
    # a factor's rank: its largest main effect (not a simple effect within another factor)
    main = main.assign(_factor=main.groupby("factor")["_size"].transform("max")).sort_values(
        ["_factor", "factor", "_size"], ascending=False)
    inter = family[family["kind"] == "interaction"].sort_values("_size", ascending=False)
    simple = family[family["kind"] == "simple"]
    return pd.concat([main, inter, simple]).drop(columns=["_factor", "_size"])


def first_table_rows(family: pd.DataFrame) -> pd.DataFrame:
    """The first table shows every test but the simple effects (they get their own)."""
    return family[family["kind"] != "simple"] if len(family) else family


def _phrase(row: pd.Series, metric: str) -> str:
    """``term (val_acc +0.08 ± 0.06, p = 0.010)`` for running text; an interaction says what
    its difference of differences is, a main effect the factors it depends on (and how, where
    its simple effects disagree), and a fragile verdict the seeds a firm one needs."""
    g = f", g_z = {format_number(row['hedges_g'])}" if np.isfinite(row["hedges_g"]) else ""
    estimate = plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True)
    fragile = f"; {fragile_words(row)}" if is_fragile(row) else ""
    if row["kind"] == "interaction":
        return (f"{escape(row['term'])} ({metric} {estimate}, {p_phrase(row['p_holm'])}: "
                f"{escape(row['meaning'])}{fragile})")
    return (f"{escape(row['term'])} ({metric} {estimate}{g}, {p_phrase(row['p_holm'])}"
            f"{fragile}{_depends(row)})")


def _depends(row: pd.Series) -> str:
    """``; depends on c — hurts when c=off, helps when c=on`` for a main effect."""
    if row["kind"] != "main" or not row.get("depends"):
        return ""
    how = f" — {escape(row['crossover'])}" if row.get("crossover") else ""
    return f"; depends on {escape(row['depends'])}{how}"


def _named(items: list[str]) -> str:
    more = len(items) - MAX_NAMED
    return "; ".join(items[:MAX_NAMED]) + (f"; and {more} more in the tables below" if more > 0
                                            else "")


def _by_size(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.iloc[np.argsort(-rows["diff"].abs().fillna(-1).to_numpy(), kind="stable")]


def _unstable_phrase(row: pd.Series) -> str:
    label = escape(row["label"])
    if row["outcome"] == Verdict.ALL_DIVERGED:
        return f"{label} (diverged on every seed)"
    if row["outcome"] == Verdict.ALL_FAILED:
        return f"{label} (failed on every seed)"
    return f"{label} ({escape(row['unstable'])})"


def _findings(family: pd.DataFrame, comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """The opening sentences, each group ordered by effect size."""
    metric = escape(spec.metric)
    lines = []
    crossover = family["crossover"] if "crossover" in family else pd.Series("", family.index)
    crossed = ((family["kind"] == "main") & (crossover.fillna("") != "")
               & family["outcome"].isin([v.value for v in (*UNCLEAR, Verdict.NEGLIGIBLE)]))
    for outcome, title in ((Verdict.HELPS, "Helps"), (Verdict.HURTS, "Hurts"),
                           (Verdict.INTERACTION_FOUND, "Interactions")):
        rows = _by_size(family[family["outcome"] == outcome])
        if len(rows):
            items = [_phrase(r, metric) for _, r in rows.iterrows()]
            lines.append(f"- **{title}:** {_named(items)}.")
    depends = _by_size(family[crossed])
    if len(depends):
        items = [f"{escape(r['term'])}: depends on {escape(r['depends'])} — "
                 f"{escape(r['crossover'])} (on average {escape(r['outcome'])}, "
                 f"{interval(r['ci_low'], r['ci_high'])})" for _, r in depends.iterrows()]
        lines.append("- **Depends on another factor** (the average over the other factor hides "
                     "effects that differ by its level; see the simple effects): "
                     f"{_named(items)}.")
    lost = comparison[comparison["outcome"].isin([v.value for v in LOST])]
    if len(lost):
        items = [_unstable_phrase(r) for _, r in lost.iterrows()]
        lines.append("- **Unstable** (k/n: lost to divergence or failure on k of the n seeds "
                     f"where the baseline finished): {_named(items)}.")
    negligible = _by_size(family[(family["outcome"] == Verdict.NEGLIGIBLE) & ~crossed])
    if len(negligible):
        items = [f"{escape(r['term'])} ({interval(r['ci_low'], r['ci_high'])}"
                 + (f"; {fragile_words(r)}" if is_fragile(r) else "") + ")"
                 for _, r in negligible.iterrows()]
        lines.append(f"- **Negligible** (the whole interval lies inside ±{band(spec)}, the "
                     f"smallest effect that matters: these do not matter): {_named(items)}.")
    unclear = _by_size(family[family["outcome"].isin([v.value for v in UNCLEAR]) & ~crossed])
    if len(unclear):
        items = [f"{escape(r['term'])} ({interval(r['ci_low'], r['ci_high'])}{_depends(r)})"
                 for _, r in unclear.iterrows()]
        seeds = int(family["n_pairs"].max())
        hint = (f" With {plural(seeds, 'paired seed')} each test has {seeds - 1} degrees of "
                "freedom, so intervals are wide; more seeds narrow them fast."
                if MIN_PAIRS <= seeds < 5 else "")
        if spec.min_effect is None:
            lines.append("- **Cannot tell** (no clear effect: the data fit every effect in the "
                         f"interval, 0 included): {_named(items)}.{hint} No clear effect is "
                         "not evidence of no effect: an interval that includes 0 also includes "
                         "effects as large as its bounds. To find out which changes do not "
                         "matter, set min_effect (the smallest effect that matters).")
        else:
            lines.append(f"- **Undecided** (the interval includes 0 and crosses ±{band(spec)}: "
                         "the data fit both no effect and one that matters): "
                         f"{_named(items)}.{hint}")
    few = family[family["outcome"] == Verdict.NOT_ENOUGH_DATA]
    if len(few):
        items = [f"{escape(r['term'])} ({escape(r['reason'])})" for _, r in few.iterrows()]
        lines.append(f"- **Not enough data** (fewer than {MIN_PAIRS} seeds where both sides "
                     "finished, or paired differences that do not vary: no test can tell "
                     f"these from noise): {_named(items)}.")
    lines += _fragile_line(family, spec)
    if spec.adaptive is not None:
        lines.append(f"- {_saving_line(spec)}")
    lines.append(f"- {_count_line(family, spec)}")
    return lines


def _fragile_line(family: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """The decided verdicts near the threshold, with the seeds a firm verdict would need."""
    fragile = family[[is_fragile(r) for _, r in family.iterrows()]]
    if fragile.empty:
        return []
    items = []
    for _, r in fragile.iterrows():
        p = r["p_equiv_adj"] if r["outcome"] == Verdict.NEGLIGIBLE else r["p_holm"]
        words = fragile_words(r).removeprefix("fragile").removeprefix(": ")
        items.append(f"{escape(r['term'])} ({escape(r['outcome'])}, {p_phrase(p)}"
                     + (f"; {words}" if words else "") + ")")
    advice = (" The estimate ignores the group-sequential boundaries, so it is approximate."
              if spec.adaptive is not None else
              " With seeds=\"adaptive\" (and max_seeds above the seeds these need) a study adds "
              "seeds only where the answer is this close.")
    return [f"- **Fragile** (decided, but the adjusted p lies within a factor of "
            f"{FRAGILE_FACTOR:g} of α = {ALPHA}: a few seeds could undo it): {_named(items)}."
            f"{advice}"]


def _count_line(family: pd.DataFrame, spec: ReportSpec) -> str:
    """``Of 16 tests: 1 helps, 3 hurt, 1 unstable, 11 with no clear effect (...)``; an adaptive
    one-at-a-time study counts its two families apart."""
    how = f"{procedure_name(spec)}-adjusted"
    looks = ", at group-sequential boundaries" if spec.adaptive is not None else ""
    levels = _in_levels(family)
    tested = int(family["p"].notna().sum())
    across = (f"across all {len(family)}" if tested == len(family) else
              f"across the {tested} with enough data to test")
    if not levels.any():
        return (f"Of {plural(len(family), 'test')}: {_counted(family)} (paired over seeds, "
                f"{how} {across}{looks}, α = {ALPHA}).")
    main, pairs = family[~levels], family[levels]
    return (f"Of {plural(len(main), 'comparison')} with the baseline: {_counted(main)}; of "
            f"{plural(len(pairs), 'test')} between levels: {_counted(pairs)} (paired over "
            f"seeds, {how} within each of the two families{looks}, α = {ALPHA}).")


def _counted(rows: pd.DataFrame) -> str:
    counts = rows["outcome"].value_counts()
    return ", ".join(verdict.counted(n) for verdict in Verdict
                     if (n := int(counts.get(verdict.value, 0))))


def _saving_line(spec: ReportSpec) -> str:
    """``Seeds (adaptive, 3 to 12 per variant): 60 of 192 trials, 132 (69%) saved ...``."""
    if spec.adaptive is None:  # the caller writes this line for adaptive studies only
        raise ValueError("the seeds saving line needs an adaptive study (spec.adaptive)")
    low, high = spec.adaptive
    full = spec.n_variants * high
    used = spec.n_planned
    return (f"**Seeds** (adaptive, {low} to {high} per variant, until each comparison is "
            f"decided): {used} of the {full} trials of giving every variant {high} seeds, "
            f"{full - used} ({(full - used) / full:.0%}) saved; each variant's seeds and why it "
            "stopped are under Seeds per variant.")


def _seeds_section(comparison: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Adaptive studies: each variant's seeds and why it stopped there — read off the same
    rows as the verdicts (the stopping rule's family), so the two cannot disagree."""
    if spec.adaptive is None or comparison.empty:
        return []
    low, high = spec.adaptive
    rows = []
    for _, c in comparison.iterrows():
        n = spec.seeds_of(c["variant"])
        stop = spec.stops.get(c["variant"])
        why = ("still running" if stop is None else
               f"{MAX_SEEDS} ({high}), still {escape(c['outcome'])}" if stop == MAX_SEEDS
               else f"decided at {n} seeds: {escape(c['outcome'])}")
        rows.append([escape(c["label"]), str(n), why])
    base = max(spec.seed_counts.values(), default=low)
    return ["### Seeds per variant", "",
            f"Every variant started with {plural(low, 'seed')}; after each round a variant "
            f"whose comparison with the baseline was decided stopped, the others got the next "
            f"seed, up to {high}. The baseline ran every seed a variant ran ({base}). Each "
            "variant's verdict in the tables is the one it stopped on.", "",
            md_table(["Variant", "Seeds", "Stopped because"], rows, (1,)), ""]


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
