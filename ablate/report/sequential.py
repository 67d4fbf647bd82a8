"""Adaptive studies (``seeds="adaptive"``): which seeds each variant gets, replayed from results.

Every variant starts with ``min_seeds`` seeds. After each round, each variant is compared with
the baseline, paired by seed (one family, the step-down of :mod:`ablate.report.inference` at the
group-sequential boundaries of :mod:`ablate.report.boundaries`); a variant whose verdict is
decided — helps, hurts, negligible, unstable, all diverged or all failed — stops, and every other
variant gets the next seed, up to ``max_seeds``. Variants that continue all get the same next
seed, and the baseline runs every seed any variant runs, so every comparison stays paired.

The schedule is a pure function of the recorded results: :func:`schedule` replays the rounds
from the first, deciding each round on exactly the trials scheduled by then (later trials of a
variant are ignored until their round), and stops at the first round with a trial that has not
ended. So ``ablate run`` resumes an interrupted adaptive study exactly where it was, in process or
on Ray, and ``ablate report`` finds the same schedule without being told it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from ablate.report.boundaries import FIXED, Looks, adaptive_looks
from ablate.report.inference import Contrast, evaluate
from ablate.report.spec import ALPHA, ReportSpec
from ablate.report.trials import grids, variant_order

ENDED = ("finished", "diverged", "failed")
DECIDED = ("helps", "hurts", "negligible", "unstable", "all diverged", "all failed")
MAX_SEEDS = "max_seeds reached"


@dataclass(frozen=True)
class Schedule:
    """Seeds per variant (the first ``counts[v]`` of the study's candidate seeds), why each
    non-baseline variant stopped there (its verdict then, or :data:`MAX_SEEDS`; absent while it
    continues), and whether some scheduled trial has not ended yet."""

    counts: dict[str, int]
    stops: dict[str, str]
    pending: bool


def schedule(results: pd.DataFrame, spec: ReportSpec, variants: Sequence[str]) -> Schedule:
    """Replay the rounds of an adaptive study on ``results`` (module doc).

    ``variants``: the study's variant ids, baseline first; ``spec.seeds`` the candidate seeds
    (0 … max_seeds − 1) and ``spec.adaptive`` the (min_seeds, max_seeds) bounds.
    """
    assert spec.adaptive is not None
    is_ended = results["status"].isin(ENDED)
    ended = set(zip(results.loc[is_ended, "variant"], results.loc[is_ended, "seed"]))

    def verdicts(counts: dict[str, int]) -> dict[str, str] | None:
        planned = {(v, s) for v in variants for s in spec.seeds[:counts[v]]}
        return _verdicts(results, spec, counts, planned) if planned <= ended else None

    return replay(variants, spec.adaptive, verdicts)


def replay(
    variants: Sequence[str], bounds: tuple[int, int],
    verdicts: Callable[[dict[str, int]], dict[str, str] | None],
) -> Schedule:
    """The rounds of an adaptive study: ``verdicts(counts)`` gives each variant's outcome
    against the baseline on the trials ``counts`` schedules (variant -> its first seeds), or
    None while some of them have not ended (the schedule so far is then pending)."""
    low, high = bounds
    base, others = variants[0], list(variants[1:])
    counts = dict.fromkeys(variants, low)
    stops: dict[str, str] = {}
    while True:
        outcomes = verdicts(dict(counts))
        if outcomes is None:
            return Schedule(counts, stops, pending=True)
        for v in others:
            if v not in stops and outcomes.get(v) in DECIDED:
                stops[v] = outcomes[v]
        active = [v for v in others if v not in stops]
        if not active:
            return Schedule(counts, stops, pending=False)
        if counts[base] >= high:
            stops.update(dict.fromkeys(active, MAX_SEEDS))
            return Schedule(counts, stops, pending=False)
        for v in active:
            counts[v] += 1
        counts[base] = max(counts[v] for v in others)


def _verdicts(results: pd.DataFrame, spec: ReportSpec, counts: dict[str, int],
              planned: set[tuple[str, int]]) -> dict[str, str]:
    """Each variant's outcome against the baseline on the ``planned`` trials only."""
    keys = pd.MultiIndex.from_arrays([results["variant"], results["seed"]])
    sub = results[keys.isin(list(planned))]
    order = variant_order(sub)
    if len(order) < 2:
        return {}
    values, outcome = grids(sub, spec)
    contrasts = [Contrast("variant", v, ({v: 1.0, order[0]: -1.0},), variant=v)
                 for v in order[1:]]
    family = evaluate(contrasts, values, outcome, ALPHA, spec.mode,
                      **{**rules(spec), "counts": counts})
    return dict(zip(family["variant"], family["outcome"]))


def scheduled(results: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, ReportSpec]:
    """For an adaptive study: ``results`` cut to the trials its schedule asks for, and the spec
    with the schedule (``seed_counts``, ``stops``). Trials of the plan's candidate seeds that the
    schedule does not ask for (trained under another ``min_effect``, say) are left out, and a
    note says so. Anything else is returned as it is."""
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
    return results[keep], replace(spec, seed_counts=plan.counts, stops=plan.stops, notes=notes)


def rules(spec: ReportSpec) -> dict:
    """The keyword arguments of :func:`ablate.report.inference.evaluate` that the spec sets:
    ``min_effect``, the ``looks`` (every seed from min to max for an adaptive study, else one
    fixed look) and the scheduled seed ``counts``."""
    looks: Looks = adaptive_looks(*spec.adaptive) if spec.adaptive else FIXED
    return {"min_effect": spec.min_effect, "looks": looks, "counts": spec.seed_counts or None}
