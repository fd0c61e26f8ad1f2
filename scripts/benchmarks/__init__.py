"""Benchmark sections run by scripts/benchmark.py."""
