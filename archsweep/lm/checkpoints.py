"""Small text checkpoints saved the way a hub model is (`save_pretrained`: config, weights, a subword tokenizer),
so `lm.name=pretrained:<path>` can be tried, tested and benchmarked with no hub access.

The tokenizer is byte-level BPE trained on number strings and the seq2seq prompt, as GPT-2's and most LLMs' are:
the codes "12 5 33 7" become subword pieces ("12", " 5", " 33", " 7") the model has to assemble, not one token
per code as in the presets. The weights are pretrained for a few hundred steps on random number strings (a
decoder-only model as a language model; t5 from its task prompt to the strings), so they know the text format and
their embeddings mean something, as a real pretrained model's do, and fine-tuning (LoRA too) starts from there.
"""

from __future__ import annotations

import random
from pathlib import Path

from archsweep.lm.models import FAMILIES, T5_PROMPT


def train_tokenizer(vocab_size: int = 400, seed: int = 0):
    """Byte-level BPE over the decimal numbers below 10,000 as they occur in code strings, with <pad>, <s>, </s>."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    corpus = [" ".join(str(rng.randrange(10 ** rng.randint(1, 4))) for _ in range(16)) for _ in range(4000)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus + [T5_PROMPT] * 100, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                      pad_token="<pad>")


def number_strings(count: int, rng: random.Random) -> list[str]:
    return [" ".join(str(rng.randrange(10 ** rng.randint(1, 3))) for _ in range(rng.randint(2, 12)))
            for _ in range(count)]


def pretrain(model, tokenizer, seq2seq: bool, steps: int, seed: int) -> None:
    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        texts = number_strings(32, rng)
        if seq2seq:
            batch = tokenizer([T5_PROMPT] * len(texts), return_tensors="pt")
            labels = tokenizer([t + tokenizer.eos_token for t in texts], return_tensors="pt", padding=True)["input_ids"]
        else:
            batch = tokenizer([tokenizer.bos_token + t + tokenizer.eos_token for t in texts], return_tensors="pt",
                              padding=True)
            labels = batch["input_ids"]
        labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def save_small_checkpoint(path: str | Path, family: str = "gpt2", width: int = 64, layers: int = 2, heads: int = 2,
                          pretrain_steps: int = 300, seed: int = 0) -> Path:
    """A `family` model (decoder-only gpt2/llama, encoder-decoder t5) with its tokenizer, saved in `path`."""
    import torch
    import transformers as tf

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}; allowed: {', '.join(FAMILIES)}")
    tokenizer = train_tokenizer(seed=seed)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_positions=128, n_embd=width, n_layer=layers, n_head=heads, **ids))
    elif family == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=width, intermediate_size=4 * width,
                                                   num_hidden_layers=layers, num_attention_heads=heads,
                                                   max_position_embeddings=128, **ids))
    else:
        model = tf.T5ForConditionalGeneration(tf.T5Config(d_model=width, d_kv=width // heads, d_ff=4 * width,
                                                          num_layers=layers, num_heads=heads,
                                                          decoder_start_token_id=tokenizer.pad_token_id, **ids))
    pretrain(model, tokenizer, family == "t5", pretrain_steps, seed)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
