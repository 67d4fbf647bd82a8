"""Build every variant's model on the meta device: a bad level fails at plan time, not mid-study."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ablate.config import DATA_DERIVED, canonical
from ablate.resolve import required_parameters
from ablate.study import Study
from ablate.validate import StudyError

# Stand-ins for values the data provides at run time, used only for the meta-device check.
_PLACEHOLDERS: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 3,
    "image_size": 32,
    "vocab_size": 64,
    "in_features": 16,
}


def check_models(study: Study) -> int:
    """Construct each distinct model config once on ``torch.device("meta")`` (no memory used).

    Returns the number of distinct models built. Raises :class:`StudyError` naming the variant.
    """
    if not study.uses_builtin_loop:
        return 0
    _check_devices(study)
    built: set[str] = set()
    for variant in study.variants:
        model = study.model_for(variant.config)  # its task's, else the study's
        assert model is not None
        kwargs = study.model_kwargs(variant.config)
        key = _fn_key(study.model, model) + canonical(kwargs)
        if key in built:
            continue
        required = set(required_parameters(model)) & set(DATA_DERIVED)
        filled = {**{k: _PLACEHOLDERS[k] for k in required if k not in kwargs}, **kwargs}
        try:
            with torch.device("meta"):
                model(**filled)
        except Exception as exc:
            name = getattr(model, "__name__", repr(model))
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise StudyError(
                f"variant {_named(variant)} ({variant.id}) can't be built: {name}({args}) raised "
                f"{type(exc).__name__}: {exc}. Fix: change that level, or exclude the variant "
                f"with constraints=."
            ) from None
        built.add(key)
    return len(built)


def _check_devices(study: Study) -> None:
    """A train.device this machine doesn't have fails now, not in every trial."""
    for variant in study.variants:
        name = str(variant.config.get("train.device", "auto"))
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise StudyError(
                f"train.device={name!r} (variant {variant.label!r}), but CUDA is not available "
                f"on this machine. Fix: --set train.device=auto (CUDA where there is one, else "
                f"the CPU) or cpu."
            )
        if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
            raise StudyError(
                f"train.device={name!r} (variant {variant.label!r}), but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s). Fix: use cuda:0 ... or auto."
            )
        if name == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
            raise StudyError(f"train.device='mps' (variant {variant.label!r}), but MPS is not "
                             f"available here. Fix: --set train.device=auto.")


def check_data(study: Study) -> dict[str, str]:
    """Build each distinct data config once, so a missing file fails now, not mid-study, and
    fingerprint what it loaded (see :func:`ablate.data.fingerprint.data_fingerprint`).

    Returns variant id -> the fingerprint of its data (``{}`` for a ``train=fn`` study), the
    value each trial of the variant records as ``ablate.data``. Each config is loaded as a trial
    loads it: with the variant's ``train.threads`` and the RNGs seeded with the plan's first
    seed (a data function that draws from the global RNG gives the first seed's data). Raises
    :class:`StudyError` naming the variant and the data factory's own message (which says where
    the files go).
    """
    if not study.uses_builtin_loop:
        return {}
    from ablate.config import RUN_DEFAULTS
    from ablate.data.fingerprint import data_fingerprint
    from ablate.train.loop import factory_kwargs

    seed = study.seeds[0] if study.seeds else 0
    loaded: dict[str, str] = {}  # canonical data config and threads -> fingerprint
    out: dict[str, str] = {}
    for variant in study.variants:
        kwargs = factory_kwargs(variant.config, "data")
        threads = int(variant.config.get("train.threads", RUN_DEFAULTS["train.threads"]))
        data_fn = study.data_for(variant.config)
        assert data_fn is not None  # a model/data study has one for every task
        key = f"{_fn_key(study.data, data_fn)}{canonical(kwargs)}|{threads}"
        if key in loaded:
            out[variant.id] = loaded[key]
            continue
        name = getattr(data_fn, "__name__", repr(data_fn))
        try:
            with _as_in_a_trial(threads, seed):
                data = data_fn(**kwargs)
        except Exception as exc:
            raise StudyError(
                f"the data for variant {_named(variant)} can't be loaded: {name} raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if getattr(data, "task", None) not in ("classification", "language_model"):
            raise StudyError(
                f"data={name} returned {type(data).__name__}, which the built-in training loop "
                f"can't train on. Fix: return ablate.data.ImageData (e.g. from image_folder() or "
                f"from_arrays() on images), ArrayData (from_arrays() on other inputs) or "
                f"TextData (text()), or pass train=fn to train on anything else."
            )
        _check_metric(study, data)
        same = canonical(kwargs)
        _check_forward(study, data, [v for v in study.variants
                                     if canonical(factory_kwargs(v.config, "data")) == same
                                     and study.data_for(v.config) is data_fn])
        loaded[key] = out[variant.id] = data_fingerprint(data)
    return out


def _named(variant: Any) -> str:
    """``'baseline'``, or ``'baseline' of task 'rows'`` in a study with tasks."""
    return repr(variant.label) + (f" of task {variant.task!r}" if variant.task else "")


def _fn_key(own: Any, fn: Any) -> str:
    """A model or data function's part of a config's key: "" for the study's own ``own`` (so
    a study without tasks keys its configs as before), else which function it is."""
    return "" if fn is own else f"{id(fn)}|"


REAL_FORWARD_PARAMS = 20_000_000  # a model this small is tried on the CPU for real


def _where_to_try(model: Any, kwargs: dict[str, Any], x: torch.Tensor) -> torch.device:
    """Where to try a model on two inputs: for real on the CPU (milliseconds) when it has at
    most :data:`REAL_FORWARD_PARAMS` parameters (counted on the meta device, which allocates
    nothing) or its inputs are integers (meta kernels don't check dtypes: ids into an
    embedding, or features into a float layer, which fails); else on the meta device (no
    memory, no compute, but its first use costs about a second of setup)."""
    if x.dtype == torch.int64:
        return torch.device("cpu")
    with torch.device("meta"):
        size = sum(p.numel() for p in model(**kwargs).parameters())
    return torch.device("cpu" if size <= REAL_FORWARD_PARAMS else "meta")


def _check_forward(study: Study, data: Any, variants: list[Any]) -> None:
    """Each distinct model of ``variants`` takes two inputs of ``data``, so a model and data that
    don't fit (integer features into a float layer, a wrong input size) fail now, once, not in
    every trial."""
    if data.task != "classification":
        return  # a language model's forward takes its hidden state: the loop's own business
    from ablate.train.loop import model_kwargs

    try:
        x = next(iter(data.val_batches()))[0][:2].cpu()
    except Exception:  # no validation batch to try: the trial will say
        return
    tried: set[str] = set()
    for variant in variants:
        model = study.model_for(variant.config)  # its task's, else the study's
        assert model is not None
        kwargs = model_kwargs(model, variant.config, data.model_kwargs)
        key = _fn_key(study.model, model) + repr(sorted(kwargs.items()))
        if key in tried:
            continue
        tried.add(key)
        try:
            where = _where_to_try(model, kwargs, x)
            # (a model built on the CPU draws its weights: the caller's RNG is left as it was)
            with torch.random.fork_rng(devices=[]), torch.device(where), torch.no_grad():
                model(**kwargs)(x.to(where))
        except Exception as exc:
            name = getattr(model, "__name__", repr(model))
            fix = ("change the model or the data so that they fit, or exclude the variant with "
                   "constraints=")
            if x.dtype == torch.int64 and "dtype" in str(exc):
                fix = ("the inputs are int64 (integer features are kept as token ids): convert "
                       "numeric features to float before from_arrays (x.astype('float32')), or "
                       "pass a model that embeds ids (one taking vocab_size)")
            raise StudyError(
                f"variant {_named(variant)}: {name} can't take this data's inputs "
                f"({x.dtype} {list(x.shape[1:])} per sample): {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}. Fix: {fix}. Nothing was trained."
            ) from None


@contextlib.contextmanager
def _as_in_a_trial(threads: int, seed: int) -> Iterator[None]:
    """torch's thread count and the RNGs as a trial of ``seed`` has them when it loads its data
    (a parallel reduction's last bits depend on the thread count); both restored after."""
    import random

    import numpy as np

    from ablate.train.run import seed_everything

    saved = (torch.get_num_threads(), random.getstate(), np.random.get_state(),
             torch.get_rng_state())
    torch.set_num_threads(threads)
    seed_everything(seed)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])
        torch.set_rng_state(saved[3])


def _check_metric(study: Study, data: Any) -> None:
    """The study metric must be one the built-in loop logs for this data's task."""
    import difflib

    from ablate.train.loop import LOGGED

    logged = LOGGED[data.task]
    if study.metric in logged or study.metric.startswith(("act_mean/", "act_std/")):
        return
    near = difflib.get_close_matches(study.metric, logged, n=1)
    raise StudyError(
        f"metric={study.metric!r} is never logged by the built-in loop for "
        f"{type(data).__name__} ({data.task}){f'; did you mean {near[0]!r}?' if near else '.'} "
        f"It logs: {', '.join(logged)}. Fix: set metric= to one of them."
    )
