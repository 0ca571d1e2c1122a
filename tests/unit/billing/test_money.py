"""Money and pricing, pure: the reference worked examples in our units, the precision rule, no float."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

import billing
from billing.money import MICRO, MoneyError, Price, from_micro, to_micro
from billing.pricing import DEFAULT_KEY, PriceEntry, PriceTable, load_yaml, shipped
from contracts import TokenUsage

pytestmark = pytest.mark.unit

DEFAULT = PriceEntry(to_micro("6"), to_micro("6"))


def table(*layers: dict[str, PriceEntry]) -> PriceTable:
    return PriceTable(shipped(), *layers, default=DEFAULT)


def credits(micro: int) -> Decimal:
    return from_micro(micro)


def test_gpt4o_worked_example() -> None:
    # reference §4.4: gpt-4o 2.5/10, 1000 prompt + 500 completion → 2500 + 5000 = 7500 credits
    price = table().lookup("gpt-4o")
    assert price.key == "gpt-4o"
    assert credits(price.cost(input_tokens=1000, output_tokens=0)) == 2500
    assert credits(price.cost(input_tokens=0, output_tokens=500)) == 5000
    assert credits(price.cost(input_tokens=1000, output_tokens=500)) == Decimal(7500)


def test_claude_structured_worked_example() -> None:
    # reference §4.4: claude-3-5-sonnet in 3 / write 3.75 / read 0.3 / out 15; 100 / 20 / 10, 50 out
    price = table().lookup("claude-3-5-sonnet-20241022")
    assert price.key == "claude-3-5-sonnet"
    prompt = price.cost(input_tokens=100, cache_write_tokens=20, cache_read_tokens=10, output_tokens=0)
    assert credits(prompt) == Decimal(378)  # 300 + 75 + 3
    assert credits(price.cost(input_tokens=0, output_tokens=50)) == 750
    assert credits(price.cost(input_tokens=100, cache_write_tokens=20, cache_read_tokens=10, output_tokens=50)) == 1128


def test_unknown_model_uses_the_default_price() -> None:
    t = table()
    assert t.key_for("some-model-nobody-knows") == DEFAULT_KEY
    price = t.lookup("some-model-nobody-knows")
    assert credits(price.cost(input_tokens=1000, output_tokens=1000)) == 12_000  # 6 + 6 per token × 1000


def test_longest_prefix_wins() -> None:
    t = table()
    assert t.key_for("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert t.key_for("gpt-4o-2024-11-20") == "gpt-4o"
    assert t.key_for("gpt-4.1-nano-2025-04-14") == "gpt-4.1-nano"
    assert t.key_for("gpt-4.1") == "gpt-4.1"
    assert t.key_for("claude-opus-4-5-20251101") == "claude-opus-4-5"
    assert t.key_for("claude-opus-4-1-20250805") == "claude-opus-4"
    assert t.key_for("GPT-5-MINI") == "gpt-5-mini"
    assert t.key_for("openai/gpt-4o") == "gpt-4o"  # a provider-qualified id


def test_exact_key_beats_a_longer_prefix_and_overrides_win() -> None:
    override = {"gpt-4o-mini": PriceEntry(to_micro("1"), to_micro("2"), source="admin")}
    t = table(override)
    assert t.lookup("gpt-4o-mini").input == MICRO
    t.set("gpt-4o-mini-2024", PriceEntry(to_micro("3"), to_micro("4")))
    assert t.key_for("gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024"


def test_a_price_for_the_provider_that_serves_the_model_wins() -> None:
    """``provider/model`` (the agent's provider connection) is the documented key: it beats the bare
    model, exactly and as a prefix, and applies to that provider only."""
    t = table()
    t.set("ollama/llama3", PriceEntry(to_micro("0.5"), to_micro("0.5"), source="admin"))
    t.set("openrouter/gpt-4o", PriceEntry(to_micro("3"), to_micro("12"), source="admin"))
    t.set("anthropic/claude-3.5-sonnet", PriceEntry(to_micro("4"), to_micro("16"), source="admin"))
    assert t.key_for("llama3", "ollama") == "ollama/llama3"
    assert t.key_for("llama3:8b", "ollama") == "ollama/llama3"  # a prefix of the provider's own
    assert t.key_for("llama3", "vllm") == DEFAULT_KEY  # another provider's price is not this one's
    assert t.key_for("gpt-4o", "openrouter") == "openrouter/gpt-4o"
    assert t.key_for("gpt-4o", "openai") == "gpt-4o"
    # A longer unqualified key still names more of the model than a shorter qualified one.
    assert t.key_for("gpt-4o-mini-2024-07-18", "openrouter") == "gpt-4o-mini"
    # A model id with a slash of its own (OpenRouter's): as written, then its last part.
    assert t.key_for("anthropic/claude-3.5-sonnet", "openrouter") == "anthropic/claude-3.5-sonnet"
    assert t.key_for("openai/gpt-4o", "openrouter") == "gpt-4o"
    assert t.lookup("llama3", "ollama").input == to_micro("0.5")


def test_cache_prices_fall_back_to_input() -> None:
    t = table({"m": PriceEntry(to_micro("2"), to_micro("8"))})
    p = t.lookup("m")
    assert p.cache_write == p.cache_read == p.input == 2 * MICRO
    gpt = t.lookup("gpt-4o")
    assert gpt.cache_read == to_micro("1.25") and gpt.cache_write == gpt.input


def test_worst_case_of_gpt4o_is_prompt_at_input_plus_max_output() -> None:
    p = table().lookup("gpt-4o")
    assert credits(p.worst_case(1000, 1000)) == 12_500


def test_one_cost_formula_for_a_calls_tokens_and_for_admissions_worst_case() -> None:
    p = Price("m", input=3, output=11, cache_write=5, cache_read=1)
    tokens = TokenUsage(
        input_tokens=100, cache_write_tokens=20, cache_read_tokens=10, output_tokens=50, reasoning_tokens=40
    )
    assert p.charge(tokens) == p.cost(input_tokens=100, cache_write_tokens=20, cache_read_tokens=10, output_tokens=50)
    assert p.charge(tokens) == 100 * 3 + 20 * 5 + 10 * 1 + 50 * 11  # reasoning is inside the output tokens
    # the prompt at its dearest price, here the cache write
    assert p.worst_case(1000, 7) == p.cost(input_tokens=0, cache_write_tokens=1000, output_tokens=7) == 5077


def test_worst_case_covers_a_prompt_billed_as_cache_writes() -> None:
    """Anthropic bills a cache write at 1.25x input: a prompt written whole to the cache costs more
    than the same prompt read as input, and the reservation must cover it."""
    p = Price("m", input=to_micro("5"), output=to_micro("25"), cache_write=to_micro("6.25"), cache_read=to_micro("0.5"))
    reserved = p.worst_case(1024, 10)
    assert credits(reserved) == Decimal("6650")  # 1,024 x 6.25 + 10 x 25
    for split in [(1024, 0, 0), (0, 1024, 0), (0, 0, 1024), (500, 500, 24)]:
        uncached, written, read = split
        billed = p.cost(input_tokens=uncached, cache_write_tokens=written, cache_read_tokens=read, output_tokens=10)
        assert billed <= reserved


def test_worst_case_covers_a_cache_read_priced_above_input() -> None:
    p = Price("m", input=2, output=3, cache_write=2, cache_read=7)  # odd, but a price an admin may set
    assert p.worst_case(100, 1) == 100 * 7 + 3


@pytest.mark.parametrize("value", ["0.000001", "2.5", "1.123456", 7, "0", "-3.25"])
def test_six_decimals_are_exact(value: object) -> None:
    micro = to_micro(value)  # type: ignore[arg-type]
    assert isinstance(micro, int)
    assert from_micro(micro) == Decimal(str(value))


@pytest.mark.parametrize("value", ["0.0000001", "1.1234567", "1e-7", "abc", "NaN", "Infinity", 0.5])
def test_finer_than_six_decimals_or_float_refused(value: object) -> None:
    with pytest.raises(MoneyError):
        to_micro(value)  # type: ignore[arg-type]


def test_every_cost_is_an_exact_integer_of_micro_credits() -> None:
    p = Price(key="k", input=1, output=999_999, cache_write=3, cache_read=7)  # the finest prices there are
    cost = p.cost(input_tokens=123_457, output_tokens=98_765, cache_write_tokens=11, cache_read_tokens=13)
    assert isinstance(cost, int)
    assert cost == 123_457 + 98_765 * 999_999 + 33 + 91


def test_from_micro_writes_plain_decimals() -> None:
    assert str(from_micro(20_000 * MICRO)) == "20000"
    assert str(from_micro(-12_500_000)) == "-12.5"
    assert str(from_micro(1)) == "0.000001"


def test_yaml_prices_are_read_exactly() -> None:
    entries = load_yaml("models:\n  a: {input: 0.15, output: '0.6', cache_read: 0.075}\n", "file")
    assert entries["a"].input == 150_000 and entries["a"].output == 600_000 and entries["a"].cache_read == 75_000
    with pytest.raises(MoneyError):
        load_yaml("models:\n  a: {input: 0.0000001, output: 1}\n", "file")


def test_shipped_table_covers_the_current_models() -> None:
    t = table()
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "claude-opus-4-1",
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022",
    ):
        assert t.key_for(model) != DEFAULT_KEY, model
        assert t.lookup(model).input > 0 and t.lookup(model).output > 0


def test_no_float_on_the_money_path() -> None:
    """money, pricing and the ledger never build or annotate a float (only to refuse one)."""
    root = Path(billing.__file__).parent
    paths = [root / "money.py", root / "pricing.py", *sorted((root / "ledger").glob("*.py"))]
    assert len(paths) > 5
    for path in paths:
        name = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant):
                assert not isinstance(node.value, float), f"{name}:{node.lineno}: float literal"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "float", f"{name}:{node.lineno}: float()"
            if isinstance(node, ast.Name) and node.id in {"Float", "Numeric", "REAL"}:
                raise AssertionError(f"{name}:{node.lineno}: {node.id}")


def test_a_lookup_is_remembered_until_a_price_is_set() -> None:
    t = table()
    assert t.key_for("llama3", "ollama") == DEFAULT_KEY
    t.set("ollama/llama3", PriceEntry(to_micro("0.5"), to_micro("0.5"), source="admin"))
    assert t.key_for("llama3", "ollama") == "ollama/llama3"  # not the remembered default
