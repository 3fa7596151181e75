"""The sweep report: every trial of a sweep from the result store, as rows for a table, as CSV/JSON, and as plots
of a metric against the swept axes.

`report(sweep_dir)` writes `report/results.csv`, `report/results.json` and PNG plots into the sweep directory and
returns the rows; the CLI renders the table. Library code never prints.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from archsweep.benchmarks import DATASETS, has_table
from archsweep.config import get_key
from archsweep.errors import ArchsweepError
from archsweep.tracking.store import ResultStore

HEADLINE = ("validity", "uniqueness", "novelty", "valid_unique", "valid_unique_novel")


def swept_keys(sweep_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    spec = Path(sweep_dir) / "sweep.yaml"
    if not spec.is_file():
        return []
    saved = OmegaConf.to_container(OmegaConf.load(spec))
    extra = [key for patch in saved.get("extra_trials") or [] for key in patch]
    return list(dict.fromkeys([*(saved.get("sweep") or {}), *extra]))


def rows(sweep_dir: str | Path, sort_by: str | None = "valid_unique", descending: bool = True) -> list[dict]:
    """One flat dict per trial: trial id, status, the swept keys' values, `accuracy` (the generated cells' mean
    validation accuracy on the benchmark's first dataset; "n/a" for a space without an accuracy table), then every
    metric it reported."""
    sweep_dir = Path(sweep_dir)
    keys = swept_keys(sweep_dir)
    out = []
    for row in ResultStore(sweep_dir).rows():
        flat = {"trial": row.trial_id, "status": row.status}
        flat |= {key: get_key(row.config, key) for key in keys}
        space = get_key(row.config, "space")
        if space and not has_table(space):
            flat["accuracy"] = "n/a"
        elif space and isinstance(mean := row.metrics.get(f"accuracy_{DATASETS[space][0]}_val/mean"), float):
            flat["accuracy"] = f"{mean:.2f}"
        flat |= row.metrics
        if row.error:
            flat["error"] = row.error.strip().splitlines()[-1][:200]
        out.append(flat)
    if sort_by:
        present = [r for r in out if isinstance(r.get(sort_by), (int, float))]
        absent = [r for r in out if not isinstance(r.get(sort_by), (int, float))]
        out = sorted(present, key=lambda r: r[sort_by], reverse=descending) + absent
    return out


def write_exports(table: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in table for k in r))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    (out_dir / "results.json").write_text(json.dumps(table, indent=2))
    return [out_dir / "results.csv", out_dir / "results.json"]


def write_plots(table: list[dict], keys: list[str], out_dir: Path, metric: str = "valid_unique") -> list[Path]:
    """`metric` against each numeric swept key, one line per value of every other swept key combined (e.g.
    valid_unique vs codebook size, one line per sequence length and LM); and a bar per value of each categorical
    key (e.g. per LM choice), mean over the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in table if r.get("status") == "TERMINATED" and isinstance(r.get(metric), (int, float))]
    written = []
    if not done:
        return written
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        values = {r[key] for r in done}
        if len(values) < 2:
            continue
        others = [k for k in keys if k != key]
        fig, ax = plt.subplots(figsize=(6, 4))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            groups: dict[tuple, list] = {}
            for r in done:
                groups.setdefault(tuple(r[k] for k in others), []).append((r[key], r[metric]))
            for group, points in sorted(groups.items(), key=lambda g: str(g[0])):
                xs = sorted({x for x, _ in points})
                ys = [sum(y for x2, y in points if x2 == x) / sum(1 for x2, _ in points if x2 == x) for x in xs]
                label = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or metric
                ax.plot(xs, ys, marker="o", label=label)
            if all(v > 0 for v in values) and max(values) / min(values) >= 8:
                ax.set_xscale("log", base=2)
            ax.legend(fontsize=7)
        else:
            labels = sorted(values, key=str)
            means = [sum(r[metric] for r in done if r[key] == v) / sum(1 for r in done if r[key] == v) for v in labels]
            ax.bar([str(v) for v in labels], means)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {key}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{metric.replace('/', '_')}_by_{key.replace('.', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def report(sweep_dir: str | Path, sort_by: str = "valid_unique", descending: bool = True,
           metric: str = "valid_unique") -> tuple[list[dict], list[Path]]:
    """(rows, files written): the table, and CSV/JSON/PNG under `<sweep_dir>/report/`."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "results.db").is_file():

        raise ArchsweepError(f"{sweep_dir} has no results.db: not a sweep directory, or no trial has started yet")
    table = rows(sweep_dir, sort_by, descending)
    out_dir = sweep_dir / "report"
    files = write_exports(table, out_dir) + write_plots(table, swept_keys(sweep_dir), out_dir, metric)
    return table, files
