"""Saved engine states for token prefixes: RAM first, spilled to disk, restored on a hit.

A cached context of 2,000 tokens costs the small CPU model ~30 s to compute and ~60 MB to keep,
so states live in RAM under a byte budget (least recently used out first) and, when a spill
directory is given, move to disk instead of vanishing. A spilled file carries a checksum of its
state: a file cut short by a crash is deleted on load, never restored into the engine.

Not thread-safe: the generation service calls it from one event loop, and the disk I/O of
`get`/`put` happens in the caller's worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from flashlive.engine import PrefixState, common_prefix

log = logging.getLogger(__name__)

_MAGIC = b"FLKV1\n"


class PrefixStore:
    def __init__(
        self,
        *,
        ram_bytes: int = 1 << 30,
        spill_dir: Path | None = None,
        disk_bytes: int = 4 << 30,
    ) -> None:
        self._ram: OrderedDict[str, PrefixState] = OrderedDict()
        self._ram_bytes = ram_bytes
        self._spill_dir = spill_dir
        self._disk_bytes = disk_bytes
        self._lock = threading.Lock()  # get/put run in worker threads
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)

    @property
    def ram_used(self) -> int:
        with self._lock:
            return sum(state.nbytes for state in self._ram.values())

    def put(self, key: str, state: PrefixState) -> None:
        with self._lock:
            self._ram[key] = state
            self._ram.move_to_end(key)
            evicted = self._evict()
        for old_key, old in evicted:
            self._spill(old_key, old)

    def get(self, key: str) -> PrefixState | None:
        with self._lock:
            state = self._ram.get(key)
            if state is not None:
                self._ram.move_to_end(key)
                return state
        state = self._load(key)
        if state is not None:
            self.put(key, state)
        return state

    def best_match(
        self, model: str, tokens: Sequence[int], *, minimum: int
    ) -> tuple[PrefixState, int] | None:
        """The RAM state sharing the longest prefix with `tokens` (at least `minimum` tokens,
        short of all of them), and that shared length."""
        with self._lock:
            candidates = list(self._ram.items())
        best: tuple[str, PrefixState, int] | None = None
        for key, state in candidates:
            if state.model != model:
                continue
            shared = min(common_prefix(state.tokens, tokens), len(tokens) - 1)
            if shared >= minimum and (best is None or shared > best[2]):
                best = (key, state, shared)
        if best is None:
            return None
        with self._lock:
            if best[0] in self._ram:
                self._ram.move_to_end(best[0])
        return best[1], best[2]

    def drop(self, key: str) -> None:
        with self._lock:
            self._ram.pop(key, None)
        path = self._path(key)
        if path is not None:
            path.unlink(missing_ok=True)

    def _evict(self) -> list[tuple[str, PrefixState]]:
        evicted = []
        used = sum(state.nbytes for state in self._ram.values())
        while used > self._ram_bytes and len(self._ram) > 1:
            key, state = self._ram.popitem(last=False)
            used -= state.nbytes
            evicted.append((key, state))
        return evicted

    def _path(self, key: str) -> Path | None:
        if self._spill_dir is None:
            return None
        return self._spill_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")

    def _spill(self, key: str, state: PrefixState) -> None:
        path = self._path(key)
        if path is None:
            return
        header = json.dumps(
            {
                "key": key,
                "model": state.model,
                "tokens": list(state.tokens),
                "sha256": hashlib.sha256(state.data).hexdigest(),
                "size": len(state.data),
            }
        ).encode()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(_MAGIC + len(header).to_bytes(8, "little") + header + state.data)
        os.replace(tmp, path)
        self._trim_disk()

    def _load(self, key: str) -> PrefixState | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            raw = path.read_bytes()
            if not raw.startswith(_MAGIC):
                raise ValueError("not a prefix state file")
            start = len(_MAGIC) + 8
            header_len = int.from_bytes(raw[len(_MAGIC) : start], "little")
            header = json.loads(raw[start : start + header_len])
            data = raw[start + header_len :]
            if header["key"] != key or len(data) != header["size"]:
                raise ValueError("truncated or foreign state")
            if hashlib.sha256(data).hexdigest() != header["sha256"]:
                raise ValueError("checksum mismatch")
            return PrefixState(header["model"], tuple(header["tokens"]), data)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("dropping unusable prefix state %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def _trim_disk(self) -> None:
        """Oldest spilled states go first once the disk budget is exceeded."""
        assert self._spill_dir is not None
        files = sorted(self._spill_dir.glob("*.kv"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self._disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
