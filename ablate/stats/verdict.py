"""The verdicts a comparison can get: one vocabulary for the statistics, the report, its plots and
the adaptive stopping rule.

Each :class:`Verdict` is a ``str`` (its text as the report prints it: ``Verdict.HELPS ==
"helps"``, and ``Verdict("helps")`` looks one up), listed in the order the report counts them,
and carries

* ``colour``: its colour in the figures (the forest plot);
* ``decided``: more seeds would not change it, so an adaptive study stops giving its variant
  seeds (:mod:`ablate.stats.sequential`);
* ``finding``: the report prints it in bold, a claim about the change (the interval decided it,
  or the change lost seeds its reference finished); a change that never finished is decided but
  not a finding;
* ``count_words``: how a sentence counts it, singular and plural ("1 helps", "3 help").

``"task-dependent"`` is a study with tasks' verdict across them, when the tasks disagree beyond
chance (:mod:`ablate.stats.tasks`). ``"unstable"`` is the kind; the verdict printed for it adds
what was lost (``unstable (2/5 diverged)``, :func:`ablate.stats.inference.judge`).
``"baseline"`` is what the variant table and MLflow's verdict column show for the baseline
itself, which is compared with nothing.
"""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """A comparison's verdict (module doc): ``(text, colour, decided, finding, count_words)``.

    ``Verdict("helps")`` is :attr:`HELPS` (the usual lookup by value; the defaults below only
    make the members' definitions shorter).
    """

    _value_: str
    colour: str
    decided: bool
    finding: bool
    count_words: tuple[str, str]

    def __new__(cls, text: str, colour: str = "grey", decided: bool = False,
                finding: bool = False, count_words: tuple[str, str] | None = None) -> Verdict:
        member = str.__new__(cls, text)
        member._value_ = text
        member.colour = colour
        member.decided = decided
        member.finding = finding
        member.count_words = count_words or (text, text)
        return member

    HELPS = "helps", "#1a9850", True, True, ("helps", "help")
    HURTS = "hurts", "#d73027", True, True, ("hurts", "hurt")
    INTERACTION_FOUND = "interaction found", "#e66101", True, True
    TASK_DEPENDENT = "task-dependent", "#8c510a", True, True
    NEGLIGIBLE = "negligible", "#2166ac", True, True
    UNSTABLE = "unstable", "#762a83", True, True
    NO_CLEAR_EFFECT = "no clear effect", "#737373", False, False, ("with no clear effect",) * 2
    UNDECIDED = "undecided", "#737373", False, False
    NOT_ENOUGH_DATA = "not enough data", "#bdbdbd", False, False, ("with not enough data",) * 2
    ALL_DIVERGED = "all diverged", "#40004b", True, False
    ALL_FAILED = "all failed", "#000000", True, False
    BASELINE = "baseline", "black", False, False

    def __str__(self) -> str:
        return self.value

    @property
    def order(self) -> int:
        """Its place in the report's counts (the order of definition)."""
        return list(Verdict).index(self)

    def counted(self, n: int) -> str:
        """``3 help``, ``1 unstable``, ``2 with no clear effect``."""
        return f"{n} {self.count_words[n != 1]}"
