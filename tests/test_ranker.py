"""lm_ranker's pure parts: the prompt layout, score bins, ranking examples built only from queried cells, and a
ranker that learns a ranking it can be taught."""

from __future__ import annotations

import numpy as np
import pytest

from archsweep.search.ranker import SCORE_BINS, Prompts, Ranker, score_bins, training_examples


def test_prompt_layout():
    p = Prompts(codebook_size=16, seq_len=3, context=2, candidates=2)
    assert (p.score0, p.marker0, p.separator, p.vocabulary) == (16, 26, 28, 29)
    prompt = p.prompt([((1, 2, 3), 0), ((4, 5, 6), 9)], [(7, 8, 9), (10, 11, 12)])
    assert prompt == [1, 2, 3, 16, 4, 5, 6, 25, 28, 26, 7, 8, 9, 27, 10, 11, 12, 28]
    assert len(prompt) == p.length == 18


def test_score_bins_are_rank_tenths():
    assert score_bins(np.arange(20.0)).tolist() == [i // 2 for i in range(20)]
    assert score_bins([5.0, 1.0, 5.0, 3.0]).tolist() == [5, 0, 5, 2]  # ties share the lower rank
    assert score_bins([1.0]).tolist() == [0] and max(score_bins(np.random.default_rng(0).random(7))) < SCORE_BINS


def test_training_examples_answer_the_best_candidate_and_show_the_context_best_last():
    rng = np.random.default_rng(0)
    codes = [(i, i, i) for i in range(12)]
    values = list(rng.permutation(12).astype(float))
    p = Prompts(codebook_size=16, seq_len=3, context=3, candidates=4)
    rows, answers = training_examples(codes, values, p, 50, rng)
    assert rows.shape == (50, p.length)
    for row, answer in zip(rows, answers):
        context = [row[k * 4] for k in range(3)]  # each context cell spells (i, i, i) + score
        assert [values[i] for i in context] == sorted(values[i] for i in context)
        start = 3 * 4 + 1
        candidates = [row[start + j * 4 + 1] for j in range(4)]
        assert [row[start + j * 4] for j in range(4)] == p.markers()
        assert values[candidates[answer]] == max(values[i] for i in candidates)
        assert not set(context) & set(candidates)
    with pytest.raises(ValueError, match="need 7 queried cells, got 5"):
        training_examples(codes[:5], values[:5], p, 1, rng)


@pytest.mark.parametrize("name,floor", [("gpt2-tiny", 0.8), ("llama-tiny", 0.4)])  # 0.945 and 0.575 when written
def test_a_ranker_learns_a_rule_it_can_see(name, floor):
    """Candidates whose first code is largest score best: after training on such examples the ranker picks them
    on fresh prompts well above chance (1 in 4)."""
    rng = np.random.default_rng(1)
    codes = [tuple(rng.integers(0, 16, size=3)) for _ in range(200)]
    values = [c[0] + 0.01 * rng.random() for c in codes]
    p = Prompts(codebook_size=16, seq_len=3, context=2, candidates=4)
    rows, answers = training_examples(codes[:150], values[:150], p, 512, rng)
    ranker = Ranker(name, p, seed=0)
    ranker.fit(rows, answers, steps=300, lr=3e-3, batch=64, seed=0)
    test_rows, test_answers = training_examples(codes[150:], values[150:], p, 200, rng)
    accuracy = float((ranker.scores(test_rows).argmax(1) == test_answers).mean())
    assert accuracy > floor


def test_ranker_config_refuses_what_cannot_rank():
    from archsweep.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'search.lm_ranker.name' is 't5-tiny': the t5 presets did not learn"):
        load_config(overrides=["search.lm_ranker.name=t5-tiny"])
    with pytest.raises(ConfigError, match="'search.lm_ranker.name' is 'pretrained:gpt2'"):
        load_config(overrides=["search.lm_ranker.name=pretrained:gpt2"])
    with pytest.raises(ConfigError, match="'search.lm_ranker.name'.*gpt9"):
        load_config(overrides=["search.lm_ranker.name=gpt9"])
    with pytest.raises(ConfigError, match="'search.lm_ranker.candidates_per_prompt' is 1; allowed: >= 2"):
        load_config(overrides=["search.lm_ranker.candidates_per_prompt=1"])
