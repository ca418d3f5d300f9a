"""Small shared state that must outlive a connection: Live session resumption, ephemeral tokens.

One interface (`Store`), three backends: in memory (the default), a SQLite file under the data
directory (survives restarts) and Redis (shared by several servers).
"""

from pathlib import Path

from flashlive.store.base import Store, Versioned
from flashlive.store.memory import MemoryStore
from flashlive.store.redis import RedisStore, redacted
from flashlive.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "RedisStore", "SqliteStore", "Store", "Versioned", "open_store"]


def open_store(url: str | None, data_dir: Path) -> Store:
    """None or "memory": this process only; "sqlite": data_dir/sessions.sqlite3;
    sqlite:///path (four slashes for an absolute path, as for the ledger); redis://, rediss://
    or unix:// (a Redis socket)."""
    if url is None or url.strip() in ("", "memory"):
        return MemoryStore()
    url = url.strip()
    if url == "sqlite":
        return SqliteStore(data_dir / "sessions.sqlite3")
    if url.startswith("sqlite:///") and url != "sqlite:///":
        return SqliteStore(Path(url.removeprefix("sqlite:///")).expanduser())
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ValueError(
        f"unsupported session store {redacted(url)!r}: use memory, sqlite, sqlite:///path,"
        " redis://host:port/db, rediss://... or unix:///path/to/redis.sock"
    )
