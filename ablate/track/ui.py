"""Where a plan is seen in MLflow's UI: hosts, URLs, the saved view and the tags naming it."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from ablate.track.records import PlanRuns
from ablate.track.store import resolve_uri

if TYPE_CHECKING:
    from ablate.study import Study

NOTE = "mlflow.note.content"  # a run's (or experiment's) description in MLflow's UI
VIEW_TAG = "mlflow.sharedViewState."  # + key: a saved view of the runs page (MLflow 2.9+)
UI_HOST = "http://127.0.0.1:5000"  # where `ablate ui` serves by default


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
    url = (f"{host.rstrip('/')}/#/experiments/{runs.experiment_id}/runs"
           f"?workflowType=machine_learning")
    return url + (f"&viewStateShareKey={view_key(runs.plan)}" if view and runs.plan else "")


def plan_token(plan: str) -> str:
    """How a plan is named in the tag ``ablate.plans`` (the plans a run belongs to)."""
    return f"plan-{plan}"


def view_key(plan: str) -> str:
    """The key of a plan's saved view (experiment tag ``mlflow.sharedViewState.<key>``)."""
    return f"ablate-plan-{plan}"


def view_state(study: Study) -> dict[str, Any]:
    """The saved view of the plan's runs: the plan and its variants as rows (trials nested,
    which MLflow only does when sorted by start time), the study metric first among columns."""
    m = study.metric
    metrics = [f"metrics.`{k}`" for k in (m, f"{m}_ci95", "finished", "diverged", "failed")]
    columns = [*metrics, "tags.`ablate.verdict`", *(f"params.`{k}`" for k in study.factors)]
    return {
        "searchFilter": f"tags.`ablate.plans` LIKE '%{plan_token(study.plan)}%'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {"attributes.`Run Name`": 240, "tags.`ablate.verdict`": 320},
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": None,
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
    }
