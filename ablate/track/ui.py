"""Where a plan is seen in MLflow's UI: hosts, URLs, the saved views and the tags naming them,
and the app `ablate ui` serves (MLflow's, its page opening on the model-training view)."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from ablate.track.records import PlanRuns
from ablate.track.store import resolve_uri

if TYPE_CHECKING:
    from ablate.study import Study

NOTE = "mlflow.note.content"  # a run's (or experiment's) description in MLflow's UI
VIEW_TAG = "mlflow.sharedViewState."  # + key: a saved view of the runs page (MLflow 2.9+)
UI_HOST = "http://127.0.0.1:5000"  # where `ablate ui` serves by default
# What the page `ablate ui` serves stores in a browser that has no choice of its own stored yet
# (MLflow 3's UI keeps these in local storage, JSON, key "<name>_v<version>"): the experiment
# pages in their model-training view (MLflow's default is its GenAI view, whatever the tag
# mlflow.experimentKind: links in the page drop the URL's workflowType), and its Assistant panel
# closed on the first visit (it opens by itself on a local server and takes a quarter of the
# window; its button stays). A user's own choice, once made in the UI, is kept.
UI_DEFAULTS = {"mlflow.workflowType_v1": "machine_learning",
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}


def ui_host(uri: str) -> str:
    """Where the UI of a store is: a tracking server's own address, else `ablate ui`'s."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_HOST


def ui_hint(uri: str) -> str:
    """How to serve that URL: `` (serve it: ablate ui ...)`` for a local store (naming the store
    unless it is the default), nothing for a tracking server, which serves its own UI."""
    if uri.startswith(("http://", "https://")):
        return ""
    store = "" if uri == resolve_uri(None) else f" --tracking-uri {shlex.quote(uri)}"
    return f"  (serve it: ablate ui{store})"


def runs_url(runs: PlanRuns, host: str = UI_HOST, view: bool = True) -> str:
    """The plan's runs in MLflow's model-training view, one row per variant (the experiment's
    saved view :func:`view_key`; ``view=False`` for an experiment that has none)."""
    return _url(runs, host, view_key(runs.plan) if view and runs.plan else None)


def ranked_url(runs: PlanRuns, host: str = UI_HOST) -> str:
    """The plan's variants ranked by the study metric, best first (saved view
    :func:`ranked_key`), in MLflow's model-training view."""
    return _url(runs, host, ranked_key(runs.plan))


def _url(runs: PlanRuns, host: str, key: str | None) -> str:
    # workflowType: MLflow 3's UI opens an experiment in its GenAI view unless the URL (or the
    # browser's stored choice) says otherwise; the tag mlflow.experimentKind no longer decides
    url = (f"{host.rstrip('/')}/#/experiments/{runs.experiment_id}/runs"
           f"?workflowType=machine_learning")
    return url + (f"&viewStateShareKey={key}" if key else "")


def plan_token(plan: str) -> str:
    """How a plan is named in the tag ``ablate.plans`` (the plans a run belongs to)."""
    return f"plan-{plan}"


def view_key(plan: str) -> str:
    """The key of a plan's saved view (experiment tag ``mlflow.sharedViewState.<key>``)."""
    return f"ablate-plan-{plan}"


def ranked_key(plan: str) -> str:
    """The key of the saved view of a plan's variants ranked by the metric."""
    return f"ablate-ranked-{plan}"


def view_state(study: Study) -> dict[str, Any]:
    """The saved view of the plan's runs: the plan and its variants as rows (trials nested,
    which MLflow only does when sorted by start time), the verdict and the study metric first
    among the columns."""
    return _state(study, f"tags.`ablate.plans` LIKE '%{plan_token(study.plan)}%'",
                  "attributes.start_time", True)


def ranked_state(study: Study) -> dict[str, Any]:
    """The saved view of the plan's variants alone, sorted by the study metric's mean, best
    first (a variant with no finished seed, hence no mean, last); same columns."""
    return _state(study, f"tags.`ablate.role` = 'variant' and "
                         f"tags.`ablate.plans` LIKE '%{plan_token(study.plan)}%'",
                  f"metrics.`{study.metric}`", study.mode == "min")


def _state(study: Study, search: str, order_by: str, ascending: bool) -> dict[str, Any]:
    # The verdict and the metric come first: MLflow's Assistant panel, which opens by itself on
    # a browser's first visit to a local server, takes the right quarter of the window.
    m = study.metric
    verdict, metric = "tags.`ablate.verdict`", f"metrics.`{m}`"
    task = ["tags.`ablate.task`"] if study.tasks else []  # a study with tasks: which one
    columns = [*task, verdict, metric,
               *(f"metrics.`{k}`" for k in (f"{m}_ci95", "finished", "diverged", "failed")),
               *(f"params.`{k}`" for k in study.factors)]
    return {
        "searchFilter": search,
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns],
        # a seed's name and metric and a verdict are shown whole (MLflow cuts a cell's text
        # with an ellipsis), and still leave the verdict and the metric in sight at 1600 px
        # with the Assistant panel open
        "columnWidths": {"attributes.`Run Name`": 240, verdict: 190, metric: 170,
                         **{t: 110 for t in task}},
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": None,
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
    }


def ui_page(html: str) -> str:
    """MLflow's UI page (its index.html) storing :data:`UI_DEFAULTS` before its code runs."""
    script = ("<script>try{for(const[k,v]of Object.entries(%s))"
              "if(localStorage.getItem(k)===null)localStorage.setItem(k,JSON.stringify(v))}"
              "catch(e){}</script>" % json.dumps(UI_DEFAULTS))
    return html.replace("<head>", "<head>" + script, 1)


def ui_app() -> Any:
    """The app `ablate ui` serves (``mlflow server --app-name``): MLflow's own server app, what
    `mlflow server` serves, its UI page through :func:`ui_page`."""
    from pathlib import Path

    from flask import Response
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    page = Path(flask_app.static_folder or "", "index.html")
    if "serve" in flask_app.view_functions and page.is_file():
        html = ui_page(page.read_text(encoding="utf-8"))
        flask_app.view_functions["serve"] = lambda: Response(html, mimetype="text/html")
    return app
