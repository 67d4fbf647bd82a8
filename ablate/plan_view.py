"""The plan as ``ablate plan`` and ``ablate run --dry-run`` print it: variants, trials, design."""

from __future__ import annotations

from typing import Any

from ablate.design import short_names
from ablate.study import Study


def print_plan(study: Study) -> None:
    """A table of the variants (changed levels in bold), the trial count, and the settings
    that shape the plan (adaptive seeds, min_effect, tuning, fractional aliasing)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    names = short_names(study.factors)
    table = Table(title=escape(f"study {study.name!r}: {study.design} design"),
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("variant")
    if study.tasks:
        table.add_column("task")
    table.add_column("label", overflow="fold")
    for key in study.factors:
        table.add_column(escape(names[key]))
    for i, v in enumerate(study.variants):
        cells = [_cell(v.levels[k], v.levels[k] != study.baseline[k]) for k in study.factors]
        task = [escape(v.task)] if study.tasks else []
        table.add_row(str(i), v.id, *task, escape(v.label), *cells)
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)
    n_var, n_seeds = len(study.variants), len(study.seeds)
    if study.adaptive:
        console.print(_adaptive_plan(study), highlight=False)
    else:
        console.print(
            (f"{len(study.tasks)} tasks ({', '.join(study.task_names)}): " if study.tasks
             else "")
            + f"{n_var} variant{'s' * (n_var != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)} "
            f"{list(study.seeds)} = {n_var * n_seeds} trials; metric {study.metric} "
            f"({study.mode})"
        )
    if study.min_effect is not None:
        console.print(f"smallest effect of interest: ±{study.min_effect:g} {study.metric} "
                      f"(min_effect): a comparison whose interval lies inside it is "
                      f"negligible; one that crosses it is undecided", highlight=False)
    tuning = study.tuning
    if tuning.space:
        space = ", ".join(f"{k} {v}" for k, v in tuning.space.items())
        console.print(f"tuning: each variant first gets {tuning.trials} tuning trials "
                      f"(Optuna TPE, seed {tuning.seed}) over {space}", highlight=False)
    if study.resolution is not None:
        console.print(f"fractional design of resolution {_roman(study.resolution)}; aliases:")
        for effect, aliased in study.aliases.items():
            console.print(f"  {effect} = {' = '.join(aliased)}", highlight=False)


def _adaptive_plan(study: Study) -> str:
    """What ``seeds="adaptive"`` will do, in a few lines."""
    if study.adaptive_bounds is None:
        raise ValueError(f"study {study.name!r} is not adaptive (seeds='adaptive')")
    (low, high), n_var = study.adaptive_bounds, len(study.variants)
    decided = "helps, hurts, negligible" if study.min_effect is not None else "helps, hurts"
    return (
        f"{n_var} variant{'s' * (n_var != 1)}, adaptive seeds: {low} to {high} per variant "
        f"(seeds 0..{high - 1}): {n_var * low} to {n_var * high} trials; metric {study.metric} "
        f"({study.mode})\n"
        f"rule: every variant starts with seeds 0..{low - 1}; after each round each variant is "
        f"compared with the baseline, paired by seed (group-sequential boundaries, Lan-DeMets "
        f"O'Brien-Fleming-type spending over the looks at {low}..{high} seeds, step-down across "
        f"the variants, alpha 0.05); a decided variant ({decided}, unstable) stops, the others "
        f"and the baseline get the next seed, until {high}"
        + ("" if study.min_effect is not None else
           "; without min_effect a variant with no effect is never decided, so it runs to "
           f"{high} seeds (set min_effect to stop it as negligible)"))


def _cell(value: Any, changed: bool) -> str:
    from rich.markup import escape

    text = escape(value if isinstance(value, str) else repr(value))
    return f"[bold]{text}[/bold]" if changed else text


def _roman(n: int) -> str:
    return {3: "III", 4: "IV", 5: "V", 6: "VI"}.get(n, str(n))
