"""Build every variant's model on the meta device: a bad level fails at plan time, not mid-study."""

from __future__ import annotations

from typing import Any

import torch

from ablate.study import DATA_DERIVED, Study, StudyError, canonical, required_parameters

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
    assert study.model is not None
    required = set(required_parameters(study.model)) & set(DATA_DERIVED)
    built: set[str] = set()
    for variant in study.variants:
        kwargs = study.model_kwargs(variant.config)
        key = canonical(kwargs)
        if key in built:
            continue
        filled = {**{k: _PLACEHOLDERS[k] for k in required if k not in kwargs}, **kwargs}
        try:
            with torch.device("meta"):
                study.model(**filled)
        except Exception as exc:
            name = getattr(study.model, "__name__", repr(study.model))
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise StudyError(
                f"variant {variant.label!r} ({variant.id}) can't be built: {name}({args}) raised "
                f"{type(exc).__name__}: {exc}. Fix: change that level, or exclude the variant "
                f"with constraints=."
            ) from None
        built.add(key)
    return len(built)


def check_data(study: Study) -> int:
    """Build each distinct data config once, so a missing file fails now, not mid-study.

    Returns the number of distinct data configs loaded. Raises :class:`StudyError` naming the
    variant and the data factory's own message (which says where the files go).
    """
    if not study.uses_builtin_loop:
        return 0
    from ablate.train.loop import factory_kwargs

    assert study.data is not None
    loaded: set[str] = set()
    for variant in study.variants:
        kwargs = factory_kwargs(variant.config, "data")
        key = canonical(kwargs)
        if key in loaded:
            continue
        name = getattr(study.data, "__name__", repr(study.data))
        try:
            data = study.data(**kwargs)
        except Exception as exc:
            raise StudyError(
                f"the data for variant {variant.label!r} can't be loaded: {name} raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if getattr(data, "task", None) not in ("classification", "language_model"):
            raise StudyError(
                f"data={name} returned {type(data).__name__}, which the built-in training loop "
                f"can't train on. Fix: return ablate.data.ImageData (e.g. from image_folder() or "
                f"from_arrays() on images), ArrayData (from_arrays() on other inputs) or "
                f"TextData (text()), or pass train=fn to train on anything else."
            )
        loaded.add(key)
    return len(loaded)
