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
