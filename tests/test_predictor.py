"""Representations and predictors of the representation-space searches (bo, rl): the adjacency + one-hot layout,
DNGO on functions with a known answer, expected improvement's closed form, rank correlations."""

from __future__ import annotations

import numpy as np
import pytest

from archsweep.errors import ArchsweepError
from archsweep.search.encodings import Encoder, adjacency_onehot
from archsweep.search.predictor import DNGO, expected_improvement, rank_correlations
from archsweep.spaces import get_space
from archsweep.spaces import nasbench201 as nb201

NB201 = get_space("nasbench201")


def test_adjacency_onehot_layout_on_a_known_nasbench201_cell():
    cell = NB201.from_arch_str("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    x = Encoder(NB201, "adjacency")([cell])
    assert x.shape == (1, 8 * 7 // 2 + 8 * 7)  # 28 upper-triangle entries + 8 vertices x 7 ops
    upper, onehot = x[0, :28], x[0, 28:].reshape(8, 7)
    assert upper.sum() == nb201.ADJACENCY.sum() == 10  # NAS-Bench-201's fixed wiring, the same for every cell
    assert [nb201.OP_VOCAB[i] for i in onehot.argmax(1)] == list(cell.ops)
    assert (onehot.sum(1) == 1).all()


def test_adjacency_onehot_of_arrays():
    ops = np.array([[0, 2, 1]])
    adj = np.array([[[0, 1, 1], [0, 0, 1], [0, 0, 0]]], dtype=np.uint8)
    assert adjacency_onehot(ops, adj, 3).tolist() == [[1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0]]


def test_encoder_errors_name_the_fix(tmp_path):
    with pytest.raises(ArchsweepError, match="unknown encoding 'graph'; choose one of adjacency, vq, vae"):
        Encoder(NB201, "graph")
    with pytest.raises(ArchsweepError, match="needs a trained model: .*missing.pt is not a file"):
        Encoder(NB201, "vq", tmp_path / "missing.pt")


def test_dngo_ranks_a_smooth_function_and_knows_where_it_has_seen_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(400, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2]
    model = DNGO(seed=0).fit(x[:200], y[:200])
    mean, std = model.predict(x[200:])
    tau, rho = rank_correlations(mean, y[200:])
    assert tau > 0.85 and rho > 0.95
    assert np.abs(mean - y[200:]).mean() < 0.1
    far = model.predict(np.full((1, 3), 6.0))[1][0]  # far outside the training inputs: less certain
    assert far > 1.2 * np.median(std)


def test_dngo_keeps_a_noise_floor_where_the_network_interpolates():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=10)
    model = DNGO(seed=0, min_noise=0.05).fit(x, y)
    assert model.beta <= 1 / 0.05**2 + 1e-9
    assert model.predict(x)[1].min() >= 0.05 * y.std() * (1 - 1e-9)


def test_dngo_needs_two_labels():
    with pytest.raises(ValueError, match="at least 2 labelled cells"):
        DNGO().fit(np.zeros((1, 2)), np.zeros(1))


def test_expected_improvement_closed_form():
    # at mean == best: std * pdf(0); far above: mean - best; far below: ~0
    ei = expected_improvement(np.array([1.0, 5.0, -5.0]), np.array([2.0, 1e-9, 0.1]), best=1.0)
    assert ei[0] == pytest.approx(2.0 / np.sqrt(2 * np.pi))
    assert ei[1] == pytest.approx(4.0)
    assert ei[2] == pytest.approx(0.0, abs=1e-12)


def test_rank_correlations_known_values():
    assert rank_correlations(np.arange(5), np.arange(5) ** 3) == pytest.approx((1.0, 1.0))
    assert rank_correlations(np.arange(5), -np.arange(5.0)) == pytest.approx((-1.0, -1.0))
    tau, rho = rank_correlations(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4]))
    assert tau == pytest.approx(2 / 3) and rho == pytest.approx(0.8)
