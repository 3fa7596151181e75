"""NAS strategies behind one interface: `propose` a batch of cells, `observe` their benchmark results.

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
# Tournaments (of 50 mutations each) per child before regularized evolution takes a random cell instead: on a subset
# table the winner's whole one-step neighbourhood can be missing or queried, and the winner keeps winning.
MAX_TOURNAMENTS = 5


@dataclass(frozen=True)
class Candidate:
    cell: Cell
    key: str  # the benchmark table's key of the cell
    source: str  # random | mutation | lm | fallback (random, when the strategy's own proposals ran out)


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

    def key(self, cell: Cell) -> str | None:
        index = self.benchmark.find(cell)
        return None if index is None else self.benchmark.keys[index]

    def __len__(self) -> int:
        return len(self.benchmark)


class Strategy(Protocol):
    name: str

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]: ...
    def observe(self, queries: Sequence[Query]) -> None: ...


class _Observing:
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


class RandomSearch(_Observing):
    """Uniform over the space's valid cells (the benchmark authors' sampler), skipping cells already queried and,
    on a subset table, cells the table lacks."""

    name = "random"

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        return self._random(n, rng, set(self.queried))


class RegularizedEvolution(_Observing):
    """Regularized evolution (Real et al., 2019): a population of the last `population` queried cells (the oldest
    dies), each child a one-op-or-one-edge mutation of the best of `tournament` members sampled at random. The
    first `population` cells are random. With a batch of n, n children come from n independent tournaments. A
    child that no mutation finds (see MAX_TOURNAMENTS) is a random cell, recorded as `fallback`."""

    name = "regularized_evolution"

    def __init__(self, domain: Domain, population: int, tournament: int):
        super().__init__(domain)
        self.population, self.tournament = population, tournament

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        taken = set(self.queried)
        if len(self.history) < self.population:
            return self._random(min(n, self.population - len(self.history)), rng, taken)
        members = self.history[-self.population:]
        out = []
        for _ in range(n):
            child = None
            for _ in range(MAX_TOURNAMENTS):
                picked = rng.choice(len(members), size=self.tournament, replace=False)
                parent = max((members[i] for i in picked), key=lambda q: q.val).cell
                for _ in range(50):
                    if (child := self._accept(self.space.mutate(parent, rng), taken, "mutation")) is not None:
                        break
                if child is not None:
                    break
            out += [child] if child is not None else self._random(1, rng, taken, "fallback")
        return out


class LMGuided(_Observing):
    """Sample the VQ-VAE + LM generator, adapted each round to the `top_k` best cells found so far (the prior,
    fine-tuned on their code sequences, so its samples concentrate around high-accuracy cells); keep the sampled
    cells the search may query, most often sampled first. When a round's samples hold too few new cells, sample
    again hotter (x1.5, twice), then fill up with random cells (source `fallback`, counted)."""

    name = "lm_guided"

    def __init__(self, domain: Domain, generator, settings):
        super().__init__(domain)
        self.generator, self.settings = generator, settings

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        s = self.settings
        elite = [q.cell for q in sorted(self.history, key=lambda q: -q.val)[:s.top_k]]
        taken, out = set(self.queried), []
        for attempt in range(3):
            cells = self.generator.candidates(elite, count=s.candidates, temperature=s.temperature * 1.5 ** attempt,
                                              sample_top_k=s.sample_top_k, adapt_steps=s.adapt_steps,
                                              adapt_lr=s.adapt_lr, seed=int(rng.integers(2**31)))
            for cell in cells:
                if len(out) == n:
                    break
                if (c := self._accept(cell, taken, "lm")) is not None:
                    out.append(c)
            if len(out) == n:
                return out
        return out + self._random(n - len(out), rng, taken, "fallback")


def make_strategy(cfg, domain: Domain, generator=None) -> Strategy:
    """The strategy `cfg.search.strategy` names; `generator` (lm_guided only) samples candidate cells."""
    s = cfg.search
    if s.strategy == "random":
        return RandomSearch(domain)
    if s.strategy == "regularized_evolution":
        return RegularizedEvolution(domain, s.evolution.population, s.evolution.tournament)
    if generator is None:
        raise ValueError("lm_guided needs a generator (the trained VQ-VAE + LM prior)")
    return LMGuided(domain, generator, s.lm_guided)
