"""Adaptive studies (``seeds="adaptive"``): which seeds each variant gets, replayed from results.

Every variant starts with ``min_seeds`` seeds. After each round, each variant is compared with
the baseline, paired by seed (one family, the step-down of :mod:`ablate.stats.inference` at the
group-sequential boundaries of :mod:`ablate.stats.boundaries`); a variant whose verdict is
decided (:attr:`ablate.stats.verdict.Verdict.decided`: helps, hurts, negligible, unstable, all
diverged or all failed) stops, and every other variant gets the next seed, up to ``max_seeds``.
Variants that continue all get the same next seed, and the baseline runs every seed any variant
runs, so every comparison stays paired.

The schedule is a pure function of the recorded results: :func:`schedule` replays the rounds
from the first, deciding each round on exactly the trials scheduled by then (later trials of a
variant are ignored until their round), and stops at the first round with a trial that has not
ended. So ``ablate run`` resumes an interrupted adaptive study exactly where it was, in process or
on Ray, and the report finds the same schedule without being told it.

One family, one decision: the schedule also keeps each variant's row of that family (estimate,
adjusted p, interval, verdict) from the round where it stopped — its data do not change after —
and, for the others, from the last round (:attr:`Schedule.family`). The report's comparisons
with the baseline *are* those rows (:func:`ablate.stats.compare.compare`), so a variant stops
only on the verdict the report states, and "stopped because" and the verdict table come from
one object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from ablate.stats.boundaries import FIXED, Looks, adaptive_looks
from ablate.stats.inference import Contrast, evaluate
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.trials import grids, labels, variant_order
from ablate.stats.verdict import Verdict

ENDED = ("finished", "diverged", "failed")
MAX_SEEDS = "max_seeds reached"


@dataclass(frozen=True)
class Schedule:
    """Seeds per variant (the first ``counts[v]`` of the study's candidate seeds), why each
    non-baseline variant stopped there (its verdict then, or :data:`MAX_SEEDS`; absent while it
    continues), and whether some scheduled trial has not ended yet.

    ``rows``: each stopped variant's row of the stopping family at the round it stopped (for
    :data:`MAX_SEEDS`, at the last round); ``family``: those rows, and for variants still
    running their rows on the trials ended so far, as one table in the study's order (set by
    :func:`schedule`; the report's comparisons with the baseline)."""

    counts: dict[str, int]
    stops: dict[str, str]
    pending: bool
    rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False,
                                                  repr=False)
    family: pd.DataFrame | None = field(default=None, compare=False, repr=False)


def schedule(results: pd.DataFrame, spec: ReportSpec, variants: Sequence[str]) -> Schedule:
    """Replay the rounds of an adaptive study on ``results`` (module doc).

    ``variants``: the study's variant ids, baseline first; ``spec.seeds`` the candidate seeds
    (0 … max_seeds − 1) and ``spec.adaptive`` the (min_seeds, max_seeds) bounds.
    """
    assert spec.adaptive is not None
    is_ended = results["status"].isin(ENDED)
    ended = set(zip(results.loc[is_ended, "variant"], results.loc[is_ended, "seed"]))
    decide = _stopping_family(results, spec, variants)

    def verdicts(counts: dict[str, int]) -> dict[str, dict[str, Any]] | None:
        planned = {(v, s) for v in variants for s in spec.seeds[:counts[v]]}
        if not planned <= ended:
            return None
        family = decide(counts)
        if family is None:
            return {}
        columns = list(family.columns)  # records, without DataFrame.to_dict's cost
        return {row[columns.index("variant")]: dict(zip(columns, row))
                for row in family.itertuples(index=False, name=None)}

    plan = replay(variants, spec.adaptive, verdicts)
    last = decide(plan.counts) if plan.pending else None
    rows = [plan.rows.get(v) or _row(last, v) for v in variants[1:]]
    found = [row for row in rows if row is not None]
    return replace(plan, family=pd.DataFrame(found) if found else None)


def _row(family: pd.DataFrame | None, variant: str) -> dict[str, Any] | None:
    if family is None or variant not in set(family["variant"]):
        return None
    return family[family["variant"] == variant].iloc[0].to_dict()


def _stopping_family(
    results: pd.DataFrame, spec: ReportSpec, variants: Sequence[str]
) -> Callable[[dict[str, int]], pd.DataFrame | None]:
    """The stopping rule's family at given counts: each variant against the baseline, paired
    by seed, on the first ``counts[v]`` seeds of each (later trials are ignored), decided as
    the report decides it (α, min_effect, the study's looks). None without a baseline or
    without trials. The seeds x variants tables are made on the first call."""
    made: list[tuple[pd.DataFrame, pd.DataFrame, list[Contrast]]] = []
    base = variants[0]

    def family(counts: dict[str, int]) -> pd.DataFrame | None:
        if results.empty:
            return None
        if not made:
            values, outcome = grids(results, spec)
            names = labels(results)
            made.append((values, outcome, [
                Contrast("variant", names.get(v, v), ({v: 1.0, base: -1.0},), variant=v)
                for v in variants[1:] if v in values.columns]))
        values, outcome, contrasts = made[0]
        if base not in values.columns or not contrasts:
            return None
        return evaluate(contrasts, values, outcome, ALPHA, spec.mode,
                        min_effect=spec.min_effect, looks=rules(spec)["looks"], counts=counts)

    return family


def replay(
    variants: Sequence[str], bounds: tuple[int, int],
    verdicts: Callable[[dict[str, int]], Mapping[str, Mapping[str, Any]] | None],
) -> Schedule:
    """The rounds of an adaptive study: ``verdicts(counts)`` gives each variant's row of the
    family against the baseline (a mapping with its ``outcome``) on the trials ``counts``
    schedules (variant -> its first seeds), or None while some of them have not ended (the
    schedule so far is then pending). A variant stops on the first round whose outcome is
    decided (:attr:`~ablate.stats.verdict.Verdict.decided`), and keeps that round's row."""
    low, high = bounds
    base, others = variants[0], list(variants[1:])
    counts = dict.fromkeys(variants, low)
    stops: dict[str, str] = {}
    rows: dict[str, Mapping[str, Any]] = {}
    while True:
        outcomes = verdicts(dict(counts))
        if outcomes is None:
            return Schedule(counts, stops, pending=True, rows=rows)
        for v in others:
            if v not in stops and v in outcomes and Verdict(outcomes[v]["outcome"]).decided:
                stops[v], rows[v] = str(outcomes[v]["outcome"]), outcomes[v]
        active = [v for v in others if v not in stops]
        if not active:
            return Schedule(counts, stops, pending=False, rows=rows)
        if counts[base] >= high:
            stops.update(dict.fromkeys(active, MAX_SEEDS))
            rows.update((v, outcomes[v]) for v in active if v in outcomes)
            return Schedule(counts, stops, pending=False, rows=rows)
        for v in active:
            counts[v] += 1
        counts[base] = max(counts[v] for v in others)


def scheduled(results: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, ReportSpec]:
    """For an adaptive study: ``results`` cut to the trials its schedule asks for, and the spec
    with the schedule (``seed_counts``, ``stops`` and the stopping family, ``stopping``: what
    the report shows as its comparisons with the baseline). Trials of the plan's candidate
    seeds that the schedule does not ask for (trained under another ``min_effect``, say) are
    left out, and a note says so. Anything else is returned as it is."""
    if spec.adaptive is None or spec.seed_counts or results.empty:
        return results, spec
    plan = schedule(results, spec, variant_order(results))
    index = {s: i for i, s in enumerate(spec.seeds)}
    position = results["seed"].map(index).fillna(len(spec.seeds))
    keep = position < results["variant"].map(plan.counts).fillna(0)
    notes = list(spec.notes)
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} trial run(s) of this plan's candidate seeds are left "
                     f"out: the stopping rule, at this min_effect, does not ask for them.")
    return results[keep], replace(spec, seed_counts=plan.counts, stops=plan.stops, notes=notes,
                                  stopping=plan.family)


def rules(spec: ReportSpec) -> dict:
    """The keyword arguments of :func:`ablate.stats.inference.evaluate` that the spec sets:
    ``min_effect``, the ``looks`` (every seed from min to max for an adaptive study, else one
    fixed look) and the scheduled seed ``counts``."""
    looks: Looks = adaptive_looks(*spec.adaptive) if spec.adaptive else FIXED
    return {"min_effect": spec.min_effect, "looks": looks, "counts": spec.seed_counts or None}


def stopping_family(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame | None:
    """The stopping rule's family (each variant against the baseline, at the group-sequential
    looks) on the seeds a scheduled adaptive study gives each variant (``spec.seed_counts``,
    from :func:`scheduled`), decided on ``results`` as they are: e.g. on the metric at an
    earlier epoch. None without a baseline or trials."""
    if spec.adaptive is None or not spec.seed_counts:
        raise ValueError("stopping_family needs a scheduled adaptive spec (see scheduled())")
    return _stopping_family(results, spec, variant_order(results))(dict(spec.seed_counts))
