"""Batches for training and batched sampling, the same for every LM family."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from archsweep.lm.models import LanguageModel
from archsweep.lm.text import parse_codes

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


@torch.no_grad()
def sample(lm: LanguageModel, count: int, codebook_size: int, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, batch_size: int = 1000) -> tuple[list[tuple[int, ...] | None], list[str]]:
    """`count` samples: (parsed code sequences, None where the text is not a valid one; the raw texts)."""
    model = lm.model.eval()
    device = next(model.parameters()).device
    longest = len(lm.target_ids([codebook_size - 1] * lm.seq_len))
    start = torch.tensor([lm.prompt_ids() if lm.seq2seq else lm.target_ids([0] * lm.seq_len)[:1]], device=device)
    codes, texts = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for first in range(0, count, batch_size):
            for text in _generate(lm, start.expand(min(batch_size, count - first), -1), longest,
                                  dict(temperature=temperature, top_k=top_k, top_p=top_p)):
                texts.append(text)
                codes.append(parse_codes(text, lm.seq_len, codebook_size))
    return codes, texts


def _generate(lm: LanguageModel, prompt: torch.Tensor, longest: int, settings: dict) -> list[str]:
    """One batch of generated texts (the prompt removed)."""
    model = lm.model
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                         max_new_tokens=longest, pad_token_id=model.config.pad_token_id,
                         eos_token_id=model.config.eos_token_id, **settings)
    new = out if lm.seq2seq else out[:, prompt.shape[1]:]
    return [lm.decode(ids) for ids in new.tolist()]
