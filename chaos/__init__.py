"""Seeded chaos harness for lb: real Redis (AOF), worker subprocesses, faults, checkers.

Run ``python -m chaos --seed N --duration S [--short]``; see ``chaos/__main__.py``.
"""
