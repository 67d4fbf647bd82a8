"""Adaptive seeds and min_effect end to end: the real CLI, real MLflow stores (sqlite in temp
folders), tiny `train=fn` studies that log synthetic numbers."""

from __future__ import annotations

import logging
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.source import load_study
from ablate.study import Study
from ablate.validate import StudyError

# broken: constant chance value; good: a large gain; close: a gain far below the seed noise's
# reach with 3 to 5 seeds. A train function that logs numbers made from the seed alone; each
# variant's own noise differs from the baseline's (paired differences that never vary are not
# enough data, not a decision). The close variant raises KeyboardInterrupt once at seed 3 (its
# second round) unless FLAG exists.
STUDY = """
from pathlib import Path
from ablate import Study

EFFECTS = {"base": 0.0, "broken": 0.0, "good": 0.3, "close": 0.0003}

def train(config, run):
    mode = config["mode"]
    if mode == "close" and run.seed == 3 and not Path(FLAG).exists():
        Path(FLAG).write_text("interrupted once")
        raise KeyboardInterrupt
    shared = 0.9 + 0.0001 * ((run.seed * 7) % 5 - 2)
    own = 0.0001 * ((run.seed * 3 + len(mode) + (mode == "good")) % 4 - 1.5)
    value = 0.1 if mode == "broken" else shared + EFFECTS[mode] + own
    run.log({"loss": 1.0, "score": value}, step=0)

study = Study("adaptive", train=train, factors={"mode": list(EFFECTS)}, seeds="adaptive",
              min_seeds=3, max_seeds=5, metric="score", min_effect=0.0001)
"""
EXPECTED = {"baseline": [0, 1, 2, 3, 4], "mode=broken": [0, 1, 2], "mode=good": [0, 1, 2],
            "mode=close": [0, 1, 2, 3, 4]}


def write(folder: Path, flag: Path) -> Path:
    path = folder / "adaptive_study.py"
    path.write_text(textwrap.dedent(STUDY).replace("FLAG", repr(str(flag))))
    return path


def run(path: Path, folder: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", f"sqlite:///{folder / 'm.db'}",
                 "--checkpoint-dir", str(folder / "ck"), *extra])


def trials(folder: Path) -> dict[str, list[tuple[int, str, float | None]]]:
    """Per label: (seed, status, final score) of every trial run, by seed."""
    client = MlflowClient(f"sqlite:///{folder / 'm.db'}")
    exp = client.get_experiment_by_name("adaptive")
    out: dict[str, list[tuple[int, str, float]]] = {}
    for r in client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'"):
        tags = r.data.tags
        out.setdefault(tags["ablate.label"], []).append(
            (int(tags["ablate.seed"]), tags["ablate.status"], r.data.metrics.get("final_score")))
    return {label: sorted(rows) for label, rows in out.items()}


def seeds(table: dict[str, list[tuple[int, str, float | None]]]) -> dict[str, list[int]]:
    return {label: [seed for seed, _, _ in rows] for label, rows in table.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The study run once without interruption: (its folder, its study file)."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "flag").write_text("never interrupt")
    path = write(folder, folder / "flag")
    assert run(path, folder) == 0
    return folder, path


def test_decided_variants_stop_at_min_seeds_and_a_close_call_gets_more(reference, capsys):
    folder, path = reference
    assert seeds(trials(folder)) == EXPECTED
    assert all(status == "finished" for rows in trials(folder).values() for _, status, _ in rows)
    out = folder / "report"
    assert main(["report", str(path), "--tracking-uri", f"sqlite:///{folder / 'm.db'}",
                 "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "5 variants" not in text and "3 to 5 seeds (adaptive)" in text
    assert "16 of the 20 trials of giving every variant 5 seeds, 4 (20%) saved" in text
    assert "| mode=broken |       3 | decided at 3 seeds: hurts" in text
    assert "| mode=good   |       3 | decided at 3 seeds: helps" in text
    assert "| mode=close  |       5 | max_seeds reached (5), still undecided" in text
    assert "Lan–DeMets" in text.split("## Methods")[1]
    capsys.readouterr()
    assert run(path, folder) == 0  # nothing left to train
    assert "trained now 0, already done 16" in capsys.readouterr().out


def test_an_interrupted_adaptive_study_resumes_to_the_same_trials(reference, tmp_path):
    path = write(tmp_path, tmp_path / "flag")
    assert run(path, tmp_path) == 130  # the close variant's seed 3, in the second round
    first = seeds(trials(tmp_path))
    assert first["mode=close"] == [0, 1, 2, 3] and (tmp_path / "flag").exists()
    assert run(path, tmp_path) == 0
    assert trials(tmp_path) == trials(reference[0])  # same trials, statuses and values


def test_plan_shows_the_adaptive_rule_and_min_effect(reference, capsys):
    _, path = reference
    assert main(["plan", str(path), "--min-effect", "0.02"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "adaptive seeds: 3 to 5 per variant" in out and "12 to 20 trials" in out
    assert "O'Brien-Fleming-type" in out and "±0.02 score (min_effect)" in out
    assert main(["plan", str(path), "--seeds", "2"]) == 0
    assert "4 variants x 2 seeds [0, 1] = 8 trials" in " ".join(capsys.readouterr().out.split())


def test_min_effect_and_adaptive_seeds_keep_the_ids(reference):
    _, path = reference
    adaptive = load_study(path)
    fixed = load_study(path, seeds=5)
    assert [v.id for v in adaptive.variants] == [v.id for v in fixed.variants]
    assert adaptive.with_overrides(min_effect=0.5).plan == adaptive.plan
    assert fixed.with_overrides(min_effect=0.5).plan == fixed.plan
    assert adaptive.plan != fixed.plan  # the same candidate trials, but a stopping rule
    assert fixed.with_overrides(seeds="adaptive").min_seeds == 3


@pytest.mark.parametrize("settings, problem", [
    ({"seeds": "adaptive", "min_seeds": 1}, "2 <= min_seeds"),
    ({"seeds": "adaptive", "min_seeds": 6, "max_seeds": 5}, "min_seeds <= max_seeds"),
    ({"seeds": "adaptive", "max_seeds": 500}, "max_seeds <= 50"),
    ({"seeds": 3, "max_seeds": 5}, "apply to seeds='adaptive' only"),
    ({"seeds": "adaptve"}, "or 'adaptive'"),
    ({"min_effect": 0}, "positive number"),
    ({"min_effect": float("nan")}, "positive number"),
])
def test_bad_adaptive_settings_are_refused(settings, problem):
    with pytest.raises(StudyError, match=problem.replace("(", r"\(")):
        Study("bad", train=lambda config, run: None, factors={"x": [0, 1]}, metric="score",
              **settings)


needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed")


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray instance for the module (``ablate run`` joins it)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


@needs_ray
@pytest.mark.slow
def test_the_same_adaptive_study_on_ray_gets_the_same_seeds(reference, ray_local, tmp_path):
    (tmp_path / "flag").write_text("never interrupt")
    path = write(tmp_path, tmp_path / "flag")
    assert run(path, tmp_path, "--executor", "ray") == 0
    assert trials(tmp_path) == trials(reference[0])
