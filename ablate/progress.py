"""Terminal output of ``ablate run``: progress bars while training, a summary at the end.

On a terminal: a bar for the study (trials done / total, current label) and one for the epochs
of the current trial (loss, metric), drawn by rich. Elsewhere (CI, a log file): one line per
trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ablate.study import Study, Trial

if TYPE_CHECKING:
    import pandas as pd

    from ablate.execute import Outcome
    from ablate.track import PlanRuns


class StudyProgress:
    def __init__(self, study: Study, console: Console | None = None) -> None:
        self.study = study
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.live,
        )
        self.total = len(study.trials)
        self.done = 0
        self.study_task = self.progress.add_task(f"study {study.name}", total=self.total, info="")
        self.epoch_task: Any = None

    def __enter__(self) -> StudyProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def round_started(self, study: Study) -> None:
        """A round of an adaptive study: the bar counts the trials scheduled so far (each
        round goes over them again, skipping those done)."""
        counts = sorted({len(study.seeds_of(v)) for v in study.variants})
        self.total, self.done = len(study.trials), 0
        self.progress.update(self.study_task, total=self.total, completed=0)
        seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        line = f"adaptive round: {self.total} trials scheduled, {seeds} seeds per variant"
        self._say(line)

    def workers_started(self, workers: int) -> None:
        """Trials train in worker processes: no per-epoch bar, a line per trial as it ends."""
        self._say(f"{workers} worker processes train the pending trials, one each at a time "
                  f"(--workers 1: one after another in this process)")

    def note(self, line: str) -> None:
        """A line from the driver (a trial held by another runner of the store, ...)."""
        self._say(line)

    def _say(self, line: str) -> None:
        if self.live:
            self.progress.console.print(line, highlight=False, markup=False)
        else:
            print(line, flush=True)

    def trial_started(self, trial: Trial, index: int) -> None:
        self.progress.update(self.study_task, info=f"{trial.variant.label} seed {trial.seed}")
        if self.epoch_task is not None:
            self.progress.remove_task(self.epoch_task)
        epochs = trial.variant.config.get("train.epochs")
        self.epoch_task = self.progress.add_task(
            "  epochs", total=epochs if isinstance(epochs, int) else None, info=""
        )

    def logged(self, metrics: dict[str, float], step: int) -> None:
        if self.epoch_task is None:
            return
        shown = {k: v for k, v in metrics.items() if k in ("train_loss", self.study.metric)}
        info = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
        self.progress.update(self.epoch_task, completed=step + 1, info=info)

    def trial_ended(self, outcome: Outcome) -> None:
        self.done += 1
        self.progress.update(self.study_task, completed=self.done)
        if outcome.status in ("skipped", "elsewhere"):
            return
        value = "" if outcome.value is None else f"  {self.study.metric}={outcome.value:.4g}"
        line = (f"[{self.done}/{self.total}] {outcome.trial.variant.label} seed "
                f"{outcome.trial.seed}: {outcome.status}{value}")
        if outcome.error:
            line += f"  ({outcome.error.strip().splitlines()[-1][:200]})"
        self._say(line)


def print_summary(
    study: Study,
    table: pd.DataFrame,
    outcomes: Sequence[Outcome],
    runs: PlanRuns,
    uri: str,
    console: Console | None = None,
    report: str | None = None,
) -> None:
    """Trials by status, the study metric per variant (mean over seeds), where to look next."""
    from ablate.track import runs_url, ui_hint, ui_host

    console = console or (Console() if Console().is_terminal else Console(width=160))
    trained = sum(o.status in ("finished", "diverged", "failed", "timed out") for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    elsewhere = sum(o.status == "elsewhere" for o in outcomes)
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    console.print(
        f"\nstudy {study.name!r}: {len(study.trials)} trials; trained now {trained}, already done "
        f"{skipped}" + (f", trained by another runner meanwhile {elsewhere}" if elsewhere else "")
        + "; status: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        highlight=False,
    )
    summary = Table(title=f"{study.metric} per variant ({study.mode} is better)",
                    title_justify="left")
    for col in ("variant", "label", "finished", "diverged", "failed", f"mean {study.metric}",
                "std"):
        summary.add_column(col, justify="left" if col in ("variant", "label") else "right",
                           overflow="fold")
    for v in study.variants:
        rows = table[table["variant"] == v.id]
        ok = rows[rows["status"] == "finished"]["final"].astype(float)
        mean = ok.mean() if len(ok) else math.nan
        std = ok.std() if len(ok) > 1 else math.nan
        summary.add_row(v.id, v.label, str(len(ok)), str((rows["status"] == "diverged").sum()),
                        str((rows["status"] == "failed").sum()), _num(mean), _num(std))
    console.print(summary)
    console.print(
        f"Compare the variants in MLflow's UI: {runs_url(runs, ui_host(uri))}{ui_hint(uri)}\n"
        f"  one row per variant: mean {study.metric} ± 95% CI over its finished seeds and its "
        f"seed counts (diverged and failed seeds left out of the mean, as in this table and the "
        f"report); expand a row for its seeds.\nReport: "
        f"{report or 'ablate report ' + (study.source or 'STUDY.py')}",
        highlight=False,
        soft_wrap=True,
    )


def _num(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"
