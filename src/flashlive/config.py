"""One Settings object: defaults, overridden by FLASHLIVE_* environment variables, then by flags."""

from __future__ import annotations

import os
from pathlib import Path

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
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    live_max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    live_send_timeout_s: float = Field(default=10.0, gt=0)  # a Live client that stops reading
    tts: str = Field(default="auto", pattern="^(auto|piper|espeak)$")  # auto: Piper, else espeak-ng
    log_level: str = "info"

    def keys(self) -> frozenset[str]:
        keys = {k.strip() for k in (self.api_keys or "").split(",") if k.strip()}
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.add(line)
        return frozenset(keys)
