"""Typed configuration: dataclasses (omegaconf structured configs), YAML files and `key=value` overrides.

Unknown keys, wrong types, out-of-range values and names no registry knows are rejected before anything
starts, with the key, what was given and what is allowed. Nothing in a config is ever imported or executed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from archsweep.benchmarks import DATASETS, require_table
from archsweep.errors import ArchsweepError, did_you_mean
from archsweep.lm.models import canonical_name, check_name
from archsweep.settings import absolute
from archsweep.spaces import SPACES, get_space


class ConfigError(ArchsweepError, ValueError):
    """A configuration a run cannot start from."""


@dataclass
class VQVAEConfig:
    model: str = "vqvae"  # vqvae: discrete codes | vae: the continuous (arch2vec-style) baseline
    # pooled: L learned queries attend over the nodes | per_node: one latent per vertex | auto: the space's own
    # (pooled; per_node on darts, where each op vertex's code then says its operation and its input)
    latent: str = "auto"
    # L, the number of codes per cell; "auto": per_node, the space's vertex count (22 on darts); pooled, the space's
    # own (8; 16 on darts, whose cells carry ~60 bits)
    seq_len: Any = "auto"
    codebook_size: Any = "auto"  # K; "auto": the space's own (64; 256 on darts, whose 22 per-vertex codes share it)
    code_dim: int = 16
    hidden_dim: int = 128
    gin_layers: Any = "auto"  # message-passing rounds of the GIN encoder; "auto": the space's own (4 on every space)
    # undirected: messages cross every edge both ways | forward: a vertex hears only the vertices feeding it, so a
    # per-vertex code depends on its operation and its inputs alone and the codes, in vertex order, are causal for
    # the LM (measured on darts: leaner codes, fewer valid samples; see spaces/darts.py); "auto": the space's own
    # (undirected on every space)
    gin_direction: str = "auto"
    decoder_hidden: int = 512
    # weight of the edges' term in the reconstruction loss against the ops'; "auto": the space's own (1; 10 on darts,
    # whose 231 edge entries a cell, mostly fixed, would otherwise drown the few that say where inputs come from)
    edge_weight: Any = "auto"
    beta: float = 0.25  # commitment loss weight
    ema: bool = True  # codebook by exponential moving averages instead of gradients
    ema_decay: float = 0.99
    dead_code_restart: bool = True  # re-seed unused codes from encoder outputs
    kl_weight: float = 0.005  # vae only


@dataclass
class TrainConfig:
    epochs: int = 20
    # global, split across the workers; "auto": 256 on CPU workers, larger on GPUs (archsweep.train.batching)
    batch_size: Any = "auto"
    lr: float = 1e-3  # at batch 256; another batch scales it by sqrt(batch / 256)
    lr_schedule: str = "cosine"  # cosine: decays to 0 over all steps | constant
    weight_decay: float = 0.0
    train_fraction: float = 0.9  # seeded permutation of the space's cells; the rest is held out
    # a space too large to enumerate (darts) trains on this many cells sampled uniformly (built once, cached)
    dataset_size: int = 100_000
    dataset_seed: int = 0
    num_workers: int = 1  # Ray Train workers (data parallel)
    cpus_per_worker: int = 1
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # with use_gpu; a fraction packs several small workers (or trials) on one GPU
    checkpoint_every: int = 1  # epochs
    checkpoint_interval_s: float = 30.0  # and at least this long after the previous one (the last epoch always)
    compile: bool = False  # torch.compile the model (pays on GPUs for long runs)
    max_failures: int = 2  # lost workers (a killed process, a lost node) survived by resuming from the checkpoint
    # stop once held-out reconstruction has plateaued (archsweep.train.flat); `epochs` is then the cap
    early_stop: bool = False
    patience: int = 3  # epochs without a gain above min_delta that make a plateau (also how reports judge a run)
    min_delta: float = 0.001  # in held-out cells exactly reconstructed (0.001 = 0.1 %)
    min_epochs: int = 5  # no plateau before this many epochs: reconstruction can sit near 0 for a few at the start


@dataclass
class LoRAConfig:
    rank: int = 0  # 0: off, every weight trains; > 0: only LoRA adapters of this rank train (pretrained models)
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # []: peft's default for the model type; [all-linear]


@dataclass
class LMConfig:
    name: str = "gpt2-0.8m"  # a preset (archsweep.lm.models.PRESETS), or pretrained:<hub name or local path>
    epochs: int = 20  # sized for NAS-Bench-201's 14k training sequences; NAS-Bench-101 (381k) needs far fewer
    # global: micro batch x gradient accumulation x workers; "auto": 64 on CPU workers, larger on GPUs
    batch_size: Any = "auto"
    grad_accum: int = 1
    lr: float = 5e-4  # at batch 64; another batch scales it by sqrt(batch / 64)
    warmup_steps: int = 100  # at batch 64; another batch warms up over as many sequences
    weight_decay: float = 0.01
    zero_stage: int = 2  # DeepSpeed ZeRO stage: 0 (plain data parallel) .. 3 (parameters sharded too)
    bf16: bool = True  # on GPU workers; CPU workers train in fp32
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    checkpoint_every: int = 1
    checkpoint_interval_s: float = 30.0
    compile: bool = False
    max_failures: int = 2
    max_steps: int = 0  # stop after this many optimiser steps in all (0: train every epoch through)
    # stop once the held-out loss has plateaued (archsweep.train.flat); `epochs` is then the cap
    early_stop: bool = False
    patience: int = 3  # epochs without a gain above min_delta that make a plateau (also how reports judge a run)
    min_delta: float = 0.01  # in held-out loss, nats per code token (0.01: 1 % of the perplexity)
    min_epochs: int = 5  # no plateau before this many epochs
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30 % slower
    offload: str = "none"  # none | cpu: ZeRO-Offload, optimizer state (and, with ZeRO-3, parameters) in host memory
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class SampleConfig:
    samples: int = 10_000
    batch_size: Any = "auto"  # sequences generated at once; "auto": 1,000 on CPU, 10,000 on a GPU
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0
    constrained: bool = False  # decode only texts of L numbers below K (every sample parses; see lm/sampling.py)


@dataclass
class EvolutionConfig:
    population: int = 10  # NAS-Bench-201's REA settings; NAS-Bench-101's paper used larger ones
    tournament: int = 3


@dataclass
class LMGuidedConfig:
    prior: str = ""  # a finished `archsweep run` or sweep-trial directory; a sweep trial's search uses its own
    candidates: int = 512  # LM samples drawn per round (source table: table cells drawn)
    # sample: the adapted LM's samples, kept where the search may query them | table: every unqueried cell of the
    # benchmark table scored by the adapted LM's log-likelihood and drawn from it at `temperature` without
    # replacement, the LM restricted to the cells a search may query (on a subset table such as NAS-Bench-101's
    # 30k cells, ~93 % of the prior's samples are cells the table lacks)
    source: str = "sample"
    temperature: float = 0.7  # below 1: the adapted LM's likely cells first (0.7 and top_k 3 chosen on NB201 CIFAR-10)
    sample_top_k: int = 0  # sampling's top-k (0: off)
    top_k: int = 3  # the LM is adapted to the k best architectures found so far
    adapt_steps: int = 20  # optimiser steps of that adaptation, each round, starting from the prior
    adapt_lr: float = 1e-3
    num_gpus: float = 0.0  # per generator actor; a fraction shares a GPU between generators
    # rank each round's new samples by bo's model (DNGO over search.encoding, search.bo.fit_steps) from
    # search.bo.initial queries on, instead of by how often they were sampled
    surrogate: bool = False
    # queries per round that bo picks instead (EI of DNGO over search.encoding, candidates from search.bo.pool), from
    # search.bo.initial queries on: the generator searches around the best cells, bo looks for better ones elsewhere
    explore: int = 0
    initial: int = 0  # random queries before the generator's first round (0: it starts from the prior's own samples)


@dataclass
class BOConfig:
    initial: int = 16  # random queries before the first model (arch2vec's Bayesian optimisation starts with 16)
    # the candidates scored each round: space (pool_size random cells of the table) | table (every unqueried cell of
    # the table, as arch2vec scores its whole dataset) | lm (pool_size samples of the prior)
    pool: str = "space"
    pool_size: int = 1000
    fit_steps: int = 300  # Adam steps of the DNGO network per round


@dataclass
class RLConfig:
    lr: float = 0.05  # Adam on the policy's mean and log standard deviation
    sigma: float = 0.5  # initial standard deviation, in units of the representation's per-dimension spread
    # random queries before the policy acts; its mean then starts at the best of them, not at the representation's
    # centre, whose cells can be worse than the table's average (NB101, bench/lm.py's VQ-VAE: 90.2 against 91.05)
    initial: int = 16
    pool_size: int = 2000  # random cells of the table a sampled point is rounded to (nearest by encoding)


@dataclass
class LMRankerConfig:
    name: str = "gpt2-tiny"  # the ranker: a preset of any family (archsweep.lm.models.PRESETS), trained each round
    context: int = 8  # history cells (code sequence + score) in a prompt; at ranking time the best so far
    candidates_per_prompt: int = 4
    # ranking examples built from the queried cells each round, and optimiser steps at the first ranked round:
    # at 1,024 and 150 the ranker's Kendall tau on unseen NB201 cells was 0.26 against DNGO's 0.42 (bench.ranker)
    examples: int = 4096
    steps: int = 600
    update_steps: int = 50  # optimiser steps each later round, continuing the ranker on the grown history
    score_weight: float = 1.0  # weight of the loss on each context cell's score token (0: the answer's alone)
    lr: float = 3e-3
    batch_size: int = 32
    pool: int = 64  # new cells of the prior (sampled or drawn from the table as search.lm_guided.source says) it ranks
    initial: int = 16  # random queries before the first ranking (at least context + candidates_per_prompt)


@dataclass
class SearchConfig:
    enabled: bool = False  # run a search after the LM stage of `archsweep run` / a sweep trial
    strategy: str = "lm_guided"  # lm_guided | regularized_evolution | random | bo | rl | lm_ranker
    # bo and rl: the representation they search in (vq | vae | adjacency) and the model that encodes it: "" for vq
    # means the prior's VQ-VAE (search.lm_guided.prior, or the trial's own); vae needs a finished run directory
    # trained with vqvae.model=vae
    encoding: str = "vq"
    encoder: str = ""
    dataset: str = ""  # "": the benchmark's first dataset (cifar10)
    budget: int = 200  # benchmark queries
    batch_size: int = 10  # queries proposed per round
    seed: int = 0
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    lm_guided: LMGuidedConfig = field(default_factory=LMGuidedConfig)
    bo: BOConfig = field(default_factory=BOConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    lm_ranker: LMRankerConfig = field(default_factory=LMRankerConfig)


@dataclass
class Config:
    space: str = "nasbench201"
    seed: int = 0
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


CHOICES = {
    "vqvae.model": ("vqvae", "vae"),
    "vqvae.latent": ("pooled", "per_node"),
    "vqvae.gin_direction": ("undirected", "forward"),
    "train.lr_schedule": ("cosine", "constant"),
    "search.strategy": ("lm_guided", "regularized_evolution", "random", "bo", "rl", "lm_ranker"),
    "search.encoding": ("vq", "vae", "adjacency"),
    "search.bo.pool": ("space", "table", "lm"),
    "search.lm_guided.source": ("sample", "table"),
    "lm.offload": ("none", "cpu"),
}
# key -> (test, what is allowed)
RANGES = {
    "seed": (lambda v: v >= 0, ">= 0"),
    "vqvae.seq_len": (lambda v: _positive_int(v) and v <= 256, '"auto" or 1..256'),
    "vqvae.edge_weight": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, '"auto" or > 0'),
    "vqvae.codebook_size": (lambda v: _positive_int(v) and 2 <= v <= 65536, '"auto" or 2..65536'),
    "vqvae.code_dim": (lambda v: v >= 1, ">= 1"),
    "vqvae.hidden_dim": (lambda v: v >= 1, ">= 1"),
    "vqvae.gin_layers": (_positive_int, '"auto" or an integer >= 1'),
    "vqvae.decoder_hidden": (lambda v: v >= 1, ">= 1"),
    "vqvae.beta": (lambda v: v >= 0, ">= 0"),
    "vqvae.ema_decay": (lambda v: 0 < v < 1, "between 0 and 1, exclusive"),
    "vqvae.kl_weight": (lambda v: v >= 0, ">= 0"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.batch_size": (lambda v: v == "auto" or _positive_int(v), '"auto" or an integer >= 1'),
    "train.lr": (lambda v: v > 0, "> 0"),
    "train.dataset_size": (lambda v: v >= 100, ">= 100"),
    "train.dataset_seed": (lambda v: v >= 0, ">= 0"),
    "train.weight_decay": (lambda v: v >= 0, ">= 0"),
    "train.train_fraction": (lambda v: 0 < v < 1, "between 0 and 1, exclusive"),
    "train.num_workers": (lambda v: v >= 1, ">= 1"),
    "train.cpus_per_worker": (lambda v: v >= 1, ">= 1"),
    "train.gpus_per_worker": (lambda v: 0 < v <= 8, "in (0, 8]; fractions share a GPU"),
    "train.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "train.checkpoint_interval_s": (lambda v: v >= 0, ">= 0 (0: every checkpoint_every epochs)"),
    "train.max_failures": (lambda v: v >= -1, ">= -1 (-1: unlimited)"),
    "train.patience": (lambda v: v >= 1, ">= 1"),
    "train.min_delta": (lambda v: v >= 0, ">= 0"),
    "train.min_epochs": (lambda v: v >= 0, ">= 0"),
    "lm.epochs": (lambda v: v >= 1, ">= 1"),
    "lm.patience": (lambda v: v >= 1, ">= 1"),
    "lm.min_delta": (lambda v: v >= 0, ">= 0"),
    "lm.min_epochs": (lambda v: v >= 0, ">= 0"),
    "lm.batch_size": (lambda v: v == "auto" or _positive_int(v), '"auto" or an integer >= 1'),
    "lm.grad_accum": (lambda v: v >= 1, ">= 1"),
    "lm.lr": (lambda v: v > 0, "> 0"),
    "lm.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "lm.weight_decay": (lambda v: v >= 0, ">= 0"),
    "lm.zero_stage": (lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
    "lm.num_workers": (lambda v: v >= 1, ">= 1"),
    "lm.cpus_per_worker": (lambda v: v >= 1, ">= 1"),
    "lm.gpus_per_worker": (lambda v: 0 < v <= 8, "in (0, 8]; fractions share a GPU"),
    "lm.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "lm.checkpoint_interval_s": (lambda v: v >= 0, ">= 0 (0: every checkpoint_every epochs)"),
    "lm.max_failures": (lambda v: v >= -1, ">= -1 (-1: unlimited)"),
    "lm.max_steps": (lambda v: v >= 0, ">= 0 (0: no limit)"),
    "lm.lora.rank": (lambda v: v >= 0, ">= 0 (0: off)"),
    "lm.lora.alpha": (lambda v: v > 0, "> 0"),
    "lm.lora.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "sample.samples": (lambda v: v >= 1, ">= 1"),
    "sample.batch_size": (lambda v: v == "auto" or _positive_int(v), '"auto" or an integer >= 1'),
    "sample.temperature": (lambda v: v > 0, "> 0"),
    "sample.top_k": (lambda v: v >= 0, ">= 0 (0: off)"),
    "sample.top_p": (lambda v: 0 < v <= 1, "in (0, 1] (1: off)"),
    "search.budget": (lambda v: v >= 1, ">= 1"),
    "search.batch_size": (lambda v: v >= 1, ">= 1"),
    "search.seed": (lambda v: v >= 0, ">= 0"),
    "search.evolution.population": (lambda v: v >= 2, ">= 2"),
    "search.evolution.tournament": (lambda v: v >= 1, ">= 1"),
    "search.lm_guided.candidates": (lambda v: v >= 1, ">= 1"),
    "search.lm_guided.temperature": (lambda v: v > 0, "> 0"),
    "search.lm_guided.sample_top_k": (lambda v: v >= 0, ">= 0 (0: off)"),
    "search.lm_guided.top_k": (lambda v: v >= 1, ">= 1"),
    "search.lm_guided.adapt_steps": (lambda v: v >= 0, ">= 0 (0: sample the prior as it is)"),
    "search.lm_guided.adapt_lr": (lambda v: v > 0, "> 0"),
    "search.lm_guided.explore": (lambda v: v >= 0, ">= 0 (0: off)"),
    "search.lm_guided.initial": (lambda v: v >= 0, ">= 0"),
    "search.lm_guided.num_gpus": (lambda v: 0 <= v <= 8, "in [0, 8]; fractions share a GPU"),
    "search.bo.initial": (lambda v: v >= 2, ">= 2 (the model needs two labelled cells)"),
    "search.bo.pool_size": (lambda v: v >= 1, ">= 1"),
    "search.bo.fit_steps": (lambda v: v >= 0, ">= 0"),
    "search.rl.lr": (lambda v: v > 0, "> 0"),
    "search.rl.sigma": (lambda v: v > 0, "> 0"),
    "search.rl.pool_size": (lambda v: v >= 1, ">= 1"),
    "search.rl.initial": (lambda v: v >= 0, ">= 0 (0: the policy starts at the representation's centre)"),
    "search.lm_ranker.context": (lambda v: v >= 1, ">= 1"),
    "search.lm_ranker.candidates_per_prompt": (lambda v: v >= 2, ">= 2"),
    "search.lm_ranker.examples": (lambda v: v >= 1, ">= 1"),
    "search.lm_ranker.steps": (lambda v: v >= 0, ">= 0"),
    "search.lm_ranker.update_steps": (lambda v: v >= 0, ">= 0"),
    "search.lm_ranker.score_weight": (lambda v: v >= 0, ">= 0"),
    "search.lm_ranker.lr": (lambda v: v > 0, "> 0"),
    "search.lm_ranker.batch_size": (lambda v: v >= 1, ">= 1"),
    "search.lm_ranker.pool": (lambda v: v >= 1, ">= 1"),
    "search.lm_ranker.initial": (lambda v: v >= 1, ">= 1"),
}


def _keys(cls, prefix: str = "") -> dict[str, str]:
    """Every leaf key with its type name, e.g. {"vqvae.codebook_size": "int", ...}."""
    out = {}
    for f in fields(cls):
        key = prefix + f.name
        default = f.default_factory() if callable(f.default_factory) else f.default
        out |= _keys(type(default), key + ".") if is_dataclass(default) else {key: str(f.type)}
    return out


ALL_KEYS = _keys(Config)


def suggest_key(key: str) -> str:
    """The "did you mean" hint for a mistyped config key."""
    return did_you_mean(key, ALL_KEYS)


def _translate(exc: Exception, source: str) -> ConfigError:
    """An omegaconf error as one line that names the key, the value and the fix."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{source}: unknown config key {key!r}{suggest_key(key)}")
    if isinstance(exc, ValidationError) and key in ALL_KEYS:
        return ConfigError(f"{source}: {key!r} must be of type {ALL_KEYS[key]}; got {getattr(exc, 'value', None)!r}")
    return ConfigError(f"{source}: {exc}")


def read_yaml(path: Path, kind: str):
    """A YAML file's contents as plain Python (interpolations refused), or a ConfigError naming the file."""
    from omegaconf import OmegaConf

    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # YAML syntax errors carry the line and column
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    check_plain(raw, str(path))
    return raw


def check_plain(node, source: str, key: str = "") -> None:
    """Configs hold plain values: an OmegaConf interpolation (`${oc.env:...}`, resolvers) could read secrets from
    the environment into saved configs, or call code, so none is accepted."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_plain(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_plain(v, source, f"{key}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(f"{source}: {key!r} is {node!r}, an interpolation; archsweep configs take plain values "
                          "only (nothing is read from the environment or computed); write the value itself")


@functools.cache
def _defaults():
    """The defaults as a structured OmegaConf config, built once: building it is most of a config's cost (tens of
    ms), paid for every run of a search file. Merges copy it, so it is never changed."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(Config)


def _merge(base, other, source: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise _translate(exc, source) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                data: dict | None = None, source: str = "config") -> Config:
    """Defaults, then the YAML file at `path` (or `data`, a mapping already read from `source`), then `key=value`
    overrides; validated, with its paths made absolute against the working directory (`absolute_path`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = _defaults()
    if data is not None:
        check_plain(data, source)
        cfg = _merge(cfg, OmegaConf.create(data), source)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # YAML syntax errors carry the line and column
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        check_plain(OmegaConf.to_container(loaded, resolve=False), str(path))
        cfg = _merge(cfg, loaded, str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. vqvae.codebook_size=64)")
        key, value = (part.strip() for part in item.split("=", 1))
        check_plain(value, f"override {item!r}", key)
        if key not in ALL_KEYS:
            raise ConfigError(f"override {item!r}: unknown config key {key!r}{suggest_key(key)}")
        try:
            cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
        except OmegaConfBaseException as exc:
            raise _translate(exc, f"override {item!r}") from None
    config = _absolute_paths(_resolve_auto(OmegaConf.to_object(cfg)))
    validate(config)
    return config


def _resolve_auto(config: Config) -> Config:
    """Per-space defaults ("auto") made concrete, so every stage reads plain values."""
    if config.vqvae.latent == "auto" and config.space in SPACES:
        config.vqvae.latent = get_space(config.space).default_latent
    if config.vqvae.seq_len == "auto" and config.space in SPACES:
        space = get_space(config.space)
        config.vqvae.seq_len = space.max_vertices if config.vqvae.latent == "per_node" else space.default_seq_len
    if config.vqvae.edge_weight == "auto" and config.space in SPACES:
        config.vqvae.edge_weight = get_space(config.space).default_edge_weight
    if config.vqvae.codebook_size == "auto" and config.space in SPACES:
        config.vqvae.codebook_size = get_space(config.space).default_codebook_size
    if config.vqvae.gin_layers == "auto" and config.space in SPACES:
        config.vqvae.gin_layers = get_space(config.space).default_gin_layers
    if config.vqvae.gin_direction == "auto" and config.space in SPACES:
        config.vqvae.gin_direction = get_space(config.space).default_gin_direction
    return config


def absolute_path(key: str, value: Any) -> Any:
    """The value of a path-valued key resolved against this process's working directory (where the user typed
    it): `search.lm_guided.prior`, `search.encoder`, and the local checkpoint of `lm.name=pretrained:<path>` (a
    hub name, which names no local directory, is kept as it is). Other keys pass through."""
    if key in ("search.lm_guided.prior", "search.encoder") and isinstance(value, str) and value:
        return str(absolute(value))
    if key == "lm.name" and isinstance(value, str) and value.startswith("pretrained:"):
        target = value.removeprefix("pretrained:").strip()
        if target.startswith(("/", "./", "../", "~")) or (target and Path(target).expanduser().exists()):
            return "pretrained:" + str(absolute(target))
    return value


def absolute_patch(patch: dict) -> dict:
    """A `{dotted key: value}` patch (sweep axes values, extra trials, strategy patches) with its paths resolved."""
    return {key: absolute_path(key, value) for key, value in patch.items()}


def _absolute_paths(config: Config) -> Config:
    config.search.lm_guided.prior = absolute_path("search.lm_guided.prior", config.search.lm_guided.prior)
    config.search.encoder = absolute_path("search.encoder", config.search.encoder)
    config.lm.name = canonical_name(absolute_path("lm.name", config.lm.name))
    return config


def get_key(config: dict, key: str) -> Any:
    """The value at a dotted key of a nested config dict ("lm.name"); None where the dict has no such key."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _get(config: Config, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate(config: Config) -> None:
    if config.space not in SPACES:
        raise ConfigError(f"'space' is {config.space!r}; allowed: {', '.join(SPACES)}")
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"{key!r} is {_get(config, key)!r}; allowed: {', '.join(allowed)}")
    for key, (ok, allowed) in RANGES.items():
        if not ok(_get(config, key)):
            raise ConfigError(f"{key!r} is {_get(config, key)!r}; allowed: {allowed}")
    if config.train.batch_size != "auto" and config.train.batch_size < config.train.num_workers:
        raise ConfigError(f"'train.batch_size' ({config.train.batch_size}) is the global batch and must be at least "
                          f"'train.num_workers' ({config.train.num_workers})")
    try:
        check_name(config.lm.name)
    except ArchsweepError as exc:
        raise ConfigError(f"'lm.name': {exc}") from None
    ranker = config.search.lm_ranker.name
    if ranker.startswith("pretrained:"):
        raise ConfigError(f"'search.lm_ranker.name' is {ranker!r}: the ranker reads extended code tokens, which a "
                          "pretrained tokenizer has not; name a decoder-only preset (gpt2-tiny, llama-tiny, ...)")
    if ranker.startswith("t5"):  # tests/test_ranker.py: t5-tiny stayed at chance where gpt2-tiny reached 94 %
        raise ConfigError(f"'search.lm_ranker.name' is {ranker!r}: the t5 presets did not learn the ranking task "
                          "(27-30 % top-1 of 4 on a rule gpt2-tiny learns to 94 %); name a decoder-only preset "
                          "(gpt2-tiny, llama-tiny, ...)")
    try:
        check_name(config.search.lm_ranker.name)
    except ArchsweepError as exc:
        raise ConfigError(f"'search.lm_ranker.name': {exc}") from None
    if config.lm.lora.rank and not config.lm.name.startswith("pretrained:"):
        raise ConfigError(f"'lm.lora.rank' is {config.lm.lora.rank} but 'lm.name' {config.lm.name!r} is a preset built "
                          "from scratch: LoRA adapts the weights of a pretrained model (lm.name=pretrained:<name or "
                          "path>); train a preset fully with lm.lora.rank=0")
    if config.lm.offload != "none" and config.lm.zero_stage == 0:
        raise ConfigError(f"'lm.offload' is {config.lm.offload!r}, which ZeRO-Offload does for ZeRO stages 1-3; "
                          "set lm.zero_stage=3 (parameters offloaded too) or 1/2 (optimizer state only)")
    if config.lm.batch_size != "auto" and config.lm.batch_size % (config.lm.grad_accum * config.lm.num_workers):
        raise ConfigError(f"'lm.batch_size' ({config.lm.batch_size}) must be a multiple of 'lm.grad_accum' x "
                          f"'lm.num_workers' ({config.lm.grad_accum} x {config.lm.num_workers})")
    s = config.search
    if s.enabled and config.vqvae.model == "vae":
        if s.strategy in ("lm_guided", "lm_ranker") or (s.strategy == "bo" and s.bo.pool == "lm"):
            what = f"'search.strategy' {s.strategy}" if s.strategy != "bo" else "'search.bo.pool' lm"
            raise ConfigError(f"{what} samples the LM prior, which a vqvae.model=vae run has not; use "
                              "search.strategy=random, regularized_evolution, rl or bo with search.bo.pool=space or "
                              "table there, or search.enabled=false")
        if s.strategy in ("bo", "rl") and s.encoding == "vq" and not s.encoder:
            raise ConfigError("'search.encoding' is vq but this run trains a VAE (vqvae.model=vae): use "
                              "search.encoding=vae (its own latents) or adjacency, or name a VQ-VAE run in "
                              "search.encoder")
    if s.lm_guided.explore >= s.batch_size and s.strategy == "lm_guided":
        raise ConfigError(f"'search.lm_guided.explore' ({s.lm_guided.explore}) must be below 'search.batch_size' "
                          f"({s.batch_size}): it is how many of each round's queries bo picks beside the generator's")
    if config.search.evolution.tournament > config.search.evolution.population:
        raise ConfigError(f"'search.evolution.tournament' ({config.search.evolution.tournament}) must be at most "
                          f"'search.evolution.population' ({config.search.evolution.population})")
    if config.search.enabled:
        try:
            require_table(config.space)
        except ArchsweepError as exc:
            raise ConfigError(f"'search.enabled' is true: {exc}") from None
    if config.search.dataset:
        if config.search.dataset not in DATASETS.get(config.space, ()):
            raise ConfigError(f"'search.dataset' is {config.search.dataset!r}; allowed for {config.space}: "
                              f"{', '.join(DATASETS.get(config.space, ())) or 'none (no accuracy table)'}")
    vertices = get_space(config.space).max_vertices
    if config.vqvae.latent == "per_node" and config.vqvae.seq_len != vertices:
        raise ConfigError(f"'vqvae.latent' is per_node, so 'vqvae.seq_len' must be {vertices} (the vertices of a "
                          f"{config.space} cell); got {config.vqvae.seq_len}. Set vqvae.seq_len={vertices}.")


def to_dict(config: Config) -> dict:
    return asdict(config)


def from_dict(data: dict) -> Config:
    """Rebuild (and re-validate) a config that travelled as a plain dict, e.g. to a Ray worker."""
    from omegaconf import OmegaConf

    config = _resolve_auto(OmegaConf.to_object(_merge(_defaults(), OmegaConf.create(data), "config")))
    validate(config)
    return config
