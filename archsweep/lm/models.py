"""The LM registry: configs name a model, never an import path.

- `<family>-<size>` builds a model from scratch from a `transformers` config: families `gpt2` (decoder-only,
  GPT-2-like), `llama` (decoder-only, LLaMA-like: RMSNorm, rotary positions, SwiGLU) and `t5` (text-to-text
  encoder-decoder: a task prompt in, the code string out); sizes `tiny`, `small`, `base`. These use a code-token
  vocabulary (`CodeTokenizer`): one token per code plus pad/bos/eos.
- `pretrained:<name or local path>` loads any compatible causal or seq2seq checkpoint with `from_pretrained` and
  its own tokenizer, which then reads the codes as the numeric string ("12 5 33 7"). `trust_remote_code` is never
  enabled, so a checkpoint cannot run code of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from archsweep.errors import UnknownNameError
from archsweep.lm.text import codes_to_text

FAMILIES = ("gpt2", "llama", "t5")
SIZES = {  # width, layers, heads
    "tiny": (64, 2, 2),
    "small": (128, 4, 4),
    "base": (256, 6, 8),
}
PRETRAINED = "pretrained:"
T5_PROMPT = "generate architecture codes:"


def names() -> tuple[str, ...]:
    return tuple(f"{f}-{s}" for f in FAMILIES for s in SIZES) + (f"{PRETRAINED}<name or path>",)


def check_name(name: str) -> None:
    if name.startswith(PRETRAINED):
        if not name[len(PRETRAINED):].strip():
            raise UnknownNameError("language model", name, names(), hint="name a checkpoint after 'pretrained:'")
        return
    family, _, size = name.partition("-")
    if family not in FAMILIES or size not in SIZES:
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
    """The named model, freshly initialised (`<family>-<size>`) or loaded (`pretrained:...`)."""
    check_name(name)
    if name.startswith(PRETRAINED):
        return _load_pretrained(name, seq_len)
    import transformers as tf

    family, size = name.split("-")
    width, layers, heads = SIZES[size]
    vocab, positions = codebook_size + CodeTokenizer.OFFSET, seq_len + 2
    ids = dict(pad_token_id=CodeTokenizer.PAD, bos_token_id=CodeTokenizer.BOS, eos_token_id=CodeTokenizer.EOS)
    if family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width,
                                                 n_layer=layers, n_head=heads, **ids))
    elif family == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=4 * width,
                                                   num_hidden_layers=layers, num_attention_heads=heads,
                                                   num_key_value_heads=heads, max_position_embeddings=positions,
                                                   **ids))
    else:
        model = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=vocab, d_model=width, d_kv=width // heads,
                                                          d_ff=4 * width, num_layers=layers,
                                                          num_decoder_layers=layers, num_heads=heads,
                                                          decoder_start_token_id=CodeTokenizer.BOS, **ids))
    return LanguageModel(name, model, CodeTokenizer(codebook_size), family == "t5", seq_len)


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
