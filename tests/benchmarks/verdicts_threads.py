"""Do a study's verdicts hold when torch's thread count changes its floating-point results?

Runs the study twice, each a fresh ``ablate run`` + ``ablate report`` (new process, new sqlite
store, new checkpoint folder): at ``train.threads=1`` (the default; worker processes) and at
``train.threads=2``. Then prints every verdict of both reports side by side — the effects table,
the simple effects and every variant against the baseline — and exits 1 if any differs.

    python tests/benchmarks/verdicts_threads.py [--study studies/quick.py] [--keep DIR]
        [--seeds N] [--set train.epochs=4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def verdicts(report: str) -> dict[str, tuple[str, str]]:
    """Row label -> (Δ or mean ± CI, verdict), for every markdown table with a Verdict column."""
    out: dict[str, tuple[str, str]] = {}
    header: list[str] = []
    for line in report.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not line.startswith("|:") and "Verdict" in header:
            out[cells[0]] = (cells[1], cells[header.index("Verdict")].strip("*"))
    return out


def run(study: str, threads: int, folder: Path, extra: list[str]) -> dict[str, tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    common = ["--tracking-uri", f"sqlite:///{folder}/m.db", "--set", f"train.threads={threads}",
              *extra]
    subprocess.run([sys.executable, "-m", "ablate.cli", "run", study, *common,
                    "--checkpoint-dir", str(folder / "ck")], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "ablate.cli", "report", study, *common,
                    "--out", str(folder / "report")], check=True, stdout=subprocess.DEVNULL,
                   cwd=ROOT)
    return verdicts((folder / "report" / "report.md").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quick.py"))
    parser.add_argument("--keep", type=Path, help="keep the stores and reports in this folder")
    parser.add_argument("--seeds", type=int, help="override the study's seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    extra = [a for o in args.overrides for a in ("--set", o)]
    extra += ["--seeds", str(args.seeds)] if args.seeds else []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        one, two = (run(args.study, t, base / f"threads-{t}", extra) for t in (1, 2))
    width = max(map(len, one | two))
    print(f"{'':{width}}  {'threads=1':>32}  {'threads=2':>32}")
    differ = []
    for row in dict.fromkeys([*one, *two]):
        a, b = one.get(row, ("—", "missing")), two.get(row, ("—", "missing"))
        mark = "" if a[1] == b[1] else "  <- differs"
        differ += [row] if mark else []
        print(f"{row:{width}}  {a[0]:>16} {a[1]:>15}  {b[0]:>16} {b[1]:>15}{mark}")
    print(f"{len(one | two) - len(differ)} of {len(one | two)} verdicts the same at 1 and 2 "
          "threads" + (f"; differ: {', '.join(differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
