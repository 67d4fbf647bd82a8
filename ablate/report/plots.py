"""Report figures as PNG files. Each function returns the written path, or None if not applicable.

Figures are drawn on standalone ``matplotlib.figure.Figure`` objects (Agg canvas), so no pyplot
state or global backend is touched; seaborn and matplotlib are imported only when plotting.
They are sized for GitHub's ~900 px wide column: at most :data:`MAX_LINES` lines per panel
(more variants are split over panels, each repeating the baseline), labels wrapped, axes fitted
to the data.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.stats.budget import epoch_offset
from ablate.stats.compare import summarize
from ablate.stats.effects import factor_levels
from ablate.stats.spec import ReportSpec
from ablate.stats.trials import usable, varying_factors
from ablate.stats.verdict import Verdict

MAX_LINES = 8
MAX_SHOWN = 16  # a figure that draws every variant draws at most so many (see _extremes)
DPI = 110
WIDTH = 8.2  # inches: about 900 px, GitHub's column width


def _wrap(label: object, width: int = 28) -> str:
    """Wrap a label for a tick or legend; ``$`` is escaped so it is never parsed as mathtext."""
    return textwrap.fill(str(label).replace(",", ", "), width).replace("$", r"\$")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _rows_height(n: int) -> float:
    return max(3.0, 0.38 * n + 1.4)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _better(spec: ReportSpec) -> str:
    return "higher" if spec.mode == "max" else "lower"


def _groups(order: list[str]) -> list[list[str]]:
    """Split variants (baseline first) into balanced panels of at most MAX_LINES lines, each
    starting with the baseline."""
    base, others = order[0], order[1:]
    if not others:
        return [[base]]
    panels = math.ceil(len(others) / (MAX_LINES - 1))
    size = math.ceil(len(others) / panels)
    return [[base, *others[i : i + size]] for i in range(0, len(others), size)]


def _extremes(order: list[str], score: dict[str, float], spec: ReportSpec) -> tuple[list[str], str]:
    """At most :data:`MAX_SHOWN` of the variants ``order`` (baseline first): all of them, or
    the baseline and the best and worst by ``score`` (the mean final metric; a study of 512
    variants drawn line by line shows nothing, and takes minutes to draw); with the words that
    say which ("" when all)."""
    if len(order) <= MAX_SHOWN:
        return order, ""
    sign = 1.0 if spec.mode == "max" else -1.0
    scored = [v for v in order[1:] if np.isfinite(score.get(v, np.nan))]
    ranked = sorted(scored, key=lambda v: -sign * score[v])
    best = ranked[: MAX_SHOWN // 2]
    worst = ranked[len(best):][-(MAX_SHOWN - 1 - len(best)):]
    return [order[0], *best, *worst], (
        f"the baseline, the {len(best)} best and {len(worst)} worst of {len(order)} variants "
        f"by mean final {spec.metric}")


def _panel_colours(n: int) -> list:
    """Black for the baseline, then tab10 colours."""
    import seaborn as sns

    return ["black", *sns.color_palette("tab10", max(n - 1, 1))][:n]


def forest_plot(family: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Each contrast's estimate with the interval that decides its verdict, coloured by verdict.

    ``family`` is the report's first table (``term``, ``diff``, ``ci_low``, ``ci_high``,
    ``outcome``), drawn top to bottom in its order; with ``spec.min_effect`` the band ±min_effect
    is shaded (an interval inside it is negligible). The title says what an interval decides in
    words true of every row: excluding 0 is the difference claim (helps, hurts, interaction
    found — or a negligible or unstable row whose interval excludes 0 too).
    """
    if family.empty:
        return None
    fig = _figure(WIDTH, _rows_height(len(family)))
    ax = fig.subplots()
    if spec.min_effect is not None:
        ax.axvspan(-spec.min_effect, spec.min_effect, color=Verdict.NEGLIGIBLE.colour,
                   alpha=0.12, label=f"±{spec.min_effect:g} (min_effect)")
    pos = pd.Series(np.arange(len(family)), index=family.index)
    for outcome, group in family.groupby("outcome", sort=False):
        colour = Verdict(outcome).colour
        shown = group[group["diff"].notna()]
        err = np.vstack([shown["diff"] - shown["ci_low"], shown["ci_high"] - shown["diff"]])
        ax.errorbar(shown["diff"], pos[shown.index], xerr=np.nan_to_num(err), fmt="o",
                    color=colour, capsize=3, label=outcome)
        for i in group.index.difference(shown.index):
            ax.text(0, pos[i], f" {outcome}", va="center", color=colour, fontsize=8)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(pos, [_wrap(term, 34) for term in family["term"]], fontsize=8)
    ax.set_ylim(len(family) - 0.5, -0.5)
    ax.set_xlabel(f"difference in {spec.metric} ("
                  + ("Holm" if spec.min_effect is None else "Holm–Shaffer")
                  + ("-adjusted repeated interval, group-sequential)" if spec.adaptive is not None
                     else "-adjusted interval)"))
    ax.set_title(f"Effects ({_better(spec)} is better); an interval excludes 0 exactly when its "
                 "test rejects no difference" + ("" if spec.min_effect is None else
                                                 ",\nand lies inside the band exactly when it "
                                                 "rejects min_effect or more (negligible)"),
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _small_multiples(groups: list[list[str]], height: float):
    """One panel per group, stacked, sharing both axes so panels compare at a glance."""
    fig = _figure(WIDTH, max(3.2, height * len(groups) + 0.6))
    return fig, fig.subplots(len(groups), 1, squeeze=False, sharex=True, sharey=True).ravel()


def _legend_right(ax, title: str | None = None) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False,
                  title=title, title_fontsize=7)


def learning_curves(history: pd.DataFrame, spec: ReportSpec, path: str | Path,
                    task: str | None = None) -> Path | None:
    """Study metric per epoch: mean across seeds with a ±1 SD band, at most MAX_LINES a panel
    (``task``: the task whose trials ``history`` holds, named in the title)."""
    data = history[history["key"] == spec.metric]
    if data.empty:
        return None
    stats = data.groupby(["variant", "step"])["value"].agg(["mean", "std"]).reset_index()
    stats["step"] += epoch_offset(stats["step"].min())  # the epochs of the report's text
    label = dict(zip(data["variant"], data["label"]))
    last = stats.loc[stats.groupby("variant")["step"].idxmax()]
    order, which = _extremes(_baseline_first(list(label), history),
                             dict(zip(last["variant"], last["mean"])), spec)
    groups = _groups(order)
    fig, axes = _small_multiples(groups, 2.5)
    for ax, group in zip(axes, groups):
        for variant, colour in zip(group, _panel_colours(len(group))):
            line = stats[stats["variant"] == variant]
            ax.plot(line["step"], line["mean"], color=colour, label=_wrap(label[variant]),
                    linewidth=2 if variant == order[0] else 1.3)
            ax.fill_between(line["step"], line["mean"] - line["std"].fillna(0),
                            line["mean"] + line["std"].fillna(0), color=colour, alpha=0.12)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
        _legend_right(ax)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle((f"{task}: " if task else "")
                 + f"{spec.metric} during training (mean over seeds, band ±1 SD; baseline black)"
                 + (f"\n{which}" if which else ""), fontsize=10)
    return _save(fig, path)


def _baseline_first(order: list[str], history: pd.DataFrame) -> list[str]:
    """``order`` with the baseline (variant labelled "baseline" if history has no flag) first."""
    base = history.loc[history["label"] == "baseline", "variant"]
    if len(base) and base.iloc[0] in order:
        order = [base.iloc[0], *(v for v in order if v != base.iloc[0])]
    return order


def seed_plot(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Final metric per seed for each variant (points) over its quartiles (boxes)."""
    import seaborn as sns

    data = usable(results)
    if data.empty:
        return None
    summary = summarize(results, spec)
    chosen, which = _extremes(list(summary["variant"]), dict(zip(summary["variant"],
                                                                summary["mean"])), spec)
    summary = summary.set_index("variant").loc[chosen].reset_index()
    data = data[data["variant"].isin(chosen)]
    order = [_wrap(label, 34) for label in summary["label"]]
    data = data.assign(label=data["label"].map(lambda x: _wrap(x, 34)),
                       seed=data["seed"].astype(str))
    fig = _figure(WIDTH, _rows_height(len(order)))
    ax = fig.subplots()
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data, x="final", y="label", order=order, color="0.92", showfliers=False, ax=ax)
    state = np.random.get_state()  # seaborn jitters with numpy's global generator: seed it, so
    np.random.seed(0)  # the same results draw the same figure, and leave the caller's state
    try:
        sns.stripplot(data, x="final", y="label", order=order, hue="seed", jitter=0.15, size=5,
                      palette=sns.color_palette("tab10", data["seed"].nunique()), ax=ax)
    finally:
        np.random.set_state(state)
    for i, row in summary.iterrows():
        lost = [f"{row[f'n_{s}']} {s}" for s in ("diverged", "failed") if row[f"n_{s}"]]
        if lost:
            ax.annotate(", ".join(lost), (1.0, i), xycoords=("axes fraction", "data"),
                        xytext=(-4, 0), textcoords="offset points", ha="right", va="center",
                        fontsize=7, color=Verdict.UNSTABLE.colour)
    _legend_right(ax, "seed")
    ax.tick_params(axis="y", labelsize=8)
    ax.set(xlabel=f"final {spec.metric} ({_better(spec)} is better)", ylabel="")
    ax.set_title("Per-seed results (finished trials)" + (f"\n{which}" if which else ""),
                 fontsize=10)
    return _save(fig, path)


def _factor_spread(data: pd.DataFrame, factors: list[str]) -> list[str]:
    """Factors by the spread of their level means, largest first."""
    spread = {f: np.ptp(data.groupby(f)["final"].mean()) for f in factors}
    return sorted(factors, key=spread.__getitem__, reverse=True)


def interaction_plot(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Full factorials: one panel per pair of the (up to 4) most influential factors; x the
    levels of one, a line per level of the other, y the mean over seeds of the final metric
    averaged over the remaining factors. Parallel lines: no interaction."""
    factors = varying_factors(results, spec)
    if spec.design != "full_factorial" or len(factors) < 2:
        return None
    data = usable(results).astype({f: str for f in factors})
    pairs = list(combinations(_factor_spread(data, factors)[:4], 2))
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig = _figure(WIDTH, 2.7 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, (a, b) in zip(axes, pairs):
        per_seed = data.groupby([a, b, "seed"])["final"].mean().groupby([a, b]).mean()
        table = per_seed.unstack(b)
        table = table.reindex(index=_levels(spec, a, table.index),
                              columns=_levels(spec, b, table.columns))
        for level, colour in zip(table.columns, _panel_colours(len(table.columns))):
            ax.plot(range(len(table.index)), table[level], "o-", color=colour,
                    label=_wrap(level, 14))
        ax.set_xticks(range(len(table.index)), [_wrap(x, 12) for x in table.index], fontsize=8)
        ax.set_xlim(-0.3, len(table.index) - 0.7)
        ax.set_xlabel(_wrap(a.rsplit(".", 1)[-1], 20), fontsize=8)
        ax.legend(title=_wrap(b.rsplit(".", 1)[-1], 20), fontsize=7, title_fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(pairs):]:
        ax.set_axis_off()
    axes[0].set_ylabel(f"mean final {spec.metric}")
    fig.suptitle("Interactions: mean over seeds and the other factors (parallel lines: none)",
                 fontsize=10)
    return _save(fig, path)


def _levels(spec: ReportSpec, factor: str, present) -> list[str]:
    """Present levels of a factor as text, the baseline's first."""
    return factor_levels(spec, factor, pd.Series(list(present)))


def importance_plot(importance: pd.Series, spec: ReportSpec, path: str | Path) -> Path | None:
    """Horizontal bars of factor importance."""
    if importance.empty:
        return None
    fig = _figure(6.5, _rows_height(len(importance)) * 0.8)
    ax = fig.subplots()
    ax.barh([_wrap(f) for f in importance.index], importance.to_numpy(), color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set(xlabel=f"importance for {spec.metric} (fANOVA, share of variance)",
           title="Factor importance")
    return _save(fig, path)


def _pareto(points: pd.DataFrame, cost: str, sign: int) -> pd.DataFrame:
    """Variants no other variant beats on both cost (lower) and metric (better)."""
    ordered = points.assign(score=sign * points["mean"]).sort_values(
        [cost, "score"], ascending=[True, False])
    return ordered[ordered["score"] > ordered["score"].cummax().shift(fill_value=-np.inf)]


def _spread(y: np.ndarray, gap: float) -> np.ndarray:
    """Positions near ``y`` at least ``gap`` apart (order kept), centred on the originals."""
    order = np.argsort(y)
    placed = y[order].astype(float)
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    placed -= (placed - y[order]).mean()
    out = np.empty_like(placed)
    out[order] = placed
    return out


def _label_points(ax, fig, x: pd.Series, y: pd.Series, texts: list[str]) -> None:
    """Labels beside their points (left of those in the right half), pushed apart vertically
    so none overlap, each joined to its point by a thin line."""
    fig.canvas.draw()  # fix the layout before converting to pixels
    pixels = ax.transData.transform(np.column_stack([x, y]))
    middle = ax.transAxes.transform((0.5, 0.5))[0]
    lines = max(t.count("\n") + 1 for t in texts)
    placed = _spread(pixels[:, 1], 10.0 * lines + 3)  # ~7 pt lines at 110 dpi
    points_per_pixel = 72 / fig.dpi
    for xv, yv, (px, py), ty, text in zip(x, y, pixels, placed, texts):
        left = px > middle
        note = ax.annotate(
            text, xy=(xv, yv), fontsize=7, va="center",
            ha="right" if left else "left", textcoords="offset points",
            xytext=(-14 if left else 14, (ty - py) * points_per_pixel),
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6},
        )
        note.set_in_layout(False)


def _fit_y(ax, centre: pd.Series, low: pd.Series, high: pd.Series, accuracy: bool) -> None:
    """Y limits around the data: never below 0 when no value is, never above 1 for an accuracy
    whose values are not."""
    lo, hi = float(low.min()), float(high.max())
    pad = 0.05 * (hi - lo or abs(hi) or 1)
    lo, hi = lo - pad, hi + pad
    if (centre >= 0).all():
        lo = max(lo, 0 - pad / 2)
    if accuracy and (centre <= 1).all():
        hi = min(hi, 1 + pad / 2)
    ax.set_ylim(lo, hi)


COST_NAMES = {"flops_per_sample": "training FLOPs per sample", "n_params": "parameters",
              "train_seconds": "time per trial (s)"}


def _varies(values: pd.Series) -> bool:
    values = values.dropna()
    return len(values) > 1 and values.max() > values.min()


def cost_plot(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Mean final metric against cost: FLOPs per sample (or parameters when FLOPs were not
    counted or are all equal) with the Pareto front labelled, and, smaller, against time per
    trial (no front: wall time depends on the machine and its load)."""
    from matplotlib.ticker import EngFormatter

    summary = summarize(results, spec).dropna(subset=["mean"])
    main = next((c for c in ("flops_per_sample", "n_params") if _varies(summary[c])), None)
    costs = [c for c in (main, "train_seconds") if c and summary[c].notna().any()]
    if summary.empty or not costs:
        return None
    fig = _figure(WIDTH, 4.4)
    axes = fig.subplots(1, len(costs), squeeze=False, sharey=True,
                        gridspec_kw={"width_ratios": [2.2, 1][: len(costs)]})[0]
    err = (summary["mean"] - summary["ci_low"]).fillna(0)
    for ax, cost in zip(axes, costs):
        points = summary.dropna(subset=[cost])
        ax.errorbar(points[cost], points["mean"], yerr=err[points.index], fmt="o",
                    color="0.55", ecolor="0.85", markersize=4, label="variant (95% CI)")
        base = points[points["baseline"]]
        ax.plot(base[cost], base["mean"], "*", color="black", markersize=11, label="baseline")
        if cost != "train_seconds":
            if (points[cost] > 0).all() and points[cost].max() > 5 * points[cost].min():
                ax.set_xscale("log")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.margins(x=0.15)
        ax.grid(alpha=0.3)
        ax.set_xlabel(COST_NAMES[cost])
    _fit_y(axes[0], summary["mean"], summary["mean"] - err, summary["mean"] + err,
           "acc" in spec.metric.lower())
    axes[0].set_ylabel(f"mean final {spec.metric} ({_better(spec)} is better)")
    if main is not None:
        points = summary.dropna(subset=[main])
        front = _pareto(points, main, 1 if spec.mode == "max" else -1)
        axes[0].plot(front[main], front["mean"], "o-", color="#d73027", markersize=5,
                     label="Pareto front")
        _label_points(axes[0], fig, front[main], front["mean"],
                      [_wrap(label, 24) for label in front["label"]])
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Metric against cost", fontsize=10)
    return _save(fig, path)


def activation_plot(history: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Per-layer activation SD (``act_std/<layer>`` keys) at each run's final epoch: mean across
    seeds, band min–max across seeds; a log scale when the positive values span over 30x."""
    acts = history[history["key"].str.startswith("act_std/")]
    if acts.empty:
        return None
    acts = acts[acts["step"] == acts.groupby("run_id")["step"].transform("max")]
    acts = acts.assign(layer=acts["key"].str.removeprefix("act_std/"))
    layers = list(dict.fromkeys(acts["layer"]))
    stats = acts.groupby(["variant", "layer"])["value"].agg(["mean", "min", "max"])
    label = dict(zip(acts["variant"], acts["label"]))
    order = _baseline_first(list(dict.fromkeys(acts["variant"])), history)
    groups = _groups(order)
    fig, axes = _small_multiples(groups, 2.4)
    positive = acts.loc[acts["value"] > 0, "value"]
    log = len(positive) > 0.9 * len(acts) and positive.max() > 30 * positive.min()
    for ax, group in zip(axes, groups):
        for variant, colour in zip(group, _panel_colours(len(group))):
            line = stats.loc[variant].reindex(layers)
            if log:  # a dead layer's 0 has no place on a log axis: a gap, not a cliff
                line = line.where(line > 0).assign(min=line["min"].clip(lower=positive.min()))
            x = np.arange(len(layers))
            ax.plot(x, line["mean"], "o-", color=colour, markersize=3, label=_wrap(label[variant]),
                    linewidth=2 if variant == order[0] else 1.2)
            ax.fill_between(x, line["min"], line["max"], color=colour, alpha=0.12)
        if log:
            ax.set_yscale("log")
        elif (acts["value"] >= 0).all():
            ax.set_ylim(bottom=0)
        ax.set_ylabel("activation SD")
        ax.grid(alpha=0.3)
        _legend_right(ax)
    axes[-1].set_xticks(range(len(layers)), [_wrap(name, 18) for name in layers], rotation=30,
                        ha="right", fontsize=7)
    fig.suptitle("Activation scale per layer at the final epoch (mean over seeds, band min–max)",
                 fontsize=10)
    return _save(fig, path)


def budget_plot(rows: pd.DataFrame, spec: ReportSpec, path: str | Path,
                first_epoch: int = 1) -> Path | None:
    """Each effect (``term``) against the epoch: its estimate (``diff``) with the interval that
    epoch's family gives it (``ci_low``, ``ci_high``, a band), one panel each, every point
    coloured by that epoch's verdict (``outcome``); ``epoch`` is the x axis. The final epoch's
    verdicts are the report's; ``first_epoch`` only sets the axis' lower limit."""
    if rows.empty:
        return None
    from matplotlib.lines import Line2D

    terms = list(dict.fromkeys(rows["term"]))
    ncols = 2 if len(terms) in (2, 4) else min(len(terms), 3)  # no half-empty row of 3
    nrows = math.ceil(len(terms) / ncols)
    fig = _figure(WIDTH, max(3.0, 2.35 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    last = int(rows["epoch"].max())
    for ax, term in zip(axes, terms):
        _budget_panel(ax, rows[rows["term"] == term], spec.min_effect)
        ax.set_title(_wrap(term, 44 if ncols < 3 else 30), fontsize=8)
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    for ax in axes[:len(terms)][-ncols:]:
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(_integer_locator())
        ax.tick_params(labelbottom=True)
    axes[0].set_xlim(first_epoch - 0.3, last + 0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"Δ {spec.metric}", fontsize=8)
    seen = list(dict.fromkeys(rows["outcome"]))
    handles: list = [Line2D([], [], marker="o", linestyle="", color=Verdict(o).colour, label=o)
                     for o in sorted(seen, key=lambda o: Verdict(o).order)]
    if spec.min_effect is not None:
        from matplotlib.patches import Patch

        handles.append(Patch(color=Verdict.NEGLIGIBLE.colour, alpha=0.12,
                             label=f"±{spec.min_effect:g} (min_effect)"))
    fig.suptitle(f"Effect of each change at every epoch ({_better(spec)} is better): estimate "
                 "and interval (band) of that epoch's family;\nthe last epoch (ringed) is the "
                 "table's", fontsize=9)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles) + 1, 7),
               fontsize=7, frameon=False, title="verdict at that epoch", title_fontsize=7)
    return _save(fig, path)


def _budget_panel(ax, rows: pd.DataFrame, min_effect: float | None) -> None:
    """One effect against the epoch: its estimate with the interval of that epoch's family (a
    band), points coloured by that epoch's verdict, the last one (the table's) ringed."""
    line = rows.sort_values("epoch")
    if min_effect is not None:
        ax.axhspan(-min_effect, min_effect, color=Verdict.NEGLIGIBLE.colour, alpha=0.12)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.fill_between(line["epoch"], line["ci_low"], line["ci_high"], color="0.6", alpha=0.25,
                    linewidth=0)
    ax.plot(line["epoch"], line["diff"], color="0.45", linewidth=1)
    colours = [Verdict(o).colour for o in line["outcome"]]
    ax.scatter(line["epoch"], line["diff"], c=colours, s=22, zorder=3)
    end = line.iloc[-1:]  # the table's verdict, ringed
    ax.scatter(end["epoch"], end["diff"], c=colours[-1:], s=46, edgecolors="black",
               linewidths=1.2, zorder=4)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)


def task_budget_plot(rows: pd.DataFrame, spec: ReportSpec, path: str | Path,
                     columns: list[str], across: str) -> Path | None:
    """The effect over the budget of a study with tasks: a row of panels per change
    (``term``), a column per task (``task``) in ``columns`` order, the aggregate's column
    (``task == across``, in standardised units) last where present; each panel as in
    :func:`budget_plot`, with its own y axis (tasks measure in their own units)."""
    if rows.empty:
        return None
    from matplotlib.lines import Line2D

    terms = list(dict.fromkeys(rows["term"]))
    columns = [c for c in columns if (rows["task"] == c).any()]
    ncols, nrows = len(columns), len(terms)
    fig = _figure(WIDTH, max(3.0, 1.9 * nrows + 1.2))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex="col")
    for r, term in enumerate(terms):
        for c, task in enumerate(columns):
            ax = axes[r, c]
            panel = rows[(rows["term"] == term) & (rows["task"] == task)]
            if panel.empty:
                ax.set_visible(False)
                continue
            _budget_panel(ax, panel, spec.min_effect if task != across else None)
            if r == 0:
                ax.set_title(_wrap(task, 22), fontsize=8, fontweight="bold")
            if c == 0:
                ax.set_ylabel(_wrap(term, 18), fontsize=7)
            if r == nrows - 1:
                ax.set_xlabel("epoch", fontsize=7)
                ax.xaxis.set_major_locator(_integer_locator())
    for c, task in enumerate(columns):
        epochs = rows.loc[rows["task"] == task, "epoch"]
        axes[0, c].set_xlim(int(epochs.min()) - 0.3, int(epochs.max()) + 0.3)
    seen = list(dict.fromkeys(rows["outcome"]))
    handles: list = [Line2D([], [], marker="o", linestyle="", color=Verdict(o).colour, label=o)
                     for o in sorted(seen, key=lambda o: Verdict(o).order)]
    units = (f"Δ {spec.metric} per task" + (f", g (standardised) {across}"
                                              if across in columns else ""))
    fig.suptitle(f"Effect of each change (row) on each task (column) at every epoch "
                 f"({_better(spec)} is better;\n{units}): estimate and interval (band) of that "
                 "epoch's family; the last epoch (ringed) is the table's", fontsize=8)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles) + 1, 7),
               fontsize=7, frameon=False, title="verdict at that epoch", title_fontsize=7)
    return _save(fig, path)


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True, nbins=8)
