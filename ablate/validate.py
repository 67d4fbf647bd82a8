"""Checks of a study's arguments, each failing with a :class:`StudyError` that names the fix.

Every mistake that can be found before training is found here: the name, the parts (model and
data, or train), seeds, metric and mode, keys and plain-data values, factor levels, the baseline
and tuning spaces. The checks that need the functions receiving the settings (accepted keys,
types, required arguments) are in :mod:`ablate.resolve`; the rest of tuning's in
:mod:`ablate.tuning`. Standard library only.
"""

from __future__ import annotations

import difflib
import inspect
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from ablate.config import plain_json

ADAPTIVE_SEEDS = (3, 12)  # seeds="adaptive": the default min_seeds and max_seeds
MAX_ADAPTIVE_SEEDS = 50  # the most seeds an adaptive study may plan per variant
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MAX_WORDS = ("acc", "f1", "auc", "precision", "recall", "score", "iou", "bleu", "top1", "top5")
_MIN_WORDS = ("loss", "err", "bpc", "ppl", "perplexity", "mse", "mae", "nll", "time", "seconds")


class StudyError(ValueError):
    """An invalid study, found before anything was trained. The message names the fix."""


# ------------------------------------------------------------------------------ the study
def check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-._") or "my-study"
        raise StudyError(
            f"study name {name!r} can't be used as an MLflow experiment name and report "
            f"folder. Fix: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, e.g. name={suggestion[:100]!r}."
        )


def check_parts(name: str, model: Any, data: Any, train: Any) -> None:
    """Either model= and data= (the built-in loop) or train=fn, each callable."""
    if train is not None:
        if model is not None or data is not None:
            raise StudyError(
                f"study {name!r} passes both train= and model=/data=. Fix: pass either "
                f"model= and data= (the built-in training loop) or train=fn (your own loop)."
            )
        if not callable(train):
            raise StudyError(f"train={train!r} is not callable. Fix: pass a function "
                             f"train(config, run).")
        _check_train_signature(train)
        return
    if model is None or data is None:
        missing = "model=" if model is None else "data="
        raise StudyError(
            f"study {name!r} has no {missing}. Fix: pass model= and data= (callables that "
            f"build the model and the data from the model.* and data.* settings), or "
            f"train=fn for your own training code."
        )
    for what, fn in (("model", model), ("data", data)):
        if not callable(fn):
            raise StudyError(f"{what}={fn!r} is not callable. Fix: pass a class or function, "
                             f"e.g. {what}=ConvNet.")


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


def check_seeds(seeds: int | Sequence[int] | str) -> tuple[int, ...]:
    if isinstance(seeds, str):
        raise StudyError(f"seeds={seeds!r}: give a count (seeds=3), a list of seeds, or "
                         f"'adaptive'.")
    if isinstance(seeds, bool):
        raise StudyError(f"seeds={seeds!r}: give a count (seeds=3) or a list of seeds.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise StudyError(f"seeds={seeds}: a study needs at least one seed. Fix: seeds=3.")
        return tuple(range(seeds))
    # any value may arrive at run time (seeds=3.0): the loop below checks each one
    values: tuple[Any, ...] = tuple(seeds) if is_seq(seeds) else (seeds,)
    if not values:
        raise StudyError("seeds=[]: a study needs at least one seed. Fix: seeds=3.")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise StudyError(f"seed {s!r} is not a non-negative integer. Fix: seeds=[0, 1, 2].")
    if len(set(values)) != len(values):
        raise StudyError(f"seeds={list(values)} repeats a seed. Fix: list each seed once.")
    return values


def check_adaptive(
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


def check_mode(metric: str, mode: str | None) -> Literal["max", "min"]:
    """``mode``, or the one the metric's name implies (``*acc*`` -> max, ``*loss*`` -> min)."""
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


def check_min_effect(min_effect: float | None) -> float | None:
    if min_effect is None:
        return None
    if isinstance(min_effect, bool) or not isinstance(min_effect, (int, float)) \
            or not 0 < min_effect < math.inf:
        raise StudyError(f"min_effect={min_effect!r}: give the smallest effect that matters, a "
                         f"positive number in the metric's units, e.g. min_effect=0.01.")
    return float(min_effect)


# -------------------------------------------------------------------------- keys and values
def check_key(key: Any, where: str, dotted: bool = True) -> None:
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


def check_plain(value: Any, where: str) -> None:
    try:
        plain_json(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(
            f"{where} is not plain data ({exc}). Fix: config values and levels must be numbers, "
            f"strings, bools, None, or tuples/lists/dicts of those, so they can be logged and "
            f"hashed; pass functions and classes as model=, data= or inside train=."
        ) from None


def check_levels(factors: Any, dotted: bool) -> None:
    """Each factor: a key, and a list of two or more distinct, hashable, plain-data levels."""
    if not isinstance(factors, Mapping):
        raise StudyError("factors must be a dict of dotted key -> list of levels.")
    for key, levels in factors.items():
        check_key(key, "factor", dotted)
        if isinstance(levels, (str, bytes)) or not is_seq(levels):
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
            check_plain(level, f"level {level!r} of factor {key!r}")
        dupes = sorted({repr(x) for x in levels if count(levels, x) > 1})
        if dupes:
            raise StudyError(
                f"factor {key!r} lists level(s) {', '.join(dupes)} more than once. Fix: list "
                f"each level once."
            )


def resolve_baseline(
    factors: Mapping[str, Sequence[Any]], baseline: Mapping[str, Any]
) -> dict[str, Any]:
    """Factor key -> its baseline level: ``baseline``'s where given, else the first level."""
    for key, value in baseline.items():
        if key not in factors:
            raise StudyError(
                f"baseline names {key!r}, which is not a factor"
                f"{did_you_mean(key, list(factors))} Factors: {', '.join(factors)}."
            )
        if not contains(factors[key], value):
            raise StudyError(
                f"baseline value {value!r} for {key!r} is not one of its levels "
                f"{list(factors[key])!r}. Fix: add it to the levels or pick one of them."
            )
    return {k: baseline.get(k, levels[0]) for k, levels in factors.items()}


def check_space(key: str, space: Any) -> None:
    """A tuning space: ``("log"|"float"|"int", low, high)`` or a list of two or more choices."""
    fix = (f"Fix: Tuning(space={{{key!r}: ('log', 1e-4, 1e-1)}}) (or 'float'/'int' with "
           f"low < high), or a list of choices such as [0, 1e-5, 1e-4].")
    if isinstance(space, list):
        if len(space) < 2:
            raise StudyError(f"Tuning.space[{key!r}] lists {len(space)} choice(s). {fix}")
        check_plain(space, f"Tuning.space[{key!r}]")
        return
    ok = (isinstance(space, tuple) and len(space) == 3 and space[0] in ("log", "float", "int")
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in space[1:])
          and space[1] < space[2])
    if ok and space[0] == "log" and space[1] <= 0:
        ok = False
    if ok and space[0] == "int" and not all(isinstance(x, int) for x in space[1:]):
        ok = False
    if not ok:
        raise StudyError(f"Tuning.space[{key!r}] = {space!r} is not a search space. {fix}")


# --------------------------------------------------------------------------------- helpers
def did_you_mean(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not near:  # also match on the last dotted part: batchnorm -> model.batch_norm
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        near = [tails[t] for t in difflib.get_close_matches(key.rsplit(".", 1)[-1], tails, n=1)]
    return f"; did you mean {near[0]!r}?" if near else "."


def is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def eq(a: Any, b: Any) -> bool:
    """Level equality that keeps True != 1 and 1 != 1.0 (they log differently)."""
    return type(a) is type(b) and a == b


def count(levels: Sequence[Any], x: Any) -> int:
    return sum(eq(x, y) for y in levels)


def contains(levels: Sequence[Any], x: Any) -> bool:
    return count(levels, x) > 0


def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


TIMEOUT = "train.timeout"  # seconds per trial; bounds a trial without changing its result


def check_timeout(value: Any, factors: Iterable[str] = ()) -> float | None:
    """``train.timeout``: None (no bound) or a positive number of seconds. It bounds every trial
    of the study and never changes a result, so it is no factor, no param and no part of an id."""
    if TIMEOUT in factors:
        raise StudyError(f"{TIMEOUT} can't be a factor: it bounds how long each trial may run "
                         f"and changes no result. Fix: set it in config= or with --set "
                         f"{TIMEOUT}=SECONDS.")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise StudyError(f"{TIMEOUT}={value!r}: give the most seconds a trial may run, a "
                         f"positive number (e.g. 3600), or None for no bound.")
    return float(value)


# MLflow's rules for a param name (mlflow.utils.validation): these characters, at most 250 of
# them, and no path that resolves to another name. Checked when the study is made, so a key MLflow
# would refuse fails before anything is written, not in the middle of ``ablate run``.
_PARAM_NAME = re.compile(r"^[/\w.\- :]*$")
MAX_PARAM_NAME = 250


def check_param_names(keys: Iterable[str]) -> None:
    """Every setting is logged as an MLflow param: its key must be a name MLflow accepts."""
    for key in keys:
        norm = posixpath.normpath(key) if key else ""
        if not _PARAM_NAME.match(key):
            bad = "".join(sorted({c for c in key if not _PARAM_NAME.match(c)}))
            why = f"it contains {bad!r}, and MLflow's param names may only contain letters, " \
                  f"digits, _ - . : / and spaces"
        elif len(key) > MAX_PARAM_NAME:
            why = f"it is {len(key)} characters long, and MLflow's param names have at most " \
                  f"{MAX_PARAM_NAME}"
        elif norm != key or norm == "." or norm.startswith(("..", "/")):
            why = f"MLflow reads a param name as a path, and this one resolves to {norm!r}"
        else:
            continue
        raise StudyError(f"setting {key!r} can't be logged to MLflow: {why}. Fix: rename it "
                         f"(e.g. {_renamed(key)!r}). Nothing was written.")


def _renamed(key: str) -> str:
    name = posixpath.normpath(re.sub(r"[^/\w.\- :]", "_", key)).lstrip("./") or "name"
    return name[:MAX_PARAM_NAME]

