"""How config values are written as MLflow params and tags, and read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch


def dumps(value: Any) -> str:
    """A tag's JSON text (levels, factors, seeds)."""
    return json.dumps(value, default=str, sort_keys=False)


def param(value: Any) -> str:
    """A config value as a param: a string as it is, anything else as JSON (at most 6000
    characters, MLflow's limit)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def unparam(text: str) -> Any:
    """A param's value as logged by :func:`param` (JSON, or a plain string)."""
    try:
        return as_level(json.loads(text))
    except ValueError:
        return text


def as_level(value: Any) -> Any:
    """A JSON value as a factor level: lists become tuples."""
    return tuple(value) if isinstance(value, list) else value


def params_of(config: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> list[Any]:
    """Every key of ``config`` (sorted) and then ``extra``, as MLflow ``Param``s."""
    from mlflow.entities import Param

    params = [Param(k, param(v)) for k, v in sorted(config.items())]
    return params + [Param(k, v) for k, v in (extra or {}).items()]


def log_params(client: Any, run_id: str, config: Mapping[str, Any],
               extra: Mapping[str, str] | None = None) -> None:
    """Every key of ``config`` (sorted) and then ``extra`` as params, in batches MLflow accepts
    (idempotent: the same values again are accepted)."""
    params = params_of(config, extra)
    for i in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[i:i + PARAM_BATCH])
