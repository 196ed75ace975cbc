"""Steps of the compose file's `airflow-init` that are more than one command.

    python init_helpers.py passwords FILE USER PASSWORD
        SimpleAuthManager reads its users' passwords from a JSON file (and generates random ones for
        users it does not find there): give USER the PASSWORD, keeping the file's other users.
    python init_helpers.py seed-demo
        The example embwarden.yaml audits `support-search`, whose production table is a SQLite file
        that `make demo` fills. Fill it the same way (embeddings of synthetic messages by v1 and v2)
        when the configuration still points there and the file does not exist yet; a configuration
        pointing at your own tables is left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEMO_DEPLOYMENT = "support-search"
DEMO_VERSIONS = {"v1", "v2"}


def write_password(path: Path, user: str, password: str) -> None:
    passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
    passwords[user] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(passwords) + "\n")


def demo_table(config) -> Path | None:
    """The SQLite file of the example deployment's production table, if the configuration still has it."""
    dep = config.deployments.get(DEMO_DEPLOYMENT)
    if dep is None or dep.source.kind != "sql" or not dep.source.url or not DEMO_VERSIONS <= set(dep.versions):
        return None
    url = config.resolve_url(dep.source.url)
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix):])


def seed_demo(config=None) -> Path | None:
    from monitors.cli.demo import seed_production
    from monitors.config import load_config

    config = config or load_config()
    path = demo_table(config)
    if path is None or path.exists():
        return None
    seed_production(config, path)
    return path


def main(argv: list[str]) -> int:
    if argv[:1] == ["passwords"] and len(argv) == 4:
        write_password(Path(argv[1]), argv[2], argv[3])
        print(f"embwarden: SimpleAuthManager password of {argv[2]} set in {argv[1]}")
        return 0
    if argv == ["seed-demo"]:
        path = seed_demo()
        print(f"embwarden: example production table written to {path}" if path else
              "embwarden: no example production table to write")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
