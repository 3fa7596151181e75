"""The DARTS space: genotype strings, validity rules, the isomorphism-invariant hash, graph form, sampling."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from archsweep.errors import ArchsweepError
from archsweep.spaces import darts as D
from archsweep.spaces import get_space
from archsweep.spaces.cell import Cell

# DARTS (second order)'s published cells, as the paper's genotype string gives them
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, "
            "4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
            "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
            "reduce_concat=[2, 3, 4, 5])")


def pairs_of(cell):
    g = D.genotype(cell)
    return [list(g.normal), list(g.reduce)]


def relabel(pairs, new):
    """The cell block with intermediate node j renamed new[j] (a permutation of 2..5), nodes listed in new order;
    None where that breaks the earlier-node rule."""
    mapping = {0: 0, 1: 1, **new}
    out = [None] * D.NODES
    for j in range(D.NODES):
        node = [(op, mapping[src]) for op, src in pairs[2 * j:2 * j + 2]]
        if any(src >= mapping[2 + j] for _, src in node):
            return None
        out[mapping[2 + j] - 2] = node
    return [p for node in out for p in node]


def test_size_of_the_space():
    # per cell: node j picks 2 of its j earlier nodes, an op of 7 for each: (1 * 3 * 6 * 10) * 7^8
    assert D.NUM_CELLS == 1_037_664_180 ** 2 == 1_076_746_950_455_072_400
    assert get_space("darts").enumerable is False
    with pytest.raises(ArchsweepError, match="darts space .* too many to enumerate"):
        get_space("darts").enumerate()


def test_known_genotype_parses_and_round_trips():
    cell = D.from_genotype(DARTS_V2)
    assert D.why_invalid(cell) is None
    assert D.to_genotype(cell) == DARTS_V2
    # an op vertex reading c_{k-2}/c_{k-1} has one in-edge, one reading a node two; 8 edges into each output
    assert cell.num_vertices == 22 and cell.num_edges == (7 + 2 * 1 + 8) + (5 + 2 * 3 + 8)
    assert D.from_genotype(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")) == cell
    assert D.genotype(cell).normal[7] == ("dil_conv_3x3", 2)


@pytest.mark.parametrize("text, match", [
    ("normal=[]", "not a Genotype"),
    ("Genotype(normal=__import__('os').getcwd(), normal_concat=[2, 3, 4, 5], reduce=[], reduce_concat=[2, 3, 4, 5])",
     "not a literal"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), "concatenates all"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)]", "]"), "7 pairs"),
    (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "fields"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(0, 1000000000000)"), "concatenates all"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(x)"), "no range of integers"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 9)]"), "input node 9; a DARTS cell's nodes are 0..5"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_3x3', -1)]"), "input node -1"),
])
def test_malformed_genotypes_say_what_is_wrong(text, match):
    with pytest.raises(ValueError, match=match):
        D.from_genotype(text)


def test_hash_ignores_the_order_of_a_nodes_inputs():
    rng = np.random.default_rng(1)
    for _ in range(200):
        cell = D.random_cell(rng)
        pairs = pairs_of(cell)
        k, j = int(rng.integers(2)), int(rng.integers(D.NODES))
        pairs[k][2 * j], pairs[k][2 * j + 1] = pairs[k][2 * j + 1], pairs[k][2 * j]
        swapped = D.cell_from_pairs(*pairs)
        assert swapped != cell and D.canonical_hash(swapped) == D.canonical_hash(cell)


def test_hash_ignores_relabelling_the_intermediate_nodes():
    # nodes 2 and 3 of DARTS_V2's normal cell are the same (sep_conv_3x3 of c_{k-2} and c_{k-1}): node 5 reading
    # node 3 instead of node 2 is the same network
    v2 = D.from_genotype(DARTS_V2)
    other = D.from_genotype(DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 3)]"))
    assert other != v2 and D.canonical_hash(other) == D.canonical_hash(v2)
    # every valid relabelling of random cells
    rng = np.random.default_rng(2)
    tried = 0
    for _ in range(100):
        cell = D.random_cell(rng)
        pairs = pairs_of(cell)
        for perm in itertools.permutations(range(2, 6)):
            new = relabel(pairs[0], dict(zip(range(2, 6), perm)))
            if new is not None and perm != (2, 3, 4, 5):
                tried += 1
                assert D.canonical_hash(D.cell_from_pairs(new, pairs[1])) == D.canonical_hash(cell)
    assert tried > 0


def test_hash_tells_different_networks_apart():
    v2 = D.from_genotype(DARTS_V2)
    h = D.canonical_hash(v2)
    # one op changed; one input moved; normal and reduce exchanged
    assert D.canonical_hash(D.from_genotype(DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_5x5', 2)]"))) != h
    assert D.canonical_hash(D.from_genotype(DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 4)]"))) != h
    g = D.genotype(v2)
    assert D.canonical_hash(D.cell_from_pairs(g.reduce, g.normal)) != h
    # the same node expressions, shared differently: nodes 4 and 5 both read node 2 (node 3 feeds only the
    # output), against node 4 reading node 2 and node 5 node 3 (nodes 2 and 3 alike): not isomorphic graphs
    base = [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 1)]
    shared = base + [("max_pool_3x3", 2), ("skip_connect", 0), ("max_pool_3x3", 2), ("avg_pool_3x3", 1)]
    split = base + [("max_pool_3x3", 2), ("skip_connect", 0), ("max_pool_3x3", 3), ("avg_pool_3x3", 1)]
    assert D.canonical_hash(D.cell_from_pairs(shared, g.reduce)) != D.canonical_hash(D.cell_from_pairs(split, g.reduce))
    # 10,000 random cells: no two isomorphic by accident (the space is ~1e18), so 10,000 hashes
    rng = np.random.default_rng(3)
    assert len({D.canonical_hash(D.random_cell(rng)) for _ in range(10_000)}) == 10_000


def test_random_cells_are_valid_and_round_trip_exactly():
    rng = np.random.default_rng(4)
    cells = [D.random_cell(rng) for _ in range(10_000)]
    assert all(D.why_invalid(c) is None for c in cells)
    for cell in cells[:1000]:
        graph = D.to_graph(cell)
        assert graph.adjacency.shape == (22, 22) and not np.tril(graph.adjacency).any()
        assert D.from_graph(graph.adjacency, graph.ops) == cell
        assert D.from_genotype(D.to_genotype(cell)) == cell
    # uniform over each node's input choices: node 5 reads node 4 in 2 of its 5 * 4 ordered pairs' slots
    node5 = np.array([[src for _, src in pairs_of(c)[0][6:8]] for c in cells])
    assert abs((node5 == 4).mean() - 0.2) < 0.01


def test_mutation_gives_a_valid_neighbour():
    rng = np.random.default_rng(5)
    for _ in range(2000):
        cell = D.random_cell(rng)
        child = D.mutate(cell, rng)
        assert D.is_valid(child) and child != cell
        changed = [(a, b) for a, b in zip(itertools.chain(*pairs_of(cell)), itertools.chain(*pairs_of(child))) if a != b]
        assert len(changed) == 1


def _block(pairs):
    return D.cell_from_pairs(pairs, D.genotype(D.from_genotype(DARTS_V2)).reduce)


NORMAL = D.genotype(D.from_genotype(DARTS_V2)).normal


def _edited(edit):
    cell = D.from_genotype(DARTS_V2)
    adj, ops = np.array(cell.adjacency), list(cell.ops)
    edit(adj, ops)
    return Cell(adj, tuple(ops))


@pytest.mark.parametrize("cell, match", [
    (Cell(np.zeros((11, 11)), ("x",) * 11), "11 vertices; a DARTS cell has exactly 22"),
    (_block([("none", 0), *NORMAL[1:]]), "node 2: operation 'none' .*no part of a final genotype"),
    (_block([("conv_7x1_1x7", 0), *NORMAL[1:]]), "node 2: operation 'conv_7x1_1x7'"),
    (_block([*NORMAL[:2], ("sep_conv_3x3", 3), *NORMAL[3:]]), "node 3: input 1 is node 3, not an earlier node"),
    (_block([*NORMAL[:2], ("sep_conv_3x3", 1), *NORMAL[3:]]), "node 3: both inputs are node 1"),
    (_edited(lambda adj, ops: adj.__setitem__((0, 13), 1)), "joins the normal and the reduction cell"),
    (_edited(lambda adj, ops: adj.__setitem__((0, 2), 0)), "normal cell, node 2: input 1 reads no single"),
    (_edited(lambda adj, ops: adj.__setitem__((3, 9), 0)), "normal cell, node 5: input 2 reads no single"),
    (_edited(lambda adj, ops: adj.__setitem__((5, 10), 0)), "output must concatenate"),
    (_edited(lambda adj, ops: adj.__setitem__((0, 10), 1)), "output must concatenate"),
    (_edited(lambda adj, ops: ops.__setitem__(21, "c_{k-1}")), "reduce cell: vertices must"),
])
def test_each_broken_rule_is_named(cell, match):
    reason = D.why_invalid(cell)
    assert reason is not None and re.search(match, reason), reason
    with pytest.raises(Exception, match="invalid DARTS cell"):
        D.canonical_hash(cell)
    if cell.num_vertices == D.NUM_VERTICES and set(cell.ops) <= set(D.OP_VOCAB):  # one the graph form can hold
        assert D.graph_hashes([[D.OP_VOCAB.index(op) for op in cell.ops]], [cell.adjacency]) == [None]


def test_many_graphs_at_once_agree_with_one_by_one():
    """`graph_hashes` (scoring's batch path) against `why_invalid` and `canonical_hash` on valid graphs and on
    graphs with an edge flipped or an operation changed."""
    rng = np.random.default_rng(3)
    ops, adj = D._graph_arrays(*D._random_genotypes(rng, 1500))
    for i in range(0, 1500, 2):
        if i % 4:
            adj[i, rng.integers(22), rng.integers(22)] ^= 1
        else:
            ops[i, rng.integers(22)] = rng.integers(len(D.OP_VOCAB))
    hashes = D.graph_hashes(ops, adj)
    cells = [D.from_graph(a, o) for o, a in zip(ops, adj)]
    assert hashes == [D.canonical_hash(c) if D.is_valid(c) else None for c in cells]
    # every flipped edge breaks a rule; an op vertex given another of the seven operations is still a valid cell
    assert all(hashes[i] is None for i in range(2, 1500, 4)) and 100 < hashes[0:1500:4].count(None) < 375


def test_a_sample_hashed_across_processes_is_the_one_hashed_in_process():
    many = D.sample_dataset(12_000, 3, processes=2)  # above two chunks of 5,000: hashed in a worker pool
    assert many.hex_hashes == D.sample_dataset(12_000, 3, processes=1).hex_hashes
    assert len(set(many.hex_hashes)) == 12_000


def test_sampled_dataset_is_distinct_valid_cached_and_reproducible(tmp_path):
    space = get_space("darts")
    a = space.dataset(3000, seed=7, cache_dir=tmp_path)
    assert (tmp_path / "darts-sample-3000-seed7.npz").is_file()
    b = D.sample_dataset(3000, 7, processes=2)  # built again
    assert a.hex_hashes == b.hex_hashes and np.array_equal(a.edges, b.edges) and np.array_equal(a.ops, b.ops)
    assert len(set(a.hex_hashes)) == 3000
    assert D.sample_dataset(3000, 8).hex_hashes != a.hex_hashes
    for k in range(0, 3000, 101):
        cell = a.cell(k)
        assert D.is_valid(cell) and a.hash(k) == D.canonical_hash(cell)
    ops, adj = space.graph_arrays(a)
    assert ops.shape == (3000, 22) and adj.shape == (3000, 22, 22)
    assert all(D.from_graph(adj[k], ops[k]) == a.cell(k) for k in range(0, 3000, 97))
    assert space.dataset(3000, seed=7, cache_dir=tmp_path).hex_hashes == a.hex_hashes  # from the cache


def test_forward_messages_make_a_vertexs_code_depend_only_on_the_vertices_feeding_it():
    """On DARTS, changing the op on one edge of node 2 (vertex 2) may change only vertex 2, what reads node 2 (the
    dil_conv of node 5: vertex 9) and the output (10) under forward messages; undirected ones reach vertex 0 too."""
    import torch

    from archsweep.models.vqvae import GINEncoder

    changed = DARTS_V2.replace("normal=[('sep_conv_3x3', 0)", "normal=[('avg_pool_3x3', 0)", 1)
    graphs = [D.to_graph(D.from_genotype(g)) for g in (DARTS_V2, changed)]
    ops = torch.from_numpy(np.stack([g.ops for g in graphs]))
    adj = torch.from_numpy(np.stack([g.adjacency for g in graphs])).float()
    torch.manual_seed(0)
    for direction, moved in (("forward", [2, 9, 10]), ("undirected", [0, 2, 3, 4, 5, 6, 7, 8, 9, 10])):
        h = GINEncoder(len(D.OP_VOCAB), D.NUM_VERTICES, 32, 2, direction)(ops, adj)
        differs = ((h[0] - h[1]).abs().amax(-1) > 1e-5).nonzero().flatten().tolist()
        assert differs == moved, direction


def test_auto_model_settings_resolve_to_the_spaces_own():
    from archsweep.config import load_config

    def settings(*overrides):
        v = load_config(overrides=list(overrides)).vqvae
        return v.latent, v.seq_len, v.edge_weight, v.codebook_size, v.gin_layers, v.gin_direction

    assert settings("space=darts") == ("per_node", 22, 10.0, 256, 4, "undirected")
    assert settings("space=nasbench201") == ("pooled", 8, 1.0, 64, 4, "undirected")
    assert settings("space=nasbench101") == ("pooled", 8, 1.0, 64, 4, "undirected")
    assert settings("space=darts", "vqvae.codebook_size=64", "vqvae.latent=pooled", "vqvae.gin_direction=forward") \
        == ("pooled", 16, 10.0, 64, 4, "forward")
