"""Tables for a paper: effects.csv (every effect row of the report's tables) and effects.tex (the
first table as a booktabs tabular that compiles with a standard LaTeX install)."""

from __future__ import annotations

import re
import shutil
import subprocess
from itertools import product

import numpy as np
import pandas as pd
import pytest

from ablate.report import write_report
from ablate.report.fmt import escape, format_p, plus_minus
from ablate.report.paper import latex_escape, latex_table
from ablate.stats import ReportSpec, effects
from ablate.stats.effects import LEVELS_FAMILY

# factor names and levels with every LaTeX special character a label can carry
FACTORS = {"model.use_bn": ["on", "off"], "optim.lr_%": ["1e-3", "3e-3"],
           "data.aug#": ["a&b", "c_d"]}
SPECIALS = r"_&%#$~^{}\<>|"


def factorial(factors=FACTORS, n_seeds=5, seed=0, metric="val_acc"):
    rng = np.random.default_rng(seed)
    keys = list(factors)
    rows = []
    for i, levels in enumerate(product(*factors.values())):
        config = dict(zip(keys, levels))
        changed = [f"{k}={v}" for k, v in config.items() if v != factors[k][0]]
        quality = 0.8 - 0.05 * (levels[0] != factors[keys[0]][0])
        for s in range(n_seeds):
            rows.append({"run_id": f"{i}-{s}", "variant": f"v{i}", "label": ",".join(changed)
                         or "baseline", "baseline": i == 0, "seed": s, "status": "finished",
                         **config, "final": quality + rng.normal(0, 0.01), "epochs": 1})
    spec = ReportSpec(name="paper_&_study", metric=metric, mode="max", design="full_factorial",
                      factors=factors, baseline={k: v[0] for k, v in factors.items()},
                      seeds=list(range(n_seeds)), n_variants=len(rows) // n_seeds)
    history = pd.DataFrame(columns=["run_id", "variant", "label", "seed", "key", "step", "value"])
    return pd.DataFrame(rows), history, spec


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    results, history, spec = factorial()
    out = tmp_path_factory.mktemp("paper")
    text = write_report(results, history, spec, out).read_text()
    return text, out, results, spec


def md_rows(text: str) -> list[list[str]]:
    """The body rows of every effect table of the report (the tables whose header starts with
    Effect or Change), split into cells."""
    rows = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and re.match(r"\|\s*(Effect|Change)\s*\|", lines[0]):
            rows += [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
                     for line in lines[2:]]
    return rows


def test_effects_csv_rows_are_the_report_tables_rows(written):
    text, out, results, spec = written
    table = pd.read_csv(out / "effects.csv")
    shown = md_rows(text)
    assert len(table) == len(shown) == len(effects(results, spec)) > 5
    for (_, row), cells in zip(table.iterrows(), shown):
        assert cells[0] == escape(row["effect"])
        assert cells[1] == plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True)
        assert cells[2] == format_p(row["p_adjusted"])
        assert escape(row["verdict"]) in cells[3]
        assert cells[4].startswith(f"{row['seeds_paired']}/{row['seeds']}")
    assert set(table["table"]) == {"first", "simple"}
    assert (table["metric"] == "val_acc").all()
    assert {"ci_level", "p", "hedges_g", "fragile", "outcome"} <= set(table.columns)


def test_the_report_links_both_files(written):
    text, out, _, _ = written
    assert "[effects.csv](effects.csv)" in text and "[effects.tex](effects.tex)" in text
    assert (out / "effects.csv").exists() and (out / "effects.tex").exists()


def tex_rows(tex: str) -> list[str]:
    """The tabular's lines between \\toprule and \\bottomrule, rules left out."""
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
    return [line for line in body.strip().splitlines() if line != "\\midrule"]


def columns(line: str) -> int:
    """Cells of a tabular row: unescaped & separators plus one; a \\multicolumn{n} spans n."""
    span = re.match(r"\\multicolumn\{(\d+)\}", line)
    return int(span.group(1)) if span else len(re.findall(r"(?<!\\)&", line)) + 1


def check_structure(tex: str, n_rows: int) -> None:
    assert tex.index("\\begin{tabular}{lrrll}") < tex.index("\\toprule") < tex.index(
        "\\midrule") < tex.index("\\bottomrule") < tex.index("\\end{tabular}")
    rows = tex_rows(tex)
    assert len(rows) == n_rows + 1  # the header
    for line in rows:
        assert columns(line) == 5 and line.endswith("\\\\"), line
    for line in tex.splitlines():
        if not line.startswith("%"):  # no raw special character outside a command
            assert not re.search(r"(?<!\\)[_#%]", line), line


def test_effects_tex_is_booktabs_with_five_columns_and_escaped_labels(written):
    text, out, results, spec = written
    tex = (out / "effects.tex").read_text()
    first = effects(results, spec)
    first = first[first["kind"] != "simple"]
    check_structure(tex, len(first))
    assert r"use\_bn: on $\rightarrow$ off" in tex
    assert r"aug\#: a\&b $\rightarrow$ c\_d" in tex
    assert r"lr\_\%" in tex
    assert r"$\Delta$ val\_acc $\pm$ CI" in tex
    assert "\\textbf{hurts}" in tex  # a finding in bold


def test_latex_escape_covers_the_special_characters():
    assert latex_escape(SPECIALS) == (
        r"\_\&\%\#\$\textasciitilde{}\textasciicircum{}\{\}\textbackslash{}\textless{}"
        r"\textgreater{}\textbar{}")
    assert latex_escape("a → b × c − d ± e") == (
        r"a $\rightarrow$ b $\times$ c $-$ d $\pm$ e")
    assert latex_escape("β1 Δ café\nline") == r"$\beta$1 $\Delta$ café line"
    assert latex_escape("☃") == "[U+2603]"  # beyond what pdflatex knows: visible, not an error


def one_at_a_time(labels: list[str], n_seeds=4):
    """A one-at-a-time study whose variant labels are ``labels``; the first is the baseline."""
    rng = np.random.default_rng(1)
    rows = [{"run_id": f"{i}-{s}", "variant": f"v{i}", "label": label, "baseline": i == 0,
             "seed": s, "status": "finished", "x.k": str(i), "final": 0.5 + 0.1 * i
             + rng.normal(0, 0.01)} for i, label in enumerate(labels) for s in range(n_seeds)]
    spec = ReportSpec(name="s", metric="loss_%", mode="min", design="one_at_a_time",
                      factors={"x.k": [str(i) for i in range(len(labels))]},
                      baseline={"x.k": "0"}, seeds=list(range(n_seeds)), n_variants=len(labels))
    return pd.DataFrame(rows), spec


def test_the_second_family_gets_a_rule_and_a_spanning_row():
    results, spec = one_at_a_time(["baseline", "x_y & z", "50% #2"])
    family = effects(results, spec)
    family.loc[family["kind"] == "pair", "family"] = LEVELS_FAMILY  # as an adaptive study's
    tex = latex_table(family, spec)
    check_structure(tex, len(family) + 1)  # and the spanning row
    assert tex.count("\\midrule") == 2 and "\\multicolumn{5}{l}" in tex
    assert "Change & $\\Delta$ loss\\_\\% $\\pm$ CI" in tex
    assert r"x\_y \& z" in tex and r"50\% \#2" in tex


def test_no_tables_without_an_effect(tmp_path):
    results, spec = one_at_a_time(["baseline"])
    text = write_report(results, pd.DataFrame(columns=["run_id", "variant", "label", "seed",
                                                       "key", "step", "value"]),
                        spec, tmp_path).read_text()
    assert not (tmp_path / "effects.csv").exists() and "effects.csv" not in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_effects_tex_compiles_with_pdflatex(written, tmp_path):
    """A standalone document that \\input's the report's effects.tex, and the table of a
    one-at-a-time study whose labels carry every special character, compile with pdflatex."""
    _, out, _, _ = written
    shutil.copy(out / "effects.tex", tmp_path / "effects.tex")
    results, spec = one_at_a_time(["baseline", SPECIALS, "a → b × c − d ± e β", "50% & #1"])
    (tmp_path / "labels.tex").write_text(latex_table(effects(results, spec), spec))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\begin{table}\\centering\\input{effects.tex}\\caption{Effects}\\end{table}\n"
        "\\begin{table}\\centering\\input{labels.tex}\\end{table}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log
