"""The summary over seeds of a search directory, as NAS papers report it: mean ± std of the best-by-validation
cell's test accuracy at each budget (validation accuracy where the table has no test split), and the median
number of queries to reach the optimum; written as CSV and Markdown, with the mean best-so-far curves as a PNG."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from archsweep.search.loop import SearchState, curves
from archsweep.tracking.reproduce import save
from archsweep.tracking.store import ResultStore


def strategy_label(row) -> str:
    s = row.config["search"]
    return row.trial_id.removesuffix(f"-{s['dataset']}-s{s['seed']}")


def median_queries(values: list[int | None]) -> float:
    """Median over seeds, a search that never got there counting as infinitely many queries."""
    return float(np.median([math.inf if v is None else v for v in values])) if values else math.nan


def aggregate(rows, budgets: list[int]) -> list[dict]:
    """One line per (strategy label, dataset) over its finished seeds."""
    groups = defaultdict(list)
    for row in rows:
        if row.status == "TERMINATED":
            groups[(strategy_label(row), row.config["search"]["dataset"])].append(row.metrics)
    out = []
    for (label, dataset), metrics in groups.items():
        line = {"strategy": label, "dataset": dataset, "seeds": len(metrics)}
        for b in budgets:
            key = f"test@{b}" if any(f"test@{b}" in m for m in metrics) else f"val@{b}"
            values = [m[key] for m in metrics if key in m]
            if values:
                line[f"{key}_mean"], line[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        for key in QUERY_KEYS:
            hits = [m.get(key) for m in metrics]
            line[f"{key}_median"] = median_queries(hits)
            line[f"{key}_reached"] = sum(h is not None for h in hits)
        line["queries"] = max(m["queries"] for m in metrics)
        for key in ("wall_s", "strategy_s"):  # searches logged before these were recorded have none
            values = [m[key] for m in metrics if key in m]
            line[f"{key}_mean"] = float(np.mean(values)) if values else math.nan
        out.append(line)
    return out


def write_report(search_dir: str | Path, budgets: list[int]) -> tuple[list[dict], list[Path]]:
    search_dir = Path(search_dir)
    rows = ResultStore(search_dir).rows()
    table = aggregate(rows, budgets)
    out = search_dir / "report"
    out.mkdir(exist_ok=True)
    files = [out / "summary.csv", out / "summary.md"]
    columns = sorted({k for line in table for k in line}, key=lambda k: (k not in ("strategy", "dataset", "seeds"), k))
    with open(files[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    files[1].write_text(markdown(table, budgets))
    if plot := plot_curves(rows, out / "curves.png"):
        files.append(plot)
    return table, files


def fmt_queries(median: float, reached: int, seeds: int, cap: int) -> str:
    """"84 (17/20)": the median and how many seeds got there at all; "> 200" when fewer than half did."""
    return f"{'> ' + str(cap) if math.isinf(median) else f'{median:g}'} ({reached}/{seeds})"


def split_of(table: list[dict], budgets: list[int]) -> str:
    """"test" when the table reports test accuracy, "val" for tables without it (NAS-Bench-101 subset)."""
    return "test" if any(f"test@{b}_mean" in line for line in table for b in budgets) else "val"


WALL = "wall time per search (strategy's own)"
# the median-queries columns: to the table's optimum (its best test accuracy, where it has a test split), to its best
# cell by validation, to its top 0.1 % by validation
QUERY_KEYS = ("queries_to_optimum", "queries_to_val_optimum", "queries_to_top01")
QUERY_HEADS = ("queries to optimum (median)", "queries to best validation cell (median)",
               "queries to top 0.1 % (median)")


def query_columns(split: str) -> list[int]:
    """Which of QUERY_KEYS a summary shows: on a table without test accuracy the optimum is the best validation
    cell, so that column would repeat the first."""
    return [0, 2] if split == "val" else [0, 1, 2]


def display_rows(table: list[dict], budgets: list[int]) -> list[list[str]]:
    """The summary's cells, one row per dataset and strategy, as the CLI and the Markdown file show them."""
    split = split_of(table, budgets)
    rows = []
    for line in sorted(table, key=lambda r: (r["dataset"], r["strategy"])):
        cells = [line["dataset"], line["strategy"], str(line["seeds"])]
        for b in budgets:
            mean = line.get(f"{split}@{b}_mean")
            cells.append("" if mean is None else f"{mean:.2f} ± {line[f'{split}@{b}_std']:.2f}")
        for key in (QUERY_KEYS[i] for i in query_columns(split)):
            cells.append(fmt_queries(line[f"{key}_median"], line[f"{key}_reached"], line["seeds"], line["queries"]))
        wall, own = line.get("wall_s_mean", math.nan), line.get("strategy_s_mean", math.nan)
        cells.append("n/a" if math.isnan(wall) else f"{wall:.1f} s ({own:.1f} s)")
        rows.append(cells)
    return rows


def markdown(table: list[dict], budgets: list[int]) -> str:
    """The summary as a Markdown table: one row per strategy and dataset."""
    split = split_of(table, budgets)
    head = ["dataset", "strategy", "seeds", *(f"{split} @{b}" for b in budgets),
            *(QUERY_HEADS[i] for i in query_columns(split)), WALL]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in display_rows(table, budgets)]
    return "\n".join(lines) + "\n"


def plot_curves(rows, path: Path, footer: str = "") -> Path | None:
    """Mean best-so-far accuracy (± std over seeds) against queries, one panel per dataset; `footer`: where the
    figure came from, written along its bottom edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = defaultdict(list)
    for row in rows:
        state_path = Path(row.paths.get("state", ""))
        if row.status != "TERMINATED" or not state_path.is_file():
            continue
        history = SearchState.load(state_path).history
        if not history:
            continue
        c = curves(history)
        values = c["test_of_best"] if not np.isnan(c["test_of_best"]).all() else c["best_val"]
        series[(row.config["search"]["dataset"], strategy_label(row))].append(values)
    if not series:
        return None
    datasets = sorted({d for d, _ in series}, key=str.lower)
    labels = sorted({label for _, label in series})
    palette = [*plt.get_cmap("tab10").colors, "black", *plt.get_cmap("Dark2").colors]  # distinct hues first
    color = {label: palette[i % len(palette)] for i, label in enumerate(labels)}  # one colour a strategy, every panel
    below = len(labels) > 4  # a long legend goes under its panel instead of over the curves
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4 + below * 0.22 * ((len(labels) + 1) // 2)),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        low, high = [], []
        for (d, label), runs in sorted(series.items()):
            if d != dataset:
                continue
            n = min(len(r) for r in runs)
            stack = np.stack([r[:n] for r in runs])
            mean, std = stack.mean(0), stack.std(0)
            x = np.arange(1, n + 1)
            ax.plot(x, mean, label=f"{label} ({len(runs)} seeds)", color=color[label])
            ax.fill_between(x, mean - std, mean + std, alpha=0.2 if len(labels) <= 4 else 0.07, color=color[label])
            low.append(mean[min(n - 1, n // 10)])  # the first tenth of the budget off the scale
            high.append((mean + std)[n // 10:].max())
        ax.set_ylim(min(low) - 0.5, max(high) + 0.2)
        ax.set(title=dataset, xlabel="benchmark queries", ylabel="accuracy of best-by-validation cell (%)")
        ax.legend(fontsize="x-small" if below else "small", ncols=2 if below else 1,
                  **({"loc": "upper center", "bbox_to_anchor": (0.5, -0.14)} if below else {}))
    if footer:

        return save(fig, path, footer)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
