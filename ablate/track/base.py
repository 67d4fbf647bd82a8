"""A tracker's connection to one store, and the searches that every part of it shares."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunTag, ViewType
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient
from mlflow.utils import get_results_from_paginated_fn

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
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _search(self, experiment_id: str, flt: str) -> list[Any]:
        """Every active run of the experiment that matches ``flt``, all pages (MLflow's own
        paging); their artifact URIs are kept, so that their files are read without a look-up."""
        runs = get_results_from_paginated_fn(
            lambda n, token: self.client.search_runs([experiment_id], flt, ViewType.ACTIVE_ONLY,
                                                     max_results=n, page_token=token),
            SEARCH_MAX_RESULTS_DEFAULT)
        self._artifact_uris.update((r.info.run_id, r.info.artifact_uri) for r in runs)
        return runs

    def _run_name(self, study: Study, variant: Any) -> str:
        """The variant's run name (see :func:`run_names`), computed once per plan (for every
        trial's run it costs O(variants): a large study's trials would grow quadratically)."""
        key = (study.name, study.plan, tuple(study.factors))
        names = self._run_names.get(key)
        if names is None:
            names = self._run_names[key] = run_names(study)
        return names.get(variant.id, variant.label)

    def _trial_runs(self, experiment_id: str) -> dict[tuple[str, int], Any]:
        """One run per (variant id, seed) in the experiment (see :func:`pick`)."""
        return pick(r for r in self._search(experiment_id, "tags.`ablate.role` = 'trial'")
                    if not replaced(r))

    def _variant_runs(self, experiment_id: str) -> dict[str, Any]:
        """Variant id -> its variant run (the oldest, should two exist)."""
        runs = self._search(experiment_id, "tags.`ablate.role` = 'variant'")
        newest_first = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id),
                              reverse=True)
        return {r.data.tags["ablate.variant"]: r for r in newest_first}
