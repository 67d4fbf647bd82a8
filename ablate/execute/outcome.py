"""What running a trial yields, shared by the driver and every backend: one module, no siblings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ablate.study import Study, Trial

MAX_RETRIES = 3  # times a trial whose process died is resumed (from its checkpoint)
TIMED_OUT = "timed out"  # the status of a trial ended by train.timeout (counted like failed)

# Reply statuses that stop the study (raised again in the driver, as in process):
STUDY_ERROR = "study-error"  # the study itself is wrong (e.g. the metric is never logged)
TRACKING_ERROR = "tracking-error"  # the store went away mid-study
ENVIRONMENT_ERROR = "environment-error"  # e.g. an unwritable checkpoint directory
DIED = "died"  # the process running the trial died (killed for memory, a node lost): retried


@dataclass(frozen=True)
class Outcome:
    """What happened to one trial in this ``ablate run``."""

    trial: Trial
    status: str  # finished | diverged | failed | timed out | skipped (done before) |
    # elsewhere (another runner of the store trained it while this one waited)
    run_id: str | None = None
    value: float | None = None  # final value of the study metric
    error: str | None = None


class Reply(NamedTuple):
    """What a backend sends back for one trial: small and picklable (a worker's, a Ray task's).

    ``status``: an :class:`Outcome` status, or one of the stop statuses above, or :data:`DIED`
    (``retry``: whether another attempt may resume it; Ray retries dead tasks itself)."""

    status: str
    run_id: str | None = None
    value: float | None = None
    error: str | None = None
    retry: bool = False


class TrialTimeout(BaseException):
    """Raised inside a trial that ran past its ``train.timeout`` (by the alarm of
    :func:`ablate.execute.trial.time_limit`). A ``BaseException``, like Ctrl-C's, so that
    training code's own ``except Exception`` does not swallow it; its argument is the bound."""


def timeout_of(study: Study) -> float | None:
    """The bound on each of the study's trials in seconds (``train.timeout``), or None."""
    value = getattr(study, "timeout", None)
    return float(value) if value else None


def timeout_message(seconds: float) -> str:
    return (f"TrialTimeout: the trial ran longer than train.timeout={seconds:g} s and was "
            f"stopped. Fix: raise train.timeout if it needs longer; the next `ablate run` "
            f"retries it once under the same bound.")
