"""NAS search: mutations, strategies on tiny budgets (exact budget, no repeated query), persisted state and resume,
the summary's known facts, search files, and the Ray driver actor killed mid-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archsweep.config import ConfigError, load_config
from archsweep.search.base import Domain
from archsweep.search.loop import SearchError, SearchState, lookup, search_loop, summarize
from archsweep.search.registry import make_strategy
from archsweep.spaces import get_space
from tests.helpers import wait_for

NB201 = get_space("nasbench201")
NB101 = get_space("nasbench101")


@pytest.fixture(scope="module")
def nb201(data_dir):
    from archsweep.benchmarks import load_benchmark

    return load_benchmark("nasbench201", data_dir)


def _search(bench, tmp_path, overrides, dataset="cifar10", on_round=None, name="state.jsonl"):
    cfg = load_config(overrides=["space=nasbench201", *overrides])
    state = SearchState.load(tmp_path / name)
    search_loop(state, make_strategy(cfg, Domain(bench)),
                lambda cands: lookup(bench, [c.key for c in cands], dataset),
                budget=cfg.search.budget, batch_size=cfg.search.batch_size, seed=cfg.search.seed, on_round=on_round)
    return state


class _Died(Exception):
    pass


def _die_after_three_rounds(state):
    if state.rounds == 3:
        raise _Died


def _rounds(state):
    out = {}
    for q in state.history:
        out.setdefault(q.round, []).append(q)
    return list(out.values())


# --- mutations -------------------------------------------------------------------------------------------------


def test_nasbench201_mutation_changes_exactly_one_edge_op():
    rng = np.random.default_rng(0)
    cell = NB201.random_cell(rng)
    for _ in range(500):
        child = NB201.mutate(cell, rng)
        assert NB201.is_valid(child)
        assert sum(a != b for a, b in zip(cell.ops, child.ops)) == 1
        cell = child


def test_nasbench101_mutation_is_one_op_or_one_edge_of_the_padded_parent():
    rng = np.random.default_rng(1)
    for _ in range(300):
        parent = NB101.random_cell(rng)
        child = NB101.mutate(parent, rng)
        n = parent.num_vertices
        slot = list(range(n - 1)) + [6]
        padded = np.zeros((7, 7), dtype=np.uint8)
        padded[np.ix_(slot, slot)] = parent.adjacency
        edge_changes = int((padded != child.adjacency).sum())
        op_changes = sum(parent.ops[i] != child.ops[s] for i, s in enumerate(slot))
        assert child.num_vertices == 7
        assert edge_changes + op_changes <= 1  # a changed op on a padded (unconnected) vertex changes nothing
        assert not np.tril(child.adjacency).any()


# --- strategies on tiny budgets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy,batch", [("random", 10), ("regularized_evolution", 1),
                                            ("regularized_evolution", 4)])
def test_strategy_spends_the_budget_exactly_and_never_repeats_a_query(nb201, tmp_path, strategy, batch):
    state = _search(nb201, tmp_path, [f"search.strategy={strategy}", "search.budget=37", f"search.batch_size={batch}"])
    keys = [q.key for q in state.history]
    assert len(keys) == 37 and len(set(keys)) == 37
    assert [q.n for q in state.history] == list(range(1, 38))
    assert state.finished and max(len(r) for r in _rounds(state)) <= batch
    if strategy == "random":
        assert [len(r) for r in _rounds(state)] == [10, 10, 10, 7]
    for q in state.history:  # what was recorded is what the table says
        i = nb201.entry(q.key)
        assert q.val == nb201.lookup(i, "cifar10", "val") and q.test == nb201.lookup(i, "cifar10", "test")
        assert nb201.keys[nb201.find(q.cell)] == q.key


def test_regularized_evolution_mutates_the_tournament_winner(nb201, tmp_path):
    state = _search(nb201, tmp_path, ["search.strategy=regularized_evolution", "search.budget=60",
                                      "search.batch_size=1", "search.evolution.population=10",
                                      "search.evolution.tournament=3"])
    assert {q.source for q in state.history[:10]} == {"random"}
    assert {q.source for q in state.history[10:]} == {"mutation"}
    for k, q in enumerate(state.history[10:], start=10):
        population = state.history[k - 10:k]  # the last 10 queried, the oldest gone
        distances = [sum(a != b for a, b in zip(q.ops, p.ops)) for p in population]
        assert min(distances) == 1  # a one-edge mutation of a member


def test_search_is_deterministic_and_a_killed_search_continues_without_loss_or_repeat(nb201, tmp_path):
    overrides = ["search.strategy=regularized_evolution", "search.budget=45", "search.batch_size=4", "search.seed=3"]
    whole = _search(nb201, tmp_path, overrides, name="whole.jsonl")

    with pytest.raises(_Died):
        _search(nb201, tmp_path, overrides, on_round=_die_after_three_rounds, name="cut.jsonl")
    saved = SearchState.load(tmp_path / "cut.jsonl")
    assert saved.rounds == 3 and len(saved.history) == 10 and not saved.finished  # 4 + 4 + 2 random
    assert 0 < saved.strategy_s <= saved.wall_s  # each round's times are logged with it
    with open(tmp_path / "cut.jsonl", "a") as f:  # and it died while writing its fourth round
        f.write('{"round": 3, "queries": [{"n": 11, "rou')
    resumed = _search(nb201, tmp_path, overrides, name="cut.jsonl")
    assert [q.key for q in resumed.history] == [q.key for q in whole.history]
    assert len({q.key for q in resumed.history}) == 45
    assert resumed.wall_s > saved.wall_s and resumed.strategy_s > saved.strategy_s  # the first 3 rounds still count


@pytest.mark.parametrize("strategy", ["bo", "rl"])
def test_representation_strategies_resume_exactly_and_spend_the_budget(nb201, tmp_path, strategy):
    """bo refits its model from the history and rl replays its policy updates: a search cut after three rounds
    (and mid-write of the fourth) continues into the same queries as one never interrupted."""
    overrides = [f"search.strategy={strategy}", "search.encoding=adjacency", "search.budget=40",
                 "search.batch_size=5", "search.seed=2", "search.bo.initial=10", "search.bo.fit_steps=100",
                 "search.bo.pool_size=300", "search.rl.pool_size=300", "search.rl.initial=12"]
    whole = _search(nb201, tmp_path, overrides, name="whole.jsonl")
    keys = [q.key for q in whole.history]
    assert len(keys) == len(set(keys)) == 40 and whole.finished
    first = 10 if strategy == "bo" else 12
    assert [q.source for q in whole.history[:first]] == ["random"] * first
    assert {q.source for q in whole.history[first:]} == {strategy}
    if strategy == "rl":  # the policy's mean starts at the best of the random cells, and moves from there
        policy = make_strategy(load_config(overrides=["space=nasbench201", *overrides]), Domain(nb201))
        policy.observe(whole.history[:12])
        best = max(whole.history[:12], key=lambda q: q.val)
        assert np.allclose(policy.mu.detach().numpy(), policy._standard([best.cell])[0])
        policy.observe(whole.history[12:22])
        assert not np.allclose(policy.mu.detach().numpy(), policy._standard([best.cell])[0])

    with pytest.raises(_Died):
        _search(nb201, tmp_path, overrides, on_round=_die_after_three_rounds, name="cut.jsonl")
    with open(tmp_path / "cut.jsonl", "a") as f:
        f.write('{"round": 3, "queries": [{"n": 16, "rou')
    resumed = _search(nb201, tmp_path, overrides, name="cut.jsonl")
    assert [q.key for q in resumed.history] == keys


def test_bo_picks_cells_above_the_tables_median(nb201, tmp_path):
    """With the whole table as the pool, the cells bo picks by expected improvement after 20 random queries are
    better on average than the table's median cell: a model that ranked backwards would not be."""
    overrides = ["search.strategy=bo", "search.encoding=adjacency", "search.budget=40", "search.batch_size=10",
                 "search.bo.initial=20", "search.bo.fit_steps=200", "search.bo.pool=table"]
    table = Domain(nb201).table()
    assert len(table) == len(set(nb201.keys)) == 15625 and all(nb201.find(c) is not None for c, _ in table[::500])
    state = _search(nb201, tmp_path, overrides)
    column = nb201.accuracy[("cifar10", "val", nb201.default_epochs)]
    chosen = [q.val for q in state.history[20:]]
    assert {q.source for q in state.history[20:]} == {"bo"}
    assert np.mean(chosen) > np.median(column)  # 88.04 vs 87.30 when written; EI negated (20,000 draws): 66.59


def test_a_corrupted_state_file_is_named(tmp_path):
    (tmp_path / "state.jsonl").write_text('{"round": 0, "queries": [\n{"round": 1, "queries": []}\n')
    with pytest.raises(SearchError, match="state.jsonl, line 1: not a search state record"):
        SearchState.load(tmp_path / "state.jsonl")


# --- the summary -----------------------------------------------------------------------------------------------


def test_summary_finds_the_known_optimum_and_reports_best_by_validation(nb201, tmp_path):
    from archsweep.search.base import Query

    def query(n, index):
        cell = nb201.cell(index)
        return Query(n, n, nb201.keys[index], cell.adjacency.tolist(), list(cell.ops),
                     nb201.lookup(index, "cifar10", "val"), nb201.lookup(index, "cifar10", "test"), None, "random")

    # 10872 has the second-best validation accuracy (91.57) but test 93.76; 6111 is the optimum (91.61 / 94.37)
    history = [query(1, 0), query(2, 10872), query(3, 5), query(4, 6111), query(5, 7)]
    s = summarize(history, nb201, "cifar10", [2, 4, 5])
    assert s["test@2"] == pytest.approx(93.76, abs=0.01)
    assert s["test@4"] == s["test@5"] == pytest.approx(94.37, abs=0.01)
    assert s["queries_to_optimum"] == 4 and s["queries_to_val_optimum"] == 4 and s["queries_to_top01"] == 2
    assert s["queries"] == 5 and s["best_val"] == pytest.approx(91.61, abs=0.01)
    assert summarize(history[:3], nb201, "cifar10", [3])["queries_to_optimum"] is None


# --- config and search files -----------------------------------------------------------------------------------


def test_search_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'search.strategy' is 'rea'; allowed: lm_guided"):
        load_config(overrides=["search.strategy=rea"])
    with pytest.raises(ConfigError, match="'search.dataset' is 'cifar11'; allowed for nasbench201"):
        load_config(overrides=["search.dataset=cifar11"])
    with pytest.raises(ConfigError, match="tournament.*at most"):
        load_config(overrides=["search.evolution.tournament=20"])
    with pytest.raises(ConfigError, match="did you mean 'search.budget'"):
        load_config(overrides=["search.budgt=3"])
    with pytest.raises(ConfigError, match="'search.encoding' is vq but this run trains a VAE"):
        load_config(overrides=["search.enabled=true", "search.strategy=bo", "vqvae.model=vae"])
    with pytest.raises(ConfigError, match="'search.bo.pool' lm samples the LM prior"):
        load_config(overrides=["search.enabled=true", "search.strategy=bo", "search.bo.pool=lm", "vqvae.model=vae"])
    with pytest.raises(ConfigError, match="'search.bo.initial' is 1; allowed: >= 2"):
        load_config(overrides=["search.bo.initial=1"])
    with pytest.raises(ConfigError, match="'search.lm_guided.source' is 'tabel'; allowed: sample, table"):
        load_config(overrides=["search.lm_guided.source=tabel"])


def test_search_file_checks(tmp_path):
    from archsweep.search.spec import check_models, load_search_file

    path = tmp_path / "s.yaml"
    path.write_text("space: nasbench201\nsearch: {budget: 20}\nsearches:\n  strategies: {random: {}, "
                    "rea_small: {search.strategy: regularized_evolution, search.evolution.population: 5}}\n"
                    "  datasets: [cifar10, cifar100]\n  seeds: 2\n")
    spec = load_search_file(path)
    runs = dict(spec.runs())
    assert list(runs) == ["random-cifar10-s0", "random-cifar10-s1", "random-cifar100-s0", "random-cifar100-s1",
                          "rea_small-cifar10-s0", "rea_small-cifar10-s1", "rea_small-cifar100-s0",
                          "rea_small-cifar100-s1"]
    assert runs["rea_small-cifar100-s1"].search.evolution.population == 5
    assert runs["rea_small-cifar100-s1"].search.seed == 1
    for text, error in [
        ("searches: {seeds: 0}", "'searches.seeds' must be an int >= 1"),
        ("searches: {seed: 2}", "unknown key 'searches.seed'; did you mean 'searches.seeds'"),
        ("searches: {strategies: {fancy: {}}}", "'fancy' is not a strategy"),
        ("searches: {strategies: {lm_guided: {}}}", "lm_guided needs 'search.lm_guided.prior'"),
        ("searches: {strategies: {lm_guided: {search.lm_guided.prior: /nowhere}}}", "holds no finished LM stage"),
        ("searches: {datasets: [cifar11]}", "'search.dataset' is 'cifar11'"),
        ("searches: {strategies: {bo: {search.encoding: vae}}}",
         "encoding=vae needs a trained model: set search.encoder to a finished run directory"),
        ("searches: {strategies: {rl: {}}}", "or search.lm_guided.prior to an LM prior run"),
        ("searches: {strategies: {bo: {search.encoder: /nowhere}}}", "/nowhere is not a file"),
        ("searches: {strategies: {bo: {search.bo.pool: lm, search.encoding: adjacency}}}",
         "bo needs 'search.lm_guided.prior'"),
    ]:
        path.write_text(f"space: nasbench201\n{text}\n")
        with pytest.raises(ConfigError, match=error):
            load_search_file(path)
    # a file cut to some strategies needs only their models (bench.search --strategies)
    path.write_text("space: nasbench201\nsearches: {strategies: {random: {}, bo: {search.encoder: /nowhere}}}\n")
    spec = load_search_file(path, check_prior=False)
    with pytest.raises(ConfigError, match="searches.strategies.bo: .*/nowhere is not a file"):
        check_models(spec)
    spec.searches.strategies.pop("bo")
    check_models(spec)


# --- on Ray: the driver actor ----------------------------------------------------------------------------------


@pytest.mark.ray
def test_killed_driver_and_evaluator_actors_restart_and_the_search_loses_and_repeats_nothing(local_ray, nb201,
                                                                                            tmp_path, measured):
    import ray

    from archsweep.search.run import Evaluator, start_driver

    cfg = load_config(overrides=["space=nasbench201", "search.strategy=regularized_evolution", "search.budget=400",
                                 "search.batch_size=1", "search.seed=5", "search.dataset=cifar100"])
    bench_ref = ray.put(nb201)
    evaluators = [Evaluator.remote(bench_ref) for _ in range(2)]
    path = tmp_path / "driver" / "state.jsonl"
    driver = start_driver(cfg, path, bench_ref, evaluators)
    first_pid = ray.get(driver.pid.remote())
    ref = driver.run.remote([100, 400])
    def queries() -> int:
        return len(SearchState.load(path).history)

    wait_for(lambda: queries() >= 30, 60, "30 queries", interval=0.05)  # well into the search: kill its driver
    ray.kill(driver, no_restart=False)
    wait_for(lambda: queries() >= 60, 60, "60 queries", interval=0.05)  # then an evaluator: its query retried
    ray.kill(evaluators[0], no_restart=False)
    summary = ray.get(ref, timeout=120)
    assert ray.get(driver.pid.remote()) != first_pid  # it really died and was restarted

    history = SearchState.load(path).history
    assert summary["queries"] == len(history) == 400
    assert len({q.key for q in history}) == 400 and [q.n for q in history] == list(range(1, 401))
    whole = _search(nb201, tmp_path, ["search.strategy=regularized_evolution", "search.budget=400",
                                      "search.batch_size=1", "search.seed=5"], dataset="cifar100", name="whole.jsonl")
    assert [q.key for q in history] == [q.key for q in whole.history]  # same search as if it had never died
    timing = {k: summary.pop(k) for k in ("wall_s", "strategy_s")}  # the rounds' times, the dead driver's included
    assert summary == summarize(whole.history, nb201, "cifar100", [100, 400]) and timing["wall_s"] > 0
    measured("the search driver actor, then an evaluator actor, killed", "400 queries",
             str(len({q.key for q in history})), str(400 - len({q.key for q in history})),
             "0 queries repeated; the same 400 as an uninterrupted search")


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["bo", "rl"])
def test_killed_driver_of_a_representation_search_continues_the_same_search(local_ray, nb201, tmp_path, strategy):
    import ray

    from archsweep.search.run import Evaluator, start_driver

    overrides = ["space=nasbench201", f"search.strategy={strategy}", "search.encoding=adjacency", "search.budget=60",
                 "search.batch_size=5", "search.seed=4", "search.dataset=cifar10", "search.bo.initial=10",
                 "search.bo.fit_steps=100", "search.bo.pool_size=300", "search.rl.pool_size=300"]
    cfg = load_config(overrides=overrides)
    bench_ref = ray.put(nb201)
    path = tmp_path / "driver" / "state.jsonl"
    evaluators = [Evaluator.remote(bench_ref)]  # held here: an actor whose handles are all gone is ended
    driver = start_driver(cfg, path, bench_ref, evaluators)
    first_pid = ray.get(driver.pid.remote())
    ref = driver.run.remote([60])
    wait_for(lambda: len(SearchState.load(path).history) >= 25, 120, "25 queries", interval=0.05)
    ray.kill(driver, no_restart=False)
    summary = ray.get(ref, timeout=300)
    assert ray.get(driver.pid.remote()) != first_pid
    history = SearchState.load(path).history
    assert summary["queries"] == len({q.key for q in history}) == 60
    whole = _search(nb201, tmp_path, overrides[1:], name="whole.jsonl")
    assert [q.key for q in history] == [q.key for q in whole.history]


@pytest.mark.ray
def test_search_command_runs_a_search_file_prints_the_summary_and_continues(data_dir, tmp_path):
    """`archsweep search` end to end in its own process (a local Ray started there), then again: nothing reruns."""
    import subprocess
    import sys

    from archsweep.tracking.store import ResultStore

    args = [sys.executable, "-m", "archsweep.cli", "search", "sweeps/search-quick.yaml", "searches.seeds=2",
            "search.budget=20", "searches.report_budgets=[10,20]", f"storage={tmp_path}",
            "tracking.mode=disabled", "--num-cpus", "2"]
    root = Path(__file__).resolve().parent.parent
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "regularized_evolution" in first.stdout and "random" in first.stdout and "@20" in first.stdout
    rows = {r.trial_id: r for r in ResultStore(tmp_path / "search-quick").rows()}
    assert set(rows) == {f"{s}-cifar10-s{k}" for s in ("regularized_evolution", "random") for k in (0, 1)}
    assert all(r.status == "TERMINATED" and r.metrics["queries"] == 20 for r in rows.values())
    assert all(0 < r.metrics["strategy_s"] <= r.metrics["wall_s"] for r in rows.values())
    assert "wall time per search" in (tmp_path / "search-quick" / "report" / "summary.md").read_text()

    again = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    said = " ".join(again.stdout.split())  # the console wraps long paths
    assert "all 4 search(es) in" in said and "have finished" in said  # answered without starting Ray
    assert "regularized_evolution" in said and "@20" in said
    assert {r.trial_id: r.updated for r in ResultStore(tmp_path / "search-quick").rows()} == {
        k: r.updated for k, r in rows.items()}

    bad = subprocess.run([*args[:5], "search.strategy=annealing", "--check"], capture_output=True, text=True,
                         cwd=root)
    assert bad.returncode == 2 and "'search.strategy' is 'annealing'; allowed: lm_guided" in bad.stderr


@pytest.mark.ray
def test_two_search_files_with_the_same_labels_write_distinct_wandb_runs(local_ray, tmp_path, monkeypatch):
    """Two search files in one project, both `random` on cifar10 with seed 0: one W&B run each (ids carry the
    file's name), every query logged once."""
    from archsweep.search.run import run_searches
    from archsweep.search.spec import load_search_file
    from archsweep.tracking.wandb import offline_runs, read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("nb201-a", "nb201-b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nspace: nasbench201\nsearch: {{budget: 12, batch_size: 4}}\n"
                        "searches: {strategies: {random: {}}, datasets: [cifar10], report_budgets: [12]}\n"
                        f"tracking: {{project: one-project}}\nstorage: {tmp_path / 'runs'}\n")
        run_searches(load_search_file(path))
    runs = [read_offline_run(p) for p in offline_runs(tmp_path / "runs")]
    assert sorted(r["id"] for r in runs) == ["nb201-a-random-cifar10-s0", "nb201-b-random-cifar10-s0"]
    assert {r["name"] for r in runs} == {"random-cifar10-s0"} and {r["project"] for r in runs} == {"one-project"}
    assert {r["group"] for r in runs} == {"nb201-a", "nb201-b"}
    for run in runs:
        assert [h["_step"] for h in run["history"]] == [h["search/query"] for h in run["history"]] == list(range(1, 13))


def test_a_search_is_logged_round_by_round_and_a_restarted_driver_logs_no_step_twice(nb201, tmp_path, monkeypatch):
    """SearchRuns logs each round as the state file records it; cut after three rounds and continued by a new
    driver (a new SearchRuns, as after a restart), the run holds every query exactly once."""
    from archsweep.search.run import SearchRuns
    from archsweep.search.spec import load_search_file
    from archsweep.tracking.wandb import offline_runs, read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    path = tmp_path / "f.yaml"
    path.write_text("name: f\nspace: nasbench201\nsearch: {budget: 20, batch_size: 4}\n"
                    "searches: {strategies: {regularized_evolution: {}}, datasets: [cifar10]}\n")
    spec = load_search_file(path)
    (rid, cfg), = spec.runs()
    overrides = ["search.strategy=regularized_evolution", "search.budget=20", "search.batch_size=4"]
    logged_per_round = []

    def log_round(runs):
        def on_round(state):
            runs.update(rid, cfg, SearchState.load(state.path, repair=False))
            logged_per_round.append((runs.logged[rid], len(state.history)))
        return on_round

    first = SearchRuns(spec)
    with pytest.raises(_Died):
        _search(nb201, tmp_path, overrides, on_round=lambda s: (log_round(first)(s), _die_after_three_rounds(s)))
    first.close()  # the driver's process ends; its run's log is on disk
    assert logged_per_round == [(4, 4), (8, 8), (10, 10)]  # 4 + 4 + 2 random, then evolution
    second = SearchRuns(spec)
    state = _search(nb201, tmp_path, overrides, on_round=log_round(second))
    second.update(rid, cfg, state, summarize(state.history, nb201, "cifar10", [20]))
    second.close()
    parts = [read_offline_run(p) for p in offline_runs(tmp_path)]
    assert len(parts) == 2 and {p["id"] for p in parts} == {"f-regularized_evolution-cifar10-s0"}
    steps = [h["_step"] for p in parts for h in p["history"]]
    assert sorted(steps) == list(range(1, 21)) and all(logged == n for logged, n in logged_per_round)
    assert logged_per_round[-1] == (20, 20)
    assert parts[-1]["summary"]["queries"] == 20
