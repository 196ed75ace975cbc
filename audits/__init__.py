"""What leaks: sources, encoders, transforms, corpora and probes.

This package knows nothing of Airflow or the ledger; `monitors` builds on its result types.
"""
