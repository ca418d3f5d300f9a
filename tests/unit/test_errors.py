"""The error table: every typed error has one HTTP status, RPC status and close code."""

from __future__ import annotations

import json

import pytest

from flashlive import cli, errors
from flashlive.api.errors import (
    _STATUS,
    MAX_CLOSE_REASON_BYTES,
    close_code,
    close_reason,
    error_response,
    http_status,
    wire_status,
)


def kinds() -> list[type[errors.FlashliveError]]:
    return [
        k
        for k in vars(errors).values()
        if isinstance(k, type)
        and issubclass(k, errors.FlashliveError)
        and k is not errors.FlashliveError
    ]


@pytest.mark.parametrize("kind", kinds(), ids=lambda k: k.__name__)
def test_every_kind_has_a_row_of_its_own(kind: type[errors.FlashliveError]) -> None:
    assert kind in _STATUS  # a new kind without a row would be an INTERNAL 500
    status = wire_status(kind("x"))
    assert 400 <= status.http < 600 and status.rpc.isupper()
    assert status.close in (1000, 1007, 1008, 1009, 1011, 1013)


@pytest.mark.parametrize(
    ("exc", "http", "rpc", "close"),
    [
        (errors.InvalidArgument("x"), 400, "INVALID_ARGUMENT", 1007),
        (errors.PayloadTooLarge("x"), 413, "INVALID_ARGUMENT", 1009),
        (errors.FailedPrecondition("x"), 400, "FAILED_PRECONDITION", 1008),
        (errors.ResourceExhausted("x"), 429, "RESOURCE_EXHAUSTED", 1013),
        (errors.DeadlineExceeded("x"), 504, "DEADLINE_EXCEEDED", 1000),
        (KeyError("a bug"), 500, "INTERNAL", 1011),
    ],
)
def test_rows(exc: BaseException, http: int, rpc: str, close: int) -> None:
    assert (http_status(exc), wire_status(exc).rpc, close_code(exc)) == (http, rpc, close)


def test_a_narrower_kind_takes_its_nearest_listed_base() -> None:
    class NoSuchVoice(errors.InvalidArgument):
        pass

    assert wire_status(NoSuchVoice("x")) == wire_status(errors.InvalidArgument("x"))


def test_the_body_is_geminis_shape_and_a_bug_tells_nothing() -> None:
    response = error_response(errors.ResourceExhausted("slow down", retry_after_s=2.4))
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    body = json.loads(bytes(response.body))
    assert body == {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    hidden = json.loads(bytes(error_response(ValueError("secret path /x")).body))
    assert hidden["error"]["status"] == "INTERNAL" and "secret" not in hidden["error"]["message"]


def test_a_close_reason_fits_a_close_frame() -> None:
    reason = close_reason(errors.InvalidArgument("é" * 200))
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES and reason.endswith("...")
    assert close_reason(errors.InvalidArgument("short")) == "short"


def test_a_failed_start_exits_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(settings: object) -> None:
        raise errors.FailedStart("--tls-cert and --tls-key go together")

    monkeypatch.setattr("flashlive.api.server.serve", refuse)
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--port", "0"])
    assert info.value.code == "--tls-cert and --tls-key go together"
