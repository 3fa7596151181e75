"""The reproduction report: the paper's generation table, its ablations and the NAS comparison, read from finished
generation sweeps and searches, as Markdown tables and plots.

A report file (`sweeps/reproduce-*.yaml`) names the sweeps and searches; `bench/reproduce.py` runs them, measures
the performance table and writes `docs/` from the functions here. Nothing here runs anything or prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from archsweep.config import ConfigError, load_config, read_yaml
from archsweep.layout import VQVAEStage

METRICS = ("validity", "uniqueness", "novelty", "valid_unique", "valid_unique_novel")
ABLATIONS = {"vqvae.codebook_size": "codebook size K", "vqvae.seq_len": "sequence length L"}


@dataclass
class SearchEntry:
    file: str
    prior: str = ""  # the name of one of the report's generation sweeps: lm_guided samples its reference LM


@dataclass
class Performance:
    enumeration: bool = True  # NAS-Bench-101 enumerated from scratch
    vqvae_space: str = "nasbench201"  # VQ-VAE training throughput, 1 vs 2 Ray Train workers
    vqvae_epochs: int = 3
    lm_name: str = "gpt2-0.8m"  # LM training: plain PyTorch vs Ray Train + DeepSpeed, on the first sweep's codes
    lm_epochs: int = 1
    sweep_overhead: bool = True  # a 1-trial sweep against the same pipeline called directly


@dataclass
class ReportFile:
    name: str = ""
    report: str = "docs/REPORT.md"  # figures go to docs/report/<name>/ beside it
    storage: str = "runs/reproduce"  # replaces the storage of every sweep and search below
    generation: list[str] = field(default_factory=list)  # generation sweep files, one per space
    temperatures: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])
    search: list[SearchEntry] = field(default_factory=list)
    performance: Performance = field(default_factory=Performance)
    source: str = ""

    def path_of(self, name: str) -> Path:
        """A sweep or search file named in the report, relative to the report file's folder."""
        return Path(self.source).parent / name


def load_report_file(path: str | Path) -> ReportFile:
    """Read and check a report file: unknown keys and wrong types name the key; every sweep and search file it
    names must exist (their own checks run when they are loaded)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    path = Path(path)
    raw = read_yaml(path, "report")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a report file is a mapping (name, report, storage, generation, temperatures, "
                          "search, performance)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ReportFile), raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        hint = ""
        if isinstance(exc, ConfigKeyError):
            section = {"": ReportFile, "performance": Performance}.get(key.rpartition(".")[0], ReportFile)
            hint = f" (allowed: {', '.join(k for k in section.__dataclass_fields__ if k != 'source')})"
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}{f' at {key!r}' if key else ''}{hint}") from None
    spec: ReportFile = OmegaConf.to_object(merged)
    spec.source = str(path)
    spec.name = spec.name or path.stem
    if not spec.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{path}: 'name' must be letters, digits, '-' or '_'; got {spec.name!r}")
    if not spec.generation:
        raise ConfigError(f"{path}: 'generation' must name at least one generation sweep file (its reference trial "
                          "also serves the performance table)")
    for key, names in (("generation", spec.generation), ("search", [s.file for s in spec.search])):
        for name in names:
            if not spec.path_of(name).is_file():
                raise ConfigError(f"{path}: '{key}' names {name!r}, but {spec.path_of(name)} does not exist (paths "
                                  "are relative to the report file's folder)")
    if any(t <= 0 for t in spec.temperatures):
        raise ConfigError(f"{path}: 'temperatures' must all be > 0; got {spec.temperatures}")
    p = spec.performance
    for key in ("vqvae_epochs", "lm_epochs"):
        if getattr(p, key) < 1:
            raise ConfigError(f"{path}: 'performance.{key}' must be >= 1")

    try:  # the space and LM registries, so that a typo fails now and not after the sweeps
        load_config(overrides=[f"space={p.vqvae_space}", f"lm.name={p.lm_name}"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: performance: {str(exc).removeprefix('config: ')}") from None
    return spec


# --- reading a generation sweep ------------------------------------------------------------------------------------

def _get(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def reference(base: dict, rows) -> dict[str, object]:
    """The configuration the generation table is read at: the sweep's base codebook size, sequence length and LM
    where a finished trial has them, otherwise the first value its trials have (a grid without the base value)."""
    done = [r for r in rows if r.status == "TERMINATED" and r.config["vqvae"]["model"] == "vqvae"]
    ref = {}
    for key in (*ABLATIONS, "lm.name"):
        values = [_get(r.config, key) for r in done]
        ref[key] = _get(base, key) if _get(base, key) in values or not values else values[0]
    return ref


def _at(row, ref: dict, *free: str) -> bool:
    return all(_get(row.config, k) == v for k, v in ref.items() if k not in free)


def _training(metrics: dict) -> dict:
    """How far a trial's stages trained and whether each held-out curve had plateaued (None: not recorded)."""
    return {f"{stage}_{key}": metrics.get(f"{stage}/{name}") for stage in ("vqvae", "lm")
            for key, name in (("epochs", "epochs_trained"), ("plateaued", "plateaued"))}


def _line(row, **fields) -> dict:
    return {**fields, "reconstruction": row.metrics["vqvae/reconstruction_accuracy"],
            **{m: row.metrics[m] for m in METRICS}, **_training(row.metrics), "trial": row.trial_id}


def generation_table(rows, ref: dict) -> list[dict]:
    """The paper's main table for one space: the continuous VAE, the VQ-VAE with a uniform prior over codes, and
    the VQ-VAE with each LM family, all at the reference K and L; each line holds its metrics, how far its stages
    trained and its trial ids."""
    done = [r for r in rows if r.status == "TERMINATED"]
    vq = [r for r in done if r.config["vqvae"]["model"] == "vqvae" and _at(r, ref, "lm.name")]
    vae = sorted((r for r in done if r.config["vqvae"]["model"] == "vae"),
                 key=lambda r: r.config["vqvae"]["seq_len"] != ref["vqvae.seq_len"])
    lines = []
    if vae:
        lines.append(_line(vae[0], generator="continuous VAE, Gaussian prior"))
    if vq:
        stage = json.loads(VQVAEStage(Path(vq[0].paths["vqvae_dir"])).metrics.read_text())
        lines.append({"generator": "VQ-VAE, uniform prior over codes", "reconstruction": stage[
            "reconstruction_accuracy"], **{m: stage["random_codes"][m] for m in METRICS},
            "vqvae_epochs": stage.get("epochs_trained"), "vqvae_plateaued": stage.get("plateaued"),
            "trial": vq[0].trial_id})
    for r in sorted(vq, key=lambda r: r.config["lm"]["name"]):
        lines.append(_line(r, generator=f"VQ-VAE + {r.config['lm']['name']}"))
    return lines


def ceiling(rows, ref: dict) -> dict | None:
    """The ceiling line ("a perfect model of the training cells") of a generation sweep: the reference trial's,
    or any LM trial's (every trial of one sweep shares the space, split and sample count). None: not recorded."""
    done = [r for r in rows if r.status == "TERMINATED" and "ceiling/valid_unique" in r.metrics]
    done.sort(key=lambda r: not _at(r, ref))
    if not done:
        return None
    return {"reconstruction": None, **{m: done[0].metrics[f"ceiling/{m}"] for m in METRICS}, "ceiling": True}


def ablation(rows, ref: dict, key: str) -> list[dict]:
    """The reference LM's trials that differ from the reference only in `key`, in order of its value."""
    picked = [r for r in rows if r.status == "TERMINATED" and r.config["vqvae"]["model"] == "vqvae"
              and _at(r, ref, key)]
    return [_line(r, **{key: _get(r.config, key)}) for r in sorted(picked, key=lambda r: _get(r.config, key))]


def reference_trial(rows, ref: dict):
    """The trial of the reference configuration (its LM is what temperatures are sampled from), or None."""
    return next((r for r in rows if r.status == "TERMINATED" and r.config["vqvae"]["model"] == "vqvae"
                 and _at(r, ref)), None)


# --- rendering -----------------------------------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


CEILING = "a perfect model of the training cells (ceiling)"
CUT_SHORT = "not plateaued"


def epochs_cell(line: dict) -> str:
    """"VQ-VAE epochs / LM epochs", each marked where its held-out curve had not plateaued (a row cut short)."""
    parts = []
    for stage in ("vqvae", "lm"):
        epochs, flat = line.get(f"{stage}_epochs"), line.get(f"{stage}_plateaued")
        parts.append("–" if epochs is None else f"{epochs}" + ("" if flat or flat is None else f" ({CUT_SHORT})"))
    return " / ".join(parts)


def metric_rows(lines: list[dict], first: str, top: dict | None = None) -> list[list[str]]:
    """Table cells: `first` column, the stages' epochs, held-out reconstruction, the generation metrics and
    valid_unique as a fraction of the ceiling `top` (then its own row last)."""
    out = []
    for line in [*lines, *([top | {first: CEILING}] if top else [])]:
        share = f"{line['valid_unique'] / top['valid_unique']:.2f}" if top and top["valid_unique"] else "–"
        out.append([str(line[first]), "–" if line.get("ceiling") else epochs_cell(line),
                    "–" if line["reconstruction"] is None else pct(line["reconstruction"]),
                    *(pct(line[m]) for m in METRICS), share])
    return out


METRIC_HEAD = ["epochs (VQ-VAE / LM)", "held-out reconstruction", *METRICS, "valid_unique / ceiling"]


def cut_short(lines: list[dict]) -> list[dict]:
    """The lines with a stage whose held-out curve had not plateaued when its training ended."""
    return [line for line in lines if any(line.get(f"{stage}_plateaued") is False for stage in ("vqvae", "lm"))]


def plot_metrics(points: list[dict], x: str, path: Path, title: str, footer: str, xlabel: str = "",
                 log2: bool = False, top: dict | None = None) -> Path:
    """The generation metrics (and held-out reconstruction where the points have it), in %, against `x`; the
    ceiling's valid_unique (`top`) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [p[x] for p in points]
    for metric in (("reconstruction",) if "reconstruction" in points[0] else ()) + METRICS:
        ax.plot(xs, [100 * p[metric] for p in points], marker="o", label=metric)
    if top:
        ax.axhline(100 * top["valid_unique"], color="0.3", linestyle="--", linewidth=1,
                   label="valid_unique of a perfect model of the training cells")
    if log2:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(v) for v in xs])
    ax.set(title=title, xlabel=xlabel or x, ylabel="%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save(fig, path, footer)


def save(fig, path: Path, footer: str) -> Path:
    """Write the figure with where it came from (command, machine, date) along its bottom edge."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(0.01, 0.01, footer, fontsize=5.5, color="0.4", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Description": footer})
    plt.close(fig)
    return path
