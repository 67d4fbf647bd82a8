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

Failures are outcomes: a side of a contrast that diverged or failed on seeds where the other side
finished makes the contrast *unstable*, whatever the finished seeds say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LOST = ("diverged", "failed")
MIN_PAIRS_FOR_G = 5
G_MAX_ABS_DZ = 100.0  # |d_z| above this: the differences hardly vary, g says nothing


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

    def side(self, sign: int) -> list[str]:
        """Variants with a positive (1) or negative (-1) weight in some group."""
        return list(dict.fromkeys(v for g in self.groups for v, w in g.items()
                                  if np.sign(w) == sign))


def t_tests(samples: list[np.ndarray]) -> pd.DataFrame:
    """Per sample d: n, mean, SD, standard error, two-sided p of ``mean(d) = 0``, Hedges' g_z.

    With fewer than 2 values p is NaN. When every value is equal the SE is 0 and p is 0 (or 1
    when they are all 0). g_z = J·mean/sd with J = 1 − 3/(4(n − 1) − 1), given only from
    :data:`MIN_PAIRS_FOR_G` pairs on and while |mean/sd| ≤ :data:`G_MAX_ABS_DZ`.
    """
    n = np.array([len(d) for d in samples])
    mean = np.array([d.mean() if len(d) else np.nan for d in samples])
    sd = np.array([d.std(ddof=1) if len(d) > 1 else np.nan for d in samples])
    se = sd / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(mean) / se, np.maximum(n - 1, 1)),
                     np.where(mean != 0, 0.0, 1.0))
        dz = np.where(sd > 0, mean / sd, np.inf)
    p[n < 2] = np.nan
    usable_g = (n >= MIN_PAIRS_FOR_G) & (np.abs(dz) <= G_MAX_ABS_DZ)
    g = np.where(usable_g, dz * (1 - 3 / (4 * (n - 1) - 1)), np.nan)
    return pd.DataFrame({"n_pairs": n, "diff": mean, "sd": sd, "se": se, "p": p,
                         "hedges_g": g})


def holm_confidence(p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and the confidence level of each test's interval (module doc).

    Adjusted p of rank k: max over j ≤ k of min(1, (m − j + 1)·p(j)), as ``statsmodels``'
    ``multipletests(method="holm")`` computes it (a test checks they agree; computed here
    because ``multipletests`` runs a full garbage collection on every call). NaN p-values are
    not tests: they get NaN for both and do not count in the family size.
    """
    p = np.asarray(p, float)
    adjusted, confidence = np.full(len(p), np.nan), np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if not len(tested):
        return adjusted, confidence
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = np.arange(1, m + 1)
    adjusted[order] = np.minimum(1, np.maximum.accumulate((m - steps + 1) * p[order]))
    rejected = adjusted[order] < alpha
    step = np.where(rejected, steps, rejected.sum() + 1)
    confidence[order] = 1 - alpha / (m - step + 1)
    return adjusted, confidence


def estimate(
    contrasts: list[Contrast], values: pd.DataFrame, outcome: pd.DataFrame
) -> pd.DataFrame:
    """Per contrast: the paired t statistics and what became of the seeds it could not use.

    ``values`` and ``outcome`` are the seeds x variants tables of :func:`ablate.report.trials.
    grids`. A seed is used when at least one group of the contrast is complete on it; it is
    *partial* when some are not.
    """
    y = values.to_numpy(float)
    status = outcome.to_numpy(str)
    column = {v: i for i, v in enumerate(values.columns)}
    rows, samples = [], []
    for c in contrasts:
        per_group = np.column_stack([
            y[:, [column[v] for v in g]] @ np.array(list(g.values())) for g in c.groups
        ])
        complete = ~np.isnan(per_group)
        used = complete.any(axis=1)
        samples.append(np.where(complete, per_group, 0).sum(axis=1)[used]
                       / complete.sum(axis=1)[used])
        cells = status[:, [column[v] for v in dict.fromkeys(v for g in c.groups for v in g)]]
        row = {"kind": c.kind, "term": c.term, "factor": c.factor, "variant": c.variant,
               "reference": c.reference, "meaning": c.meaning, "n_seeds": len(y),
               "n_partial": int((used & ~complete.all(axis=1)).sum())}
        row |= _lost_seeds(cells[~used])
        row |= _instability(c, status, column)
        rows.append(row)
    return pd.concat([pd.DataFrame(rows), t_tests(samples)], axis=1)


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
    every factor, so instability is judged per variant (:func:`ablate.report.stats.compare`)."""
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
    kinds = set(plus.ravel()) if c.kind != "interaction" else set()
    all_lost = f"all {kinds.pop()}" if len(kinds) == 1 and kinds <= set(LOST) else ""
    return {"unstable": "; ".join(notes), "all_lost": all_lost}


def decide(frame: pd.DataFrame, alpha: float, mode: str) -> pd.DataFrame:
    """Holm across the family, the deciding intervals, and a verdict per contrast.

    Adds ``p_holm``, ``confidence``, ``ci_low``, ``ci_high``, ``verdict`` (what the report
    prints) and ``outcome`` (its kind: helps, hurts, interaction found, unstable, no clear effect,
    not enough data, all diverged, all failed).
    """
    frame = frame.copy()
    p_holm, confidence = holm_confidence(frame["p"].to_numpy(float), alpha)
    diff, se = frame["diff"].to_numpy(float), frame["se"].to_numpy(float)
    df = np.maximum(frame["n_pairs"].to_numpy(float) - 1, 1)
    half = stats.t.ppf(1 - (1 - confidence) / 2, df) * se
    low, high = diff - half, diff + half
    excludes = (low > 0) | (high < 0)
    outcomes, verdicts = [], []
    for row, clear, d in zip(frame.itertuples(), excludes, diff):
        direction = ("interaction found" if row.kind == "interaction"
                     else "helps" if (d > 0) == (mode == "max") else "hurts")
        outcome = (row.all_lost or ("unstable" if row.unstable else "")
                   or ("not enough data" if row.n_pairs < 2 else "")
                   or (direction if clear else "no clear effect"))
        verdict = outcome
        if outcome == "unstable":
            verdict = f"unstable ({row.unstable})" + (
                f"; {direction} on the finished seeds" if clear else "")
        outcomes.append(outcome)
        verdicts.append(verdict)
    frame["p_holm"], frame["confidence"] = p_holm, confidence
    frame["ci_low"], frame["ci_high"] = low, high
    frame["verdict"], frame["outcome"] = verdicts, outcomes
    return frame


def evaluate(
    contrasts: list[Contrast], values: pd.DataFrame, outcome: pd.DataFrame, alpha: float,
    mode: str,
) -> pd.DataFrame:
    """:func:`estimate` then :func:`decide`: one family, one Holm correction."""
    return decide(estimate(contrasts, values, outcome), alpha, mode)
