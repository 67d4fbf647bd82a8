"""The report's methods (design, tests, corrections, verdicts, shared settings) and provenance
(text samples, environment, MLflow ids, the commands that reproduce it)."""

from __future__ import annotations

import pandas as pd

from ablate.report.fmt import escape, format_number, plural
from ablate.report.sections.common import band, fence, md_table
from ablate.stats.boundaries import SPENDING
from ablate.stats.effects import FACTORIAL, LEVELS_FAMILY
from ablate.stats.inference import FIRM_POWER, FRAGILE_FACTOR, MIN_PAIRS, SPREAD_TOL
from ablate.stats.spec import ALPHA, ReportSpec
from ablate.stats.trials import metric_resolution


def methods_section(summary: pd.DataFrame, family: pd.DataFrame, spec: ReportSpec,
                    results: pd.DataFrame | None = None) -> list[str]:
    n = summary["n_finished"]
    n_text = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    seeds = ", ".join(map(str, spec.seeds))
    factorial = spec.design in FACTORIAL
    lines = [
        "## Methods",
        "",
        f"- **Design:** {escape(spec.design)}, {spec.n_variants} variants × "
        + (f"{plural(len(spec.seeds), 'seed')} ({seeds}); every variant uses the same seeds."
           if spec.adaptive is None else
           f"{spec.adaptive[0]} to {spec.adaptive[1]} seeds, adaptive (below); variants that "
           "continue all get the same next seed, and the baseline runs every seed any variant "
           "runs."),
        f"- **Metric:** final {escape(spec.metric)} ({spec.mode}imised); {n_text} finished "
        "seeds per variant. Diverged, failed and running trials are counted per variant and "
        "left out of means and pairs (MLflow's UI group means include diverged runs that logged "
        "a value).",
        "- **Mean and CI of a variant:** 95% Student t-interval of the mean, mean ± "
        "t(0.975, n−1)·s/√n (scipy.stats); none with a single finished seed.",
        "- **Paired contrasts:** each comparison is computed per seed, over the seeds where the "
        "variants it compares finished, and tested with a one-sample t-test of those per-seed "
        "values (the paired t-test; scipy.stats)."
        + (" A factorial effect averages, on each seed, the matched cell differences whose "
           "cells both finished there, so a cell lost on one seed drops only its own pairs."
           if factorial else ""),
    ]
    if factorial:
        lines.append(
            "- **Factorial effects:** a main effect is the difference between two levels of a "
            "factor averaged over the other factors (per seed: the mean over matched cells of "
            "the cell difference; in a fractional design the difference of the two levels' "
            "means, aliased as stated under the first table), for every pair of levels; a "
            "two-factor interaction is the difference of differences (B's effect when A is "
            "changed minus B's effect at A's baseline level), averaged over the other "
            "factors; simple effects are each factor's effect within each level of the factor "
            "with the largest main effect (where other main effects are as large within its "
            "95% interval, the first of those in the study's factors, so that noise does not "
            "decide which factor the report conditions on)."
        )
    else:
        lines.append(
            "- **Comparisons:** each variant against the baseline, and every pair of levels of "
            "a factor whose levels were each run with everything else at the baseline."
        )
    lines += [
        *_family_methods(family, spec),
        *_step_down_methods(spec),
        *_interval_methods(spec),
        *_sequential_methods(spec),
        "- **Verdict:** helps/hurts (interaction found, for interactions) when the interval "
        "excludes 0, direction from whether higher or lower is better; "
        + ("otherwise no clear effect (which is not evidence of no effect: the interval "
           "also fits effects as large as its bounds). " if spec.min_effect is None else
           f"negligible when it lies inside ±{band(spec)} (before helps/hurts: a real but "
           "unimportant effect is negligible); otherwise undecided. ")
        + "*Unstable (k/n diverged)* when the changed side diverged or failed on k of the "
        "n seeds where the other side finished (whatever its finished seeds show; if they "
        "differ clearly too, the verdict says so)"
        + (" — judged per variant against the baseline, since a lost cell has a matched "
           "partner in every factor and so cannot be pinned on one" if factorial else "")
        + "; all diverged / all failed when it never finished; not enough data as below.",
        f"- **Not enough data:** a comparison with fewer than {MIN_PAIRS} paired seeds, or whose "
        "paired differences do not vary (their SD is at most "
        f"{SPREAD_TOL:g} of the metric's size: equal up to the float32 rounding of logged "
        "metrics), gets no p-value and "
        "no interval, does not count in its family's m, and is *not enough data* with its "
        "reason: a t-test estimates the noise from the spread of the differences, and two "
        "seeds, or seeds that agree exactly, give it nothing to estimate (a t-statistic with "
        "zero spread is infinite, not evidence).",
        *_discrete_methods(results, spec),
        *_fragile_methods(spec),
        "- **Effect size:** Hedges' g for paired data, g_z = J·d_z, d_z = mean(d)/sd(d) of the "
        "per-seed differences d, J = 1 − 3/(4(n−1) − 1); given in the sentences above only with "
        "5 or more pairs and when the differences vary (|d_z| ≤ 100).",
    ]
    if factorial:
        lines.append(
            "- **Cells at a trivial value:** with a known chance level (1/num_classes for an "
            "accuracy whose config sets `model.num_classes`), cells whose every finished seed "
            "is within 10% of the way from chance to the best cell's mean. Otherwise, for an "
            "accuracy, the lowest finished trial's value when it is at most 0.5 and at least "
            "two cells have every finished seed within 5% of the way from it to the best cell "
            "(a floor several configurations fall to). Other metrics: not flagged."
        )
    return lines + ["", *_settings(spec)]


def _family_methods(family: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Which tests are adjusted together."""
    m = len(family)
    levels = int((family["family"] == LEVELS_FAMILY).sum()) if "family" in family else 0
    stopping = " — the stopping rule's family, decided at every round" if spec.adaptive else ""
    if spec.design in FACTORIAL:
        return [f"- **Families:** the {m} tests of the first table and of the simple effects "
                "are one family; the comparisons of every variant with the baseline (under "
                f"Factorial analysis) a second{stopping}."]
    if levels:
        return [f"- **Families:** the {m - levels} comparisons with the baseline are one "
                f"family{stopping}; the {levels} pairs of levels a second, adjusted on its "
                "own at the same boundaries. The stopping rule compares each variant with the "
                "baseline only, so a pair between two levels is not part of its decisions and "
                "does not dilute them."]
    return [f"- **Family:** the {m} tests of the first table are one family{stopping}."]


def _step_down_methods(spec: ReportSpec) -> list[str]:
    """The step-down, as this report runs it: Holm's, or Holm–Shaffer's over both claims."""
    sequential = (" The p-values are the sequential ones of the adaptive design (below)."
                  if spec.adaptive is not None else "")
    if spec.min_effect is None:
        return [
            "- **Multiple comparisons (Holm):** within each family, with its m p-values sorted, "
            "p(1) ≤ … ≤ p(m), the k-th is tested at α/(m − k + 1) and Holm rejects the first r "
            "before one fails; the adjusted p of rank k is the largest (m − j + 1)·p(j) over "
            "j ≤ k (as statsmodels' multipletests gives it); α = "
            f"{ALPHA}.{sequential}"]
    return [
        f"- **Multiple comparisons (Holm–Shaffer), min_effect = {band(spec)}:** *negligible* "
        "is an equivalence finding: the interval shown lies inside ±min_effect, i.e. both "
        "one-sided tests (two one-sided tests, TOST) reject an effect of min_effect or more, "
        "each at half the interval's level. Each comparison can so make two claims, \"differs "
        "from 0\" and \"smaller than min_effect\", and at most one of their null hypotheses is "
        "true, so the step-down runs over both kinds of claim (Shaffer's refinement of Holm's): "
        "within each family, the k-th smallest of all claims' p-values is tested at α/t, t being "
        "the number of comparisons with a claim not yet passed, and a comparison leaves the "
        "count only once both its claims have been passed; the adjusted p is the running "
        f"largest t·p. This controls the family-wise rate of false claims of either kind at "
        f"α = {ALPHA}; the price is that a clear effect frees no level for the others (Holm's "
        f"does).{sequential}"]


def _interval_methods(spec: ReportSpec) -> list[str]:
    """The level of each interval shown, and how the interval is made at that level."""
    if spec.min_effect is None:
        level = ("a rejected test of rank k shows the interval at confidence 1 − α/(m − k + 1), "
                 "the level its own step used; every other test the level where Holm stopped, "
                 "1 − α/(m − r)")
        read = "So an interval excludes 0 exactly when Holm rejects"
    else:
        level = ("a comparison whose claims were all accepted shows the interval at confidence "
                 "1 − α/t of the step that settled its last claim; every other comparison the "
                 "level where the procedure stopped, 1 − α/t*, t* being the number of "
                 "comparisons with a claim not accepted")
        read = ("So an interval excludes 0 exactly when \"differs from 0\" is accepted, and "
                "lies inside ±min_effect exactly when \"smaller than min_effect\" is")
    if spec.adaptive is None:
        how = "the paired-t interval d̄ ± t(1 − a/2, n − 1)·s/√n at that level a"
    else:
        how = ("the repeated confidence interval d̄ ± c_n(a)·s/√n at that overall level a, "
               "c_n(a) being the critical value of the look at n paired seeds (the t-quantile "
               "at that look's nominal level, below), not the t-quantile of a single test")
    frozen = (" A variant that stopped shows the row (estimate, adjusted p, interval, verdict) "
              "of the round where it stopped — its data do not change after —, the others "
              "those of the last round." if spec.adaptive is not None else "")
    return [f"- **Intervals:** {level}; each is {how}. {read}, and the verdict is read off the "
            f"interval.{frozen}"]


def _discrete_methods(results: pd.DataFrame | None, spec: ReportSpec) -> list[str]:
    """A metric whose values lie on a grid (an accuracy on a small validation set)."""
    step = metric_resolution(results) if results is not None else None
    if step is None:
        return []
    examples = 1 / step
    one_in = (f", e.g. one validation example in {examples:.0f}"
              if "acc" in spec.metric.lower() and abs(examples - round(examples)) < 0.01 else "")
    return [f"- **Discrete metric:** every final {escape(spec.metric)} lies on a grid of step "
            f"{format_number(step)} (its resolution: the smallest nonzero step seen between two "
            f"trials' values{one_in}), so paired differences move in whole steps and often tie; "
            "a comparison whose differences all tie is not enough data (above), and an interval "
            "narrower than a step says less than its digits suggest."]


def _fragile_methods(spec: ReportSpec) -> list[str]:
    approximate = (" It ignores the group-sequential boundaries, so in an adaptive study it is "
                   "approximate." if spec.adaptive is not None else
                   " Such rows are where seeds=\"adaptive\" pays: it adds seeds only where the "
                   "answer is close.")
    negligible = ("; for negligible, the equivalence claim's adjusted p" if spec.min_effect
                  is not None else "")
    effect = (" (for negligible, min_effect − |d̄| in place of |d̄|)" if spec.min_effect
              is not None else "")
    return [
        f"- **Fragile:** a decided verdict whose adjusted p lies within a factor of "
        f"{FRAGILE_FACTOR:g} of α (α/{FRAGILE_FACTOR:g} ≤ p < α{negligible}) is marked fragile — "
        "a marker on the verdict, not another verdict: a few seeds more or less could undo it. "
        "The seeds a firm verdict needs are a power-style estimate from the observed effect and "
        "SD: the smallest n with |d̄|·√n/s ≥ t(1 − a/4, n − 1) + "
        f"t({FIRM_POWER:g}, n − 1){effect}, a being the interval's level, i.e. the seeds at "
        f"which a paired t-test at half that level (adjusted p below α/2) would have "
        f"{FIRM_POWER:.0%} power if the true effect were the one observed; minus the seeds "
        f"used.{approximate}"]


def _sequential_methods(spec: ReportSpec) -> list[str]:
    if spec.adaptive is None:
        return []
    low, high = spec.adaptive
    return [
        f"- **Adaptive seeds (group-sequential):** every variant started with {low} seeds; "
        "after each round every variant was compared with the baseline (its family, as "
        "above), a decided variant (helps, hurts, negligible, unstable, all diverged/failed) "
        f"stopped and the others got the next seed, up to {high}. The schedule is replayed from "
        "the recorded results (each round decided on the trials scheduled by then), so it is "
        f"the same after a resume and here. Repeated looks are paid for by the {SPENDING} "
        f"α(t) = 2 − 2Φ(z₁₋α/2/√t) (Lan and DeMets 1983) over the looks at {low}, …, {high} "
        "paired seeds (t = n/max_seeds): the boundaries of the paired t-statistics are set so "
        "that a null comparison crosses at look k, and not before, with probability α(t_k) − "
        "α(t_{k−1}), computed on 131,072 simulated null paths (fixed seed; the t-statistic's "
        "law does not depend on the variance); a look whose share is too small to simulate "
        "gets that share as its nominal level (the union bound). A comparison's p-value is the "
        "smallest overall level at which it crosses its look's boundary, and its interval is a "
        "repeated confidence interval: the intervals of all looks cover the true difference "
        "together with probability 1 − α, so the one where a variant stopped is valid whatever "
        "made it stop, and the family-wise error rate over all looks stays at α (it is "
        "conservative at the stopping time). Other contrasts (pairs of levels, factorial "
        "effects) use the seeds all their variants were scheduled for, at the same boundaries.",
    ]


def _settings(spec: ReportSpec) -> list[str]:
    """The base settings every variant shares (the budget: epochs, data size, model size)."""
    shared = {k: v for k, v in spec.config.items() if k not in spec.factors}
    if not shared:
        return []
    rows = [[escape(k), escape(v if isinstance(v, str) else repr(v))] for k, v in shared.items()]
    return ["### Settings shared by every variant", "", md_table(["setting", "value"], rows), ""]


def provenance(spec: ReportSpec, samples: dict[str, str] | None) -> list[str]:
    lines = []
    if samples:
        lines += ["## Text samples", ""]
        for label, text in samples.items():
            lines += [f"**{escape(label)}**", "", fence(str(text), "text"), ""]
    if spec.environment:
        rows = [[escape(k), escape(v)] for k, v in spec.environment.items()]
        lines += ["## Environment", "", md_table(["Key", "Value"], rows), ""]
    if spec.mlflow:
        lines += ["## MLflow", ""] + [f"- {escape(k)}: {escape(v)}" for k, v in spec.mlflow.items()]
        lines.append("")
    if spec.command:
        lines += ["## Reproduce", "", fence(spec.command, "sh"), ""]
    return lines
