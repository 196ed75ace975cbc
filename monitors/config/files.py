"""Reading embwarden.yaml: where it is, loading and validating it, and its errors as one line per field."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from audits.errors import ConfigError
from audits.params import problems
from monitors.config.deployment import EmbwardenConfig

DEFAULT_CONFIG = "embwarden.yaml"
# Where run data and caches live, from the environment (the same file then serves a one-machine and a
# multi-worker deployment, e.g. Compose's `celery` profile): env var -> (section, key) in the file.
STORAGE_ENV = {"EMBWARDEN_ARTIFACTS_ROOT": ("artifacts", "root"),
               "EMBWARDEN_STORE_CONNECTION": ("artifacts", "connection"),
               "EMBWARDEN_CACHE_DIR": (None, "cache_dir")}


def config_path() -> Path:
    return Path(os.environ.get("EMBWARDEN_CONFIG", DEFAULT_CONFIG)).expanduser().resolve()


def load_config(path: str | Path | None = None) -> EmbwardenConfig:
    path = Path(path).expanduser().resolve() if path else config_path()
    if not path.is_file():
        raise ConfigError(f"configuration file {path} not found (set EMBWARDEN_CONFIG or create {DEFAULT_CONFIG})")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    for env, (section, key) in STORAGE_ENV.items():
        if os.environ.get(env):
            target = data.setdefault(section, {}) if section else data
            if not isinstance(target, dict):
                raise ConfigError(f"{path}: {section} must be a mapping")
            target[key] = os.environ[env]
    try:
        return EmbwardenConfig.model_validate({**data, "base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + format_errors(exc)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: what is wrong, and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def read_text(path: Path) -> str:
    """A text file as UTF-8, or a ConfigError naming the file and the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save the file as UTF-8") from None


# Discriminated unions add the tag to the path; it is not a field the user wrote.
_TAGS = re.compile(r"sql|parquet|file|local|openai|tei|none|gaussian_noise|clip_gaussian|vmf|random_projection"
                   r"|quantize|synthetic|general|production|mixed|email|webhook")


def format_errors(exc: ValidationError) -> str:
    """One line per problem: dotted field path, what was expected, and what was found."""
    return "; ".join(problems(exc, hidden=_TAGS))
