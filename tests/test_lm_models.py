"""The LM registry: every family trains and samples on CPU; a locally saved checkpoint loads by path, with and
without LoRA; the presets are the sizes the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from archsweep.errors import UnknownNameError
from archsweep.lm.models import ALIASES, PRESETS, CodeTokenizer, add_lora, build, check_name, load_lora, parameter_count
from archsweep.lm.sampling import IGNORE, collate, log_likelihood, sample

K, L = 16, 4


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return [tuple(torch.randint(0, K, (L,)).tolist()) for _ in range(8)]


def train(lm, data, steps=150, lr=3e-3):
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=lr)
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
    # the log-likelihood a search ranks table cells by: minus the loss on the sequence times its predicted tokens,
    # higher for the sequences it learned than for others, and the same in batches of any size
    unseen = [c for c in ((a, b, c, d) for a in range(K) for b in range(0, K, 5) for c in (1, 7) for d in (0, 9))
              if c not in data][:len(data)]
    scores = log_likelihood(lm, [*data, *unseen])
    for codes, score in zip([data[0], unseen[0]], [scores[0], scores[len(data)]]):
        one = collate(lm, [codes])
        with torch.no_grad():
            loss = float(lm.model(**one).loss)
        assert float(score) == pytest.approx(-loss * int((one["labels"] != IGNORE).sum()), rel=1e-4)
    assert scores[:len(data)].mean() > scores[len(data):].mean() + 3
    assert torch.allclose(log_likelihood(lm, [*data, *unseen], logits_budget=64), scores, atol=1e-4)


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


def test_readme_lm_table_gives_every_preset_with_its_measured_parameter_count():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.-]+)`[^|]*\|[^|]*\|[^|]*\| ([\d,]+) \|", readme, re.MULTILINE))
    assert set(PRESETS) <= set(rows)
    for name in PRESETS:
        assert int(rows[name].replace(",", "")) == parameter_count(name, 64, 8), name


def test_large_presets_take_the_well_known_shapes():
    gpt2 = build("gpt2-124m", 64, 8).model.config
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.n_head) == (768, 12, 12)
    # GPT-2 124M less its 50,257 x 768 token embedding (38.6 M), plus the code vocabulary's 67 x 768
    assert parameter_count("gpt2-124m") == 124_439_808 - 50_257 * 768 - 1024 * 768 + 67 * 768 + 10 * 768
    with torch.device("meta"):
        llama = build("llama-1b", 64, 8).model.config
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads,
            llama.intermediate_size) == (2048, 16, 32, 8, 8192)
    assert 0.95e9 < parameter_count("llama-1b") < 1.0e9


def test_old_names_are_aliases_that_say_so():
    from archsweep.config import load_config

    for old, new in ALIASES.items():
        with pytest.warns(FutureWarning, match=f"lm.name={old} is deprecated: it is {new}"):
            assert load_config(overrides=[f"lm.name={old}"]).lm.name == new
        assert parameter_count(new) == sum(p.numel() for p in build(new, 64, 8).model.parameters())


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_lora_on_a_saved_checkpoint_trains_the_adapters_alone_and_saves_them_small(family, tmp_path, data,
                                                                                  pretrained_checkpoint):
    source = pretrained_checkpoint(family)
    lm = build(f"pretrained:{source}", K, L)
    frozen = {k: v.clone() for k, v in lm.model.state_dict().items()}
    add_lora(lm, rank=8, alpha=16, dropout=0.0, target_modules=[])
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    losses = train(lm, data, steps=100, lr=1e-2)
    assert losses[-1] < 0.85 * losses[0]  # it had the number format already; the adapters learn these codes
    base_now = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                for k, v in lm.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(frozen[k], base_now[k]) for k in frozen)  # the pretrained weights did not move

    lm.model.save_pretrained(tmp_path / "adapter")
    adapter = sum(f.stat().st_size for f in (tmp_path / "adapter").iterdir())
    full = sum(f.stat().st_size for f in source.glob("*.safetensors"))
    assert adapter < 0.25 * full
    again = build(f"pretrained:{source}", K, L)
    load_lora(again, tmp_path / "adapter")
    batch = collate(lm, data)
    lm.model.eval(), again.model.eval()
    with torch.no_grad():
        assert torch.allclose(lm.model(**batch).logits, again.model(**batch).logits, atol=1e-5)
    assert sample(lm, 20, K, seed=3)[1] == sample(again, 20, K, seed=3)[1]


def test_lora_names_the_key_when_no_module_matches(pretrained_checkpoint):
    from archsweep.errors import ArchsweepError

    lm = build(f"pretrained:{pretrained_checkpoint('gpt2')}", K, L)
    with pytest.raises(ArchsweepError, match="lm.lora.target_modules"):
        add_lora(lm, 4, 16, 0.0, ["no_such_module"])


def test_lora_all_linear_adapts_every_linear_layer_but_the_output(pretrained_checkpoint):
    from transformers.pytorch_utils import Conv1D

    lm = build(f"pretrained:{pretrained_checkpoint('gpt2')}", K, L)
    layers = {n for n, m in lm.model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and n != "lm_head"}
    add_lora(lm, 4, 16, 0.0, ["all-linear"])
    adapted = {n.removeprefix("base_model.model.") for n, m in lm.model.named_modules() if hasattr(m, "lora_A")}
    assert layers == adapted and len(layers) == 2 * 4  # c_attn, c_proj, c_fc, mlp.c_proj per block


@pytest.mark.parametrize("source", ["gpt2-tiny", "t5-tiny", "pretrained:gpt2", "pretrained:t5"])
def test_constrained_decoding_makes_every_sample_parse_even_untrained(source, pretrained_checkpoint):
    from archsweep.lm.text import parse_codes

    name = f"pretrained:{pretrained_checkpoint(source.split(':')[1])}" if source.startswith("pretrained") else source
    torch.manual_seed(0)  # the untrained presets' weights: the same whatever ran before
    lm = build(name, K, L)  # presets untrained, checkpoints pretrained on number strings of any length and size
    free_codes, _ = sample(lm, 300, K, seed=0)
    codes, texts = sample(lm, 300, K, seed=0, constrained=True)
    assert sum(c is None for c in free_codes) > 30  # free sampling writes many that do not parse
    assert all(c is not None for c in codes)
    assert all(parse_codes(t, L, K) == c for t, c in zip(texts, codes))
    assert len(set(codes)) > 100  # still sampling, not one forced answer
