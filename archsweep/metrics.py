"""The one definition of every generation metric (DESIGN.md, "Metrics"); tables, logs and W&B read these.

- validity = valid / samples
- uniqueness = distinct canonical hashes among valid / valid
- novelty = valid samples whose canonical hash is not in the training split / valid
- uniqueness_str, novelty_str: the same on the exact decoded string (adjacency + ops, vertex order kept)
- valid_unique = validity x uniqueness; valid_unique_novel = validity x uniqueness x novelty
- reconstruction accuracy: decoded cell has the canonical hash of its input (invalid decodes are misses)
- the ceiling ("a perfect model of the training cells"): the same metrics over as many draws from the training split
  itself (`training_draws`); a generator reads as a fraction of what its data allows
- codebook usage: fraction of codes used; perplexity: exp(entropy) of the code distribution
- accuracy of generated cells (where the benchmark has them): max, mean, and the means of the top 1/5/10 %,
  over the distinct valid cells the table covers; coverage = the fraction of distinct valid cells it covers
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from archsweep.spaces import Cell, SearchSpace

STANDARD_SAMPLES = 10_000
# What `generation_metrics` returns, in the order reports show it.
GENERATION = ("samples", "validity", "uniqueness", "novelty", "uniqueness_str", "novelty_str", "valid_unique",
              "valid_unique_novel")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def generation_metrics(samples: Sequence[Cell | None], space: SearchSpace, train_hashes: Iterable[str] = (),
                       train_strings: Iterable[str] = ()) -> dict[str, float]:
    """Validity, uniqueness and novelty (hash and string variants) of generated cells. A sample that is None
    (model output that does not even parse) is an invalid sample."""
    valid = [cell for cell in samples if cell is not None and space.is_valid(cell)]
    hashes = [space.canonical_hash(cell) for cell in valid]
    strings = [cell.to_string() for cell in valid]
    train_hashes, train_strings = set(train_hashes), set(train_strings)
    validity = _ratio(len(valid), len(samples))
    uniqueness = _ratio(len(set(hashes)), len(valid))
    novelty = _ratio(sum(h not in train_hashes for h in hashes), len(valid))
    return {
        "samples": len(samples),
        "validity": validity,
        "uniqueness": uniqueness,
        "novelty": novelty,
        "uniqueness_str": _ratio(len(set(strings)), len(valid)),
        "novelty_str": _ratio(sum(s not in train_strings for s in strings), len(valid)),
        "valid_unique": validity * uniqueness,
        "valid_unique_novel": validity * uniqueness * novelty,
    }


def training_draws(train_cells: int, samples: int, seed: int) -> np.ndarray:
    """Which training cells (positions in the training split) "a perfect model of the training cells" samples:
    `samples` uniform draws with replacement, as a model that learnt the training distribution exactly would.
    Scored by `generation_metrics`, they are the ceiling every generator's row reads against."""
    return np.random.default_rng([seed, 0x5EED]).integers(0, train_cells, samples)


def reconstruction_accuracy(inputs: Sequence[Cell], decoded: Sequence[Cell], space: SearchSpace) -> float:
    """Fraction of decoded cells that are valid and equal to their input up to the canonical hash."""
    if len(inputs) != len(decoded):
        raise ValueError(f"{len(inputs)} inputs but {len(decoded)} decoded cells")
    hits = 0
    for original, cell in zip(inputs, decoded):
        if cell == original or (space.is_valid(cell) and space.canonical_hash(cell) == space.canonical_hash(original)):
            hits += 1
    return _ratio(hits, len(inputs))


def codebook_stats(codes: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Usage (fraction of the K codes that occur) and perplexity (exp of the code entropy, at most K)."""
    return codebook_stats_from_counts(np.bincount(np.asarray(codes).ravel(), minlength=codebook_size))


def codebook_stats_from_counts(counts: np.ndarray) -> dict[str, float]:
    """`codebook_stats` from the occurrence count of each code (e.g. summed across workers)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / max(counts.sum(), 1.0)
    return {"codebook_usage": float((counts > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def accuracy_stats(samples: Sequence[Cell | None], space: SearchSpace, benchmark, dataset: str | None = None,
                   split: str = "val") -> dict[str, float]:
    """Benchmark accuracy (percent) of the distinct valid generated cells, read without charging a budget."""
    distinct: dict[str, Cell] = {}
    for cell in samples:
        if cell is not None and space.is_valid(cell):
            distinct.setdefault(space.canonical_hash(cell), cell)
    accuracies = []
    for cell in distinct.values():
        if cell in benchmark:
            accuracies.append(benchmark.lookup(benchmark.index_of(cell), dataset, split))
    out = {"coverage": _ratio(len(accuracies), len(distinct)), "covered": len(accuracies)}
    if not accuracies:
        return out
    ranked = np.sort(np.asarray(accuracies))[::-1]
    out |= {"max": float(ranked[0]), "mean": float(ranked.mean())}
    for percent in (1, 5, 10):
        out[f"top{percent}_mean"] = float(ranked[: max(1, int(np.ceil(len(ranked) * percent / 100)))].mean())
    return out


def cell_text(cell: Cell, space: SearchSpace) -> str:
    """A cell as its space writes it: NAS-Bench-201's arch string for a valid cell there, else adjacency + ops."""
    if hasattr(space, "to_arch_str") and space.is_valid(cell):
        return space.to_arch_str(cell)
    return cell.to_string()


def sample_rows(codes: Sequence[Sequence[int] | None], samples: Sequence[Cell | None], space: SearchSpace,
                train_hashes: Iterable[str] = (), benchmark=None, dataset: str | None = None,
                limit: int = 100) -> list[dict]:
    """The first `limit` generated samples one by one, as a table of them shows: the codes (None where the LM's
    text did not parse), the decoded cell, whether it is valid, novel (None where invalid) and its benchmark
    accuracy on `dataset` (None where invalid or where the table has no such cell)."""
    train_hashes = set(train_hashes)
    out = []
    for code, cell in list(zip(codes, samples))[:limit]:
        valid = cell is not None and space.is_valid(cell)
        row = {"codes": None if code is None else " ".join(map(str, code)),
               "cell": None if cell is None else cell_text(cell, space), "valid": valid,
               "novel": space.canonical_hash(cell) not in train_hashes if valid else None, "accuracy": None}
        if valid and benchmark is not None and cell in benchmark:
            row["accuracy"] = float(benchmark.lookup(benchmark.index_of(cell), dataset, "val"))
        out.append(row)
    return out
