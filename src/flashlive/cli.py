"""`flashlive serve | ca-path | models`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from flashlive.config import Settings
from flashlive.models import BUILTIN_MODELS
from flashlive.tls import ca_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashlive", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the Gemini API (every flag is also FLASHLIVE_*)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--tls-port", type=int, help="HTTPS/WSS port; 0 turns TLS off")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--model", help="a registry model id or a path to a .gguf file")
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--models-dir", type=Path)
    serve.add_argument("--api-keys-file", type=Path)
    serve.add_argument("--insecure-open", action="store_true", default=None)
    serve.add_argument("--context-size", type=int)
    serve.add_argument("--output-token-limit", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--max-queued", type=int)
    serve.add_argument("--max-request-bytes", type=int)
    serve.add_argument("--live-max-frame-bytes", type=int)
    serve.add_argument("--live-send-timeout-s", type=float)
    serve.add_argument("--tts", choices=["auto", "piper", "espeak"])
    serve.add_argument("--log-level")
    ca = sub.add_parser("ca-path", help="print the local CA certificate file clients should trust")
    ca.add_argument("--data-dir", type=Path)
    sub.add_parser("models", help="list the built-in models")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if v is not None and k != "command"
    }
    settings = Settings(**overrides)
    if args.command == "ca-path":
        print(ca_path(settings.data_dir))
    elif args.command == "models":
        for spec in BUILTIN_MODELS:
            print(f"models/{spec.id}\t{spec.display_name}")
    else:
        from flashlive.api.server import serve

        logging.basicConfig(
            level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
        )
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
