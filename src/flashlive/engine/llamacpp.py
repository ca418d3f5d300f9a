"""The embedded engine: llama.cpp through llama-cpp-python, many sequences on one context.

One llama.cpp context holds up to `slots` sequences in one KV cache of `kv_tokens` cells. A
scheduler thread admits waiting jobs to free sequences (most urgent first, fair between callers)
and runs decode steps in which every running job advances together (`batch.py`). A sequence
whose job ended stays resident, so a conversation's next turn, or a prompt sharing a long
prefix, computes only what is new; the least recently used goes when room is needed, its state
handed first to whoever retained it.

llama.cpp calls are not thread-safe: every one runs on one worker thread (the process's, which
the native vision model shares: a step already uses every core). The event loop only awaits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flashlive.engine.backends import load as load_cpu_backend
from flashlive.engine.base import (
    CancelToken,
    EngineInfo,
    EngineStats,
    FinishCause,
    PrefixState,
    Priority,
    SamplingParams,
    TokenPiece,
)
from flashlive.engine.batch import Batcher
from flashlive.engine.schedule import Job, Kind, Waiting
from flashlive.engine.slots import Slots
from flashlive.errors import InvalidArgument, ResourceExhausted
from flashlive.logs import current_caller

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.01  # how long the scheduler waits when a tick could move nothing
CONTEXT_STEP = 256  # llama.cpp rounds a context up to a multiple of this
_PLAIN_TEXT_TOKEN = re.compile(r"\s+|</?[a-z][a-z0-9]*>")  # user-defined, but only formatting


def rounded_context(requested: int) -> int:
    return -(-requested // CONTEXT_STEP) * CONTEXT_STEP


@dataclass(frozen=True)
class LlamaCppOptions:
    context_size: int = 8192  # the most one sequence (prompt and answer) may hold
    threads: int | None = None  # None: every core (llama.cpp alone would decode on half)
    max_queued: int = 64  # generations waiting for a sequence beyond this are refused (429)
    # Prompt tokens read per decode step, shared by the prompts being read: a client that leaves
    # mid-prompt frees the engine after one step, and decoding streams wait at most one slice.
    prefill_slice: int = 128
    slots: int = 8  # sequences decoded together
    kv_tokens: int | None = None  # KV cells all sequences share; None: 4 x context_size

    @property
    def kv_size(self) -> int:
        wanted = self.kv_tokens or 4 * self.context_size
        return rounded_context(max(wanted, self.context_size))


def _open_context(model: Any, options: LlamaCppOptions, *, solo: bool = False) -> Any:
    """One llama.cpp context for `options.slots` sequences sharing `options.kv_size` cells;
    `solo`: for one sequence of at most `context_size`, as a single-stream engine has it."""
    import llama_cpp
    from llama_cpp._internals import LlamaContext

    threads = options.threads or os.cpu_count() or 1
    sequences = 1 if solo else options.slots
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = rounded_context(options.context_size) if solo else options.kv_size
    # One step carries a prefill slice and a token for every sequence: one llama.cpp batch
    # (its compute buffer grows with this size times the vocabulary).
    params.n_batch = params.n_ubatch = options.prefill_slice + sequences
    params.n_seq_max = sequences
    params.kv_unified = True  # every sequence may use the whole cache, and share prefixes
    params.n_threads = params.n_threads_batch = threads
    # Flash attention skips the cells of other sequences instead of summing their zeros: a
    # step's attention costs what its own sequences hold, not what the whole cache holds. The
    # solo context keeps the single-sequence engine's arithmetic, so a seed gives the text it
    # gave before batching; a state saved by the main context (its V cache laid out for flash
    # attention) does not load there, and such a prompt is computed instead.
    flash = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED if solo else flash
    return LlamaContext(model=model, params=params, verbose=False)


class LlamaCppEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        options: LlamaCppOptions,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's own lines: errors only

        backend = load_cpu_backend()
        log.info("llama.cpp CPU variant: %s (%s)", backend.variant.name, backend.chosen_by)
        llama_cpp.llama_backend_init()
        self._options = options
        self.model: Any = LlamaModel(
            path_model=str(model_path),
            params=llama_cpp.llama_model_default_params(),
            verbose=False,
        )
        self._context: Any = _open_context(self.model, options)
        metadata: dict[str, str] = self.model.metadata()
        self._info = EngineInfo(
            name=name,
            context_size=rounded_context(options.context_size),
            chat_template=metadata.get("tokenizer.chat_template"),
            bos_token=self._token_text(self.model.token_bos()),
            eos_token=self._token_text(self.model.token_eos()),
            control_tokens=self._control_tokens(),
        )
        self._slots = Slots(options.slots, int(llama_cpp.llama_n_ctx(self._context.ctx)))
        self._batcher = Batcher(
            self.model,
            self._context.ctx,
            self._slots,
            name=name,
            prefill_budget=options.prefill_slice,
        )
        self._solo: Batcher | None = None  # seeded generations (`_batcher_for`)
        self._solo_context: Any = None
        self._owns_worker = worker is None
        self._executor = worker or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._waiting = Waiting()
        self._waits: dict[Priority, tuple[int, float]] = {}
        self._lock = threading.Condition()
        self._steps = 0
        self._stopping = False
        self._scheduler = threading.Thread(
            target=self._schedule, name=f"llama-schedule-{name}", daemon=True
        )
        self._scheduler.start()

    # -- what the engine is -----------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return sum(len(batcher.running) for batcher in self._batchers())

    @property
    def stats(self) -> EngineStats:
        with self._lock:
            waits = tuple(
                (priority.name, count, seconds)
                for priority, (count, seconds) in sorted(self._waits.items())
            )
        return EngineStats(
            slots=len(self._slots.all),
            slots_busy=self._slots.busy,
            resident=self._slots.resident,
            kv_used=self._slots.used,
            kv_size=self._slots.kv_size,
            waits=waits,
            **asdict(self._batcher.counters),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        piece: bytes = self.model.detokenize([token], special=True)
        return piece.decode("utf-8", errors="replace")

    def _control_tokens(self) -> frozenset[str]:
        """Texts that tokenize to a special token wherever they appear: control tokens, and the
        user-defined ones (llama.cpp matches those even in plain text) that stand for something,
        such as Gemma's `<start_of_image>` and `[multimodal]` or Qwen's `<tool_call>`; not the
        runs of whitespace and HTML tags some vocabularies also define, which are just text."""
        import llama_cpp

        vocab = self.model.vocab
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        texts = set()
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            attr = llama_cpp.llama_vocab_get_attr(vocab, token)
            if attr & control or attr & user_defined:
                text = self._token_text(token)
                if attr & control or not _PLAIN_TEXT_TOKEN.fullmatch(text):
                    texts.add(text)
        return frozenset(texts)

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self.model.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        # Chat templates often write the BOS token themselves; never feed it twice.
        bos = self.model.token_bos()
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        text: bytes = self.model.detokenize(list(tokens), special=special)
        return text.decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def check_grammar(self, grammar: str) -> bool:
        """Parse `grammar` as the sampler will. llama.cpp answers a grammar it cannot parse
        with NULL, and a sampler chain given that NULL dereferences it: the process dies. So
        every grammar is parsed here first, on its own, and only one that parses is used.
        Reads only the vocabulary: safe beside a step on the worker thread."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.model.vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def resident(self, tokens: Sequence[int]) -> int:
        return self._slots.longest(tokens)[1]

    def retain(self, tokens: Sequence[int], on_evict: Callable[[PrefixState], None]) -> bool:
        # Races a step that seats a new job in that sequence at this moment: the keeper may then
        # get another prompt's state. Harmless: a state carries its tokens, and is restored only
        # into a prompt that begins with them.
        with self._lock:
            slot, shared = self._slots.longest(tokens)
            if slot is None or slot.busy or shared < len(tokens) - 1:
                return False
            slot.on_evict = on_evict
            return True

    # -- jobs -------------------------------------------------------------------------------

    def _submit(self, job: Job) -> None:
        with self._lock:
            if self._stopping:
                raise ResourceExhausted(f"model {self._info.name} is shutting down")
            # Those the next step seats in a free sequence are not waiting for one.
            free = sum(not slot.busy for slot in self._slots.all)
            if len(self._waiting) - free >= self._options.max_queued:
                raise ResourceExhausted(
                    f"model {self._info.name} has {len(self._waiting)} requests waiting; "
                    "retry shortly",
                    retry_after_s=1.0,
                )
            self._waiting.push(job)
            self._lock.notify_all()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
        priority: Priority = Priority.STANDARD,
        keep: Callable[[PrefixState], None] | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        if not prompt:
            raise InvalidArgument(f"an empty prompt: model {self._info.name} needs a token")
        if len(prompt) >= self._info.context_size:
            raise InvalidArgument(
                f"the prompt has {len(prompt)} tokens; model {self._info.name} takes at most "
                f"{self._info.context_size - 1}"
            )
        cancel = cancel or CancelToken()
        loop = asyncio.get_running_loop()
        # Not given a maxsize, yet bounded: a step puts at most one piece per token it samples
        # for this job (at most `params.max_tokens`, never past the context) and one final
        # piece or error. A maxsize would have to block the step, and every stream in it.
        queue: asyncio.Queue[TokenPiece | BaseException] = asyncio.Queue()

        def emit(item: TokenPiece | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                cancel.cancel()

        job = Job(
            Kind.GENERATE,
            list(prompt),
            priority,
            current_caller("anonymous"),
            cancel,
            params=params,
            emit=emit,
            prefix=prefix,
            budget=min(params.max_tokens, self._info.context_size - len(prompt)),
            fresh=params.seed is not None,
            keep=keep,
        )
        self._submit(job)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish is not None:
                    return
        finally:
            cancel.cancel()
            self._wake()  # its sequence is free at the next step

    async def _run_job(self, kind: Kind, tokens: Sequence[int], priority: Priority) -> Any:
        done: Future[Any] = Future()
        cancel = CancelToken()
        job = Job(kind, list(tokens), priority, current_caller("anonymous"), cancel, done=done)
        self._submit(job)
        try:
            return await asyncio.wrap_future(done)
        finally:
            cancel.cancel()  # a caller that gave up stops the work at the next step
            self._wake()

    async def snapshot(self, tokens: Sequence[int]) -> PrefixState:
        state: PrefixState = await self._run_job(Kind.SNAPSHOT, tokens, Priority.STANDARD)
        return state

    async def warm(self, prefix: Sequence[int]) -> bool:
        """Compute `prefix` while nothing else runs; gives way at the next step to any other
        job (returns False then, keeping what it computed)."""
        if len(prefix) >= self._info.context_size:
            return False
        with self._lock:
            if len(self._waiting) or self.active:
                return False
        done: bool = await self._run_job(Kind.WARM, prefix, Priority.BACKGROUND)
        return done

    # -- the scheduler ----------------------------------------------------------------------

    def _schedule(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not len(self._waiting) and not self.active:
                    self._lock.wait()
                if self._stopping:
                    return
            try:
                worked = self._executor.submit(self._tick).result()
            except Exception:
                log.exception("the engine's scheduler failed a step")
                worked = False
            if not worked:  # nothing could move (all waiting for room): no busy loop
                with self._lock:
                    self._lock.wait(IDLE_WAIT_S)

    def _tick(self) -> bool:
        """One step, on the worker: admit what fits, advance every running job. Returns whether
        anything moved."""
        self._steps += 1
        with self._lock:
            urgent = self._waiting.urgent()
        for batcher in self._batchers():
            batcher.free(self._steps, urgent_waiting=urgent)
        moved = self._admit()
        for batcher in self._batchers():
            steps = batcher.counters.steps
            try:
                preempted = batcher.step(self._steps)
            except Exception as exc:
                log.exception("a decode step failed")
                batcher.fail(exc, self._steps)
                moved = True
                continue
            self._requeue(batcher, preempted)
            moved = moved or bool(preempted) or batcher.counters.steps > steps
        return moved

    def _requeue(self, batcher: Batcher, preempted: list[Job]) -> None:
        with self._lock:
            for job in preempted:
                if self._stopping:  # nobody will seat it again
                    batcher.drop(job, self._steps)
                    continue
                job.enqueued = time.monotonic()
                self._waiting.requeue(job)

    def _admit(self) -> bool:
        """Seat waiting jobs, most urgent first (ranked again after each, so callers take turns),
        until their batcher has no room left: a seeded job waiting for the solo sequence does
        not hold back the others. Returns whether any job left the queue."""
        handled = 0
        full: set[int] = set()
        tried: set[int] = set()
        while True:
            with self._lock:
                job = next((j for j in self._waiting.ordered() if id(j) not in tried), None)
            if job is None:
                return handled > 0
            tried.add(id(job))
            try:
                batcher = self._batcher_for(job)
                if job.cancel.cancelled:
                    batcher.drop(job, self._steps)
                elif id(batcher) in full:
                    continue
                elif not batcher.admit(job):
                    full.add(id(batcher))
                    continue
            except Exception as exc:  # this job's failure, not the engine's: it alone ends
                log.exception("admitting a generation failed")
                self._batcher.fail_one(job, exc, self._steps)
            with self._lock:
                self._waiting.take(job)
                count, seconds = self._waits.get(job.priority, (0, 0.0))
                self._waits[job.priority] = (count + 1, seconds + time.monotonic() - job.enqueued)
            handled += 1

    def _batchers(self) -> list[Batcher]:
        return [self._batcher] if self._solo is None else [self._batcher, self._solo]

    def _batcher_for(self, job: Job) -> Batcher:
        """A seeded generation runs alone on a context of its own, one at a time, so it
        replays exactly whatever else runs: in a batch its rows would be summed in another
        order, and the shared cache's size changes how attention is split."""
        if not job.fresh:
            return self._batcher
        if self._solo is None:  # on first use: most servers never see a seed
            context = _open_context(self.model, self._options, solo=True)
            self._solo_context = context
            self._solo = Batcher(
                self.model,
                context.ctx,
                Slots(1, self._info.context_size),
                name=self._info.name,
                prefill_budget=self._options.prefill_slice,
            )
        return self._solo

    async def aclose(self) -> None:
        with self._lock:
            self._stopping = True
            waiting = self._waiting.drain()
            self._lock.notify_all()
        await asyncio.to_thread(self._scheduler.join)
        for job in waiting:
            if job.emit is not None:
                job.emit(TokenPiece("", None, FinishCause.CANCELLED))
            elif job.done is not None and not job.done.done():
                job.done.set_result(False)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        if self._owns_worker:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _close(self) -> None:
        for batcher in self._batchers():
            batcher.close()
        if self._solo_context is not None:
            self._solo_context.close()
        self._context.close()
        self.model.close()
