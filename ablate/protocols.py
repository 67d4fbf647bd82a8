"""What ablate calls of your code, for type checkers (no torch at import): the signature of a
study's ``train=fn``, and what its ``data=fn`` must return for the built-in loop."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from ablate.train.run import Run

__all__ = ["Data", "TrainFn"]


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


@runtime_checkable
class Data(Protocol):
    """What the built-in loop needs of what ``Study(data=fn)`` returns: ``ImageData``,
    ``ArrayData`` and ``TextData`` of :mod:`ablate.data` are three.

    The loop moves the data to the trial's device once (:meth:`to`), builds the model with
    :attr:`model_kwargs` filling the arguments the config leaves out, draws each epoch's
    :meth:`train_batches` and evaluates on :meth:`val_batches`, whose first batch is also the
    fixed batch of the activation statistics. Batches are ``(inputs, targets)`` already on
    :attr:`device`; the model's output and the targets go to cross-entropy.
    """

    @property
    def task(self) -> str:
        """``"classification"`` (logs accuracy) or ``"language_model"`` (stateful BPTT; logs
        bits per character and perplexity)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""
        ...

    @property
    def model_kwargs(self) -> Mapping[str, Any]:
        """What the data knows of the model's arguments (``num_classes``, ``in_channels``,
        ``image_size``, ``vocab_size``, ``in_features``: :data:`ablate.config.DATA_DERIVED`)."""
        ...

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch of :meth:`train_batches` (the schedules count steps)."""
        ...

    def to(self, device: torch.device | str) -> Data:
        """The same data on ``device``."""
        ...

    def train_batches(self, *, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor,
                                                                      torch.Tensor]]:
        """One epoch's training batches, in an order that depends only on (seed, epoch)."""
        ...

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation batches, in a fixed order."""
        ...
