"""Pure wire models of the Gemini API: parsing, validation, serialisation. No I/O."""
