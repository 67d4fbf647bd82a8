"""A tracker's connection to one store, and the searches that every part of it shares."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient
from mlflow.utils import get_results_from_paginated_fn

from ablate.track.params import PARAM_BATCH
from ablate.track.records import pick, replaced
from ablate.track.store import (
    TrackingError,
    first_line,
    prepare_sqlite_store,
    resolve_uri,
    sqlite_path,
)
from ablate.track.summary import run_names

if TYPE_CHECKING:
    from ablate.study import Study


BATCH_ENTITIES = 1000  # MLflow accepts at most 1000 metrics, params and tags per log_batch
SQL_IDS = 500  # at most so many runs found are read by their ids (else by the search again)
RUN_NAME_TAG = "mlflow.runName"  # where runs logged by MLflow <= 1.29 keep their name
SLOW_SERVER_TIMEOUT_S = 120.0  # a server that accepted the connection but answers slowly
READ_TIMED_OUT = "Read timed out"  # urllib3's words for it, in MLflow's exception message


class TrackerBase:
    """One tracking store: its URI, an MLflow client, and the runs of an experiment by role."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_uri(uri)
        path = sqlite_path(self.uri)
        if path is not None:
            prepare_sqlite_store(path, self.uri)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as exc:  # e.g. an unknown scheme: bogus://x
            raise TrackingError(
                f"can't use the MLflow tracking URI {self.uri!r}: {type(exc).__name__}: "
                f"{first_line(exc)}. Fix: pass --tracking-uri sqlite:///mlflow.db (a local "
                f"file), http://HOST:PORT (a tracking server) or a folder; nothing was written."
            ) from None
        self._artifact_uris: dict[str, str] = {}  # run id -> its artifact URI (never changes)
        self._run_names: dict[tuple[Any, ...], dict[str, str]] = {}  # see _run_name
        self._unwritten: dict[str, list[Param]] = {}  # see _defer_params
        self._plans: dict[int, tuple[Any, str]] = {}  # id(study) -> (study, its plan id)

    def check(self, timeout: float = 10.0, slow_timeout: float = SLOW_SERVER_TIMEOUT_S) -> None:
        """Fail fast (one try, short timeout) if the store can't be reached or opened.

        A server that accepted the connection but did not answer in time (a busy machine, or a
        server opening its database on its first request) is there: it gets one more try of
        up to ``slow_timeout`` seconds before the store counts as unreachable."""
        try:
            self._search_once(timeout)
        except Exception as exc:
            if READ_TIMED_OUT not in str(exc):
                raise self._unreachable(exc) from None
            try:
                self._search_once(slow_timeout)
            except Exception as again:
                raise self._unreachable(again) from None

    def _search_once(self, timeout: float) -> None:
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                 "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(int(timeout), 1))
        try:
            self.client.search_experiments(max_results=1)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _unreachable(self, exc: Exception) -> TrackingError:
        return TrackingError(
            f"can't reach the MLflow tracking store {self.uri!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}. Fix: start the tracking "
            f"server or pass a reachable --tracking-uri (or unset MLFLOW_TRACKING_URI to use "
            f"the local sqlite default). Nothing was trained."
        )

    def experiment_id(self, study: Study) -> str | None:
        exp = self.client.get_experiment_by_name(study.name)
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _defer_params(self, run_id: str, params: list[Param]) -> None:
        """Write ``params`` of a run just created with its next write (:meth:`_log_batch`):
        one call less per run. A run killed before that write has its params written again
        when it resumes (they are idempotent)."""
        self._unwritten[run_id] = self._unwritten.get(run_id, []) + params

    def _log_batch(self, run_id: str, metrics: Sequence[Metric] = (),
                   tags: Sequence[RunTag] = ()) -> None:
        """One ``log_batch`` of ``metrics`` and ``tags`` with the run's deferred params (those
        past MLflow's limits per call go first, in calls of their own)."""
        params = self._unwritten.pop(run_id, [])
        room = min(PARAM_BATCH, BATCH_ENTITIES - len(metrics) - len(tags))
        first, rest = (params[:room], params[room:]) if room > 0 else ([], params)
        for i in range(0, len(rest), PARAM_BATCH):
            self.client.log_batch(run_id, params=rest[i:i + PARAM_BATCH])
        self.client.log_batch(run_id, metrics=list(metrics), params=first, tags=list(tags))

    def _write_params(self, run_id: str) -> None:
        """The run's deferred params, now (before a write that can't carry them)."""
        params = self._unwritten.pop(run_id, [])
        for i in range(0, len(params), PARAM_BATCH):
            self.client.log_batch(run_id, params=params[i:i + PARAM_BATCH])

    def _search(self, experiment_id: str, flt: str) -> list[Any]:
        """Every active run of the experiment that matches ``flt``, all pages (MLflow's own
        paging); their artifact URIs are kept, so that their files are read without a look-up."""
        runs = get_results_from_paginated_fn(
            lambda n, token: self.client.search_runs([experiment_id], flt, ViewType.ACTIVE_ONLY,
                                                     max_results=n, page_token=token),
            SEARCH_MAX_RESULTS_DEFAULT)
        self._artifact_uris.update((r.info.run_id, r.info.artifact_uri) for r in runs)
        return runs

    def _find(self, experiment_id: str, tags: Mapping[str, str], params: bool = True,
              metrics: bool = True, tag_keys: Collection[str] | None = None) -> list[Any]:
        """Every active run of the experiment whose tags have these values: as
        :meth:`_search` would find them, and read the same way on any store but a SQL one
        (sqlite, PostgreSQL, MySQL), which is read in a few queries of MLflow's own tables
        (:func:`sql_runs`) instead: MLflow's search builds an ORM object per tag, param and
        metric of every run (~1 ms a run: 4.5 s for 4,096 trials, against 0.4 s). There,
        ``params`` / ``metrics`` False leave them out (empty): for reads of tags only; with
        ``tag_keys``, the runs' other tags may be left out too."""
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if store is not None and _is_sql(store):
            runs = sql_runs(store, experiment_id, tags, params=params, metrics=metrics,
                            tag_keys=tag_keys)
            self._artifact_uris.update((r.info.run_id, r.info.artifact_uri) for r in runs)
            return runs
        return self._search(experiment_id, " and ".join(
            f"tags.`{k}` = '{v}'" for k, v in tags.items()))

    def _run_name(self, study: Study, variant: Any) -> str:
        """The variant's run name (see :func:`run_names`), computed once per plan (for every
        trial's run it costs O(variants): a large study's trials would grow quadratically;
        so does the plan's id, a hash of every variant's, which is looked up once per study
        object here)."""
        seen = self._plans.get(id(study))
        if seen is None or seen[0] is not study:
            seen = self._plans[id(study)] = (study, study.plan)  # (keeps it: its id stays its)
        return self._names(study, seen[1]).get(variant.id, variant.label)

    def _names(self, study: Study, plan: str | None = None) -> dict[str, str]:
        """:func:`run_names` of the study's plan (``plan``: its id, if known), computed once."""
        key = (study.name, plan or study.plan, tuple(study.factors))
        names = self._run_names.get(key)
        if names is None:
            names = self._run_names[key] = run_names(study)
        return names

    def _variant_search(self, experiment_id: str, variant_id: str,
                        metrics: bool = True) -> list[Any]:
        """Every active run of one variant, without params: its row, its trials (every seed),
        its tuning runs. One search with one tag filter: a tag filter is a scan of that tag
        over the experiment's runs, so fewer filters cost less as the store grows."""
        return self._find(experiment_id, {"ablate.variant": variant_id}, False, metrics)

    def _trial_runs(self, experiment_id: str, params: bool = True, metrics: bool = True,
                    tag_keys: Collection[str] | None = None) -> dict[tuple[str, int], Any]:
        """One run per (variant id, seed) in the experiment (see :func:`pick`); without their
        ``params`` or ``metrics`` where they are not read (see :meth:`_find`)."""
        return pick(r for r in self._find(experiment_id, {"ablate.role": "trial"}, params,
                                          metrics, tag_keys) if not replaced(r))

    def _variant_runs(self, experiment_id: str, params: bool = True) -> dict[str, Any]:
        """Variant id -> its variant run (the oldest, should two exist)."""
        runs = self._find(experiment_id, {"ablate.role": "variant"}, params)
        newest_first = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id),
                              reverse=True)
        return {r.data.tags["ablate.variant"]: r for r in newest_first}


# ------------------------------------------------------------------ a SQL store, read directly
@dataclass(frozen=True)
class StoredData:
    """A run's tags, params and (latest) metrics, as ``mlflow.entities.RunData`` shows them."""

    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class StoredRun:
    """A run read by :func:`sql_runs`: ``info`` an ``mlflow.entities.RunInfo``, ``data`` its
    :class:`StoredData` (what ablate reads of an ``mlflow.entities.Run``)."""

    info: Any
    data: StoredData


def _is_sql(store: Any) -> bool:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return isinstance(store, SqlAlchemyStore)


def sql_runs(store: Any, experiment_id: str, tags: Mapping[str, str], params: bool = True,
             metrics: bool = True, tag_keys: Collection[str] | None = None) -> list[StoredRun]:
    """The active runs of an experiment whose tags have these values, read from a SQL store's
    tables with MLflow's own table definitions, as plain rows (no ORM objects): their
    attributes, tags, params and latest metrics (a NaN metric as NaN, as MLflow reads it;
    ``params`` / ``metrics`` False: none read), newest first, as MLflow's search orders them."""
    from mlflow.entities import RunInfo
    from mlflow.entities.lifecycle_stage import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import select

    found: Any = select(SqlRun.run_uuid).where(
        SqlRun.experiment_id == int(experiment_id), SqlRun.lifecycle_stage == LifecycleStage.ACTIVE)
    for key, value in tags.items():
        found = found.where(SqlRun.run_uuid.in_(
            select(SqlTag.run_uuid).where(SqlTag.key == key, SqlTag.value == value)))
    with store.ManagedSessionMaker() as session:
        rows = session.execute(select(
            SqlRun.run_uuid, SqlRun.name, SqlRun.experiment_id, SqlRun.user_id, SqlRun.status,
            SqlRun.start_time, SqlRun.end_time, SqlRun.lifecycle_stage, SqlRun.artifact_uri,
        ).where(SqlRun.run_uuid.in_(found))).all()
        if len(rows) <= SQL_IDS:  # a few runs: looked up by id (indexed), not found again
            found = [r[0] for r in rows]
        data: dict[str, StoredData] = {r[0]: StoredData({}, {}, {}) for r in rows}
        read: Any = select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
            SqlTag.run_uuid.in_(found))
        if tag_keys is not None:  # only these (and those the runs were found by)
            read = read.where(SqlTag.key.in_(sorted({*tag_keys, *tags, RUN_NAME_TAG})))
        for run_id, key, value in session.execute(read):
            data[run_id].tags[key] = value
        for run_id, key, value in session.execute(select(
                SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(
                SqlParam.run_uuid.in_(found))) if params else ():
            data[run_id].params[key] = value
        for run_id, key, value, nan in session.execute(select(
                SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.value,
                SqlLatestMetric.is_nan).where(SqlLatestMetric.run_uuid.in_(found))) \
                if metrics else ():
            data[run_id].metrics[key] = float("nan") if nan else value
    runs = []
    for run_id, name, exp, user, status, start, end, stage, uri in rows:
        d = data[run_id]
        info = RunInfo(run_id=run_id, run_name=name or d.tags.get(RUN_NAME_TAG),
                       experiment_id=str(exp), user_id=user, status=status, start_time=start,
                       end_time=end, lifecycle_stage=stage, artifact_uri=uri)
        runs.append(StoredRun(info, d))
    runs.sort(key=lambda r: (-(r.info.start_time or 0), r.info.run_id))
    return runs
