"""One configuration end to end on a real local Ray: VQ-VAE -> codes -> LM (DeepSpeed) -> samples -> metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archsweep.config import load_config
from archsweep.search.loop import SearchState
from tests.helpers import archsweep

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


def test_pipeline_writes_every_artifact_and_one_set_of_metrics(local_ray, data_dir, tmp_path):
    from archsweep.stages import pipeline

    cfg = load_config(overrides=[
        "space=nasbench201", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2",
        "vqvae.seq_len=4", "vqvae.codebook_size=16", "train.epochs=2", "train.num_workers=2",
        "lm.name=gpt2-tiny", "lm.epochs=1", "lm.num_workers=2", "lm.batch_size=128", "sample.samples=300",
        "search.enabled=true", "search.budget=30", "search.lm_guided.candidates=64"])
    results = pipeline.run(cfg, tmp_path, local_ray, str(data_dir))

    for path in ("vqvae/model.pt", "vqvae/codes.npz", "vqvae/metrics.json", "lm/lm/config.json",
                 "lm/samples.npz", "lm/metrics.json", "search/state.jsonl", "search/metrics.json", "metrics.json"):
        assert (tmp_path / path).exists(), path
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(results))

    lm = results["lm"]
    assert results["generation"] == {k: lm[k] for k in results["generation"]} and "valid_unique" in results["generation"]
    samples = np.load(tmp_path / "lm" / "samples.npz")
    assert len(samples["texts"]) == lm["samples"] == 300
    assert lm["validity"] == pytest.approx(samples["valid"].mean())
    for key in ("validity", "uniqueness", "novelty", "uniqueness_str", "novelty_str", "valid_unique",
                "valid_unique_novel"):
        assert 0 <= lm[key] <= 1
    assert lm["valid_unique"] == pytest.approx(lm["validity"] * lm["uniqueness"])
    assert lm["samples_per_s"] > 0 and lm["training"]["tokens_per_s"] > 0
    for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
        stats = lm[f"accuracy_{dataset}_val"]
        assert stats["coverage"] == 1.0 or lm["validity"] == 0  # NAS-Bench-201 has every valid cell

    # the saved LM samples again without retraining, and the same seed gives the same samples and metrics
    from archsweep.artifacts import load_lm
    from archsweep.stages.lm import Scorer, generate

    again = generate(load_lm(cfg, tmp_path / "lm" / "lm"), Scorer(cfg, tmp_path / "vqvae", str(data_dir)), cfg)
    assert {k: again[k] for k in results["generation"]} == results["generation"]

    # the optional search stage: LM-guided search with this pipeline's own prior, budget spent exactly
    search = results["search"]
    assert search["strategy"] == "lm_guided" and search["dataset"] == "cifar10" and search["queries"] == 30
    history = SearchState.load(tmp_path / "search" / "state.jsonl").history
    assert len({q.key for q in history}) == 30 and {q.source for q in history} <= {"lm", "fallback"}
    assert search["best_val"] == max(q.val for q in history)


def test_search_file_runs_lm_guided_on_generator_actors_with_wandb_and_continues(local_ray, data_dir, tmp_path,
                                                                                monkeypatch):
    """`run_searches` with a pipeline directory as the prior: generator, evaluator and driver actors, the
    result store, one offline W&B run per search read back, the report; running it again redoes nothing. The
    strategies that use the prior: lm_guided, lm_guided ranked by its surrogate (the prior's VQ encoding), lm_guided
    with bo exploring beside it, bo over the prior's samples, lm_ranker (and the resumption of the last two, in
    process)."""
    from archsweep.search.report import write_report
    from archsweep.search.run import run_searches
    from archsweep.search.spec import load_search_file
    from archsweep.stages import pipeline
    from archsweep.tracking.store import ResultStore
    from archsweep.tracking.wandb import offline_runs, read_offline_run

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = load_config(overrides=[
        "space=nasbench201", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2",
        "vqvae.seq_len=4", "vqvae.codebook_size=16", "train.epochs=1", "lm.name=gpt2-tiny", "lm.epochs=1",
        "lm.batch_size=128", "sample.samples=100"])
    pipeline.run(cfg, tmp_path / "prior", local_ray, str(data_dir))
    path = tmp_path / "search.yaml"
    path.write_text(f"""name: s
space: nasbench201
search: {{budget: 25, batch_size: 10, lm_guided: {{prior: {tmp_path / 'prior'}, candidates: 64}}}}
searches:
  strategies:
    lm_guided: {{}}
    random: {{}}
    ranked: {{search.strategy: lm_guided, search.lm_guided.surrogate: true, search.bo.initial: 10,
             search.bo.fit_steps: 50}}
    explore: {{search.strategy: lm_guided, search.lm_guided.explore: 3, search.lm_guided.initial: 10,
              search.encoding: adjacency, search.bo.initial: 10, search.bo.fit_steps: 50, search.bo.pool_size: 64}}
    bo: {{search.bo.pool: lm, search.bo.pool_size: 64, search.bo.initial: 10, search.bo.fit_steps: 50}}
    lm_ranker: {{search.lm_ranker.initial: 12, search.lm_ranker.context: 4, search.lm_ranker.steps: 20,
                search.lm_ranker.update_steps: 10, search.lm_ranker.examples: 64}}
  datasets: [cifar10, cifar100]
  seeds: 2
  report_budgets: [10, 25]
storage: {tmp_path / 'runs'}
""")
    spec = load_search_file(path)
    seen = []
    rows = run_searches(spec, progress=lambda done, total, finished: seen.append((done, total)))
    assert len(rows) == 24 and {r.status for r in rows} == {"TERMINATED"}
    assert seen[-1] == (600, 600)
    for row in rows:
        history = SearchState.load(row.paths["state"]).history
        assert row.metrics["queries"] == len(history) == len({q.key for q in history}) == 25
        if row.trial_id.startswith(("lm_guided", "ranked")):
            assert {q.source for q in history} <= {"lm", "fallback"}
        if row.trial_id.startswith("explore"):  # 10 random, then 3 of each round bo's and the rest generated
            assert [q.source for q in history[:10]] == ["random"] * 10
            assert [q.source for q in history[10:20]].count("bo") == 3 and {q.source for q in history[10:]} <= {
                "lm", "bo", "fallback"}
        if row.trial_id.startswith("bo"):  # 10 random, then the best of the prior's samples by the VQ encoding
            assert [q.source for q in history[:10]] == ["random"] * 10
            assert {q.source for q in history[10:]} <= {"bo", "fallback"} and "bo" in {q.source for q in history}
        if row.trial_id.startswith("lm_ranker"):  # 12 random, then the ranker's picks among the prior's samples
            assert [q.source for q in history[:12]] == ["random"] * 12
            assert {q.source for q in history[12:]} <= {"lm_ranker", "fallback"}
            assert "lm_ranker" in {q.source for q in history}
    runs = offline_runs(tmp_path / "runs" / "s")
    assert len(runs) == 24
    logged = read_offline_run(next(r for r in runs if "lm_guided-cifar100-s1" in str(r)))
    assert logged["id"] == "s-lm_guided-cifar100-s1" and logged["name"] == "lm_guided-cifar100-s1"
    assert logged["job_type"] == "search" and logged["group"] == "s"
    assert logged["tags"] == ["nasbench201", "lm_guided", "cifar100"]
    assert [h["search/query"] for h in logged["history"]] == list(range(1, 26))
    assert logged["metrics"]["search/*"]["step_metric"] == "search/query"
    assert logged["summary"]["queries"] == 25 and logged["config"]["search"]["dataset"] == "cifar100"
    table, files = write_report(tmp_path / "runs" / "s", [10, 25])
    assert {(line["strategy"], line["dataset"], line["seeds"]) for line in table} == {
        (s, d, 2) for s in ("lm_guided", "random", "ranked", "explore", "bo", "lm_ranker") for d in ("cifar10", "cifar100")}
    assert {f.name for f in files} == {"summary.csv", "summary.md", "curves.png"}

    before = {r.trial_id: r.updated for r in ResultStore(tmp_path / "runs" / "s").rows()}
    run_searches(spec)  # everything finished: read back, nothing runs again, nothing logged again
    assert len(offline_runs(tmp_path / "runs" / "s")) == 24
    assert {r.trial_id: r.updated for r in ResultStore(tmp_path / "runs" / "s").rows()} == before

    # lm_ranker trains its ranker on round after round (a restart replays the rounds before), and lm_guided's
    # explorer refits its model from the history each round: cut after a round that used them (and mid-write of
    # the next), each continues into the same queries as an uninterrupted search
    from archsweep.benchmarks import load_benchmark
    from archsweep.search.base import Domain
    from archsweep.search.generator import Generator
    from archsweep.search.loop import lookup, search_loop
    from archsweep.search.registry import make_strategy

    bench = load_benchmark("nasbench201", data_dir)
    generator = Generator.from_prior(tmp_path / "prior")

    def search(cfg, path, on_round=None):
        state = SearchState.load(path)
        search_loop(state, make_strategy(cfg, Domain(bench), generator),
                    lambda cands: lookup(bench, [c.key for c in cands], "cifar10"), budget=25, batch_size=10,
                    seed=cfg.search.seed, on_round=on_round)
        return state

    wholes = {}
    for rid, cut_after, next_n in (("lm_ranker-cifar10-s1", 3, 23), ("explore-cifar10-s1", 2, 21)):
        cfg = dict(spec.runs())[rid]

        def died(state, cut_after=cut_after):
            if state.rounds == cut_after:
                raise KeyboardInterrupt

        whole = wholes[rid] = search(cfg, tmp_path / f"whole-{rid}.jsonl")
        with pytest.raises(KeyboardInterrupt):
            search(cfg, tmp_path / f"cut-{rid}.jsonl", died)
        with open(tmp_path / f"cut-{rid}.jsonl", "a") as f:
            f.write(f'{{"round": {cut_after}, "queries": [{{"n": {next_n}, "rou')
        resumed = search(cfg, tmp_path / f"cut-{rid}.jsonl")
        assert [q.key for q in resumed.history] == [q.key for q in whole.history]
    # with fallbacks: a 1-epoch prior repeats itself
    assert "lm_ranker" in {q.source for q in wholes["lm_ranker-cifar10-s1"].history[12:22]}
    assert "bo" in {q.source for q in wholes["explore-cifar10-s1"].history[20:]}  # past the cut

    # the generator scores cells it is not asked to sample: a code sequence's log-likelihood is minus the LM's loss
    # on it times its predicted tokens; source=table draws each round from those scores over the unqueried table
    import torch

    from archsweep.lm.sampling import IGNORE, collate

    cells = [c for c, _ in Domain(bench).table()]
    scores = generator.log_likelihood([], cells, adapt_steps=0, adapt_lr=1e-3)
    assert scores.shape == (len(cells),) and (scores < 0).all()
    one = collate(generator.lm, generator.encode(cells[:1]))
    with torch.no_grad():
        loss = float(generator.lm.model(**one).loss)
    assert scores[0] == pytest.approx(-loss * int((one["labels"] != IGNORE).sum()), rel=1e-4)
    from archsweep.search.run import GeneratorActor, _RemoteGenerator

    remote = _RemoteGenerator(GeneratorActor.remote(str(tmp_path / "prior")))  # what a search driver calls
    assert np.allclose(remote.log_likelihood([], cells[:200], adapt_steps=0, adapt_lr=1e-3), scores[:200])
    cfg = dict(spec.runs())["lm_guided-cifar10-s1"]
    cfg.search.lm_guided.source, cfg.search.lm_guided.temperature = "table", 1e-6
    drawn = search(cfg, tmp_path / "table.jsonl")
    assert {q.source for q in drawn.history} == {"lm"} and len({q.key for q in drawn.history}) == 25
    score = dict(zip((k for _, k in Domain(bench).table()), scores))  # the first round (no elite): the 10 likeliest
    assert sorted(score[q.key] for q in drawn.history[:10]) == pytest.approx(np.sort(scores)[-10:].tolist())
    assert [q.key for q in search(cfg, tmp_path / "table-again.jsonl").history] == [q.key for q in drawn.history]
    cfg = dict(spec.runs())["lm_ranker-cifar10-s1"]  # its pool drawn the same way: full, where sampling repeats itself
    cfg.search.lm_guided.source = "table"
    ranked = search(cfg, tmp_path / "ranker-table.jsonl").history
    assert [q.source for q in ranked[12:]] == ["lm_ranker"] * 13


def test_the_search_bench_adopts_what_restricted_calls_finished_with_the_same_settings(local_ray, data_dir,
                                                                                         tmp_path):
    """bench/search.py's full comparison reads back the searches that runs cut to some strategies finished (the
    newest where several did) when their settings match, another strategy's defaults aside, and runs the rest."""
    import importlib

    from archsweep.search.loop import SearchState
    from archsweep.search.run import run_searches, search_dir_of
    from archsweep.search.spec import load_search_file
    from archsweep.tracking.store import ResultStore

    bench = importlib.import_module("bench.search")
    path = tmp_path / "s.yaml"
    path.write_text(f"""name: s
space: nasbench201
search: {{budget: 12, batch_size: 4}}
searches:
  strategies: {{random: {{}}, regularized_evolution: {{search.evolution.population: 6}}}}
  datasets: [cifar10]
  seeds: 2
  report_budgets: [12]
tracking: {{wandb: false}}
storage: {tmp_path / 'runs'}
""")

    def spec(*overrides):
        return load_search_file(path, list(overrides))

    # random, twice (the later call wins), and REA with another population: cut files with names of their own
    run_searches(spec("name=s-random-old", "searches.strategies={random: {}}"))
    run_searches(spec("name=s-random", "searches.strategies={random: {}}", "search.lm_ranker.steps=7"))
    run_searches(spec("name=s-rea", "searches.strategies={regularized_evolution: {search.evolution.population: 5}}"))
    full = spec()
    assert bench.adopt(full) == 2
    rows = {r.trial_id: r for r in ResultStore(search_dir_of(full)).rows()}
    assert set(rows) == {"random-cifar10-s0", "random-cifar10-s1"}
    assert all(r.paths["adopted_from"].endswith("/s-random") for r in rows.values())
    source = SearchState.load(tmp_path / "runs" / "s-random" / "runs" / "random-cifar10-s1" / "state.jsonl")
    adopted = SearchState.load(rows["random-cifar10-s1"].paths["state"])
    assert [q.key for q in adopted.history] == [q.key for q in source.history] and len(adopted.history) == 12
    run_searches(full)  # runs REA (its population differs from the cut run's) and reads random back
    after = {r.trial_id: r for r in ResultStore(search_dir_of(full)).rows()}
    assert {k: after[k].updated for k in rows} == {k: r.updated for k, r in rows.items()}
    assert {r.status for r in after.values()} == {"TERMINATED"} and len(after) == 4
    assert bench.adopt(full) == 0
    assert bench.provenance(search_dir_of(full)) == {"s-random": 2}  # the block names where they came from
    assert bench.ran(2, 2, 5.0, {"s-random": 2}).endswith("read back (their wall times are those calls'): 2 from "
                                                          "s-random")


def test_a_space_too_large_to_enumerate_trains_on_a_sampled_set_and_reports_no_accuracy(local_ray, tmp_path):
    from rich.console import Console

    from archsweep.cli import results_table
    from archsweep.data import load_cells
    from archsweep.spaces import training_cells
    from archsweep.stages import pipeline
    from archsweep.tracking.report import rows
    from archsweep.tracking.store import ResultStore, Row

    cfg = load_config(overrides=[
        "space=darts", "train.dataset_size=600", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128",
        "vqvae.gin_layers=2", "vqvae.codebook_size=16", "train.epochs=1", "lm.name=gpt2-tiny", "lm.epochs=1",
        "lm.batch_size=128", "sample.samples=200"])
    assert (cfg.vqvae.latent, cfg.vqvae.seq_len, cfg.vqvae.edge_weight) == ("per_node", 22, 10.0)  # the space's own
    results = pipeline.run(cfg, tmp_path, local_ray)  # no data directory: darts has no table to read

    vq, lm = results["vqvae"], results["lm"]
    assert vq["cells"] == 600 and vq["held_out"] == 60
    cells = training_cells(cfg)
    codes = np.load(tmp_path / "vqvae" / "codes.npz")
    assert codes["codes"].shape == (600, 22) and np.array_equal(codes["hashes"], cells.hashes)
    assert np.array_equal(codes["train"], load_cells(cfg)[2])
    for key in ("validity", "uniqueness", "novelty", "valid_unique"):
        assert 0 <= lm[key] <= 1
    assert not [k for k in lm if k.startswith("accuracy_")]  # no table: no accuracy, not a zero one
    console = Console(record=True, width=200)
    console.print(results_table(lm | {"config": results["config"]}, "LM stage"))
    assert "n/a (darts has no accuracy table)" in console.export_text()

    store = ResultStore(tmp_path / "sweep")
    store.put(Row("t_00000", "TERMINATED", results["config"], {"validity": lm["validity"]}))
    assert rows(tmp_path / "sweep")[0]["accuracy"] == "n/a"


VAE_RUN = """
space: nasbench201
seed: 0
vqvae: {model: vae, hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, seq_len: 2}
train: {epochs: 1, batch_size: 512, num_workers: 1}
search: {enabled: true, strategy: rl, encoding: vae, budget: 16, batch_size: 4, rl: {pool_size: 200}}
"""


def test_archsweep_run_and_a_one_trial_sweep_run_the_same_vae_pipeline_and_search(data_dir, tmp_path):
    """The VAE baseline with a search: `archsweep run` and a sweep trial of the same config go through the one
    pipeline, so both train the VAE, run the search in its own latent space (rl, search.encoding=vae) and record
    the same queries."""
    (tmp_path / "vae.yaml").write_text(VAE_RUN)
    (tmp_path / "sweep.yaml").write_text(VAE_RUN + "sweep: {seed: {grid: [0]}}\ntracking: {wandb: false}\n")
    env = {"ARCHSWEEP_DATA_DIR": str(data_dir)}
    run = archsweep("run", "-c", "vae.yaml", "-o", "run", "--num-cpus", "2", cwd=tmp_path, env=env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "search" in run.stdout  # the CLI shows the search's summary too
    sweep = archsweep("sweep", "sweep.yaml", "storage=sweeps", "--num-cpus", "2", cwd=tmp_path, env=env, timeout=900)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr

    alone = json.loads((tmp_path / "run" / "metrics.json").read_text())
    trial_dir, = (tmp_path / "sweeps" / "sweep" / "trials").glob("trial_*")
    trial = json.loads((trial_dir / "metrics.json").read_text())
    assert "lm" not in alone and "lm" not in trial  # the VAE generates from its own prior
    assert alone["generation"] == trial["generation"] == alone["vqvae"]["prior_samples"]
    assert alone["search"]["strategy"] == trial["search"]["strategy"] == "rl"
    assert alone["search"]["queries"] == trial["search"]["queries"] == 16
    keys = [[q.key for q in SearchState.load(d / "search" / "state.jsonl").history] for d in (tmp_path / "run",
                                                                                               trial_dir)]
    assert keys[0] == keys[1] and len(set(keys[0])) == 16
    timings = ("_s", "seconds")  # wall times differ from run to run; everything else is the same search
    assert {k: v for k, v in alone["search"].items() if not k.endswith(timings)} == \
        {k: v for k, v in trial["search"].items() if not k.endswith(timings)}
