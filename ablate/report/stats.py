"""Statistics over per-trial results: summaries, paired comparisons, factorial effects, importance.

Conventions used throughout (and stated in the report's Methods section):

* A trial *counts* when its status is ``finished`` and its ``final`` value is finite. Diverged and
  failed trials are counted per variant, never silently dropped; ``running`` trials, finished
  trials without a value and seeds with no trial at all are counted as *missing*.
* If a (variant, seed) pair was finished more than once, the last row is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ablate.report.spec import ReportSpec

CONFIDENCE = 0.95
COST_COLUMNS = ["n_params", "flops_per_sample", "train_seconds"]
COUNT_COLUMNS = ["n_finished", "n_diverged", "n_failed", "n_missing"]
COMPARE_COLUMNS = [
    "variant",
    "label",
    "n_pairs",
    *COUNT_COLUMNS,
    "diff",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "hedges_g",
    "verdict",
]


def usable(results: pd.DataFrame) -> pd.DataFrame:
    """Trials that count: finished with a finite final value, one per (variant, seed)."""
    ok = results[(results["status"] == "finished") & np.isfinite(results["final"])]
    return ok.drop_duplicates(["variant", "seed"], keep="last")


def baseline_variant(results: pd.DataFrame) -> str | None:
    ids = results.loc[results["baseline"].astype(bool), "variant"]
    return ids.iloc[0] if len(ids) else None


def variant_order(results: pd.DataFrame) -> list[str]:
    """Variants in order of first appearance, baseline first."""
    order = list(dict.fromkeys(results["variant"]))
    base = baseline_variant(results)
    if base is not None:
        order.remove(base)
        order.insert(0, base)
    return order


def varying_factors(results: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Factors of the spec present in ``results`` whose level varies among the counted trials."""
    data = usable(results)
    return [f for f in spec.factors if f in data and data[f].astype(str).nunique() > 1]


def _counts(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """Per variant: finished (with a value), diverged, failed and missing trials."""
    status = results["status"]
    state = np.select(
        [
            (status == "finished") & np.isfinite(results["final"]),
            status == "diverged",
            status == "failed",
        ],
        [0, 1, 2],
        3,
    )
    codes, variants = pd.factorize(results["variant"])
    counts = np.zeros((len(variants), 4), dtype=int)
    np.add.at(counts, (codes, state), 1)
    counts[:, 3] += np.clip(len(spec.seeds) - counts.sum(axis=1), 0, None)
    return pd.DataFrame(counts, index=pd.Index(variants, name="variant"), columns=COUNT_COLUMNS)


def summarize(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """One row per variant (baseline first): trial counts, mean, SD and 95% CI of the final metric.

    The CI is the Student t-interval of the mean, mean ± t(0.975, n-1)·s/√n, computed with
    ``scipy.stats.ttest_1samp(...).confidence_interval``; with a single finished seed the SD and
    CI are NaN (no interval can be given). Cost columns are per-variant means over its trials.
    """
    data = usable(results)
    counts = _counts(results, spec)
    rows = []
    for v in variant_order(results):
        trials = results[results["variant"] == v]
        x = data.loc[data["variant"] == v, "final"].to_numpy(float)
        ci = (np.nan, np.nan)
        if len(x) >= 2:
            ci = tuple(stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE))
        rows.append(
            {
                "variant": v,
                "label": trials["label"].iloc[0],
                "baseline": bool(trials["baseline"].iloc[0]),
                **counts.loc[v].to_dict(),
                "mean": x.mean() if len(x) else np.nan,
                "std": x.std(ddof=1) if len(x) >= 2 else np.nan,
                "ci_low": ci[0],
                "ci_high": ci[1],
                **{c: trials[c].mean() if c in trials else np.nan for c in COST_COLUMNS},
            }
        )
    return pd.DataFrame(rows)


def compare(results: pd.DataFrame, spec: ReportSpec, alpha: float = 0.05) -> pd.DataFrame:
    """Each non-baseline variant against the baseline, paired by seed.

    Over the seeds where both the variant and the baseline finished: mean difference
    (variant − baseline) with its 95% paired-t CI and the paired t-test p-value
    (``scipy.stats.ttest_rel``; NaN with fewer than 2 pairs), Holm-corrected across all
    comparisons of the study (``statsmodels`` ``multipletests(method="holm")``). The effect size is
    Hedges' g for paired data: g_z = J·d_z with d_z = mean(d)/sd(d) and the small-sample
    correction J = 1 − 3/(4·(n−1) − 1) (NaN with fewer than 3 pairs). Verdict: ``helps`` /
    ``hurts`` (direction from ``spec.mode``) when the corrected p < alpha, else
    ``no clear effect``; ``not enough data``, ``all diverged`` and ``all failed`` as named.
    """
    from statsmodels.stats.multitest import multipletests

    order = variant_order(results)
    if baseline_variant(results) is None or len(order) < 2:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    wide = usable(results).pivot(index="seed", columns="variant", values="final")
    wide = wide.reindex(columns=order).to_numpy(float)
    labels = dict(zip(results["variant"], results["label"]))
    rows = []
    for i, v in enumerate(order[1:], start=1):
        paired = ~np.isnan(wide[:, 0]) & ~np.isnan(wide[:, i])
        x, b = wide[paired, i], wide[paired, 0]
        n, d = len(x), x - b
        row = {"variant": v, "label": labels[v], "n_pairs": n, "diff": d.mean() if n else np.nan}
        row |= dict.fromkeys(["ci_low", "ci_high", "p", "hedges_g"], np.nan)
        if n >= 2:
            test = stats.ttest_rel(x, b)
            row["p"] = test.pvalue
            row["ci_low"], row["ci_high"] = test.confidence_interval(CONFIDENCE)
        if n >= 3:
            row["hedges_g"] = d.mean() / d.std(ddof=1) * (1 - 3 / (4 * (n - 1) - 1))
        rows.append(row)
    out = pd.DataFrame(rows).join(_counts(results, spec), on="variant")
    tested = out["p"].notna()
    out["p_holm"] = np.nan
    if tested.any():
        out.loc[tested, "p_holm"] = multipletests(out.loc[tested, "p"], alpha, "holm")[1]
    others = out["n_finished"] + out["n_missing"]
    out["verdict"] = np.select(
        [
            (others == 0) & (out["n_failed"] == 0) & (out["n_diverged"] > 0),
            (others == 0) & (out["n_diverged"] == 0) & (out["n_failed"] > 0),
            out["p_holm"].isna(),
            out["p_holm"] >= alpha,
            (out["diff"] > 0) == (spec.mode == "max"),
        ],
        ["all diverged", "all failed", "not enough data", "no clear effect", "helps"],
        "hurts",
    )
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
    partial_eta_sq, aliased_with), ``level_means`` (factor, level, mean, n) and ``notes``
    (list of sentences to show, e.g. too few residual degrees of freedom).
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
    level_means = pd.DataFrame(
        [
            {"factor": f, "level": level, "mean": y.mean(), "n": len(y)}
            for f in factors
            for level, y in data.groupby(data[f].astype(str), sort=False)["final"]
        ],
        columns=["factor", "level", "mean", "n"],
    )
    out = {"anova": pd.DataFrame(), "level_means": level_means, "notes": []}
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


def importance(results: pd.DataFrame, spec: ReportSpec) -> pd.Series:
    """Factor importance (sums to 1) by Optuna's fANOVA evaluator (seed 0) over finished trials.

    Builds an in-memory Optuna study with one trial per counted trial (each factor a categorical
    parameter of its levels as strings, value = final metric). Needs at least two varying factors;
    otherwise returns an empty Series.
    """
    factors = varying_factors(results, spec)
    if len(factors) < 2:
        return pd.Series(dtype=float, name="importance")
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    data = usable(results)
    dists = {
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
                    params={f: str(row[f]) for f in factors},
                    distributions=dists,
                    value=row["final"],
                )
                for _, row in data.iterrows()
            ]
        )
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return pd.Series(scores, name="importance", dtype=float).sort_values(ascending=False)
