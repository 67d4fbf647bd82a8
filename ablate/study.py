"""Studies: a base config, the factors an ablation varies, and a design -> ordered trials.

A :class:`Study` is plain data plus validation. It imports nothing but the standard library:
planning a study (``ablate plan``) never touches torch, MLflow or the disk, and every mistake
that can be found before training is found here, with a message that names the problem, where it
is and how to fix it.

Vocabulary:

* a **factor** is a dotted config key the ablation varies (``"model.batch_norm": [True, False]``);
* a **variant** is one combination of factor levels; its id is a short hash of its full resolved
  config (seed excluded), so any change of any setting gives a new id;
* a **trial** is (variant, seed); every variant runs on the same seeds.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import importlib.util
import inspect
import itertools
import json
import linecache
import math
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablate.config import parameter_types, train_defaults, train_problems, type_problem

__all__ = [
    "DATA_DERIVED",
    "RUN_DEFAULTS",
    "DESIGNS",
    "TRAIN_DEFAULTS",
    "TRAIN_OPTIONAL",
    "Study",
    "StudyError",
    "Trial",
    "Variant",
    "load_study",
]

Design = Literal["full_factorial", "one_at_a_time", "fractional"]
DESIGNS = ("full_factorial", "one_at_a_time", "fractional")

# Settings of the built-in training loop (``ablate.train``), declared with their types and
# meaning in :class:`ablate.config.TrainConfig`. They are part of every resolved config of a
# model/data study, so they are logged as params and change the variant id.
TRAIN_DEFAULTS: dict[str, Any] = train_defaults()

# Settings of every study, your own train=fn included: the executor applies them to each trial.
RUN_DEFAULTS: dict[str, Any] = {"train.threads": TRAIN_DEFAULTS["train.threads"]}

# Settings of the built-in loop that join the resolved config only when a study sets them, so
# adding one never changes the ids of studies that don't use it.
TRAIN_OPTIONAL: dict[str, Any] = {
    "train.compile": False,  # torch.compile the model: True (inductor) or a backend name
}

# Model constructor arguments that the training loop fills from the data (``data.model_kwargs``)
# when the config does not set them.
DATA_DERIVED = ("num_classes", "in_channels", "image_size", "vocab_size", "in_features")

_NAMESPACES = ("model", "data", "train")
MAX_VARIANTS = 4096  # a design with more variants is refused before it is built
ADAPTIVE_SEEDS = (3, 12)  # seeds="adaptive": the default min_seeds and max_seeds
MAX_ADAPTIVE_SEEDS = 50  # the most seeds an adaptive study may plan per variant
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MAX_WORDS = ("acc", "f1", "auc", "precision", "recall", "score", "iou", "bleu", "top1", "top5")
_MIN_WORDS = ("loss", "err", "bpc", "ppl", "perplexity", "mse", "mae", "nll", "time", "seconds")


class StudyError(ValueError):
    """An invalid study, found before anything was trained. The message names the fix."""


@dataclass(frozen=True)
class Variant:
    """One combination of factor levels, with its fully resolved config."""

    id: str
    label: str
    levels: Mapping[str, Any]  # factor key -> level
    config: Mapping[str, Any]  # every resolved key -> value
    baseline: bool


@dataclass(frozen=True)
class Trial:
    """A variant trained with one seed."""

    variant: Variant
    seed: int

    @property
    def key(self) -> str:
        return f"{self.variant.id}-s{self.seed}"


@dataclass(frozen=True)
class _Spec:
    levels: dict[str, tuple[Any, ...]]
    baseline: dict[str, Any]
    config: dict[str, Any]
    variants: list[dict[str, Any]] = field(default_factory=list)


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
            :mod:`ablate.report.sequential`).
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
        tune: Mapping[str, Any] | None = None,
        tune_trials: int = 20,
        tune_epochs: int | None = None,
        tune_config: Mapping[str, Any] | None = None,
        tune_seed: int = 0,
    ) -> None:
        self.name = name
        self.model = model
        self.data = data
        self.train = train
        self.user_config = dict(config or {})
        self.factors = {k: tuple(v) if _is_seq(v) else v for k, v in (factors or {}).items()}
        self.user_baseline = dict(baseline or {})
        self.design = design if isinstance(design, str) else "explicit"
        self.explicit = None if isinstance(design, str) else [dict(v) for v in design]
        self._raw_design = design
        self.constraints = _as_list(constraints)
        self.adaptive = isinstance(seeds, str) and seeds == "adaptive"
        self.min_seeds, self.max_seeds = _check_adaptive(self.adaptive, min_seeds, max_seeds)
        self.seeds = tuple(range(self.max_seeds)) if self.max_seeds else _check_seeds(seeds)
        self.metric = metric
        self.mode = _check_mode(metric, mode)
        self.min_effect = _check_min_effect(min_effect)
        self._counts: dict[str, int] | None = None  # set by scheduled(): seeds per variant
        self._skip: frozenset[str] = frozenset()  # trial keys scheduled() leaves out
        self.tune = dict(tune or {})
        self.tune_trials = tune_trials
        self.tune_seed = tune_seed
        self.tune_config = dict(tune_config or {})
        self.tune_epochs = tune_epochs
        self.source: str | None = None  # the study file, set by load_study
        self._check_name()
        self._check_sources()
        self.config = self._resolve_base()
        self._check_factors()
        self._check_types()
        self.baseline = self._resolve_baseline()
        self._check_tuning()
        self.aliases: dict[str, list[str]] = {}
        self.resolution: int | None = None
        self.variants = self._expand()

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
        return self.variants[0]

    @property
    def plan(self) -> str:
        """The id of this plan: which variants on which seeds (see :func:`plan_id`)."""
        bounds = (self.min_seeds, self.max_seeds) if self.adaptive else None
        return plan_id(self.variants, self.seeds, bounds)

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
        if tune_trials is not None and not self.tune:
            raise StudyError(
                f"--tune-trials {tune_trials}: study {self.name!r} tunes nothing (it has no "
                f"tune=). Fix: drop --tune-trials, or add tune={{'train.lr': ('log', 1e-3, "
                f"0.3)}} to the study."
            )
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
            tune=self.tune,
            tune_trials=self.tune_trials if tune_trials is None else tune_trials,
            tune_epochs=self.tune_epochs,
            tune_config={k: v for k, v in self.tune_config.items()
                         if not (self.tune_epochs is not None and k == "train.epochs")},
            tune_seed=self.tune_seed,
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
        return _namespace(config, "model")

    def data_kwargs(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments the data factory gets for a resolved config."""
        return _namespace(config, "data")

    def __repr__(self) -> str:
        return (
            f"Study({self.name!r}, design={self.design!r}, variants={len(self.variants)}, "
            f"seeds={self._seeds_text()}, metric={self.metric!r}, mode={self.mode!r})"
        )

    def _seeds_text(self) -> str:
        return (f"'adaptive' ({self.min_seeds} to {self.max_seeds})" if self.adaptive
                else str(list(self.seeds))
        )

    # ----------------------------------------------------------------------------- validation
    def _check_name(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", str(self.name)).strip("-._") or "my-study"
            raise StudyError(
                f"study name {self.name!r} can't be used as an MLflow experiment name and report "
                f"folder. Fix: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
                f"or digit, e.g. name={suggestion[:100]!r}."
            )

    def _check_sources(self) -> None:
        if self.train is not None:
            if self.model is not None or self.data is not None:
                raise StudyError(
                    f"study {self.name!r} passes both train= and model=/data=. Fix: pass either "
                    f"model= and data= (the built-in training loop) or train=fn (your own loop)."
                )
            if not callable(self.train):
                raise StudyError(f"train={self.train!r} is not callable. Fix: pass a function "
                                 f"train(config, run).")
            _check_train_signature(self.train)
            return
        if self.model is None or self.data is None:
            missing = "model=" if self.model is None else "data="
            raise StudyError(
                f"study {self.name!r} has no {missing}. Fix: pass model= and data= (callables that "
                f"build the model and the data from the model.* and data.* settings), or "
                f"train=fn for your own training code."
            )
        for what, fn in (("model", self.model), ("data", self.data)):
            if not callable(fn):
                raise StudyError(f"{what}={fn!r} is not callable. Fix: pass a class or function, "
                                 f"e.g. {what}=ConvNet.")

    def _resolve_base(self) -> dict[str, Any]:
        """Every setting a trial runs with: built-in defaults, the defaults in the signatures of
        the model and data factories (so changing one changes the variant id), then config."""
        for key, value in self.user_config.items():
            _check_key(key, "config", self.uses_builtin_loop)
            _check_plain(value, f"config[{key!r}]")
        if self.uses_builtin_loop:
            base = {**TRAIN_DEFAULTS, **signature_defaults(self.model, "model", DATA_DERIVED),
                    **signature_defaults(self.data, "data")}
        else:
            base = dict(RUN_DEFAULTS)
        base.update(self.user_config)
        if self.uses_builtin_loop:
            self._check_keys(self.user_config, "config")
        threads = base["train.threads"]
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise StudyError(f"train.threads={threads!r}: give a positive number of CPU threads "
                             f"per trial, e.g. 1 (the default) or 2.")
        return base

    def _check_keys(self, keys: Iterable[str], where: str) -> None:
        """Every key must be accepted by the part that receives it (built-in loop only)."""
        valid = self._valid_keys()
        every = sorted(k for names in valid.values() if names for k in names)
        for key in keys:
            ns = key.split(".", 1)[0]
            if ns not in _NAMESPACES:
                raise StudyError(
                    f"{where} key {key!r} is outside the model./data./train. namespaces"
                    f"{_did_you_mean(key, every)} Fix: prefix it with the part it configures."
                )
            names = valid[ns]
            if names is not None and key not in names:
                owner = {"model": self.model, "data": self.data}.get(ns)
                owner_name = getattr(owner, "__name__", repr(owner)) if owner else "ablate.train"
                raise StudyError(
                    f"{where} key {key!r} is not accepted by {owner_name}"
                    f"{_did_you_mean(key, sorted(names) or every)} "
                    f"Valid {ns}.* keys: {', '.join(sorted(names)) or '(none)'}."
                )

    def _check_required(self) -> None:
        """Arguments without defaults must be set (the model's data-derived ones are filled)."""
        for ns, fn in (("model", self.model), ("data", self.data)):
            for name in required_parameters(fn):  # type: ignore[arg-type]
                key = f"{ns}.{name}"
                if ns == "model" and name in DATA_DERIVED:
                    continue
                if key not in self.config and key not in self.factors:
                    raise StudyError(
                        f"{getattr(fn, '__name__', fn)} requires {name!r}, which study "
                        f"{self.name!r} does not set. Fix: add {key!r} to config= or factors=."
                    )

    def _valid_keys(self) -> dict[str, set[str] | None]:
        """Accepted keys per namespace; None where the callable takes **kwargs."""
        out: dict[str, set[str] | None] = {"train": set(TRAIN_DEFAULTS) | set(TRAIN_OPTIONAL)}
        for ns, fn in (("model", self.model), ("data", self.data)):
            params = _parameters(fn)
            out[ns] = None if params is None else {f"{ns}.{p}" for p in params}
        return out

    def _check_factors(self) -> None:
        if not isinstance(self.factors, Mapping):
            raise StudyError("factors must be a dict of dotted key -> list of levels.")
        for key, levels in self.factors.items():
            _check_key(key, "factor", self.uses_builtin_loop)
            if isinstance(levels, (str, bytes)) or not _is_seq(levels):
                raise StudyError(
                    f"factor {key!r} has levels {levels!r}, which is not a list. Fix: give its "
                    f"levels as a list, e.g. {key!r}: [True, False]."
                )
            if len(levels) < 2:
                raise StudyError(
                    f"factor {key!r} has {len(levels)} level(s) {list(levels)!r}; an ablation "
                    f"needs at least two. Fix: add the alternative level, or move the setting "
                    f"to config={{{key!r}: ...}}."
                )
            for level in levels:
                try:
                    hash(level)
                except TypeError:
                    hint = f" Use a tuple: {tuple(level)!r}." if isinstance(level, list) else ""
                    raise StudyError(
                        f"level {level!r} of factor {key!r} is unhashable ({type(level).__name__})."
                        f" Fix: levels must be hashable values.{hint}"
                    ) from None
                _check_plain(level, f"level {level!r} of factor {key!r}")
            dupes = sorted({repr(x) for x in levels if _count(levels, x) > 1})
            if dupes:
                raise StudyError(
                    f"factor {key!r} lists level(s) {', '.join(dupes)} more than once. Fix: list "
                    f"each level once."
                )
        if self.uses_builtin_loop:
            self._check_keys(self.factors, "factor")
        both = sorted(set(self.factors) & set(self.user_config))
        if both:
            raise StudyError(
                f"{both[0]!r} is both a factor and a config setting. Fix: remove it from config "
                f"(the factor's baseline level is used as its base value)."
            )
        if self.uses_builtin_loop:
            self._check_required()

    def _check_types(self) -> None:
        """Each config value and factor level fits what receives it: ``train.*`` settings
        (:class:`ablate.config.TrainConfig`), and the annotation, else the default's type, of
        the model or data factory's parameter."""
        if not self.uses_builtin_loop:
            return
        params = {"model": parameter_types(self.model), "data": parameter_types(self.data)}
        values = [(k, v, "config") for k, v in self.user_config.items()]
        values += [(k, level, "factor") for k, levels in self.factors.items() for level in levels]
        for key, value, where in values:
            ns, name = key.split(".", 1)
            if ns == "train":
                wrong = train_problems({key: value}, TRAIN_OPTIONAL)
                problem = wrong[0].split(": ", 1)[1] if wrong else None
            elif name in params.get(ns, {}):
                annotation, default = params[ns][name]
                problem = type_problem(value, annotation, default)
            else:
                continue
            if problem is not None:
                fix = ("change the level" if where == "factor" else "change the value")
                raise StudyError(
                    f"{where} {key}={value!r} does not fit: {problem}. Fix: {fix}"
                    + (" (a string like 'no' is not False: write False)"
                       if isinstance(value, str) and problem.startswith("expected True") else "")
                    + "."
                )

    def _resolve_baseline(self) -> dict[str, Any]:
        for key, value in self.user_baseline.items():
            if key not in self.factors:
                raise StudyError(
                    f"baseline names {key!r}, which is not a factor"
                    f"{_did_you_mean(key, list(self.factors))} Factors: {', '.join(self.factors)}."
                )
            if not _contains(self.factors[key], value):
                raise StudyError(
                    f"baseline value {value!r} for {key!r} is not one of its levels "
                    f"{list(self.factors[key])!r}. Fix: add it to the levels or pick one of them."
                )
        return {k: self.user_baseline.get(k, levels[0]) for k, levels in self.factors.items()}

    def _check_tuning(self) -> None:
        """``tune``: dotted key -> ``("log"|"float"|"int", low, high)`` or a list of choices."""
        if not self.tune:
            if self.tune_epochs is not None or self.tune_config:
                raise StudyError("tune_epochs/tune_config are set but tune= is empty. Fix: add "
                                 "tune={'train.lr': ('log', 1e-4, 1e-1)} or remove them.")
            return
        if isinstance(self.tune_trials, bool) or not isinstance(self.tune_trials, int) \
                or self.tune_trials < 1:
            raise StudyError(f"tune_trials={self.tune_trials!r}: give a positive number of "
                             f"tuning trials per variant, e.g. tune_trials=20.")
        if isinstance(self.tune_seed, bool) or not isinstance(self.tune_seed, int) \
                or self.tune_seed < 0:
            raise StudyError(f"tune_seed={self.tune_seed!r} is not a non-negative integer.")
        if self.tune_epochs is not None:
            if not self.uses_builtin_loop:
                raise StudyError("tune_epochs sets train.epochs of the built-in loop. Fix: with "
                                 "train=fn pass tune_config={'<your epochs key>': N}.")
            if isinstance(self.tune_epochs, bool) or not isinstance(self.tune_epochs, int) \
                    or self.tune_epochs < 1:
                raise StudyError(f"tune_epochs={self.tune_epochs!r} is not a positive integer.")
            self.tune_config = {**self.tune_config, "train.epochs": self.tune_epochs}
        for key, value in self.tune_config.items():
            _check_key(key, "tune_config", self.uses_builtin_loop)
            _check_plain(value, f"tune_config[{key!r}]")
        for key, space in self.tune.items():
            _check_key(key, "tune", self.uses_builtin_loop)
            if key in self.factors:
                raise StudyError(f"tune key {key!r} is also a factor. Fix: tune a setting the "
                                 f"factors don't vary (e.g. train.lr), or drop the factor.")
            _check_space(key, space)
        if self.uses_builtin_loop:
            self._check_keys([*self.tune, *self.tune_config], "tune")

    def _tuning_identity(self) -> dict[str, Any]:
        """What the variant id must also hash when variants are tuned."""
        if not self.tune:
            return {}
        return {"ablate.tune": {"space": self.tune, "trials": self.tune_trials,
                                "config": self.tune_config, "seed": self.tune_seed}}

    # ------------------------------------------------------------------------------ expansion
    def _expand(self) -> list[Variant]:
        combos = self._design_combos()
        base = self.baseline
        if not any(_same(c, base) for c in combos):
            combos.insert(0, dict(base))
        else:  # the baseline always comes first
            combos.sort(key=lambda c: not _same(c, base))
        seen: list[dict[str, Any]] = []
        keys: set[tuple[Any, ...]] = set()
        for combo in combos:
            key = tuple((k, type(v).__name__, repr(v)) for k, v in sorted(combo.items()))
            if key not in keys:
                keys.add(key)
                seen.append(combo)
        kept = [c for c in seen if self._allowed(c)]
        if not kept or not _same(kept[0], base):
            what = "every variant" if not kept else "the baseline"
            raise StudyError(
                f"the constraints of study {self.name!r} exclude {what} (baseline: "
                f"{_label(base, base, self.factors)}: {_fmt_levels(base)}). Fix: relax the "
                f"constraints or choose a baseline they allow with baseline={{...}}."
            )
        return [self._variant(c) for c in kept]

    def _design_combos(self) -> list[dict[str, Any]]:
        keys = list(self.factors)
        if self.design == "explicit":
            return [self._explicit_variant(i, v) for i, v in enumerate(self.explicit or [])]
        if self.design not in DESIGNS:
            raise StudyError(
                f"design {self.design!r} is unknown{_did_you_mean(self.design, DESIGNS)} "
                f"Valid designs: {', '.join(DESIGNS)}, or a list of variants (dicts)."
            )
        if self.design == "full_factorial":
            count = math.prod(len(levels) for levels in self.factors.values())
            if count > MAX_VARIANTS:
                raise StudyError(
                    f"design='full_factorial' over {len(keys)} factors makes {count:,} variants, "
                    f"more than {MAX_VARIANTS:,}. Fix: design='fractional' (two-level factors: "
                    f"{2 ** max(1, math.ceil(math.log2(len(keys) + 1)))} runs), "
                    f"design='one_at_a_time' ({1 + sum(len(v) - 1 for v in self.factors.values())}"
                    f" variants), or fewer factors."
                )
            return [dict(zip(keys, c)) for c in itertools.product(*self.factors.values())]
        if self.design == "one_at_a_time":
            combos = [dict(self.baseline)]
            for key, levels in self.factors.items():
                for level in levels:
                    if not _eq(level, self.baseline[key]):
                        combos.append({**self.baseline, key: level})
            return combos
        return self._fractional()

    def _explicit_variant(self, index: int, variant: Mapping[str, Any]) -> dict[str, Any]:
        for key, level in variant.items():
            if key not in self.factors:
                raise StudyError(
                    f"design[{index}] sets {key!r}, which is not a factor"
                    f"{_did_you_mean(key, list(self.factors))} Fix: add it to factors= with its "
                    f"levels."
                )
            if not _contains(self.factors[key], level):
                raise StudyError(
                    f"design[{index}] sets {key!r}={level!r}, which is not one of its levels "
                    f"{list(self.factors[key])!r}. Fix: add the level to the factor."
                )
        return {**self.baseline, **variant}

    def _fractional(self) -> list[dict[str, Any]]:
        keys = list(self.factors)
        wrong = [k for k in keys if len(self.factors[k]) != 2]
        if wrong:
            raise StudyError(
                f"the fractional design supports two-level factors only; {wrong[0]!r} has "
                f"{len(self.factors[wrong[0]])} levels. Fix: use design='full_factorial' or "
                f"'one_at_a_time', or give every factor exactly two levels."
            )
        columns, self.resolution = fractional_design(len(keys))
        self.aliases = _aliases(keys, columns)
        lows = {k: self.baseline[k] for k in keys}
        highs = {k: next(x for x in self.factors[k] if not _eq(x, lows[k])) for k in keys}
        runs = len(columns[0]) if columns else 1
        return [
            {k: lows[k] if columns[j][r] < 0 else highs[k] for j, k in enumerate(keys)}
            for r in range(runs)
        ]

    def _allowed(self, combo: Mapping[str, Any]) -> bool:
        config = {**self.config, **combo}
        for rule in self.constraints:
            if callable(rule):
                try:
                    keep = rule(config)
                except Exception as exc:  # the user's predicate is user code: name it
                    raise StudyError(
                        f"constraint {getattr(rule, '__name__', rule)!r} raised "
                        f"{type(exc).__name__}: {exc} for variant {_fmt_levels(combo)}. Fix: the "
                        f"predicate gets the resolved config (dotted keys) and returns True to "
                        f"keep a variant."
                    ) from exc
                if not keep:
                    return False
            elif isinstance(rule, Mapping):
                for key in rule:
                    if key not in self.factors:
                        raise StudyError(
                            f"constraint {dict(rule)!r} names {key!r}, which is not a factor"
                            f"{_did_you_mean(key, list(self.factors))}"
                        )
                if all(_eq(combo[k], v) for k, v in rule.items()):
                    return False
            else:
                raise StudyError(
                    f"constraint {rule!r} is neither a predicate nor a dict of forbidden levels. "
                    f"Fix: constraints=[lambda c: ..., {{'model.pool': 'max', ...}}]."
                )
        return True

    def _variant(self, levels: Mapping[str, Any]) -> Variant:
        config = {**self.config, **levels}
        return Variant(
            id=variant_id({**config, **self._tuning_identity()}),
            label=_label(levels, self.baseline, self.factors),
            levels=dict(levels),
            config=config,
            baseline=_same(levels, self.baseline),
        )


# --------------------------------------------------------------------------------- identity
def canonical(config: Mapping[str, Any]) -> str:
    """The config as canonical JSON: sorted keys, tuples as lists."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_reject)


def variant_id(config: Mapping[str, Any]) -> str:
    """A stable 8-hex-digit id: the same config gives the same id in any process."""
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:8]


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain data")


def signature_defaults(
    fn: Callable[..., Any] | None, ns: str, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """``{"<ns>.<param>": default}`` for every keyword parameter of ``fn`` with a plain-data
    default (numbers, strings, bools, None, tuples...): part of what a variant trains with.
    Defaults that are code (a class, a function) are covered by the code fingerprint."""
    if fn is None:
        return {}
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params:
        if p.default is p.empty or p.name in skip or p.kind not in (
                p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        try:
            canonical(p.default)
        except (TypeError, ValueError):
            continue
        out[f"{ns}.{p.name}"] = p.default
    return out


def plan_id(variants: Sequence[Variant], seeds: Sequence[int],
            adaptive: tuple[int, int] | None = None) -> str:
    """The plan's id: a hash of its trials (every variant id and seed, in order); an adaptive
    plan also hashes its (min_seeds, max_seeds), ``seeds`` being its candidate seeds."""
    plan: dict[str, Any] = {"variants": [v.id for v in variants], "seeds": list(seeds)}
    if adaptive is not None:
        plan["adaptive"] = list(adaptive)
    text = canonical(plan)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def code_fingerprint(study: Study) -> str:
    """A hash of the study's code: the study file's text and the source of the model, data and
    train functions it passes. Recorded on every trial; a rerun that finds it changed asks."""
    digest = hashlib.sha256()
    if study.source:
        try:
            digest.update(Path(study.source).read_bytes())
        except OSError:
            digest.update(study.source.encode())
    linecache.checkcache()  # inspect reads sources through it: see edits made since
    for fn in (study.model, study.data, study.train):
        if fn is None:
            continue
        try:
            text = inspect.getsource(fn)
        except (OSError, TypeError):
            text = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        digest.update(text.encode())
    return digest.hexdigest()[:12]


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


def _aliases(keys: Sequence[str], columns: Sequence[Sequence[int]]) -> dict[str, list[str]]:
    """Main effects and two-factor interactions that share a column (up to sign)."""
    effects: dict[str, tuple[int, ...]] = {k: tuple(c) for k, c in zip(keys, columns)}
    for (a, ca), (b, cb) in itertools.combinations(list(zip(keys, columns)), 2):
        effects[f"{a}:{b}"] = tuple(x * y for x, y in zip(ca, cb))
    out: dict[str, list[str]] = {}
    for name, col in effects.items():
        neg = tuple(-x for x in col)
        same = [o for o, c in effects.items() if o != name and c in (col, neg)]
        if same:
            out[name] = same
    return out


# ------------------------------------------------------------------------------ loading
def load_study(
    path: str | Path,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seeds: int | Sequence[int] | None = None,
    tune_trials: int | None = None,
) -> Study:
    """Import a study file and return its :class:`Study` (the one named ``name`` if several).

    A study file is Python code and runs with your permissions, like any script.
    Raises :class:`StudyError` with the file and line for every way this can go wrong.
    """
    path = Path(path)
    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = difflib.get_close_matches(path.name, [p.name for p in path.parent.glob("*.py")])
            hint = f" Did you mean {str(path.parent / near[0])!r}?" if near else ""
        raise StudyError(f"study file {str(path)!r} does not exist.{hint}")
    if path.is_dir() or path.suffix != ".py":
        raise StudyError(f"{str(path)!r} is not a Python file. Fix: pass a study file like "
                         f"studies/quick.py.")
    module_name = "ablate_study_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling (e.g. for Ray) finds the study's functions
    folder = str(path.resolve().parent)  # its own modules import, as with `python STUDY.py`
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        text = (exc.text or "").rstrip()
        raise StudyError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}" + (f"\n    {text}" if text else "")
        ) from None
    except StudyError as exc:
        sys.modules.pop(module_name, None)
        raise StudyError(f"{path}:{_line_in(exc, path)}: invalid study: {exc}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise StudyError(
            f"{path}:{_line_in(exc, path)}: the study file raised {type(exc).__name__}: {exc}\n"
            f"Fix the error in the study file; its traceback:\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        ) from None
    studies = {v.name: v for v in vars(module).values() if isinstance(v, Study)}
    if not studies:
        raise StudyError(
            f"{path} defines no Study. Fix: create one at module level, e.g. "
            f"study = Study('my-study', model=..., data=..., factors={{...}})."
        )
    if name is None and len(studies) > 1:
        raise StudyError(
            f"{path} defines {len(studies)} studies ({', '.join(sorted(studies))}). Fix: choose "
            f"one with --study NAME."
        )
    if name is not None and name not in studies:
        raise StudyError(
            f"{path} has no study named {name!r}{_did_you_mean(name, list(studies))} "
            f"Studies in it: {', '.join(sorted(studies))}."
        )
    study = studies[name] if name is not None else next(iter(studies.values()))
    study.source = str(path)
    if overrides or seeds is not None or tune_trials is not None:
        try:
            study = study.with_overrides(overrides, seeds=seeds, tune_trials=tune_trials)
        except StudyError as exc:
            raise StudyError(f"{path}: {exc}") from None
    study.fingerprint  # noqa: B018 - the code as loaded now, not as it may be edited later
    return study


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value), the value parsed as a Python literal (else a string)."""
    import ast

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StudyError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=2.")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        if re.fullmatch(r"[^\s'\"()\[\]{},]+", raw.strip()):
            value = raw.strip()  # a bare word or path: a string (--set data.path=./corpus.txt)
        else:
            raise StudyError(
                f"--set {text!r}: {raw!r} is not a Python literal. Fix: quote strings "
                f"(--set 'data.path=\"my file.txt\"'), write numbers, True/False/None, tuples."
            ) from None
    return key, value


# ------------------------------------------------------------------------------ helpers
def _line_in(exc: BaseException, path: Path) -> int | str:
    """The last line of the study file in the exception's traceback."""
    line: int | str = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno or "?"
    return line


def _namespace(config: Mapping[str, Any], ns: str) -> dict[str, Any]:
    prefix = ns + "."
    return {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


def _parameters(fn: Callable[..., Any]) -> list[str] | None:
    """Names a callable accepts as keywords; None if it takes **kwargs or can't be inspected."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return names


def required_parameters(fn: Callable[..., Any]) -> list[str]:
    """Parameters of ``fn`` without defaults (that a config must provide)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _check_train_signature(fn: Callable[..., Any]) -> None:
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise StudyError(
            f"train={getattr(fn, '__name__', fn)!r} must accept two arguments (config, run). "
            f"Fix: def train(config, run): ..."
        ) from None
    except ValueError:
        pass


def _check_key(key: Any, where: str, dotted: bool = True) -> None:
    """Keys of the built-in loop are dotted (``model.x``); with train=fn any name will do."""
    if not dotted:
        if not isinstance(key, str) or not key or key != key.strip():
            raise StudyError(f"{where} key {key!r} is not a name. Fix: use a non-empty string "
                             f"without surrounding spaces, e.g. 'lr' or 'net.width'.")
        return
    if not isinstance(key, str) or not key or key != key.strip() or "." not in key.strip("."):
        raise StudyError(
            f"{where} key {key!r} is not a dotted name. Fix: use namespaced keys such as "
            f"'model.batch_norm', 'data.batch_size' or 'train.lr'."
        )


def _check_plain(value: Any, where: str) -> None:
    try:
        json.dumps(value, default=_reject)
    except (TypeError, ValueError) as exc:
        raise StudyError(
            f"{where} is not plain data ({exc}). Fix: config values and levels must be numbers, "
            f"strings, bools, None, or tuples/lists/dicts of those, so they can be logged and "
            f"hashed; pass functions and classes as model=, data= or inside train=."
        ) from None


def _check_space(key: str, space: Any) -> None:
    fix = (f"Fix: tune={{{key!r}: ('log', 1e-4, 1e-1)}} (or 'float'/'int' with low < high), or a "
           f"list of choices such as [0, 1e-5, 1e-4].")
    if isinstance(space, list):
        if len(space) < 2:
            raise StudyError(f"tune[{key!r}] lists {len(space)} choice(s). {fix}")
        _check_plain(space, f"tune[{key!r}]")
        return
    ok = (isinstance(space, tuple) and len(space) == 3 and space[0] in ("log", "float", "int")
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in space[1:])
          and space[1] < space[2])
    if ok and space[0] == "log" and space[1] <= 0:
        ok = False
    if ok and space[0] == "int" and not all(isinstance(x, int) for x in space[1:]):
        ok = False
    if not ok:
        raise StudyError(f"tune[{key!r}] = {space!r} is not a search space. {fix}")


def _check_adaptive(
    adaptive: bool, min_seeds: int | None, max_seeds: int | None
) -> tuple[int, int] | tuple[None, None]:
    """``(min_seeds, max_seeds)`` of an adaptive study (defaults filled), else ``(None, None)``."""
    if not adaptive:
        if min_seeds is not None or max_seeds is not None:
            raise StudyError("min_seeds/max_seeds apply to seeds='adaptive' only. Fix: pass "
                             "seeds='adaptive', or drop min_seeds/max_seeds.")
        return None, None
    low = ADAPTIVE_SEEDS[0] if min_seeds is None else min_seeds
    high = ADAPTIVE_SEEDS[1] if max_seeds is None else max_seeds
    for name, value in (("min_seeds", low), ("max_seeds", high)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StudyError(f"{name}={value!r} is not an integer. Fix: e.g. min_seeds=3, "
                             f"max_seeds=12.")
    if not 2 <= low <= high <= MAX_ADAPTIVE_SEEDS:
        raise StudyError(
            f"min_seeds={low}, max_seeds={high}: an adaptive study needs 2 <= min_seeds <= "
            f"max_seeds <= {MAX_ADAPTIVE_SEEDS} (a paired comparison needs 2 seeds). Fix: e.g. "
            f"min_seeds=3, max_seeds=12."
        )
    return low, high


def _check_min_effect(min_effect: float | None) -> float | None:
    if min_effect is None:
        return None
    if isinstance(min_effect, bool) or not isinstance(min_effect, (int, float)) \
            or not 0 < min_effect < math.inf:
        raise StudyError(f"min_effect={min_effect!r}: give the smallest effect that matters, a "
                         f"positive number in the metric's units, e.g. min_effect=0.01.")
    return float(min_effect)


def _check_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, str):
        raise StudyError(f"seeds={seeds!r}: give a count (seeds=3), a list of seeds, or "
                         f"'adaptive'.")
    if isinstance(seeds, bool):
        raise StudyError(f"seeds={seeds!r}: give a count (seeds=3) or a list of seeds.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise StudyError(f"seeds={seeds}: a study needs at least one seed. Fix: seeds=3.")
        return tuple(range(seeds))
    seeds = tuple(seeds) if _is_seq(seeds) else (seeds,)  # type: ignore[assignment]
    if not seeds:
        raise StudyError("seeds=[]: a study needs at least one seed. Fix: seeds=3.")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise StudyError(f"seed {s!r} is not a non-negative integer. Fix: seeds=[0, 1, 2].")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"seeds={list(seeds)} repeats a seed. Fix: list each seed once.")
    return seeds


def _check_mode(metric: str, mode: str | None) -> Literal["max", "min"]:
    if not isinstance(metric, str) or not metric:
        raise StudyError(f"metric={metric!r}: name the metric to rank by, e.g. metric='val_acc'.")
    if mode is not None:
        if mode not in ("max", "min"):
            raise StudyError(f"mode={mode!r}: use 'max' (higher is better) or 'min'.")
        return mode  # type: ignore[return-value]
    name = metric.lower()
    if any(w in name for w in _MIN_WORDS):
        return "min"
    if any(w in name for w in _MAX_WORDS):
        return "max"
    raise StudyError(
        f"can't tell whether higher or lower {metric!r} is better. Fix: pass mode='max' or "
        f"mode='min'."
    )


def _did_you_mean(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not near:  # also match on the last dotted part: batchnorm -> model.batch_norm
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        near = [tails[t] for t in difflib.get_close_matches(key.rsplit(".", 1)[-1], tails, n=1)]
    return f"; did you mean {near[0]!r}?" if near else "."


def _as_list(constraints: Any) -> list[Any]:
    if constraints is None:
        return []
    if callable(constraints) or isinstance(constraints, Mapping):
        return [constraints]
    return list(constraints)


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _eq(a: Any, b: Any) -> bool:
    """Level equality that keeps True != 1 and 1 != 1.0 (they log differently)."""
    return type(a) is type(b) and a == b


def _count(levels: Sequence[Any], x: Any) -> int:
    return sum(_eq(x, y) for y in levels)


def _contains(levels: Sequence[Any], x: Any) -> bool:
    return _count(levels, x) > 0


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _fmt_levels(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in levels.items()) or "(no factors)"


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Dotted key -> its last part, or the full key where the last part is ambiguous."""
    keys = list(keys)
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


def _label(levels: Mapping[str, Any], base: Mapping[str, Any], factors: Mapping[str, Any]) -> str:
    names = short_names(factors)
    diff = [f"{names[k]}={_fmt(v)}" for k, v in levels.items() if not _eq(v, base[k])]
    return ",".join(diff) or "baseline"
