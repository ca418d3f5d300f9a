"""One request: assemble the prompt, run the engine, shape candidates and usage."""
