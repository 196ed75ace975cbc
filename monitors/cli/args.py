"""Argument types the sub-commands share: each says what it expected when a value is refused."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, found {text!r}")
    return int(text)


def number(field: str, none: bool = False) -> Callable[[str], float | None]:
    """A finite number (or, with `none`, the words none/null for "remove it")."""
    def parse(text: str) -> float | None:
        if none and text.strip().lower() in ("none", "null"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: expected a number, found {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{field}: expected a finite number, found {text!r}")
        return value
    return parse


def numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, found {text!r}") from None


def json_object(flag: str) -> Callable[[str], dict]:
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag}: expected a JSON object, found {text!r}")
        return value
    return parse


def names(text: str) -> list[str]:
    """Comma-separated names (probes)."""
    return [p.strip() for p in text.split(",") if p.strip()]
