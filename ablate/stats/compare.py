"""Statistics over per-trial results: summaries, comparisons with the baseline, ANOVA, importance.

Which trials count is defined in :mod:`ablate.stats.trials`; paired tests, Holm and the
intervals that decide verdicts in :mod:`ablate.stats.inference`; the design's family of
effects in :mod:`ablate.stats.effects`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ablate.stats.inference import Contrast, evaluate
from ablate.stats.sequential import rules, scheduled
from ablate.stats.spec import ReportSpec
from ablate.stats.trials import (
    COUNT_COLUMNS,
    baseline_variant,
    counts,
    grids,
    labels,
    usable,
    variant_order,
    varying_factors,
)

CONFIDENCE = 0.95
COST_COLUMNS = ["n_params", "flops_per_sample", "train_seconds", "peak_mem_mb"]
COMPARE_COLUMNS = [
    "variant",
    "label",
    "n_pairs",
    *COUNT_COLUMNS,
    "diff",
    "ci_low",
    "ci_high",
    "confidence",
    "p",
    "p_holm",
    "hedges_g",
    "verdict",
    "outcome",
    "reason",
    "fragile",
    "more_seeds",
    "sd",
    "unstable",
    "n_seeds",
    "lost_diverged",
    "lost_failed",
    "lost_missing",
]


def summarize(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """One row per variant (baseline first): trial counts, mean, SD and 95% CI of the final metric.

    The CI is the Student t-interval of the mean, mean ± t(0.975, n-1)·s/√n (``scipy.stats.t``;
    no warning when every seed gave the same value); with a single finished seed the SD and CI
    are NaN (no interval can be given). Cost columns are per-variant means over its trials
    (NaN where no trial logged the figure). ``ui_mean`` is what MLflow's UI shows when runs are
    grouped by label: the mean over every run that logged a final value, diverged ones included.
    """
    data = usable(results)
    table = counts(results, spec)
    rows_of = results.groupby("variant", sort=False).indices  # one pass, not one scan a variant
    used_of = data.groupby("variant", sort=False).indices
    finals, used = results["final"].to_numpy(float), data["final"].to_numpy(float)
    costs = {c: results[c].to_numpy(float) for c in COST_COLUMNS if c in results}
    first = results[["label", "baseline"]].to_numpy(object)
    counted = table.to_dict("index")
    rows = []
    for v in variant_order(results):
        at = rows_of[v]
        x = used[used_of[v]] if v in used_of else np.empty(0)
        ci = (np.nan, np.nan)
        if len(x) >= 2:
            half = stats.t.ppf((1 + CONFIDENCE) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            ci = (x.mean() - half, x.mean() + half)
        logged = finals[at]
        logged = logged[np.isfinite(logged)]
        rows.append(
            {
                "variant": v,
                "label": first[at[0], 0],
                "baseline": bool(first[at[0], 1]),
                **counted[v],
                "mean": x.mean() if len(x) else np.nan,
                "std": x.std(ddof=1) if len(x) >= 2 else np.nan,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "ui_mean": logged.mean() if len(logged) else np.nan,
                **{c: _mean(costs[c][at]) if c in costs else np.nan for c in COST_COLUMNS},
            }
        )
    return pd.DataFrame(rows)


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values (NaN where none), as pandas' ``Series.mean`` gives it."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else np.nan


def compare(results: pd.DataFrame, spec: ReportSpec, alpha: float = 0.05) -> pd.DataFrame:
    """Each non-baseline variant against the baseline, paired by seed; one Holm family.

    Over the seeds where both the variant and the baseline finished: mean difference
    (variant − baseline), the paired t-test p-value (NaN with fewer than 2 pairs), Holm-corrected
    across these comparisons, and the Holm-consistent interval that decides the verdict
    (:mod:`ablate.stats.inference`). Hedges' g_z = J·d_z, d_z = mean(d)/sd(d), J = 1 −
    3/(4·(n−1) − 1), from 5 pairs on. Verdicts: ``helps``/``hurts`` (direction from
    ``spec.mode``) when the interval excludes 0, else ``no clear effect``; ``unstable (k/n
    diverged)`` when the variant diverged or failed on seeds where the baseline finished;
    ``not enough data``, ``all diverged`` and ``all failed`` as named; with ``spec.min_effect``,
    ``negligible`` when the interval lies inside ±min_effect and ``undecided`` instead of no
    clear effect; not enough data (with its ``reason``) with fewer than 3 pairs or differences
    that do not vary; ``fragile`` and ``more_seeds`` as :func:`ablate.stats.inference.fragility`
    says. An adaptive study is first cut to its schedule
    (:func:`ablate.stats.sequential.scheduled`), and its comparisons are the stopping rule's
    own rows (each variant's from the round where it stopped, at the group-sequential looks):
    one family, one decision. Its α is the stopping rule's, :data:`~ablate.stats.spec.ALPHA`.
    """
    results, spec = scheduled(results, spec)
    order = variant_order(results)
    if baseline_variant(results) is None or len(order) < 2:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    if spec.stopping is not None:
        out = spec.stopping
    else:
        values, outcome = grids(results, spec)
        names = labels(results)
        contrasts = [Contrast("variant", names[v], ({v: 1.0, order[0]: -1.0},), variant=v)
                     for v in order[1:]]
        out = evaluate(contrasts, values, outcome, alpha, spec.mode, **rules(spec))
    out = out.assign(label=out["term"]).join(counts(results, spec), on="variant")
    return out[COMPARE_COLUMNS]


def _term_name(term: str, names: dict[str, str]) -> tuple[str, str]:
    """Map a formula term like ``C(f0):C(f1)`` back to (``a.x × b.y``, kind)."""
    if term == "C(seed)":
        return "seed (block)", "block"
    parts = [names[p[2:-1]] for p in term.split(":")]
    return " × ".join(parts), "main" if len(parts) == 1 else "interaction"


def factorial_effects(results: pd.DataFrame, spec: ReportSpec) -> dict:
    """Main effects and two-factor interactions of a factorial design, by Type II ANOVA.

    Fits an OLS model (``statsmodels`` formula with ``C()`` factors and the seed as a block, the
    same pairing the comparisons use) to the counted trials: main effects plus all two-factor
    interactions for ``full_factorial`` designs, main effects only for ``fractional`` designs
    (each main effect is then aliased with the interactions in ``spec.aliases``). If missing
    trials make the interactions inestimable, it falls back to main effects and says so.

    Returns ``{}`` for other designs, else a dict with ``anova`` (term, kind, df, sum_sq, F, p,
    partial_eta_sq, aliased_with) and ``notes`` (list of sentences to show, e.g. too few
    residual degrees of freedom).
    """
    if spec.design not in ("full_factorial", "fractional"):
        return {}
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    data = usable(results)
    factors = varying_factors(results, spec)
    names = {f"f{i}": f for i, f in enumerate(factors)}
    frame = pd.DataFrame({k: data[f].astype(str) for k, f in names.items()})
    frame["y"], frame["seed"] = data["final"], data["seed"].astype(str)
    out = {"anova": pd.DataFrame(), "notes": []}
    if not factors:
        out["notes"].append("No factor varies among the finished trials; no ANOVA.")
        return out
    terms = " + ".join(f"C({k})" for k in names)
    block = " + C(seed)" if frame["seed"].nunique() > 1 else ""
    model = smf.ols(f"y ~ {terms}{block}", frame)
    if spec.design == "full_factorial" and len(names) > 1:
        full = smf.ols(f"y ~ ({terms}) ** 2{block}", frame)
        if np.linalg.matrix_rank(full.exog) == full.exog.shape[1]:
            model = full
        else:
            out["notes"].append(
                "Missing trials leave some factor combinations empty, so two-factor "
                "interactions cannot be estimated; main effects only."
            )
    if len(frame) <= model.exog.shape[1]:
        out["notes"].append(
            f"Too few residual degrees of freedom for an ANOVA ({len(frame)} finished trials for "
            f"{model.exog.shape[1]} model parameters); run more seeds."
        )
        return out
    model = model.fit()
    table = sm.stats.anova_lm(model, typ=2)
    resid_ss = table.loc["Residual", "sum_sq"]
    table = table.drop(index="Residual")
    term_kind = [_term_name(t, names) for t in table.index]
    out["anova"] = pd.DataFrame(
        {
            "term": [t for t, _ in term_kind],
            "kind": [k for _, k in term_kind],
            "df": table["df"].to_numpy(),
            "sum_sq": table["sum_sq"].to_numpy(),
            "F": table["F"].to_numpy(),
            "p": table["PR(>F)"].to_numpy(),
            "partial_eta_sq": (table["sum_sq"] / (table["sum_sq"] + resid_ss)).to_numpy(),
            "aliased_with": [", ".join(map(str, spec.aliases.get(t, []))) for t, _ in term_kind],
        }
    )
    out["notes"].append(f"Residual degrees of freedom: {model.df_resid:g}.")
    if spec.design == "fractional":
        out["notes"].append(
            "Fractional design: main effects only; each is aliased with the two-factor "
            "interactions listed, so an apparent main effect may be one of those interactions."
        )
    return out


FANOVA_TREE_TRIALS = 64 * 512  # trees x trials of importance()'s forest, at most


def importance(results: pd.DataFrame, spec: ReportSpec) -> pd.Series:
    """Factor importance (sums to 1) by Optuna's fANOVA evaluator (seed 0) over finished trials.

    Builds an in-memory Optuna study with one trial per counted trial (each factor a categorical
    parameter of its levels as strings, value = final metric). Needs at least two varying factors;
    otherwise returns an empty Series. Its forest has 64 trees (Optuna's default) up to 512
    trials, fewer beyond (:data:`FANOVA_TREE_TRIALS` / trials, at least 8): each tree then sees
    more data and the forest costs about the same, where 64 trees over 4,096 trials take a
    minute.
    """
    factors = varying_factors(results, spec)
    if len(factors) < 2:
        return pd.Series(dtype=float, name="importance")
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    data = usable(results)
    dists: dict[str, BaseDistribution] = {
        f: CategoricalDistribution(
            list(dict.fromkeys([*map(str, spec.factors[f]), *data[f].astype(str)]))
        )
        for f in factors
    }
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize")
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params=dict(zip(factors, levels)), distributions=dists, value=value)
                for value, *levels in zip(data["final"].to_numpy(float).tolist(),
                                          *(data[f].astype(str) for f in factors))
            ]
        )
        trees = max(8, min(64, FANOVA_TREE_TRIALS // max(len(data), 1)))
        scores = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(n_trees=trees, seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return pd.Series(scores, name="importance", dtype=float).sort_values(ascending=False)
