"""The language model behind one small interface; knows nothing of HTTP or the Gemini JSON."""

from flashlive.engine.base import (
    CancelToken,
    Engine,
    EngineInfo,
    EngineStats,
    FinishCause,
    PrefixState,
    Priority,
    SamplingParams,
    TokenPiece,
    common_prefix,
)

__all__ = [
    "CancelToken",
    "Engine",
    "EngineInfo",
    "EngineStats",
    "FinishCause",
    "PrefixState",
    "Priority",
    "SamplingParams",
    "TokenPiece",
    "common_prefix",
]
