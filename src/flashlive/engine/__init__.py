"""The language model behind one small interface; knows nothing of HTTP or the Gemini JSON."""

from flashlive.engine.base import (
    CancelToken,
    Engine,
    EngineInfo,
    FinishCause,
    PrefixState,
    SamplingParams,
    TokenPiece,
    common_prefix,
)

__all__ = [
    "CancelToken",
    "Engine",
    "EngineInfo",
    "FinishCause",
    "PrefixState",
    "SamplingParams",
    "TokenPiece",
    "common_prefix",
]
