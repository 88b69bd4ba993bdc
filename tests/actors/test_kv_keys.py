"""Key tokens of the shared buckets (``actors.infra.kv.key_token``): one token per id, the
plain characters kept and every other UTF-8 byte escaped, so two ids never share a key."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.infra.kv import key_token

_TOKEN = re.compile(r"[A-Za-z0-9_=-]+")
_PLAIN = "abcXYZ019_-"


def spec(text: str) -> str:
    """The rule, written out byte by byte."""
    return "".join(ch if re.fullmatch(r"[A-Za-z0-9_-]", ch) else
                   "".join(f"={b:02X}" for b in ch.encode()) for ch in text) or "="


@settings(max_examples=300, derandomize=True)
@given(st.text(alphabet=st.one_of(st.sampled_from(_PLAIN), st.characters()), max_size=24))
def test_a_token_follows_the_rule_and_is_one_valid_token(text: str) -> None:
    tok = key_token(text)
    assert tok == spec(text)
    assert _TOKEN.fullmatch(tok)


@settings(max_examples=300, derandomize=True)
@given(st.text(alphabet=st.sampled_from(_PLAIN + ".=:é"), max_size=8),
       st.text(alphabet=st.sampled_from(_PLAIN + ".=:é"), max_size=8))
def test_two_ids_share_a_token_only_when_they_are_equal(a: str, b: str) -> None:
    assert (key_token(a) == key_token(b)) == (a == b)


def test_plain_ids_are_kept_and_others_escaped() -> None:
    assert key_token("in_123-A") == "in_123-A"
    assert key_token("in.1") == "in=2E1"
    assert key_token("") == "="
    assert key_token("é") == "=C3=A9"
