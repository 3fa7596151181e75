"""The lm_ranker strategy: NAS as ranking, as LM-Searcher casts it. A language model reads the evaluated history
(each cell's code sequence followed by its score) and a handful of candidates (each behind a marker), and
answers with the marker of the candidate it expects to score best.

The ranker learns only from cells the search itself queried: ranking examples of a random context of the history,
a few other queried cells as candidates and the best of them as the answer. Besides the answer it learns, as an LM
trained on the history's text would, to write each context cell's score after its codes: without that dense
signal the answer alone left it near chance on unseen cells (bench/ranker.py, docs/BENCHMARKS.md). It is
trained `steps` steps at the first ranked round and `update_steps` more each later round on fresh examples from
the grown history, continuing (weights and optimiser); every round's training depends only on the history before
it and the search seed, so a restarted search replays the earlier rounds' training and continues exactly. Each
round it then ranks the new cells the LM prior samples (adapted to the best cells so far, as lm_guided does), with
the best cells found so far as the context, and the n it rates highest are queried.

Tokens: the prompt is spelled in the code-token vocabulary of a from-scratch preset, extended: codes 0..K-1, then
`SCORE_BINS` score tokens (a cell's rank within the history, in tenths), `candidates_per_prompt` markers and one
separator, all above K, so a from-scratch preset of archsweep.lm.models reads it. The decoder-only families learn
the task (tests/test_ranker.py); the t5 presets stayed at chance, and the config refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from archsweep.errors import ArchsweepError
from archsweep.lm.models import CodeTokenizer, build
from archsweep.search.base import Candidate, Domain, Observing, Query

SCORE_BINS = 10


class Prompts:
    """The ranker's token layout for codebook size K, sequence length L, `context` history cells and
    `candidates` candidates per prompt. Token values are "codes" of an extended codebook (`vocabulary`)."""

    def __init__(self, codebook_size: int, seq_len: int, context: int, candidates: int):
        self.k, self.seq_len, self.context, self.candidates = codebook_size, seq_len, context, candidates
        self.score0 = codebook_size
        self.marker0 = codebook_size + SCORE_BINS
        self.separator = self.marker0 + candidates
        self.vocabulary = self.separator + 1
        self.length = context * (seq_len + 1) + 1 + candidates * (seq_len + 1) + 1

    def markers(self) -> list[int]:
        return list(range(self.marker0, self.marker0 + self.candidates))

    def score_positions(self) -> list[int]:
        """Where each context cell's score token stands in a prompt."""
        return [i * (self.seq_len + 1) + self.seq_len for i in range(self.context)]

    def prompt(self, context: Sequence[tuple[Sequence[int], int]], candidates: Sequence[Sequence[int]]) -> list[int]:
        """context: (codes, score bin) pairs, shown in this order; candidates: code sequences behind markers."""
        out: list[int] = []
        for codes, score in context:
            out += [*codes, self.score0 + score]
        out.append(self.separator)
        for j, codes in enumerate(candidates):
            out += [self.marker0 + j, *codes]
        out.append(self.separator)
        return out


def score_bins(values: Sequence[float]) -> np.ndarray:
    """Each value's rank among `values` in tenths: 0 for the lowest tenth .. 9 for the highest (ties share)."""
    values = np.asarray(values, dtype=np.float64)
    below = np.searchsorted(np.sort(values), values, side="left")
    return np.minimum(below * SCORE_BINS // max(len(values), 1), SCORE_BINS - 1)


def training_examples(codes: Sequence[Sequence[int]], values: Sequence[float], prompts: Prompts, count: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prompts [count, length], answers [count]: the index of the best candidate) from queried cells only."""
    n, need = len(codes), prompts.context + prompts.candidates
    if n < need:
        raise ValueError(f"ranking examples need {need} queried cells, got {n}")
    bins = score_bins(values)
    rows, answers = [], []
    for _ in range(count):
        chosen = rng.choice(n, size=need, replace=False)
        context = sorted(chosen[:prompts.context], key=lambda i: values[i])  # ascending: the best last
        pool = chosen[prompts.context:]
        rows.append(prompts.prompt([(codes[i], int(bins[i])) for i in context], [codes[i] for i in pool]))
        answers.append(int(np.argmax([values[i] for i in pool])))
    return np.array(rows, dtype=np.int64), np.array(answers, dtype=np.int64)


def pool_scores(ranker: Ranker, prompts: Prompts, codes, values, pool_codes, rng: np.random.Generator,
                groupings: int = 1) -> np.ndarray:
    """Each pool cell's probability of being the best of its random group of `prompts.candidates` (the context:
    the `prompts.context` best queried cells, ascending; a short last group padded by repeating its cells),
    averaged over `groupings` random groupings."""
    best = sorted(range(len(values)), key=lambda i: values[i])[-prompts.context:]
    bins = score_bins(values)
    context = [(codes[i], int(bins[i])) for i in best]
    k, total = prompts.candidates, np.zeros(len(pool_codes))
    for _ in range(groupings):
        order = rng.permutation(len(pool_codes))
        groups = [np.resize(order[i:i + k], k) for i in range(0, len(order), k)]
        probs = ranker.scores(np.array([prompts.prompt(context, [pool_codes[i] for i in g]) for g in groups]))
        score = np.zeros(len(pool_codes))
        for g, row in zip(groups, probs):
            np.maximum.at(score, g, row)
        total += score
    return total / groupings


class Ranker:
    """A preset LM trained on ranking examples; `scores(prompts)` -> the softmax over each prompt's markers.
    `fit` continues from the previous call (weights and AdamW state)."""

    def __init__(self, name: str, prompts: Prompts, seed: int, threads: int = 1):
        import torch

        if name.startswith("pretrained:"):
            raise ArchsweepError(f"search.lm_ranker.name={name}: the ranker's prompt is spelled in extended code "
                                 "tokens, which a pretrained tokenizer has not; name a preset (gpt2-tiny, ...)")
        self.prompts, self.threads = prompts, threads
        torch.manual_seed(seed)
        self.lm = build(name, prompts.vocabulary, prompts.length)
        self.optimizer = None

    def _logits(self, ids):
        """(logits over the markers at the answer, logits over the score tokens at each context score's place, or
        None for an encoder-decoder)."""
        import torch

        offset, p = CodeTokenizer.OFFSET, self.prompts
        markers = torch.tensor(p.markers()) + offset
        tokens = ids + offset
        bos = torch.full((len(ids), 1), CodeTokenizer.BOS, dtype=torch.long)
        if self.lm.seq2seq:
            return self.lm.model(input_ids=tokens, decoder_input_ids=bos).logits[:, -1][:, markers], None
        logits = self.lm.model(input_ids=torch.cat([bos, tokens], 1)).logits  # logits[:, j] predicts tokens[:, j]
        scores = torch.arange(p.score0, p.score0 + SCORE_BINS) + offset
        return logits[:, -1][:, markers], logits[:, p.score_positions()][:, :, scores]

    def fit(self, rows: np.ndarray, answers: np.ndarray, steps: int, lr: float, batch: int, seed: int,
            score_weight: float = 1.0) -> float:
        """`steps` AdamW steps on the answers' cross-entropy plus `score_weight` x that of each context cell's
        score token. Dropout draws from `seed` alone, whatever ran before (a restarted search replays this call)."""
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.random.fork_rng(devices=[]):  # the ranker runs on the CPU
                torch.manual_seed(seed)
                return self._fit(torch.from_numpy(rows), torch.from_numpy(answers), steps, lr, batch,
                                 np.random.default_rng(seed), score_weight)
        finally:
            torch.set_num_threads(old)

    def _fit(self, ids, target, steps: int, lr: float, batch: int, rng: np.random.Generator,
             score_weight: float) -> float:
        import torch

        context_scores = ids[:, self.prompts.score_positions()] - self.prompts.score0
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.lm.model.parameters(), lr=lr, weight_decay=0.01)
        self.lm.model.train()
        loss = torch.zeros(())
        for _ in range(steps):
            pick = torch.from_numpy(rng.choice(len(ids), size=min(batch, len(ids)), replace=False))
            answer, scores = self._logits(ids[pick])
            loss = torch.nn.functional.cross_entropy(answer, target[pick])
            if scores is not None and score_weight:
                loss = loss + score_weight * torch.nn.functional.cross_entropy(
                    scores.reshape(-1, SCORE_BINS), context_scores[pick].reshape(-1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.lm.model.eval()
        return float(loss.detach())

    def scores(self, rows: np.ndarray) -> np.ndarray:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                return torch.softmax(self._logits(torch.from_numpy(rows))[0], -1).double().numpy()
        finally:
            torch.set_num_threads(old)


class LMRanker(Observing):
    """See the module docstring. The first `initial` queries are random; a round whose prior samples hold too few
    new cells fills up with random ones (source `fallback`)."""

    name = "lm_ranker"

    def __init__(self, domain: Domain, generator, encode_codes, codebook_size: int, seq_len: int, settings,
                 guide_settings, seed: int):
        super().__init__(domain)
        self.generator, self.encode_codes, self.settings, self.guide = generator, encode_codes, settings, guide_settings
        self.prompts = Prompts(codebook_size, seq_len, settings.context, settings.candidates_per_prompt)
        self.seed = seed
        self.ranker: Ranker | None = None
        self._trained = -1  # the last round whose training the ranker holds
        self._codes: dict[str, tuple[int, ...]] = {}

    def codes(self, items: Sequence[Candidate | Query]) -> list[tuple[int, ...]]:
        missing = [c for c in items if c.key not in self._codes]
        if missing:
            for c, codes in zip(missing, self.encode_codes([c.cell for c in missing])):
                self._codes[c.key] = tuple(int(x) for x in codes)
        return [self._codes[c.key] for c in items]

    def _samples(self, rng: np.random.Generator, taken: set[str]) -> list[Candidate]:
        g = self.guide
        elite = [q.cell for q in sorted(self.history, key=lambda q: -q.val)[:g.top_k]]
        if g.source == "table":
            return self._drawn_from_table(self.generator, elite, self.settings.pool, g, rng, "lm_ranker")
        cells = self.generator.candidates(elite, count=g.candidates, temperature=g.temperature,
                                          sample_top_k=g.sample_top_k, adapt_steps=g.adapt_steps,
                                          adapt_lr=g.adapt_lr, seed=int(rng.integers(2**31)))
        out = []
        for cell in cells:
            if len(out) == self.settings.pool:
                break
            if (c := self._accept(cell, taken, "lm_ranker")) is not None:
                out.append(c)
        return out

    def _need(self) -> int:
        return max(self.settings.initial, self.prompts.context + self.prompts.candidates)

    def _train(self, round_: int) -> None:
        """Bring the ranker up to the start of `round_`: each round from the first ranked one on trains it once, on
        examples from the history before that round, seeded by the search seed and the round (so a restarted
        search, which observed its whole history at once, replays the rounds it ran before)."""
        s, p = self.settings, self.prompts
        for t in range(self._trained + 1, round_ + 1):
            before = [q for q in self.history if q.round < t]
            if len(before) < self._need():
                continue
            seed = int(np.random.default_rng([self.seed, t, 1]).integers(2**31))
            steps = s.steps if self.ranker is None else s.update_steps
            if self.ranker is None:
                self.ranker = Ranker(s.name, p, self.seed)
            rows, answers = training_examples(self.codes(before), [q.val for q in before], p, s.examples,
                                              np.random.default_rng(seed))
            self.ranker.fit(rows, answers, steps, s.lr, s.batch_size, seed, s.score_weight)
        self._trained = max(self._trained, round_)

    def propose(self, n: int, rng: np.random.Generator) -> list[Candidate]:
        p = self.prompts
        taken = set(self.queried)
        if len(self.history) < self._need():
            return self._random(min(n, self._need() - len(self.history)), rng, taken)
        self._train(max(q.round for q in self.history) + 1)
        ranker = self.ranker
        codes, values = self.codes(self.history), [q.val for q in self.history]
        pool = self._samples(rng, set(taken))
        out: list[Candidate] = []
        if pool:
            score = pool_scores(ranker, p, codes, values, self.codes(pool), rng)
            out = [pool[i] for i in np.argsort(-score, kind="stable")[:n]]
        taken |= {c.key for c in out}
        return out + self._random(n - len(out), rng, taken, "fallback")
