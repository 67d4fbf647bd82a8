"""The URLs `ablate ui` prints, opened in a real headless Chromium as a first-time user (a fresh
profile, nothing stored, 1600x1000): MLflow's model-training view of the study's runs, one row
per variant with its verdict and the study metric's mean in sight, its seeds one click below,
a variant's and a seed's pages and the metric's chart still in the model-training view, and the
variants ranked by the metric. Skips only where no Chromium is installed (Debian: `chromium` and
`chromium-driver`). With ABLATE_UI_SCREENSHOT=PATH it trains the quick study instead of the
small demo one (minutes) and saves the runs view there: the README's picture."""

from __future__ import annotations

import math
import os
import urllib.request
from pathlib import Path

import pytest

from ablate.source import load_study
from ablate.stats import spec_from_study, summarize
from ablate.track import Tracker, run_names
from tests.ui_browser import (
    QUICK,
    RUN_NAME_COL,
    TRAINING,
    VERDICT,
    WAIT_S,
    ablate_ui,
    assistant_open,
    cells_cut,
    chromium,
    chromium_paths,
    expand,
    in_sight,
    open_assistant,
    open_chart,
    open_run,
    open_runs,
    session_processes,
    train,
    waiting,
    workflow_types,
)

pytestmark = pytest.mark.slow
SCREENSHOT = os.environ.get("ABLATE_UI_SCREENSHOT")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The study trained and reported in a new store: (study, URI, what its rows must show)."""
    source, uri = train(tmp_path_factory.mktemp("ui"), QUICK if SCREENSHOT else None)
    study = load_study(source)
    summary = summarize(Tracker(uri).results(study), spec_from_study(study)).set_index("variant")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study.name)
    verdicts = {r.info.run_name: r.data.tags.get("ablate.verdict")
                for r in client.search_runs([exp.experiment_id],
                                            "tags.`ablate.role` = 'variant'")}
    return study, uri, summary, verdicts


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    study, uri, _, _ = trained
    with ablate_ui(uri, study.name, tmp_path_factory.mktemp("ui-tmp")) as ui:
        yield ui


@pytest.fixture
def browser():
    if chromium_paths() is None:
        pytest.skip("no Chromium found: install Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`, as .ci/run does)")
    with chromium() as driver:
        yield driver


def _wait_for(predicate, what: str) -> None:
    import time

    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_ablate_ui_logs_the_server_to_a_file_and_prints_the_urls_last(trained, served):
    study = trained[0]
    lines = served.lines
    assert any(line.startswith("MLflow UI ready at http://127.0.0.1:") for line in lines)
    # its last lines: the study's runs, then its variants ranked by the metric; both in the
    # model-training view, on the study's two saved views
    assert lines[-2:] == [f"  study {study.name}: {served.url}",
                          f"  study {study.name}, variants ranked by {study.metric}: "
                          f"{served.ranked}"]
    assert "workflowType=machine_learning" in served.url
    assert f"viewStateShareKey=ablate-plan-{study.plan}" in served.url
    assert "workflowType=machine_learning" in served.ranked
    assert f"viewStateShareKey=ablate-ranked-{study.plan}" in served.ranked
    # one web server process (no extra workers, no job runners) besides `ablate ui` itself
    processes = session_processes(served.proc.pid)
    assert len(processes) <= 3, processes
    assert not any("huey" in p or "job_runner" in p for p in processes), processes
    # a browser's requests go to the server's log, not to the terminal: the URLs stay last
    base = served.url.split("/#/")[0]
    with urllib.request.urlopen(f"{base}/", timeout=60) as reply:
        page = reply.read().decode()
    assert "mlflow.workflowType_v1" in page  # the page `ablate ui` serves sets the defaults
    _wait_for(lambda: '"GET / HTTP/1.1" 200' in served.log.read_text(errors="replace"),
              f"the page's request never reached the server's log {served.log}")
    assert lines[-1].startswith(f"  study {study.name}, variants ranked by")
    assert served.log.name.startswith("ablate-ui-") and served.log.suffix == ".log"
    assert not any("HTTP/1.1" in line for line in lines), lines


def test_a_first_visit_clicks_through_in_the_training_view_with_the_verdict_in_sight(
        trained, served, browser, tmp_path):
    study, _, summary, verdicts = trained
    names = run_names(study)
    metric = f"metrics.`{study.metric}`"
    last = study.variants[-1]  # the demo's diverging variant
    seeds = [f"{names[last.id]} s{t.seed}" for t in study.trials if t.variant.id == last.id]

    # the study's URL: the plan's run, then one row per variant in the study's order
    view = open_runs(browser, served.url, study.metric, rows=1 + len(study.variants))
    assert view.workflow == {TRAINING}
    plan = f"{study.name} (plan {study.plan})"
    assert view.top_rows == [plan, *(names[v.id] for v in study.variants)]
    # the verdict and the metric come first and are in sight at 1600x1000 on a first visit,
    # MLflow's Assistant panel closed (it opens by itself on a local server, unless the page
    # says it has); the metric's cell on a variant's row is the report's mean over the finished
    # seeds (the diverged seed left out)
    assert not assistant_open(browser)
    assert view.headers[1:3] == ["ablate.verdict", study.metric]
    assert {VERDICT, metric} <= set(view.in_sight), view.in_sight
    for v in study.variants:
        assert math.isclose(float(view.metric_cells[names[v.id]]), summary.loc[v.id, "mean"],
                            rel_tol=1e-3)
        assert view.verdict_cells[names[v.id]] == verdicts[names[v.id]]
    assert verdicts[names[study.baseline_variant.id]] == "baseline"
    # a variant expands to its seeds, whose values are shown whole, as the verdicts are
    assert [n for n in expand(browser, names[last.id], seeds) if n in seeds] == seeds
    assert not any(cells_cut(browser, seeds, metric).values())
    assert not any(cells_cut(browser, seeds, RUN_NAME_COL).values())
    assert not any(cells_cut(browser, [names[v.id] for v in study.variants], VERDICT).values())
    if SCREENSHOT:  # the README's picture, from this code path
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(SCREENSHOT)
    browser.save_screenshot(str(tmp_path / "runs.png"))
    # with MLflow's Assistant panel open (a quarter of the window), they stay in sight
    open_assistant(browser)
    waiting(browser).until(lambda d: {VERDICT, metric} <= set(in_sight(d)),
                           "the verdict or the metric is hidden with the Assistant open")

    # a variant's page, a seed's page and its metric chart: still the model-training view
    page = open_run(browser, names[last.id])
    assert workflow_types(browser) == {TRAINING}
    assert "Evaluation runs" not in page and "Evaluations" not in page
    page = open_run(browser, seeds[0])
    assert workflow_types(browser) == {TRAINING}
    assert "Evaluations" not in page
    chart = open_chart(browser, study.metric)
    assert chart.is_displayed() and "Step" in chart.text  # its curve over the epochs
    assert workflow_types(browser) == {TRAINING}
    assert "/model-metrics" in browser.current_url


def test_the_ranked_view_lists_the_variants_best_first(trained, served, browser):
    study, _, summary, verdicts = trained
    names = run_names(study)
    view = open_runs(browser, served.ranked, study.metric, rows=len(study.variants))
    assert view.workflow == {TRAINING}
    # the variant rows only, sorted by the metric's mean as the table shows it, best first (a
    # variant without a mean last); each the report's mean
    assert sorted(view.top_rows) == sorted(names[v.id] for v in study.variants)
    assert view.top_rows != [names[v.id] for v in study.variants]  # not merely study order
    shown = [float(c) if c not in ("", "-") else math.nan
             for c in (view.metric_cells[n] for n in view.top_rows)]
    finite = [x for x in shown if not math.isnan(x)]
    assert shown[:len(finite)] == finite
    assert finite == sorted(finite, reverse=study.mode == "max"), list(zip(view.top_rows, shown))
    for v in study.variants:
        if not math.isnan(summary.loc[v.id, "mean"]):
            assert math.isclose(float(view.metric_cells[names[v.id]]),
                                summary.loc[v.id, "mean"], rel_tol=1e-3)
    assert view.footer == f"{len(study.variants)} matching runs"
    assert view.headers[1:3] == ["ablate.verdict", study.metric]
    assert {VERDICT, f"metrics.`{study.metric}`"} <= set(view.in_sight)
    assert {n: view.verdict_cells[n] for n in view.top_rows} == {
        n: verdicts[n] for n in view.top_rows}
