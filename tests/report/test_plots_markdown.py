import re
import subprocess
import sys
from itertools import product

import numpy as np
import pandas as pd
import pytest

from ablate.report import (
    activation_plot,
    cost_plot,
    forest_plot,
    importance_plot,
    interaction_plot,
    learning_curves,
    seed_plot,
    write_report,
)
from ablate.report.fmt import (
    escape,
    format_mb,
    format_number,
    format_p,
    format_seconds,
    plus_minus,
)
from ablate.stats import ReportSpec, compare

FACTORS = {
    "model.batch_norm": [True, False],
    "model.kernel_size": [3, 5],
    "model.pool": ["max", "avg"],
    "optim.lr": [0.1, 0.01],
}
INJECTION = "<script>alert('x')</script>|pipe"
PNGS = ["forest", "learning_curves", "seeds", "interactions", "importance", "cost", "activations"]


def make_study(factors=FACTORS, n_seeds=3, design="full_factorial", seed=0):
    """Synthetic study: results (one row per trial), history (per-epoch metrics) and its spec."""
    rng = np.random.default_rng(seed)
    keys = list(factors)
    rows, history = [], []
    for i, levels in enumerate(product(*factors.values())):
        config = dict(zip(keys, levels))
        changed = [f"{k.split('.')[-1]}={v}" for k, v in config.items() if v != factors[k][0]]
        label = ",".join(changed) or "baseline"
        bn = config.get("model.batch_norm", True)
        quality = 0.8 + 0.05 * bn - 0.02 * (config.get("model.kernel_size") == 5)
        for s in range(n_seeds):
            run = f"v{i}-s{s}"
            final = quality + rng.normal(0, 0.01)
            rows.append(
                {
                    "run_id": run,
                    "variant": f"v{i:02d}",
                    "label": label,
                    "baseline": i == 0,
                    "seed": s,
                    "status": "finished",
                    **config,
                    "final": final,
                    "best": final + 0.005,
                    "n_params": 50_000 * (1 + i % 3),
                    "flops_per_sample": 1e6,
                    "train_seconds": 30.0 + i + rng.normal(0, 1),
                    "epochs": 4,
                }
            )
            for step in range(4):
                history.append(
                    (run, f"v{i:02d}", label, s, "val_acc", step, final - 0.1 * (3 - step))
                )
                for depth, layer in enumerate(["conv1", "conv2", "fc"]):
                    scale = 1.0 if bn else 3.0**depth
                    history.append(
                        (
                            run,
                            f"v{i:02d}",
                            label,
                            s,
                            f"act_std/{layer}",
                            step,
                            scale * (1 + rng.uniform(0, 0.1)),
                        )
                    )
    spec = ReportSpec(
        name="cnn <b>study</b>",
        metric="val_acc",
        mode="max",
        design=design,
        factors=factors,
        baseline={k: v[0] for k, v in factors.items()},
        seeds=list(range(n_seeds)),
        n_variants=len(rows) // n_seeds,
        command="ablate run studies/cnn.yaml",
        environment={"torch": "2.5.0", "device": "cpu"},
        mlflow={
            "tracking_uri": "sqlite:///mlflow.db",
            "experiment_id": "7",
            "parent_run_id": "abc123",
        },
    )
    history = pd.DataFrame(
        history, columns=["run_id", "variant", "label", "seed", "key", "step", "value"]
    )
    return pd.DataFrame(rows), history, spec


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results, history, spec = make_study()
    results.loc[results["variant"] == "v15", "label"] = INJECTION
    results = results[~((results["variant"] == "v03") & (results["seed"] == 2))]  # missing
    results.loc[(results["variant"] == "v05") & (results["seed"] == 1), "status"] = "running"
    diverged = (results["variant"] == "v06") & (results["seed"] == 0)
    results.loc[diverged, ["status", "final"]] = ["diverged", np.nan]
    out = tmp_path_factory.mktemp("report")
    cams = out.parent / "cams.png"
    cams.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    samples = {"baseline": "a cat sat", INJECTION: "```\nnot closed"}
    path = write_report(results, history, spec, out, samples=samples, cams=cams)
    return path, results, spec


def table_row(text, label):
    def first_cell(line):
        return re.split(r"(?<!\\)\|", line)[1].strip()

    return next(line for line in text.splitlines()
                if line.startswith("|") and first_cell(line) == escape(label))


def test_every_plot_writes_a_png(report):
    path, _, _ = report
    for name in PNGS:
        png = path.parent / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({name}.png)" in path.read_text()
    assert (path.parent / "cams.png").exists() and "](cams.png)" in path.read_text()


def test_plots_return_none_when_not_applicable(tmp_path):
    results, history, spec = make_study({"model.batch_norm": [True, False]}, design="explicit")
    no_cost = results.assign(n_params=np.nan, train_seconds=np.nan)
    assert forest_plot(compare(results, spec).iloc[:0], spec, tmp_path / "a.png") is None
    assert learning_curves(history[history["key"] != "val_acc"], spec, tmp_path / "b.png") is None
    assert activation_plot(history[history["key"] == "val_acc"], spec, tmp_path / "c.png") is None
    assert interaction_plot(results, spec, tmp_path / "d.png") is None
    assert importance_plot(pd.Series(dtype=float), spec, tmp_path / "e.png") is None
    assert cost_plot(no_cost, spec, tmp_path / "f.png") is None
    assert seed_plot(results.assign(status="failed"), spec, tmp_path / "g.png") is None
    assert not list(tmp_path.iterdir())


def test_report_numbers_match_compare(report):
    path, results, spec = report
    text = path.read_text()
    comparison = compare(results, spec)
    assert len(comparison) == 15
    for _, row in comparison.iterrows():
        line = table_row(text, row["label"])
        assert plus_minus(row["diff"], row["ci_low"], row["ci_high"], signed=True) in line
        assert format_p(row["p_holm"]) in line
        assert escape(row["verdict"]) in line
    assert text.index("## Conclusion") < text.index("## Figures") < text.index("## Methods")
    for heading in ("## Factorial analysis", "## Factor importance", "## Reproduce"):
        assert heading in text
    assert "Holm" in text and "t-interval" in text and "g_z = J·d_z" in text


def test_report_states_partial_study(report):
    text = report[0].read_text()
    assert "**45 of 48 trials finished**; 1 diverged, 2 running/missing." in text


def test_report_escapes_user_text(report):
    text = report[0].read_text()
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "&lt;b&gt;study&lt;/b&gt;" in text
    for block in re.split(r"\n\s*\n", text):  # every table keeps its column count
        lines = [line for line in block.splitlines() if line.startswith("|")]
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) <= 1, block
    assert "````text\n```\nnot closed\n````" in text  # fence outlasts backticks in the sample


def test_report_provenance(report):
    text = report[0].read_text()
    assert "ablate run studies/cnn.yaml" in text
    for value in ("abc123", "sqlite:///mlflow.db", "2.5.0"):
        assert escape(value) in text


def test_results_csv_round_trips(report):
    path, results, _ = report
    back = pd.read_csv(path.parent / "results.csv")
    assert len(back) == len(results) and list(back.columns) == list(results.columns)
    assert back["run_id"].tolist() == results["run_id"].tolist()
    assert np.allclose(back["final"], results["final"], equal_nan=True)


def test_one_variant_study(tmp_path):
    results, history, spec = make_study({"model.batch_norm": [True]}, design="explicit")
    text = write_report(results, history, spec, tmp_path).read_text()
    assert "nothing to compare" in text and (tmp_path / "seeds.png").exists()
    assert not (tmp_path / "forest.png").exists()


def test_all_diverged_variant(tmp_path):
    results, history, spec = make_study(
        {"model.batch_norm": [True, False], "model.pool": ["max"]}, design="one_at_a_time"
    )
    results.loc[results["variant"] == "v01", ["status", "final"]] = ["diverged", np.nan]
    text = write_report(results, history, spec, tmp_path).read_text()
    assert "all diverged" in table_row(text, "batch_norm=False")
    assert "0/3 (3 diverged)" in text


def test_import_does_not_load_plotting_libraries():
    code = "import sys, ablate.report; print(sorted({'matplotlib', 'seaborn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_lists_the_shared_settings(tmp_path):
    from dataclasses import replace

    results, history, spec = make_study({"model.a": [1, 2]})
    spec = replace(spec, config={"model.a": 1, "train.epochs": 3, "data.path": "<x>.txt"})
    text = write_report(results, history, spec, tmp_path).read_text()
    settings = text.split("### Settings shared by every variant")[1].split("##")[0]
    assert re.search(r"\|\s*train\.epochs\s*\|\s*3\s*\|", settings)
    assert "&lt;x&gt;.txt" in settings  # escaped like every user value
    assert "model.a" not in settings  # a factor, not a shared setting


def test_readable_numbers():
    from ablate.report.fmt import interval, p_phrase, plural

    assert format_p(0.0004) == "< 0.001" and p_phrase(0.0004) == "p < 0.001"
    assert format_p(0.01234) == "0.012" and p_phrase(0.3191) == "p = 0.32"
    assert plural(1, "seed") == "1 seed" and plural(3, "seed") == "3 seeds"
    assert plus_minus(0.0970, 0.0831, 0.1109, signed=True) == "+0.097 ± 0.014"
    assert plus_minus(0.102, 0.0957, 0.1083) == "0.102 ± 0.006"  # never "± 0.00"
    assert plus_minus(-0.0016, -0.0516, 0.0484, signed=True) == "-0.002 ± 0.050"
    assert plus_minus(0.0004, -0.11, 0.11, signed=True) == "0.00 ± 0.11"  # no sign on zero
    assert interval(-0.153, 0.112) == "-0.15 to +0.11"
    assert format_number(999.6) == "1,000" and format_number(1004.2) == "1,004"  # no "1e+03"
    assert format_number(-999.7, signed=True) == "-1,000" and format_number(999.4) == "999"
    assert format_mb(1004.2) == "1004 MiB" and format_mb(12.34) == "12.3 MiB"
    assert format_mb(2048) == "2 GiB"
    # two digits in the unit that keeps them under 100; never "1.1e+02 s" (100 to 119 s did)
    assert [format_seconds(s) for s in (0.16, 42, 99.4, 110, 144, 3000, 6000, 7200)] == [
        "0.16 s", "42 s", "99 s", "1.8 min", "2.4 min", "50 min", "1.7 h", "2 h"]


def test_first_screen_is_narrow_and_answers(report):
    text = report[0].read_text()
    conclusion = text.split("## Conclusion", 1)[1].split("\n## ", 1)[0]
    sentences, table = conclusion.split("\n|", 1)
    assert "**Hurts:**" in sentences and "Of 16 tests:" in sentences
    header = "|" + table.splitlines()[0]
    assert len(re.findall(r"(?<!\\)\|", header)) - 1 == 5  # five columns fit a GitHub page
    assert "Hedges" not in header and "Params" not in header
    assert "## Variants and costs" in text and "FLOPs/sample" in text


def test_the_seed_plot_is_the_same_for_the_same_results(tmp_path):
    """Its jitter is seeded, so regenerating a report does not change a committed figure; the
    caller's numpy random state is left as it was."""
    import numpy as np

    results, _, spec = make_study()
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    seed_plot(results, spec, tmp_path / "a.png")
    assert np.random.random() == before
    seed_plot(results, spec, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_figures_of_every_variant_show_the_baseline_and_the_extremes_of_a_large_study(tmp_path):
    """A study of 32 variants: the learning curves and the per-seed figure draw the baseline and
    the best and worst by mean final metric (MAX_SHOWN in all), and say so in their titles;
    a small study's figures draw every variant."""
    from ablate.report import plots
    from ablate.stats import summarize

    factors = {f"model.f{i}": [0, 1] for i in range(5)}
    results, history, spec = make_study(factors=factors, n_seeds=2)
    summary = summarize(results, spec).set_index("variant")
    chosen, which = plots._extremes(list(summary.index), summary["mean"].to_dict(), spec)
    assert len(chosen) == plots.MAX_SHOWN and chosen[0] == summary.index[0]
    ranked = summary["mean"].iloc[1:].sort_values(ascending=False).index
    half = plots.MAX_SHOWN // 2
    assert chosen[1:] == [*ranked[:half], *ranked[-(plots.MAX_SHOWN - 1 - half):]]
    assert which == (f"the baseline, the {half} best and {plots.MAX_SHOWN - 1 - half} worst "
                     f"of 32 variants by mean final val_acc")
    titles: list[str] = []
    from matplotlib.figure import Figure

    real_save = plots._save

    def save(fig: Figure, path):
        titles.extend(t.get_text() for t in [fig._suptitle, *[a.title for a in fig.axes]] if t)
        labels = {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
        lines = sum(len(ax.get_lines()) for ax in fig.axes)
        titles.append(f"{len(labels)} labels, {lines} lines")
        return real_save(fig, path)

    import unittest.mock

    with unittest.mock.patch.object(plots, "_save", save):
        plots.seed_plot(results, spec, tmp_path / "seeds.png")
        plots.learning_curves(history, spec, tmp_path / "curves.png")
    assert sum(which in t for t in titles) == 2
    assert f"{plots.MAX_SHOWN} labels" in titles[titles.index(next(t for t in titles
                                                                    if "labels" in t))]
    small, _ = plots._extremes(list(summary.index[:plots.MAX_SHOWN]), {}, spec)
    assert small == list(summary.index[:plots.MAX_SHOWN])


def test_tables_with_a_row_per_variant_list_the_baseline_and_the_extremes_of_a_large_study(
        tmp_path):
    """50 variants: "Every variant against the baseline" and "Variants and costs" list the
    baseline and the best and worst by mean (MAX_LISTED rows), and say so; results.csv keeps
    every trial."""
    from ablate.report.sections.common import MAX_LISTED

    factors = {f"model.f{i}": [0, 1] for i in range(5)} | {"model.g": [0, 1]}
    results, history, spec = make_study(factors=factors, n_seeds=2)
    path = write_report(results, history, spec, tmp_path)
    text = path.read_text()
    note = f"Of 64 variants, the baseline and the {MAX_LISTED // 2} best and"
    assert text.count(note) == 2
    for heading in ("### Every variant against the baseline", "## Variants and costs"):
        section = text[text.index(heading):]
        table = section[section.index("| Variant"):section.index(note)]
        rows = [line for line in table.splitlines() if line.startswith("|")][2:]
        assert len(rows) == MAX_LISTED and rows[0].startswith("| baseline")
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(results)


@pytest.mark.parametrize("first_step", [0, 1])
def test_learning_curves_count_epochs_from_1_as_the_report_text_does(tmp_path, monkeypatch,
                                                                     first_step):
    """The built-in loop logs epoch k at MLflow step k - 1: the figure's x axis is the epoch
    (1..4), as in the budget section's text and figure; a loop that logs from step 1 keeps
    its steps."""
    from ablate.report import plots

    results, history, spec = make_study({"model.batch_norm": [True, False]})
    history = history.assign(step=history["step"] + first_step)
    xs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: xs.extend(
        x for ax in fig.axes for line in ax.get_lines() for x in line.get_xdata()))
    learning_curves(history, spec, tmp_path / "lc.png")
    assert sorted(set(xs)) == [1, 2, 3, 4]
