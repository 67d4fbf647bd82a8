"""Paired inference over seeds for a family of contrasts, with intervals that agree with verdicts.

A *contrast* is a weighted sum of variants' final metric taken on one seed: ``variant −
baseline``, the difference between two levels of a factor averaged over the other factors, or a
difference of differences (an interaction). Every variant runs on the same seeds, so each
contrast gives one value per seed where all its variants finished, and it is tested with a
one-sample t-test of those values (the paired t-test; ``scipy.stats``).

Multiplicity: Holm's step-down procedure across the family.
The interval shown for each contrast is the one that decides it. Sort the family's p-values,
p(1) ≤ … ≤ p(m); Holm rejects the first r. A rejected contrast of rank k gets the t-interval at
confidence 1 − α/(m − k + 1), the level its own step used; every other contrast gets the level
of the step where Holm stopped, 1 − α/(m − r). So an interval excludes 0 exactly when Holm
rejects, and helps/hurts is read off the interval itself.

With a smallest effect of interest δ (``min_effect``) each contrast can make a second claim:
*negligible*, when its interval lies inside ±δ (an equivalence finding: two one-sided tests, each
at half the interval's level). At most one of "the effect is 0" and "the effect is at least δ
in size" is true, so the step-down is Shaffer's refinement of Holm's over both kinds of claim: a
contrast leaves the family (the divisor drops by one) only once all its claims are settled. The
intervals follow the same rule as above (a settled contrast shows its own step's level, every
other the level where the procedure stopped), so excludes-0 and inside-±δ are read off the
interval shown. Without δ this is exactly Holm.

In an adaptive study each contrast is at its own look of a group-sequential design
(:mod:`ablate.stats.boundaries`): its p-values are the sequential ones (the smallest overall
level at which it crosses its look's boundary) and its interval uses the t-multiplier of that
look, so the intervals are repeated confidence intervals, valid whenever the variant stopped.

Failures are outcomes: a side of a contrast that diverged or failed on seeds where the other side
finished makes the contrast *unstable*, whatever the finished seeds say.

What the data cannot support is not tested: a contrast with fewer than :data:`MIN_PAIRS` paired
seeds, or whose paired differences do not vary (:data:`SPREAD_TOL`: all equal up to float32
rounding, as when an accuracy on a small validation set moves by the same number of images on
every seed), gets no p-value, no interval and no place in the family; it is *not enough data*,
with its ``reason``. A decided difference or equivalence claim whose adjusted p lies within a
factor of :data:`FRAGILE_FACTOR` of α is *fragile* (a marker, not a verdict), with the seeds a
firm verdict would need (:func:`seeds_for_firm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ablate.stats.boundaries import FIXED, Looks
from ablate.stats.verdict import Verdict

LOST = ("diverged", "failed")
ALL_LOST = {"diverged": Verdict.ALL_DIVERGED, "failed": Verdict.ALL_FAILED}  # by trial status
MIN_PAIRS = 3  # fewer paired seeds: not enough data (a t-test on 1 degree of freedom says little)
SPREAD_TOL = 1e-6  # differences whose SD is below this share of the metric's size do not
# vary: equal up to the float32 rounding of logged metrics (a relative step of about 1e-7)
MIN_PAIRS_FOR_G = 5
G_MAX_ABS_DZ = 100.0  # |d_z| above this: the differences hardly vary, g says nothing
FRAGILE_FACTOR = 2.0  # a decided claim with α/2 <= adjusted p < α is fragile
FIRM_POWER = 0.8  # the power the seeds of a firm verdict are estimated for


@dataclass(frozen=True)
class Contrast:
    """A comparison made on every seed: the mean over ``groups`` of each group's weighted sum.

    A group is a signed combination of variants whose per-seed value estimates the effect on
    its own: ``{variant: 1, baseline: -1}``, or one matched pair (or, for an interaction, one
    matched quartet) of factorial cells. On a seed, the groups whose variants all finished are
    averaged; a cell lost on that seed drops only its own groups there.

    ``kind`` is ``variant`` (vs the baseline), ``pair`` (two levels of a factor in a
    one-at-a-time design), ``main``, ``interaction`` or ``simple`` (one factor's effect within
    a level of another). ``reference`` names the negative side in instability notes.
    """

    kind: str
    term: str
    groups: tuple[dict[str, float], ...]
    reference: str = "baseline"
    factor: str = ""
    variant: str = ""
    meaning: str = ""  # what the estimate says, in words (interactions)
    within: str = ""  # simple effects: the level of the other factor it is taken at (``c=on``)

    def side(self, sign: int) -> list[str]:
        """Variants with a positive (1) or negative (-1) weight in some group."""
        return list(dict.fromkeys(v for g in self.groups for v, w in g.items()
                                  if np.sign(w) == sign))


def t_tests(samples: list[np.ndarray], scales: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`paired_stats` as a table (one row per sample)."""
    return pd.DataFrame(paired_stats(samples, scales))


def paired_stats(
    samples: list[np.ndarray], scales: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per sample d: n, mean, SD, standard error, whether it is *tied*, the two-sided p of
    ``mean(d) = 0`` and Hedges' g_z.

    *Tied*: at least 2 values and an SD of at most :data:`SPREAD_TOL` times the sample's scale
    (``scales``: the size of the metric the differences are of, e.g. the largest |value| of
    the variants compared; default: the largest |d|), i.e. the values are equal up to the
    float32 rounding of logged metrics. p is NaN (not tested) with fewer than
    :data:`MIN_PAIRS` values or when tied.
    g_z = J·mean/sd with J = 1 − 3/(4(n − 1) − 1), given only from :data:`MIN_PAIRS_FOR_G`
    pairs on and while |mean/sd| ≤ :data:`G_MAX_ABS_DZ`. No numpy warnings.
    """
    n = np.array([len(d) for d in samples], dtype=int)
    mean = np.array([d.mean() if len(d) else np.nan for d in samples])
    sd = np.array([d.std(ddof=1) if len(d) > 1 else np.nan for d in samples])
    size = np.array([np.abs(d).max() if len(d) else 0.0 for d in samples])
    if scales is not None:
        size = np.fmax(size, np.asarray(scales, float))
    tied = (n >= 2) & (np.nan_to_num(sd, nan=np.inf) <= SPREAD_TOL * size)
    tested = (n >= MIN_PAIRS) & ~tied
    se = np.where(n > 0, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    p = np.full(len(samples), np.nan)
    p[tested] = 2 * stats.t.sf(np.abs(mean[tested]) / se[tested], n[tested] - 1)
    g = np.full(len(samples), np.nan)
    dz = np.divide(mean, sd, out=np.full(len(samples), np.inf), where=tested)
    usable_g = tested & (n >= MIN_PAIRS_FOR_G) & (np.abs(dz) <= G_MAX_ABS_DZ)
    g[usable_g] = dz[usable_g] * (1 - 3 / (4 * (n[usable_g] - 1) - 1))
    return {"n_pairs": n, "diff": mean, "sd": sd, "se": se, "tied": tied, "scale": size,
            "p": p, "hedges_g": g}


def holm_confidence(p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and the confidence level of each test's interval (module doc).

    Adjusted p of rank k: max over j ≤ k of min(1, (m − j + 1)·p(j)), as ``statsmodels``'
    ``multipletests(method="holm")`` computes it (a test checks they agree; computed here
    because ``multipletests`` runs a full garbage collection on every call). NaN p-values are
    not tests: they get NaN for both and do not count in the family size.
    """
    adjusted, level = step_down(p, np.full(len(p), np.nan), alpha)
    return adjusted, 1 - level


def step_down(
    p_diff: np.ndarray, p_equiv: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shaffer's step-down over each contrast's difference and equivalence claims (module doc).

    ``p_equiv`` is NaN where a contrast makes no equivalence claim; with no equivalence claims
    at all this is Holm (:func:`holm_confidence`). The claims are sorted by p-value; the k-th
    is tested at α/t_k, where t_k is the number of tested contrasts minus those whose every
    claim came before it, and the adjusted p-values are the running maximum of t_k·p; a claim
    is accepted while that maximum stays below α. Returns the adjusted p of each difference
    claim and the level of each contrast's interval: the level of the step that settled its
    last claim, else the level where the procedure stopped (a claim is accepted exactly when
    its p-value is below its contrast's level). NaN where ``p_diff`` is NaN (not tested).
    """
    adjusted, _, level = step_down_claims(p_diff, p_equiv, alpha)
    return adjusted, level


def step_down_claims(
    p_diff: np.ndarray, p_equiv: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`step_down`, with the adjusted p of each equivalence claim as well:
    ``(adjusted difference p, adjusted equivalence p, level)``."""
    p_diff, p_equiv = np.asarray(p_diff, float), np.asarray(p_equiv, float)
    adjusted = np.full(len(p_diff), np.nan)
    adjusted_equiv, level = adjusted.copy(), adjusted.copy()
    tested = np.isfinite(p_diff)
    claims = sorted(((p[i], i, kind) for kind, p in (("d", p_diff), ("e", p_equiv))
                     for i in np.flatnonzero(tested & np.isfinite(p))),
                    key=lambda c: (c[0], c[2]))
    open_claims = {i: 1 + int(np.isfinite(p_equiv[i])) for i in np.flatnonzero(tested)}
    t, t_rejected, running = len(open_claims), len(open_claims), 0.0
    for p, i, kind in claims:
        running = max(running, min(1.0, t * p))
        rejected = running < alpha
        (adjusted if kind == "d" else adjusted_equiv)[i] = running
        open_claims[i] -= 1
        if open_claims[i] == 0:
            if rejected:
                level[i] = alpha / t
                t_rejected -= 1
            t -= 1
    level[tested & np.isnan(level)] = alpha / t_rejected if t_rejected else alpha
    return adjusted, adjusted_equiv, level


def estimate(
    contrasts: list[Contrast], values: pd.DataFrame, outcome: pd.DataFrame,
    counts: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Per contrast: the paired t statistics and what became of the seeds it could not use.

    ``values`` and ``outcome`` are the seeds x variants tables of :func:`ablate.stats.trials.
    grids`. A seed is used when at least one group of the contrast is complete on it; it is
    *partial* when some are not. ``counts`` (adaptive studies): variant -> how many of the
    first seeds it was scheduled for; a contrast counts only the seeds every one of its
    variants was scheduled for, and the others are neither used nor lost.
    """
    y = values.to_numpy(float)
    status = outcome.to_numpy(str)
    column = {v: i for i, v in enumerate(values.columns)}
    scheduled = np.arange(len(y))[:, None] < np.array(
        [(counts or {}).get(v, len(y)) for v in values.columns])
    rows, samples, scales = [], [], []
    for c in contrasts:
        variants = [column[v] for v in dict.fromkeys(v for g in c.groups for v in g)]
        planned = scheduled[:, variants].all(axis=1)
        per_group = np.column_stack([
            y[:, [column[v] for v in g]] @ np.array(list(g.values())) for g in c.groups
        ])[planned]
        complete = ~np.isnan(per_group)
        used = complete.any(axis=1)
        samples.append(np.where(complete, per_group, 0).sum(axis=1)[used]
                       / complete.sum(axis=1)[used])
        sizes = np.abs(y[planned][:, variants])
        scales.append(float(np.nanmax(sizes)) if np.isfinite(sizes).any() else 0.0)
        cells = status[planned][:, variants]
        row = {"kind": c.kind, "term": c.term, "factor": c.factor, "variant": c.variant,
               "reference": c.reference, "meaning": c.meaning, "within": c.within,
               "n_seeds": int(planned.sum()),
               "n_partial": int((used & ~complete.all(axis=1)).sum())}
        row |= _lost_seeds(cells[~used])
        row |= _instability(c, status[planned], column)
        rows.append(row)
    return pd.concat([pd.DataFrame(rows), t_tests(samples, np.array(scales))], axis=1)


def _lost_seeds(status: np.ndarray) -> dict[str, int]:
    """Seeds a contrast could not use, by the worst thing that happened to one of its cells."""
    diverged = (status == "diverged").any(axis=1)
    failed = (status == "failed").any(axis=1) & ~diverged
    return {"lost_diverged": int(diverged.sum()), "lost_failed": int(failed.sum()),
            "lost_missing": int(len(status) - diverged.sum() - failed.sum())}


def _instability(c: Contrast, status: np.ndarray, column: dict[str, int]) -> dict[str, str]:
    """``unstable``: for a single comparison (variant vs baseline, or two levels), the seeds
    where one side diverged or failed while the other finished; ``all_lost``: ``all
    diverged``/``all failed`` when the changed side never finished.

    Factorial effects average over cells, and a cell that diverges has a matched partner in
    every factor, so instability is judged per variant (:func:`ablate.stats.compare.compare`)."""
    plus = status[:, [column[v] for v in c.side(1)]]
    notes = []
    if c.kind in ("variant", "pair"):
        minus = status[:, [column[v] for v in c.side(-1)]]
        for side, other, name in ((plus, minus, ""), (minus, plus, f"{c.reference}: ")):
            reference = (other == "finished").all(axis=1)
            lost = np.isin(side, LOST).any(axis=1) & reference
            if lost.any():
                kinds = [k for k in LOST if (side[lost] == k).any()]
                notes.append(f"{name}{lost.sum()}/{reference.sum()} {' or '.join(kinds)}")
    ends: set[str] = set(plus.ravel()) if c.kind != "interaction" else set()
    all_lost = ALL_LOST[ends.pop()].value if len(ends) == 1 and ends <= set(LOST) else ""
    return {"unstable": "; ".join(notes), "all_lost": all_lost}


def decide(
    frame: pd.DataFrame, alpha: float, mode: str, *, min_effect: float | None = None,
    looks: Looks = FIXED,
) -> pd.DataFrame:
    """The step-down across the family, the deciding intervals, and a verdict per contrast.

    Adds ``p_holm`` (the adjusted p of the difference claim), ``p_equiv_adj`` (of the
    equivalence claim, with ``min_effect``), ``confidence``, ``ci_low``, ``ci_high``,
    ``verdict`` (what the report prints), ``outcome`` (its kind, a
    :class:`~ablate.stats.verdict.Verdict` as text: helps, hurts, interaction found, negligible,
    unstable, no clear effect — *undecided* when ``min_effect`` is set —, not enough data, all
    diverged, all failed), ``reason`` (why not enough data, in words), ``fragile`` and
    ``more_seeds`` (:func:`fragility`). A contrast whose interval lies inside ±``min_effect`` is
    *negligible*, even if it also excludes 0 (a real but unimportant effect). ``looks``: the
    contrasts are at looks of a group-sequential design (module doc).
    """
    n = frame["n_pairs"].to_numpy(int)
    columns = intervals(frame["diff"].to_numpy(float), frame["se"].to_numpy(float), n,
                        frame["p"].to_numpy(float), alpha, min_effect=min_effect, looks=looks)
    tested = np.isfinite(frame["p"].to_numpy(float))
    rows = zip(frame["kind"], frame["all_lost"], frame["unstable"], tested, columns["ci_low"],
               columns["ci_high"], frame["diff"])
    # mypy types a zip of 7 iterables as tuple[Any, ...], then rejects *row (false positive)
    judged = [judge(*row, mode, min_effect) for row in rows]  # type: ignore[call-arg]
    out = frame.assign(**columns, verdict=[v for v, _ in judged],
                       outcome=[o for _, o in judged])
    zero = frame["diff"].abs() <= SPREAD_TOL * frame["scale"]  # 0 up to float rounding
    reasons = [untested_reason(int(k), bool(t), 0.0 if z else float(d))
               if o == Verdict.NOT_ENOUGH_DATA else ""
               for k, t, d, z, o in zip(n, frame["tied"], frame["diff"], zero, out["outcome"])]
    return out.assign(reason=reasons, **fragility(out, alpha, min_effect))


def untested_reason(n_pairs: int, tied: bool, diff: float = np.nan) -> str:
    """Why a contrast is not tested, in words (for *not enough data*)."""
    if n_pairs == 0:
        return "no seed where both sides finished"
    if tied:
        value = f" {diff:+.3g}" if np.isfinite(diff) and abs(diff) > 0 else " 0"
        return (f"the {n_pairs} paired differences are all{value}: no spread to estimate the "
                "noise from")
    return f"only {n_pairs} paired seed{'s' * (n_pairs != 1)}; {MIN_PAIRS} are needed"


def fragility(family: pd.DataFrame, alpha: float,
              min_effect: float | None) -> dict[str, np.ndarray]:
    """``fragile``: a decided claim whose adjusted p lies within a factor of
    :data:`FRAGILE_FACTOR` of α (α/2 ≤ p < α): the difference claim of helps, hurts and
    interaction found, the equivalence claim of negligible. ``more_seeds``: for those, how many
    seeds beyond those used :func:`seeds_for_firm` estimates a firm verdict needs (NaN
    elsewhere, and where the estimate exceeds its search)."""
    outcome = family["outcome"].to_numpy(str)
    difference = np.isin(outcome, [Verdict.HELPS, Verdict.HURTS, Verdict.INTERACTION_FOUND])
    negligible = outcome == Verdict.NEGLIGIBLE
    p = np.where(negligible, family["p_equiv_adj"], family["p_holm"]).astype(float)
    fragile = (difference | negligible) & (p >= alpha / FRAGILE_FACTOR) & (p < alpha)
    more = np.full(len(family), np.nan)
    for i in np.flatnonzero(fragile):
        row = family.iloc[i]
        effect = (abs(row["diff"]) if difference[i]
                  else (min_effect or 0.0) - abs(row["diff"]))
        needed = seeds_for_firm(effect, row["sd"], 1 - row["confidence"])
        more[i] = max(needed - int(row["n_pairs"]), 1) if np.isfinite(needed) else np.nan
    return {"fragile": fragile, "more_seeds": more}


def seeds_for_firm(effect: float, sd: float, level: float, power: float = FIRM_POWER,
                   most: int = 1000) -> float:
    """The fewest paired seeds n at which a paired t-test at half the interval's ``level``
    (a firm verdict: adjusted p below α/2) would have ``power`` if the true effect were
    ``effect`` with per-seed SD ``sd``: the smallest n with effect·√n/sd ≥ t(1 − level/4,
    n − 1) + t(power, n − 1) (the usual normal-approximation sample size, with t-quantiles).
    NaN when no n up to ``most`` does (or the inputs say nothing)."""
    if not (effect > 0 and sd > 0 and 0 < level < 1):
        return np.nan
    n = np.arange(MIN_PAIRS, most + 1)
    enough = effect * np.sqrt(n) / sd >= (stats.t.isf(level / 4, n - 1)
                                         + stats.t.ppf(power, n - 1))
    return float(n[np.argmax(enough)]) if enough.any() else np.nan


def intervals(
    diff: np.ndarray, se: np.ndarray, n: np.ndarray, p: np.ndarray, alpha: float, *,
    min_effect: float | None = None, looks: Looks = FIXED,
) -> dict[str, np.ndarray]:
    """The step-down over a family's paired estimates and the interval that decides each:
    ``p_holm`` (adjusted p of the difference claim), ``p_equiv_adj`` (of the equivalence
    claim), ``confidence``, ``ci_low``, ``ci_high``. A contrast whose ``p`` is NaN is not
    tested (no claim, no interval)."""
    p = np.asarray(p, float)
    p_diff = np.array([looks.adjusted(x, k) for x, k in zip(p, n)])
    p_equiv = np.array([equivalence_p(d, e, k, min_effect, looks) if np.isfinite(x) else np.nan
                        for d, e, k, x in zip(diff, se, n, p)])
    p_holm, p_equiv_adj, level = step_down_claims(p_diff, p_equiv, alpha)
    confidence = 1 - level
    tested = np.isfinite(level)
    multiplier = np.full(len(p), np.nan)
    if looks.sequential:
        multiplier[tested] = [looks.critical(a, k) for a, k in zip(level[tested], n[tested])]
    else:
        multiplier[tested] = stats.t.isf(level[tested] / 2, np.maximum(n[tested] - 1, 1))
    half = multiplier * np.asarray(se, float)
    return {"p_holm": p_holm, "p_equiv_adj": p_equiv_adj, "confidence": confidence,
            "ci_low": diff - half, "ci_high": diff + half}


def judge(kind: str, all_lost: str, unstable: str, tested: bool, low: float, high: float,
          diff: float, mode: str, min_effect: float | None) -> tuple[str, str]:
    """``(verdict, outcome)`` of one contrast from its deciding interval (:func:`decide`): the
    text the report prints and the :class:`~ablate.stats.verdict.Verdict` it is, as text. They
    are the same but for *unstable*, whose printed text also says what was lost. A contrast
    that is not ``tested`` (too few pairs, or no spread: :func:`paired_stats`) is not enough
    data, unless it lost seeds (unstable, all diverged, all failed)."""
    clear = tested and (low > 0 or high < 0)
    inside = (tested and min_effect is not None and -min_effect < low
              and high < min_effect)
    direction = (Verdict.INTERACTION_FOUND if kind == "interaction"
                 else Verdict.HELPS if (diff > 0) == (mode == "max") else Verdict.HURTS)
    unclear = Verdict.NO_CLEAR_EFFECT if min_effect is None else Verdict.UNDECIDED
    outcome = (Verdict(all_lost) if all_lost else Verdict.UNSTABLE if unstable
               else Verdict.NOT_ENOUGH_DATA if not tested
               else Verdict.NEGLIGIBLE if inside else direction if clear else unclear)
    if outcome is not Verdict.UNSTABLE:
        return outcome.value, outcome.value
    return f"{outcome.value} ({unstable})" + (f"; {direction.value} on the finished seeds"
                                              if clear else ""), outcome.value


def equivalence_p(diff: float, se: float, n: int, min_effect: float | None,
                  looks: Looks = FIXED) -> float:
    """The smallest overall level whose interval (at the look of ``n`` pairs) lies inside
    ±``min_effect``: twice the larger p-value of the two one-sided tests, made sequential by
    ``looks``. NaN without ``min_effect``, with fewer than :data:`MIN_PAIRS` pairs or without
    spread (``se`` 0: not tested)."""
    if min_effect is None or n < MIN_PAIRS or not np.isfinite(diff) or not se > 0:
        return np.nan
    margin = min_effect - abs(diff)
    if margin <= 0:
        return 1.0
    return looks.adjusted(float(2 * stats.t.sf(margin / se, n - 1)), n)


def evaluate(
    contrasts: list[Contrast], values: pd.DataFrame, outcome: pd.DataFrame, alpha: float,
    mode: str, *, min_effect: float | None = None, looks: Looks = FIXED,
    counts: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """:func:`estimate` then :func:`decide`: one family, one step-down."""
    return decide(estimate(contrasts, values, outcome, counts), alpha, mode,
                  min_effect=min_effect, looks=looks)
