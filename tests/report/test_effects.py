"""The design's family of effects: intervals that agree with verdicts, factorial contrasts,
level pairs, trivial cells, family-wise error rate."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ablate.stats import compare, effects
from ablate.stats.effects import dominant_factor, trivial_cells, without_trivial
from ablate.stats.inference import holm_confidence
from ablate.stats.validation import factorial_error_rates, simulate, simulate_factorial

DECIDED = ("helps", "hurts", "interaction found")


def test_holm_confidence_uses_the_level_of_the_deciding_step():
    p = np.array([0.03, 0.001, np.nan, 0.5, 0.01])
    adjusted, confidence = holm_confidence(p, 0.05)
    # sorted: 0.001 < 0.05/4 and 0.01 < 0.05/3 are rejected; 0.03 >= 0.05/2 stops Holm
    assert adjusted[[1, 4]].tolist() == pytest.approx([0.004, 0.03])
    assert confidence[1] == pytest.approx(1 - 0.05 / 4)
    assert confidence[4] == pytest.approx(1 - 0.05 / 3)
    assert confidence[[0, 3]].tolist() == pytest.approx([1 - 0.05 / 2] * 2)  # where Holm stopped
    assert np.isnan(adjusted[2]) and np.isnan(confidence[2])


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, m) ** 2
        p[rng.integers(m)] = p[0]  # ties
        adjusted, _ = holm_confidence(p, 0.05)
        reject, expected = multipletests(p, 0.05, "holm")[:2]
        assert adjusted == pytest.approx(expected)
        assert ((adjusted < 0.05) == reject).all()


def _check_agreement(table: pd.DataFrame) -> tuple[int, int]:
    """Every tested row: interval excludes 0 <=> a decided verdict <=> Holm p < 0.05."""
    tested = table[table["p"].notna()]
    excludes = (tested["ci_low"] > 0) | (tested["ci_high"] < 0)
    decided = tested["verdict"].str.contains("|".join(DECIDED))
    assert (excludes == decided).all()
    assert (excludes == (tested["p_holm"] < 0.05)).all()
    assert (tested.loc[excludes, "outcome"].isin([*DECIDED, "unstable"])).all()
    return int(excludes.sum()), int((~excludes).sum())


def test_intervals_agree_with_verdicts_on_simulated_tables():
    """300 one-at-a-time tables (some with diverged trials) and 30 factorial ones, effects drawn
    at random so that calls go both ways."""
    rng = np.random.default_rng(11)
    decided = undecided = 0
    for i in range(300):
        effects_ = {"base": 0.0, **{f"v{k}": rng.normal(0, 1.5) for k in range(4)}}
        results, spec = simulate(effects_, int(rng.integers(3, 9)), rng)
        if i % 4 == 0:  # a diverged trial makes an unstable row that may still differ clearly
            lost = (results["variant"] == "v0") & (results["seed"] == 0)
            results.loc[lost, ["status", "final"]] = ["diverged", np.nan]
        a, b = _check_agreement(compare(results, spec))
        decided, undecided = decided + a, undecided + b
    factors = {"a": [0, 1], "b": [0, 1], "c": [0, 1, 2]}
    for _ in range(30):
        size = rng.normal(0, 1, 3)
        results, spec = simulate_factorial(
            lambda cell, s=size: s[0] * cell["a"] + s[1] * cell["a"] * cell["b"]
            + s[2] * (cell["c"] == 2), factors, 4, rng)
        a, b = _check_agreement(effects(results, spec))
        decided, undecided = decided + a, undecided + b
    assert decided > 200 and undecided > 200  # both sides of the equivalence were exercised


def test_familywise_error_rate_of_the_factorial_analysis():
    """200 simulated A/A full factorials (2 x 2 x 3 cells, 5 seeds): every main effect, pair of
    levels, interaction and simple effect (16 tests, one Holm family) is null."""
    figures = factorial_error_rates(reps=200, seed=0)
    print(f"\nfactorial error rates: {figures}")
    assert figures["tests_per_study"] == 16
    assert figures["familywise_error_rate"] <= 0.05
    assert figures["power"] >= 0.3  # ... and a planted main effect of one SD is still found


def test_factorial_effects_pairs_of_levels_interactions_and_simple_effects():
    factors = {"a": [0, 1], "c": ["x", "y", "z"]}
    results, spec = simulate_factorial(
        lambda cell: 3.0 * (cell["c"] == "z") + 3.0 * cell["a"] * (cell["c"] == "y"),
        factors, 6, np.random.default_rng(2))
    table = effects(results, spec).set_index("term")
    assert table.loc["c: y → z", "outcome"] == "helps"  # two non-baseline levels compared
    assert table.loc["c: x → y", "kind"] == "main"
    assert table.loc["a × c (x → y)", "outcome"] == "interaction found"
    assert table.loc["a × c (x → z)", "outcome"] == "no clear effect"
    # c dominates; a's effect within each level of c: only where c=y
    assert table.loc["a: 0 → 1, when c=y", "outcome"] == "helps"
    assert table.loc["a: 0 → 1, when c=x", "outcome"] == "no clear effect"
    # main effect of c: y → z, averaged over a, paired by seed
    wide = results.pivot_table(index="seed", columns="c", values="final", aggfunc="mean")
    assert table.loc["c: y → z", "diff"] == pytest.approx((wide["z"] - wide["y"]).mean())


def test_a_lost_cell_drops_only_its_own_pairs():
    results, spec = simulate_factorial(lambda cell: 0.0, {"a": [0, 1], "b": [0, 1]}, 4,
                                       np.random.default_rng(3))
    lost = (results["variant"] == "v3") & (results["seed"] == 0)
    results.loc[lost, ["status", "final"]] = ["diverged", np.nan]
    table = effects(results, spec).set_index("term")
    assert table.loc["a: 0 → 1", "n_pairs"] == 4 and table.loc["a: 0 → 1", "n_partial"] == 1
    assert table.loc["a × b", "n_pairs"] == 3 and table.loc["a × b", "lost_diverged"] == 1
    assert compare(results, spec).set_index("variant").loc["v3", "outcome"] == "unstable"


def test_one_at_a_time_compares_every_pair_of_levels():
    results, spec = simulate({"lstm": 0.0, "gru": -2.0, "rnn": 2.0}, 6, np.random.default_rng(4))
    table = effects(results, spec).set_index("term")
    assert list(table["kind"]) == ["variant", "variant", "pair"]
    assert table.loc["factor: gru → rnn", "outcome"] == "helps"


def test_trivial_cells_are_flagged_and_their_distortion_shown():
    rng = np.random.default_rng(5)
    factors = {"bn": [True, False], "pool": ["avg", "max"], "k": [3, 5]}
    results, spec = simulate_factorial(lambda cell: 0.0, factors, 3, rng)
    stuck = ~results["bn"] & (results["pool"] == "max")  # these cells learned nothing
    results["final"] = np.where(stuck, 0.1 + rng.normal(0, 0.001, len(results)),
                                0.9 + 0.02 * results["final"])
    spec = replace(spec, metric="val_acc")
    flagged = trivial_cells(results, spec)
    assert sorted(flagged["variants"]) == sorted(results.loc[stuck, "variant"].unique())
    assert flagged["value"] == pytest.approx(0.1, abs=0.01) and flagged["partly"] == {}
    table = without_trivial(results, spec, flagged["variants"]).set_index("term")
    assert table.loc["pool: avg → max", "all"] < -0.3  # dragged down by the stuck cells
    assert abs(table.loc["pool: avg → max", "trained"]) < 0.05  # no effect where it trained
    assert table.loc["pool: avg → max", "kept"] == 2
    assert trivial_cells(results, replace(spec, chance=0.1))["variants"] == flagged["variants"]


def test_a_large_main_effect_is_not_a_trivial_cell():
    results, spec = simulate_factorial(lambda cell: 10.0 * cell["a"], {"a": [0, 1], "b": [0, 1]},
                                       4, np.random.default_rng(6))
    assert trivial_cells(results, spec) is None  # not an accuracy, no chance level given
    results["final"] = 0.6 + 0.3 * results["a"] + 0.001 * results["final"]
    assert trivial_cells(results, replace(spec, metric="val_acc")) is None  # floor above 0.5


def _main_family(diffs: dict[str, float], se: float, n: int = 10) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "main", "factor": f, "diff": d, "se": se, "n_pairs": n}
                         for f, d in diffs.items()])


def test_the_dominant_factor_breaks_near_ties_by_the_study_order():
    """Main effects within the largest one's 95% interval are a tie, decided by the factors'
    order, so noise (e.g. 1 vs 2 torch threads) does not change which factor the simple effects
    are conditioned on; a clearly larger effect still wins."""
    tied = _main_family({"res": -0.057, "k": -0.03, "bn": -0.055}, se=0.005)  # any row order
    assert dominant_factor(tied, ["bn", "res", "k"]) == "bn"  # |res| larger by 0.002, half-CI 0.011
    clear = _main_family({"bn": -0.040, "res": -0.057, "k": -0.03}, se=0.005)
    assert dominant_factor(clear, ["bn", "res", "k"]) == "res"
    exact = _main_family({"bn": -0.040, "res": -0.057}, se=0.0)  # no interval: the largest
    assert dominant_factor(exact, ["bn", "res"]) == "res"


def test_simple_effects_follow_the_first_of_two_tied_factors_in_the_report():
    # a and b matter equally (1 SD each, in opposite directions), c not at all; b's sample
    # effect may come out larger, but the simple effects are within a, and the report says why
    for seed in range(4):
        results, spec = simulate_factorial(
            lambda cell: 1.0 * cell["a"] - 1.0 * cell["b"], {"a": [0, 1], "b": [0, 1],
                                                          "c": [0, 1]}, 8,
            np.random.default_rng(seed))
        table = effects(results, spec)
        simple = table[table["kind"] == "simple"]["term"]
        assert simple.str.endswith(("when a=0", "when a=1")).all(), list(simple)
    from ablate.report.sections.factorial import factorial_details

    text = "\n".join(factorial_details(results, table, compare(results, spec), spec))
    assert "### Simple effects within each level of a" in text
    assert "a's main effect is as large as the largest (b's) within its 95% interval" in text


def test_main_effects_are_ordered_by_their_own_size_not_by_a_simple_effect():
    from ablate.report.sections.conclusion import display_order

    family = pd.DataFrame([
        {"kind": "main", "factor": "res", "term": "res", "diff": -0.055},
        {"kind": "main", "factor": "k", "term": "k", "diff": -0.032},
        {"kind": "main", "factor": "bn", "term": "bn", "diff": -0.057},
        {"kind": "interaction", "factor": "bn × res", "term": "bn × res", "diff": -0.11},
        {"kind": "simple", "factor": "res", "term": "res, when bn=False", "diff": -0.111},
        {"kind": "simple", "factor": "k", "term": "k, when bn=False", "diff": -0.063},
    ])
    assert list(display_order(family)["term"]) == [
        "bn", "res", "k", "bn × res", "res, when bn=False", "k, when bn=False"]
