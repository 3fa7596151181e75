"""The quantizer, the VQ-VAE and the VAE baseline on CPU, small and fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archsweep.config import load_config
from archsweep.models.quantizer import VectorQuantizer
from archsweep.models.vqvae import build_model, decode_graph
from archsweep.spaces import get_space


def test_nearest_is_the_closest_code():
    vq = VectorQuantizer(32, 4, ema=False)
    z = torch.randn(5, 3, 4)
    brute = ((z[..., None, :] - vq.codebook) ** 2).sum(-1).argmin(-1)
    assert torch.equal(vq.nearest(z), brute)


def test_straight_through_gradient():
    vq = VectorQuantizer(16, 4, beta=0.0, ema=True).eval()
    z = torch.randn(8, 2, 4, requires_grad=True)
    weight = torch.randn(8, 2, 4)
    out = vq(z)
    (out.z_q * weight).sum().backward()
    assert torch.allclose(z.grad, weight)  # the codes' value, the input's gradient
    assert torch.allclose(out.z_q, vq.lookup(out.codes))


def test_commitment_gradient_pulls_inputs_to_their_codes():
    vq = VectorQuantizer(16, 4, beta=0.25, ema=True).eval()
    z = torch.randn(8, 2, 4, requires_grad=True)
    vq(z).loss.backward()
    expected = 0.25 * 2 * (z - vq.lookup(vq.nearest(z))).detach() / z.numel()
    assert torch.allclose(z.grad, expected, atol=1e-7)


def test_ema_codebook_moves_to_the_mean_of_its_inputs():
    vq = VectorQuantizer(2, 2, ema=True, decay=0.5, dead_code_restart=False)
    vq.codebook[:] = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    vq.embed_sum[:] = vq.codebook
    data = torch.tensor([[1.0, 1.0], [1.5, 0.5]]).repeat(32, 1)[:, None, :]  # all nearest to code 0
    for _ in range(20):
        assert (vq(data).codes == 0).all()
    assert torch.allclose(vq.codebook[0], torch.tensor([1.25, 0.75]), atol=1e-3)


def test_gradient_codebook_gets_gradients():
    vq = VectorQuantizer(8, 3, ema=False, dead_code_restart=False)
    vq(torch.randn(4, 2, 3)).loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0


def test_dead_codes_restart_from_the_batch():
    vq = VectorQuantizer(8, 2, ema=True, dead_code_restart=True)
    batch = torch.full((64, 1, 2), 3.0) + 0.1 * torch.randn(64, 1, 2)
    vq(batch)
    assert (vq.codebook - 3.0).abs().max() < 1.0  # every code re-seeded next to the only data there is


def tiny(space: str, *overrides: str):
    cfg = load_config(overrides=[f"space={space}", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=64",
                                 "vqvae.gin_layers=2", *overrides])
    s = get_space(cfg.space)
    return cfg, s, build_model(cfg.vqvae, len(s.op_vocab), s.max_vertices)


def space_batch(space, count: int, seed: int = 0):
    ops, adj = space.graph_arrays(space.enumerate())
    rows = np.random.default_rng(seed).choice(len(ops), size=count, replace=False)
    return torch.from_numpy(ops[rows]), torch.from_numpy(adj[rows])


@pytest.mark.parametrize("seq_len", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("model", ["vqvae", "vae"])
def test_every_sequence_length_trains(seq_len, model):
    torch.manual_seed(0)
    cfg, space, net = tiny("nasbench201", f"vqvae.seq_len={seq_len}", f"vqvae.model={model}")
    ops, adj = space_batch(space, 256)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = net(ops, adj)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.recon_loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    codes = net.encode(ops, adj)
    assert codes.shape[:2] == (256, seq_len)


def test_per_node_latents_on_nasbench101():
    cfg, space, net = tiny("nasbench101", "vqvae.latent=per_node", "vqvae.seq_len=7")
    ops, adj = space_batch(space, 64)
    out = net(ops, adj)
    assert out.codes.shape == (64, 7) and out.op_logits.shape == (64, 7, len(space.op_vocab))
    decoded_ops, decoded_adj = net.decode(out.codes)
    assert decoded_adj.shape == (64, 7, 7) and not torch.tril(decoded_adj).any()  # always upper-triangular


def test_trained_model_round_trips_exactly():
    torch.manual_seed(0)
    cfg, space, net = tiny("nasbench201", "vqvae.seq_len=8", "vqvae.codebook_size=32")
    ops, adj = space_batch(space, 512, seed=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(1500):
        rows = torch.randint(0, 512, (128,))
        out = net(ops[rows], adj[rows])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    net.eval()
    codes = net.encode(ops, adj)
    decoded_ops, decoded_adj = net.decode(codes)
    assert torch.equal(decoded_ops, ops) and torch.equal(decoded_adj, adj)
    assert torch.equal(net.encode(decoded_ops, decoded_adj), codes)  # and back to the same codes


def test_decode_graph_thresholds_the_upper_triangle():
    op_logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    adj_logits = torch.tensor([[[5.0, 5.0], [5.0, -1.0]]])
    ops, adj = decode_graph(op_logits, adj_logits)
    assert ops.tolist() == [[1, 0]] and adj.tolist() == [[[0, 1], [0, 0]]]


def test_decoder_starts_at_the_training_cells_marginals():
    cfg, s, model = tiny("nasbench201")
    ops, adj = space_batch(s, 500)
    model.decoder.start_at_marginals(ops, adj)
    torch.nn.init.zeros_(model.decoder.net[-1].weight)  # the bias alone: what it predicts for any latent
    op_logits, adj_logits = model.decoder(torch.randn(3, cfg.vqvae.seq_len, cfg.vqvae.code_dim))
    op_freq = torch.nn.functional.one_hot(ops, len(s.op_vocab)).float().mean(0)
    assert torch.allclose(op_logits.softmax(-1)[1], op_freq, atol=1e-3)
    edge_freq = adj.float().mean(0).clamp(1e-4, 1 - 1e-4)
    assert torch.allclose(torch.sigmoid(adj_logits[2]), edge_freq, atol=1e-5)
    assert 0.1 < op_freq[1].max() < 0.5  # an op vertex: the marginal checked is not a trivial one


def test_only_per_vertex_latents_start_at_the_marginals():
    from archsweep.models.vqvae import start_training

    _, s, pooled = tiny("nasbench201")
    ops, adj = space_batch(s, 200)
    before = pooled.decoder.net[-1].bias.clone()
    start_training(pooled, ops, adj)
    assert torch.equal(pooled.decoder.net[-1].bias, before)
    _, _, per_node = tiny("nasbench201", "vqvae.latent=per_node")
    start_training(per_node, ops, adj)
    v, o = s.max_vertices, len(s.op_vocab)
    op_freq = torch.nn.functional.one_hot(ops, o).float().mean(0).clamp_min(1e-4)
    assert torch.allclose(per_node.decoder.net[-1].bias[: v * o].view(v, o), op_freq.log(), atol=1e-5)
