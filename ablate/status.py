"""A trial's statuses (the ``ablate.status`` tag) and the one rule for whether a trial is done."""

from __future__ import annotations

from typing import Literal, Protocol, get_args

Status = Literal["finished", "diverged", "failed", "timed out", "running"]
"""``finished``; ``diverged`` (the loss became NaN/inf: a result, not an error); ``failed`` (an
exception: retried by the next ``ablate run``); ``timed out`` (ran past ``train.timeout``:
counted like failed, and retried the same way); ``running`` (training, or its process died:
resumed from its checkpoint)."""

STATUSES: tuple[Status, ...] = get_args(Status)
DONE: tuple[Status, ...] = ("finished", "diverged")  # never trained again
LOST: tuple[Status, ...] = ("failed", "timed out")  # no result: counted as failed, retried


class HasStatus(Protocol):
    @property
    def status(self) -> str: ...


def is_done(record: str | HasStatus | None) -> bool:
    """True for a trial that is never trained again: its status (or its record's, e.g. a
    :class:`ablate.track.TrialRecord`; None for no record) is finished or diverged."""
    status = record if record is None or isinstance(record, str) else record.status
    return status in DONE
