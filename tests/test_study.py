"""Study expansion, identity and validation (no torch needed)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from ablate.config import TRAIN_DEFAULTS, variant_id
from ablate.design import fractional_design
from ablate.source import parse_override
from ablate.study import Study
from ablate.validate import StudyError


def net(*, batch_norm=True, residual=True, kernel_size=3, pool="adaptive_max", width=16,
        num_classes=10):
    return None


def images(*, batch_size=128, augment=False):
    return None


FOUR = {
    "model.batch_norm": [True, False],
    "model.residual": [True, False],
    "model.kernel_size": [3, 5],
    "model.pool": ["adaptive_max", "max"],
}


def make(**kw):
    kw.setdefault("model", net)
    kw.setdefault("data", images)
    return Study(kw.pop("name", "s"), **kw)


# ---------------------------------------------------------------------------- expansion
def test_full_factorial_counts_and_order():
    study = make(factors=FOUR, design="full_factorial", seeds=3)
    assert len(study.variants) == 16
    assert len(study.trials) == 48
    combos = [tuple(v.levels.values()) for v in study.variants]
    assert combos == list(itertools.product(*FOUR.values()))  # itertools order, baseline first
    assert study.variants[0].baseline and study.variants[0].label == "baseline"
    assert sum(v.baseline for v in study.variants) == 1
    assert [t.seed for t in study.trials[:3]] == [0, 1, 2]  # seeds inner
    assert len({v.id for v in study.variants}) == 16


def test_one_at_a_time_changes_one_factor_each():
    study = make(factors={**FOUR, "model.kernel_size": [3, 5, 7]})
    labels = [v.label for v in study.variants]
    assert labels == ["baseline", "batch_norm=False", "residual=False", "kernel_size=5",
                      "kernel_size=7", "pool=max"]
    for v in study.variants[1:]:
        changed = [k for k in v.levels if v.levels[k] != study.baseline[k]]
        assert len(changed) == 1


def test_four_two_level_factors_give_5_one_at_a_time():
    assert len(make(factors=FOUR).variants) == 5


def test_fractional_four_factors_is_resolution_iv_with_8_runs():
    study = make(factors=FOUR, design="fractional")
    assert len(study.variants) == 8
    assert study.resolution == 4
    assert study.variants[0].label == "baseline"
    keys = list(FOUR)
    coded = [[1 if v.levels[k] != FOUR[k][0] else -1 for k in keys] for v in study.variants]
    # balanced and orthogonal main effects
    for j in range(4):
        assert sum(row[j] for row in coded) == 0
        for i in range(j):
            assert sum(row[i] * row[j] for row in coded) == 0
    # D = ABC: main effects are clear of two-factor interactions ...
    assert not any(":" not in k for k in study.aliases)
    # ... and two-factor interactions are aliased in pairs: AB=CD, AC=BD, AD=BC
    a, b, c, d = keys
    assert study.aliases[f"{a}:{b}"] == [f"{c}:{d}"]
    assert study.aliases[f"{a}:{c}"] == [f"{b}:{d}"]
    assert study.aliases[f"{a}:{d}"] == [f"{b}:{c}"]
    for row in coded:  # the defining relation I = ABCD holds on every run
        assert row[0] * row[1] * row[2] * row[3] == 1


@pytest.mark.parametrize("k,runs,resolution", [(3, 4, 3), (5, 8, 3), (7, 8, 3), (8, 16, 4),
                                               (15, 16, 3)])
def test_fractional_sizes_and_resolution(k, runs, resolution):
    columns, res = fractional_design(k)
    assert len(columns) == k and all(len(c) == runs for c in columns)
    assert res == resolution
    assert len({tuple(c) for c in columns} | {tuple(-x for x in c) for c in columns}) == 2 * k
    assert all(c[0] == -1 for c in columns)  # the baseline (all low) is the first run


def test_fractional_main_effects_aliased_with_interactions_at_resolution_iii():
    factors = {f"model.f{i}": [0, 1] for i in range(3)}

    def anything(**kw):
        return None

    study = Study("s", model=anything, data=images, factors=factors, design="fractional")
    assert len(study.variants) == 4 and study.resolution == 3
    assert study.aliases["model.f2"] == ["model.f0:model.f1"]


def test_fractional_rejects_three_level_factor():
    with pytest.raises(StudyError, match="two-level factors only.*kernel_size.*3 levels"):
        make(factors={**FOUR, "model.kernel_size": [3, 5, 7]}, design="fractional")


def test_explicit_design_fills_baseline_and_puts_it_first():
    study = make(factors=FOUR, design=[{"model.pool": "max"},
                                        {"model.batch_norm": False, "model.kernel_size": 5}])
    assert [v.label for v in study.variants] == [
        "baseline", "pool=max", "batch_norm=False,kernel_size=5"]


def test_constraints_predicate_and_forbidden_dicts():
    study = make(
        factors=FOUR,
        design="full_factorial",
        constraints=[lambda c: not (c["model.pool"] == "max" and c["model.kernel_size"] == 5),
                     {"model.batch_norm": False, "model.residual": False}],
    )
    assert len(study.variants) == 16 - 4 - 4 + 1
    for v in study.variants:
        assert not (v.levels["model.pool"] == "max" and v.levels["model.kernel_size"] == 5)
        assert v.levels["model.batch_norm"] or v.levels["model.residual"]


def test_explicit_baseline_not_first_level():
    study = make(factors=FOUR, baseline={"model.kernel_size": 5})
    assert study.variants[0].levels["model.kernel_size"] == 5
    assert "kernel_size=3" in [v.label for v in study.variants]


def test_label_uses_full_key_when_short_name_is_ambiguous():
    def fn(config, run):
        pass

    study = Study("s", train=fn, factors={"a.lr": [1, 2], "b.lr": [1, 2]}, metric="loss")
    assert [v.label for v in study.variants] == ["baseline", "a.lr=2", "b.lr=2"]


# ---------------------------------------------------------------------------- identity
def test_id_stable_across_processes():
    study = make(factors=FOUR)
    code = ("import tests.test_study as t; s = t.make(factors=t.FOUR); "
            "print(' '.join(v.id for v in s.variants))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [v.id for v in study.variants]


def test_any_config_change_changes_id_and_seed_does_not():
    base = make(factors=FOUR, config={"train.lr": 0.1})
    ids = {v.id for v in base.variants}
    for override in ({"train.lr": 0.2}, {"train.epochs": 3}, {"data.batch_size": 64},
                     {"model.width": 32}):
        other = base.with_overrides(override)
        assert not ids & {v.id for v in other.variants}, override
    assert [v.id for v in base.with_overrides(seeds=5).variants] == [v.id for v in base.variants]
    assert variant_id({"a.b": 1}) != variant_id({"a.b": 1.0})
    assert variant_id({"a.b": (1, 2)}) == variant_id({"a.b": [1, 2]})


def test_resolved_config_includes_train_defaults():
    v = make(factors=FOUR).variants[1]
    assert set(TRAIN_DEFAULTS) <= set(v.config)
    assert v.config["model.batch_norm"] is False


def test_class_activation_maps_are_an_optional_setting_of_their_own():
    plain = make(factors=FOUR)
    assert "train.cams" not in plain.variants[0].config  # absent: ids don't change
    cams = make(factors=FOUR, config={"train.cams": True})
    assert cams.variants[0].config["train.cams"] is True
    assert cams.variants[0].config["train.keep_weights"] is False  # weights: another setting
    assert not {v.id for v in plain.variants} & {v.id for v in cams.variants}
    with pytest.raises(StudyError, match="train.cams='yes' does not fit: expected True or False"):
        make(config={"train.cams": "yes"})


def test_metric_mode_inferred_and_overridable():
    assert make(metric="val_acc").mode == "max"
    assert make(metric="val_loss").mode == "min"
    assert make(metric="val_bpc").mode == "min"
    assert make(metric="reward", mode="max").mode == "max"
    with pytest.raises(StudyError, match="mode='max' or mode='min'"):
        make(metric="reward")


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"factors": {"model.batchnorm": [True, False]}},
         "'model.batchnorm' is not accepted by net; did you mean 'model.batch_norm'"),
        ({"factors": {"batch_norm": [True, False]}}, "not a dotted name"),
        ({"factors": {"optim.lr": [0.1, 0.2]}}, "outside the model./data./train. namespaces"),
        ({"config": {"train.learning_rate": 0.1}}, "not accepted by ablate.train"),
        ({"config": {"data.batchsize": 3}}, "did you mean 'data.batch_size'"),
        ({"factors": {"model.batch_norm": []}}, "0 level.*needs at least two"),
        ({"factors": {"model.batch_norm": [True]}}, "1 level.*needs at least two"),
        ({"factors": {"model.kernel_size": [3, 3, 5]}}, "level.*3 more than once"),
        ({"factors": {"model.width": [[16, 32], [8]]}}, r"unhashable.*Use a tuple: \(16, 32\)"),
        ({"factors": {"model.pool": "max"}}, "not a list"),
        ({"factors": {"model.pool": [max, min]}}, "not plain data"),
        ({"config": {"model.width": object()}}, "not plain data"),
        ({"factors": FOUR, "baseline": {"model.kernel_size": 7}}, "7.*not one of its levels"),
        ({"factors": FOUR, "baseline": {"model.kernelsize": 3}},
         "did you mean 'model.kernel_size'"),
        ({"factors": FOUR, "constraints": lambda c: c["model.batch_norm"] is False},
         "exclude the baseline"),
        ({"factors": FOUR, "constraints": lambda c: False}, "exclude every variant"),
        ({"factors": FOUR, "constraints": [{"model.pol": "max"}]}, "did you mean 'model.pool'"),
        ({"seeds": 0}, "at least one seed"),
        ({"seeds": -2}, "at least one seed"),
        ({"seeds": [0, -1]}, "non-negative"),
        ({"seeds": [1, 1]}, "repeats a seed"),
        ({"name": "my study/v2"}, "can't be used as an MLflow experiment name.*'my-study-v2'"),
        ({"name": ""}, "can't be used as an MLflow experiment name"),
        ({"factors": FOUR, "design": "factorial"}, "did you mean 'full_factorial'"),
        ({"factors": FOUR, "design": [{"model.pool": "avg"}]}, "not one of its levels"),
        ({"factors": FOUR, "config": {"model.pool": "max"}}, "both a factor and a config"),
        ({"model": None}, "has no model="),
        ({"model": 3}, "is not callable"),
    ],
)
def test_invalid_studies_are_rejected_with_the_fix(kwargs, pattern):
    with pytest.raises(StudyError, match=pattern):
        make(**kwargs)


def test_required_factory_argument_must_be_set():
    def data(*, path, batch_size=4):
        return None

    with pytest.raises(StudyError, match="requires 'path'.*add 'data.path'"):
        Study("s", model=net, data=data)
    assert Study("s", model=net, data=data, config={"data.path": "x.txt"})


def test_train_function_accepts_any_namespaced_keys_and_checks_signature():
    def fn(config, run):
        pass

    study = Study("s", train=fn, config={"opt.lr": 0.1}, factors={"opt.momentum": [0.9, 0.0]},
                  metric="loss")
    assert "train.epochs" not in study.variants[0].config  # no built-in defaults
    with pytest.raises(StudyError, match=r"two arguments \(config, run\)"):
        Study("s", train=lambda: None, metric="loss")
    with pytest.raises(StudyError, match="both train= and model="):
        Study("s", train=fn, model=net, metric="loss")


def test_with_overrides_rejects_factor_and_validates_keys():
    study = make(factors=FOUR)
    with pytest.raises(StudyError, match="is a factor"):
        study.with_overrides({"model.pool": "max"})
    with pytest.raises(StudyError, match="did you mean 'train.epochs'"):
        study.with_overrides({"train.epoch": 1})
    assert study.with_overrides({"train.epochs": 1}).variants[0].config["train.epochs"] == 1


@pytest.mark.parametrize(
    "text,expected",
    [("train.epochs=2", ("train.epochs", 2)), ("train.lr=1e-3", ("train.lr", 0.001)),
     ("model.widths=(8, 16)", ("model.widths", (8, 16))), ("train.schedule=sgdr",
                                                           ("train.schedule", "sgdr")),
     ("data.path='/tmp/a b.txt'", ("data.path", "/tmp/a b.txt")),
     ("train.grad_clip=None", ("train.grad_clip", None))],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train.lr=[1,"])
def test_parse_override_rejects(text):
    with pytest.raises(StudyError, match="--set"):
        parse_override(text)
