"""Tuning: a study's per-variant search settings, checked, and their part of each variant id.

A study gets them as ``Study(tuning=Tuning(...))``. The search itself (Optuna) is
:mod:`ablate.train.search`; :mod:`ablate.execute.tuning` runs it for each variant before its
trials. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ablate.validate import StudyError, check_key, check_plain, check_space, did_you_mean


@dataclass(frozen=True)
class Tuning:
    """Per-variant tuning: each variant first gets its own Optuna (TPE) search with the same
    budget, and its seeds then train with the best values found (a fair comparison).

    Args:
        space: dotted key -> ``("log"|"float"|"int", low, high)`` or a list of choices; empty:
            no tuning.
        trials: tuning trials per variant.
        epochs: ``train.epochs`` of each tuning trial (built-in loop only); None: the study's.
        config: other settings of the tuning trials, over the variant's config.
        seed: the seed every tuning trial trains with; the sampler is seeded with it plus the
            number of finished tuning trials.
    """

    space: Mapping[str, Any] = field(default_factory=dict)
    trials: int = 20
    epochs: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    @property
    def settings(self) -> dict[str, Any]:
        """What each tuning trial sets over the variant's config: :attr:`config`, and
        ``train.epochs`` where :attr:`epochs` is given."""
        if self.epochs is None:
            return dict(self.config)
        return {**self.config, "train.epochs": self.epochs}

    def identity(self) -> dict[str, Any]:
        """What each variant id also hashes when variants are tuned (nothing when not)."""
        if not self.space:
            return {}
        return {"ablate.tune": {"space": self.space, "trials": self.trials,
                                "config": self.settings, "seed": self.seed}}


# Study's keywords before Tuning -> the Tuning field that replaced each.
FLAT_KEYWORDS = {"tune": "space", "tune_trials": "trials", "tune_epochs": "epochs",
                 "tune_config": "config", "tune_seed": "seed"}


def tuning_of(tuning: Tuning | None, flat: Mapping[str, Any] | None = None,
              keywords: Iterable[str] = ()) -> Tuning:
    """``tuning=`` checked to be a :class:`Tuning` (its mappings as dicts; None: no tuning).

    ``flat``: any other keywords ``Study`` was given. The flat tuning keywords of earlier
    versions (``tune=``, ``tune_trials=``, ...) fail with the ``Tuning(...)`` that replaces them;
    any other is a TypeError, as for any function, naming the nearest of ``keywords`` (the
    ones ``Study`` takes) when one is close."""
    flat = dict(flat or {})
    old = [k for k in flat if k in FLAT_KEYWORDS]
    if old:
        fields = ", ".join(f"{FLAT_KEYWORDS[k]}={flat[k]!r}" for k in old)
        raise StudyError(f"{'=, '.join(old)}= are no longer Study arguments: the tuning settings "
                         f"are one value. Fix: tuning=Tuning({fields}) (from ablate import "
                         f"Tuning).")
    if flat:
        key = next(iter(flat))
        raise TypeError(f"Study() got an unexpected keyword argument {key!r}"
                        + did_you_mean(key, keywords))
    if tuning is None:
        return Tuning()
    if not isinstance(tuning, Tuning):
        raise StudyError(f"tuning={tuning!r} is not a Tuning. Fix: tuning=Tuning(space="
                         f"{{'train.lr': ('log', 1e-4, 1e-1)}}, trials=20).")
    return replace(tuning, space=dict(tuning.space or {}), config=dict(tuning.config or {}))


def check_tuning(tuning: Tuning, dotted: bool, factors: Mapping[str, Any]) -> None:
    """``tuning``'s space, budget, seed, epochs and settings (the keys of the built-in loop
    are checked against the parts that receive them by the study, :func:`ablate.resolve
    .check_keys`)."""
    if not tuning.space:
        if tuning.epochs is not None or tuning.config:
            raise StudyError("Tuning(epochs=/config=) is set but its space is empty. Fix: add "
                             "space={'train.lr': ('log', 1e-4, 1e-1)} or remove them.")
        return
    if isinstance(tuning.trials, bool) or not isinstance(tuning.trials, int) or tuning.trials < 1:
        raise StudyError(f"Tuning(trials={tuning.trials!r}): give a positive number of "
                         f"tuning trials per variant, e.g. trials=20.")
    if isinstance(tuning.seed, bool) or not isinstance(tuning.seed, int) or tuning.seed < 0:
        raise StudyError(f"Tuning(seed={tuning.seed!r}): give a non-negative integer.")
    if tuning.epochs is not None:
        if not dotted:
            raise StudyError("Tuning(epochs=) sets train.epochs of the built-in loop. Fix: with "
                             "train=fn pass Tuning(config={'<your epochs key>': N}).")
        if isinstance(tuning.epochs, bool) or not isinstance(tuning.epochs, int) \
                or tuning.epochs < 1:
            raise StudyError(f"Tuning(epochs={tuning.epochs!r}): give a positive integer.")
    for key, value in tuning.settings.items():
        check_key(key, "Tuning.config", dotted)
        check_plain(value, f"Tuning.config[{key!r}]")
    for key, space in tuning.space.items():
        check_key(key, "Tuning.space", dotted)
        if key in factors:
            raise StudyError(f"Tuning.space key {key!r} is also a factor. Fix: tune a setting "
                             f"the factors don't vary (e.g. train.lr), or drop the factor.")
        check_space(key, space)
