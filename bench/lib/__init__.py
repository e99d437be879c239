"""Shared parts of the benchmarks.

Kept import-light on purpose: ``bench.lib.raw_consumer`` (the bare nats-py baseline process)
imports this package, and its memory is one of the measured figures.
"""
