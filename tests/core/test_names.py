"""Tests of hyco_core.names: names compare by ASCII case only."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from hyco_core.names import ascii_lower

KELVIN = "\u212a"


def test_ascii_letters_fold_and_nothing_else_does() -> None:
    assert ascii_lower("RootManage-Key_1.x") == "rootmanage-key_1.x"
    assert ascii_lower(f"{KELVIN}elvin") == f"{KELVIN}elvin"
    assert ascii_lower("\u0130STANBUL") == "\u0130stanbul"
    assert ascii_lower("ÄÖÜ") == "ÄÖÜ"


@given(st.text())
def test_folding_keeps_the_length_and_only_changes_ascii_capitals(text: str) -> None:
    folded = ascii_lower(text)
    assert len(folded) == len(text)
    for before, after in zip(text, folded, strict=True):
        if before in string.ascii_uppercase:
            assert after == before.lower()
        else:
            assert after == before
