"""The URL `ablate ui` prints, opened in a real headless Chromium: MLflow's model-training view
of the study's runs, one row per variant with the study metric's mean, its seeds one click
below. Skips only where no Chromium is installed (Debian: `chromium` and `chromium-driver`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from ablate.source import load_study
from ablate.stats import spec_from_study, summarize
from ablate.track import Tracker, run_names
from tests.ui_browser import (
    ablate_ui,
    browse_runs,
    chromium,
    chromium_paths,
    run_study,
    session_processes,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def browser():
    if chromium_paths() is None:
        pytest.skip("no Chromium found: install Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`, as .ci/run does)")
    with chromium() as driver:
        yield driver


def test_printed_url_shows_variant_rows_in_the_model_training_view(tmp_path, browser):
    uri = run_study(tmp_path)
    study = load_study(tmp_path / "ui_demo.py")
    names = run_names(study)
    assert sorted(names.values()) == ["baseline", "bn=off", "bn=off ks=5", "ks=5"]
    summary = summarize(Tracker(uri).results(study), spec_from_study(study)).set_index("variant")

    with ablate_ui(uri) as ui:
        assert any(line.startswith("MLflow UI ready at http://127.0.0.1:") for line in ui.lines)
        assert "workflowType=machine_learning" in ui.url
        # one web server process (no extra workers, no job runners) besides `ablate ui` itself
        processes = session_processes(ui.proc.pid)
        assert len(processes) <= 3, processes
        assert not any("huey" in p or "job_runner" in p for p in processes), processes

        view = browse_runs(browser, ui.url, "val_acc", expand="bn=off ks=5", seeds=3)
        if os.environ.get("ABLATE_UI_SCREENSHOT"):  # the README's picture, from this code path
            Path(os.environ["ABLATE_UI_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(os.environ["ABLATE_UI_SCREENSHOT"])
        browser.save_screenshot(str(tmp_path / "runs.png"))

    # the model-training view: kept in the URL, its experiment menu (Runs, Models), no GenAI pages
    assert "workflowType=machine_learning" in view.url
    assert "Models" in view.page_text and "Evaluations" not in view.page_text
    # the plan's run, then one row per variant in the study's order, seeds collapsed
    plan = f"{study.name} (plan {study.plan})"
    assert view.top_rows == [plan, *(names[v.id] for v in study.variants)]
    # the study metric is a visible column, the first metric; its cell on a variant's row is the
    # mean over the finished seeds: the report's mean (the diverged seed is left out)
    assert "val_acc" in view.headers and "val_acc_ci95" in view.headers
    assert view.headers.index("val_acc") < view.headers.index("finished")
    assert "ablate.verdict" in view.headers
    for v in study.variants:
        assert math.isclose(float(view.metric_cells[names[v.id]]), summary.loc[v.id, "mean"],
                            rel_tol=1e-3)
    diverging = next(v for v in study.variants if names[v.id] == "bn=off ks=5")
    assert summary.loc[diverging.id, "n_diverged"] == 1
    # a variant expands to its seeds, one click below
    assert [n for n in view.expanded_rows if n.startswith("bn=off ks=5 s")] == [
        "bn=off ks=5 s0", "bn=off ks=5 s1", "bn=off ks=5 s2"]
