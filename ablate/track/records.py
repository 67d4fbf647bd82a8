"""What reads of the store yield: statuses, a trial's record, a plan's runs, one run a trial."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("finished", "diverged", "failed", "timed out", "running")
DONE = ("finished", "diverged")  # a trial with one of these statuses is never trained again
# What each trial records about the code and machine it was trained with (tags ablate.env.*).
ENVIRONMENT = ("ablate", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn",
               "platform", "cpu", "gpu", "threads", "device")
MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED",
                 "timed out": "FAILED"}
SUMMARY = ("n_params", "flops_per_sample", "train_seconds", "peak_mem_mb", "epochs")


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    status: str
    code: str = ""  # the code fingerprint it was trained with
    data: str = ""  # the fingerprint of the data it was trained on (built-in loop)
    kept: str = ""  # "<code>/<data>" that --keep-changed accepted it for, if it did

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class PlanRuns:
    experiment_id: str
    parent_run_id: str  # the parent run of the plan
    plan: str = ""  # the plan's id
    variants: Mapping[str, str] = field(default_factory=dict)  # variant id -> its variant run


def replaced(run: Any) -> bool:
    """A run that ``--rerun-changed`` replaced: kept, never read again."""
    return run.data.tags.get("ablate.replaced") == "true"


def pick(runs: Iterable[Any]) -> dict[tuple[str, int], Any]:
    """One run per (variant id, seed): a finished or diverged one if any (the newest of those),
    else the newest. Two runs of one trial only arise from stores written before trials were
    locked, or by a concurrent creation; reads must still be deterministic."""
    best: dict[tuple[str, int], Any] = {}
    for run in runs:
        tags = run.data.tags
        key = (tags["ablate.variant"], int(tags["ablate.seed"]))
        rank = (tags.get("ablate.status") in DONE, run.info.start_time or 0, run.info.run_id)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, run)
    return {k: run for k, (_, run) in best.items()}


def record_of(run: Any) -> TrialRecord:
    """A trial run's record: its id, status, code and data fingerprints, and what
    ``--keep-changed`` accepted it for."""
    tags = run.data.tags
    return TrialRecord(run.info.run_id, tags.get("ablate.status", ""), tags.get("ablate.code", ""),
                       tags.get("ablate.data", ""), tags.get("ablate.kept", ""))
