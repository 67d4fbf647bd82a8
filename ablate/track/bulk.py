"""Metric histories of many runs in few calls: a SQL store's bulk query, a server's bulk read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# A reader: (run ids, key) -> [(run id, Metric), ...] ordered by run, then by time, step and
# value as get_metric_history orders them; or None when this store can't read in bulk.
Reader = Callable[[list[str], str], "list[tuple[str, Any]] | None"]

SQL_RUNS = 500  # run ids per query (sqlite allows 999 variables or more)
SQL_LIMIT = 2**31 - 1  # rows per query: all of them
SERVER_RUNS = 100  # what a tracking server accepts per request (MLflow's UI reads this way)
SERVER_LIMIT = 25000  # the most points a server returns per request
SERVER_BULK = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def histories(client: Any, wanted: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], list]:
    """``(run id, key) -> [Metric, ...]`` for the keys ``wanted`` of each run, exactly as
    ``client.get_metric_history(run_id, key)`` returns them.

    MLflow's client reads one run and key per call. A SQL store (sqlite, PostgreSQL, MySQL) has
    ``get_metric_history_bulk``: one query per key for up to :data:`SQL_RUNS` runs. A tracking
    server answers the same read over HTTP (its UI's endpoint :data:`SERVER_BULK`, up to
    :data:`SERVER_RUNS` runs and :data:`SERVER_LIMIT` points a request). A batch that a store
    can't read that way, or whose answer may be cut at the limit, is read run by run."""
    out: dict[tuple[str, str], list] = {(r, k): [] for r, ks in wanted.items() for k in ks}
    by_key: dict[str, list[str]] = {}
    for run_id, keys in wanted.items():
        for key in keys:
            by_key.setdefault(key, []).append(run_id)
    reader, size, limit = _reader(client)
    single = []
    for key, ids in by_key.items():
        for i in range(0, len(ids), size):
            chunk = ids[i:i + size]
            got = reader(chunk, key) if reader is not None else None
            if got is None or len(got) >= limit:
                single += [(run_id, key) for run_id in chunk]
                continue
            for run_id, metric in got:
                out[run_id, key].append(metric)
    for run_id, key in single:
        out[run_id, key] = list(client.get_metric_history(run_id, key))
    return out


def _reader(client: Any) -> tuple[Reader | None, int, int]:
    """The bulk reader of the client's store, the runs per call and the row limit per call."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if callable(getattr(store, "get_metric_history_bulk", None)):
        return _sql_reader(store), SQL_RUNS, SQL_LIMIT
    if callable(getattr(store, "get_host_creds", None)):
        return _server_reader(store), SERVER_RUNS, SERVER_LIMIT
    return None, 1, 1


def _sql_reader(store: Any) -> Reader:
    from mlflow.entities import Metric

    def read(ids: list[str], key: str) -> list[tuple[str, Any]]:
        return [(m.run_id, Metric(key, m.value, m.timestamp, m.step))
                for m in store.get_metric_history_bulk(ids, key, SQL_LIMIT)]

    return read


def _server_reader(store: Any) -> Reader:
    from mlflow.entities import Metric
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    state = {"works": True}

    def read(ids: list[str], key: str) -> list[tuple[str, Any]] | None:
        if not state["works"]:
            return None
        try:
            response = http_request(store.get_host_creds(), SERVER_BULK, "GET",
                                    params={"run_id": ids, "metric_key": key,
                                            "max_results": SERVER_LIMIT})
            points = verify_rest_response(response, SERVER_BULK).json()["metrics"]
        except Exception:  # a server without the endpoint (or refusing it): read run by run
            state["works"] = False
            return None
        # the server orders by run id, then time, step and value (its SQL store), or per run
        # by time, step and value; either way each run's points come in get_metric_history's
        # order
        return [(p["run_id"], Metric(key, float(p["value"]), int(p["timestamp"]),
                                     int(p.get("step", 0)))) for p in points]

    return read
