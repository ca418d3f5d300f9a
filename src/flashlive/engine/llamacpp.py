"""The embedded engine: llama.cpp through llama-cpp-python, one model per instance.

A `Llama` object is not thread-safe and holds one KV sequence, so every call that
touches it runs on one worker thread. The thread's queue is FIFO, which makes
concurrent requests take turns in arrival order; the event loop only awaits.
The engines a `ModelManager` loads share one worker, the process's (`worker.py`), with the
native vision model: each generation already uses every core, and two at once would only
fight over them (llama.cpp's threads spin).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import os
import random
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashlive.engine.backends import load as load_cpu_backend
from flashlive.engine.base import (
    CancelToken,
    EngineInfo,
    FinishCause,
    PrefixState,
    SamplingParams,
    TokenPiece,
    common_prefix,
)
from flashlive.errors import InvalidArgument, ResourceExhausted
from flashlive.logs import in_context

log = logging.getLogger(__name__)

Emit = Callable[[TokenPiece | BaseException], None]
# Warming is speculative: it runs in small slices so a real request never waits long behind it.
WARM_SLICE = 4
_PLAIN_TEXT_TOKEN = re.compile(r"\s+|</?[a-z][a-z0-9]*>")  # user-defined, but only formatting


@dataclass(frozen=True)
class LlamaCppOptions:
    context_size: int = 8192
    threads: int | None = None  # None: every core (llama.cpp alone would decode on half)
    batch_size: int = 512
    max_queued: int = 64  # generations waiting for the worker beyond this are refused (429)
    # The prompt is evaluated in slices of this many tokens, checking for cancellation between
    # them: a client that leaves during a long prefill frees the engine after one slice.
    prefill_slice: int = 128


class LlamaCppEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        options: LlamaCppOptions,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        from llama_cpp import Llama

        backend = load_cpu_backend()
        log.info("llama.cpp CPU variant: %s (%s)", backend.variant.name, backend.chosen_by)
        self._options = options
        threads = options.threads or os.cpu_count() or 1
        self._llm: Any = Llama(
            model_path=str(model_path),
            n_ctx=options.context_size,
            n_batch=options.batch_size,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        metadata: dict[str, str] = self._llm.metadata
        vocab = self._llm._model
        self._info = EngineInfo(
            name=name,
            context_size=int(self._llm.n_ctx()),
            chat_template=metadata.get("tokenizer.chat_template"),
            bos_token=self._token_text(vocab.token_bos()),
            eos_token=self._token_text(vocab.token_eos()),
            control_tokens=self._control_tokens(),
        )
        self._owns_worker = worker is None
        self._executor = worker or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._waiting = 0
        self._active = 0
        self._state_lock = threading.Lock()

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def active(self) -> int:
        return self._active

    @property
    def cached_prefix(self) -> Sequence[int]:
        return list(self._llm._input_ids)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        piece: bytes = self._llm.detokenize([token], special=True)
        return piece.decode("utf-8", errors="replace")

    def _control_tokens(self) -> frozenset[str]:
        """Texts that tokenize to a special token wherever they appear: control tokens, and the
        user-defined ones (llama.cpp matches those even in plain text) that stand for something,
        such as Gemma's `<start_of_image>` and `[multimodal]` or Qwen's `<tool_call>`; not the
        runs of whitespace and HTML tags some vocabularies also define, which are just text."""
        import llama_cpp

        vocab = self._llm._model.vocab
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
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        # Chat templates often write the BOS token themselves; never feed it twice.
        bos = self._llm.token_bos()
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def check_grammar(self, grammar: str) -> bool:
        """Parse `grammar` as the sampler will. llama.cpp answers a grammar it cannot parse
        with NULL, and a sampler chain given that NULL dereferences it: the process dies. So
        every grammar is parsed here first, on its own, and only one that parses is used.
        Reads only the vocabulary: safe beside a generation on the worker thread."""
        import llama_cpp

        vocab = self._llm._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        if len(prompt) >= self._info.context_size:
            raise InvalidArgument(
                f"the prompt has {len(prompt)} tokens; model {self._info.name} takes at most "
                f"{self._info.context_size - 1}"
            )
        if self._waiting >= self._options.max_queued:
            raise ResourceExhausted(
                f"model {self._info.name} has {self._waiting} requests waiting; retry shortly",
                retry_after_s=1.0,
            )
        cancel = cancel or CancelToken()
        loop = asyncio.get_running_loop()
        # Not given a maxsize, yet bounded: the worker puts at most one piece per token it
        # decodes (at most `params.max_tokens`, and never past the context) plus one final
        # piece or error. A maxsize would have to block the worker thread, and with it every
        # engine of the process, on one slow reader.
        queue: asyncio.Queue[TokenPiece | BaseException] = asyncio.Queue()

        def emit(item: TokenPiece | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                cancel.cancel()

        with self._state_lock:
            self._waiting += 1
        loop.run_in_executor(
            self._executor, in_context(self._run, list(prompt), params, cancel, emit, prefix)
        )
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

    def _run(
        self,
        prompt: list[int],
        params: SamplingParams,
        cancel: CancelToken,
        emit: Emit,
        prefix: PrefixState | None,
    ) -> None:
        with self._started():
            try:
                if cancel.cancelled:
                    emit(TokenPiece("", None, FinishCause.CANCELLED))
                    return
                log.debug(
                    "decoding %d prompt tokens (%d restored from a saved state)",
                    len(prompt),
                    len(prefix.tokens) if prefix is not None else 0,
                )
                self._generate(prompt, params, cancel, emit, prefix)
            except BaseException as exc:  # reported to the awaiting coroutine, never lost
                log.exception("generation failed")
                emit(exc)

    @contextlib.contextmanager
    def _started(self) -> Iterator[None]:
        """A job left the queue and runs on the worker: the counters /metrics reports."""
        with self._state_lock:
            self._waiting -= 1
            self._active += 1
        try:
            yield
        finally:
            with self._state_lock:
                self._active -= 1

    def _generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        cancel: CancelToken,
        emit: Emit,
        prefix: PrefixState | None,
    ) -> None:
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        llm = self._llm
        budget = min(params.max_tokens, self._info.context_size - len(prompt))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        llm.set_seed(seed & 0xFFFFFFFF)
        if params.seed is not None:
            # A reused prefix is evaluated in different batch shapes than a cold prompt, which
            # moves logits by rounding error; a seeded request must replay exactly, so it
            # starts cold.
            llm.reset()
        if prefix is not None:
            self._restore(prefix, prompt, force=params.seed is not None)
        grammar = LlamaGrammar.from_string(params.grammar) if params.grammar else None
        if not self._prefill(prompt[:-1], cancel):
            emit(TokenPiece("", None, FinishCause.CANCELLED))
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        finish = FinishCause.LENGTH
        produced = 0
        if budget > 0:
            for token in llm.generate(
                prompt,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=0.0,
                temp=params.temperature,
                repeat_penalty=1.0,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                grammar=grammar,
            ):
                if cancel.cancelled:
                    finish = FinishCause.CANCELLED
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = FinishCause.END_OF_TURN
                    break
                produced += 1
                emit(TokenPiece(decoder.decode(llm.detokenize([token])), token))
                if produced >= budget:
                    break
        emit(TokenPiece(decoder.decode(b"", final=True), None, finish))

    async def snapshot(self, tokens: Sequence[int] | None = None) -> PrefixState:
        loop = asyncio.get_running_loop()
        with self._state_lock:
            self._waiting += 1
        wanted = None if tokens is None else list(tokens)
        return await loop.run_in_executor(self._executor, in_context(self._snapshot, wanted))

    def _snapshot(self, tokens: list[int] | None) -> PrefixState:
        with self._started():
            if tokens is not None:
                self._prefill(tokens, CancelToken())
            return self._save()

    def _save(self) -> PrefixState:
        import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        held = tuple(int(t) for t in self._llm._input_ids)
        # One copy out of the C buffer: a state is tens of MB, saved after every Live turn.
        return PrefixState(self._info.name, held, ctypes.string_at(buffer, written))

    def _restore(self, state: PrefixState, prompt: list[int], *, force: bool) -> None:
        """Load `state` when it shares more of `prompt` than what is held (always if `force`).

        The state may run past the prompt (a saved conversation that then went elsewhere):
        prefill cuts what does not match right after.
        """
        import llama_cpp

        shared = common_prefix(state.tokens, prompt)
        if state.model != self._info.name or shared == 0:
            return
        if not force and common_prefix(self._llm._input_ids, prompt) >= shared:
            return
        llm = self._llm
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
        buffer = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(state.data), 0) == 0:
            log.warning("a saved prefix state did not load; computing the prompt instead")
            llm.reset()
            return
        n = len(state.tokens)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n

    async def warm(self, prefix: Sequence[int]) -> bool:
        with self._state_lock:
            if self._waiting or self._active or len(prefix) >= self._info.context_size:
                return False
            self._waiting += 1
        loop = asyncio.get_running_loop()
        cancel = CancelToken()
        try:
            return await loop.run_in_executor(
                self._executor, in_context(self._warm, list(prefix), cancel)
            )
        finally:
            cancel.cancel()  # a caller that gave up stops the work at the next slice

    def _warm(self, prefix: list[int], cancel: CancelToken) -> bool:
        with self._started():
            return self._prefill(prefix, cancel, step=WARM_SLICE, preemptible=True)

    def _prefill(
        self,
        tokens: list[int],
        cancel: CancelToken,
        step: int | None = None,
        *,
        preemptible: bool = False,
    ) -> bool:
        """Bring the KV state up to `tokens`; False when cancelled.

        Whatever prefix the state already holds is kept. Generation prefills all but the last
        prompt token: `Llama.generate` then finds them cached and evaluates just that one
        before sampling.
        """
        llm = self._llm
        reuse = common_prefix(llm._input_ids, tokens)
        if reuse < llm.n_tokens:
            if not llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
                llm.reset()
                reuse = 0
            llm.n_tokens = reuse
        step = step or self._options.prefill_slice
        for start in range(reuse, len(tokens), step):
            if cancel.cancelled or (preemptible and self._waiting):
                return False  # warming gives way to real work; what it computed is kept
            llm.eval(tokens[start : start + step])
        return not cancel.cancelled

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._llm.close)
        if self._owns_worker:
            self._executor.shutdown(wait=True, cancel_futures=True)
