"""Numbers and user text as the report prints them: few digits, units, inert markdown.

Rules: 3 significant digits for values; an estimate with an interval is rounded to the
interval's precision (2 significant digits of its half-width), so no ``± 0.00``; p-values as
``< 0.001`` or 2 significant digits; counts with their noun in the right number ("1 seed").
"""

from __future__ import annotations

import html
import math
import re

import numpy as np

DASH = "—"


def escape(value: object) -> str:
    """User text as inert markdown: HTML-escaped, punctuation backslash-escaped, one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def _missing(x: float | None) -> bool:
    return x is None or not np.isfinite(x)


def format_number(x: float | None, signed: bool = False) -> str:
    """3 significant digits; thousands without exponent; ``—`` if missing."""
    if x is None or _missing(x):
        return DASH
    if abs(float(f"{x:.3g}")) >= 1000:  # 999.6 rounds to 1000: "1,000", not "1e+03"
        return f"{x:+,.0f}" if signed else f"{x:,.0f}"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def format_p(p: float) -> str:
    """``< 0.001``, else 2 significant digits (``0.012``, ``0.32``, ``1``)."""
    if _missing(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_phrase(p: float) -> str:
    """``p < 0.001`` or ``p = 0.012`` for running text."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _decimals(half: float) -> int:
    """Decimals that give ``half`` 2 significant digits (0 for values of 10 and more)."""
    return max(0, 1 - math.floor(math.log10(half)))


def _fixed(x: float, decimals: int, signed: bool) -> str:
    """``x`` with ``decimals`` decimals; no sign on a value that rounds to 0."""
    if round(x, decimals) == 0:
        x, signed = 0.0, False
    return f"{x:+,.{decimals}f}" if signed else f"{x:,.{decimals}f}"


def plus_minus(centre: float, low: float, high: float, signed: bool = False) -> str:
    """``+0.097 ± 0.014``: the estimate at the precision of its interval's half-width (2
    significant digits), or at 3 significant digits of the estimate when that is coarser and
    still leaves the half-width non-zero."""
    if _missing(centre):
        return DASH
    if _missing(low) or _missing(high):
        return f"{format_number(centre, signed)} (no CI)"
    half = (high - low) / 2
    if half <= 0:
        return f"{format_number(centre, signed)} (no spread)"
    decimals = _decimals(half)
    if centre:
        coarser = max(0, 2 - math.floor(math.log10(abs(centre))))
        if coarser < decimals and round(half, coarser) > 0:
            decimals = coarser
    return f"{_fixed(centre, decimals, signed)} ± {_fixed(half, decimals, False)}"


def interval(low: float, high: float) -> str:
    """``−0.15 to +0.11`` at the interval's own precision."""
    if _missing(low) or _missing(high):
        return "no interval"
    half = (high - low) / 2
    decimals = _decimals(half) if half > 0 else 3
    return f"{_fixed(low, decimals, True)} to {_fixed(high, decimals, True)}"


def plural(n: int, noun: str) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_count(n: float) -> str:
    """``29.6k``, ``1.2M``; ``—`` if missing."""
    if _missing(n):
        return DASH
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def format_seconds(s: float) -> str:
    """Two significant digits in the unit that keeps them under 100: ``97 s``, ``1.8 min``,
    ``2.4 h`` (never ``1e+02 s``, which ``{:.2g}`` writes for 100 to 119 s)."""
    if _missing(s):
        return DASH
    if s >= 99.5 * 60:  # 100 min and more
        return f"{_two_digits(s / 3600)} h"
    if s >= 99.5:
        return f"{_two_digits(s / 60)} min"
    return f"{_two_digits(s)} s"


def _two_digits(x: float) -> str:
    """``x`` rounded to 2 significant digits, written without an exponent."""
    return format(float(f"{x:.2g}"), ".15g")


def format_mb(mb: float) -> str:
    if _missing(mb):
        return DASH
    if mb >= 1024:
        return f"{mb / 1024:.3g} GiB"
    return f"{mb:.3g} MiB" if mb < 100 else f"{mb:.0f} MiB"  # 1004 MiB, never "1e+03 MiB"
