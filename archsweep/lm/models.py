"""The LM registry: configs name a model, never an import path.

- A preset (`PRESETS`) builds a model from scratch from a `transformers` config: families `gpt2` (decoder-only,
  GPT-2-like), `llama` (decoder-only, LLaMA-like: RMSNorm, rotary positions, SwiGLU, grouped-query attention)
  and `t5` (text-to-text encoder-decoder: a task prompt in, the code string out). Names carry the parameter count
  at the default codebook (`gpt2-0.8m`), except `gpt2-124m` and `llama-1b`, which take the shapes of GPT-2 124M
  and LLaMA-3.2 1B: with a code-token vocabulary of K + 3 instead of 50,257 or 128,256 tokens they hold 85 M and
  0.97 B parameters. Presets use that vocabulary (`CodeTokenizer`): one token per code plus pad/bos/eos.
- `pretrained:<name or local path>` loads any compatible causal or seq2seq checkpoint with `from_pretrained` and
  its own tokenizer, which then reads the codes as the numeric string ("12 5 33 7"); `lm.lora` fine-tunes it
  through LoRA adapters (`peft`) instead of every weight. `trust_remote_code` is never enabled, so a checkpoint
  cannot run code of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from archsweep.errors import ArchsweepError, UnknownNameError
from archsweep.lm.text import codes_to_text


@dataclass(frozen=True)
class Preset:
    family: str  # gpt2 | llama | t5
    width: int
    layers: int
    heads: int
    kv_heads: int = 0  # llama's grouped-query attention; 0: as many as heads
    ffn: int = 0  # feed-forward width; 0: 4 x width


PRESETS = {
    "gpt2-tiny": Preset("gpt2", 64, 2, 2),
    "gpt2-0.8m": Preset("gpt2", 128, 4, 4),
    "gpt2-5m": Preset("gpt2", 256, 6, 8),
    "gpt2-124m": Preset("gpt2", 768, 12, 12),  # GPT-2 124M's shape
    "llama-tiny": Preset("llama", 64, 2, 2),
    "llama-1m": Preset("llama", 128, 4, 4),
    "llama-6m": Preset("llama", 256, 6, 8),
    "llama-1b": Preset("llama", 2048, 16, 32, kv_heads=8, ffn=8192),  # LLaMA-3.2 1B's shape
    "t5-tiny": Preset("t5", 64, 2, 2),
    "t5-2m": Preset("t5", 128, 4, 4),
    "t5-11m": Preset("t5", 256, 6, 8),
}
# Earlier names, which suggested the well-known GPT-2 / T5 sizes (GPT-2 small is 124 M, T5-base 220 M)
ALIASES = {
    "gpt2-small": "gpt2-0.8m", "gpt2-base": "gpt2-5m",
    "llama-small": "llama-1m", "llama-base": "llama-6m",
    "t5-small": "t5-2m", "t5-base": "t5-11m",
}
FAMILIES = ("gpt2", "llama", "t5")
PRETRAINED = "pretrained:"
T5_PROMPT = "generate architecture codes:"


def names() -> tuple[str, ...]:
    return (*PRESETS, f"{PRETRAINED}<name or path>")


def canonical_name(name: str) -> str:
    """The preset an old name stands for (with a FutureWarning saying so); any other name as it is."""
    if name in ALIASES:
        warnings.warn(f"lm.name={name} is deprecated: it is {ALIASES[name]} (parameters in its name; the old name "
                      f"suggested a well-known model size it is not); use lm.name={ALIASES[name]}", FutureWarning,
                      stacklevel=2)
        return ALIASES[name]
    return name


def check_name(name: str) -> None:
    if name.startswith(PRETRAINED):
        if not name[len(PRETRAINED):].strip():
            raise UnknownNameError("language model", name, names(), hint="name a checkpoint after 'pretrained:'")
        return
    if name not in PRESETS and name not in ALIASES:
        raise UnknownNameError("language model", name, names())


class CodeTokenizer:
    """Ids for from-scratch models: pad 0, bos 1, eos 2, then code c as 3 + c."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3

    def __init__(self, codebook_size: int):
        self.codebook_size = codebook_size
        self.vocab_size = codebook_size + self.OFFSET

    def encode(self, codes: Sequence[int]) -> list[int]:
        return [self.BOS, *(int(c) + self.OFFSET for c in codes), self.EOS]

    def decode(self, ids: Sequence[int]) -> str:
        """The codes an id sequence spells, as text; anything but codes before the first eos reads as '?'."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.EOS:
                break
            if i == self.BOS and not out:
                continue
            out.append(str(i - self.OFFSET) if i >= self.OFFSET else "?")
        return " ".join(out)


@dataclass
class LanguageModel:
    """A model with the tokenizer and the prompt it is trained and sampled with."""

    name: str
    model: object  # a transformers PreTrainedModel
    tokenizer: object  # CodeTokenizer or a transformers tokenizer
    seq2seq: bool
    seq_len: int

    @property
    def pretrained(self) -> bool:
        return self.name.startswith(PRETRAINED)

    def target_ids(self, codes: Sequence[int]) -> list[int]:
        """What the model learns to produce for one cell (decoder-only: after bos; seq2seq: the decoder side)."""
        if not self.pretrained:
            ids = self.tokenizer.encode(codes)
            return ids[1:] if self.seq2seq else ids
        ids = self.tokenizer(codes_to_text(codes), add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if self.seq2seq:
            return [*ids, eos]
        return [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else eos, *ids, eos]

    def prompt_ids(self) -> list[int]:
        """The encoder input of a seq2seq model (a task prompt); decoder-only models start from bos alone."""
        if not self.pretrained:
            return [CodeTokenizer.BOS]
        return self.tokenizer(T5_PROMPT)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        if not self.pretrained:
            return self.tokenizer.decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def build(name: str, codebook_size: int, seq_len: int) -> LanguageModel:
    """The named model, freshly initialised (a preset) or loaded (`pretrained:...`). Under a DeepSpeed ZeRO-3
    config registered with `transformers` (`HfDeepSpeedConfig`), both are built already sharded."""
    check_name(name)
    if name.startswith(PRETRAINED):
        return _load_pretrained(name, seq_len)
    import transformers as tf

    preset = PRESETS[canonical_name(name)]
    family, width, layers, heads = preset.family, preset.width, preset.layers, preset.heads
    ffn = preset.ffn or 4 * width
    vocab, positions = codebook_size + CodeTokenizer.OFFSET, seq_len + 2
    ids = dict(pad_token_id=CodeTokenizer.PAD, bos_token_id=CodeTokenizer.BOS, eos_token_id=CodeTokenizer.EOS)
    if family == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                               n_inner=ffn, **ids)
    elif family == "llama":
        config = tf.LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=ffn,
                                num_hidden_layers=layers, num_attention_heads=heads,
                                num_key_value_heads=preset.kv_heads or heads, max_position_embeddings=positions,
                                **ids)
    else:
        config = tf.T5Config(vocab_size=vocab, d_model=width, d_kv=width // heads, d_ff=ffn, num_layers=layers,
                             num_decoder_layers=layers, num_heads=heads, decoder_start_token_id=CodeTokenizer.BOS,
                             **ids)
    auto = tf.AutoModelForSeq2SeqLM if family == "t5" else tf.AutoModelForCausalLM
    return LanguageModel(name, auto.from_config(config), CodeTokenizer(codebook_size), family == "t5", seq_len)


def parameter_count(name: str, codebook_size: int = 64, seq_len: int = 8) -> int:
    """A preset's parameters, counted on a model built without memory (the `meta` device), so `llama-1b` costs
    nothing; shared (tied) weights count once."""
    import torch

    with torch.device("meta"):
        model = build(name, codebook_size, seq_len).model
    return sum(p.numel() for p in model.parameters())


def add_lora(lm: LanguageModel, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]) -> None:
    """Wrap the model in LoRA adapters (`peft`): only they train; the saved model is the adapters alone."""
    from peft import LoraConfig, get_peft_model

    targets = list(target_modules)
    targets = "all-linear" if targets == ["all-linear"] else targets or None  # peft's wildcard: every linear layer
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        task_type="SEQ_2_SEQ_LM" if lm.seq2seq else "CAUSAL_LM")
    try:
        lm.model = get_peft_model(lm.model, config)
    except ValueError as exc:  # peft knows no default target modules for this model type, or none matched
        raise ArchsweepError(f"'lm.lora.target_modules' {list(target_modules)} for {lm.name}: {exc}. Name the "
                             "model's attention projections, e.g. lm.lora.target_modules=[q_proj,v_proj]") from None


def load_lora(lm: LanguageModel, adapter_dir) -> None:
    """Put trained adapters (saved by `save_pretrained` of a LoRA model) on a freshly loaded base model; they stay
    trainable, so a search can adapt them further."""
    from peft import PeftModel

    lm.model = PeftModel.from_pretrained(lm.model, str(adapter_dir), is_trainable=True)


def _load_pretrained(name: str, seq_len: int) -> LanguageModel:
    import transformers as tf

    source = name[len(PRETRAINED):].strip()
    config = tf.AutoConfig.from_pretrained(source, trust_remote_code=False)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto = tf.AutoModelForSeq2SeqLM if seq2seq else tf.AutoModelForCausalLM
    model = auto.from_pretrained(source, trust_remote_code=False)
    tokenizer = tf.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise UnknownNameError("language model", name, names(), hint=f"{source} has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LanguageModel(name, model, tokenizer, seq2seq, seq_len)
