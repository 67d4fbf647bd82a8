"""Decisive verdicts: a smallest effect of interest (negligible / undecided), the step-down over
difference and equivalence claims, group-sequential boundaries and adaptive seeds."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.report import write_report
from ablate.stats import compare
from ablate.stats.boundaries import FIXED, adaptive_looks, spent
from ablate.stats.inference import equivalence_p, holm_confidence, intervals, step_down
from ablate.stats.sequential import MAX_SEEDS, schedule, scheduled
from ablate.stats.validation import sequential_error_rates, simulate


def study(effects: dict[str, float], n_seeds: int, min_effect: float | None, seed: int = 0):
    results, spec = simulate(effects, n_seeds, np.random.default_rng(seed))
    return results, replace(spec, min_effect=min_effect)


def verdicts(results: pd.DataFrame, spec) -> dict[str, str]:
    return dict(zip(*compare(results, spec)[["label", "outcome"]].to_numpy().T))


def test_planted_aa_variant_is_negligible():
    """A/A with noise SD 1, 10 seeds, min_effect 3 SD: the interval lies inside ±3."""
    results, spec = study({"base": 0.0, "same": 0.0}, 10, min_effect=3.0)
    row = compare(results, spec).iloc[0]
    assert row["outcome"] == "negligible"
    assert -3.0 < row["ci_low"] and row["ci_high"] < 3.0


def test_planted_large_effect_helps_with_min_effect():
    results, spec = study({"base": 0.0, "better": 6.0}, 6, min_effect=1.0)
    assert verdicts(results, spec) == {"better": "helps"}


def test_tiny_effect_with_few_seeds_is_undecided():
    """A true effect of 0.2 SD, below min_effect = 0.5 SD, on 3 seeds: the interval includes 0
    and crosses ±0.5, so neither helps nor negligible can be claimed."""
    results, spec = study({"base": 0.0, "tiny": 0.2}, 3, min_effect=0.5)
    row = compare(results, spec).iloc[0]
    assert row["outcome"] == "undecided"
    assert row["ci_low"] < 0 < row["ci_high"] and (row["ci_low"] < -0.5 or row["ci_high"] > 0.5)


def test_without_min_effect_the_verdicts_are_todays(tmp_path):
    """No min_effect: helps / no clear effect with Holm's intervals, never negligible or
    undecided, and the report says that no clear effect is not evidence of no effect."""
    results, spec = study({"base": 0.0, "same": 0.0, "better": 6.0}, 5, min_effect=None)
    table = compare(results, spec)
    assert dict(zip(table["label"], table["outcome"])) == {"same": "no clear effect",
                                                           "better": "helps"}
    adjusted, confidence = holm_confidence(table["p"].to_numpy(), 0.05)
    wide = results.pivot(index="seed", columns="label", values="final")
    se = [(wide[v] - wide["base"]).std(ddof=1) / np.sqrt(5) for v in table["label"]]
    half = stats.t.ppf(1 - (1 - confidence) / 2, 4) * se
    assert table["p_holm"].tolist() == adjusted.tolist()
    assert table["ci_high"].to_numpy() == pytest.approx((table["diff"] + half).to_numpy())
    text = write_report(results, pd.DataFrame(columns=["run_id", "variant", "label", "seed",
                                                       "key", "step", "value"]),
                        spec, tmp_path).read_text()
    assert "No clear effect is not evidence of no effect" in text
    assert "negligible" not in text.split("## Methods")[0].lower()


def test_first_screen_states_the_band(tmp_path):
    results, spec = study({"base": 0.0, "same": 0.0, "better": 6.0}, 10, min_effect=3.0)
    history = pd.DataFrame(columns=["run_id", "variant", "label", "seed", "key", "step", "value"])
    text = write_report(results, history, spec, tmp_path).read_text()
    first = text.split("## Variants and costs")[0]
    assert "Smallest effect of interest: ±3" in first
    assert "**Negligible** (the whole interval lies inside ±3 final" in first
    assert "| same " in first and "**negligible**" in first
    assert "shaded band is ±3 final" in first and (tmp_path / "forest.png").exists()
    assert "Shaffer" in text.split("## Methods")[1]


def test_step_down_without_equivalence_is_holm_and_with_it_settles_claims():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for m in (1, 3, 8):
        p = rng.uniform(0, 0.05, m) ** 2
        adjusted, level = step_down(p, np.full(m, np.nan), 0.05)
        reject, expected = multipletests(p, 0.05, "holm")[:2]
        assert adjusted == pytest.approx(expected)
        rank = np.argsort(np.argsort(p)) + 1  # Holm: rank k rejected at α/(m − k + 1)
        holm = np.where(reject, 0.05 / (m - rank + 1), 0.05 / max(m - reject.sum(), 1))
        assert level == pytest.approx(holm)
    # contrast 0 settles both claims at α/2, so contrast 1 is tested at α/1
    adjusted, level = step_down(np.array([0.001, 0.04]), np.array([0.002, np.nan]), 0.05)
    assert level.tolist() == pytest.approx([0.025, 0.05]) and adjusted[1] < 0.05
    # a difference claim alone frees nothing while its equivalence claim is open
    adjusted, level = step_down(np.array([0.001, 0.04]), np.array([0.9, np.nan]), 0.05)
    assert level.tolist() == pytest.approx([0.025, 0.025]) and adjusted[1] >= 0.05


def test_intervals_decide_both_claims_on_random_families():
    """Negligible exactly when the interval shown lies inside ±δ (the equivalence claim is
    accepted), a difference exactly when it excludes 0; at fixed seeds and at sequential looks."""
    rng = np.random.default_rng(5)
    for looks in (FIXED, adaptive_looks(3, 8)):
        agree = 0
        for _ in range(60):
            m = int(rng.integers(1, 6))
            n = rng.integers(3, 9, m)
            diff, se = rng.normal(0, 0.4, m), rng.uniform(0.02, 0.3, m)
            p = 2 * stats.t.sf(np.abs(diff) / se, n - 1)
            out = intervals(diff, se, n, p, 0.05, min_effect=0.5, looks=looks)
            level = 1 - out["confidence"]
            accepted = np.array([equivalence_p(*x, 0.5, looks) for x in zip(diff, se, n)]) < level
            inside = (out["ci_low"] > -0.5) & (out["ci_high"] < 0.5)
            excludes = (out["ci_low"] > 0) | (out["ci_high"] < 0)
            assert (inside == accepted).all()
            assert ((out["p_holm"] < 0.05) == excludes).all()
            agree += int(inside.sum())
        assert agree > 10  # the band is reached often enough to test something


def test_boundaries_spend_alpha_over_every_look():
    """On null paths other than those the boundaries were computed on: the chance of crossing at
    any of the looks 3..12 is α; a single look is the plain t-test."""
    looks = adaptive_looks(3, 12)
    x = np.random.default_rng(99).standard_normal((100_000, 12))
    crossed = np.zeros(len(x), bool)
    for n in looks.sizes:
        d = x[:, :n]
        t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
        crossed |= np.abs(t) >= looks.critical(0.05, n)
    assert crossed.mean() == pytest.approx(0.05, abs=0.004)
    assert FIXED.critical(0.05, 10) == pytest.approx(stats.t.ppf(0.975, 9))
    for a in (0.001, 0.0125, 0.05):
        assert looks.adjusted(looks.nominal(a, 7), 7) == pytest.approx(a, rel=1e-9)
    assert looks.nominal(0.05, 3) < spent(0.05, np.array([0.5]))[0] < looks.nominal(0.05, 12)


def adaptive_results(effects: dict[str, float], n_seeds: int) -> tuple[pd.DataFrame, object]:
    """Trials with a shared per-seed value, each variant's effect and a little noise of its own
    (SD about 0.001), on seeds 0..n_seeds-1 of an adaptive study with max_seeds = n_seeds."""
    results, spec = simulate(effects, n_seeds, np.random.default_rng(1))
    noise = results["final"] - 0.5 - results["variant"].map(effects)
    results["final"] = 0.9 + results["variant"].map(effects) + 0.001 * noise
    return results, replace(spec, adaptive=(3, n_seeds))


def test_schedule_stops_decided_variants_and_continues_close_calls():
    """Replayed from results alone: clear effects stop at min_seeds, a close call runs to
    max_seeds with the baseline, and a trial not ended yet leaves the round pending."""
    variants = ["base", "broken", "good", "close"]
    results, spec = adaptive_results({"base": 0.0, "broken": -0.8, "good": 0.3,
                                      "close": 0.0005}, 6)
    plan = schedule(results, spec, variants)
    assert plan.counts == {"base": 6, "broken": 3, "good": 3, "close": 6} and not plan.pending
    assert plan.stops == {"broken": "hurts", "good": "helps", "close": MAX_SEEDS}
    cut, cut_spec = scheduled(results, spec)
    assert len(cut) == 18 and cut_spec.n_planned == 18 and "left out" in cut_spec.notes[-1]
    running = results.assign(status=np.where((results["variant"] == "close")
                                             & (results["seed"] == 4), "running", "finished"))
    plan = schedule(running, spec, variants)
    assert plan.pending and plan.counts == {"base": 5, "broken": 3, "good": 3, "close": 5}
    negligible = schedule(results, replace(spec, min_effect=0.01), variants)
    assert negligible.stops["close"] == "negligible" and negligible.counts["close"] < 6


def test_sequential_procedure_keeps_the_error_rate_where_naive_looks_inflate_it():
    """300 simulated adaptive studies per figure, 3 to 12 seeds (about 15 s)."""
    out = sequential_error_rates(reps=300, seed=0)
    print(f"\nsequential figures: {out}")
    se = np.sqrt(0.05 * 0.95 / out["reps"])
    assert out["familywise_sequential"] <= 0.05 + 2 * se
    assert out["familywise_naive"] >= 0.15  # Holm at every look, as if each were the only one
    assert out["power"] >= 0.8 and out["mean_seeds"] < 10
    assert out["false_negligible"] <= 0.05 and out["coverage"] >= 0.95
