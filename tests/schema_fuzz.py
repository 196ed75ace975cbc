"""Schemathesis against a running API: every operation of its OpenAPI document, with valid and
invalid requests (bounded), must answer without a 5xx (but those `allowed`, e.g. the service's 503
for a closed gate) and without a traceback in the body."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode


def no_server_errors(document: dict, base_url: str, headers: dict[str, str] | None = None,
                     examples: int = 30, allowed: tuple[int, ...] = ()) -> dict[str, Counter]:
    """Statuses seen per operation; raises AssertionError naming the first request that got a 5xx."""
    schema = schemathesis.openapi.from_dict(document)
    seen: dict[str, Counter] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        seen[name] = Counter()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, name, seen[name], base_url, headers, examples, allowed)
            except Unsatisfiable:   # nothing invalid to send (an operation without parameters or body)
                assert mode is GenerationMode.NEGATIVE, name
    return seen


def _fuzz(operation, mode, name: str, statuses: Counter, base_url: str, headers: dict[str, str] | None,
          examples: int, allowed: tuple[int, ...]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call(base_url=base_url, headers=headers)
        statuses[response.status_code] += 1
        assert response.status_code < 500 or response.status_code in allowed, (
            f"{name} answered {response.status_code}: {response.text[:500]!r} to "
            f"path={case.path_parameters} query={case.query} body={case.body!r}")
        assert "Traceback" not in response.text, f"{name}: a traceback in the answer"

    check()
