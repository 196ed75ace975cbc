"""What `embwarden init` was asked for: read by its checks and written into the file's template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audits.encoders import BUNDLED_MODEL


@dataclass
class Request:
    deployment: str
    table: str
    url: str | None = None
    connection: str | None = None
    schema: str | None = None
    id_column: str = "id"
    vector_column: str = "embedding"
    version_column: str = "version"
    text_column: str | None = None
    created_at_column: str | None = None
    version: str | None = None
    model: str = BUNDLED_MODEL
    config: Path = Path("embwarden.yaml")
    force: bool = False
    skip_checks: bool = False
