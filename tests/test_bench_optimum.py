"""bench.optimum's count of the cells a predictor ranks above a column's best cell."""

import numpy as np

from bench.optimum import ahead


def test_a_learnable_column_puts_nothing_above_its_best_cell_and_an_isolated_peak_far_below():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(600, 12)).astype(np.float32)
    y = x @ np.linspace(1.0, 2.0, 12)
    y[int(np.argmax(y))] += 0.5  # one best cell, not a tie
    count, unseen, error = ahead(x, y, 300, seed=0, steps=300)
    assert unseen == 300 and count <= 3 and abs(error) < 1.0  # a near-perfect fit of a linear column
    peak = y.copy()
    peak[int(np.argmin(y))] = y.max() + 1.0  # the best cell where its encoding predicts the worst
    count, _, error = ahead(x, peak, 300, seed=0, steps=300)
    assert count > 250 and error < -10


def test_the_best_cell_is_never_among_the_labelled():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = rng.normal(size=50)
    for seed in range(5):
        count, unseen, _ = ahead(x, y, 49, seed=seed, steps=50)  # every other cell labelled
        assert (count, unseen) == (0, 1)
