"""The sweep YAML is checked before anything starts: each bad case gets a message naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from archsweep.config import ConfigError
from archsweep.capacity import from_cluster_config, from_nodes
from archsweep.sweep.plan import SweepError, plan_concurrency, trial_resources
from archsweep.sweep.run import param_space, scheduler, upstream_key
from archsweep.sweep.spec import load_sweep, trial_configs

ROOT = Path(__file__).resolve().parent.parent
GOOD = """
name: t
space: nasbench201
lm: {epochs: 2}
sweep:
  vqvae.codebook_size: {grid: [16, 64]}
  vqvae.seq_len: {grid: [4, 8]}
  lm.name: {grid: [gpt2-tiny, llama-tiny]}
  lm.lr: {loguniform: [1.0e-4, 1.0e-3]}
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_good_sweep_loads_with_its_grid(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD))
    assert sweep.name == "t" and sweep.base.lm.epochs == 2 and sweep.base.space == "nasbench201"
    grid = trial_configs(sweep)
    assert len(grid) == 8
    assert {(c["vqvae"]["codebook_size"], c["vqvae"]["seq_len"], c["lm"]["name"]) for c in grid} == {
        (k, l, n) for k in (16, 64) for l in (4, 8) for n in ("gpt2-tiny", "llama-tiny")}


SWEEPS = sorted(set((ROOT / "sweeps").glob("*.yaml")) - set((ROOT / "sweeps").glob("search-*"))
                - set((ROOT / "sweeps").glob("reproduce-*")))  # report files: tests/test_reproduce.py


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_are_valid(path):
    sweep = load_sweep(path)
    assert trial_configs(sweep)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("search-*.yaml")), ids=lambda p: p.name)
def test_shipped_search_files_are_valid(path, tmp_path, monkeypatch):
    """With the prior and the VAE encoder they name replaced by directories of the same layout (the real ones are
    trained by bench/lm.py)."""
    import json

    import torch
    from omegaconf import OmegaConf

    from archsweep.config import load_config, to_dict
    from archsweep.models.vqvae import build_model
    from archsweep.search.spec import load_search_file
    from archsweep.spaces import get_space

    space = OmegaConf.load(path)["space"]
    (tmp_path / "lm" / "lm").mkdir(parents=True)
    config = to_dict(load_config(overrides=[f"space={space}"]))
    (tmp_path / "lm" / "metrics.json").write_text(json.dumps({"config": config}))
    vae = tmp_path / "runs" / "bench-lm" / space / "vae" / "vqvae"  # bo_vae's search.encoder, relative to the cwd
    for stage, model in ((tmp_path / "vqvae", "vqvae"), (vae, "vae")):
        stage.mkdir(parents=True)
        cfg = load_config(overrides=[f"space={space}", f"vqvae.model={model}"])  # untrained: the layout is what counts
        net = build_model(cfg.vqvae, len(get_space(space).op_vocab), get_space(space).max_vertices)
        torch.save({"config": to_dict(cfg), "model": net.state_dict()}, stage / "model.pt")
    monkeypatch.chdir(tmp_path)
    spec = load_search_file(path, [f"search.lm_guided.prior={tmp_path}"])
    assert spec.runs() and {c.space for _, c in spec.runs()} == {space}


BAD = {
    "unknown base key": ("lm: {epoch: 2}", "unknown config key 'lm.epoch'; did you mean 'lm.epochs'"),
    "unknown sweep key": ("sweep: {vqvae.codebok_size: {grid: [16]}}", "unknown sweep key 'vqvae.codebok_size'; "
                          "did you mean 'vqvae.codebook_size'"),
    "unknown spec kind": ("sweep: {lm.lr: {logspace: [1, 2]}}", "unknown search spec 'logspace'; allowed: grid"),
    "grid value out of range": ("sweep: {vqvae.codebook_size: {grid: [16, 0]}}",
                                "value 0: 'vqvae.codebook_size' is 0; allowed: \"auto\" or 2..65536"),
    "grid value of the wrong type": ("sweep: {vqvae.code_dim: {grid: [4, eight]}}",
                                     "'vqvae.code_dim' must be of type int; got 'eight'"),
    "grid value neither auto nor a length": ("sweep: {vqvae.seq_len: {grid: [4, eight]}}",
                                "'vqvae.seq_len' is 'eight'; allowed: \"auto\" or 1..256"),
    "unknown LM in a grid": ("sweep: {lm.name: {grid: [gpt2-tiny, gpt5-huge]}}", "unknown language model 'gpt5-huge'"),
    "negative temperature": ("sweep: {sample.temperature: {uniform: [-1.0, 1.0]}}",
                             "bound -1.0: 'sample.temperature' is -1.0; allowed: > 0"),
    "low above high": ("sweep: {lm.lr: {uniform: [0.1, 0.01]}}", "uniform needs low < high"),
    "uniform on an int key": ("sweep: {lm.epochs: {uniform: [1, 4]}}", "is an int key: use randint"),
    "unknown tune key": ("tune: {serch: grid}", "unknown key 'tune.serch'; did you mean 'tune.search'"),
    "unknown scheduler": ("tune: {scheduler: hyperband}",
                          "'tune.scheduler' is 'hyperband'; allowed: fifo, asha, async_hyperband"),
    "unknown search": ("tune: {search: bohb}", "'tune.search' is 'bohb'; allowed: grid, random, optuna"),
    "a grid under optuna": ("tune: {search: optuna}\nsweep: {lm.name: {grid: [gpt2-tiny, llama-tiny]}}",
                            "sweep axis 'lm.name' is a grid, which 'tune.search: optuna' cannot search (it samples "
                            "every axis); write it {choice: ['gpt2-tiny', 'llama-tiny']}"),
    "optuna with nothing to search": ("tune: {search: optuna}", "'tune.search: optuna' needs at least one sweep axis"),
    "a negative time budget": ("tune: {time_budget_s: -5}", "'tune.time_budget_s' is -5; allowed: >= 0"),
    "wrong type in tune": ("tune: {num_samples: many}", "'tune.num_samples' must be of type int; got 'many'"),
    "unknown W&B mode": ("tracking: {mode: cloud}", "'tracking.mode' is 'cloud'; allowed: offline, online, disabled"),
    "asha with the VAE baseline": ("tune: {scheduler: asha}\nsweep: {vqvae.model: {grid: [vqvae, vae]}}",
                                   "asha stops trials on the LM's held-out loss"),
    "unknown space": ("space: nasbench301", "'space' is 'nasbench301'; allowed: nasbench101, nasbench201"),
    "asha on a metric the LM never reports": ("tune: {scheduler: asha, scheduler_metric: lm/held_out_loss}",
                                              "'tune.scheduler_metric' is 'lm/held_out_loss'; allowed with asha"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_sweeps_are_rejected_naming_the_key(tmp_path, case):
    text, message = BAD[case]
    with pytest.raises(ConfigError) as info:
        load_sweep(write(tmp_path, "name: t\n" + text + "\n"))
    assert message in str(info.value)


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "sweep: {lm.lr: [1, 2\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_sweep(path)


def test_overrides_reach_base_tune_and_tracking(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), ["lm.epochs=5", "tune.num_samples=3", "tracking.mode=disabled",
                                               "name=other"])
    assert (sweep.base.lm.epochs, sweep.tune.num_samples, sweep.tracking.mode, sweep.name) == (5, 3, "disabled",
                                                                                              "other")
    with pytest.raises(ConfigError, match="lm.epochs"):
        load_sweep(write(tmp_path, GOOD), ["lm.epochs=0"])


def test_param_space_places_tune_specs_at_the_swept_keys(tmp_path):
    from ray import tune

    space = param_space(load_sweep(write(tmp_path, GOOD)))
    assert space["vqvae"]["codebook_size"] == {"grid_search": [16, 64]}
    assert isinstance(space["lm"]["lr"], tune.search.sample.Float)
    assert space["lm"]["epochs"] == 2 and space["space"] == "nasbench201"
    random = param_space(load_sweep(write(tmp_path, GOOD), ["tune.search=random"]))
    assert isinstance(random["vqvae"]["codebook_size"], tune.search.sample.Categorical)


def test_upstream_key_ignores_the_lm_and_execution_settings(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD))
    a, b, c, _ = trial_configs(sweep)[:4]  # same K=16; (L, LM) = (4, gpt2) (4, llama) (8, gpt2) (8, llama)
    from archsweep.config import from_dict

    assert upstream_key(from_dict(a)) == upstream_key(from_dict(b))
    assert upstream_key(from_dict(a)) != upstream_key(from_dict(c))
    e = dict(a, train=dict(a["train"], checkpoint_every=3, cpus_per_worker=2))
    assert upstream_key(from_dict(e)) == upstream_key(from_dict(a))


def test_concurrency_follows_the_cluster_and_impossible_trials_fail_early(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), ["lm.num_workers=2"])
    assert trial_resources(sweep.base)["CPU"] == 2  # the LM stage's 2 workers; the trial itself holds no CPU
    assert plan_concurrency(sweep, from_nodes([{"CPU": 8.0}])) == 4
    assert plan_concurrency(load_sweep(write(tmp_path, GOOD), ["lm.num_workers=2", "tune.max_concurrent_trials=3"]),
                            from_nodes([{"CPU": 16.0}])) == 3
    with pytest.raises(SweepError, match=r"trial 1 of 8 \(vqvae.codebook_size=16, .*needs 2 CPUs and 0 GPUs at once.*"
                                         r"cluster has 1 CPUs"):
        plan_concurrency(sweep, from_nodes([{"CPU": 1.0}]))
    gpu = load_sweep(write(tmp_path, GOOD), ["lm.use_gpu=true", "lm.gpus_per_worker=0.25"])
    assert plan_concurrency(gpu, from_nodes([{"CPU": 8.0, "GPU": 1.0}])) == 4
    with pytest.raises(SweepError, match="0.25 GPUs"):
        plan_concurrency(gpu, from_nodes([{"CPU": 8.0}]))


AUTOSCALING = {"head_node_type": "head", "max_workers": 3, "available_node_types": {
    "head": {"resources": {"CPU": 0}, "max_workers": 0},
    "cpu_worker": {"resources": {"CPU": 1}, "min_workers": 0, "max_workers": 2},
    "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0, "max_workers": 1}}}


def test_an_autoscaling_cluster_is_planned_from_what_it_can_become_not_from_its_nodes_now(tmp_path):
    """A head with 0 CPUs and no worker up: a fixed cluster of that refuses every trial; the same cluster as its
    autoscaler sees it (2 one-CPU workers and a GPU worker, none up yet) runs them."""
    sweep = load_sweep(write(tmp_path, GOOD))
    with pytest.raises(SweepError, match="needs 1 CPUs"):
        plan_concurrency(sweep, from_nodes([{"CPU": 0.0}]))
    capacity = from_cluster_config(AUTOSCALING, "the cluster's autoscaler")
    assert capacity.totals() == {"CPU": 6.0, "GPU": 1.0} and len(capacity.nodes()) == 4
    assert plan_concurrency(sweep, capacity) == 6
    gpu = load_sweep(write(tmp_path, GOOD), ["lm.use_gpu=true", "lm.gpus_per_worker=1", "lm.cpus_per_worker=2"])
    assert plan_concurrency(gpu, capacity) == 1  # the one GPU node
    with pytest.raises(SweepError) as refused:  # 2 GPUs in one trial: no node type can ever hold it
        plan_concurrency(load_sweep(write(tmp_path, GOOD), ["lm.use_gpu=true", "lm.num_workers=2"]), capacity)
    message = str(refused.value)
    assert "needs 2 CPUs and 2 GPUs at once" in message and "1 GPUs at most" in message
    assert "up to 2 x cpu_worker (1 CPU each)" in message and "up to 1 x gpu_worker (4 CPU, 1 GPU each)" in message


def test_extra_trials_add_the_baseline_beside_the_grid(tmp_path):
    grid_only = GOOD.replace("  lm.lr: {loguniform: [1.0e-4, 1.0e-3]}\n", "")
    sweep = load_sweep(write(tmp_path, grid_only + "extra_trials:\n  - {vqvae.model: vae, vqvae.seq_len: 8}\n"))
    configs = trial_configs(sweep)
    assert len(configs) == 9 and configs[-1]["vqvae"]["model"] == "vae"
    assert [c["vqvae"]["model"] for c in configs[:8]] == ["vqvae"] * 8
    assert param_space(sweep)["trial"] == {"grid_search": configs}
    with pytest.raises(ConfigError, match="needs every sweep axis to be a grid"):
        load_sweep(write(tmp_path, GOOD + "extra_trials:\n  - {vqvae.model: vae}\n"))
    with pytest.raises(ConfigError, match=r"extra_trials\[0\]: vqvae.model='vea'.*allowed: vqvae, vae"):
        load_sweep(write(tmp_path, grid_only + "extra_trials:\n  - {vqvae.model: vea}\n"))


def test_schedulers(tmp_path):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    assert isinstance(scheduler(load_sweep(write(tmp_path, GOOD))), FIFOScheduler)
    asha = scheduler(load_sweep(write(tmp_path, GOOD), ["tune.scheduler=asha", "tune.grace_period=1"]))
    assert isinstance(asha, ASHAScheduler)
    assert (asha._metric, asha._mode, asha._time_attr) == ("lm/heldout_loss", "min", "training_iteration")
    assert asha._max_t == 3 and len(asha._brackets) == 1  # 2 LM epochs and the final report
    # a swept lm.epochs: max_t reaches the longest trial, not the base value
    swept = GOOD.replace("lm.lr: {loguniform: [1.0e-4, 1.0e-3]}", "lm.epochs: {grid: [2, 6]}")
    assert scheduler(load_sweep(write(tmp_path, swept), ["tune.scheduler=asha"]))._max_t == 7
    sampled = GOOD.replace("lm.lr: {loguniform: [1.0e-4, 1.0e-3]}", "lm.epochs: {randint: [2, 10]}")
    assert scheduler(load_sweep(write(tmp_path, sampled), ["tune.scheduler=asha"]))._max_t == 10
    hyperband = scheduler(load_sweep(write(tmp_path, GOOD), ["tune.scheduler=async_hyperband"]))
    assert len(hyperband._brackets) == 3


OPTUNA = """
name: t
space: nasbench201
sweep:
  lm.name: {choice: [gpt2-tiny, llama-tiny]}
  lm.lr: {loguniform: [1.0e-4, 1.0e-3]}
  vqvae.codebook_size: {choice: [16, 64]}
tune: {search: optuna, num_samples: 6, seed: 3}
"""


def test_optuna_search_is_seeded_tpe_behind_a_concurrency_limit(tmp_path):
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from archsweep.sweep.run import search_algorithm

    sweep = load_sweep(write(tmp_path, OPTUNA))
    assert sweep.trial_count() == 6

    def first_suggestions(seed: int) -> list[dict]:
        limited = search_algorithm(load_sweep(write(tmp_path, OPTUNA), [f"tune.seed={seed}"]), 2)
        assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
        assert isinstance(limited.searcher, OptunaSearch)
        assert (limited.searcher.metric, limited.searcher.mode) == ("valid_unique", "max")
        limited.set_search_properties(None, None, param_space(sweep))
        out = [limited.suggest(f"t{i}") for i in range(3)]
        assert out[2] is None  # the third waits until one of two running trials is done
        return [o["lm"] | {"K": o["vqvae"]["codebook_size"]} for o in out[:2]]

    first = first_suggestions(3)
    assert first == first_suggestions(3) and first != first_suggestions(4)
    for trial in first:
        assert trial["name"] in ("gpt2-tiny", "llama-tiny") and 1e-4 <= trial["lr"] <= 1e-3 and trial["K"] in (16, 64)

def test_paths_in_a_sweep_file_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    """`storage`, and a prior given as a grid value, mean what the user typed where the command ran."""
    path = write(tmp_path, "name: t\nstorage: runs\nsweep: {search.lm_guided.prior: {grid: [priors/a, /abs/b]}}\n")
    monkeypatch.chdir(tmp_path / "..")
    sweep = load_sweep(Path(tmp_path.name) / path.name)
    assert sweep.storage == str(tmp_path.parent / "runs")
    assert sweep.axes["search.lm_guided.prior"] == {"grid": [str(tmp_path.parent / "priors" / "a"), "/abs/b"]}


def test_a_trial_the_scheduler_stopped_is_recorded_as_stopped_with_its_last_report(tmp_path):
    """ASHA or the time budget end a trial without its final report: the store says STOPPED, with the LM's last
    epoch, instead of leaving it RUNNING for ever; a trial that recorded itself is left as it is."""
    from types import SimpleNamespace

    from archsweep.sweep.run import _forget_unsaved, _store_callback
    from archsweep.tracking.store import ResultStore, Row

    callback = _store_callback(tmp_path, 1)
    trial = SimpleNamespace(trial_id="a_00000", config={"trial": {"lm": {"name": "gpt2-tiny"}}},
                            path=str(tmp_path / "trials" / "a"), last_result={"lm/heldout_loss": 0.5, "lm/epoch": 1,
                                                                              "training_iteration": 2})
    callback.on_trial_start(0, [], trial)
    callback.on_trial_complete(0, [], trial)
    row = ResultStore(tmp_path).get("a_00000")
    assert row.status == "STOPPED" and row.metrics == {"lm/heldout_loss": 0.5, "lm/epoch": 1}
    ResultStore(tmp_path).put(Row("b_00001", "TERMINATED", {}, {"valid_unique": 0.3}))
    callback.on_trial_complete(0, [], SimpleNamespace(**{**vars(trial), "trial_id": "b_00001"}))
    assert ResultStore(tmp_path).get("b_00001").status == "TERMINATED"
    ResultStore(tmp_path).put(Row("c_00002", "RUNNING", {}))  # started by a driver that died before Tune saved it
    _forget_unsaved(tmp_path)
    assert [r.trial_id for r in ResultStore(tmp_path).rows()] == ["a_00000", "b_00001"]


def test_wandb_project_and_entity_come_from_the_environment_unless_the_file_sets_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_ENTITY", "team")
    quick = load_sweep(ROOT / "sweeps" / "quick.yaml").tracking
    assert (quick.project, quick.entity) == ("from-env", "team")
    own = load_sweep(write(tmp_path, GOOD), ["tracking.project=mine"]).tracking
    assert (own.project, own.entity) == ("mine", "team")
    monkeypatch.delenv("WANDB_PROJECT")
    monkeypatch.delenv("WANDB_ENTITY")
    default = load_sweep(ROOT / "sweeps" / "quick.yaml").tracking
    assert (default.project, default.entity) == ("archsweep", None)
