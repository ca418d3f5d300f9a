"""The engine's bookkeeping without llama.cpp: where a prompt runs, what goes, who is first."""

from __future__ import annotations

from flashlive.engine.base import CancelToken, Priority
from flashlive.engine.schedule import Job, Kind, Waiting
from flashlive.engine.slots import CONTINUATION_TAIL, Slots


def test_a_conversation_goes_on_in_its_own_sequence() -> None:
    slots = Slots(3, 1000)
    slots.all[0].tokens = [1, 2, 3, 4]
    slots.all[1].tokens = [9, 9]
    placement = slots.place([1, 2, 3, 4, 5, 6])
    assert placement is not None
    assert placement.target is slots.all[0] and placement.source is None
    assert placement.shared == 4


def test_a_prompt_sharing_only_a_prefix_copies_it_into_a_free_sequence() -> None:
    slots = Slots(3, 1000)
    system = list(range(100))
    slots.all[0].tokens = [*system, *range(500, 600)]  # another conversation on that prompt
    placement = slots.place([*system, 7, 7])
    assert placement is not None
    assert placement.target is not slots.all[0]  # the other conversation is not cut
    assert placement.source is slots.all[0] and placement.shared == 100


def test_a_short_tail_is_still_the_same_conversation() -> None:
    slots = Slots(2, 1000)
    slots.all[0].tokens = list(range(50))
    tokens = [*range(50 - CONTINUATION_TAIL), 999]
    placement = slots.place(tokens)
    assert placement is not None and placement.target is slots.all[0]
    assert placement.shared == 50 - CONTINUATION_TAIL


def test_no_sequence_is_free_when_all_are_busy() -> None:
    slots = Slots(2, 1000)
    for slot in slots.all:
        slot.busy = True
    assert slots.place([1, 2]) is None


def test_a_fresh_start_shares_nothing() -> None:
    slots = Slots(2, 1000)
    slots.all[0].tokens = [1, 2, 3]
    placement = slots.place([1, 2, 3, 4], reuse=False)
    assert placement is not None and placement.shared == 0 and placement.source is None
    assert placement.target is slots.all[1]  # the empty one before one that holds something


def test_victims_are_the_least_recently_used_idle_sequences() -> None:
    slots = Slots(4, 100)
    for i, (n, used) in enumerate([(30, 5), (30, 1), (30, 3)]):
        slots.all[i].tokens = [i] * n
        slots.all[i].last_used = used
    slots.all[3].busy = True
    assert slots.free == 10
    assert slots.victims(40, []) == [slots.all[1]]
    assert slots.victims(60, []) == [slots.all[1], slots.all[2]]
    assert slots.victims(60, [slots.all[1]]) == [slots.all[2], slots.all[0]]
    assert slots.victims(5, []) == []


def _job(priority: Priority, caller: str) -> Job:
    return Job(Kind.GENERATE, [1], priority, caller, CancelToken())


def test_waiting_jobs_go_by_class_then_fairly_by_caller_then_by_arrival() -> None:
    waiting = Waiting()
    flood = [_job(Priority.STANDARD, "a") for _ in range(3)]
    for job in flood:
        waiting.push(job)
    other = _job(Priority.STANDARD, "b")
    waiting.push(other)
    live = _job(Priority.LIVE, "c")
    waiting.push(live)
    background = _job(Priority.BACKGROUND, "d")
    waiting.push(background)
    assert waiting.ordered()[0] is live
    waiting.take(live)
    assert waiting.ordered()[0] is flood[0]
    waiting.take(flood[0])
    assert waiting.ordered()[0] is other  # "a" has had its turn; "b" has had none
    waiting.take(other)
    assert waiting.ordered()[:2] == flood[1:]
    assert waiting.ordered()[-1] is background
    assert waiting.urgent()
    for job in flood[1:]:
        waiting.take(job)
    assert not waiting.urgent()  # only background work is left
