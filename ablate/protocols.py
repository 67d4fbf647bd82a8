"""The signature a study's ``train=fn`` must have, for type checkers (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ablate.train.run import Run

__all__ = ["TrainFn"]


class TrainFn(Protocol):
    """What ``Study(train=fn)`` calls once per trial, positionally: ``fn(config, run)``.

    ``config`` is the trial's resolved config (a fresh dict; its keys are yours), ``run`` the
    trial's :class:`~ablate.Run` handle (``run.log``, ``run.seed``, ``run.device``,
    checkpoints). It trains, logs through ``run`` and returns nothing; raising marks the trial
    ``failed``, a NaN/inf loss logged through ``run`` marks it ``diverged``. The names of the
    two parameters are free, hence positional-only here. Any callable that binds two positional
    arguments passes the study's check (``ablate.study``); this is the stricter, typed face.
    """

    def __call__(self, config: dict[str, Any], run: Run, /) -> None: ...
