"""The host name a test's Celery worker reports for its tasks (Airflow's core.hostname_callable):
several workers on one machine stand for several machines, so each reports its own name."""

import os
import socket


def name() -> str:
    return os.environ.get("EMBWARDEN_TEST_WORKER") or socket.getfqdn()
