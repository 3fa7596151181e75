"""The VQ-VAE stage on a real local Ray: 2 Ray Train workers (DDP over gloo) or one worker in this process,
checkpoints, resume across the two, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from archsweep.config import load_config
from archsweep.errors import ArchsweepError

pytestmark = pytest.mark.ray

TINY = ["space=nasbench201", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2",
        "vqvae.seq_len=4", "vqvae.codebook_size=16", "train.batch_size=256", "train.num_workers=2"]
ONE = [*TINY, "train.num_workers=1"]  # trained in the test's own process (train/launch.py): logic, not scale


def test_two_workers_train_checkpoint_and_resume(local_ray, tmp_path):
    from archsweep.train import history
    from archsweep.train.vqvae import fit

    # a checkpoint every epoch, however short (the default waits 30 s between them)
    every_epoch = "train.checkpoint_interval_s=0"
    first = fit(load_config(overrides=[*TINY, "train.epochs=2", every_epoch]), tmp_path, local_ray)
    assert first.error is None
    assert first.metrics_dataframe["epoch"].tolist() == [0, 1]
    trained = history(first)
    assert trained["epoch"].tolist() == [0, 1] and (trained["batch_size"] == 256).all()
    assert trained["loss"].iloc[-1] < trained["loss"].iloc[0]

    # the same output directory and a longer schedule: continues at epoch 2, does not start over
    resumed = fit(load_config(overrides=[*TINY, "train.epochs=3", every_epoch]), tmp_path, local_ray)
    assert resumed.error is None
    assert resumed.metrics["epoch"] == 2 and resumed.metrics["start_epoch"] == 2
    after = history(resumed)
    assert after["epoch"].tolist() == [0, 1, 2] and after.iloc[:2].equals(trained)

    # another model in the same directory: refused by name, the checkpoint left as it was
    with pytest.raises(ArchsweepError, match=r"vqvae.codebook_size: 16 -> 32.*another output directory"):
        fit(load_config(overrides=[*TINY, "train.epochs=4", "vqvae.codebook_size=32", every_epoch]), tmp_path,
            local_ray)
    assert history(fit(load_config(overrides=[*TINY, "train.epochs=3", every_epoch]), tmp_path, local_ray)).equals(after)


def test_one_worker_trains_in_this_process_and_resumes_there_or_on_ray_train(local_ray, tmp_path):
    """One worker needs no worker group: the loop runs in this process, its checkpoints where Ray Train's go, and a
    rerun resumes from them, here or on two Ray Train workers."""
    import ray

    from archsweep.train import history
    from archsweep.train.vqvae import fit

    every_epoch = "train.checkpoint_interval_s=0"
    first = fit(load_config(overrides=[*ONE, "train.epochs=2", every_epoch]), tmp_path, local_ray)
    trained = history(first)
    assert first.error is None and trained["epoch"].tolist() == [0, 1] and trained["in_process"].all()
    assert trained["node"].tolist() == [ray.get_runtime_context().get_node_id()] * 2
    assert sorted(p.name for p in (tmp_path / "ray" / "vqvae").iterdir()) == ["checkpoint_000000", "checkpoint_000001"]

    resumed = fit(load_config(overrides=[*ONE, "train.epochs=3", every_epoch]), tmp_path, local_ray)
    assert resumed.metrics["epoch"] == 2 and resumed.metrics["start_epoch"] == 2
    assert history(resumed).iloc[:2].equals(trained)
    assert sorted(p.name for p in (tmp_path / "ray" / "vqvae").iterdir()) == ["checkpoint_000001", "checkpoint_000002"]

    wider = fit(load_config(overrides=[*TINY, "train.epochs=4", every_epoch]), tmp_path, local_ray)  # 2 workers
    assert wider.error is None and wider.metrics["start_epoch"] == 3 and wider.metrics["batch_size"] == 256
    assert not wider.metrics["in_process"]
    assert history(wider)["epoch"].tolist() == [0, 1, 2, 3]
    again = fit(load_config(overrides=[*ONE, "train.epochs=4", every_epoch]), tmp_path, local_ray)
    assert history(again).equals(history(wider)) and again.metrics["epoch"] == 3  # finished: nothing trained


def test_early_stop_ends_training_on_the_plateau_and_a_rerun_trains_no_more(local_ray, tmp_path):
    """min_delta 1.0: no epoch can beat the first by more than all of the held-out cells, so with patience 1 the
    curve is flat at epoch 1, where training stops (checkpointed) out of 6 epochs allowed."""
    from archsweep.train import history
    from archsweep.train.vqvae import fit

    stop = [*ONE, "train.epochs=6", "train.early_stop=true", "train.patience=1", "train.min_delta=1.0",
            "train.min_epochs=0"]
    first = fit(load_config(overrides=stop), tmp_path, local_ray)
    assert first.error is None
    trained = history(first)
    assert trained["epoch"].tolist() == [0, 1] and trained["plateaued"].tolist() == [False, True]
    again = fit(load_config(overrides=stop), tmp_path, local_ray)
    assert again.error is None and history(again).equals(trained)
    # the rule off: the same run continues to its epochs, and still reports where its curve stands
    on = fit(load_config(overrides=[*ONE, "train.epochs=3", "train.patience=1", "train.min_delta=1.0",
                                    "train.min_epochs=0"]), tmp_path, local_ray)
    assert history(on)["epoch"].tolist() == [0, 1, 2] and history(on)["plateaued"].tolist() == [False, True, True]


def test_changed_keys_are_the_models_and_datas_not_the_run_length():
    from archsweep.config import to_dict
    from archsweep.train import VQVAE_RUN_KEYS, changed_keys

    saved = to_dict(load_config(overrides=TINY))
    assert changed_keys(saved, to_dict(load_config(overrides=[*TINY, "train.epochs=50", "train.num_workers=1"])),
                        VQVAE_RUN_KEYS) == []
    assert changed_keys(saved, to_dict(load_config(overrides=[*TINY, "vqvae.beta=0.5", "train.dataset_seed=3"])),
                        VQVAE_RUN_KEYS) == ["train.dataset_seed", "vqvae.beta"]
    older = {**saved, "vqvae": {k: v for k, v in saved["vqvae"].items() if k != "edge_weight"}}
    assert changed_keys(older, to_dict(load_config(overrides=TINY)), VQVAE_RUN_KEYS) == []  # a key added since


def test_stage_writes_model_codes_and_metrics(local_ray, tmp_path):
    from archsweep.artifacts import load_model
    from archsweep.spaces import get_space
    from archsweep.stages import vqvae

    cfg = load_config(overrides=[*ONE, "train.epochs=3"])
    results = vqvae.run(cfg, tmp_path, local_ray)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["vqvae"]["codebook_size"] == 16
    for key in ("reconstruction_accuracy", "codebook_usage", "perplexity", "graphs_per_s"):
        assert saved[key] == results[key] and saved[key] > 0
    assert set(saved["random_codes"]) >= {"validity", "uniqueness", "novelty", "valid_unique"}

    codes = np.load(tmp_path / "codes.npz")
    enum = get_space("nasbench201").enumerate()
    assert codes["codes"].shape == (15_625, 4) and codes["codes"].max() < 16
    assert np.array_equal(codes["hashes"], enum.hashes)
    assert codes["train"].sum() == round(0.9 * 15_625)

    model, loaded_cfg = load_model(tmp_path / "model.pt")
    assert loaded_cfg == cfg
    from archsweep.data import load_cells

    ops, adj, _ = load_cells(cfg)
    assert np.array_equal(model.encode(ops[:100], adj[:100]).numpy(), codes["codes"][:100])


def test_rerunning_a_finished_stage_does_not_train_again(local_ray, tmp_path):
    import torch

    from archsweep.stages import vqvae

    cfg = load_config(overrides=[*ONE, "train.epochs=1"])
    first = vqvae.run(cfg, tmp_path, local_ray)
    weights = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    again = vqvae.run(cfg, tmp_path, local_ray)
    rerun_weights = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], rerun_weights[k]) for k in weights)
    assert again["reconstruction_accuracy"] == first["reconstruction_accuracy"]
    assert again["training"]["epoch"] == 0


def _loop_failing(config: dict) -> None:
    """A Ray Train loop that records each attempt; it dies as a process would (a fault) or raises an archsweep
    error, as `config["how"]` says, on the attempts listed in `config["fail_on"]`."""
    import os
    from pathlib import Path

    from archsweep.errors import DataError
    from archsweep.train.launch import session

    attempts = Path(config["attempts"])
    if session(config).rank == 0:
        with open(attempts, "a") as f:
            f.write("attempt\n")
    attempt = len(attempts.read_text().splitlines())
    if attempt in config["fail_on"]:
        if config["how"] == "data":
            raise DataError("benchmark data file missing: /nowhere/table.csv")
        os._exit(1)


@pytest.mark.parametrize("how, fail_on, attempts, here", [("data", [1, 2, 3], 1, False), ("data", [1, 2, 3], 1, True),
                                                          ("fault", [1], 2, False)])
def test_archsweep_errors_end_a_stage_at_once_and_faults_restart_it(local_ray, tmp_path, how, fail_on, attempts,
                                                                   here):
    """An error no restart can fix (bad data, config, checkpoint) ends the stage on its first attempt and is raised
    as itself, on Ray Train workers or in this process; a dead worker restarts the worker group
    (train.max_failures)."""
    from archsweep.errors import DataError
    from archsweep.train.launch import run_trainer

    log = tmp_path / "attempts.txt"
    config = {"attempts": str(log), "fail_on": fail_on, "how": how}
    kwargs = dict(name="probe", out_dir=tmp_path, num_workers=1, cpus_per_worker=1, use_gpu=False, max_failures=2,
                  in_process=here)
    if how == "data":
        with pytest.raises(DataError, match="benchmark data file missing: /nowhere/table.csv"):
            run_trainer(_loop_failing, config, **kwargs)
    else:
        assert run_trainer(_loop_failing, config, **kwargs).error is None
    assert len(log.read_text().splitlines()) == attempts
