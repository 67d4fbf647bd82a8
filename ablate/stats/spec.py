"""What the reporter needs to know about a study (filled from the real ``Study`` by the caller)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ALPHA = 0.05  # every test's (family-wise) level

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
    config: dict[str, Any] = field(default_factory=dict)  # the baseline's resolved config
    tune: dict[str, Any] = field(default_factory=dict)  # space, trials, config, seed (if tuned)
    chance: float | None = None  # the metric's trivial value (e.g. 1/num_classes), if known
    notes: list[str] = field(default_factory=list)  # shown under the title: scope, provenance
    min_effect: float | None = None  # the smallest effect of interest, in the metric's units
    adaptive: tuple[int, int] | None = None  # (min_seeds, max_seeds) of seeds="adaptive"
    # adaptive studies, from the recorded results (ablate.stats.sequential.scheduled):
    seed_counts: dict[str, int] = field(default_factory=dict)  # variant -> seeds scheduled
    stops: dict[str, str] = field(default_factory=dict)  # variant -> why it stopped there
    # the stopping rule's family (a DataFrame: each variant's row where it stopped), which the
    # report shows as its comparisons with the baseline (ablate.stats.sequential.Schedule)
    stopping: Any = field(default=None, compare=False, repr=False)
    # a study with tasks (ablate.stats.tasks): their names in order, each one's baseline
    # config and its number of variants; empty without tasks
    tasks: list[str] = field(default_factory=list)
    task_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_variants: dict[str, int] = field(default_factory=dict)

    @property
    def n_planned(self) -> int:
        """Trials the study plans: every variant on every seed (adaptive: those scheduled)."""
        if self.seed_counts:
            return sum(self.seed_counts.values())
        return self.n_variants * len(self.seeds)

    def seeds_of(self, variant: str) -> int:
        """How many seeds ``variant`` is planned for."""
        return self.seed_counts.get(variant, len(self.seeds))


def spec_from_study(
    study: Any,
    *,
    command: str = "",
    environment: dict[str, str] | None = None,
    mlflow: dict[str, str] | None = None,
    notes: list[str] | None = None,
) -> ReportSpec:
    """The reporter's view of an :class:`ablate.Study`."""
    return ReportSpec(
        name=study.name,
        metric=study.metric,
        mode=study.mode,
        design=study.design,
        factors={k: list(v) for k, v in study.factors.items()},
        baseline=dict(study.baseline),
        seeds=list(study.seeds),
        n_variants=len(study.variants),
        aliases=dict(study.aliases),
        command=command,
        environment=dict(environment or {}),
        mlflow=dict(mlflow or {}),
        config=dict(study.baseline_variant.config),
        tune={"space": dict(study.tuning.space), "trials": study.tuning.trials,
              "config": study.tuning.settings, "seed": study.tuning.seed}
        if study.tuning.space else {},
        chance=chance_of(study.metric, study.baseline_variant.config),
        notes=list(notes or []),
        min_effect=study.min_effect,
        adaptive=(study.min_seeds, study.max_seeds) if study.adaptive else None,
        tasks=list(study.task_names),
        task_configs={t: dict(next(v.config for v in study.variants
                                   if v.task == t and v.baseline)) for t in study.task_names},
        task_variants={t: sum(v.task == t for v in study.variants) for t in study.task_names},
    )


def chance_of(metric: str, config: dict[str, Any]) -> float | None:
    """1/num_classes for an accuracy metric when the config names the number of classes."""
    classes = config.get("model.num_classes")
    if "acc" not in metric or not isinstance(classes, int) or classes < 2:
        return None
    return 1 / classes
