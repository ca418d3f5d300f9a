"""The language model behind one small interface; knows nothing of HTTP or the Gemini JSON."""

from flashlive.engine.base import (
    CancelToken,
    Engine,
    EngineInfo,
    FinishCause,
    PrefixState,
    SamplingParams,
    TokenPiece,
)

__all__ = [
    "CancelToken",
    "Engine",
    "EngineInfo",
    "FinishCause",
    "PrefixState",
    "SamplingParams",
    "TokenPiece",
]
