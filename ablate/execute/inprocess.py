"""The in-process backend: one trial after another in the ``ablate run`` process itself."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from ablate.execute.outcome import Reply
from ablate.execute.record import OnLog
from ablate.execute.trial import train_trial
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker


class InProcess:
    """Trains each submitted trial when the driver waits for it, here, with a live per-epoch
    progress (``on_trial_start``, ``on_log``). A trial's ``train.timeout`` is an alarm in this
    process; Ctrl-C interrupts the trial itself (its run is marked KILLED, resumable)."""

    slots = 1
    bounds_itself = True

    def __init__(self, tracker: Tracker, root: Path, *,
                 on_trial_start: Callable[[Trial, int], None] | None = None,
                 on_log: OnLog | None = None) -> None:
        self.tracker, self.root = tracker, root
        self.on_trial_start, self.on_log = on_trial_start, on_log
        self.study: Study | None = None
        self.runs: PlanRuns | None = None
        self.pending: dict[str, tuple[Trial, float | None]] = {}
        self.index: dict[str, int] = {}

    def start(self, study: Study, runs: PlanRuns) -> None:
        self.study, self.runs = study, runs
        self.index = {t.key: i for i, t in enumerate(study.trials)}

    def submit(self, trial: Trial, timeout: float | None) -> Hashable:
        self.pending[trial.key] = (trial, timeout)
        return trial.key

    def wait(self, handles: Sequence[Hashable],
             timeout: float | None) -> list[tuple[Hashable, Any]]:
        assert self.study is not None and self.runs is not None
        key = str(handles[0])
        trial, bound = self.pending.pop(key)
        if self.on_trial_start is not None:
            self.on_trial_start(trial, self.index.get(key, 0))
        outcome = train_trial(self.study, trial, self.tracker, self.runs, self.root,
                              on_log=self.on_log, timeout=bound)
        return [(key, Reply(outcome.status, outcome.run_id, outcome.value, outcome.error))]

    def began(self, handle: Hashable) -> float | None:
        return None  # bounds itself: the driver keeps no deadline

    def cancel(self, handles: Sequence[Hashable]) -> None:
        for handle in handles:  # nothing runs between waits
            self.pending.pop(str(handle), None)
