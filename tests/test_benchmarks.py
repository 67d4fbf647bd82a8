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
