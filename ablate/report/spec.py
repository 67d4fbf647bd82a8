"""What the reporter needs to know about a study (filled from the real ``Study`` by the caller)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ReportSpec:
    name: str
    metric: str
    mode: Literal["max", "min"]
    design: str  # full_factorial | one_at_a_time | fractional | explicit
    factors: dict[str, list]  # dotted key -> levels
    baseline: dict[str, Any]  # dotted key -> baseline level
    seeds: list[int]
    n_variants: int
    aliases: dict[str, list[str]] = field(default_factory=dict)  # main effect -> aliased 2FIs
    command: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    mlflow: dict[str, str] = field(default_factory=dict)

    @property
    def n_planned(self) -> int:
        """Trials the study plans: every variant on every seed."""
        return self.n_variants * len(self.seeds)
