"""Ephemeral tokens through the official Python SDK: create over REST, then Live over WSS.

The server is the shared open one (no API keys): tokens are issued and checked all the same.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets
from conftest import FAST_MODEL, Server
from google import genai
from google.genai import errors, types
from test_live import text_of, turn

from flashlive.tls import ca_path

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning"),
]

CONSTRAINED = "GenerativeService.BidiGenerateContentConstrained"
PLAIN = "GenerativeService.BidiGenerateContent"


def issue(server: Server, config: types.CreateAuthTokenConfig) -> str:
    """A token's name, created by a key holder (plain HTTP is fine for REST)."""
    creator = genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(api_version="v1alpha", base_url=server.base_url),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = creator.auth_tokens.create(config=config)
    assert token.name is not None and token.name.startswith("auth_tokens/")
    return token.name


def browser(server: Server, token: str, monkeypatch: pytest.MonkeyPatch) -> genai.Client:
    """What a browser-side client holds: the token, never the key."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path(server.data_dir)))
    return genai.Client(
        api_key=token,
        http_options=types.HttpOptions(api_version="v1alpha", base_url=server.tls_url),
    )


def question(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


@pytest.mark.parametrize("lock_additional_fields", [None, []], ids=["lock-all", "lock-set"])
async def test_a_constrained_token_imposes_its_setup(
    server: Server, monkeypatch: pytest.MonkeyPatch, lock_additional_fields: list[str] | None
) -> None:
    token = issue(
        server,
        types.CreateAuthTokenConfig(
            uses=1,
            live_connect_constraints=types.LiveConnectConstraints(
                model=FAST_MODEL,
                config=types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=3),
            ),
            lock_additional_fields=lock_additional_fields,
        ),
    )
    client = browser(server, token, monkeypatch)
    # The client asks for a model that does not exist and for long answers: the token wins.
    asked = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=400)
    async with client.aio.live.connect(model="not-a-model", config=asked) as session:
        await session.send_client_content(
            turns=question("Count from one to fifty, in words."), turn_complete=True
        )
        messages = await turn(session)
    assert messages[-1].server_content and messages[-1].server_content.turn_complete
    assert text_of(messages).strip()
    usage = messages[-1].usage_metadata
    assert usage is not None and usage.response_token_count is not None
    assert usage.response_token_count <= 3


async def test_a_token_opens_as_many_sessions_as_its_uses(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = browser(server, issue(server, types.CreateAuthTokenConfig(uses=1)), monkeypatch)
    config = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=8)
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_realtime_input(text="Say hello.")
        assert text_of(await turn(session)).strip()
    with pytest.raises(errors.APIError) as refused:
        async with client.aio.live.connect(model=FAST_MODEL, config=config):
            pass
    assert refused.value.code == 1008
    assert "used up" in str(refused.value)  # the SDK puts a close reason in its details


async def test_resuming_a_session_spends_no_use(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = browser(server, issue(server, types.CreateAuthTokenConfig(uses=1)), monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        max_output_tokens=8,
        session_resumption=types.SessionResumptionConfig(),
    )
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_realtime_input(text="Say hello.")
        messages = await turn(session)
    handles = [
        m.session_resumption_update.new_handle
        for m in messages
        if m.session_resumption_update and m.session_resumption_update.new_handle
    ]
    assert handles, "the server announced no resumption handle"
    resumed = config.model_copy(
        update={"session_resumption": types.SessionResumptionConfig(handle=handles[-1])}
    )
    async with client.aio.live.connect(model=FAST_MODEL, config=resumed) as session:
        await session.send_realtime_input(text="Say it again.")
        assert (await turn(session))[-1].server_content is not None


async def test_no_new_session_after_new_session_expire_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    token = issue(server, types.CreateAuthTokenConfig(uses=0, new_session_expire_time=soon))
    client = browser(server, token, monkeypatch)
    await asyncio.sleep(max((soon - datetime.now(UTC)).total_seconds(), 0) + 0.5)
    config = types.LiveConnectConfig(response_modalities=["TEXT"])
    with pytest.raises(errors.APIError) as refused:
        async with client.aio.live.connect(model=FAST_MODEL, config=config):
            pass
    assert refused.value.code == 1008
    assert "no new sessions" in str(refused.value)


async def test_an_unknown_token_is_refused(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = browser(server, "auth_tokens/never-issued", monkeypatch)
    with pytest.raises(errors.APIError) as refused:
        async with client.aio.live.connect(model=FAST_MODEL):
            pass
    assert refused.value.code == 1008 and "not valid" in str(refused.value)


async def test_the_javascript_style_query_token_over_plain_ws(server: Server) -> None:
    token = issue(server, types.CreateAuthTokenConfig(uses=2))
    base = f"ws://127.0.0.1:{server.port}/ws/google.ai.generativelanguage.v1alpha."
    setup = json.dumps({"setup": {"model": f"models/{FAST_MODEL}"}})

    async with websockets.connect(f"{base}{CONSTRAINED}?access_token={token}") as ws:
        await ws.send(setup)
        assert "setupComplete" in json.loads(await ws.recv())

    async with websockets.connect(f"{base}{PLAIN}?access_token={token}") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "BidiGenerateContentConstrained" in closed.value.rcvd.reason
    # The handshake lines uvicorn logs carry the query string: the token must not be in them.
    secret = token.removeprefix("auth_tokens/")
    assert "access_token=REDACTED" in server.log() and secret not in server.log()


async def test_a_token_cannot_call_rest(server: Server) -> None:
    token = issue(server, types.CreateAuthTokenConfig(uses=0))
    response = httpx.get(f"{server.base_url}/v1beta/models", headers={"x-goog-api-key": token})
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "Live API only" in response.json()["error"]["message"]
    # google-genai refuses a token for REST itself (EphemeralTokenAPIKeyError): raw HTTP it is.
