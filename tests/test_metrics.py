"""The one definition of each generation metric, pinned on hand-made sample sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from archsweep import metrics as M
from archsweep.spaces import Cell, get_space

nb101 = get_space("nasbench101")
nb201 = get_space("nasbench201")
C3, C1 = "conv3x3-bn-relu", "conv1x1-bn-relu"

A = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"])
A_PADDED = Cell([[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], ["input", C3, "pad", "output"])  # == A
B = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C1, "output"])
INVALID = Cell([[0, 0], [0, 0]], ["input", "output"])  # no path


def test_generation_metrics_known_answers():
    samples = [A, A_PADDED, B, B, INVALID]
    got = M.generation_metrics(samples, nb101, train_hashes=[nb101.canonical_hash(B)],
                               train_strings=[B.to_string()])
    assert got["samples"] == 5
    assert got["validity"] == pytest.approx(4 / 5)
    assert got["uniqueness"] == pytest.approx(2 / 4)  # A and A_PADDED are one cell; B twice
    assert got["novelty"] == pytest.approx(2 / 4)  # both As are new; both Bs were trained on
    assert got["uniqueness_str"] == pytest.approx(3 / 4)  # as decoded, A and A_PADDED are different strings
    assert got["novelty_str"] == pytest.approx(2 / 4)
    assert got["valid_unique"] == pytest.approx(4 / 5 * 2 / 4)
    assert got["valid_unique_novel"] == pytest.approx(4 / 5 * 2 / 4 * 2 / 4)


def test_generation_metrics_of_nothing_valid():
    got = M.generation_metrics([INVALID, INVALID], nb101)
    assert got["validity"] == 0 and got["uniqueness"] == 0 and got["valid_unique"] == 0


def test_nb201_isomorphic_samples_count_once():
    a = nb201.from_arch_str("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|")
    b = nb201.from_arch_str("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    got = M.generation_metrics([a, b], nb201)
    assert got["uniqueness"] == 0.5 and got["uniqueness_str"] == 1.0


def test_reconstruction_accuracy():
    assert M.reconstruction_accuracy([A, A, B, B], [A_PADDED, B, B, INVALID], nb101) == pytest.approx(2 / 4)
    with pytest.raises(ValueError):
        M.reconstruction_accuracy([A], [], nb101)


def test_codebook_stats():
    uniform = M.codebook_stats(np.arange(8).repeat(3), 8)
    assert uniform == {"codebook_usage": 1.0, "perplexity": pytest.approx(8.0)}
    half = M.codebook_stats(np.array([[0, 1], [0, 1]]), 4)
    assert half == {"codebook_usage": 0.5, "perplexity": pytest.approx(2.0)}
    assert M.codebook_stats(np.zeros(10, dtype=int), 16)["perplexity"] == pytest.approx(1.0)


def test_unparseable_samples_are_invalid():
    got = M.generation_metrics([A, None, None, B], nb101)
    assert got["validity"] == 0.5 and got["uniqueness"] == 1.0


def test_accuracy_stats_on_nb201(data_dir):
    from archsweep.benchmarks import load_benchmark

    bench = load_benchmark("nasbench201", data_dir)
    best, worst = bench.cell(6111), bench.cell(int(np.nanargmin(bench.accuracy[("cifar10", "val", 200)])))
    got = M.accuracy_stats([best, best, worst, None, INVALID], nb201, bench, "cifar10", "val")
    assert got["coverage"] == 1.0 and got["covered"] == 2
    assert got["max"] == pytest.approx(bench.best("cifar10", "val")[1])
    assert got["top1_mean"] == got["max"]  # the top 1 % of two cells is the best one
    assert got["mean"] == pytest.approx((got["max"] + bench.lookup(bench.index_of(worst), "cifar10", "val")) / 2)
    assert bench.budget.queries == 0  # reading accuracies for a report costs no search budget


def test_accuracy_stats_coverage_of_the_nb101_subset(data_dir, nb101_cells):
    from archsweep.benchmarks import load_benchmark

    bench = load_benchmark("nasbench101", data_dir)
    inside = bench.cell(0)
    outside = next(nb101_cells.cell(k) for k in range(len(nb101_cells)) if nb101_cells.cell(k) not in bench)
    got = M.accuracy_stats([inside, outside], nb101, bench)
    assert got["coverage"] == 0.5 and got["max"] == bench.lookup(0)


def test_lm_samples_that_never_parse_are_all_invalid():
    from archsweep.decoding import generated_cells

    cells = generated_cells([None, None], vqvae_model=None, space=nb201)
    assert cells == [None, None]
    assert M.generation_metrics(cells, nb201)["validity"] == 0


def test_a_cells_string_form_is_its_rows_and_ops():
    assert Cell(np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]]), ("in", "conv", "out")).to_string() == \
        "3:011001000:in,conv,out"
    assert Cell(np.array([[0, 12], [0, 0]]), ("a", "b")).to_string() == "2:01200:a,b"  # entries past one digit too


def test_the_ceiling_is_the_expected_share_of_distinct_cells_in_draws_from_the_training_split():
    """NAS-Bench-201's training split (90 % of its 15,625 cells, seed 0) drawn 10,000 times: the distinct
    isomorphism classes found are what the draws' expectation, sum over classes of 1 - (1 - n_c / N)^S, says."""
    from archsweep.config import load_config
    from archsweep.data import training_split
    from archsweep.stages.lm import ceiling

    split = training_split(load_config(overrides=["space=nasbench201"]))
    index = split.index
    got = ceiling(nb201, split, 10_000, seed=0)
    assert got == ceiling(nb201, split, 10_000, seed=0)  # seeded
    assert got["samples"] == 10_000 and got["validity"] == 1.0 and got["novelty"] == 0.0
    _, sizes = np.unique([split.enum.hash(int(i)) for i in index], return_counts=True)
    expected = (1 - (1 - sizes / len(index)) ** 10_000).sum() / 10_000
    assert got["valid_unique"] == pytest.approx(expected, abs=0.005)
    assert 0.34 < got["valid_unique"] < 0.37  # the 35.6-36.2 % over all 15,625 cells, a little below
    assert M.training_draws(100, 5, 1).tolist() == M.training_draws(100, 5, 1).tolist()
    assert M.training_draws(100, 1000, 1).max() < 100
