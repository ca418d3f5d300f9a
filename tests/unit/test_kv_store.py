"""Saved prefix states: RAM budget, spill to disk, checksums, longest-prefix lookup."""

from __future__ import annotations

from pathlib import Path

from flashlive.cache.kv import PrefixStore
from flashlive.engine import PrefixState


def state(tokens: list[int], size: int = 1000, model: str = "m") -> PrefixState:
    return PrefixState(
        model, tuple(tokens), bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    )


def test_least_recently_used_state_spills_to_disk_and_comes_back(tmp_path: Path) -> None:
    store = PrefixStore(ram_bytes=2500, spill_dir=tmp_path)
    a, b, c = state([1]), state([2]), state([3])
    store.put("a", a)
    store.put("b", b)
    assert store.get("a") == a  # a is now the most recent
    store.put("c", c)  # over budget: b, the least recent, goes to disk
    assert store.ram_used <= 2500 + 100
    assert len(list(tmp_path.glob("*.kv"))) == 1
    assert store.get("b") == b  # read back from disk, checksum verified


def test_a_damaged_spill_file_is_dropped_not_loaded(tmp_path: Path) -> None:
    store = PrefixStore(ram_bytes=1, spill_dir=tmp_path)
    store.put("a", state([1]))
    store.put("b", state([2]))  # a spills
    (spilled,) = tmp_path.glob("*.kv")
    spilled.write_bytes(spilled.read_bytes()[:-10])  # a crash cut it short
    fresh = PrefixStore(ram_bytes=1, spill_dir=tmp_path)
    assert fresh.get("a") is None
    assert not spilled.exists()


def test_without_a_spill_dir_evicted_states_are_gone(tmp_path: Path) -> None:
    store = PrefixStore(ram_bytes=1500)
    store.put("a", state([1]))
    store.put("b", state([2]))
    assert store.get("a") is None and store.get("b") is not None


def test_the_state_sharing_the_longest_prefix_of_the_same_model_wins() -> None:
    store = PrefixStore()
    store.put("short", state([1, 2]))
    store.put("long", state([1, 2, 3, 4, 7, 7]))  # a saved conversation that went elsewhere
    store.put("other", state([1, 2, 3, 4, 5], model="n"))
    store.put("diverges", state([1, 2, 9, 9, 9]))
    found = store.best_match("m", [1, 2, 3, 4, 5, 6], minimum=2)
    assert found is not None and found[0].tokens == (1, 2, 3, 4, 7, 7) and found[1] == 4
    assert store.best_match("m", [1, 2, 3, 4, 5, 6], minimum=5) is None
    whole = store.best_match("m", [1, 2, 3, 4], minimum=1)
    assert whole is not None and whole[1] == 3  # the last prompt token is always computed


def test_disk_budget_removes_the_oldest_files(tmp_path: Path) -> None:
    store = PrefixStore(ram_bytes=1, spill_dir=tmp_path, disk_bytes=2500)
    for i in range(5):
        store.put(str(i), state([i]))
    total = sum(p.stat().st_size for p in tmp_path.glob("*.kv"))
    assert total <= 2500
    assert store.get("3") is not None  # the newest spilled state survived


def test_drop_forgets_ram_and_disk(tmp_path: Path) -> None:
    store = PrefixStore(ram_bytes=1, spill_dir=tmp_path)
    store.put("a", state([1]))
    store.put("b", state([2]))
    store.drop("a")
    store.drop("b")
    assert store.get("a") is None and store.get("b") is None
    assert not list(tmp_path.glob("*.kv"))
