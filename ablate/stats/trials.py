"""The per-trial results table seen as variants x seeds: which trials count and what became of each.

Conventions used throughout the report (and stated in its Methods section):

* A trial *counts* when its status is ``finished`` and its ``final`` value is finite. Diverged and
  failed trials are counted per variant, never silently dropped; ``running`` trials, finished
  trials without a value and seeds with no trial at all are counted as *missing*.
* If a (variant, seed) pair was finished more than once, the last row is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.stats.spec import ReportSpec

COUNT_COLUMNS = ["n_finished", "n_diverged", "n_failed", "n_missing"]


def usable(results: pd.DataFrame) -> pd.DataFrame:
    """Trials that count: finished with a finite final value, one per (variant, seed)."""
    ok = results[(results["status"] == "finished") & np.isfinite(results["final"])]
    return ok.drop_duplicates(["variant", "seed"], keep="last")


def baseline_variant(results: pd.DataFrame) -> str | None:
    ids = results.loc[results["baseline"].astype(bool), "variant"]
    return ids.iloc[0] if len(ids) else None


def variant_order(results: pd.DataFrame) -> list[str]:
    """Variants in order of first appearance, baseline first."""
    order = list(dict.fromkeys(results["variant"]))
    base = baseline_variant(results)
    if base is not None:
        order.remove(base)
        order.insert(0, base)
    return order


def labels(results: pd.DataFrame) -> dict[str, str]:
    """Variant id -> its label."""
    return dict(zip(results["variant"], results["label"]))


def varying_factors(results: pd.DataFrame, spec: ReportSpec) -> list[str]:
    """Factors of the spec present in ``results`` whose level varies among the counted trials."""
    data = usable(results)
    return [f for f in spec.factors if f in data and data[f].astype(str).nunique() > 1]


def counts(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """Per variant: finished (with a value), diverged, failed and missing trials (of the seeds
    it is planned for)."""
    status = results["status"]
    state = np.select(
        [
            (status == "finished") & np.isfinite(results["final"]),
            status == "diverged",
            status == "failed",
        ],
        [0, 1, 2],
        3,
    )
    codes, variants = pd.factorize(results["variant"])
    table = np.zeros((len(variants), 4), dtype=int)
    np.add.at(table, (codes, state), 1)
    planned = np.array([spec.seeds_of(v) for v in variants], dtype=int)
    table[:, 3] += np.clip(planned - table.sum(axis=1), 0, None)
    return pd.DataFrame(table, index=pd.Index(variants, name="variant"), columns=COUNT_COLUMNS)


def grids(results: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(values, outcome)``: seeds x variants (baseline first) tables of the study's trials.

    ``values`` holds the final metric of counted trials (NaN elsewhere); ``outcome`` says what
    became of each (variant, seed): ``finished``, else ``diverged`` if any of its runs diverged,
    else ``failed`` if any failed, else ``missing`` (running, or no run at all).
    """
    order = variant_order(results)
    seeds = list(dict.fromkeys([*spec.seeds, *results["seed"]]))
    seed_index, variant_index = pd.Index(seeds, name="seed"), pd.Index(order, name="variant")
    ok = usable(results)
    values = np.full((len(seeds), len(order)), np.nan)
    values[seed_index.get_indexer(ok["seed"]), variant_index.get_indexer(ok["variant"])] = ok[
        "final"].to_numpy(float)
    row = seed_index.get_indexer(results["seed"])
    col = variant_index.get_indexer(results["variant"])
    status = results["status"].to_numpy(object)
    state = np.zeros(values.shape, int)  # 0 missing, 1 failed, 2 diverged, 3 finished
    for code, name in ((1, "failed"), (2, "diverged")):
        hit = status == name
        np.maximum.at(state, (row[hit], col[hit]), code)
    state[~np.isnan(values)] = 3
    names = np.array(["missing", "failed", "diverged", "finished"])
    return (pd.DataFrame(values, index=seed_index, columns=variant_index),
            pd.DataFrame(names[state], index=seed_index, columns=variant_index))


def metric_resolution(results: pd.DataFrame, tol: float = 1e-3) -> float | None:
    """The step of a discrete metric, or None for a continuous one.

    The counted trials' final values are taken as discrete when they lie on a grid: at least 4
    distinct values, every one within ``tol`` of a step of a whole number of steps from the
    smallest, no more than 10,000 steps apart — as an accuracy on a small validation set moves
    one example at a time. The step is the smallest nonzero difference between two trials'
    values, refined over the whole span (so that float32 rounding of the logged values does
    not add up), e.g. 1/450 for an accuracy on 450 images."""
    values = np.sort(usable(results)["final"].to_numpy(float))
    if len(values) < 4:
        return None
    span = values[-1] - values[0]
    size = max(float(np.abs(values).max()), 1e-300)  # values 1e-6 apart are one (float32)
    distinct = values[np.concatenate([[True], np.diff(values) > 1e-6 * size])]
    if len(distinct) < 4:
        return None
    steps = span / float(np.diff(distinct).min())
    if steps > 10_000:
        return None
    step = span / round(steps)
    whole = (distinct - distinct[0]) / step
    return step if np.abs(whole - np.round(whole)).max() <= tol else None
