"""Writing embwarden.yaml back: round-trip edits that keep the file's comments and its own layout,
and one validated, atomic replacement (used by `embwarden init` and `embwarden versions add`).
"""

from __future__ import annotations

import copy
import io
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from audits.errors import ConfigError
from monitors.config.deployment import EmbwardenConfig
from monitors.config.files import load_config


def replace_validated(path: Path, text: str,
                      check: Callable[[EmbwardenConfig], bool] | None = None) -> EmbwardenConfig | None:
    """Replace `path` with `text` only when it loads as a valid configuration (as the DAGs will load
    it: relative paths against its folder) and `check` (if given) accepts it; atomically, keeping the
    file's mode. Returns the new configuration, or None when `check` refused it (nothing written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, str(path))) from None
        if check is not None and not check(config):
            return None
        os.replace(tmp, path)
        return config
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def add_deployment(current: str, name: str, block: str) -> str:
    """Add (or replace) deployment `name` (the YAML text `block`, under `deployments:`) in `current`,
    keeping its other content and comments."""
    yaml = _round_trip(current)
    doc = yaml.load(current)
    new = yaml.load(block)["deployments"][name]
    if doc.get("deployments") is None:
        doc["deployments"] = {name: new}
    else:
        doc["deployments"][name] = new
    return _dump(yaml, doc)


def add_version(current: str, deployment: str, name: str, encoder_from: str, transform: Mapping) -> str:
    """Add version `name` of `deployment` with `transform` (a flow mapping) and a copy of version
    `encoder_from`'s encoder, with a comment saying when."""
    from ruamel.yaml.comments import CommentedMap

    yaml = _round_trip(current)
    data = yaml.load(current)
    versions = data["deployments"][deployment]["versions"]
    entry = CommentedMap()
    encoder = versions[encoder_from].get("encoder") if isinstance(versions[encoder_from], dict) else None
    if encoder is not None:
        entry["encoder"] = copy.deepcopy(encoder)
    flow = CommentedMap(transform)
    flow.fa.set_flow_style()
    entry["transform"] = flow
    versions[name] = entry
    versions.yaml_add_eol_comment(f"added by `embwarden versions add` on {datetime.now(UTC):%Y-%m-%d}", name)
    return _dump(yaml, data)


def _round_trip(text: str):
    """ruamel.yaml set to the file's own layout, never re-wrapping a long line."""
    from ruamel.yaml import YAML

    mapping, offset = _layout(text)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return yaml


def _dump(yaml, data) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_KEY_OPENING_BLOCK = re.compile(r"[^#'\"]*:\s*(#.*)?$")


def _layout(text: str) -> tuple[int, int]:
    """How the file indents: (a nested mapping's indent, a block sequence's dash offset).

    ruamel.yaml writes one layout for the whole file, so it has to be the file's own; its
    `load_yaml_guess_indent` reads the indent of a sequence item's content as the mapping indent.
    """
    mapping = offset = None
    opener: int | None = None        # indentation of the last key whose value is a nested block
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if opener is not None and indent > opener:
            if stripped.startswith("- "):
                offset = indent - opener if offset is None else offset
            elif mapping is None:
                mapping = indent - opener
        opener = indent if not stripped.startswith("- ") and _KEY_OPENING_BLOCK.match(stripped) else None
    return mapping or 2, offset or 0
