"""What sweep files and search files share: reading one (its base configuration, its own sections, overrides that
go to either), typed settings sections, dotted-key patches of a configuration, the W&B tracking settings, and the
copy a run directory keeps of the file it ran."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsweep.benchmarks import check_data
from archsweep.config import Config, ConfigError, check_plain, from_dict, read_yaml
from archsweep.errors import did_you_mean
from archsweep.tracking.wandb import check_login

WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class TrackingSettings:
    wandb: bool = True
    mode: str = "offline"  # offline: runs written under each trial dir; `archsweep sync` uploads them later
    project: str | None = None  # default: $WANDB_PROJECT, else "archsweep"
    entity: str | None = None  # default: $WANDB_ENTITY, else your W&B default entity
    group: str | None = None  # default: the sweep name
    artifacts: bool = True  # VQ-VAE stages and LMs logged as W&B artifacts (their files uploaded by `sync`)


def check_tracking(tracking: TrackingSettings, source: str) -> None:
    """Checks the settings, and fills what the file leaves unset from the environment, as W&B itself would:
    `WANDB_PROJECT` and `WANDB_ENTITY` (a value in the file wins)."""
    if tracking.mode not in WANDB_MODES:
        raise ConfigError(f"{source}: 'tracking.mode' is {tracking.mode!r}; allowed: {', '.join(WANDB_MODES)}")
    tracking.project = tracking.project or os.environ.get("WANDB_PROJECT") or "archsweep"
    tracking.entity = tracking.entity or os.environ.get("WANDB_ENTITY") or None


def read_settings(cls, data: Any, section: str, source: str):
    """A typed settings section (`tune`, `tracking`, ...) of a file; unknown keys and wrong types named."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{section}' must be a mapping of settings")
    known = set(cls.__dataclass_fields__)
    for key, value in data.items():
        if key not in known:
            hint = did_you_mean(key, known, f"{section}.")
            raise ConfigError(f"{source}: unknown key '{section}.{key}'{hint} (allowed: {', '.join(sorted(known))})")
        expected = cls.__dataclass_fields__[key].type
        kinds = {"int": int, "str": str, "bool": bool, "str | None": (str, type(None))}[expected]
        if not isinstance(value, kinds) or (expected == "int" and isinstance(value, bool)):
            raise ConfigError(f"{source}: '{section}.{key}' must be of type {expected}; got {value!r}")
    return cls(**data)


def set_key(config: dict, key: str, value: Any) -> dict:
    """A copy of the nested config dict with the dotted `key` set (e.g. "search.lm_guided.prior")."""
    *parents, leaf = key.split(".")
    out = dict(config)
    node = out
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    node[leaf] = value
    return out


def with_key(base: dict, key: str, value: Any, where: str) -> Config:
    data = set_key(base, key, value)
    try:
        return from_dict(data)
    except ConfigError as exc:
        message = str(exc).removeprefix("config: ")
        raise ConfigError(f"{where}: {message}") from None


def patched(config: dict, patch: dict) -> dict:
    for key, value in patch.items():
        config = set_key(config, key, value)
    return config


def read_spec_file(path: Path, overrides, sections: set[str], settings: tuple[str, ...], kind: str
                   ) -> tuple[dict, dict, list[str], str]:
    """What a sweep or search file holds: (base configuration mapping, its own sections, the overrides that go to
    the base configuration, its name). `section.key=value` overrides (nested keys too) go into their section."""
    source = str(path)
    raw = read_yaml(path, kind)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {kind} file is a mapping (config keys plus "
                          f"{', '.join(repr(s) for s in settings)})")
    found = {k: raw.pop(k) for k in list(raw) if k in sections}
    base_overrides = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. lm.epochs=4)")
        check_plain(value, f"override {item!r}", key.strip())
        head, _, leaf = key.strip().partition(".")
        if head in settings and leaf:
            *parents, last = leaf.split(".")
            node = found[head] = dict(found.get(head) or {})
            for part in parents:  # e.g. searches.strategies.random={}
                node[part] = dict(node.get(part) or {})
                node = node[part]
            node[last] = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
        elif key.strip() in ("name", "storage"):
            found[key.strip()] = value
        else:
            base_overrides.append(item)
    name = found.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{source}: 'name' must be letters, digits, '-' or '_'; got {name!r}")
    return raw, found, base_overrides, name


def same_spec(saved: Path, spec: dict) -> bool:
    """Whether the sweep/search file saved in a directory is the one `spec` describes: the same configuration,
    axes and settings (where it is stored is the directory itself, so `storage` is not compared)."""
    old = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    return isinstance(old, dict) and {k: v for k, v in old.items() if k != "storage"} == \
        {k: v for k, v in spec.items() if k != "storage"}


def to_yaml(data: dict) -> str:
    """The YAML a run directory keeps of its sweep or search file (what `same_spec` compares against)."""
    return OmegaConf.to_yaml(OmegaConf.create(data))


def preflight(spec, data_dir: str | None = None) -> None:
    """What a sweep or search file (`spec`) checks before any Ray process starts or anything is written: the W&B
    login its tracking needs, and every benchmark table its runs read (a DataError in seconds, not after each
    trial has trained)."""
    check_login(spec.tracking)
    check_data(spec.spaces(), data_dir)
