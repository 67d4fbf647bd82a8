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
        line = (f"[{self.done}/{self.total}] {shown_label(outcome.trial.variant)} seed "
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
    from ablate.track import ranked_url, runs_url, ui_hint, ui_host

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
    shown, hidden = _shown_variants(study, table)
    for v, (n_ok, n_diverged, n_failed, mean, std) in shown:
        summary.add_row(v.id, shown_label(v), str(n_ok), str(n_diverged), str(n_failed), _num(mean),
                        _num(std))
    if hidden:
        summary.caption = (f"the baseline and the {MAX_ROWS // 2} best and "
                           f"{MAX_ROWS - 1 - MAX_ROWS // 2} worst by mean {study.metric}; "
                           f"{hidden} more variants: the ranked view below, or the report")
        summary.caption_justify = "left"
    console.print(summary)
    console.print(
        f"Compare the variants in MLflow's UI: {runs_url(runs, ui_host(uri))}{ui_hint(uri)}\n"
        f"  one row per variant: mean {study.metric} ± 95% CI over its finished seeds and its "
        f"seed counts (diverged and failed seeds left out of the mean, as in this table and the "
        f"report); expand a row for its seeds.\n  ranked by {study.metric}, best first: "
        f"{ranked_url(runs, ui_host(uri))}\nReport: "
        f"{report or 'ablate report ' + (study.source or 'STUDY.py')}",
        highlight=False,
        soft_wrap=True,
    )


def shown_label(variant: Any) -> str:
    """A variant's label, after its task's name in a study with tasks (``cifar10:
    batch_norm=False``): each task has its own baseline."""
    return f"{variant.task}: {variant.label}" if getattr(variant, "task", "") else variant.label


MAX_ROWS = 21  # the end-of-run table of a larger study: the baseline and the extremes


def _shown_variants(study: Study, table: pd.DataFrame) -> tuple[list, int]:
    """``(variant, (finished, diverged, failed, mean, std))`` for the table's rows, in the
    study's order (at most :data:`MAX_ROWS`: the baseline and the best and worst by mean; a
    table of 2,048 rows helps no one; then baseline, best, worst), and how many variants were
    left out."""
    import numpy as np
    import pandas as pd

    rows = []
    status = table["status"] if len(table) else pd.Series(dtype=str)
    at = table.groupby("variant", sort=False).indices if len(table) else {}
    finals = table["final"].to_numpy(float) if len(table) else np.empty(0)
    for v in study.variants:
        i = at.get(v.id, np.empty(0, dtype=int))
        states = status.to_numpy()[i] if len(i) else np.empty(0, dtype=object)
        ok = finals[i][states == "finished"]
        mean = float(ok.mean()) if len(ok) else math.nan
        std = float(ok.std(ddof=1)) if len(ok) > 1 else math.nan
        rows.append((v, (len(ok), int((states == "diverged").sum()),
                         int((states == "failed").sum()), mean, std)))
    if len(rows) <= MAX_ROWS:
        return rows, 0
    sign = 1.0 if study.mode == "max" else -1.0
    base = next((r for r in rows if r[0].baseline), rows[0])
    scored = sorted((r for r in rows if r is not base and not math.isnan(r[1][3])),
                    key=lambda r: -sign * r[1][3])
    best = scored[: MAX_ROWS // 2]
    worst = scored[len(best):][-(MAX_ROWS - 1 - len(best)):]
    return [base, *best, *worst], len(rows) - 1 - len(best) - len(worst)


def _num(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"
