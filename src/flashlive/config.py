"""One Settings object: defaults, overridden by FLASHLIVE_* environment variables, then by flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "flashlive"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLASHLIVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls_port: int = Field(default=8443, ge=0, le=65535)  # 0: no TLS listener
    tls_cert: Path | None = None
    tls_key: Path | None = None
    model: str = "qwen2.5-coder-1.5b-instruct"  # the model loaded at start: a registry id or a path
    # Other names models answer to: comma-separated PATTERN=MODEL, globs allowed (aliases.py).
    model_alias: str | None = None
    data_dir: Path = Field(default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"))
    # Assembled model files are large and rebuildable: they live in the cache, not the data dir.
    models_dir: Path = Field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "models")
    api_keys: str | None = None  # comma-separated
    api_keys_file: Path | None = None  # one key per line; '#' starts a comment
    insecure_open: bool = False
    context_size: int = Field(default=8192, ge=256)
    output_token_limit: int = Field(default=4096, ge=1)
    threads: int | None = Field(default=None, ge=1)
    max_queued: int = Field(default=64, ge=1)
    slots: int = Field(default=8, ge=1, le=64)  # sequences the engine decodes together
    kv_tokens: int | None = Field(default=None, ge=256)  # their shared KV cache; 4 x context
    prefill_slice: int = Field(default=128, ge=8, le=4096)  # prompt tokens read per step
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    live_max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    live_send_timeout_s: float = Field(default=10.0, gt=0)  # a Live client that stops reading
    live_setup_timeout_s: float = Field(default=10.0, gt=0)  # ... that sends no setup
    http_header_timeout_s: float = Field(default=10.0, gt=0)  # a request's headers, in full
    # Hours-long Live sessions (README: "Long Live sessions").
    live_max_connection_s: float = Field(default=600.0, ge=0)  # then goAway and close; 0: never
    live_goaway_notice_s: float = Field(default=10.0, ge=0)  # goAway comes this long before
    live_resume_ttl_s: float = Field(default=7200.0, gt=0)  # a handle outlives its last use so long
    # Where resumption state and ephemeral tokens live: memory, sqlite (in the data dir),
    # sqlite:////abs/path, or redis://host:port/db.
    session_store: str = "memory"
    # A multimodal GGUF and its projector: images are then seen by that model (llama.cpp)
    # instead of the embedded OCR and labels.
    vision_model: Path | None = None
    mmproj: Path | None = None
    image_tokens: int = Field(default=258, ge=1)  # what one image counts as in usage
    audio_tokens_per_s: float = Field(default=32.0, gt=0)  # ... and a second of audio
    video_tokens_per_s: float = Field(default=263.0, gt=0)  # ... and a second of video frames
    video_fps: float = Field(default=1.0, gt=0, le=10)  # frames a second looked at in a video
    tts: str = Field(default="auto", pattern="^(auto|piper|espeak)$")  # auto: Piper, else espeak-ng
    cache_min_tokens: int = Field(default=128, ge=0)  # smaller cachedContents are refused
    cache_sweep_interval_s: float = Field(default=60.0, gt=0)  # how often expired caches go
    kv_ram_bytes: int = Field(default=1 << 30, ge=0)  # saved prefix states kept in RAM
    kv_disk_bytes: int = Field(default=4 << 30, ge=0)  # ... and spilled to <data-dir>/kv
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object a line, with the ids
    # Usage ledger, prices and quotas (see README: "Usage ledger, prices and quotas").
    ledger_url: str | None = None  # None: SQLite at <data_dir>/ledger.sqlite3
    prices_file: Path | None = None  # TOML or JSON; replaces the default prices model by model
    admin_keys: str | None = None  # comma-separated; may read GET /v1beta/usage
    quota_requests_per_min: int = Field(default=0, ge=0)  # per API key; 0: unlimited
    quota_tokens_per_min: int = Field(default=0, ge=0)
    quota_file: Path | None = None  # per-key overrides, TOML or JSON

    def keys(self) -> frozenset[str]:
        keys = set(_split(self.api_keys))
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.add(line)
        # An admin key is also a key: with keys on, it must get past the auth check. With keys
        # off the server stays open; admin keys then only guard the usage endpoint.
        return frozenset(keys | self.admins()) if keys else frozenset()

    def admins(self) -> frozenset[str]:
        return frozenset(_split(self.admin_keys))


def _split(joined: str | None) -> list[str]:
    return [k.strip() for k in (joined or "").split(",") if k.strip()]
