"""The LM registry: every family trains and samples on CPU; a locally saved checkpoint loads by path."""

from __future__ import annotations

import pytest
import torch

from archsweep.errors import UnknownNameError
from archsweep.lm.models import CodeTokenizer, build, check_name
from archsweep.lm.sampling import collate, sample

K, L = 16, 4


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return [tuple(torch.randint(0, K, (L,)).tolist()) for _ in range(8)]


def train(lm, data, steps=150):
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=3e-3)
    lm.model.train()
    losses = []
    for _ in range(steps):
        loss = lm.model(**collate(lm, data)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "t5-tiny"])
def test_family_learns_and_samples(name, data):
    lm = build(name, K, L)
    losses = train(lm, data)
    assert losses[-1] < 0.3 * losses[0]
    codes, texts = sample(lm, 200, K, seed=0)
    valid = [c for c in codes if c is not None]
    assert len(codes) == len(texts) == 200
    assert len(valid) >= 150  # it learned the format
    assert sum(c in data for c in valid) >= 0.9 * len(valid)  # and the sequences it saw
    assert sample(lm, 50, K, seed=1)[1] == sample(lm, 50, K, seed=1)[1]  # seeded


def test_pretrained_checkpoint_from_a_local_path(tmp_path, data):
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{str(i): i + 3 for i in range(K)}, "<unk>": K + 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>").save_pretrained(tmp_path)
    tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(tmp_path)
    lm = build(f"pretrained:{tmp_path}", K, L)
    assert lm.pretrained and not lm.seq2seq
    assert lm.target_ids((1, 2, 3, 4)) == [1, 4, 5, 6, 7, 2]  # its own tokenizer reads the numeric string
    losses = train(lm, data)
    assert losses[-1] < 0.3 * losses[0]
    codes, _ = sample(lm, 100, K, seed=0)
    assert sum(c is not None for c in codes) >= 75


def test_code_tokenizer():
    tok = CodeTokenizer(8)
    assert tok.encode([0, 7, 3]) == [1, 3, 10, 6, 2]
    assert tok.decode([1, 3, 10, 6, 2, 5]) == "0 7 3"  # stops at eos
    assert tok.decode([1, 3, 0, 6, 2]) == "0 ? 3"  # a special inside reads as garbage: an invalid sample


@pytest.mark.parametrize("name", ["gpt3-tiny", "gpt2-huge", "pretrained:", "llama"])
def test_unknown_models(name):
    with pytest.raises(UnknownNameError, match="language model"):
        check_name(name)
