"""Model aliases: parsing, resolution, the model resources that show them, and the settings."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flashlive.aliases import ModelAlias, parse_aliases
from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.cli import main
from flashlive.config import Settings
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.errors import NotFound
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, ModelManager

QWEN, GEMMA = (s.id for s in BUILTIN_MODELS)


def manager(tmp_path: Path, *entries: str) -> ModelManager:
    return ModelManager(
        list(BUILTIN_MODELS),
        models_dir=tmp_path,
        options=LlamaCppOptions(),
        aliases=parse_aliases(entries),
    )


def test_entries_may_repeat_or_list_several() -> None:
    assert parse_aliases(["gemini-*=models/" + QWEN, f" a = {GEMMA} , b={QWEN}", ""]) == [
        ModelAlias("gemini-*", QWEN),
        ModelAlias("a", GEMMA),
        ModelAlias("b", QWEN),
    ]


@pytest.mark.parametrize("entry", ["gemini-*", "=qwen", "gemini-*=", "x"])
def test_an_entry_that_is_not_pattern_equals_model_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="PATTERN=MODEL"):
        parse_aliases([entry])


def test_an_alias_for_an_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown models: nope"):
        manager(tmp_path, "gemini-*=nope")


def test_names_resolve_to_ids_first_then_the_first_matching_alias(tmp_path: Path) -> None:
    models = manager(
        tmp_path, f"gemini-2.5-flash-lite={GEMMA}", f"gemini-*={QWEN}", f"{QWEN}={GEMMA}"
    )
    assert models.spec("models/gemini-2.5-flash").id == QWEN
    assert models.spec("gemini-3.8-live").id == QWEN
    assert models.spec("gemini-2.5-flash-lite").id == GEMMA
    assert models.spec(QWEN).id == QWEN  # a real id is never shadowed
    with pytest.raises(NotFound):
        models.spec("Gemini-2.5-flash")  # globs are case-sensitive, as model ids are
    with pytest.raises(NotFound):
        manager(tmp_path).spec("gemini-2.5-flash")  # off by default


async def test_model_resources_show_the_aliases(tmp_path: Path) -> None:
    models = manager(tmp_path, f"gemini-2.5-flash={GEMMA}", f"gemini-*={QWEN}")
    service = GenerationService(models, output_token_limit=64)
    app = build_app(
        models=models,
        service=service,
        keys=ApiKeys(frozenset()),
        default_model=QWEN,
        max_request_bytes=4096,
        live=LiveServices(models, service, Perception(), LiveLimits()),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        listed = (await client.get("/v1beta/models")).json()["models"]
        got = (await client.get("/v1beta/models/gemini-3.8-live")).json()
    by_name = {m["name"]: m for m in listed}
    assert set(by_name) == {f"models/{QWEN}", f"models/{GEMMA}", "models/gemini-2.5-flash"}
    assert by_name["models/gemini-2.5-flash"]["baseModelId"] == GEMMA
    assert "gemini-*" in by_name[f"models/{QWEN}"]["description"]
    assert got["name"] == "models/gemini-3.8-live" and got["baseModelId"] == QWEN
    assert f"answered by models/{QWEN}" in got["description"]


def test_the_flag_repeats_and_the_variable_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("flashlive.api.server.serve", lambda s: seen.append(s) or _done())
    main(["serve", "--model-alias", f"a={QWEN}", "--model-alias", f"b*={GEMMA}"])
    assert parse_aliases([seen[0].model_alias or ""]) == [
        ModelAlias("a", QWEN),
        ModelAlias("b*", GEMMA),
    ]
    monkeypatch.setenv("FLASHLIVE_MODEL_ALIAS", f"gemini-*={QWEN},x={GEMMA}")
    assert len(parse_aliases([Settings().model_alias or ""])) == 2


async def _done() -> None:
    return None
