"""The GPU benchmark script keeps working on the CPU (smoke mode), so it is ready for a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "benchmarks" / "bench_gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_runs_every_configuration():
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    rows = [line for line in out.splitlines() if line.strip().startswith(("True", "False"))]
    assert len(rows) == 8  # deterministic x bf16 x compile
    assert all(line.rstrip().endswith("x") for line in rows)
    assert "components under deterministic algorithms: all ran" in out


def test_verdicts_threads_reads_every_verdict_table_of_a_report():
    sys.path.insert(0, str(SCRIPT.parent))
    from verdicts_threads import verdicts

    report = "\n".join([
        "| Effect | Δ val\\_acc ± CI | p (Holm) | Verdict | Seeds |",
        "|:--|--:|--:|:--|:--|",
        "| a: 0 → 1 | +0.10 ± 0.02 | < 0.001 | **helps** | 5/5 |",
        "| b: 0 → 1 | 0.00 ± 0.03 | 1 | no clear effect | 5/5 |",
        "",
        "| Variant | Params |",  # no Verdict column: not read
        "|:--|--:|",
        "| baseline | 1k |",
        "",
        "| Variant | val\\_acc (mean ± 95% CI) | Δ ± CI | p (Holm) | Verdict | Seeds |",
        "|:--|--:|--:|--:|:--|:--|",
        "| a=1 | 0.60 ± 0.01 | +0.10 ± 0.02 | < 0.001 | **helps** | 5/5 |",
    ])
    assert verdicts(report) == {"a: 0 → 1": ("+0.10 ± 0.02", "helps"),
                                "b: 0 → 1": ("0.00 ± 0.03", "no clear effect"),
                                "a=1": ("0.60 ± 0.01", "helps")}


PEERS = SCRIPT.parent / "bench_peers.py"


def test_peer_benchmark_smoke_mode_prints_the_table():
    """The hand loop, Optuna (skipped if optuna-integration is missing) and the default
    ``ablate run`` on a tiny model: each a fresh process, then the table with ratios. (Ray's
    configurations take half a minute each; ``--smoke`` runs them by hand.)"""
    out = subprocess.run([sys.executable, str(PEERS), "--smoke", "--repeats", "1",
                          "--only", "optuna,ablate run (default)"], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    table = out[out.index("configuration"):].splitlines()
    rows = {line.split("  ")[0]: line for line in table[1:] if line.rstrip().endswith("x")}
    assert set(rows) >= {"hand loop", "ablate run (default)",
                         "ablate run (default), first store on the machine"}
    assert rows["hand loop"].rstrip().endswith("1.00x")
    assert ("optuna GridSampler + MLflowCallback" in rows) != ("skipped: optuna" in out)


def test_the_fast_sql_read_returns_what_mlflows_search_returns(tmp_path):
    """bench_scale's reads rest on this: on a SQL store, runs found by their tags are read from
    MLflow's tables directly (``sql_runs``), and must equal MLflow's own search, run for run: the
    same runs (active ones of this experiment only), in the same order, with the same
    attributes, tags, params and latest metrics (NaN as NaN)."""
    import math

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ablate.track import Tracker, quiet_mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with quiet_mlflow():
        tracker = Tracker(uri)
        client = MlflowClient(uri)
        exp, other = (client.create_experiment(name, artifact_location=str(tmp_path / name))
                      for name in ("e", "other"))
        for i in range(7):
            run = client.create_run(exp if i != 5 else other, start_time=1000 + i % 3,
                                    tags={"ablate.role": "trial" if i % 2 else "variant",
                                          "ablate.variant": f"v{i % 3}", "note": "x" * i})
            run_id = run.info.run_id
            client.log_batch(run_id, metrics=[Metric("a", float(i), 1, 0),
                                              Metric("a", float(i) + 0.5, 2, 1),
                                              Metric("nan", math.nan, 1, 0)],
                             params=[], tags=[])
            client.log_param(run_id, "p", str(i))
            if i == 3:
                client.delete_run(run_id)
            if i == 1:
                client.set_terminated(run_id, "FAILED")

        def seen(runs):
            return [(r.info.run_id, r.info.run_name, r.info.experiment_id, r.info.user_id,
                     r.info.status, r.info.start_time, r.info.end_time, r.info.lifecycle_stage,
                     r.info.artifact_uri, dict(r.data.tags), dict(r.data.params),
                     {k: "nan" if math.isnan(v) else v for k, v in r.data.metrics.items()})
                    for r in runs]

        for tags in ({"ablate.role": "trial"}, {"ablate.role": "variant"},
                     {"ablate.variant": "v1"}, {"ablate.role": "trial", "ablate.variant": "v1"},
                     {"ablate.role": "nothing"}):
            flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            fast, slow = seen(tracker._find(exp, tags)), seen(tracker._search(exp, flt))
            assert fast == slow, tags
            light = seen(tracker._find(exp, tags, params=False, metrics=False))
            assert [row[:10] for row in light] == [row[:10] for row in slow]
            assert all(row[10] == {} and row[11] == {} for row in light)
            some = seen(tracker._find(exp, tags, tag_keys=["note"]))
            assert [{k: v for k, v in row[9].items() if k in ("note", "mlflow.runName", *tags)}
                    for row in slow] == [row[9] for row in some]
        assert len(seen(tracker._find(exp, {"ablate.role": "trial"}))) == 1  # 3: deleted; 5: other
