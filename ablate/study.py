"""Studies: a base config, the factors an ablation varies, and a design -> ordered trials.

A :class:`Study` is plain data, checked when it is made: its settings are resolved against the
functions that receive them (:mod:`ablate.resolve`, :mod:`ablate.validate`), its design is
expanded (:mod:`ablate.design`) and each variant is named by the id of its resolved config
(:mod:`ablate.config`). It imports nothing but the standard library: planning a study (``ablate
plan``) never touches torch, MLflow or the disk, and every mistake that can be found before
training is found then, with a message that names the problem, where it is and how to fix it.
Study files are loaded by :mod:`ablate.source`.

Vocabulary:

* a **factor** is a dotted config key the ablation varies (``"model.batch_norm": [True, False]``);
* a **variant** is one combination of factor levels; its id is a short hash of its full resolved
  config (seed excluded), so any change of any setting gives a new id;
* a **trial** is (variant, seed); every variant runs on the same seeds;
* a **task** (``tasks=``, :mod:`ablate.tasks`) is a dataset or data config the whole design
  runs on: a study with tasks has each variant once per task, each with its own id.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ablate.config import factory_kwargs, plan_id, variant_id
from ablate.design import Design, as_constraints, expand, label
from ablate.fingerprint import code_fingerprint
from ablate.resolve import check_factor_keys, check_keys, check_types, resolve_config
from ablate.tasks import (
    TASK_KEY,
    Task,
    check_reserved,
    check_set,
    check_task_model,
    tasks_of,
)
from ablate.tuning import Tuning, check_tuning, tuning_of
from ablate.validate import (
    TIMEOUT,
    StudyError,
    check_adaptive,
    check_levels,
    check_min_effect,
    check_mode,
    check_name,
    check_param_names,
    check_parts,
    check_seeds,
    check_timeout,
    is_seq,
    resolve_baseline,
    same,
)

__all__ = ["Study", "Trial", "Variant"]


@dataclass(frozen=True)
class Variant:
    """One combination of factor levels, with its fully resolved config."""

    id: str
    label: str
    levels: Mapping[str, Any]  # factor key -> level
    config: Mapping[str, Any]  # every resolved key -> value
    baseline: bool  # the baseline (of its task, in a multi-task study)
    task: str = ""  # its task's name in a study with tasks=, else ""


@dataclass(frozen=True)
class Trial:
    """A variant trained with one seed."""

    variant: Variant
    seed: int

    @property
    def key(self) -> str:
        return f"{self.variant.id}-s{self.seed}"


class Study:
    """An ablation study: which settings to vary, how, on which seeds, judged by which metric.

    Args:
        name: the MLflow experiment name and report folder (letters, digits, ``.``, ``_``, ``-``).
        model: any callable that builds an ``nn.Module`` from the ``model.*`` settings.
        data: any callable that builds the data from the ``data.*`` settings.
        train: instead of model and data, a function ``train(config, run)`` that trains and calls
            ``run.log({...}, step=epoch)``; any Python training code can be ablated this way.
        config: base settings, dotted keys (``"model.widths"``, ``"data.batch_size"``,
            ``"train.lr"``). Values must be plain data: numbers, strings, bools, None, tuples,
            lists and dicts of those.
        factors: dotted key -> levels. The first level of each is the baseline unless
            ``baseline`` says otherwise.
        baseline: factor key -> baseline level, for factors whose baseline is not the first level.
        design: ``"one_at_a_time"`` (the baseline plus each other level changed alone),
            ``"full_factorial"`` (every combination), ``"fractional"`` (a two-level fractional
            factorial of resolution III or higher), or an explicit list of variants, each a dict
            of factor -> level (factors left out stay at the baseline).
        constraints: drops variants that make no sense: a predicate ``f(config) -> bool`` (True
            keeps the variant) and/or dicts of factor -> level that are forbidden together.
        seeds: a count (seeds 0..n-1), an explicit list of non-negative ints, or
            ``"adaptive"``: every variant starts with ``min_seeds`` seeds (0, 1, ...), and after
            each round the variants whose comparison with the baseline is decided stop while the
            others get the next seed, up to ``max_seeds`` (a group-sequential design: see
            :mod:`ablate.stats.sequential`).
        min_seeds, max_seeds: the bounds of ``seeds="adaptive"`` (default 3 and 12).
        metric: what the report ranks and tests, e.g. ``"val_acc"``.
        mode: ``"max"`` or ``"min"``; inferred from the metric name (``*acc*`` -> max,
            ``*loss*`` -> min) when not given.
        min_effect: the smallest effect of interest, in the metric's units (e.g. 0.01 for one
            point of accuracy). With it a comparison whose interval lies inside ±min_effect is
            *negligible* (the change does not matter), and one whose interval crosses a bound
            is *undecided*. It changes no variant id and no plan id: no trial's result depends
            on it (in an adaptive study it decides which of the plan's candidate trials run,
            and the report replays that from the recorded results).
        tuning: per-variant tuning, e.g. ``Tuning(space={"train.lr": ("log", 1e-3, 0.3)},
            trials=8, epochs=2)`` (:class:`ablate.tuning.Tuning`): each variant first gets its
            own search, and its seeds then train with the best values found. It changes every
            variant id; read back as :attr:`tuning` (``Tuning()``, an empty space, when not
            tuned). The flat ``tune=``, ``tune_trials=``, ... keywords of earlier versions
            raise a :class:`StudyError` naming the ``Tuning(...)`` that replaces them.
        tasks: task name -> its settings, e.g. ``{"digits": {"data.noise": 0.1}, "cifar":
            {"data": image_folder, "data.path": "data/cifar10"}}`` (:mod:`ablate.tasks`):
            every variant runs on every seed of each task, and the report gives each
            component's effect per task and across tasks. A task's settings override
            ``config``; ``"data"`` replaces the study's data function and ``"model"`` its
            model function (``data=``/``model=`` may then be left out; the factors must be
            keywords of every task's model). Its name joins each of its variants' config as
            ``"task"``; a study without tasks keeps its ids.
    """

    def __init__(
        self,
        name: str,
        *,
        model: Callable[..., Any] | None = None,
        data: Callable[..., Any] | None = None,
        train: Callable[..., Any] | None = None,
        config: Mapping[str, Any] | None = None,
        factors: Mapping[str, Sequence[Any]] | None = None,
        baseline: Mapping[str, Any] | None = None,
        design: Design | Sequence[Mapping[str, Any]] = "one_at_a_time",
        constraints: Callable[[Mapping[str, Any]], bool]
        | Sequence[Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]]
        | None = None,
        seeds: int | Sequence[int] | Literal["adaptive"] = 3,
        min_seeds: int | None = None,
        max_seeds: int | None = None,
        metric: str = "val_acc",
        mode: Literal["max", "min"] | None = None,
        min_effect: float | None = None,
        tuning: Tuning | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        **unknown: Any,
    ) -> None:
        self.name = name
        self.model = model
        self.data = data
        self.train = train
        self.user_config = dict(config or {})
        self.timeout = check_timeout(self.user_config.get(TIMEOUT), factors or {})
        settings = {k: v for k, v in self.user_config.items() if k != TIMEOUT}
        self.factors = {k: tuple(v) if is_seq(v) else v for k, v in (factors or {}).items()}
        self.user_baseline = dict(baseline or {})
        self.design = design if isinstance(design, str) else "explicit"
        self.explicit = None if isinstance(design, str) else [dict(v) for v in design]
        self._raw_design = design
        self.constraints = as_constraints(constraints)
        self.adaptive = isinstance(seeds, str) and seeds == "adaptive"
        self.min_seeds: int | None
        self.max_seeds: int | None
        self.min_seeds, self.max_seeds = check_adaptive(self.adaptive, min_seeds, max_seeds)
        self.seeds = tuple(range(self.max_seeds)) if self.max_seeds else check_seeds(seeds)
        self.metric = metric
        self.mode = check_mode(metric, mode)
        self.min_effect = check_min_effect(min_effect)
        self._counts: dict[str, int] | None = None  # set by scheduled(): seeds per variant
        self._skip: frozenset[str] = frozenset()  # trial keys scheduled() leaves out
        self.tuning = tuning_of(tuning, unknown, KEYWORDS)
        self.source: str | None = None  # the study file, set by load_study
        builtin = self.uses_builtin_loop
        check_name(name)
        self._raw_tasks = tasks
        self.tasks: list[Task] = tasks_of(tasks, study=name, data=data, train=train,
                                          factors=self.factors, adaptive=self.adaptive,
                                          model=model)
        check_parts(name, model if model is not None or not self.tasks else self.tasks[0].model,
                    data if data is not None or not self.tasks else self.tasks[0].data, train)
        check_reserved([*settings, *self.factors], self.tasks)
        self.task_data = {t.name: t.data for t in self.tasks if t.data is not None}
        self.task_models = {t.name: t.model for t in self.tasks if t.model is not None}
        configs = [(None, self._resolve(settings, None))] if not self.tasks else [
            (t, self._resolve(settings, t)) for t in self.tasks]
        self.config = configs[0][1]  # the base config (of the first task, with tasks=)
        self.task_configs = {t.name: c for t, c in configs if t is not None}
        self.baseline = resolve_baseline(self.factors, self.user_baseline)
        check_tuning(self.tuning, builtin, self.factors)
        if builtin and self.tuning.space:
            for task, _ in configs:
                check_keys([*self.tuning.space, *self.tuning.settings], "Tuning",
                           self.model_of(task.name if task else ""),
                           self.data_of(task.name if task else ""))
        self.variants = []
        for task, config in configs:
            expansion = expand(
                name=name,
                design=(self.explicit or []) if self.design == "explicit" else self.design,
                factors=self.factors,
                baseline=self.baseline,
                config=config,
                constraints=self.constraints,
            )
            self.resolution: int | None = expansion.resolution  # of a fractional design
            self.aliases: dict[str, list[str]] = expansion.aliases  # effect -> aliased effects
            self.variants += [self._variant(levels, config, task.name if task else "")
                              for levels in expansion.levels]

    def _resolve(self, settings: Mapping[str, Any], task: Task | None) -> dict[str, Any]:
        """The base config a task's variants run with (the study's without tasks), checked
        against the functions that receive it; a task's name joins it as ``"task"``."""
        builtin = self.uses_builtin_loop
        data = self.data_of(task.name) if task is not None else self.data
        model = self.model_of(task.name) if task is not None else self.model
        if task is not None and builtin:
            check_keys(task.settings, f"task {task.name!r}", model, data)
            check_types(task.settings, {}, model, data, f"task {task.name!r}")
            if task.model is not None:
                check_task_model(task, self.factors, settings, model)
        merged = {**settings, **(task.settings if task is not None else {})}
        config = resolve_config(merged, model, data, builtin)
        if task is not None:
            config[TASK_KEY] = task.name
        check_param_names([*config, *self.factors])
        check_levels(self.factors, builtin)
        check_factor_keys(self.name, self.factors, config, merged, model, data, builtin)
        if builtin:
            check_types(merged, self.factors, model, data)
        return config

    # ----------------------------------------------------------------------------- public API
    @property
    def trials(self) -> list[Trial]:
        """Every (variant, seed) in the study's order: variants in design order, seeds inner.
        An adaptive study's are its candidate trials (every seed up to ``max_seeds``), or those
        of a round after :meth:`scheduled`."""
        return [Trial(v, s) for v in self.variants for s in self.seeds_of(v)
                if f"{v.id}-s{s}" not in self._skip]

    def seeds_of(self, variant: Variant) -> tuple[int, ...]:
        """The seeds ``variant`` is planned for: all the study's, or its scheduled ones."""
        if self._counts is None:
            return self.seeds
        return self.seeds[: self._counts.get(variant.id, 0)]

    def scheduled(self, counts: Mapping[str, int], skip: Iterable[str] = ()) -> Study:
        """A copy whose trials are the first ``counts[variant id]`` seeds of each variant,
        less the trial keys in ``skip``: one round of an adaptive study, for the executors."""
        study = copy.copy(self)
        study._counts, study._skip = dict(counts), frozenset(skip)
        return study

    @property
    def baseline_variant(self) -> Variant:
        """The baseline (of the first task, in a study with tasks=)."""
        return self.variants[0]

    @property
    def task_names(self) -> list[str]:
        """The tasks' names in the study's order (``[]`` without ``tasks=``)."""
        return [t.name for t in self.tasks]

    def data_of(self, task: str) -> Callable[..., Any] | None:
        """The data function of the variants of ``task`` ("" or a task that sets no
        ``data``: the study's own ``data=``)."""
        return self.task_data.get(task, self.data)

    def data_for(self, config: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The data function a resolved config trains on (its task's, else the study's)."""
        return self.data_of(self._task_in(config))

    def model_of(self, task: str) -> Callable[..., Any] | None:
        """The model function of the variants of ``task`` ("" or a task that sets no
        ``model``: the study's own ``model=``)."""
        return self.task_models.get(task, self.model)

    def model_for(self, config: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The model function a resolved config builds (its task's, else the study's)."""
        return self.model_of(self._task_in(config))

    def _task_in(self, config: Mapping[str, Any]) -> str:
        """The task of a resolved config ("" without tasks)."""
        task = config.get(TASK_KEY) if self.tasks else None
        return task if isinstance(task, str) else ""

    @property
    def adaptive_bounds(self) -> tuple[int, int] | None:
        """``(min_seeds, max_seeds)`` of a ``seeds="adaptive"`` study, else None."""
        if self.min_seeds is None or self.max_seeds is None:  # both None unless adaptive
            return None
        return self.min_seeds, self.max_seeds

    @property
    def plan(self) -> str:
        """The id of this plan: which variants on which seeds (see :func:`plan_id`)."""
        return plan_id([v.id for v in self.variants], self.seeds, self.adaptive_bounds)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The hash of the study's code (see :func:`code_fingerprint`), read once."""
        return code_fingerprint(self)

    @property
    def uses_builtin_loop(self) -> bool:
        return self.train is None

    def with_overrides(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        seeds: int | Sequence[int] | Literal["adaptive"] | None = None,
        tune_trials: int | None = None,
        min_effect: float | None = None,
    ) -> Study:
        """A copy with base settings replaced (``--set key=value``), optionally other seeds
        (``--seeds``: a count, or ``"adaptive"`` with the study's bounds or the defaults),
        another tuning budget (``--tune-trials``) and another ``min_effect``."""
        overrides = dict(overrides or {})
        if tune_trials is not None and not self.tuning.space:
            raise StudyError(
                f"--tune-trials {tune_trials}: study {self.name!r} tunes nothing (it has no "
                f"tuning=). Fix: drop --tune-trials, or add tuning=Tuning(space={{'train.lr': "
                f"('log', 1e-3, 0.3)}}) to the study."
            )
        check_set(overrides, self.tasks, self.name)
        for key in overrides:
            if key in self.factors:
                raise StudyError(
                    f"--set {key}=...: {key!r} is a factor of study {self.name!r}, and --set "
                    f"changes base settings only. Fix: edit the factor's levels in the study file."
                )
        study = Study(
            self.name,
            model=self.model,
            data=self.data,
            train=self.train,
            config={**self.user_config, **overrides},
            factors=self.factors,
            baseline=self.user_baseline,
            design=self._raw_design,
            constraints=self.constraints,
            **self._seed_settings(seeds),
            metric=self.metric,
            mode=self.mode,
            min_effect=self.min_effect if min_effect is None else min_effect,
            tuning=self.tuning if tune_trials is None else replace(self.tuning,
                                                                   trials=tune_trials),
            tasks=self._raw_tasks,
        )
        study.source = self.source
        return study

    def _seed_settings(self, seeds: int | Sequence[int] | str | None) -> dict[str, Any]:
        """``seeds``, ``min_seeds`` and ``max_seeds`` for a copy with ``seeds`` (None: these)."""
        if seeds is None:
            seeds = "adaptive" if self.adaptive else self.seeds
        if not (isinstance(seeds, str) and seeds == "adaptive"):
            return {"seeds": seeds}
        bounds = (self.min_seeds, self.max_seeds) if self.adaptive else (None, None)
        return {"seeds": seeds, "min_seeds": bounds[0], "max_seeds": bounds[1]}

    def model_kwargs(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments the model factory gets for a resolved config."""
        return factory_kwargs(config, "model")

    def __repr__(self) -> str:
        return (
            f"Study({self.name!r}, design={self.design!r}, variants={len(self.variants)}, "
            + (f"tasks={self.task_names!r}, " if self.tasks else "")
            + f"seeds={self._seeds_text()}, metric={self.metric!r}, mode={self.mode!r})"
        )

    def _seeds_text(self) -> str:
        return (f"'adaptive' ({self.min_seeds} to {self.max_seeds})" if self.adaptive
                else str(list(self.seeds))
        )

    def _variant(self, levels: Mapping[str, Any], base: Mapping[str, Any],
                 task: str = "") -> Variant:
        config = {**base, **levels}
        return Variant(
            id=variant_id({**config, **self.tuning.identity()}),
            label=label(levels, self.baseline, self.factors),
            levels=dict(levels),
            config=config,
            baseline=same(levels, self.baseline),
            task=task,
        )


# the keywords Study takes after its name: an unknown one is answered with the nearest of these
KEYWORDS = tuple(inspect.signature(Study.__init__).parameters)[2:-1]
