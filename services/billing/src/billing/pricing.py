"""The price table: shipped defaults, an operator's file, admin overrides; most specific key wins.

Lookup for a model id as a provider connection serves it (case-insensitive): an exact key first
(``provider/model``, then ``model``), then the longest key that the model id starts with
(``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, not ``gpt-4o``), then the default price
(:meth:`PriceTable.key_for`).
Pure: the caller loads the layers and hands them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .money import Price, to_micro

DEFAULT_KEY = "default"
#: Lookups remembered at most (models and providers are bounded by what agents name).
FOUND_KEPT = 4096


@dataclass(frozen=True)
class PriceEntry:
    """USD/1M prices as micro-units; ``None`` cache prices fall back to the input price."""

    input: int
    output: int
    cache_write: int | None = None
    cache_read: int | None = None
    source: str = "default"

    @classmethod
    def parse(cls, raw: dict[str, Any], source: str) -> PriceEntry:
        def opt(name: str) -> int | None:
            v = raw.get(name)
            return None if v is None else to_micro(_no_float(v, name), what=name)

        return cls(
            input=to_micro(_no_float(raw["input"], "input"), what="input"),
            output=to_micro(_no_float(raw["output"], "output"), what="output"),
            cache_write=opt("cache_write"),
            cache_read=opt("cache_read"),
            source=source,
        )

    def price(self, key: str) -> Price:
        return Price(
            key=key,
            input=self.input,
            output=self.output,
            cache_write=self.input if self.cache_write is None else self.cache_write,
            cache_read=self.input if self.cache_read is None else self.cache_read,
        )


def _no_float(value: Any, name: str) -> Any:
    # YAML reads 2.5 as a float; its repr is the decimal the operator wrote, so go through str().
    return str(value) if isinstance(value, float) else value


def load_yaml(text: str, source: str) -> dict[str, PriceEntry]:
    data = yaml.safe_load(text) or {}
    models = data.get("models", data)
    return {str(k).lower(): PriceEntry.parse(v, source) for k, v in models.items()}


def shipped() -> dict[str, PriceEntry]:
    return load_yaml(resources.files("billing").joinpath("prices.yaml").read_text(), "default")


def from_file(path: str | Path) -> dict[str, PriceEntry]:
    return load_yaml(Path(path).read_text(), "file")


class PriceTable:
    """Layers merged in order (later wins per key): shipped defaults, the operator's file, admin overrides."""

    def __init__(self, *layers: dict[str, PriceEntry], default: PriceEntry) -> None:
        self.entries: dict[str, PriceEntry] = {}
        for layer in layers:
            self.entries.update(layer)
        self.default = default
        self._prefixes = sorted(self.entries, key=len, reverse=True)
        #: Each (model, provider)'s key as found, until a price is set: a lookup per admission is then
        #: one dict read, not a walk over every key.
        self._found: dict[tuple[str, str], str] = {}

    def set(self, key: str, entry: PriceEntry) -> None:
        self.entries[key.lower()] = entry
        self._prefixes = sorted(self.entries, key=len, reverse=True)
        self._found.clear()

    def key_for(self, model: str, provider: str = "") -> str:
        """The key that prices ``model`` as the agent's ``provider`` (its connection's name) serves it.

        An exact key first: ``provider/model``, then ``model``, then the model's last part (a
        provider-qualified id such as OpenRouter's ``anthropic/claude-3.5-sonnet``). Else the key that
        names the longest start of the model (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, not
        ``gpt-4o``), a ``provider/…`` key before an unqualified one of the same length. Else the default.
        """
        found = self._found.get((model, provider))
        if found is not None:
            return found
        found = self._found[(model, provider)] = self._key_for(model.lower(), provider.lower())
        if len(self._found) > FOUND_KEPT:  # ids from the outside world: the memory stays bounded
            self._found.clear()
        return found

    def _key_for(self, m: str, provider: str) -> str:
        qualifier = f"{provider}/" if provider else ""
        names = (m, m.rsplit("/", 1)[-1])
        for key in (qualifier + m if qualifier else "", *names):
            if key in self.entries:
                return key
        best, best_len = DEFAULT_KEY, -1
        for key in self._prefixes:  # longest first
            if qualifier and key.startswith(qualifier):
                part = key[len(qualifier) :]
                if len(part) > best_len and m.startswith(part):
                    best, best_len = key, len(part)
            elif len(key) > best_len and any(n.startswith(key) for n in names):
                best, best_len = key, len(key)
        return best

    def lookup(self, model: str, provider: str = "") -> Price:
        key = self.key_for(model, provider)
        entry = self.entries.get(key, self.default)
        return entry.price(key)
