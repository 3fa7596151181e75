"""The NAS strategies behind one interface (`archsweep.search.base.Strategy`): `propose` a batch of cells, `observe`
their benchmark results. Random search, regularized evolution, LM-guided search (with its surrogate and explorer),
Bayesian optimisation (DNGO) and REINFORCE; lm_ranker lives in `ranker.py`, the choice by config in `registry.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from archsweep.search.base import Candidate, Domain, Observing, Query
from archsweep.search.predictor import DNGO, expected_improvement
from archsweep.spaces import Cell

# Tournaments (of 50 mutations each) per child before regularized evolution takes a random cell instead: on a subset
# table the winner's whole one-step neighbourhood can be missing or queried, and the winner keeps winning.
MAX_TOURNAMENTS = 5


class RandomSearch(Observing):
    """Uniform over the space's valid cells (the benchmark authors' sampler), skipping cells already queried and,
    on a subset table, cells the table lacks."""

    name = "random"

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        return self._random(n, rng, set(self.queried))


class RegularizedEvolution(Observing):
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


class Surrogate:
    """DNGO (`predictor.DNGO`) over an encoding, refitted on the whole history each time it ranks candidates by
    expected improvement over the best validation accuracy so far. Encodings are computed once per cell."""

    def __init__(self, encoder, fit_steps: int):
        self.encoder, self.fit_steps = encoder, fit_steps
        self._encoded: dict[str, np.ndarray] = {}

    def encode(self, items: Sequence[Candidate | Query]) -> np.ndarray:
        missing = [c for c in items if c.key not in self._encoded]
        if missing:
            for c, row in zip(missing, self.encoder([c.cell for c in missing])):
                self._encoded[c.key] = row
        return np.stack([self._encoded[c.key] for c in items])

    def rank(self, history: Sequence[Query], pool: list[Candidate], seed: int) -> list[Candidate]:
        """`pool`, highest expected improvement first."""
        if not pool:
            return []
        y = np.array([q.val for q in history])
        model = DNGO(steps=self.fit_steps, seed=seed).fit(self.encode(history), y)
        mean, std = model.predict(self.encode(pool))
        return [pool[i] for i in np.argsort(-expected_improvement(mean, std, float(y.max())), kind="stable")]


class LMGuided(Observing):
    """Sample the VQ-VAE + LM generator, adapted each round to the `top_k` best cells found so far (the prior,
    fine-tuned on their code sequences, so its samples concentrate around high-accuracy cells); keep the sampled
    cells the search may query, most often sampled first. When a round's samples hold too few new cells, sample
    again hotter (x1.5, twice), then fill up with random cells (source `fallback`, counted). With
    search.lm_guided.source = table, the generator is not sampled but scores every unqueried cell of the table, and
    the round's cells are drawn from those scores (`_drawn_from_table`): on a subset table most samples would be
    cells the search may not query.

    With a `surrogate` (search.lm_guided.surrogate, as AG-Net steers its generator with a predictor), once
    `surrogate_after` cells are queried every new cell of the round's samples is ranked by the surrogate's
    expected improvement instead, and the best n are queried.

    With search.lm_guided.initial = m, the first m queries are random cells, so the first elite does not come
    from the prior's most likely cells alone. With an `explorer` (a `BayesianOptimisation`;
    search.lm_guided.explore = k), once it has its initial queries, k of each round's n queries are its picks and
    n - k come from the generator: the adapted generator keeps to the neighbourhood of the best cells found, and a
    search whose first good cells lie in a poorer region would stay there; the model of the whole history looks
    elsewhere."""

    name = "lm_guided"

    def __init__(self, domain: Domain, generator, settings, surrogate: Surrogate | None = None,
                 surrogate_after: int = 0, explorer: BayesianOptimisation | None = None):
        super().__init__(domain)
        self.generator, self.settings = generator, settings
        self.surrogate, self.surrogate_after = surrogate, surrogate_after
        self.explorer = explorer

    def observe(self, queries: Sequence[Query]) -> None:
        super().observe(queries)
        if self.explorer is not None:
            self.explorer.observe(queries)

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        if len(self.history) < self.settings.initial:
            return self._random(min(n, self.settings.initial - len(self.history)), rng, set(self.queried))
        explore = 0
        if self.explorer is not None and len(self.history) >= self.explorer.settings.initial:
            explore = min(self.settings.explore, n)
        out = self._generated(n - explore, rng)
        if explore:
            out += self.explorer.pick(explore, rng, {c.key for c in out})
        return out + self._random(n - len(out), rng, set(self.queried) | {c.key for c in out}, "fallback")

    def _generated(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        if n == 0:
            return []
        s = self.settings
        elite = [q.cell for q in sorted(self.history, key=lambda q: -q.val)[:s.top_k]]
        ranked = self.surrogate is not None and len(self.history) >= self.surrogate_after
        if s.source == "table":
            out = self._drawn_from_table(self.generator, elite, s.candidates if ranked else n, s, rng, "lm")
        else:
            out = self._sampled(elite, n, ranked, rng)
        if ranked and len(out) > n:
            out = self.surrogate.rank(self.history, out, int(rng.integers(2**31)))[:n]
        return out

    def _sampled(self, elite: list[Cell], n: int, ranked: bool, rng: np.random.Generator) -> list[Candidate]:
        s, taken, out = self.settings, set(self.queried), []
        for attempt in range(3):
            cells = self.generator.candidates(elite, count=s.candidates, temperature=s.temperature * 1.5 ** attempt,
                                              sample_top_k=s.sample_top_k, adapt_steps=s.adapt_steps,
                                              adapt_lr=s.adapt_lr, seed=int(rng.integers(2**31)))
            for cell in cells:
                if len(out) == n and not ranked:
                    break
                if (c := self._accept(cell, taken, "lm")) is not None:
                    out.append(c)
            if len(out) >= n:
                break
        return out


class BayesianOptimisation(Observing):
    """Bayesian optimisation in a representation, as arch2vec searches its latent space: after `initial` random
    queries, each round fits DNGO (`Surrogate`) to every queried cell's encoding and validation accuracy and
    queries the `n` cells of a candidate pool (random cells of the table, all of it, or samples of the LM prior) with
    the highest expected improvement over the best so far."""

    name = "bo"

    def __init__(self, domain: Domain, encoder, settings, generator=None):
        super().__init__(domain)
        self.surrogate, self.settings, self.generator = Surrogate(encoder, settings.fit_steps), settings, generator

    def _pool(self, rng: np.random.Generator, taken: set[str]) -> list[Candidate]:
        s = self.settings
        if s.pool == "space":
            return self._random(s.pool_size, rng, taken, "bo")
        if s.pool == "table":
            return [Candidate(cell, key, "bo") for cell, key in self.domain.table() if key not in taken]
        cells = self.generator.candidates([], count=s.pool_size, temperature=1.0, sample_top_k=0, adapt_steps=0,
                                          adapt_lr=1e-3, seed=int(rng.integers(2**31)))
        return [c for cell in cells if (c := self._accept(cell, taken, "bo")) is not None]

    def pick(self, n: int, rng: np.random.Generator, exclude: Collection[str] = ()) -> list[Candidate]:
        """The n candidates of highest expected improvement, none of them queried or in `exclude`."""
        pool = self._pool(rng, set(self.queried) | set(exclude))
        return self.surrogate.rank(self.history, pool, int(rng.integers(2**31)))[:n]

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        s, taken = self.settings, set(self.queried)
        if len(self.history) < s.initial:
            return self._random(min(n, s.initial - len(self.history)), rng, taken)
        out = self.pick(n, rng)
        taken |= {c.key for c in out}
        return out + self._random(n - len(out), rng, taken, "fallback")


class Reinforce(Observing):
    """REINFORCE in a representation, as arch2vec's RL search: a Gaussian policy N(mu, diag(sigma^2)) over the
    standardised encodings, after `initial` random cells of the table with its mean at the best of them. Each
    proposal is the not-yet-queried cell nearest to a sample of the policy among a fresh pool (random cells of the
    table, uniform over its distinct cells); the queried cell's encoding is the action, so after each round mu and
    log sigma take one Adam step on -mean((accuracy - baseline) * log p(action)) (baseline: a moving average of the
    rewards). The policy is a function of the history alone, rebuilt exactly by observing it again."""

    name = "rl"

    def __init__(self, domain: Domain, encoder, settings, seed: int):
        import torch

        super().__init__(domain)
        self.encoder, self.settings = encoder, settings
        reference = self._from_table(settings.pool_size, np.random.default_rng([seed, 7]), set(), "rl")
        x = encoder([c.cell for c in reference])
        self.center, self.scale = x.mean(0), x.std(0) + 1e-6
        self.mu = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        self.log_sigma = torch.full((x.shape[1],), float(np.log(settings.sigma)), dtype=torch.float64,
                                    requires_grad=True)
        self.optimizer = torch.optim.Adam([self.mu, self.log_sigma], lr=settings.lr)
        self.baseline: float | None = None
        self.started = settings.initial == 0  # whether the policy acts (after `initial` random queries)

    def _standard(self, cells: list[Cell]) -> np.ndarray:
        return (self.encoder(cells) - self.center) / self.scale

    def observe(self, queries: Sequence[Query]) -> None:
        import torch

        super().observe(queries)
        for r in sorted({q.round for q in queries}):
            batch = [q for q in queries if q.round == r]
            if not self.started and len([q for q in self.history if q.round <= r]) >= self.settings.initial:
                self.started = True
                if self.settings.initial:  # the policy's mean starts at the best random cell
                    best = max((q for q in self.history if q.round <= r), key=lambda q: q.val)
                    with torch.no_grad():
                        self.mu.copy_(torch.from_numpy(self._standard([best.cell])[0]))
            if all(q.source != "rl" for q in batch):  # the random start: not the policy's actions
                continue
            rewards = np.array([q.val for q in batch])
            baseline = float(rewards.mean()) if self.baseline is None else self.baseline
            actions = torch.from_numpy(self._standard([q.cell for q in batch]))
            log_p = torch.distributions.Normal(self.mu, self.log_sigma.exp()).log_prob(actions).sum(-1)
            loss = -(torch.from_numpy(rewards - baseline) * log_p).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.baseline = 0.9 * baseline + 0.1 * float(rewards.mean())

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        taken = set(self.queried)
        if not self.started:
            return self._from_table(min(n, self.settings.initial - len(self.history)), rng, taken, "random")
        pool = self._from_table(self.settings.pool_size, rng, set(taken), "rl")
        if not pool:
            return []
        x = self._standard([c.cell for c in pool])
        mu, sigma = self.mu.detach().numpy(), self.log_sigma.exp().detach().numpy()
        out, used = [], np.zeros(len(pool), dtype=bool)
        for point in mu + sigma * rng.standard_normal((min(n, len(pool)), len(mu))):
            distance = np.where(used, np.inf, ((x - point) ** 2).sum(1))
            i = int(np.argmin(distance))
            used[i] = True
            out.append(pool[i])
        return out
