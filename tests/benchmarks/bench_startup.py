"""Start-up cost: `import ablate` and `ablate plan studies/quick.py`, against Python itself.

    python tests/benchmarks/bench_startup.py [--repeats 7]

Prints min/median/max wall seconds of each command in a fresh process and its ratio to a bare
`python -c pass`, and which heavy modules `import ablate` loads (it must load none of them).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "ray", "seaborn", "optuna", "pandas", "matplotlib")

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import ablate": [sys.executable, "-c", "import ablate"],
    "import torch": [sys.executable, "-c", "import torch"],
    "ablate plan studies/quick.py": [sys.executable, "-m", "ablate.cli", "plan",
                                     str(ROOT / "studies" / "quick.py")],
}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    import torch

    print(f"machine: {platform.platform()}, {platform.machine()}, python "
          f"{platform.python_version()}, torch {torch.__version__}")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):  # interleaved, so machine noise spreads over every command
        for name, cmd in COMMANDS.items():
            times[name].append(timed(cmd))
    base = statistics.median(times["python -c pass"])
    print(f"\n{'command':32} {'min':>7} {'median':>7} {'max':>7}  vs python")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:32} {min(values):7.3f} {med:7.3f} {max(values):7.3f}  {med / base:7.1f}x")
    probe = ("import sys, ablate; print([m for m in %r if m in sys.modules])" % (HEAVY,))
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    print(f"\nheavy modules loaded by `import ablate`: {loaded}")


if __name__ == "__main__":
    main()
