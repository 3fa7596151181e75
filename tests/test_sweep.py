"""Sweeps on a real Ray: trials run the pipeline, share the VQ-VAE stage, are recorded in the result store and
mirrored to real offline W&B runs (read back here), and the report renders. Also on a two-node
`ray.cluster_utils.Cluster`, where the trials' workers land on both nodes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from archsweep.search.loop import SearchState
from archsweep.sweep.spec import load_sweep

pytestmark = pytest.mark.ray

TINY = """
name: tiny
space: nasbench201
vqvae: {hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8}
train: {epochs: 1, batch_size: 512}
lm: {epochs: 2, batch_size: 256, warmup_steps: 5}
sample: {samples: 200}
search: {enabled: true, budget: 12, batch_size: 6, lm_guided: {candidates: 64}}
sweep:
  vqvae.codebook_size: {grid: [8]}
  vqvae.seq_len: {grid: [2]}
  lm.name: {grid: [gpt2-tiny, llama-tiny]}
tracking: {wandb: true, mode: offline, project: archsweep-test}
"""


def tiny_sweep(tmp_path: Path, *overrides: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return load_sweep(path, [f"storage={tmp_path / 'sweeps'}", *overrides])


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


def _finished(sweep_dir: Path):
    from archsweep.tracking.store import ResultStore

    return {r.trial_id: r for r in ResultStore(sweep_dir).rows()}


@pytest.mark.e2e  # a whole sweep: minutes; the long suite
def test_sweep_runs_trials_shares_the_vqvae_and_mirrors_to_wandb(data_dir, tmp_path, wandb_secret_key):
    import ray

    from archsweep.runtime import init_local_ray
    from archsweep.sweep.plan import SweepError
    from archsweep.sweep.run import run_sweep, sweep_dir_of
    from archsweep.tracking.report import report
    from archsweep.tracking.wandb import (offline_runs, read_offline_run, sync_command_line, sync_plan, synced,
                                          wandb_env)
    from archsweep.tracking.wandb_log import artifact_files, rewrite

    sweep = tiny_sweep(tmp_path)
    sweep_dir = sweep_dir_of(sweep)
    init_local_ray(num_cpus=2, env=wandb_env(sweep.tracking))
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    try:
        grid = run_sweep(sweep)
        before = {r.trial_id: r.updated for r in _finished(sweep_dir).values()}
        again = run_sweep(sweep)  # the same sweep again: continued, nothing rerun
        assert {r.trial_id: r.updated for r in _finished(sweep_dir).values()} == before and not again.errors
        with pytest.raises(SweepError, match="holds a different sweep named 'tiny'"):
            run_sweep(tiny_sweep(tmp_path, "lm.epochs=3"))
    finally:
        ray.shutdown()
    assert not grid.errors
    # neither the W&B key nor the local Ray's token is in any config, result row, W&B run file or Ray log
    for secret in (wandb_secret_key, os.environ.get("RAY_AUTH_TOKEN")):
        assert not secret or not (files_holding(sweep_dir, secret) or files_holding(session, secret))

    # the store: one finished row per trial, with its config, metrics and artifact paths
    rows = _finished(sweep_dir)
    assert len(rows) == 2 and {r.status for r in rows.values()} == {"TERMINATED"}
    assert {r.config["lm"]["name"] for r in rows.values()} == {"gpt2-tiny", "llama-tiny"}
    for row in rows.values():
        assert 0 <= row.metrics["validity"] <= 1
        assert row.metrics["valid_unique"] == pytest.approx(row.metrics["validity"] * row.metrics["uniqueness"])
        metrics = json.loads((Path(row.paths["trial_dir"]) / "metrics.json").read_text())
        assert metrics["generation"]["validity"] == row.metrics["validity"]
        assert (Path(row.paths["lm_dir"]) / "samples.npz").is_file()
        # the search stage: LM-guided search with the trial's own prior, its budget spent exactly
        assert row.metrics["search/queries"] == 12 and row.metrics["search/best_val"] == metrics["search"]["best_val"]
        history = SearchState.load(Path(row.paths["trial_dir"]) / "search" / "state.jsonl").history
        assert len({q.key for q in history}) == 12

    # artifact reuse: one VQ-VAE stage trained, by exactly one of the two trials
    stages = [p for p in (sweep_dir / "artifacts").iterdir() if p.is_dir()]
    assert len(stages) == 1 and {r.paths["vqvae_dir"] for r in rows.values()} == {str(stages[0])}
    assert sorted(r.metrics["vqvae/reused"] for r in rows.values()) == [False, True]
    assert len([p for p in (stages[0] / "ray" / "vqvae").glob("checkpoint_*") if p.is_dir()]) == 1  # 1 epoch, once

    # W&B: one offline run per trial (id = trial id, named after its swept values), one for the shared VQ-VAE
    # stage, one sweep summary (written by each of the two runs of the sweep, into one run id)
    parts = [read_offline_run(p) for p in offline_runs(sweep_dir)]
    by_type = {kind: [r for r in parts if r["job_type"] == kind] for kind in ("trial", "vqvae", "sweep-summary")}
    assert sum(map(len, by_type.values())) == len(parts)
    runs = {r["id"].rsplit("-", 1)[-1]: r for r in by_type["trial"]}  # by trial id, behind the sweep's prefix
    assert set(runs) == set(rows)
    prefix = by_type["vqvae"][0]["id"].removesuffix(f"-{stages[0].name}")
    assert {r["id"] for r in runs.values()} == {f"{prefix}-{t}" for t in rows}
    assert {r["name"] for r in runs.values()} == {"K8-L2-gpt2-tiny", "K8-L2-llama-tiny"}
    (stage_run,) = by_type["vqvae"]
    assert {r["id"] for r in by_type["sweep-summary"]} == {stage_run["id"].replace(stages[0].name, "summary")}
    for trial_id, run in runs.items():
        name = rows[trial_id].config["lm"]["name"]
        assert run["group"] == "tiny" and run["tags"] == ["nasbench201", name]
        assert run["config"]["lm"]["name"] == name
        assert run["config"]["swept"] == ["vqvae.codebook_size", "vqvae.seq_len", "lm.name"]
        assert run["config"]["archsweep"]["version"] and "commit" in run["config"]["archsweep"]
        # the machines its stages ran on (the driver writes the run: no system charts of its own machine)
        hosts = {"vqvae": rows[trial_id].paths["vqvae_host"], "lm": rows[trial_id].paths["lm_host"]}
        assert run["config"]["ran_on"] == hosts and hosts["lm"] == f"{socket.gethostname()} (127.0.0.1)"
        # the LM's epochs on their own axis; held-out loss summarised by its minimum, validity by its maximum
        assert run["metrics"]["lm/*"]["step_metric"] == "lm/epoch"
        assert run["metrics"]["lm/heldout_loss"] == {"step_metric": "lm/epoch", "summary": ["min"]}
        losses = [h["lm/heldout_loss"] for h in run["history"] if "lm/heldout_loss" in h]
        assert len(losses) >= 2  # two LM epochs (and the final report repeats the last)
        assert [h["lm/epoch"] for h in run["history"] if "lm/epoch" in h][:2] == [0, 1]
        assert run["summary"]["lm/heldout_loss"] == {"min": pytest.approx(min(losses))}
        assert run["summary"]["valid_unique"] == {"max": pytest.approx(rows[trial_id].metrics["valid_unique"])}
        assert [h["_step"] for h in run["history"]] == sorted({h["_step"] for h in run["history"]})
        # the table of generated cells: the first 100 samples, one per row
        (table,) = [h for h in run["history"] if "generated/_type" in h]
        assert table["generated/_type"] == "table-file" and table["generated/nrows"] == 100
        assert table["generated/ncols"] == 5
        logged = json.loads((Path(rows[trial_id].paths["trial_dir"]) / "wandb").glob(
            "offline-run-*/files/" + table["generated/path"]).__next__().read_text())
        assert logged["columns"] == ["codes", "cell", "valid", "novel", "accuracy"]
        valid = [r for r in logged["data"] if r[2]]
        assert valid and all(r[1].startswith("|") and r[3] in (True, False) and 0 < r[4] < 100 for r in valid)
        # its LM as an artifact; the VQ-VAE stage it used, by reference (W&B refuses use_artifact offline)
        (lm,) = [a for a in run["artifacts"] if a["type"] == "lm"]
        assert {"lm/model.safetensors", "lm/config.json", "samples.npz", "metrics.json"} <= set(lm["files"])
        assert run["config"]["vqvae_artifact"] == f"{stage_run['id']}:latest"
    # the VQ-VAE stage's run: its epoch on vqvae/epoch, the stage as an artifact with its files in the manifest
    assert stage_run["name"] == "vqvae-K8-L2" and stage_run["metrics"]["vqvae/*"]["step_metric"] == "vqvae/epoch"
    assert [h["vqvae/epoch"] for h in stage_run["history"]] == [0]
    (artifact,) = stage_run["artifacts"]
    assert artifact["type"] == "vqvae" and artifact["name"] == stage_run["id"]
    assert sorted(artifact["files"]) == ["codes.npz", "metrics.json", "model.pt"]
    assert (stages[0] / "wandb-run.json").is_file()
    # the summary run: the results table and the plot
    summary = by_type["sweep-summary"][-1]
    assert summary["summary"]["finished"] == 2
    assert any(k.startswith("plots/valid_unique_by_lm_name") for k in summary["summary"])

    # the report: rows sorted by the metric, CSV/JSON, and a plot per swept key with two or more values
    table, files = report(sweep_dir)
    assert [r["valid_unique"] for r in table] == sorted((r["valid_unique"] for r in table), reverse=True)
    names = {f.name for f in files}
    assert {"results.csv", "results.json", "valid_unique_by_lm_name.png"} <= names
    with open(sweep_dir / "report" / "results.csv") as f:
        assert {r["trial"] for r in csv.DictReader(f)} == set(rows)

    # the CLI over the same directory: the report table, and what `sync` would upload
    from click.testing import CliRunner

    from archsweep.cli import cli

    shown = CliRunner().invoke(cli, ["report", str(sweep_dir), "--sort", "validity"])
    assert shown.exit_code == 0 and "gpt2-tiny" in shown.output and "llama-tiny" in shown.output
    # one ceiling row (both trials share the space, split and sample count), its valid_unique as stored
    ceilings = {r.metrics["ceiling/valid_unique"] for r in rows.values()}
    (ceiling_line,) = [line for line in shown.output.splitlines() if "ceiling" in line]
    assert len(ceilings) == 1 and f"{ceilings.pop():.3f}" in ceiling_line
    listed = CliRunner().invoke(cli, ["sync", str(sweep_dir), "--list"])
    assert listed.exit_code == 0 and listed.output.count("logged steps") == len(parts)
    planned = CliRunner().invoke(cli, ["sync", str(sweep_dir), "--dry-run", "--project", "elsewhere"])
    said = " ".join(planned.output.split())
    assert planned.exit_code == 0 and "4 of 4 runs would be uploaded; all" in said and "found; nothing was" in said
    assert not any(synced(p) for p in offline_runs(sweep_dir))
    plan = sync_plan(sweep_dir, project="elsewhere")
    assert {e["project"] for e in plan} == {"elsewhere"} and sum(len(e["dirs"]) for e in plan) == len(parts)
    command = sync_command_line(plan, "elsewhere", None)
    assert command[:4] == ["wandb", "sync", "--project", "elsewhere"] and len(command) == 4 + len(parts)
    assert {e["id"]: e["uses"] for e in plan if e["uses"]} == {f"{prefix}-{t}": [f"{stage_run['id']}:latest"]
                                                                for t in runs}

    # moved, as `ray rsync-down` or `mv` does: each artifact file (recorded by its absolute path) is found again
    # under the new place by its path's end and digest, and the logs are pointed there before an upload
    moved = tmp_path / "pulled" / "tiny"
    shutil.move(sweep_dir, moved)
    planned = CliRunner().invoke(cli, ["sync", str(moved), "--dry-run"])
    count = sum(len(f) for e in sync_plan(moved) for f in e["files"].values())
    assert planned.exit_code == 0, planned.output
    assert f"all {count} artifact files found ({count} under {moved}" in " ".join(planned.output.split())
    assert count == sum(len(a["files"]) for r in parts for a in r["artifacts"]) > 2 * 4 + 3  # LMs, stage, tables
    lm_weights = next(moved.glob("trials/*/lm/lm/model.safetensors"))
    lm_weights.rename(lm_weights.with_suffix(".gone"))
    lost = CliRunner().invoke(cli, ["sync", str(moved), "--dry-run"])
    assert lost.exit_code == 1 and "1 artifact file(s) missing" in lost.output
    assert f"missing: {sweep_dir}/{lm_weights.relative_to(moved)} (file lm/model.safetensors of artifact" in lost.output
    lm_weights.with_suffix(".gone").rename(lm_weights)
    for entry in sync_plan(moved):
        for log, files in entry["files"].items():
            assert rewrite(log, files) == sum(f.recorded != str(f.found) for f in files)
            assert all(f.recorded == str(f.found) and f.found.is_relative_to(moved) for f in artifact_files(log, moved))
    assert [read_offline_run(p)["artifacts"] for p in offline_runs(moved)] == [r["artifacts"] for r in parts]


@pytest.mark.e2e  # a whole sweep: minutes; the long suite
def test_sweep_on_two_nodes_puts_trials_on_both(data_dir, tmp_path, wandb_secret_key):
    """Two 1-CPU nodes, two 1-worker trials at once: each trial's Ray Train worker needs a whole node."""
    import ray
    from ray.cluster_utils import Cluster

    from archsweep.runtime import worker_env
    from archsweep.sweep.run import run_sweep, sweep_dir_of

    sweep = tiny_sweep(tmp_path, "tracking.wandb=false", "vqvae.seq_len=4", "train.epochs=1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()}, logging_level="WARNING",
                 log_to_driver=False)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        grid = run_sweep(sweep)
        assert not grid.errors
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = _finished(sweep_dir_of(sweep))
    assert len(rows) == 2 and {r.status for r in rows.values()} == {"TERMINATED"}
    assert {r.paths["lm_node"] for r in rows.values()} == nodes


@pytest.mark.e2e  # a whole sweep: minutes; the long suite
def test_a_sweep_and_a_search_from_another_directory_take_relative_paths_from_there(data_dir, tmp_path):
    """The README's offline form, `ARCHSWEEP_DATA_DIR=../shared/data`, from a working directory that is neither the
    data's nor the repository's: the data, the cache, the sweep file and `storage` are all relative, the trials run
    in Ray's own directories, and every trial finishes; then a search whose `search.lm_guided.prior` is a relative
    path to one of those trials (sampled by a generator actor elsewhere) finishes too."""
    import subprocess
    import sys

    from archsweep.tracking.store import ResultStore

    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(TINY.replace("search: {enabled: true,", "search: {enabled: false,"))
    (work / "search.yaml").write_text("name: s\nspace: nasbench201\nsearch: {budget: 12, batch_size: 6, "
                                      "lm_guided: {candidates: 64}}\nsearches: {strategies: {lm_guided: {}}, "
                                      "report_budgets: [6, 12]}\ntracking: {wandb: false}\n")
    env = dict(os.environ, ARCHSWEEP_DATA_DIR=os.path.relpath(data_dir, work), WANDB_MODE="offline")
    env.pop("ARCHSWEEP_CACHE_DIR")
    archsweep = str(Path(sys.executable).with_name("archsweep"))

    def run(*args):
        return subprocess.run([archsweep, "--cache-dir", "cache", *args, "--num-cpus", "2"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)

    sweep = run("sweep", "tiny.yaml", "storage=runs", "tracking.wandb=false")
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "all 2 trials finished" in sweep.stdout and "Traceback" not in sweep.stdout + sweep.stderr
    rows = ResultStore(work / "runs" / "tiny").rows()
    assert len(rows) == 2 and {r.status for r in rows} == {"TERMINATED"}
    assert (work / "cache").is_dir() and not (Path(data_dir) / "cache").exists()
    # the plain progress lines of a run whose output is not a terminal: one per trial started and finished
    assert sweep.stderr.count(" started (") == 2 and sweep.stderr.count(" finished: valid_unique ") == 2

    prior = os.path.relpath(rows[0].paths["trial_dir"], work)
    search = run("search", "search.yaml", f"search.lm_guided.prior={prior}", "storage=searches")
    assert search.returncode == 0, search.stdout + search.stderr
    found = ResultStore(work / "searches" / "s").rows()
    assert [r.status for r in found] == ["TERMINATED"] and found[0].metrics["queries"] == 12
    assert found[0].config["search"]["lm_guided"]["prior"] == str(work / prior)
    assert "searches done 1/1, queries used 12/12" in search.stderr
