"""Process wiring: settings → models → app → an HTTP listener and an HTTPS listener."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import uvicorn.config
from starlette.types import ASGIApp

from flashlive.aliases import parse_aliases
from flashlive.api.app import build_app
from flashlive.api.keys import RedactCredentials
from flashlive.api.listener import listener_options
from flashlive.api.usage import UsageSetup
from flashlive.auth import ApiKeys
from flashlive.cache.kv import PrefixStore
from flashlive.cache.registry import CacheRegistry
from flashlive.config import Settings
from flashlive.engine import selfcheck
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.errors import FailedStart, FlashliveError, Unavailable
from flashlive.generation.service import GenerationService, MediaTokens
from flashlive.ledger import PriceTable, open_ledger
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.logs import current_caller
from flashlive.models import BUILTIN_MODELS, ModelManager, ModelSpec, assemble, spec_for_path
from flashlive.perception.audio import FloatArray
from flashlive.perception.vision import EmbeddedVision, NativeVision, Vision
from flashlive.protocol.base import model_id
from flashlive.quota import QuotaLimits, Quotas, load_overrides
from flashlive.store import Store, open_store
from flashlive.tls import TlsFiles, ensure_local_tls, user_tls

log = logging.getLogger("flashlive")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 4 << 20
T = TypeVar("T")


class _Server(uvicorn.Server):
    """A listener that leaves signal handling to `serve`, which stops both listeners."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def keep_large_blocks_in_mmap() -> None:
    """Serve big allocations from mmap, so they go back to the system when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB); after that
    the engine states a Live session saves every turn (tens of MB each) come from the heap,
    which they fragment: the soak benchmark's memory then creeps up turn after turn. A fixed
    threshold also turns that adjustment off. Other C libraries are left alone.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator keeps its defaults")


def load_vision(settings: Settings) -> Vision:
    if (settings.vision_model is None) != (settings.mmproj is None):
        raise FailedStart("--vision-model and --mmproj go together")
    if settings.vision_model is None or settings.mmproj is None:
        return EmbeddedVision.load(settings.models_dir)
    try:
        return NativeVision.load(settings.vision_model, settings.mmproj, threads=settings.threads)
    except (OSError, ValueError) as exc:
        raise FailedStart(f"the vision model did not load: {exc}") from None


def check_engine(settings: Settings, spec: ModelSpec) -> None:
    """The engine must load and decode on this CPU before anything is served (a child process
    tries it, so a crash is a message, not a vanished server)."""
    try:
        path = assemble(spec, settings.models_dir)
        result = selfcheck.ensure(path, settings.models_dir / "selfcheck")
    except (OSError, ValueError, selfcheck.EngineUnusable) as exc:
        raise FailedStart(f"flashlive cannot serve {spec.id}: {exc}") from None
    log.info("engine self-check passed on the '%s' CPU variant: %s", result.variant, result.detail)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_models(settings: Settings) -> tuple[list[ModelSpec], str]:
    specs = list(BUILTIN_MODELS)
    if any(s.id == model_id(settings.model) for s in specs):
        return specs, model_id(settings.model)
    path = Path(settings.model).expanduser()
    if path.suffix.lower() != ".gguf" and not path.exists():
        known = ", ".join(s.id for s in specs)
        raise FailedStart(f"unknown model {settings.model!r}: give one of {known} or a .gguf path")
    try:
        custom = spec_for_path(path.absolute())
    except FileNotFoundError as exc:
        raise FailedStart(str(exc)) from None
    specs = [s for s in specs if s.id != custom.id] + [custom]
    return specs, custom.id


def tls_files(settings: Settings) -> TlsFiles:
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise FailedStart("--tls-cert and --tls-key go together")
        try:
            return user_tls(settings.tls_cert, settings.tls_key)
        except ValueError as exc:
            raise FailedStart(str(exc)) from None
    names = ["localhost"]
    addresses = ["127.0.0.1", "::1"]
    if settings.host not in ("0.0.0.0", "::", "localhost") and settings.host not in addresses:
        (addresses if _is_ip(settings.host) else names).append(settings.host)
    return ensure_local_tls(settings.data_dir, hostnames=names, addresses=addresses)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def usage_setup(settings: Settings) -> UsageSetup:
    try:
        prices = PriceTable.load(settings.prices_file)
        limits = QuotaLimits(settings.quota_requests_per_min, settings.quota_tokens_per_min)
        quotas = Quotas(limits, load_overrides(settings.quota_file, limits))
        ledger = open_ledger(settings.ledger_url, settings.data_dir, prices)
    except FlashliveError as exc:
        raise FailedStart(exc.message) from None
    return UsageSetup(ledger, prices, quotas, settings.admins())


@dataclass
class Components:
    """What one serving process runs, built from its settings."""

    models: ModelManager
    default_model: str
    perception: Perception
    caches: CacheRegistry
    usage: UsageSetup
    app: ASGIApp


async def serve(settings: Settings) -> None:
    # uvicorn logs each request line and WebSocket handshake, query string included: a key or
    # ephemeral token passed as ?key= / ?access_token= must not land in the log.
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactCredentials())
    keep_large_blocks_in_mmap()
    built = await build(settings)
    servers = [listener(settings, built.app, settings.port)]
    if settings.tls_port:
        files = tls_files(settings)
        servers.append(listener(settings, built.app, settings.tls_port, files))
        if files.ca is not None:
            sys.stderr.write(f"TLS on port {settings.tls_port}; clients trust {files.ca}\n")

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loader = asyncio.create_task(load_default(built))
    sweeper = asyncio.create_task(built.caches.run_sweeper(settings.cache_sweep_interval_s))
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        loader.cancel()
        sweeper.cancel()
        built.perception.close()
        await built.models.aclose()
        await built.usage.ledger.close()


async def build(settings: Settings) -> Components:
    """Every component, checked: a setting that cannot work stops the start (FailedStart)."""
    keys = ApiKeys(settings.keys())
    if not keys.enabled and not is_loopback(settings.host) and not settings.insecure_open:
        raise FailedStart(
            f"refusing to serve without API keys on {settings.host}: set FLASHLIVE_API_KEYS "
            "(or --api-keys-file), bind to 127.0.0.1, or pass --insecure-open"
        )
    specs, default_model = resolve_models(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    models = model_manager(settings, specs)
    await asyncio.to_thread(check_engine, settings, next(s for s in specs if s.id == default_model))
    perception = await load_perception(settings)
    vision = load_vision(settings)  # shared by REST and Live
    service = generation_service(settings, models, perception, vision)
    caches = CacheRegistry(settings.data_dir, min_tokens=settings.cache_min_tokens)
    usage = usage_setup(settings)
    store = _started(open_store, settings.session_store, settings.data_dir)
    app = build_app(
        models=models,
        service=service,
        keys=keys,
        default_model=default_model,
        max_request_bytes=settings.max_request_bytes,
        live=live_services(settings, models, service, perception, vision, store),
        usage=usage,
        caches=caches,
        store=store,
    )
    return Components(models, default_model, perception, caches, usage, app)


def _started(open_it: Callable[..., T], *args: Any) -> T:
    """`open_it(*args)`, its ValueError (a setting it cannot use) a FailedStart."""
    try:
        return open_it(*args)
    except ValueError as exc:
        raise FailedStart(str(exc)) from None


def model_manager(settings: Settings, specs: list[ModelSpec]) -> ModelManager:
    options = LlamaCppOptions(
        context_size=settings.context_size,
        threads=settings.threads,
        max_queued=settings.max_queued,
        slots=settings.slots,
        kv_tokens=settings.kv_tokens,
        prefill_slice=settings.prefill_slice,
    )
    aliases = _started(parse_aliases, [settings.model_alias or ""])
    return _started(
        lambda: ModelManager(
            specs, models_dir=settings.models_dir, options=options, aliases=aliases
        )
    )


async def load_perception(settings: Settings) -> Perception:
    perception = Perception(tts=settings.tts)
    if settings.tts != "auto":
        # A voice chosen by name is loaded now: one that cannot speak stops the start, rather
        # than a fallback speaking with another voice.
        try:
            await perception.tts.get()
        except Unavailable as exc:
            raise FailedStart(exc.message) from None
    return perception


def generation_service(
    settings: Settings, models: ModelManager, perception: Perception, vision: Vision
) -> GenerationService:
    async def transcribe(samples: FloatArray) -> str:
        transcriber = await perception.asr.get()
        return await transcriber.transcribe_long(current_caller("rest"), samples)

    return GenerationService(
        models,
        output_token_limit=settings.output_token_limit,
        prefixes=PrefixStore(
            ram_bytes=settings.kv_ram_bytes,
            spill_dir=settings.data_dir / "kv",
            disk_bytes=settings.kv_disk_bytes,
        ),
        vision=vision,
        transcribe=transcribe,
        media_tokens=MediaTokens(
            settings.image_tokens, settings.audio_tokens_per_s, settings.video_tokens_per_s
        ),
        video_fps=settings.video_fps,
    )


def live_services(
    settings: Settings,
    models: ModelManager,
    service: GenerationService,
    perception: Perception,
    vision: Vision,
    store: Store,
) -> LiveServices:
    return LiveServices(
        models=models,
        generation=service,
        perception=perception,
        limits=LiveLimits(
            max_frame_bytes=settings.live_max_frame_bytes,
            send_timeout_s=settings.live_send_timeout_s,
            setup_timeout_s=settings.live_setup_timeout_s,
            max_connection_s=settings.live_max_connection_s,
            goaway_notice_s=settings.live_goaway_notice_s,
            resume_ttl_s=settings.live_resume_ttl_s,
        ),
        store=store,
        vision=vision,
    )


def listener(settings: Settings, app: ASGIApp, port: int, files: TlsFiles | None = None) -> _Server:
    return _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=port,
            log_level=settings.log_level,
            # In JSON, uvicorn's lines go through the root logger's one handler (logs.py).
            log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            lifespan="off",
            timeout_graceful_shutdown=5,
            ssl_certfile=str(files.cert) if files else None,
            ssl_keyfile=str(files.key) if files else None,
            # Up to twice our limit reaches the session, which names the limit in its reason.
            ws_max_size=2 * settings.live_max_frame_bytes,
            **listener_options(
                header_timeout_s=settings.http_header_timeout_s,
                send_timeout_s=settings.live_send_timeout_s,
            ),
        )
    )


async def load_default(built: Components) -> None:
    try:
        await built.models.get(built.default_model)
    except Exception:
        log.exception("the default model failed to load; /healthz stays 503")
    try:
        await built.perception.warm_up()
    except Exception:
        log.exception("a speech model failed to load; Live sessions will retry")
