"""Settings: what a trial runs with, their types and checks, and the id of a resolved config.

:class:`TrainConfig` is the one place the built-in training loop's settings are declared, with
their types, defaults and meaning. A study's ``train.*`` values are checked against it, and its
``model.*``/``data.*`` values against the annotations (or defaults) of the model and data
factories, when the study is defined: a typo'd choice (``train.optimizer="sgdd"``), a string
where a flag is expected (``"no"`` is truthy) or a learning rate of -1 fails before training.
:func:`factory_kwargs` is the one place a resolved config is cut into the keyword arguments of
the model and data factories; :func:`canonical` is the one form a config is hashed in
(:func:`variant_id`, :func:`plan_id`). Standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

__all__ = ["DATA_DERIVED", "RUN_DEFAULTS", "TRAIN_DEFAULTS", "TRAIN_OPTIONAL", "TrainConfig",
           "canonical", "factory_kwargs", "parameter_types", "plan_id", "signature_defaults",
           "train_defaults", "train_problems", "type_problem", "variant_id"]

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "sgdr", "onecycle"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the built-in training loop, as ``train.<field>`` keys of a study's config.

    Every field is part of every resolved config of a model/data study: it is logged as a param
    and changes the variant id. Adding a field here changes every id (add optional settings to
    :data:`TRAIN_OPTIONAL` instead).
    """

    epochs: int = 10  # epochs per trial (>= 1)
    optimizer: Optimizer = "sgd"
    lr: float = 0.05  # peak learning rate (> 0)
    momentum: float = 0.9  # sgd momentum; adam/adamw beta1 (0 <= momentum < 1)
    nesterov: bool = False  # sgd only
    weight_decay: float = 5e-4  # decoupled for adamw, L2 for sgd/adam (>= 0)
    schedule: Schedule = "constant"  # sgdr: cosine with warm restarts; onecycle
    cycle_len: int = 1  # sgdr: epochs in the first cycle (>= 1)
    cycle_mult: int = 2  # sgdr: each cycle is this many times longer than the last (>= 1)
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr over this many epochs (>= 0)
    grad_clip: float | None = None  # max global gradient norm (> 0), or None
    layer_lrs: tuple[float, ...] | None = None  # one lr multiplier per layer group, or None
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    deterministic: bool = True  # deterministic algorithms (bitwise-reproducible on CPU)
    bf16: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # channels_last memory format for 4-D inputs on CUDA
    activation_stats: bool = True  # per-layer activation mean/std on a fixed batch, per epoch
    keep_weights: bool = False  # log the final state_dict as the artifact weights.pt
    threads: int = 1  # CPU threads per trial (torch.set_num_threads): results depend on it


def train_defaults() -> dict[str, Any]:
    """``{"train.<field>": default}`` in declaration order."""
    return {f"train.{f.name}": f.default for f in dataclasses.fields(TrainConfig)}


# Settings of the built-in training loop, declared above: part of every resolved config of a
# model/data study, so they are logged as params and change the variant id.
TRAIN_DEFAULTS: dict[str, Any] = train_defaults()

# Settings of every study, your own train=fn included: the executor applies them to each trial.
RUN_DEFAULTS: dict[str, Any] = {"train.threads": TRAIN_DEFAULTS["train.threads"]}

# Settings of the built-in loop that join the resolved config only when a study sets them, so
# adding one never changes the ids of studies that don't use it.
TRAIN_OPTIONAL: dict[str, Any] = {
    "train.compile": False,  # torch.compile the model: True (inductor) or a backend name
    "train.cams": False,  # the report's class activation maps: cams.npz when a trial ends
    "train.label_smoothing": 0.0,  # label smoothing of the training loss, in [0, 1)
    "train.ema": None,  # decay in (0, 1) of an EMA of the weights that validation uses
    "train.tta": False,  # validate on each image and its horizontal mirror (images only)
}
# The types of the optional settings checked like TrainConfig's (train.compile is not: True or
# any backend name).
_OPTIONAL_TYPES: dict[str, Any] = {"cams": bool, "label_smoothing": float, "ema": float | None,
                                    "tta": bool}

# Model constructor arguments that the training loop fills from the data (``data.model_kwargs``)
# when the config does not set them.
DATA_DERIVED = ("num_classes", "in_channels", "image_size", "vocab_size", "in_features")


_TRAIN_TYPES = typing.get_type_hints(TrainConfig)
_POSITIVE = ("epochs", "lr", "cycle_len", "cycle_mult", "threads")
_NON_NEGATIVE = ("weight_decay", "warmup_epochs")


def train_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the ``train.*`` values of a resolved config (empty if nothing)."""
    problems = []
    for key, value in config.items():
        if not key.startswith("train."):
            continue
        name = key[len("train."):]
        annotation = _TRAIN_TYPES.get(name, _OPTIONAL_TYPES.get(name))
        if annotation is None:
            continue  # unknown keys are reported by the study's key check
        wrong = type_problem(value, annotation)
        if wrong is not None:
            problems.append(f"{key}={value!r}: {wrong}")
            continue
        if name in _POSITIVE and not value > 0:
            problems.append(f"{key}={value!r}: must be greater than 0")
        elif name in _NON_NEGATIVE and not value >= 0:
            problems.append(f"{key}={value!r}: must be 0 or more")
        elif name == "momentum" and not 0 <= value < 1:
            problems.append(f"{key}={value!r}: must be in [0, 1)")
        elif name == "grad_clip" and value is not None and not value > 0:
            problems.append(f"{key}={value!r}: must be greater than 0, or None for no clipping")
        elif name == "layer_lrs" and value is not None and not all(v > 0 for v in value):
            problems.append(f"{key}={value!r}: every multiplier must be greater than 0")
        elif name == "label_smoothing" and not 0 <= value < 1:
            problems.append(f"{key}={value!r}: must be in [0, 1)")
        elif name == "ema" and value is not None and not 0 < value < 1:
            problems.append(f"{key}={value!r}: the decay must be in (0, 1), e.g. 0.999, or None "
                            f"for no average")
        elif name == "device":
            problems.extend(_device_problem(value))
    return problems


def _device_problem(name: str) -> list[str]:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        return [f"train.device={name!r}: use auto, cpu, cuda, cuda:N or mps"]
    return []


def parameter_types(fn: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (annotation, default)}`` of ``fn``'s keyword parameters (``inspect.Parameter
    .empty`` where absent). String annotations are resolved where possible."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to the defaults
        hints = {}
    return {p.name: (hints.get(p.name, p.empty), p.default) for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def type_problem(value: Any, annotation: Any, default: Any = inspect.Parameter.empty) -> str | None:
    """Why ``value`` does not fit ``annotation`` (or, without one, the type of ``default``);
    None if it fits or the annotation is beyond what can be checked."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return None
        annotation = _type_of_default(default)
    return None if _fits(value, annotation) else f"expected {_describe(annotation)}"


def _type_of_default(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, (int, str)):
        return type(default)
    return Any


def _fits(value: Any, tp: Any) -> bool:
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(c) and value == c for c in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and not (isinstance(value, float) and math.isnan(value)))
    if tp is str:
        return isinstance(value, str)
    container = origin or tp
    if container in (tuple, list, Sequence, typing.Sequence) or (
            inspect.isclass(container) and issubclass(container, Sequence)
            and container is not str):
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return len(args) != 1 or all(_fits(v, args[0]) for v in value)
    return True  # a class, a callable, a protocol: not plain data we can check


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is None or tp is type(None):
        return "None"
    if tp is bool:
        return "True or False"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if (origin or tp) in (tuple, list) or origin is not None:
        return "a tuple or list"
    return getattr(tp, "__name__", str(tp))


# --------------------------------------------------------------------- namespaces and identity
def factory_kwargs(config: Mapping[str, Any], ns: str) -> dict[str, Any]:
    """The keyword arguments of the part ``ns`` (``"model"``, ``"data"``): its ``<ns>.*``
    settings without the prefix, lists as tuples (a level written either way builds the same)."""
    prefix = ns + "."
    return {k[len(prefix):]: tuple(v) if isinstance(v, list) else v
            for k, v in config.items() if k.startswith(prefix)}


def plain_json(value: Any) -> str:
    """``value`` as JSON; TypeError naming the type if it is not plain data."""
    return json.dumps(value, default=_reject)


def canonical(config: Mapping[str, Any]) -> str:
    """The config as canonical JSON: sorted keys, tuples as lists."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_reject)


def variant_id(config: Mapping[str, Any]) -> str:
    """A stable 8-hex-digit id: the same config gives the same id in any process."""
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:8]


def plan_id(variant_ids: Sequence[str], seeds: Sequence[int],
            adaptive: tuple[int, int] | None = None) -> str:
    """The plan's id: a hash of its trials (every variant id and seed, in order); an adaptive
    plan also hashes its (min_seeds, max_seeds), ``seeds`` being its candidate seeds."""
    plan: dict[str, Any] = {"variants": list(variant_ids), "seeds": list(seeds)}
    if adaptive is not None:
        plan["adaptive"] = list(adaptive)
    return hashlib.sha256(canonical(plan).encode()).hexdigest()[:8]


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
