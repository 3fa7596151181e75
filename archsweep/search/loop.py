"""One search, as a loop: propose a batch, query it, record it, persist, repeat until the budget is spent.

The state file is an append-only log, one JSON line per finished round (then one closing line), written and
fsynced before the next round starts, and the strategy is rebuilt from it: a search whose process dies continues
from its last recorded round, with no recorded query lost or repeated. A round cut off before its line was
complete is run again with the same proposals (its random generator depends only on the seed and the round
number). Appending keeps the cost of a round constant however long the search runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from archsweep.errors import ArchsweepError
from archsweep.search.base import Candidate, Query, Strategy


class SearchError(ArchsweepError):
    pass


@dataclass
class SearchState:
    path: Path
    history: list[Query] = field(default_factory=list)
    rounds: int = 0
    finished: bool = False
    exhausted: bool = False  # the strategy found nothing left to query before the budget was spent
    # wall seconds of the recorded rounds, and of their strategy's own part (propose: model fits, LM sampling);
    # logged with each round, so a resumed search still accounts its earlier rounds
    wall_s: float = 0.0
    strategy_s: float = 0.0

    @classmethod
    def load(cls, path: str | Path, repair: bool = True) -> SearchState:
        """The state a log holds; a last line cut off mid-write (the process died) is dropped from the file.
        `repair=False` reads without touching the file (an observer, while the search's own process may be
        writing that line)."""
        state = cls(Path(path))
        if not state.path.is_file():
            return state
        lines = state.path.read_bytes().split(b"\n")
        good = 0  # bytes of complete, parsed lines
        for i, line in enumerate(lines):
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                record = json.loads(line)
                if "round" in record:
                    state.history += [Query(**q) for q in record["queries"]]
                    state.rounds = record["round"] + 1
                    state.wall_s += record.get("wall_s", 0.0)
                    state.strategy_s += record.get("strategy_s", 0.0)
                else:
                    state.finished, state.exhausted = record["finished"], record.get("exhausted", False)
            except (ValueError, KeyError, TypeError) as exc:
                if i == len(lines) - 1:  # an unfinished last write: that round is redone
                    if repair:
                        with open(state.path, "r+b") as f:
                            f.truncate(good)
                    break
                raise SearchError(f"{state.path}, line {i + 1}: not a search state record ({exc!r}); remove the "
                                  "file to start that search again") from None
            good += len(line) + 1
        return state

    def _append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record_round(self, queries: list[Query], wall_s: float = 0.0, strategy_s: float = 0.0) -> None:
        self._append({"round": self.rounds, "queries": [q.to_dict() for q in queries], "wall_s": round(wall_s, 4),
                      "strategy_s": round(strategy_s, 4)})
        self.history += queries
        self.rounds += 1
        self.wall_s += wall_s
        self.strategy_s += strategy_s

    def close(self, exhausted: bool = False) -> None:
        self.finished, self.exhausted = True, exhausted
        self._append({"finished": True, "exhausted": exhausted})


def lookup(benchmark, keys: Sequence[str], dataset: str) -> list[dict]:
    """What a query of each key reveals: validation accuracy (searched on), test accuracy (reported; None where
    the table has none) and the table's training seconds (None where it has none)."""
    seconds = benchmark.train_seconds.get((dataset, benchmark.default_epochs))
    has_test = "test" in benchmark.splits
    out = []
    for key in keys:
        i = benchmark.entry(key)
        out.append({"val": benchmark.lookup(i, dataset, "val"),
                    "test": benchmark.lookup(i, dataset, "test") if has_test else None,
                    "seconds": None if seconds is None or np.isnan(seconds[i]) else float(seconds[i])})
    return out


def search_loop(state: SearchState, strategy: Strategy, evaluate: Callable[[list[Candidate]], list[dict]], *,
                budget: int, batch_size: int, seed: int, on_round: Callable[[SearchState], None] | None = None,
                ) -> SearchState:
    """Run (or continue) the search in `state` until `budget` queries are recorded."""
    strategy.observe(state.history)
    queried = {q.key for q in state.history}
    exhausted = state.exhausted
    while len(state.history) < budget and not exhausted:
        rng = np.random.default_rng([seed, state.rounds])
        start = time.perf_counter()
        proposals = strategy.propose(min(batch_size, budget - len(state.history)), rng)
        proposed = time.perf_counter()
        if not proposals:
            exhausted = True
            break
        if len({c.key for c in proposals}) != len(proposals) or queried & {c.key for c in proposals}:
            raise SearchError(f"strategy {strategy.name} proposed a cell twice in round {state.rounds}")
        new = [Query(len(state.history) + k + 1, state.rounds, c.key, c.cell.adjacency.tolist(), list(c.cell.ops),
                     r["val"], r["test"], r["seconds"], c.source)
               for k, (c, r) in enumerate(zip(proposals, evaluate(proposals)))]
        state.record_round(new, time.perf_counter() - start, proposed - start)
        queried |= {q.key for q in new}
        strategy.observe(new)
        if on_round is not None:
            on_round(state)
    if not state.finished:
        state.close(exhausted)
    return state


# --- what a search found, as NAS papers report it ------------------------------------------------------------


def curves(history: Sequence[Query]) -> dict[str, np.ndarray]:
    """Per query n (index n-1): the best validation accuracy so far, the test accuracy of that best-by-validation
    cell (NaN without a test split), and the simulated training seconds spent."""
    best_val = np.full(len(history), np.nan)
    test_of_best = np.full(len(history), np.nan)
    seconds = np.cumsum([q.seconds or 0.0 for q in history]) if history else np.zeros(0)
    best = None
    for i, q in enumerate(history):
        if best is None or q.val > best.val:
            best = q
        best_val[i] = best.val
        test_of_best[i] = np.nan if best.test is None else best.test
    return {"best_val": best_val, "test_of_best": test_of_best, "seconds": seconds}


def first_reaching(values: np.ndarray, target: float) -> int | None:
    """The 1-based query at which `values` first reaches `target`; None if it never does."""
    hit = np.flatnonzero(values >= target - 1e-9)
    return int(hit[0]) + 1 if len(hit) else None


def summarize(history: Sequence[Query], benchmark, dataset: str, budgets: Sequence[int]) -> dict:
    """The numbers a search run reports, selecting by validation as NAS papers do: the best-by-validation cell's
    accuracy at each budget (test, and validation), and the queries until
    - `queries_to_optimum`: the best-by-validation cell has the table's best test accuracy (NAS-Bench-201
      CIFAR-10: 94.37, two cells); on a table without test accuracy, the best validation accuracy;
    - `queries_to_val_optimum`: the table's best cell by validation has been queried;
    - `queries_to_top01`: the best-by-validation cell is in the table's top 0.1 % by validation.
    None where the search did not get there within its queries."""
    c = curves(history)
    _, val_optimum = benchmark.best(dataset, "val")
    column = benchmark.accuracy[(dataset, "val", benchmark.default_epochs)]
    top = float(np.nanpercentile(column, 99.9))
    if "test" in benchmark.splits:
        _, test_optimum = benchmark.best(dataset, "test")
        to_optimum = first_reaching(np.where(np.abs(c["test_of_best"] - test_optimum) < 1e-9, 1.0, 0.0), 1.0)
    else:
        to_optimum = first_reaching(c["best_val"], val_optimum)
    out = {"queries": len(history), "seconds": float(c["seconds"][-1]) if len(history) else 0.0,
           "best_val": float(c["best_val"][-1]) if len(history) else None,
           "best_test": float(c["test_of_best"][-1]) if len(history) and not np.isnan(c["test_of_best"][-1]) else None,
           "queries_to_optimum": to_optimum,
           "queries_to_val_optimum": first_reaching(c["best_val"], val_optimum),
           "queries_to_top01": first_reaching(c["best_val"], top),
           "fallback": sum(q.source == "fallback" for q in history)}
    for b in budgets:
        if b <= len(history):
            out[f"val@{b}"] = float(c["best_val"][b - 1])
            if not np.isnan(c["test_of_best"][b - 1]):
                out[f"test@{b}"] = float(c["test_of_best"][b - 1])
    return out
