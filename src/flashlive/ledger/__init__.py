"""The usage ledger: one record per billable call, prices per million tokens, summaries."""

from flashlive.ledger.prices import ModelPrice, PriceTable
from flashlive.ledger.records import UsageRecord, UsageRow, hash_key
from flashlive.ledger.store import Ledger, PostgresLedger, SqliteLedger, open_ledger

__all__ = [
    "Ledger",
    "ModelPrice",
    "PostgresLedger",
    "PriceTable",
    "SqliteLedger",
    "UsageRecord",
    "UsageRow",
    "hash_key",
    "open_ledger",
]
