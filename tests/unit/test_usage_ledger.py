"""The usage ledger without a server: prices and cost, SQLite records and summaries, quotas."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flashlive.errors import InvalidArgument, ResourceExhausted
from flashlive.ledger import (
    ModelPrice,
    PriceTable,
    SqliteLedger,
    UsageRecord,
    hash_key,
    open_ledger,
)
from flashlive.ledger.prices import DEFAULT_PRICES
from flashlive.ledger.records import parse_since
from flashlive.quota import QuotaLimits, Quotas, load_overrides

PRICES = PriceTable(
    {
        "m": ModelPrice(
            input={"*": 1.0, "AUDIO": 3.0},
            output={"*": 4.0},
            cached_input=0.25,
            cache_storage_per_hour=2.0,
        ),
        "*": ModelPrice(input={"*": 10.0}, output={"*": 10.0}),
    }
)
DAY1 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def rec(request_id: str, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "time": DAY1,
        "key_hash": "k1",
        "model": "m",
        "method": "generateContent",
        "input_tokens": {"TEXT": 1000},
        "output_tokens": {"TEXT": 100},
    }
    values.update(fields)
    return UsageRecord(request_id=request_id, **values)  # type: ignore[arg-type]


def test_hash_key_is_short_stable_and_anonymous_for_none() -> None:
    assert hash_key(None) == "anonymous"
    assert hash_key("secret") == hash_key("secret")
    assert len(hash_key("secret")) == 16
    assert hash_key("secret") != hash_key("secret2")


def test_cost_prices_each_modality_output_cache_and_storage() -> None:
    record = rec(
        "a",
        input_tokens={"TEXT": 2_000_000, "AUDIO": 1_000_000},
        output_tokens={"TEXT": 500_000},
        cached_tokens=1_000_000,
        cache_storage_token_hours=3_000_000.0,
    )
    # text 2 M x $1 + audio 1 M x $3 + output 0.5 M x $4, then 1 M cached re-priced from $1 to
    # $0.25, plus 3 M token-hours x $2.
    assert PRICES.cost(record) == pytest.approx(2 + 3 + 2 - 0.75 + 6)


def test_unknown_models_fall_back_to_star_and_models_prefix_is_ignored() -> None:
    assert PRICES.cost(rec("a", model="other")) == pytest.approx(1100 * 10 / 1e6)
    assert PRICES.price("models/m") is PRICES.price("m")


def test_defaults_cover_the_builtin_models_and_a_fallback() -> None:
    assert {"qwen2.5-coder-1.5b-instruct", "gemma-3-270m", "*"} <= set(DEFAULT_PRICES)
    table = PriceTable()
    assert table.cost(rec("a", model="gemma-3-270m")) > 0


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_price_file_replaces_defaults_model_by_model(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prices{suffix}"
    entry = {"input": {"TEXT": 5, "AUDIO": 7}, "output": 9, "cached_input": 1}
    if suffix == ".json":
        path.write_text(json.dumps({"models": {"gemma-3-270m": entry}}))
    else:
        path.write_text(
            '[models."gemma-3-270m"]\ninput = { TEXT = 5, AUDIO = 7 }\n'
            "output = 9\ncached_input = 1\n"
        )
    table = PriceTable.load(path)
    price = table.price("gemma-3-270m")
    assert (price.input_rate("text"), price.input_rate("AUDIO"), price.output_rate("AUDIO")) == (
        5,
        7,
        9,
    )
    assert (
        table.price("qwen2.5-coder-1.5b-instruct") == DEFAULT_PRICES["qwen2.5-coder-1.5b-instruct"]
    )


@pytest.mark.parametrize(
    "text",
    ["not toml [", "[models.m]\ninput = -1\n", "[models.m]\nbogus = 1\n", "x = 1\n"],
)
def test_bad_price_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument):
        PriceTable.load(path)


def test_parse_since_takes_dates_and_times() -> None:
    assert parse_since("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_since("2025-03-01T02:00:00+02:00") == datetime(2025, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidArgument):
        parse_since("yesterday")


# --- SQLite -------------------------------------------------------------------------------


async def fill(ledger: SqliteLedger) -> None:
    await asyncio.gather(
        ledger.record(rec("a")),
        ledger.record(rec("b", key_hash="k2", model="other", output_tokens={"AUDIO": 10})),
        ledger.record(rec("c", time=DAY2, input_tokens={"TEXT": 10, "AUDIO": 5})),
    )


async def test_sqlite_summaries_group_by_day_model_and_key(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3", PRICES)
    await fill(ledger)
    by_day = await ledger.summary(by="day")
    assert [(r.group, r.requests, r.input_tokens, r.output_tokens) for r in by_day] == [
        ("2025-03-01", 2, 2000, 110),
        ("2025-03-02", 1, 15, 100),
    ]
    by_model = {r.group: r for r in await ledger.summary(by="model")}
    assert by_model["m"].requests == 2
    assert by_model["m"].cost_usd == pytest.approx((1000 + 10 + 15 + 400 + 400) / 1e6)
    assert by_model["other"].cost_usd == pytest.approx((1000 + 10) * 10 / 1e6)
    by_key = await ledger.summary(by="key")
    assert [(r.group, r.requests) for r in by_key] == [("k1", 2), ("k2", 1)]
    await ledger.close()


async def test_sqlite_filters_by_key_and_since(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3", PRICES)
    await fill(ledger)
    rows = await ledger.summary(key_hash="k1", by="model")
    assert [(r.group, r.requests) for r in rows] == [("m", 2)]
    rows = await ledger.summary(since=DAY2 - timedelta(hours=1), by="key")
    assert [(r.group, r.requests) for r in rows] == [("k1", 1)]
    await ledger.close()


async def test_a_request_id_is_counted_once(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3", PRICES)
    await asyncio.gather(*(ledger.record(rec("same")) for _ in range(20)))
    await ledger.record(rec("same", input_tokens={"TEXT": 5}))
    rows = await ledger.summary(by="model")
    assert [(r.requests, r.input_tokens, r.output_tokens) for r in rows] == [(1, 1000, 100)]
    await ledger.close()


async def test_records_survive_reopening(tmp_path: Path) -> None:
    ledger = open_ledger(None, tmp_path, PRICES)
    await asyncio.gather(*(ledger.record(rec(f"r{i}")) for i in range(100)))
    await ledger.close()
    again = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", tmp_path / "elsewhere")
    rows = await again.summary(by="key")
    assert [(r.group, r.requests) for r in rows] == [("k1", 100)]
    await again.close()


async def test_bad_group_and_url_are_invalid_arguments(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    with pytest.raises(InvalidArgument):
        await ledger.summary(by="week")  # type: ignore[arg-type]
    await ledger.close()
    with pytest.raises(InvalidArgument):
        open_ledger("mysql://x", tmp_path)


# --- quotas -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refuse_with_a_retry_hint_and_refill() -> None:
    clock = Clock()
    quotas = Quotas(QuotaLimits(requests_per_min=3), clock=clock)
    for _ in range(3):
        quotas.check("k")
    with pytest.raises(ResourceExhausted) as refused:
        quotas.check("k")
    assert refused.value.retry_after_s == pytest.approx(20.0)  # one request per 20 s
    quotas.check("other")  # keys are independent
    clock.now += 20.0
    quotas.check("k")


def test_tokens_per_minute_charge_after_the_call_and_may_run_into_debt() -> None:
    clock = Clock()
    quotas = Quotas(QuotaLimits(tokens_per_min=600), clock=clock)
    quotas.check("k", tokens_estimate=100)
    quotas.charge("k", 900)  # 300 over: 30 s of refill (10 per s) to get back to 0, +0.1 for 1
    with pytest.raises(ResourceExhausted) as refused:
        quotas.check("k")
    assert refused.value.retry_after_s == pytest.approx(30.1)
    assert "tokens per minute" in refused.value.message
    clock.now += 31
    quotas.check("k")


def test_zero_means_unlimited() -> None:
    quotas = Quotas(QuotaLimits())
    for _ in range(1000):
        quotas.check("k", 10**9)
        quotas.charge("k", 10**9)


def test_overrides_are_by_key_and_inherit_unset_limits(tmp_path: Path) -> None:
    path = tmp_path / "quota.toml"
    path.write_text('[keys."vip"]\nrequests_per_min = 1\n')
    default = QuotaLimits(requests_per_min=100, tokens_per_min=50)
    overrides = load_overrides(path, default)
    assert overrides == {hash_key("vip"): QuotaLimits(1, 50)}
    quotas = Quotas(default, overrides, clock=Clock())
    quotas.check(hash_key("vip"))
    with pytest.raises(ResourceExhausted):
        quotas.check(hash_key("vip"))
    quotas.check(hash_key("someone"))
    path.write_text('[keys."vip"]\nrequests_per_min = -1\n')
    with pytest.raises(InvalidArgument):
        load_overrides(path, default)


def test_a_cache_is_billed_for_the_token_hours_it_lived() -> None:
    from datetime import UTC, datetime, timedelta

    from flashlive.api.usage import cache_storage_record
    from flashlive.cache.registry import CacheEntry

    born = datetime(2026, 1, 1, tzinfo=UTC)
    entry = CacheEntry(
        id="0123456789abcdef",
        owner="k1",
        model="m",
        payload={},
        token_count=2000,
        create_time=born,
        update_time=born,
        expire_time=born + timedelta(hours=2),
    )
    deleted = cache_storage_record(entry, born + timedelta(minutes=30))
    assert deleted.cache_storage_token_hours == 1000.0
    assert (deleted.key_hash, deleted.method) == ("k1", "cachedContents.storage")
    # Billed up to its expiry at most, however late the sweeper comes.
    expired = cache_storage_record(entry, born + timedelta(hours=5))
    assert expired.cache_storage_token_hours == 4000.0
