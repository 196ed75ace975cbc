"""Real, non-templated English sentences available offline: first sentences of the docstrings
of installed libraries. Technical prose, not user messages, but written by people and without
shared templates, so it shows how the probes fare off the synthetic distribution."""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path

PACKAGES = ("sklearn", "scipy", "pandas", "numpy", "sqlalchemy", "transformers", "airflow", "torch", "alembic",
            "pydantic", "jinja2", "faker", "great_expectations", "evidently")
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def _first_sentence(doc: str) -> str | None:
    text = " ".join(doc.strip().split())
    match = _SENTENCE.match(text)
    if not match:
        return None
    sentence = match.group(1)
    words = sentence.split()
    letters = sum(ch.isalpha() or ch == " " for ch in sentence) / max(1, len(sentence))
    if not 6 <= len(words) <= 30 or letters < 0.9 or any(ch in sentence for ch in "`=<>{}[]_\\|"):
        return None
    return sentence


def sentences(limit: int, seed: int = 0) -> list[str]:
    """Up to `limit` distinct sentences, the same ones for a seed on the same installation."""
    import importlib.util

    found: set[str] = set()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc and (sentence := _first_sentence(doc)):
                        found.add(sentence)
    ordered = sorted(found)
    random.Random(seed).shuffle(ordered)
    return ordered[:limit]
