"""Implicit prefix reuse on a real server: a long prompt's state outlives the requests after it."""

from __future__ import annotations

import httpx
import pytest
from conftest import FAST_MODEL, Server

DOC = " ".join(f"Note {i}: the locker code of room {i} is {1000 + 37 * i}." for i in range(110))


def ask(server: Server, question: str, system: str | None = DOC) -> dict[str, object]:
    body: dict[str, object] = {
        "contents": [{"role": "user", "parts": [{"text": question}]}],
        "generationConfig": {"maxOutputTokens": 8, "temperature": 0},
    }
    if system is not None:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{FAST_MODEL}:generateContent", json=body, timeout=300
    )
    assert response.status_code == 200, response.text
    usage: dict[str, object] = response.json()["usageMetadata"]
    return usage


def test_a_long_prompt_is_reused_after_another_request(server: Server) -> None:
    first = ask(server, "What is the locker code of room 3?")
    assert int(str(first["promptTokenCount"])) > 1024
    ask(server, "Say hi.", system=None)  # the engine now holds another prompt
    again = ask(server, "What is the locker code of room 7?")
    cached = int(str(again.get("cachedContentTokenCount", 0)))
    # Everything up to the question was restored, not recomputed.
    assert 1024 <= cached < int(str(again["promptTokenCount"]))
    assert "cachedContentTokenCount" not in first


def test_generate_with_a_cached_content_through_the_sdk(server: Server) -> None:
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=server.base_url))
    facts = DOC[:1200] + " The secret password of the blue door is marmalade."
    cache = client.caches.create(
        model=FAST_MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=facts)])],
            ttl="300s",
        ),
    )
    assert cache.name and cache.usage_metadata and cache.usage_metadata.total_token_count
    config = types.GenerateContentConfig(
        cached_content=cache.name, max_output_tokens=12, temperature=0
    )
    answer = client.models.generate_content(  # a base model: a sentence to complete
        model=FAST_MODEL, contents="The secret password of the blue door is", config=config
    )
    usage = answer.usage_metadata
    assert usage is not None and usage.cached_content_token_count
    assert usage.cached_content_token_count < (usage.prompt_token_count or 0)
    assert "marmalade" in (answer.text or "").lower()

    # A cache and its own system instruction can't be combined, as on Gemini.
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model=FAST_MODEL,
            contents="Hi",
            config=types.GenerateContentConfig(cached_content=cache.name, system_instruction="x"),
        )
    assert refused.value.code == 400

    client.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as gone:
        client.models.generate_content(model=FAST_MODEL, contents="Hi", config=config)
    assert gone.value.code == 404
