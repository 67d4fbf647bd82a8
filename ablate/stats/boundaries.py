"""Group-sequential boundaries: how strict each look at a growing number of seeds must be.

An adaptive study looks at its paired differences after every round of seeds, at n = n_1 < n_2
< … < n_K paired seeds (``min_seeds`` … ``max_seeds``). Testing at level a on every look would
reject a true null far more often than a; instead the level is *spent* over the looks with the
Lan–DeMets O'Brien–Fleming-type spending function (Lan and DeMets 1983)

    a(t) = 2 − 2·Φ(z_{1−a/2} / √t),  t = n_k / n_K (the information fraction),

so that under a true null the probability that the paired t-statistic crosses its boundary at
*any* look is a: the boundary c_k of look k solves P(|T_j| < c_j for j < k, |T_k| ≥ c_k) =
a(t_k) − a(t_{k−1}).

The variance of the differences is estimated, and with so few seeds (2 degrees of freedom at
3 seeds) the usual shortcut — boundaries for known variance (Jennison and Turnbull's recursive
integration, as in gsDesign) turned into t-quantiles at the same nominal levels (Jennison and
Turnbull 2000, §11.4) — spends about 14% too much at every look (the t-statistics of successive
looks are less dependent than z-statistics). So the boundaries are computed for the
t-statistics themselves, on :data:`PATHS` simulated null paths of normal differences (a fixed
seed: the same boundaries in every process; the t-statistic's law does not depend on the
variance). A look whose increment is too small to estimate there (under :data:`MIN_CROSSINGS`
crossings) gets the increment itself as its nominal level, which bounds its share (the union
bound) without simulation.

The interval d̄ ± c_k·se at every look is a *repeated confidence interval*: all of them cover
the true difference together with probability 1 − a, so the one at the look where a variant
stopped is valid whatever made it stop. A study with a fixed number of seeds has a single look:
the nominal level is a and everything reduces to the ordinary paired t-test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import stats

SPENDING = "Lan–DeMets O'Brien–Fleming-type spending function"
PATHS = 2**17  # simulated null paths the boundaries are computed on
MIN_CROSSINGS = 100  # fewer expected crossings at a look: its increment is its nominal level
_SEED = 20261130
_GRID = np.logspace(-5, np.log10(0.5), 41)  # overall levels a at which boundaries are tabled


def spent(a: float, t: np.ndarray) -> np.ndarray:
    """Two-sided level spent by information fraction ``t`` (O'Brien–Fleming-type)."""
    return 2 * stats.norm.sf(stats.norm.isf(a / 2) / np.sqrt(t))


def _null_t(sizes: tuple[int, ...]) -> np.ndarray:
    """|paired t| at each look (columns) of :data:`PATHS` null paths of N(0, 1) differences."""
    x = np.random.default_rng(_SEED).standard_normal((PATHS, sizes[-1]))
    n = np.asarray(sizes)
    total, squares = np.cumsum(x, axis=1)[:, n - 1], np.cumsum(x * x, axis=1)[:, n - 1]
    variance = (squares - total * total / n) / (n - 1)
    return np.abs(total / n) / np.sqrt(variance / n)


def t_boundaries(sizes: tuple[int, ...], a: float, null: np.ndarray | None = None) -> np.ndarray:
    """Two-sided nominal levels π_1 … π_K of the paired t-tests at looks of ``sizes`` seeds
    that spend ``a`` (module doc); ``null``: :func:`_null_t` of ``sizes``, if at hand."""
    null = _null_t(sizes) if null is None else null
    n = np.asarray(sizes)
    increments = np.diff(spent(a, n / n[-1]), prepend=0.0)
    crossed = np.zeros(len(null), bool)
    levels = []
    for k, increment in enumerate(increments):
        count = int(round(increment * len(null)))
        if count < MIN_CROSSINGS:
            level = increment
        else:
            waiting = null[~crossed, k]
            bound = np.partition(waiting, len(waiting) - count)[len(waiting) - count]
            level = 2 * stats.t.sf(bound, n[k] - 1)
        crossed |= null[:, k] >= stats.t.isf(level / 2, n[k] - 1)
        levels.append(level)
    return np.array(levels)


@functools.lru_cache(maxsize=32)
def _nominal_table(sizes: tuple[int, ...]) -> np.ndarray:
    """log π_k(a) for each a of :data:`_GRID` (rows) and look k (columns), non-decreasing in a."""
    null = _null_t(sizes)
    table = np.array([t_boundaries(sizes, a, null) for a in _GRID])
    return np.log(np.maximum.accumulate(table, axis=0))


@dataclass(frozen=True)
class Looks:
    """The planned analyses, as numbers of paired seeds; one look (or none given) is a fixed
    design, where nominal levels equal overall levels."""

    sizes: tuple[int, ...] = ()

    @property
    def sequential(self) -> bool:
        return len(self.sizes) > 1

    def look(self, n: int) -> int:
        """The look a contrast with ``n`` pairs is at: the last with at most ``n`` pairs (the
        first when it has fewer, e.g. after lost seeds: its strictest boundary)."""
        return max(int(np.searchsorted(self.sizes, n, side="right")) - 1, 0)

    def nominal(self, a: float, n: int) -> float:
        """Two-sided nominal level of the look at ``n`` pairs when ``a`` is spent over all looks
        (interpolated log-linearly between tabled levels; ``a`` itself for a fixed design)."""
        if not self.sequential or not np.isfinite(a):
            return a
        column = _nominal_table(self.sizes)[:, self.look(n)]
        log_a, logs = np.log(_GRID), column
        if a <= _GRID[0]:
            return float(np.exp(logs[0] + np.log(a) - log_a[0]))
        if a >= _GRID[-1]:
            top = np.exp(logs[-1])
            return float(top + (1 - top) * (a - _GRID[-1]) / (1 - _GRID[-1]))
        return float(np.exp(np.interp(np.log(a), log_a, logs)))

    def adjusted(self, p: float, n: int) -> float:
        """The sequential p-value of a nominal two-sided p at the look of ``n`` pairs: the
        smallest overall level whose nominal level at that look reaches ``p`` (the inverse of
        :meth:`nominal`); ``p`` itself for a fixed design."""
        if not self.sequential or not np.isfinite(p):
            return p
        logs = _nominal_table(self.sizes)[:, self.look(n)]
        log_a = np.log(_GRID)
        top = np.exp(logs[-1])
        if p <= np.exp(logs[0]):
            return float(np.exp(np.log(max(p, 1e-300)) - logs[0] + log_a[0]))
        if p >= top:
            return float(min(1.0, _GRID[-1] + (1 - _GRID[-1]) * (p - top) / (1 - top)))
        return float(np.exp(np.interp(np.log(p), logs, log_a)))

    def critical(self, a: float, n: int) -> float:
        """The t-multiplier of the interval at overall level ``a`` for ``n`` pairs."""
        return float(stats.t.isf(self.nominal(a, n) / 2, max(n - 1, 1)))


FIXED = Looks()


def adaptive_looks(min_seeds: int, max_seeds: int) -> Looks:
    """Looks after every seed from ``min_seeds`` to ``max_seeds``."""
    return Looks(tuple(range(min_seeds, max_seeds + 1)))
