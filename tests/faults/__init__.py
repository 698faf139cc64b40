"""Fault injection with real processes (issue 10): crashes, partitions, clock skew, a full disk, a
byzantine peer. One module per scenario, each returning a :class:`~tests.faults.harness.Tally`;
``python -m tests.faults report`` runs them all (``README.md`` here); ``tests/integration/test_faults.py``
runs small versions in CI.
"""
