"""Benchmarks: ``python -m tests.bench SUBCOMMAND`` (``./run bench SUBCOMMAND``); see README.md here.

Benchmarks report rates as ratios to a reference measured in the same run; they are never part of the
test run and never assert a timing.
"""
