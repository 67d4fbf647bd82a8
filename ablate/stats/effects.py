"""What a design lets the report ask, as one family of paired contrasts.

* **Factorial designs** (``full_factorial``, ``fractional``): each factor's *main effect*, the
  difference between two of its levels averaged over the other factors, for every pair of
  levels; in a full factorial, every *two-factor interaction* (the difference of differences:
  how much factor B's effect changes when factor A changes) and the *simple effects* of every
  other factor within each level of the *dominant* factor (the one with the largest main
  effect; among main effects as large within its 95% interval, the first factor in the study's
  order). Averages are over the combinations of the other factors where both levels were run
  (matched cells); a fractional design has no matched cells, so there a main effect is the
  difference of the two levels' means over the design's cells (aliased as the design says).
* **Other designs** (one at a time, explicit): each variant against the baseline, plus every
  pair of levels of a factor whose levels were each run with everything else at the baseline
  (e.g. GRU vs RNN when both replaced the baseline's LSTM).

Each contrast is computed per seed and tested across seeds (:mod:`ablate.stats.inference`),
and the whole family gets one Holm correction — except in an adaptive one-at-a-time study, where
the comparisons with the baseline are the stopping rule's family (its own rows, from the round
each variant stopped: :mod:`ablate.stats.sequential`) and the pairs of levels a second family,
adjusted on its own (``family`` = ``levels``), which the stopping rule does not look at.

A main effect whose simple effects disagree — decided in opposite directions, or one decided and
one not while its interaction with the conditioning factor is found — says what it depends on
(``depends``, ``crossover``: :func:`dependencies`).
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ablate.design import short_names
from ablate.stats.inference import Contrast, decide, estimate
from ablate.stats.sequential import rules, scheduled
from ablate.stats.spec import ReportSpec
from ablate.stats.trials import baseline_variant, grids, labels, variant_order
from ablate.stats.verdict import Verdict

FACTORIAL = ("full_factorial", "fractional")
MAIN_FAMILY, LEVELS_FAMILY = "main", "levels"  # the ``family`` column of :func:`effects`
DIRECTIONS = (Verdict.HELPS.value, Verdict.HURTS.value)


def cell_levels(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """Variant (rows, baseline first) x factor: its level as text, for factors that vary."""
    first = results.drop_duplicates("variant").set_index("variant").reindex(variant_order(results))
    text = {f: [str(level) for level in first[f]] for f in spec.factors if f in first}
    return pd.DataFrame({f: levels for f, levels in text.items() if len(set(levels)) > 1},
                        index=first.index, dtype=object)


def factor_levels(spec: ReportSpec, factor: str, present: pd.Series) -> list[str]:
    """A factor's levels that were run, as text: the baseline's level first, then spec order."""
    base = str(spec.baseline.get(factor, spec.factors[factor][0]))
    order = [base, *(str(level) for level in spec.factors[factor] if str(level) != base)]
    return [level for level in order if level in set(present)]


_MATCHED: dict[tuple, dict[tuple, list[dict]]] = {}  # a layout of cells -> its matched groups


class _Cells:
    """Lookup of factorial cells: levels tuple -> variant id."""

    def __init__(self, cells: pd.DataFrame) -> None:
        self.factors = list(cells.columns)
        self.variant = {tuple(row): v for v, row in zip(cells.index, cells.to_numpy())}
        layout = (tuple(self.factors), tuple(sorted(self.variant.items())))
        if len(_MATCHED) > 64:
            _MATCHED.clear()
        self._matched = _MATCHED.setdefault(layout, {})  # the same cells: the same groups

    def matched(self, changes: dict[str, tuple[str, str]], fixed: dict[str, str]) -> list[dict]:
        """For each combination of the remaining factors where every cell exists: the cells
        with each factor of ``changes`` at its ``from`` or ``to`` level, keyed by the set of
        factors at ``to``; ``fixed`` factors stay at their given level. (Computed once per
        layout of cells: the report asks again at every epoch; treat the groups as read-only.)"""
        key = (tuple(changes.items()), tuple(fixed.items()))
        if key not in self._matched:
            self._matched[key] = self._match(changes, fixed)
        return self._matched[key]

    def _match(self, changes: dict[str, tuple[str, str]], fixed: dict[str, str]) -> list[dict]:
        pos = {f: self.factors.index(f) for f in [*changes, *fixed]}
        out = []
        for key in self.variant:
            if any(key[pos[f]] != a for f, (a, _) in changes.items()) or any(
                key[pos[f]] != level for f, level in fixed.items()
            ):
                continue
            group = {}
            for k in range(len(changes) + 1):
                for moved in combinations(changes, k):
                    cell = list(key)
                    for f in moved:
                        cell[pos[f]] = changes[f][1]
                    group[frozenset(moved)] = self.variant.get(tuple(cell))
            if all(group.values()):
                out.append(group)
        return out


def _differences(groups: list[dict]) -> tuple[dict[str, float], ...]:
    """One signed sum per matched group: +1 for cells with every change made, alternating
    signs as changes are left unmade (a difference, or a difference of differences)."""
    out = []
    for group in groups:
        size = max(len(moved) for moved in group)
        out.append({variant: float((-1) ** (size - len(moved)))
                    for moved, variant in group.items()})
    return tuple(out)


def _level_means(cells: pd.DataFrame, factor: str, a: str, b: str) -> tuple[dict, ...]:
    """One group: (mean of the cells at ``b``) − (mean of the cells at ``a``)."""
    at_a, at_b = cells.index[cells[factor] == a], cells.index[cells[factor] == b]
    return ({**{v: -1 / len(at_a) for v in at_a}, **{v: 1 / len(at_b) for v in at_b}},)


def _main_effects(cells: pd.DataFrame, lookup: _Cells, spec: ReportSpec,
                  names: dict) -> list[Contrast]:
    out = []
    for f in cells.columns:
        for a, b in combinations(factor_levels(spec, f, cells[f]), 2):
            if spec.design == "fractional":
                groups = _level_means(cells, f, a, b)
            else:
                groups = _differences(lookup.matched({f: (a, b)}, {}))
            if groups:
                out.append(Contrast("main", f"{names[f]}: {a} → {b}", groups,
                                    f"{names[f]}={a}", factor=f))
    return out


def _interactions(cells: pd.DataFrame, lookup: _Cells, spec: ReportSpec,
                  names: dict) -> list[Contrast]:
    out = []
    for fa, fb in combinations(cells.columns, 2):
        la, lb = factor_levels(spec, fa, cells[fa]), factor_levels(spec, fb, cells[fb])
        for a in la[1:]:
            for b in lb[1:]:
                groups = _differences(lookup.matched({fa: (la[0], a), fb: (lb[0], b)}, {}))
                if groups:
                    term = f"{_side(names[fa], la, a)} × {_side(names[fb], lb, b)}"
                    meaning = (f"the effect of {names[fb]} {lb[0]} → {b} when {names[fa]}={a} "
                               f"minus its effect when {names[fa]}={la[0]}")
                    out.append(Contrast("interaction", term, groups, factor=f"{fa} × {fb}",
                                        meaning=meaning))
    return out


def _side(name: str, levels: list[str], level: str) -> str:
    return name if len(levels) == 2 else f"{name} ({levels[0]} → {level})"


def _simple_effects(cells: pd.DataFrame, lookup: _Cells, spec: ReportSpec, names: dict,
                    dominant: str) -> list[Contrast]:
    out = []
    for d in factor_levels(spec, dominant, cells[dominant]):
        for f in cells.columns.drop(dominant):
            levels = factor_levels(spec, f, cells[f])
            for b in levels[1:]:
                groups = _differences(lookup.matched({f: (levels[0], b)}, {dominant: d}))
                if groups:
                    within = f"{names[dominant]}={d}"
                    term = f"{names[f]}: {levels[0]} → {b}, when {within}"
                    out.append(Contrast("simple", term, groups, f"{names[f]}={levels[0]}",
                                        factor=f, within=within))
    return out


def _one_at_a_time(results: pd.DataFrame, cells: pd.DataFrame, names: dict,
                   spec: ReportSpec) -> list[Contrast]:
    """Each variant vs the baseline, then pairs of levels of a factor changed alone."""
    base = baseline_variant(results)
    if base is None:  # effects() returns early when the results have no baseline
        raise ValueError("one-at-a-time contrasts need a baseline variant in the results")
    label = labels(results)
    out = [Contrast("variant", label[v], ({v: 1.0, base: -1.0},), variant=v)
           for v in variant_order(results)[1:]]
    changed = cells.ne(cells.loc[base])
    for f in cells.columns:
        alone = changed.index[changed[f] & (changed.sum(axis=1) == 1)]
        by_level = dict(zip(cells.loc[alone, f], alone))
        levels = [level for level in factor_levels(spec, f, cells[f]) if level in by_level]
        for a, b in combinations(levels, 2):
            out.append(Contrast("pair", f"{names[f]}: {a} → {b}",
                                ({by_level[b]: 1.0, by_level[a]: -1.0},), f"{names[f]}={a}",
                                factor=f))
    return out


def effects(results: pd.DataFrame, spec: ReportSpec, alpha: float = 0.05) -> pd.DataFrame:
    """The design's family of contrasts (module doc), tested and Holm-corrected together.

    One row per contrast, with ``kind`` (variant, pair, main, interaction, simple), ``term``,
    the paired estimate (``diff``, ``n_pairs``, ``p``, ``p_holm``, ``confidence``, ``ci_low``,
    ``ci_high``, ``hedges_g``), the seeds lost (``lost_diverged``, ``lost_failed``,
    ``lost_missing``), the ``verdict``/``outcome``, ``reason``, ``fragile`` and ``more_seeds``
    (see :func:`ablate.stats.inference.decide`), the ``family`` it was adjusted in
    (:data:`MAIN_FAMILY`, or :data:`LEVELS_FAMILY` for the pairs of levels of an adaptive
    study) and, for main effects, ``depends`` and ``crossover`` (:func:`dependencies`). Empty
    when there is nothing to compare. An adaptive study is first cut to its schedule; a
    contrast then uses the seeds all its variants were scheduled for.
    """
    results, spec = scheduled(results, spec)
    if baseline_variant(results) is None or results["variant"].nunique() < 2:
        return pd.DataFrame()
    rule = rules(spec)
    counts = rule.pop("counts")
    design = design_contrasts(results, spec, counts)
    contrasts, values, outcome, dominant = (design.contrasts, design.values, design.outcome,
                                            design.dominant)
    if spec.design not in FACTORIAL or design.one_at_a_time:
        if spec.stopping is None:
            family = decide(estimate(contrasts, values, outcome, counts), alpha, spec.mode,
                            **rule)
            return _annotated(family.assign(family=MAIN_FAMILY), spec, None)
        pairs = [c for c in contrasts if c.kind == "pair"]
        parts = [spec.stopping.assign(family=MAIN_FAMILY)]
        if pairs:
            parts.append(decide(estimate(pairs, values, outcome, counts), alpha, spec.mode,
                                **rule).assign(family=LEVELS_FAMILY))
        return _annotated(pd.concat(parts, ignore_index=True), spec, None)
    if not contrasts:
        return pd.DataFrame()
    family = decide(estimate(contrasts, values, outcome, counts), alpha, spec.mode, **rule)
    return _annotated(family.assign(family=MAIN_FAMILY), spec, dominant)


class DesignContrasts(NamedTuple):
    """What a design asks of a table of results, before anything is tested."""

    contrasts: list[Contrast]
    values: pd.DataFrame  # seeds x variants (:func:`ablate.stats.trials.grids`)
    outcome: pd.DataFrame
    dominant: str | None  # the factor a full factorial's simple effects condition on
    one_at_a_time: bool = False  # compared with the baseline (and pairs of levels)


def design_contrasts(results: pd.DataFrame, spec: ReportSpec,
                     counts: dict[str, int] | None = None) -> DesignContrasts:
    """The design's family of contrasts over ``results`` (which has a baseline variant and
    another), untested: :func:`effects` tests them as one family, a study with tasks each
    task's together with the other tasks' (:mod:`ablate.stats.tasks`)."""
    values, outcome = grids(results, spec)
    cells = cell_levels(results, spec)
    names = short_names(spec.factors)
    if spec.design not in FACTORIAL or cells.empty:
        return DesignContrasts(_one_at_a_time(results, cells, names, spec), values, outcome,
                               None, True)
    lookup = _Cells(cells)
    contrasts = _main_effects(cells, lookup, spec, names)
    dominant = None
    if spec.design == "full_factorial" and len(cells.columns) > 1:
        dominant = dominant_factor(estimate(contrasts, values, outcome, counts),
                                   list(spec.factors))
        contrasts += _interactions(cells, lookup, spec, names)
        if dominant is not None:
            contrasts += _simple_effects(cells, lookup, spec, names, dominant)
    return DesignContrasts(contrasts, values, outcome, dominant)


def _annotated(family: pd.DataFrame, spec: ReportSpec, dominant: str | None) -> pd.DataFrame:
    return family.join(dependencies(family, spec, dominant))


def dependencies(family: pd.DataFrame, spec: ReportSpec, dominant: str | None) -> pd.DataFrame:
    """Per row of ``family``: ``depends``, the short names of the factors a main effect has a
    found interaction with (``c``, ``b and c``), and ``crossover``, its simple effects within
    each level of the ``dominant`` factor in words (``hurts when c=off, helps when c=on``)
    where they disagree: decided in opposite directions, or one decided (helps, hurts) and
    another not while the interaction with the dominant factor is found. Then ``depends``
    names the dominant factor too. Empty strings elsewhere (other kinds, other designs)."""
    depends = [""] * len(family)
    crossover = [""] * len(family)
    if family.empty or "kind" not in family:
        return pd.DataFrame({"depends": depends, "crossover": crossover}, index=family.index)
    names = short_names(spec.factors)
    rows = list(zip(family["kind"], family["term"], family["factor"], family["outcome"],
                    family["within"] if "within" in family else [""] * len(family)))
    partners: dict[str, set[str]] = {}
    for kind, _, factor, outcome, _ in rows:
        if kind == "interaction" and outcome == Verdict.INTERACTION_FOUND:
            fa, fb = factor.split(" × ")
            partners.setdefault(fa, set()).add(fb)
            partners.setdefault(fb, set()).add(fa)
    simple = [r for r in rows if r[0] == "simple"]
    for i, (kind, term, factor, _, _) in enumerate(rows):
        if kind != "main":
            continue
        others = set(partners.get(factor, set()))
        within = [(o, w) for _, t, f, o, w in simple
                  if f == factor and t.startswith(f"{term}, when ")]
        outcomes = [o for o, _ in within]
        decided = [o for o in outcomes if o in DIRECTIONS]
        opposite = len(set(decided)) > 1
        mixed = dominant in others and bool(decided) and len(set(outcomes)) > 1
        if len(within) > 1 and (opposite or mixed):
            crossover[i] = ", ".join(f"{o} when {w}" for o, w in within)
            others.add(str(dominant))
        depends[i] = " and ".join(names.get(f, f) for f in spec.factors if f in others)
    return pd.DataFrame({"depends": depends, "crossover": crossover}, index=family.index)


def dominant_factor(family: pd.DataFrame, order: list[str]) -> str | None:
    """The factor whose simple effects are shown: the one with the largest main effect in
    absolute size, unless others are as large within that effect's 95% interval — then the first
    of those in ``order`` (the study's factors), so that noise between main effects of about the
    same size does not change which factor the report conditions on (e.g. between 1 and 2 torch
    threads)."""
    main = family[family["kind"] == "main"] if len(family) else family
    if main.empty or main["diff"].isna().all():
        return None
    size = main["diff"].abs()
    top = size.idxmax()
    n = int(main.loc[top, "n_pairs"])
    half = float(stats.t.ppf(0.975, n - 1) * main.loc[top, "se"]) if n >= 2 else 0.0
    tied = set(main.loc[size >= size[top] - (half if np.isfinite(half) else 0.0), "factor"])
    return next(f for f in order if f in tied)


def trivial_cells(results: pd.DataFrame, spec: ReportSpec) -> dict | None:
    """Factorial cells stuck at a trivial value (a model that learned nothing), which distort
    every average over cells.

    The trivial value is ``spec.chance`` when known (e.g. 1/num_classes for an accuracy), and a
    trial is at it when within 10% of the way from it to the best cell's mean. Otherwise, for an
    accuracy (a maximised metric named ``*acc*``), it is the lowest finished trial's value when
    that is at most 0.5 (chance for two classes or more) and at least two cells have every
    finished seed within 5% of the way from it to the best cell: a floor that several
    configurations fall to is what chance looks like. Other metrics: none.

    Returns None or ``{"variants": cells with every finished seed at the value, "partly":
    {cell: (seeds at the value, finished seeds)} for the others that touch it, "value" (chance,
    or the median of the flagged cells' trials), "rule"}``.
    """
    if spec.design not in FACTORIAL:
        return None
    values, _ = grids(results, spec)
    values = values.dropna(axis=1, how="all")
    if values.shape[1] < 3:
        return None
    best = values.mean().max() if spec.mode == "max" else values.mean().min()
    if spec.chance is not None:
        value, share = spec.chance, 0.10
        rule = f"at chance ({spec.chance:.3g})"
    elif spec.mode == "max" and "acc" in spec.metric.lower():
        value, share = float(np.nanmin(values.to_numpy())), 0.05
        rule = "at a floor shared by several configurations, as a model at chance would be"
        if value > 0.5:
            return None
    else:
        return None
    near = (values - value).abs() <= share * abs(best - value)
    near &= values.notna()
    at, finished = near.sum(), values.notna().sum()
    whole = [v for v in values.columns if at[v] == finished[v]]
    if not whole or (spec.chance is None and len(whole) < 2):
        return None
    partly = {v: (int(at[v]), int(finished[v])) for v in values.columns
              if 0 < at[v] < finished[v]}
    typical = value if spec.chance is not None else float(np.nanmedian(values[whole]))
    return {"variants": whole, "partly": partly, "value": typical, "rule": rule}


def without_trivial(results: pd.DataFrame, spec: ReportSpec, trivial: list[str]) -> pd.DataFrame:
    """Each main effect (baseline level → other level) over all matched cells and over the
    matched cells where neither is trivial: mean over seeds of the per-seed contrast."""
    values, outcome = grids(results, spec)
    cells = cell_levels(results, spec)
    names = short_names(spec.factors)
    lookup = _Cells(cells)
    contrasts, rows = [], []
    for f in cells.columns:
        levels = factor_levels(spec, f, cells[f])
        for b in levels[1:]:
            groups = _differences(lookup.matched({f: (levels[0], b)}, {}))
            kept = tuple(g for g in groups if not set(g) & set(trivial))
            term = f"{names[f]}: {levels[0]} → {b}"
            contrasts += [Contrast("main", term, groups), Contrast("main", term, kept or groups)]
            rows.append({"term": term, "pairs": len(groups), "kept": len(kept)})
    means = estimate(contrasts, values, outcome, spec.seed_counts or None)["diff"].to_numpy()
    table = pd.DataFrame(rows)
    table["all"], table["trained"] = means[0::2], means[1::2]
    table.loc[table["kept"] == 0, "trained"] = np.nan
    return table
