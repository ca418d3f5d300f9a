"""Benchmarks: measurements of flashlive against its own engine, run as modules."""
