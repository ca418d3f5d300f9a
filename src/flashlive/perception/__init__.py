"""Modality → text and back: voice activity (Silero), speech recognition (Whisper), speech
synthesis (Piper, espeak-ng), PCM handling. Knows nothing of HTTP, WebSockets or the Gemini JSON.

Submodules load heavy libraries (onnxruntime, CTranslate2) only when imported; import them directly.
"""
