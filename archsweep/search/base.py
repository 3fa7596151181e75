"""The types every NAS strategy shares: a candidate cell, a charged query, the domain of cells a search may query,
the `Strategy` interface and the base that keeps what a strategy has observed.

A strategy's state is only what it has observed; the random generator comes from the driver, one per round. So a
restarted driver rebuilds a strategy exactly by letting it observe the persisted history again. Every strategy
proposes only cells the search may query: valid, in the benchmark table, never queried before, once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from archsweep.spaces import Cell

# Draws per wanted cell before a strategy gives up (a table nearly exhausted, or a tiny subset table).
MAX_DRAWS = 5_000


@dataclass(frozen=True)
class Candidate:
    cell: Cell
    key: str  # the benchmark table's key of the cell
    source: str  # random | mutation | lm | bo | rl | lm_ranker | fallback (random: its own ran out)


@dataclass
class Query:
    """One charged benchmark query, as the search history records it."""

    n: int  # 1-based position in the search
    round: int
    key: str
    adjacency: list
    ops: list
    val: float
    test: float | None  # None where the table has no test split (NAS-Bench-101 subset)
    seconds: float | None  # the table's training time of the cell, where it has one
    source: str

    @property
    def cell(self) -> Cell:
        return Cell(self.adjacency, self.ops)

    def to_dict(self) -> dict:
        return asdict(self)


class Domain:
    """The cells a search may query: valid and in the benchmark table; `key` is None for any other cell."""

    def __init__(self, benchmark):
        self.benchmark = benchmark
        self.space = benchmark.space
        self._table: list[tuple[Cell, str]] | None = None

    def key(self, cell: Cell) -> str | None:
        index = self.benchmark.find(cell)
        return None if index is None else self.benchmark.keys[index]

    def __len__(self) -> int:
        return len(self.benchmark)

    def table(self) -> list[tuple[Cell, str]]:
        """Every cell of the table with its key, once per key (built on first use, then kept)."""
        if self._table is None:
            seen, self._table = set(), []
            for i, key in enumerate(self.benchmark.keys):
                if key not in seen:
                    seen.add(key)
                    self._table.append((self.space.prune(self.benchmark.cell(i)), key))
        return self._table


class Strategy(Protocol):
    name: str

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]: ...
    def observe(self, queries: Sequence[Query]) -> None: ...


class Observing:
    """The strategy base: the history it has observed, and the ways every strategy draws allowed candidates."""


    def __init__(self, domain: Domain):
        self.domain = domain
        self.space = domain.space
        self.history: list[Query] = []
        self.queried: set[str] = set()

    def observe(self, queries: Sequence[Query]) -> None:
        for q in queries:
            self.history.append(q)
            self.queried.add(q.key)

    def _accept(self, cell: Cell, taken: set[str], source: str) -> Candidate | None:
        key = self.domain.key(cell)
        if key is None or key in taken:
            return None
        taken.add(key)
        return Candidate(self.space.prune(cell), key, source)

    def _random(self, n: int, rng: np.random.Generator, taken: set[str], source: str = "random") -> list[Candidate]:
        out = []
        for _ in range(n * MAX_DRAWS):
            if len(out) == n or len(taken) >= len(self.domain):
                break
            if (c := self._accept(self.space.random_cell(rng), taken, source)) is not None:
                out.append(c)
        return out

    def _from_table(self, n: int, rng: np.random.Generator, taken: set[str], source: str) -> list[Candidate]:
        """n cells drawn uniformly from the table's cells not in `taken`: cheap on a subset table, where the space's
        own sampler would mostly draw cells the table lacks (NAS-Bench-101's 30k table: 1 draw in ~44 is in it)."""
        table, out = self.domain.table(), []
        for i in rng.permutation(len(table)):
            if len(out) == n:
                break
            cell, key = table[i]
            if key not in taken:
                taken.add(key)
                out.append(Candidate(cell, key, source))
        return out

    def _drawn_from_table(self, generator, elite: list[Cell], n: int, settings, rng: np.random.Generator,
                          source: str) -> list[Candidate]:
        """n unqueried table cells drawn without replacement with probability proportional to p(cell)^(1 / T)
        under the generator's LM adapted to `elite` (Gumbel top-k; T, adapt_steps, adapt_lr from
        search.lm_guided): what sampling at temperature T and keeping the new table cells would give, without the
        samples the table lacks or the search has queried."""
        pool = [(cell, key) for cell, key in self.domain.table() if key not in self.queried]
        if not pool:
            return []
        score = generator.log_likelihood(elite, [cell for cell, _ in pool], adapt_steps=settings.adapt_steps,
                                         adapt_lr=settings.adapt_lr)
        drawn = np.argsort(-(score / settings.temperature + rng.gumbel(size=len(pool))), kind="stable")[:n]
        return [Candidate(*pool[i], source) for i in drawn]
