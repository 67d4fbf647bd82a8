"""Resolve a study's settings against the functions that receive them, and check them there.

The base config a trial runs with is the built-in loop's defaults, the plain-data defaults in
the signatures of the model and data factories (so changing one changes the variant id), then
the study's config. Each key must be accepted, and each value must fit the annotation (or the
default's type), of the part that receives it; arguments without defaults must be set.
Standard library only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ablate.config import (
    DATA_DERIVED,
    RUN_DEFAULTS,
    TRAIN_DEFAULTS,
    TRAIN_OPTIONAL,
    parameter_types,
    signature_defaults,
    train_problems,
    type_problem,
)
from ablate.validate import StudyError, check_key, check_plain, did_you_mean

NAMESPACES = ("model", "data", "train")


def resolve_config(
    config: Mapping[str, Any], model: Callable[..., Any] | None, data: Callable[..., Any] | None,
    builtin: bool,
) -> dict[str, Any]:
    """Every setting a trial runs with: built-in defaults, the defaults in the signatures of
    the model and data factories (so changing one changes the variant id), then ``config``."""
    for key, value in config.items():
        check_key(key, "config", builtin)
        check_plain(value, f"config[{key!r}]")
    if builtin:
        base = {**TRAIN_DEFAULTS, **signature_defaults(model, "model", DATA_DERIVED),
                **signature_defaults(data, "data")}
    else:
        base = dict(RUN_DEFAULTS)
    base.update(config)
    if builtin:
        check_keys(config, "config", model, data)
    threads = base["train.threads"]
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StudyError(f"train.threads={threads!r}: give a positive number of CPU threads "
                         f"per trial, e.g. 1 (the default) or 2.")
    return base


def check_keys(keys: Iterable[str], where: str, model: Any, data: Any) -> None:
    """Every key must be accepted by the part that receives it (built-in loop only)."""
    valid = _valid_keys(model, data)
    every = sorted(k for names in valid.values() if names for k in names)
    for key in keys:
        ns = key.split(".", 1)[0]
        if ns not in NAMESPACES:
            raise StudyError(
                f"{where} key {key!r} is outside the model./data./train. namespaces"
                f"{did_you_mean(key, every)} Fix: prefix it with the part it configures."
            )
        names = valid[ns]
        if names is not None and key not in names:
            owner = {"model": model, "data": data}.get(ns)
            owner_name = getattr(owner, "__name__", repr(owner)) if owner else "ablate.train"
            raise StudyError(
                f"{where} key {key!r} is not accepted by {owner_name}"
                f"{did_you_mean(key, sorted(names) or every)} "
                f"Valid {ns}.* keys: {', '.join(sorted(names)) or '(none)'}."
            )


def check_factor_keys(
    name: str, factors: Mapping[str, Any], config: Mapping[str, Any],
    user_config: Mapping[str, Any], model: Any, data: Any, builtin: bool,
) -> None:
    """Factors are accepted keys, not also config settings; required arguments are all set."""
    if builtin:
        check_keys(factors, "factor", model, data)
    both = sorted(set(factors) & set(user_config))
    if both:
        raise StudyError(
            f"{both[0]!r} is both a factor and a config setting. Fix: remove it from config "
            f"(the factor's baseline level is used as its base value)."
        )
    if builtin:
        _check_required(name, factors, config, model, data)


def _check_required(
    name: str, factors: Mapping[str, Any], config: Mapping[str, Any], model: Any, data: Any
) -> None:
    """Arguments without defaults must be set (the model's data-derived ones are filled)."""
    for ns, fn in (("model", model), ("data", data)):
        for param in required_parameters(fn):
            key = f"{ns}.{param}"
            if ns == "model" and param in DATA_DERIVED:
                continue
            if key not in config and key not in factors:
                raise StudyError(
                    f"{getattr(fn, '__name__', fn)} requires {param!r}, which study "
                    f"{name!r} does not set. Fix: add {key!r} to config= or factors=."
                )


def check_types(
    config: Mapping[str, Any], factors: Mapping[str, Sequence[Any]], model: Any, data: Any,
    where: str = "config",
) -> None:
    """Each config value and factor level fits what receives it: ``train.*`` settings
    (:class:`ablate.config.TrainConfig`), and the annotation, else the default's type, of
    the model or data factory's parameter (built-in loop only). ``where``: what the config
    values are named in a message (``config``, ``task 'cifar'``)."""
    params = {"model": parameter_types(model), "data": parameter_types(data)}
    values = [(k, v, where) for k, v in config.items()]
    values += [(k, level, "factor") for k, levels in factors.items() for level in levels]
    for key, value, where in values:
        ns, name = key.split(".", 1)
        if ns == "train":
            wrong = train_problems({key: value})
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


def _valid_keys(model: Any, data: Any) -> dict[str, set[str] | None]:
    """Accepted keys per namespace; None where the callable takes **kwargs."""
    out: dict[str, set[str] | None] = {"train": set(TRAIN_DEFAULTS) | set(TRAIN_OPTIONAL)}
    for ns, fn in (("model", model), ("data", data)):
        params = _parameters(fn)
        out[ns] = None if params is None else {f"{ns}.{p}" for p in params}
    return out


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
