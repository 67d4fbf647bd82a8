"""Report figures as PNG files. Each function returns the written path, or None if not applicable.

Figures are drawn on standalone ``matplotlib.figure.Figure`` objects (Agg canvas), so no pyplot
state or global backend is touched; seaborn and matplotlib are imported only when plotting.
"""

from __future__ import annotations

import textwrap
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report.spec import ReportSpec
from ablate.report.stats import summarize, usable, varying_factors

VERDICT_COLOURS = {
    "helps": "#1a9850",
    "hurts": "#d73027",
    "no clear effect": "#737373",
    "not enough data": "#bdbdbd",
    "all diverged": "#762a83",
    "all failed": "#000000",
}


def _wrap(label: object, width: int = 28) -> str:
    """Wrap a label for a tick or legend; ``$`` is escaped so it is never parsed as mathtext."""
    return textwrap.fill(str(label).replace(",", ", "), width).replace("$", r"\$")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _rows_height(n: int) -> float:
    return max(3.0, 0.42 * n + 1.4)


def _palette(n: int) -> list:
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", n)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _legend_outside(ax, title: str | None = None) -> None:
    import seaborn as sns

    if ax.get_legend() is not None:  # seaborn adds none for a single hue level
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=title, fontsize=7)


def _better(spec: ReportSpec) -> str:
    return "higher" if spec.mode == "max" else "lower"


def forest_plot(comparison: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Each variant's paired difference from the baseline with its 95% CI, coloured by verdict."""
    if comparison.empty:
        return None
    fig = _figure(8, _rows_height(len(comparison)))
    ax = fig.subplots()
    pos = pd.Series(np.arange(len(comparison)), index=comparison.index)
    for verdict, group in comparison.groupby("verdict", sort=False):
        colour = VERDICT_COLOURS.get(verdict, "grey")
        shown = group[group["diff"].notna()]
        err = np.vstack([shown["diff"] - shown["ci_low"], shown["ci_high"] - shown["diff"]])
        ax.errorbar(
            shown["diff"],
            pos[shown.index],
            xerr=np.nan_to_num(err),
            fmt="o",
            color=colour,
            capsize=3,
            label=verdict,
        )
        for i in group.index.difference(shown.index):
            ax.text(0, pos[i], f" {verdict}", va="center", color=colour, fontsize=9)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(pos, [_wrap(label) for label in comparison["label"]], fontsize=8)
    ax.set_ylim(len(comparison) - 0.5, -0.5)
    ax.set_xlabel(f"{spec.metric}: variant − baseline (mean over paired seeds, 95% CI)")
    ax.set_title(f"Effect of each change ({_better(spec)} is better)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def learning_curves(history: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Study metric per epoch and variant: mean across seeds with a ±1 SD band."""
    import seaborn as sns

    data = history[history["key"] == spec.metric]
    if data.empty:
        return None
    data = data.assign(label=data["label"].map(_wrap))
    n = data["label"].nunique()
    fig = _figure(10, 5.5)
    ax = fig.subplots()
    sns.lineplot(data, x="step", y="value", hue="label", errorbar="sd", palette=_palette(n), ax=ax)
    _legend_outside(ax)
    ax.set(xlabel="epoch", ylabel=spec.metric, title=f"{spec.metric} during training")
    return _save(fig, path)


def seed_plot(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Final metric per seed for each variant (points) over its quartiles (boxes)."""
    import seaborn as sns

    data = usable(results)
    if data.empty:
        return None
    summary = summarize(results, spec)
    order = [_wrap(label) for label in summary["label"]]
    data = data.assign(label=data["label"].map(_wrap), seed=data["seed"].astype(str))
    fig = _figure(8.5, _rows_height(len(order)))
    ax = fig.subplots()
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data, x="final", y="label", order=order, color="0.92", showfliers=False, ax=ax)
    sns.stripplot(
        data,
        x="final",
        y="label",
        order=order,
        hue="seed",
        jitter=0.15,
        size=5,
        palette=_palette(data["seed"].nunique()),
        ax=ax,
    )
    for i, row in summary.iterrows():
        lost = [f"{row[f'n_{s}']} {s}" for s in ("diverged", "failed") if row[f"n_{s}"]]
        if lost:
            ax.annotate(
                ", ".join(lost),
                (1.0, i),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=7,
                color=VERDICT_COLOURS["all diverged"],
            )
    _legend_outside(ax, "seed")
    ax.tick_params(axis="y", labelsize=8)
    ax.set(xlabel=f"final {spec.metric} ({_better(spec)} is better)", ylabel="")
    ax.set_title("Per-seed results (finished trials)")
    return _save(fig, path)


def interaction_heatmap(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Factorial designs: mean final metric over each pair of the (up to 4) most influential
    factors, ranked by the spread of their level means. Brighter is always better."""
    import seaborn as sns

    factors = varying_factors(results, spec)
    if spec.design not in ("full_factorial", "fractional") or len(factors) < 2:
        return None
    data = usable(results).astype({f: str for f in factors})
    spread = {f: np.ptp(data.groupby(f)["final"].mean()) for f in factors}
    pairs = list(combinations(sorted(factors, key=spread.get, reverse=True)[:4], 2))
    tables = [data.pivot_table(index=a, columns=b, values="final") for a, b in pairs]
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig = _figure(4.3 * ncols + 1, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    vmin = min(t.min().min() for t in tables)
    vmax = max(t.max().max() for t in tables)
    cmap = "viridis" if spec.mode == "max" else "viridis_r"
    for ax, table in zip(axes, tables):
        sns.heatmap(
            table,
            annot=True,
            fmt=".3g",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            cbar=False,
            ax=ax,
            annot_kws={"fontsize": 8},
        )
    for ax in axes[len(tables) :]:
        ax.set_axis_off()
    fig.colorbar(axes[0].collections[0], ax=axes.tolist(), label=f"mean final {spec.metric}")
    fig.suptitle("Two-factor interactions (mean over seeds)")
    return _save(fig, path)


def importance_plot(importance: pd.Series, spec: ReportSpec, path: str | Path) -> Path | None:
    """Horizontal bars of factor importance."""
    if importance.empty:
        return None
    fig = _figure(7, _rows_height(len(importance)))
    ax = fig.subplots()
    ax.barh([_wrap(f) for f in importance.index], importance.to_numpy(), color="#4c72b0")
    ax.invert_yaxis()
    ax.set(
        xlabel=f"importance for {spec.metric} (fANOVA, share of variance)",
        title="Factor importance",
    )
    return _save(fig, path)


def cost_plot(results: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Mean final metric vs cost (parameters, training time) per variant, Pareto front marked."""
    summary = summarize(results, spec).dropna(subset=["mean"])
    costs = [c for c in ("n_params", "train_seconds") if summary[c].notna().any()]
    if summary.empty or not costs:
        return None
    sign = 1 if spec.mode == "max" else -1
    fig = _figure(6 * len(costs), 5)
    for ax, cost in zip(fig.subplots(1, len(costs), squeeze=False)[0], costs):
        points = summary.dropna(subset=[cost])
        points = points.assign(score=sign * points["mean"]).sort_values(
            [cost, "score"], ascending=[True, False]
        )
        front = points[points["score"] > points["score"].cummax().shift(fill_value=-np.inf)]
        err = (points["mean"] - points["ci_low"]).fillna(0)
        ax.errorbar(
            points[cost],
            points["mean"],
            yerr=err,
            fmt="o",
            color="0.6",
            ecolor="0.85",
            label="variant (95% CI)",
        )
        ax.plot(front[cost], front["mean"], "o-", color="#d73027", label="Pareto front")
        base = points[points["baseline"]]
        ax.plot(base[cost], base["mean"], "*", color="black", markersize=12, label="baseline")
        for _, row in front.iterrows():
            ax.annotate(
                _wrap(row["label"], 22),
                (row[cost], row["mean"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        if cost == "n_params" and (points[cost] > 0).all():
            ax.set_xscale("log")
        ax.set(
            xlabel="parameters" if cost == "n_params" else "training time per trial (s)",
            ylabel=f"mean final {spec.metric} ({_better(spec)} is better)",
        )
        ax.legend(fontsize=7)
    fig.suptitle("Metric vs cost")
    return _save(fig, path)


def activation_plot(history: pd.DataFrame, spec: ReportSpec, path: str | Path) -> Path | None:
    """Per-layer activation SD (``act_std/<layer>`` keys) at each run's final epoch, log scale."""
    import seaborn as sns

    acts = history[history["key"].str.startswith("act_std/")]
    if acts.empty:
        return None
    acts = acts[acts["step"] == acts.groupby("run_id")["step"].transform("max")]
    layer = acts["key"].str.removeprefix("act_std/")
    layers = list(dict.fromkeys(layer))
    acts = acts.assign(
        pos=layer.map({name: i for i, name in enumerate(layers)}), label=acts["label"].map(_wrap)
    )
    fig = _figure(max(8, 0.5 * len(layers) + 5), 5.5)
    ax = fig.subplots()
    sns.lineplot(
        acts,
        x="pos",
        y="value",
        hue="label",
        marker="o",
        errorbar="sd",
        palette=_palette(acts["label"].nunique()),
        ax=ax,
    )
    _legend_outside(ax)
    ax.set_yscale("log")
    ax.set_xticks(
        range(len(layers)),
        [_wrap(name, 20) for name in layers],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set(
        xlabel="layer", ylabel="activation std (final epoch)", title="Activation scale per layer"
    )
    return _save(fig, path)
