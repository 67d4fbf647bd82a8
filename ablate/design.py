"""Designs: factors and a design -> each variant's factor levels, with fractional aliasing.

:func:`expand` turns a design (``"one_at_a_time"``, ``"full_factorial"``, ``"fractional"`` or an
explicit list) into the factor levels of each variant, the baseline first, duplicates and the
variants the constraints exclude left out; a fractional design also gives its resolution and
which effects it aliases. Variant labels are made here too. Standard library only.

The fractional designs are built here rather than with pyDOE3: its generators and signs differ
(the all-low run, the baseline, would not be in every design), which would change the variants
and ids of fractional studies, and it would make planning import numpy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ablate.validate import StudyError, contains, did_you_mean, eq, same

Design = Literal["full_factorial", "one_at_a_time", "fractional"]
DESIGNS = ("full_factorial", "one_at_a_time", "fractional")
MAX_VARIANTS = 4096  # a design with more variants is refused before it is built


@dataclass(frozen=True)
class Expansion:
    """What a design expands to."""

    levels: list[dict[str, Any]]  # each variant's factor levels, the baseline's first
    resolution: int | None = None  # of a fractional design; None for any other design
    aliases: dict[str, list[str]] = field(default_factory=dict)  # effect -> effects it shares
    # a column with (up to sign), for main effects and two-factor interactions


def expand(
    *,
    name: str,
    design: str | Sequence[Mapping[str, Any]],
    factors: Mapping[str, Sequence[Any]],
    baseline: Mapping[str, Any],
    config: Mapping[str, Any],
    constraints: Sequence[Any],
) -> Expansion:
    """The variants of study ``name``: ``design`` over ``factors`` with the ``baseline`` levels,
    less those the ``constraints`` (predicates on ``{**config, **levels}``, or dicts of
    forbidden levels) exclude. :class:`StudyError` if they exclude the baseline."""
    combos, resolution, aliases = _combos(design, factors, baseline)
    if not any(same(c, baseline) for c in combos):
        combos.insert(0, dict(baseline))
    else:  # the baseline always comes first
        combos.sort(key=lambda c: not same(c, baseline))
    seen: list[dict[str, Any]] = []
    keys: set[tuple[Any, ...]] = set()
    for combo in combos:
        key = tuple((k, type(v).__name__, repr(v)) for k, v in sorted(combo.items()))
        if key not in keys:
            keys.add(key)
            seen.append(combo)
    kept = [c for c in seen if _allowed(c, config, factors, constraints)]
    if not kept or not same(kept[0], baseline):
        what = "every variant" if not kept else "the baseline"
        raise StudyError(
            f"the constraints of study {name!r} exclude {what} (baseline: "
            f"{label(baseline, baseline, factors)}: {fmt_levels(baseline)}). Fix: relax the "
            f"constraints or choose a baseline they allow with baseline={{...}}."
        )
    return Expansion(kept, resolution, aliases)


def _combos(
    design: str | Sequence[Mapping[str, Any]], factors: Mapping[str, Sequence[Any]],
    baseline: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], int | None, dict[str, list[str]]]:
    keys = list(factors)
    if not isinstance(design, str):
        return [_explicit(i, v, factors, baseline) for i, v in enumerate(design)], None, {}
    if design not in DESIGNS:
        raise StudyError(
            f"design {design!r} is unknown{did_you_mean(design, DESIGNS)} "
            f"Valid designs: {', '.join(DESIGNS)}, or a list of variants (dicts)."
        )
    if design == "full_factorial":
        count = math.prod(len(levels) for levels in factors.values())
        if count > MAX_VARIANTS:
            raise StudyError(
                f"design='full_factorial' over {len(keys)} factors makes {count:,} variants, "
                f"more than {MAX_VARIANTS:,}. Fix: design='fractional' (two-level factors: "
                f"{2 ** max(1, math.ceil(math.log2(len(keys) + 1)))} runs), "
                f"design='one_at_a_time' ({1 + sum(len(v) - 1 for v in factors.values())}"
                f" variants), or fewer factors."
            )
        return [dict(zip(keys, c)) for c in itertools.product(*factors.values())], None, {}
    if design == "one_at_a_time":
        combos = [dict(baseline)]
        for key, levels in factors.items():
            for level in levels:
                if not eq(level, baseline[key]):
                    combos.append({**baseline, key: level})
        return combos, None, {}
    return _fractional(factors, baseline)


def _explicit(
    index: int, variant: Mapping[str, Any], factors: Mapping[str, Sequence[Any]],
    baseline: Mapping[str, Any],
) -> dict[str, Any]:
    for key, level in variant.items():
        if key not in factors:
            raise StudyError(
                f"design[{index}] sets {key!r}, which is not a factor"
                f"{did_you_mean(key, list(factors))} Fix: add it to factors= with its "
                f"levels."
            )
        if not contains(factors[key], level):
            raise StudyError(
                f"design[{index}] sets {key!r}={level!r}, which is not one of its levels "
                f"{list(factors[key])!r}. Fix: add the level to the factor."
            )
    return {**baseline, **variant}


def _fractional(
    factors: Mapping[str, Sequence[Any]], baseline: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], int | None, dict[str, list[str]]]:
    keys = list(factors)
    wrong = [k for k in keys if len(factors[k]) != 2]
    if wrong:
        raise StudyError(
            f"the fractional design supports two-level factors only; {wrong[0]!r} has "
            f"{len(factors[wrong[0]])} levels. Fix: use design='full_factorial' or "
            f"'one_at_a_time', or give every factor exactly two levels."
        )
    columns, resolution = fractional_design(len(keys))
    lows = {k: baseline[k] for k in keys}
    highs = {k: next(x for x in factors[k] if not eq(x, lows[k])) for k in keys}
    runs = len(columns[0]) if columns else 1
    combos = [{k: lows[k] if columns[j][r] < 0 else highs[k] for j, k in enumerate(keys)}
              for r in range(runs)]
    return combos, resolution, aliases(keys, columns)


def _allowed(
    combo: Mapping[str, Any], config: Mapping[str, Any], factors: Mapping[str, Any],
    constraints: Sequence[Any],
) -> bool:
    resolved = {**config, **combo}
    for rule in constraints:
        if callable(rule):
            try:
                keep = rule(resolved)
            except Exception as exc:  # the user's predicate is user code: name it
                raise StudyError(
                    f"constraint {getattr(rule, '__name__', rule)!r} raised "
                    f"{type(exc).__name__}: {exc} for variant {fmt_levels(combo)}. Fix: the "
                    f"predicate gets the resolved config (dotted keys) and returns True to "
                    f"keep a variant."
                ) from exc
            if not keep:
                return False
        elif isinstance(rule, Mapping):
            for key in rule:
                if key not in factors:
                    raise StudyError(
                        f"constraint {dict(rule)!r} names {key!r}, which is not a factor"
                        f"{did_you_mean(key, list(factors))}"
                    )
            if all(eq(combo[k], v) for k, v in rule.items()):
                return False
        else:
            raise StudyError(
                f"constraint {rule!r} is neither a predicate nor a dict of forbidden levels. "
                f"Fix: constraints=[lambda c: ..., {{'model.pool': 'max', ...}}]."
            )
    return True


def as_constraints(
    constraints: Callable[..., bool] | Mapping[str, Any] | Iterable[Any] | None,
) -> list[Any]:
    """``constraints=`` as a list of rules (one predicate or dict may be passed alone)."""
    if constraints is None:
        return []
    if callable(constraints) or isinstance(constraints, Mapping):
        return [constraints]
    return list(constraints)


# ----------------------------------------------------------------------- fractional designs
def fractional_design(k: int) -> tuple[list[list[int]], int | None]:
    """Columns (+1/-1) of a two-level fractional factorial for ``k`` factors.

    The run count is the smallest power of two ``2**p`` with ``k <= 2**p - 1``; the first ``p``
    factors form a full factorial and each further factor is generated by an interaction of the
    base factors (three-factor interactions first, then higher, then two-factor ones), signed so
    that the all-low run (the baseline) is part of the design. Every generator is an interaction
    of two or more base factors, so no main effect is aliased with another: resolution >= III.
    Returns the columns and the resolution (None for a full factorial).
    """
    if k < 1:
        return [], None
    p = max(1, math.ceil(math.log2(k + 1)))
    base = [list(row) for row in itertools.product((-1, 1), repeat=p)]
    columns = [[row[j] for row in base] for j in range(p)]
    if k <= p:
        return columns[:k], None
    sizes = [3, *range(4, p + 1), 2]
    words = [w for s in sizes if s <= p for w in itertools.combinations(range(p), s)]
    generators = words[: k - p]
    for word in generators:
        sign = 1 if len(word) % 2 else -1
        columns.append([sign * math.prod(row[j] for j in word) for row in base])
    return columns, _resolution(p, generators)


def _resolution(p: int, generators: Sequence[tuple[int, ...]]) -> int:
    """Length of the shortest word of the defining relation (as sets of factor indices)."""
    words = [frozenset(w) | {p + i} for i, w in enumerate(generators)]
    shortest = math.inf
    for r in range(1, min(len(words), 4 if len(words) > 12 else len(words)) + 1):
        for combo in itertools.combinations(words, r):
            acc: frozenset[int] = frozenset()
            for w in combo:
                acc = acc ^ w
            shortest = min(shortest, len(acc))
    return int(shortest)


def aliases(keys: Sequence[str], columns: Sequence[Sequence[int]]) -> dict[str, list[str]]:
    """Main effects and two-factor interactions that share a column (up to sign)."""
    effects: dict[str, tuple[int, ...]] = {k: tuple(c) for k, c in zip(keys, columns)}
    for (a, ca), (b, cb) in itertools.combinations(list(zip(keys, columns)), 2):
        effects[f"{a}:{b}"] = tuple(x * y for x, y in zip(ca, cb))
    out: dict[str, list[str]] = {}
    for name, col in effects.items():
        neg = tuple(-x for x in col)
        same_col = [o for o, c in effects.items() if o != name and c in (col, neg)]
        if same_col:
            out[name] = same_col
    return out


# ---------------------------------------------------------------------------------- labels
def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Dotted key -> its last part, or the full key where the last part is ambiguous."""
    keys = list(keys)
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


def label(levels: Mapping[str, Any], base: Mapping[str, Any], factors: Mapping[str, Any]) -> str:
    """A variant's label: the levels it changes from the baseline (``"baseline"`` if none)."""
    names = short_names(factors)
    diff = [f"{names[k]}={_fmt(v)}" for k, v in levels.items() if not eq(v, base[k])]
    return ",".join(diff) or "baseline"


def fmt_levels(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in levels.items()) or "(no factors)"


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
