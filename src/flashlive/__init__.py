"""flashlive: a self-hosted model server that speaks the Gemini API."""

__version__ = "0.1.0"
