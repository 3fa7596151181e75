"""Codes <-> text: exact round trips, and no generated string can crash the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archsweep.lm.text import codes_to_text, parse_codes


@given(st.integers(2, 1024).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), min_size=1,
                                                                              max_size=32))))
def test_round_trip(k_and_codes):
    k, codes = k_and_codes
    text = codes_to_text(codes)
    assert parse_codes(text, len(codes), k) == tuple(codes)


@given(st.text(), st.integers(1, 32), st.integers(2, 1024))
def test_any_text_parses_or_is_invalid(text, seq_len, k):
    parsed = parse_codes(text, seq_len, k)
    assert parsed is None or (len(parsed) == seq_len and all(0 <= c < k for c in parsed))


@pytest.mark.parametrize("text", [
    "1 2 3",            # too short
    "1 2 3 4 5",        # too long
    "1 2 3 64",         # out of range for K = 64
    "1 2 3 -4",         # sign
    "1 2 3 04",         # leading zero: never written, so never accepted
    "1 2 3 4x",         # junk
    "1 2 3 ４",          # a non-ASCII digit
    "1 2 3 99999999999999999999",
    "",
    None,
])
def test_malformed_samples_are_invalid(text):
    assert parse_codes(text, 4, 64) is None


def test_whitespace_is_forgiven():
    assert parse_codes("  1\t2\n3  4 ", 4, 64) == (1, 2, 3, 4)
