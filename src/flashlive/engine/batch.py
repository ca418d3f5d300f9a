"""Continuous batching on one llama.cpp context: every running job advances in one decode step.

Each step carries one token for every sequence that is generating and, within a prefill budget,
the next slice of the prompts still being read, most urgent first: a long prompt is read a slice
a step beside the others' decoding instead of freezing them. Every job samples from its own row
of the step's logits with its own sampler (its grammar, temperature, seed) and leaves the batch
the step it ends or is cancelled, freeing its sequence for the next job.

Runs only on the engine's worker thread; the engine feeds it jobs and takes back the preempted.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
from collections.abc import Sequence
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from typing import Any

from flashlive.engine.base import FinishCause, PrefixState, Priority, TokenPiece, common_prefix
from flashlive.engine.sampler import Sampler
from flashlive.engine.schedule import Job, Kind
from flashlive.engine.slots import CONTINUATION_TAIL, Slot, Slots

log = logging.getLogger(__name__)

# Background work (warming) reads this many tokens a step: a real request that arrives waits
# for at most one such small step before the background job yields.
BACKGROUND_SLICE = 8
Planned = tuple[Job, list[int], bool]  # a job, the tokens it adds this step, whether it samples


@dataclass
class Counters:
    """The batcher's running totals; their names are `EngineStats`'s."""

    steps: int = 0
    step_tokens: int = 0
    step_sequences: int = 0
    evicted: int = 0
    evicted_bytes: int = 0
    restored_bytes: int = 0


class Batcher:
    def __init__(
        self, model: Any, ctx: Any, slots: Slots, *, name: str, prefill_budget: int
    ) -> None:
        import llama_cpp

        self._model = model
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._slots = slots
        self._name = name
        self._prefill_budget = prefill_budget
        self._capacity = prefill_budget + len(slots.all)
        self._batch = llama_cpp.llama_batch_init(self._capacity, 0, 1)
        self.running: list[Job] = []
        self.counters = Counters()

    # -- sequences -------------------------------------------------------------------------

    def _trim(self, slot: Slot, keep: int) -> None:
        """Drop what `slot` holds past `keep` tokens (all of it where the cache cannot cut)."""
        import llama_cpp

        if keep >= len(slot.tokens):
            return
        if keep > 0 and llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            del slot.tokens[keep:]
            return
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.tokens = []

    def save(self, slot: Slot) -> PrefixState:
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(self._ctx, slot.seq_id)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx, buffer, size, slot.seq_id)
        # One copy out of the C buffer: a state is tens of MB.
        return PrefixState(self._name, tuple(slot.tokens), ctypes.string_at(buffer, written))

    def _load(self, slot: Slot, state: PrefixState) -> None:
        import llama_cpp

        self._trim(slot, 0)
        buffer = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buffer, len(state.data), slot.seq_id):
            slot.tokens = list(state.tokens)
            self.counters.restored_bytes += len(state.data)
        else:
            log.warning("a saved prefix state did not load; computing the prompt instead")
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)

    def hand_out(self, slot: Slot) -> None:
        """Give a retained sequence's state to its keeper: it is about to be cut or evicted."""
        keeper, slot.on_evict = slot.on_evict, None
        if keeper is None or not slot.tokens:
            return
        state = self.save(slot)
        self.counters.evicted_bytes += len(state.data)
        try:
            keeper(state)
        except Exception:
            log.exception("keeping an evicted sequence's state failed")

    def evict(self, slot: Slot) -> None:
        self.hand_out(slot)
        self._trim(slot, 0)
        self.counters.evicted += 1

    def clear(self) -> None:
        """Forget every sequence (after a failed step, whose cache is in doubt)."""
        import llama_cpp

        llama_cpp.llama_memory_clear(self._mem, True)
        for slot in self._slots.all:
            slot.tokens = []
            slot.on_evict = None

    # -- admission -------------------------------------------------------------------------

    def admit(self, job: Job) -> bool:
        """Give `job` a sequence holding as much of its tokens as can be had without compute;
        False when no sequence or not enough of the cache is free (it waits)."""
        placement = self._slots.place(job.tokens, reuse=not job.fresh)
        if placement is None:
            return False
        target, source, shared = placement.target, placement.source, placement.shared
        released = len(target.tokens) - (shared if source is None else 0)
        need = len(job.tokens) - shared + 1 - released
        spare = [target] if source is None else [target, source]
        victims = self._slots.victims(need, spare)
        if self._slots.free + sum(len(v.tokens) for v in victims) < need:
            return False
        for victim in victims:
            self.evict(victim)
        self._seat(job, target, source, shared)
        return True

    def _seat(self, job: Job, target: Slot, source: Slot | None, shared: int) -> None:
        import llama_cpp

        if source is None:
            if shared < len(target.tokens) - CONTINUATION_TAIL:
                self.hand_out(target)  # another conversation's sequence: its keeper gets it
                self.counters.evicted += 1
            self._trim(target, shared)
        else:
            if target.tokens:
                self.evict(target)
            llama_cpp.llama_memory_seq_cp(self._mem, source.seq_id, target.seq_id, 0, shared)
            target.tokens = list(job.tokens[:shared])
        prefix = job.prefix
        if prefix is not None and prefix.model == self._name:
            covers = common_prefix(prefix.tokens, job.tokens)
            if covers > len(target.tokens) or (job.fresh and covers > 0):
                self._load(target, prefix)
                self._trim(target, covers)
        # Generation samples after the last prompt token, so that one is always evaluated.
        self._trim(target, len(job.tokens) - (1 if job.kind is Kind.GENERATE else 0))
        target.busy = True
        job.slot = target
        if job.kind is Kind.GENERATE and job.sampler is None:  # a preempted job keeps its own
            job.sampler = Sampler(self._model.vocab, job.params)
            job.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        job.log(
            log.debug,
            "decoding %d prompt tokens (%d held or restored)",
            len(job.tokens),
            len(target.tokens),
        )
        self.running.append(job)

    # -- a step ----------------------------------------------------------------------------

    def step(self, step_no: int) -> list[Job]:
        """Advance every running job by one decode; returns the jobs preempted to make room in
        the cache (they go back to waiting and resume where they were)."""
        plan = self._plan()
        if not plan:
            self._finish_prefilled(step_no)
            return []
        preempted = self._make_room(sum(len(tokens) for _, tokens, _ in plan), plan)
        if preempted:
            return preempted  # planned anew next step, without them
        self._decode(plan)
        for job, tokens, _ in plan:
            job.slot.tokens.extend(tokens)
        index = 0
        for job, tokens, samples in plan:
            index += len(tokens)
            if samples:
                self._sample(job, index - 1, step_no)
        self._finish_prefilled(step_no)
        return []

    def _plan(self) -> list[Planned]:
        plan: list[Planned] = []
        budget = self._prefill_budget
        others = any(job.priority < Priority.BACKGROUND for job in self.running)
        for job in sorted(self.running, key=lambda j: (j.priority, j.arrival)):
            start = len(job.slot.tokens)
            remaining = len(job.tokens) - start
            if remaining <= 0:
                continue
            if job.priority is Priority.BACKGROUND and others:
                continue  # background work runs only in steps nothing else wants
            if remaining == 1 and job.kind is Kind.GENERATE:
                plan.append((job, job.tokens[start:], True))  # decoding: always in the step
                continue
            if budget <= 0:
                continue
            room = min(budget, BACKGROUND_SLICE) if job.priority is Priority.BACKGROUND else budget
            tokens = job.tokens[start : start + room]
            budget -= len(tokens)
            ends = start + len(tokens) == len(job.tokens)
            plan.append((job, tokens, ends and job.kind is Kind.GENERATE))
        return plan

    def _make_room(self, need: int, plan: Sequence[Planned]) -> list[Job]:
        """Free `need` cells: idle sequences first, then (rarely) the least urgent, latest job."""
        for victim in self._slots.victims(need, []):
            self.evict(victim)
        preempted: list[Job] = []
        while self._slots.free < need and len(self.running) > 1:
            job = max(self.running, key=lambda j: (j.priority, j.arrival))
            self.running.remove(job)
            slot = job.slot
            self._trim(slot, 0)
            slot.busy = False
            job.slot = None
            need -= sum(len(tokens) for planned, tokens, _ in plan if planned is job)
            preempted.append(job)
        return preempted

    def _decode(self, plan: Sequence[Planned]) -> None:
        import llama_cpp

        batch = self._batch
        n = 0
        for job, tokens, samples in plan:
            pos = len(job.slot.tokens)
            for i, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = job.slot.seq_id
                batch.logits[n] = samples and i == len(tokens) - 1
                n += 1
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) on a step of {n} tokens")
        counters = self.counters
        counters.steps += 1
        counters.step_tokens += n
        counters.step_sequences += len(plan)

    def _sample(self, job: Job, index: int, step_no: int) -> None:
        import llama_cpp

        token = job.sampler.sample(self._ctx, index)
        if job.cancel.cancelled:
            self.finish(job, FinishCause.CANCELLED, step_no)
        elif llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
            self.finish(job, FinishCause.END_OF_TURN, step_no)
        else:
            job.produced += 1
            text = job.decoder.decode(self._model.detokenize([token]))
            assert job.emit is not None
            job.emit(TokenPiece(text, token))
            if job.produced >= job.budget:
                self.finish(job, FinishCause.LENGTH, step_no)
            else:
                job.tokens.append(token)

    def finish(self, job: Job, cause: FinishCause, step_no: int) -> None:
        """End a generation: its sequence free (it stays resident), then its last piece."""
        tail = job.decoder.decode(b"", final=True) if job.decoder is not None else ""
        self._release(job, step_no)
        if job.emit is not None:
            job.emit(TokenPiece(tail, None, cause))

    def _release(self, job: Job, step_no: int) -> None:
        if job in self.running:
            self.running.remove(job)
        if job.slot is not None:
            if job.keep is not None and job.slot.tokens:
                job.slot.on_evict = job.keep  # in the same step: nothing can cut it unsaved
            job.slot.busy = False
            job.slot.last_used = step_no
            job.slot = None
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None

    def drop(self, job: Job, step_no: int) -> None:
        """End a job that will not run on: a generation as cancelled, other work as not done."""
        if job.kind is Kind.GENERATE:
            self.finish(job, FinishCause.CANCELLED, step_no)
        else:
            self._settle(job, False, step_no)

    def free(self, step_no: int, *, urgent_waiting: bool) -> None:
        """Before a step's admissions: cancelled jobs leave, and background work gives way to
        anything else waiting; their sequences are free for this very step."""
        for job in list(self.running):
            if job.cancel.cancelled:
                self.drop(job, step_no)
            elif urgent_waiting and job.priority is Priority.BACKGROUND:
                self._settle(job, False, step_no)  # what it computed stays resident

    def _finish_prefilled(self, step_no: int) -> None:
        """Warming and snapshot jobs are done once their sequence holds all their tokens."""
        for job in [j for j in self.running if j.kind is not Kind.GENERATE]:
            if len(job.slot.tokens) >= len(job.tokens):
                result = self.save(job.slot) if job.kind is Kind.SNAPSHOT else True
                self._settle(job, result, step_no)

    def _settle(self, job: Job, result: object, step_no: int) -> None:
        self._release(job, step_no)
        if job.done is not None:
            with contextlib.suppress(InvalidStateError):  # its waiter gave up meanwhile
                job.done.set_result(result)

    def fail_one(self, job: Job, exc: BaseException, step_no: int) -> None:
        if job.emit is not None:
            job.emit(exc)
        elif job.done is not None:
            with contextlib.suppress(InvalidStateError):
                job.done.set_exception(exc)
        if job.slot is not None:
            self._trim(job.slot, 0)  # what it held is in doubt
        self._release(job, step_no)

    def fail(self, exc: BaseException, step_no: int) -> None:
        """A step failed: every running job gets the error; the cache starts over."""
        for job in list(self.running):
            self.fail_one(job, exc, step_no)
        self.clear()

    def close(self) -> None:
        import llama_cpp

        for job in list(self.running):
            self.drop(job, 0)
        llama_cpp.llama_batch_free(self._batch)
