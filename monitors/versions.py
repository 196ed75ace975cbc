"""Adding a version to a deployment in embwarden.yaml, the file's comments and layout kept.

Versions are immutable, so adding is the only change: an existing name is refused. The file is
edited round-trip (ruamel.yaml), the result validated like any configuration before it replaces
the file, and the replacement is atomic (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import copy
import io
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audits.errors import ConfigError
from monitors.config import NAME, EmbwardenConfig, config_path, load_config


@dataclass(frozen=True)
class AddedVersion:
    path: Path
    deployment: str
    name: str
    transform: dict
    encoder_from: str
    config: EmbwardenConfig


def add_version(deployment: str, name: str, transform: dict, from_version: str | None = None,
                path: str | Path | None = None) -> AddedVersion:
    """Add version `name` of `deployment` with `transform` and the encoder of `from_version`
    (default: the active version) to the configuration file; returns the validated result."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    path = Path(path).expanduser().resolve() if path else config_path()
    config = load_config(path)   # the file as it is must be valid before it is changed
    dep_cfg = config.deployment(deployment)
    where = f"deployments.{deployment}.versions"
    if not re.match(NAME, name):
        raise ConfigError(f"{where}: {name!r} is not a valid version name (lower-case letters, digits, '_.-', "
                          "starting with a letter or digit)")
    if name in dep_cfg.versions:
        raise ConfigError(f"{where}: version {name!r} exists already; versions are immutable, choose another name")
    if not isinstance(transform, dict) or "kind" not in transform:
        raise ConfigError(f"{where}.{name}.transform: expected an object with a 'kind', found {transform!r}")
    source = from_version or dep_cfg.active_version
    if source not in dep_cfg.versions:
        raise ConfigError(f"{where}: no version {source!r} to copy the encoder from; it has {sorted(dep_cfg.versions)}")

    text = path.read_text()
    mapping, offset = _layout(text)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096   # never re-wrap a long line
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    data = yaml.load(text)
    versions = data["deployments"][deployment]["versions"]
    entry = CommentedMap()
    encoder = versions[source].get("encoder") if isinstance(versions[source], dict) else None
    if encoder is not None:
        entry["encoder"] = copy.deepcopy(encoder)
    flow = CommentedMap(transform)
    flow.fa.set_flow_style()
    entry["transform"] = flow
    versions[name] = entry
    versions.yaml_add_eol_comment(f"added by `embwarden versions add` on {datetime.now(UTC):%Y-%m-%d}", name)
    out = io.StringIO()
    yaml.dump(data, out)

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(out.getvalue())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        try:
            updated = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, str(path))) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return AddedVersion(path, deployment, name, updated.deployment(deployment).versions[name].transform.spec(),
                        source, updated)


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
