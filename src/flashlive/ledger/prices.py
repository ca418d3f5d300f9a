"""Prices per million tokens, per model, and the cost of usage under them.

The table is read from a TOML or JSON file (`prices_file`); entries there replace the built-in
defaults model by model. A file looks like:

    [models."gemma-3-270m"]
    input = { TEXT = 0.02, AUDIO = 0.10 }   # or one number for every modality
    output = 0.08                             # or a table by modality
    cached_input = 0.005
    cache_storage_per_hour = 0.25             # per million token-hours

The defaults are *not* anyone's real prices: they are small numbers modelled on a Flash-Lite-class
hosted price, scaled down for the 270M model, so that a fresh install reports plausible costs.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashlive.errors import InvalidArgument
from flashlive.ledger.records import UsageRecord
from flashlive.protocol.base import model_id

ANY = "*"  # the model (or modality) every unlisted one falls back to
PER = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens; `input`/`output` are keyed by modality, with "*" as fallback."""

    input: Mapping[str, float] = field(default_factory=dict)
    output: Mapping[str, float] = field(default_factory=dict)
    cached_input: float = 0.0
    cache_storage_per_hour: float = 0.0  # per million token-hours

    def input_rate(self, modality: str) -> float:
        return _rate(self.input, modality)

    def output_rate(self, modality: str) -> float:
        return _rate(self.output, modality)


def _rate(table: Mapping[str, float], modality: str) -> float:
    return table.get(modality.upper(), table.get(ANY, 0.0))


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "qwen2.5-coder-1.5b-instruct": ModelPrice(
        input={ANY: 0.10, "AUDIO": 0.30},
        output={ANY: 0.40},
        cached_input=0.025,
        cache_storage_per_hour=1.00,
    ),
    "gemma-3-270m": ModelPrice(
        input={ANY: 0.02, "AUDIO": 0.06},
        output={ANY: 0.08},
        cached_input=0.005,
        cache_storage_per_hour=0.25,
    ),
    ANY: ModelPrice(
        input={ANY: 0.10, "AUDIO": 0.30},
        output={ANY: 0.40},
        cached_input=0.025,
        cache_storage_per_hour=1.00,
    ),
}


class PriceTable:
    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """The defaults, with the models named in `path` (TOML or JSON) replaced."""
        prices = dict(DEFAULT_PRICES)
        if path is not None:
            prices.update(parse_prices(_read(path), str(path)))
        return cls(prices)

    def price(self, model: str) -> ModelPrice:
        model = model_id(model)
        return self._prices.get(model) or self._prices.get(ANY) or ModelPrice()

    def cost(self, record: UsageRecord) -> float:
        return self.cost_of(
            record.model,
            record.input_tokens,
            record.output_tokens,
            record.cached_tokens,
            record.cache_storage_token_hours,
        )

    def cost_of(
        self,
        model: str,
        input_tokens: Mapping[str, int],
        output_tokens: Mapping[str, int],
        cached_tokens: int,
        storage_token_hours: float,
    ) -> float:
        """USD for these totals. Linear in every count, so sums of records cost the sum."""
        price = self.price(model)
        usd = sum(n * price.input_rate(m) for m, n in input_tokens.items())
        usd += sum(n * price.output_rate(m) for m, n in output_tokens.items())
        # Cached tokens are counted inside the input (as in Gemini's usageMetadata): they are
        # re-priced from the text input rate to the cached rate rather than added again.
        usd += cached_tokens * (price.cached_input - price.input_rate("TEXT"))
        usd += storage_token_hours * price.cache_storage_per_hour
        return usd / PER


def _read(path: Path) -> Any:
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".json":
            return json.loads(raw)
        return tomllib.loads(raw.decode())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the price file {path}: {exc}") from None


def parse_prices(data: Any, where: str = "prices") -> dict[str, ModelPrice]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise InvalidArgument(f"{where}: expected a 'models' table")
    return {
        str(name): _model_price(entry, f"{where}: models.{name}") for name, entry in models.items()
    }


def _model_price(entry: Any, where: str) -> ModelPrice:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{where}: expected a table")
    unknown = set(entry) - {"input", "output", "cached_input", "cache_storage_per_hour"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown keys {sorted(unknown)}")
    return ModelPrice(
        input=_by_modality(entry.get("input", 0.0), f"{where}.input"),
        output=_by_modality(entry.get("output", 0.0), f"{where}.output"),
        cached_input=_number(entry.get("cached_input", 0.0), f"{where}.cached_input"),
        cache_storage_per_hour=_number(
            entry.get("cache_storage_per_hour", 0.0), f"{where}.cache_storage_per_hour"
        ),
    )


def _by_modality(value: Any, where: str) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k).upper(): _number(v, f"{where}.{k}") for k, v in value.items()}
    return {ANY: _number(value, where)}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidArgument(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)
