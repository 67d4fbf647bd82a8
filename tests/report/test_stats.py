import subprocess
import sys
from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.stats import ReportSpec, compare, factorial_effects, importance, summarize
from ablate.stats.validation import planted_effect_figures, simulate
from ablate.stats.verdict import Verdict


def factorial(effect, factors, n_seeds=4, seed=0, noise=0.5, design="full_factorial", aliases=None):
    """Full factorial study (first level of each factor is the baseline) with a planted effect."""
    rng = np.random.default_rng(seed)
    seed_noise = rng.normal(0, noise, n_seeds)
    rows = []
    for i, levels in enumerate(product(*factors.values())):
        config = dict(zip(factors, levels))
        label = ",".join(f"{k}={v}" for k, v in config.items() if v != factors[k][0])
        for s in range(n_seeds):
            rows.append(
                {
                    "run_id": f"v{i}-{s}",
                    "variant": f"v{i}",
                    "label": label or "baseline",
                    "baseline": i == 0,
                    "seed": s,
                    "status": "finished",
                    **config,
                    "final": effect(config) + seed_noise[s] + rng.normal(0, noise),
                }
            )
    spec = ReportSpec(
        name="factorial",
        metric="val_acc",
        mode="max",
        design=design,
        factors=factors,
        baseline={k: v[0] for k, v in factors.items()},
        seeds=list(range(n_seeds)),
        n_variants=len(rows) // n_seeds,
        aliases=aliases or {},
    )
    return pd.DataFrame(rows), spec


@pytest.fixture(scope="module")
def figures():
    out = planted_effect_figures(reps=400, seed=0)
    print(f"\nplanted-effect figures: {out}")
    return out


def test_aa_null_factor_gives_no_clear_effect(figures):
    assert 1 - figures["false_positive_rate"] >= 0.95
    se = np.sqrt(0.05 * 0.95 / figures["reps"])
    assert figures["familywise_error_rate"] <= 0.05 + 3 * se


def test_power_for_one_sd_effect_with_ten_seeds(figures):
    assert figures["power"] > 0.5


def test_paired_ci_coverage(figures):
    assert 0.92 <= figures["ci_coverage"] <= 0.98


def test_summarize_t_interval_and_single_seed():
    results, spec = simulate({"base": 0.0, "b": 1.0}, 6, np.random.default_rng(1))
    results = results[(results["variant"] == "base") | (results["seed"] == 0)]
    summary = summarize(results, spec).set_index("variant")
    x = results.loc[results["variant"] == "base", "final"]
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert summary.loc["base", ["ci_low", "ci_high"]].tolist() == pytest.approx(
        [x.mean() - half, x.mean() + half]
    )
    assert summary.loc["b", "n_finished"] == 1 and summary.loc["b", "n_missing"] == 5
    assert np.isnan(summary.loc["b", "ci_low"]) and np.isnan(summary.loc["b", "std"])


def test_paired_difference_and_hedges_g():
    results, spec = simulate({"base": 0.0, "b": 0.3}, 8, np.random.default_rng(2))
    row = compare(results, spec).iloc[0]
    wide = results.pivot(index="seed", columns="variant", values="final")
    d = wide["b"] - wide["base"]
    assert row["diff"] == pytest.approx(d.mean())
    assert row["p"] == pytest.approx(stats.ttest_rel(wide["b"], wide["base"]).pvalue)
    j = 1 - 3 / (4 * (len(d) - 1) - 1)
    assert row["hedges_g"] == pytest.approx(j * d.mean() / d.std(ddof=1))


def test_holm_correction_of_three_comparisons():
    effects = {"base": 0.0, "a": 0.4, "b": 0.8, "c": 1.5}
    out = compare(*simulate(effects, 8, np.random.default_rng(3)))
    p = out["p"].to_numpy()
    order = np.argsort(p)
    expected = np.minimum(1, np.maximum.accumulate(p[order] * np.array([3, 2, 1])))
    assert out["p_holm"].to_numpy()[order] == pytest.approx(expected)
    assert (out["p_holm"] >= out["p"]).all()


def test_direction_follows_mode():
    effects = {"base": 0.0, "lower": -3.0, "higher": 3.0}
    for mode, expected in (("max", ["hurts", "helps"]), ("min", ["helps", "hurts"])):
        results, spec = simulate(effects, 6, np.random.default_rng(4), mode=mode)
        assert compare(results, spec)["verdict"].tolist() == expected


def test_diverged_failed_and_missing_are_counted():
    results, spec = simulate({"base": 0.0, "b": 0.0}, 6, np.random.default_rng(5))
    b = results["variant"] == "b"
    results.loc[b & results["seed"].isin([0, 1]), ["status", "final"]] = ["diverged", np.nan]
    results.loc[b & (results["seed"] == 2), "status"] = "failed"
    results.loc[b & (results["seed"] == 3), "status"] = "running"
    results = results[~(b & (results["seed"] == 4))]
    counts = ["n_finished", "n_diverged", "n_failed", "n_missing"]
    summary = summarize(results, spec).set_index("variant")
    assert summary.loc["b", counts].tolist() == [1, 2, 1, 2]
    row = compare(results, spec).iloc[0]
    assert row[counts].tolist() == [1, 2, 1, 2]
    assert row["n_pairs"] == 1 and np.isnan(row["p"])
    # diverged on 2 and failed on 1 of the 6 seeds where the baseline finished: an outcome
    assert row["verdict"] == "unstable (3/6 diverged or failed)" and row["outcome"] == "unstable"


def test_all_diverged_and_all_failed_variants():
    results, spec = simulate({"base": 0.0, "div": 0.0, "fail": 0.0}, 4, np.random.default_rng(6))
    results.loc[results["variant"] == "div", ["status", "final"]] = ["diverged", np.nan]
    results.loc[results["variant"] == "fail", ["status", "final"]] = ["failed", np.nan]
    out = compare(results, spec).set_index("variant")
    assert out.loc["div", "verdict"] == "all diverged" and out.loc["div", "n_diverged"] == 4
    assert out.loc["fail", "verdict"] == "all failed" and out.loc["fail", "n_failed"] == 4


def test_one_variant_study():
    results, spec = simulate({"base": 0.0}, 3, np.random.default_rng(7))
    assert compare(results, spec).empty
    assert len(summarize(results, spec)) == 1
    assert importance(results, spec).empty
    assert factorial_effects(results, spec) == {}


def test_anova_detects_planted_interaction_only():
    factors = {"a": [0, 1], "b": [0, 1], "c": [0, 1]}
    tables = [
        factorial_effects(
            *factorial(lambda f: f["a"] + f["b"] + 3 * f["a"] * f["b"], factors, seed=seed)
        )["anova"].set_index("term")
        for seed in range(20)
    ]
    assert all(t.loc["a × b", "p"] < 0.01 for t in tables)
    null_hits = sum(t.loc[term, "p"] < 0.01 for t in tables for term in ("a × c", "b × c"))
    assert null_hits <= 2  # 40 null tests at the 1% level: 0.4 expected
    assert tables[0].loc["a × b", "kind"] == "interaction" and tables[0].loc["a", "kind"] == "main"


def test_fractional_fits_main_effects_and_states_aliases():
    factors = {"a": [0, 1], "b": [0, 1], "c": [0, 1]}
    results, spec = factorial(
        lambda f: 2 * f["a"], factors, design="fractional", aliases={"a": ["b:c"]}
    )
    results = results[(results["a"] + results["b"] + results["c"]) % 2 == 0]  # half fraction
    effects = factorial_effects(results, spec)
    assert set(effects["anova"]["kind"]) == {"main", "block"}
    assert effects["anova"].set_index("term").loc["a", "aliased_with"] == "b:c"
    assert any("aliased" in note for note in effects["notes"])


def test_too_few_residual_degrees_of_freedom_is_reported():
    results, spec = factorial(lambda f: f["a"], {"a": [0, 1], "b": [0, 1]}, n_seeds=1)
    effects = factorial_effects(results, spec)
    assert effects["anova"].empty
    assert "residual degrees of freedom" in effects["notes"][0]


def test_importance_ranks_planted_strong_factor_first():
    factors = {"weak": ["x", "y"], "strong": ["p", "q"], "null": [1, 2]}
    effect = {"x": 0.0, "y": 0.3, "p": 0.0, "q": 3.0}
    results, spec = factorial(lambda f: effect[f["weak"]] + effect[f["strong"]], factors, 3)
    scores = importance(results, spec)
    assert scores.index[0] == "strong"
    assert scores.sum() == pytest.approx(1.0)


def test_empty_cell_falls_back_to_main_effects():
    results, spec = factorial(lambda f: f["a"] + f["b"], {"a": [0, 1], "b": [0, 1]})
    effects = factorial_effects(results[results["variant"] != "v3"], spec)
    assert set(effects["anova"]["kind"]) == {"main", "block"}
    assert "interactions cannot be estimated" in effects["notes"][0]


def test_stats_sits_below_report_and_execute():
    """``import ablate.stats`` loads neither the report nor the executors, nor plotting, MLflow
    or Ray."""
    code = ("import sys, ablate.stats; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'seaborn', 'mlflow', 'ray') or m.startswith(('ablate.report', "
            "'ablate.execute'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verdicts_are_one_vocabulary():
    """Each verdict is its printed text, in the report's counting order, with its colour and
    whether it is decided (stops an adaptive variant) and a finding (printed in bold)."""
    assert Verdict("no clear effect") is Verdict.NO_CLEAR_EFFECT == "no clear effect"
    assert f"{Verdict.HELPS}" == str(Verdict.HELPS) == "helps"
    assert [v.value for v in sorted(Verdict, key=lambda v: v.order)][:6] == [
        "helps", "hurts", "interaction found", "task-dependent", "negligible", "unstable"]
    assert {v.value for v in Verdict if v.decided} == {
        "helps", "hurts", "interaction found", "task-dependent", "negligible", "unstable",
        "all diverged", "all failed"}
    assert {v.value for v in Verdict if v.finding} == {
        "helps", "hurts", "interaction found", "task-dependent", "negligible", "unstable"}
    assert [Verdict.HURTS.counted(3), Verdict.HELPS.counted(1),
            Verdict.NOT_ENOUGH_DATA.counted(2)] == ["3 hurt", "1 helps", "2 with not enough data"]
    assert Verdict.HELPS.colour == "#1a9850"
