"""Mime types as clients write them: any case, with parameters after a semicolon."""

from __future__ import annotations


def mime_base(mime: str) -> str:
    """A mime type's type/subtype, lower-cased, without its parameters: "audio/pcm"."""
    return mime.split(";", 1)[0].strip().lower()
