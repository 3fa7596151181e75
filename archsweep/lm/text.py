"""Code sequences as text, and back.

A cell's L codes are written as decimal numbers separated by single spaces ("12 5 33 7"), the form both the
from-scratch code-token models and pretrained text models are trained on. Parsing what a model generates is
strict and never raises: anything but exactly L canonical numbers below K (extra or missing numbers, leading
zeros, signs, other characters, non-ASCII digits) is an invalid sample, returned as None and counted as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBER = re.compile(r"0|[1-9][0-9]*")


def codes_to_text(codes: Sequence[int]) -> str:
    return " ".join(str(int(c)) for c in codes)


def is_code(token: str, codebook_size: int) -> bool:
    """Whether `token` is one code as written: a canonical decimal number (ASCII digits, no sign, no leading zero)
    below `codebook_size`."""
    return len(token) <= len(str(codebook_size - 1)) and bool(_NUMBER.fullmatch(token)) \
        and int(token) < codebook_size


def parse_codes(text: str, seq_len: int, codebook_size: int) -> tuple[int, ...] | None:
    """The L codes written in `text`, or None when it is not exactly `seq_len` numbers in [0, codebook_size)."""
    if not isinstance(text, str):
        return None
    tokens = text.split()
    if len(tokens) != seq_len or not all(is_code(token, codebook_size) for token in tokens):
        return None
    return tuple(int(token) for token in tokens)
