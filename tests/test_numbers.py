"""Telephone numbers to E.164 integer keys without phonenumbers."""

from __future__ import annotations

import pytest

from proxy.sip import e164_key


@pytest.mark.parametrize(
    "text",
    [
        "+12125550142",
        "12125550142",
        "2125550142",
        "+1-212-555-0142",
        "(212) 555-0142",
        "+1.212.555.0142",
        "+12125550142;npdi",
        "%2B12125550142",
    ],
)
def test_nanp_forms_give_the_same_key(text: str) -> None:
    assert e164_key(text) == 12125550142


@pytest.mark.parametrize(
    "text", ["911", "", "anonymous", "212555014", "22125550142", "+", "+0123456789", "212555014x"]
)
def test_non_numbers_give_none(text: str) -> None:
    assert e164_key(text) is None


def test_international_e164() -> None:
    assert e164_key("+442071838750") == 442071838750
