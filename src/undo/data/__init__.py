"""Benchmarks: one module each (arithmetic is embedded; text corpora come later)."""
