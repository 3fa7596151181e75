"""Batches for training and batched sampling, the same for every LM family."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from archsweep.lm.models import CodeTokenizer, LanguageModel
from archsweep.lm.text import is_code, parse_codes

IGNORE = -100  # label value the loss skips


def collate(lm: LanguageModel, batch: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Tensors for training on these code sequences (targets padded, padding ignored by the loss); the training
    loops call it once for the whole data set and index rows of the result."""
    targets = [lm.target_ids(codes) for codes in batch]
    width = max(map(len, targets))
    pad = lm.model.config.pad_token_id
    ids = torch.tensor([t + [pad] * (width - len(t)) for t in targets], dtype=torch.long)
    in_target = torch.arange(width) < torch.tensor([len(t) for t in targets])[:, None]
    labels = ids.masked_fill(~in_target, IGNORE)
    if lm.seq2seq:
        prompt = torch.tensor(lm.prompt_ids()).expand(len(batch), -1)
        return {"input_ids": prompt, "attention_mask": torch.ones_like(prompt), "labels": labels}
    labels[:, 0] = IGNORE  # the start token is given, not predicted
    return {"input_ids": ids, "attention_mask": in_target, "labels": labels}


class CodeGrammar:
    """A `transformers` logits processor for constrained decoding: at every step only the tokens that keep the
    text a prefix of exactly L numbers below K, one space apart, stay possible, and end-of-sequence only once the L
    numbers are there. Every sample then parses; whether it decodes into a valid cell is still the model's doing.

    Code-token models: the L steps take code tokens, the next eos. Text tokenizers: each token's text is looked up
    once; the allowed set depends only on (numbers written, the number being written), so it is computed once per
    such state and cached."""

    def __init__(self, lm: LanguageModel, codebook_size: int, prompt_len: int):
        self.L, self.K, self.start = lm.seq_len, codebook_size, prompt_len
        self.eos = lm.model.config.eos_token_id
        vocab = lm.model.get_output_embeddings().weight.shape[0]
        self.code_tokens = not lm.pretrained
        if not self.code_tokens:
            tok = lm.tokenizer
            self.text = [_token_text(tok, t) for t in tok.convert_ids_to_tokens(list(range(vocab)))]
            self.candidates = [i for i, t in enumerate(self.text) if t and set(t) <= set("0123456789 ")
                               and i not in tok.all_special_ids]
        self.vocab, self.masks = vocab, {}

    def _state(self, text: str) -> tuple[int, str] | None:
        """(complete numbers, the number being written) if `text` can still become L numbers below K, one space
        apart (a leading space allowed, as `parse_codes` reads it), else None."""
        if "  " in text:  # one space between numbers keeps every sample within the token budget
            return None
        parts = text.split()
        last = parts.pop() if parts and not text.endswith(" ") else ""
        if len(parts) + bool(last) > self.L or not all(is_code(p, self.K) for p in parts):
            return None
        if last and not is_code(last, self.K):
            return None
        return len(parts), last

    def _mask(self, state: tuple[int, str]) -> torch.Tensor:
        if state not in self.masks:
            done, last = state
            allowed = torch.zeros(self.vocab, dtype=torch.bool)
            prefix = "0 " * done + last  # the numbers already written matter only by their count
            for i in self.candidates:
                allowed[i] = self._state(prefix + self.text[i]) is not None
            allowed[self.eos] = done + bool(last) == self.L
            self.masks[state] = allowed
        return self.masks[state]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.start
        if self.code_tokens:
            allowed = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
            if step < self.L:
                allowed[CodeTokenizer.OFFSET:CodeTokenizer.OFFSET + self.K] = True
            else:
                allowed[self.eos] = True
            return scores.masked_fill(~allowed, float("-inf"))
        rows = []
        for ids in input_ids[:, self.start:].tolist():
            if self.eos in ids:  # finished: generate() pads it from here on
                rows.append(torch.ones(scores.shape[1], dtype=torch.bool))
                continue
            state = self._state("".join(self.text[i] for i in ids))
            rows.append(self._mask(state) if state is not None else torch.ones(scores.shape[1], dtype=torch.bool))
        allowed = torch.stack(rows).to(scores.device)
        return scores.masked_fill(~allowed[:, :scores.shape[1]], float("-inf"))


def _token_text(tokenizer, token: str | None) -> str:
    """What one token adds to the text; SentencePiece's word-start mark ("▁12") is a space before it."""
    if token is None:
        return ""
    text = tokenizer.convert_tokens_to_string([token])
    return " " + text.lstrip(" ") if token.startswith("\u2581") else text


@torch.no_grad()
def sample(lm: LanguageModel, count: int, codebook_size: int, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, batch_size: int = 1000, constrained: bool = False
           ) -> tuple[list[tuple[int, ...] | None], list[str]]:
    """`count` samples: (parsed code sequences, None where the text is not a valid one; the raw texts). With
    `constrained`, decoding follows `CodeGrammar`: every sample is L numbers below K."""
    model = lm.model.eval()
    device = next(model.parameters()).device
    longest = len(lm.target_ids([codebook_size - 1] * lm.seq_len))
    start = torch.tensor([lm.prompt_ids() if lm.seq2seq else lm.target_ids([0] * lm.seq_len)[:1]], device=device)
    codes, texts = [], []
    grammar = CodeGrammar(lm, codebook_size, 1 if lm.seq2seq else start.shape[1]) if constrained else None
    if grammar is not None and lm.pretrained:  # a subword tokenizer may spell a number digit by digit: room for that
        longest = max(longest, lm.seq_len * (len(str(codebook_size - 1)) + 1) + 1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for first in range(0, count, batch_size):
            settings = dict(temperature=temperature, top_k=top_k, top_p=top_p)
            if grammar is not None:
                from transformers import LogitsProcessorList

                settings["logits_processor"] = LogitsProcessorList([grammar])
            for text in _generate(lm, start.expand(min(batch_size, count - first), -1), longest, settings):
                texts.append(text)
                codes.append(parse_codes(text, lm.seq_len, codebook_size))
    return codes, texts


@torch.no_grad()
def log_likelihood(lm: LanguageModel, batch: Sequence[Sequence[int]], logits_budget: int = 2**24) -> torch.Tensor:
    """Each code sequence's log-probability under the LM (natural log, summed over its target tokens, end of
    sequence included): the generator's own ranking of cells it is not asked to sample. Batches hold about
    `logits_budget` logits (64 MB in float32), whatever the vocabulary."""
    model = lm.model.eval()
    device = next(model.parameters()).device
    width = len(lm.target_ids([0] * lm.seq_len)) + 1
    batch_size = max(1, logits_budget // (width * model.get_output_embeddings().weight.shape[0]))
    out = []
    for first in range(0, len(batch), batch_size):
        inputs = {k: v.to(device) for k, v in collate(lm, batch[first:first + batch_size]).items()}
        labels = inputs.pop("labels")
        if lm.seq2seq:  # the decoder reads the labels shifted right; its logits line up with them
            logits = model(**inputs, labels=labels).logits
        else:  # position t predicts token t + 1
            logits, labels = model(**inputs).logits[:, :-1], labels[:, 1:]
        token = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        out.append((token * (labels != IGNORE)).sum(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _generate(lm: LanguageModel, prompt: torch.Tensor, longest: int, settings: dict) -> list[str]:
    """One batch of generated texts (the prompt removed)."""
    model = lm.model
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                         max_new_tokens=longest, pad_token_id=model.config.pad_token_id,
                         eos_token_id=model.config.eos_token_id, **settings)
    new = out if lm.seq2seq else out[:, prompt.shape[1]:]
    return [lm.decode(ids) for ids in new.tolist()]
