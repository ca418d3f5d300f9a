"""Hours-long Live sessions on a real server through the official SDK: resumption across dropped
sockets and restarts (memory, SQLite and Redis stores), goAway, and the sliding window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FAST_MODEL, Server, free_port, start_server, stop_server
from google import genai
from google.genai import types
from redis_server import redis_server

from flashlive.tls import ca_path

pytestmark = pytest.mark.timeout(300)


def state_bytes_in(server: Server) -> float:
    """The bytes of saved engine state the fast model has loaded back, from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", headers={"x-goog-api-key": "test-key"}).text
    wanted = f'flashlive_engine_state_bytes_in_total{{model="{FAST_MODEL}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


def client_for(server: Server, monkeypatch: pytest.MonkeyPatch) -> genai.Client:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path(server.data_dir)))
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=server.tls_url))


def config(handle: str | None = None, **fields: Any) -> types.LiveConnectConfig:
    given: dict[str, Any] = {"max_output_tokens": 12, "temperature": 0.0, **fields}
    return types.LiveConnectConfig(
        response_modalities=["TEXT"],
        session_resumption=types.SessionResumptionConfig(handle=handle),
        **given,
    )


async def ask(session: Any, text: str) -> None:
    await session.send_client_content(
        turns=types.Content(role="user", parts=[types.Part(text=text)]), turn_complete=True
    )


async def until(session: Any, done: Any, timeout: float = 120) -> list[types.LiveServerMessage]:
    """Messages up to and including the first for which `done` is true."""
    seen: list[types.LiveServerMessage] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await session._receive()
            seen.append(message)
            if done(message):
                return seen


def completes(message: types.LiveServerMessage) -> bool:
    return bool(message.server_content and message.server_content.turn_complete)


def handle_in(message: types.LiveServerMessage) -> bool:
    update = message.session_resumption_update
    return bool(update and update.resumable and update.new_handle)


async def turn_then_handle(session: Any, text: str) -> tuple[types.LiveServerMessage, str]:
    """Ask, and return the turnComplete (with usage) and the handle sent right after it."""
    await ask(session, text)
    messages = await until(session, completes)
    update = await until(session, handle_in, timeout=10)
    handle = update[-1].session_resumption_update
    assert handle is not None and handle.new_handle
    return messages[-1], handle.new_handle


def prompt_tokens(message: types.LiveServerMessage) -> int:
    assert message.usage_metadata is not None
    return message.usage_metadata.prompt_token_count or 0


async def first_handle(session: Any) -> str:
    update = (await until(session, handle_in, timeout=30))[-1].session_resumption_update
    assert update is not None and update.new_handle
    return update.new_handle


async def test_a_dropped_socket_mid_turn_loses_no_turn(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(server, monkeypatch)
    async with client.aio.live.connect(model=FAST_MODEL, config=config()) as session:
        await first_handle(session)
        done, handle = await turn_then_handle(session, "My favourite colour is green.")
        before = prompt_tokens(done)
        # The second question is asked; the socket drops as its answer starts to arrive.
        await ask(session, "Name three fruits.")
        await until(session, lambda m: bool(m.server_content and m.server_content.model_turn))
    async with client.aio.live.connect(model=FAST_MODEL, config=config(handle)) as session:
        # Nothing is sent again: the question that was cut off is answered on its own.
        messages = await until(session, completes)
        answer = "".join(m.text or "" for m in messages)
        assert answer.strip()
        resumed = prompt_tokens(messages[-1])
        assert resumed > before  # the first turn and its answer are in the context
        done, _ = await turn_then_handle(session, "Thanks.")
        assert prompt_tokens(done) > resumed


async def test_resuming_with_an_unknown_handle_fails_clearly(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(server, monkeypatch)
    with pytest.raises(genai.errors.APIError) as failure:
        async with client.aio.live.connect(model=FAST_MODEL, config=config("not-a-handle")) as s:
            await until(s, completes, timeout=30)
    assert "1008" in str(failure.value) and "unknown or has expired" in str(failure.value)


def resume_after_restart(tmp: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """A conversation, a server restart, and the same conversation going on."""
    server = start_server(tmp, args=args)
    try:
        client = client_for(server, monkeypatch)

        async def first() -> tuple[int, str]:
            async with client.aio.live.connect(model=FAST_MODEL, config=config()) as session:
                await first_handle(session)
                done, handle = await turn_then_handle(session, "Remember the word kumquat.")
                return prompt_tokens(done), handle

        before, handle = asyncio.run(first())
    finally:
        stop_server(server)
    server = start_server(tmp, args=args)  # the same data directory
    try:
        client = client_for(server, monkeypatch)

        async def second() -> int:
            async with client.aio.live.connect(model=FAST_MODEL, config=config(handle)) as session:
                await first_handle(session)
                done, again = await turn_then_handle(session, "Which word?")
                assert again == handle
                return prompt_tokens(done)

        assert asyncio.run(second()) > before
    finally:
        stop_server(server)


def test_resume_after_a_restart_with_the_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resume_after_restart(tmp_path, monkeypatch, "--session-store", "sqlite")
    assert (tmp_path / "data" / "sessions.sqlite3").exists()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server(free_port()) as url:
        yield url


def test_resume_after_a_restart_with_the_redis_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    resume_after_restart(tmp_path, monkeypatch, "--session-store", redis_url)


@pytest.fixture(scope="module")
def short_connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("short"),
        args=("--live-max-connection-s", "4", "--live-goaway-notice-s", "2"),
    )
    yield server
    stop_server(server)


async def test_go_away_then_close_then_resume(
    short_connections: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(short_connections, monkeypatch)
    seen: list[types.LiveServerMessage] = []
    async with client.aio.live.connect(model=FAST_MODEL, config=config()) as session:
        await ask(session, "Say hello.")
        with pytest.raises(genai.errors.APIError) as closed:  # the close, with its reason
            await until(session, lambda m: bool(seen.append(m)), timeout=20)
    assert closed.value.code == 1000 and "resume" in str(closed.value)
    kinds = [next(k for k, v in m.model_dump(exclude_none=True).items() if v) for m in seen]
    assert "go_away" in kinds
    warning = next(m.go_away for m in seen if m.go_away is not None)
    assert warning.time_left is not None  # a Duration in JSON form, e.g. "1.998s"
    assert 0 < float(warning.time_left.removesuffix("s")) <= 2
    done = next(m for m in seen if completes(m))
    before = prompt_tokens(done)
    updates = [m.session_resumption_update for m in seen if handle_in(m)]
    handle = updates[-1].new_handle if updates and updates[-1] else None
    assert handle
    async with client.aio.live.connect(model=FAST_MODEL, config=config(handle)) as session:
        await first_handle(session)
        done, _ = await turn_then_handle(session, "Again.")
        assert prompt_tokens(done) > before


async def test_a_sliding_window_session_runs_past_ten_times_its_target(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger, target = 160, 60
    compression = types.ContextWindowCompressionConfig(
        trigger_tokens=trigger, sliding_window=types.SlidingWindow(target_tokens=target)
    )
    client = client_for(server, monkeypatch)
    live_config = config(context_window_compression=compression, max_output_tokens=6)
    questions = [
        f"Fact {i}: the number {i} is my favourite number today, and I like it a lot."
        for i in range(32)
    ]
    prompts, reused = [], []
    async with client.aio.live.connect(model=FAST_MODEL, config=live_config) as session:
        await first_handle(session)
        for question in questions:
            done, _ = await turn_then_handle(session, question)
            usage = done.usage_metadata
            assert usage is not None
            prompts.append(usage.prompt_token_count or 0)
            reused.append(usage.cached_content_token_count or 0)
    # The user's words alone are ten times the target...
    said = client.models.count_tokens(model=FAST_MODEL, contents=" ".join(questions))
    assert (said.total_tokens or 0) >= 10 * target
    # ...yet the context never held more than the trigger (plus the chat scaffolding the
    # per-message estimate rounds), and it was cut more than once.
    assert max(prompts) <= trigger + 30, prompts
    cuts = [i for i in range(1, len(prompts)) if prompts[i] < prompts[i - 1]]
    assert len(cuts) >= 3, prompts
    # Every turn but the first and those right after a cut reuses the engine state of the one
    # before: only the new words are computed.
    steady = [i for i in range(1, len(prompts)) if i not in cuts]
    for i in steady:
        assert prompts[i] - reused[i] <= 40, (i, prompts, reused)


async def test_alternating_sessions_each_keep_their_engine_state(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(server, monkeypatch)
    connect = client.aio.live.connect
    loaded_before = state_bytes_in(server)
    async with (
        connect(model=FAST_MODEL, config=config()) as one,
        connect(model=FAST_MODEL, config=config()) as two,
    ):
        await first_handle(one)
        await first_handle(two)
        topics = {id(one): "apples", id(two): "the history of the bicycle"}
        for round_ in range(3):
            for session in (one, two):
                done, _ = await turn_then_handle(
                    session, f"Round {round_}: tell me one thing about {topics[id(session)]}."
                )
                usage = done.usage_metadata
                assert usage is not None and usage.prompt_token_count
                if round_:
                    # The other session ran in between, yet this one's context is restored,
                    # not recomputed: only its newest words are new to the engine.
                    new = usage.prompt_token_count - (usage.cached_content_token_count or 0)
                    assert new <= 45, (round_, usage)
    # Both sessions' sequences stayed resident in the engine: no state was loaded back.
    assert state_bytes_in(server) == loaded_before
