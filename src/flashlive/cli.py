"""`flashlive serve | doctor | usage | ca-path | models`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, cast

from flashlive import logs
from flashlive.config import Settings
from flashlive.errors import FailedStart, FlashliveError
from flashlive.ledger import PriceTable, UsageRow, hash_key, open_ledger
from flashlive.ledger.records import parse_since
from flashlive.ledger.store import GroupBy
from flashlive.models import BUILTIN_MODELS
from flashlive.tls import ca_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashlive", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the Gemini API (every flag is also FLASHLIVE_*)")
    for flags in (_listen_flags, _model_flags, _live_flags, _billing_flags, _cache_flags):
        flags(serve)
    usage = sub.add_parser("usage", help="print tokens and cost from the usage ledger")
    usage.add_argument("--key", dest="usage_key", help="only this API key's usage")
    usage.add_argument("--since", dest="usage_since", help="a date (UTC) or ISO 8601 time")
    usage.add_argument("--by", dest="usage_by", choices=["day", "model", "key"], default="day")
    usage.add_argument("--data-dir", type=Path)
    usage.add_argument("--ledger-url")
    usage.add_argument("--prices-file", type=Path)
    ca = sub.add_parser("ca-path", help="print the local CA certificate file clients should trust")
    ca.add_argument("--data-dir", type=Path)
    sub.add_parser("models", help="list the built-in models")
    _doctor_flags(
        sub.add_parser(
            "doctor", help="report the CPU, engine, models and components; check the engine decodes"
        )
    )
    return parser


def _listen_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--tls-port", type=int, help="HTTPS/WSS port; 0 turns TLS off")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument(
        "--api-keys", help="comma-separated keys (visible to `ps`: prefer the file or env)"
    )
    serve.add_argument("--api-keys-file", type=Path)
    serve.add_argument("--admin-keys", help="comma-separated keys that may read /v1beta/usage")
    serve.add_argument("--insecure-open", action="store_true", default=None)
    serve.add_argument("--max-request-bytes", type=int)
    serve.add_argument("--http-header-timeout-s", type=float, help="for a request's headers")
    serve.add_argument("--log-level")
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="json: one object a line, ids included"
    )


def _model_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--model", help="a registry model id or a path to a .gguf file")
    serve.add_argument(
        "--model-alias",
        action="append",
        metavar="PATTERN=MODEL",
        help="another name (or glob, e.g. 'gemini-*') a model answers to; repeatable",
    )
    serve.add_argument("--models-dir", type=Path)
    serve.add_argument("--context-size", type=int)
    serve.add_argument("--output-token-limit", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--max-queued", type=int)
    serve.add_argument("--slots", type=int, help="sequences decoded together (8)")
    serve.add_argument("--kv-tokens", type=int, help="KV cache cells they share")
    serve.add_argument("--prefill-slice", type=int, help="prompt tokens read per decode step")
    serve.add_argument("--vision-model", type=Path, help="a multimodal .gguf that looks at images")
    serve.add_argument("--mmproj", type=Path, help="its projector .gguf (with --vision-model)")
    serve.add_argument("--video-fps", type=float, help="frames a second looked at in a video")
    serve.add_argument("--tts", choices=["auto", "piper", "espeak"])


def _live_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--live-max-frame-bytes", type=int)
    serve.add_argument("--live-send-timeout-s", type=float)
    serve.add_argument("--live-setup-timeout-s", type=float, help="wait this long for a setup")
    serve.add_argument("--live-max-connection-s", type=float, help="0: connections never expire")
    serve.add_argument("--live-goaway-notice-s", type=float)
    serve.add_argument("--live-resume-ttl-s", type=float, help="how long a handle stays valid")
    serve.add_argument(
        "--session-store", help="memory (default), sqlite, sqlite:///path or redis://host:port/db"
    )


def _billing_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--image-tokens", type=int, help="tokens one image counts as (258)")
    serve.add_argument(
        "--audio-tokens-per-s", type=float, help="tokens a second of audio counts as"
    )
    serve.add_argument(
        "--video-tokens-per-s", type=float, help="tokens a second of video frames counts as"
    )
    serve.add_argument("--ledger-url", help="sqlite:///path or postgresql://... (default: SQLite)")
    serve.add_argument("--prices-file", type=Path, help="TOML or JSON prices per million tokens")
    serve.add_argument("--quota-requests-per-min", type=int, help="per API key; 0: unlimited")
    serve.add_argument("--quota-tokens-per-min", type=int, help="per API key; 0: unlimited")
    serve.add_argument("--quota-file", type=Path, help="per-key quota overrides (TOML or JSON)")


def _cache_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--cache-min-tokens", type=int)
    serve.add_argument(
        "--cache-sweep-interval-s", type=float, help="how often expired caches are removed"
    )
    serve.add_argument("--kv-ram-bytes", type=int)
    serve.add_argument("--kv-disk-bytes", type=int)


def _doctor_flags(doctor: argparse.ArgumentParser) -> None:
    doctor.add_argument(
        "--engine-only", action="store_true", help="only the CPU, the engine and its self-check"
    )
    doctor.add_argument("--model")
    doctor.add_argument("--models-dir", type=Path)
    doctor.add_argument("--data-dir", type=Path)
    doctor.add_argument("--tts", choices=["auto", "piper", "espeak"])
    doctor.add_argument("--tls-port", type=int)
    doctor.add_argument("--tls-cert", type=Path)
    doctor.add_argument("--session-store")
    doctor.add_argument("--ledger-url")
    doctor.add_argument("--vision-model", type=Path)
    doctor.add_argument("--mmproj", type=Path)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: v
        for k, v in vars(args).items()
        if v is not None and k not in ("command", "engine_only") and not k.startswith("usage_")
    }
    if "model_alias" in overrides:  # repeated flags; the environment variable is comma-separated
        overrides["model_alias"] = ",".join(overrides["model_alias"])
    settings = Settings(**overrides)
    if args.command == "ca-path":
        print(ca_path(settings.data_dir))
    elif args.command == "usage":
        try:
            print_usage(settings, args.usage_key, args.usage_since, args.usage_by)
        except FlashliveError as exc:
            raise SystemExit(exc.message) from None
    elif args.command == "doctor":
        from flashlive import doctor

        raise SystemExit(doctor.run(settings, engine_only=args.engine_only))
    elif args.command == "models":
        for spec in BUILTIN_MODELS:
            print(f"models/{spec.id}\t{spec.display_name}")
    else:
        from flashlive.api.server import serve

        logs.configure(settings.log_level, settings.log_format)
        try:
            asyncio.run(serve(settings))
        except FailedStart as exc:
            raise SystemExit(exc.message) from None


def print_usage(settings: Settings, key: str | None, since: str | None, by: str) -> None:
    prices = PriceTable.load(settings.prices_file)
    ledger = open_ledger(settings.ledger_url, settings.data_dir, prices)

    async def summary() -> list[UsageRow]:
        try:
            return await ledger.summary(
                key_hash=hash_key(key) if key is not None else None,
                since=parse_since(since) if since else None,
                by=cast(GroupBy, by),  # argparse's choices are exactly the GroupBy values
            )
        finally:
            await ledger.close()

    print(usage_table(asyncio.run(summary()), by))


def usage_table(rows: list[UsageRow], by: str) -> str:
    total = UsageRow(
        "total",
        sum(r.requests for r in rows),
        sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows),
        sum(r.cached_tokens for r in rows),
        sum(r.cost_usd for r in rows),
    )
    header = [by, "requests", "input tokens", "output tokens", "cached tokens", "cost (USD)"]
    table = [header, *(_cells(r) for r in [*rows, total])]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    )


def _cells(row: UsageRow) -> list[str]:
    counts = (row.requests, row.input_tokens, row.output_tokens, row.cached_tokens)
    return [row.group, *(str(n) for n in counts), f"{row.cost_usd:.6f}"]


if __name__ == "__main__":
    main()
