"""A provider's error message, as it may reach the client and the logs: the key masked in every form
a provider might echo it, and the message cut to a bounded size."""

from __future__ import annotations

import pytest

from runner.providers.common import MAX_PROVIDER_MESSAGE, redact

pytestmark = pytest.mark.unit

KEY = "sk-test-secret-1234567890abcdef"


@pytest.mark.parametrize(
    "echoed",
    [
        KEY,
        KEY.upper(),
        "sk%2Dtest%2Dsecret%2D1234567890abcdef".replace("%2D", "-").replace("-", "%2D"),
        KEY[:13],  # a fragment of the key
        KEY[-12:],
    ],
)
def test_the_key_is_masked_however_it_is_echoed(echoed: str) -> None:
    masked = redact(f"Incorrect API key provided: {echoed}.", KEY)
    assert echoed not in masked and echoed.lower() not in masked.lower() and "***" in masked


def test_a_short_key_is_masked_whole_only_and_other_text_is_kept() -> None:
    assert redact("key abcdefgh given, abcd kept", "abcdefgh") == "key *** given, abcd kept"
    assert redact("nothing secret here", KEY) == "nothing secret here"


def test_a_long_message_is_cut() -> None:
    cut = redact("E" * 2_000_000, KEY)
    assert cut == "E" * MAX_PROVIDER_MESSAGE + "… (cut)"
