"""`embwarden init`: a commented `embwarden.yaml` for a new deployment, and proof that it can work.

    embwarden init support-search --table prod_vectors --url postgresql://reader@db/app
    embwarden init support-search --table prod_vectors --connection app_db --model /models/minilm

It looks at the table first (the connection answers, the table and the columns exist, how many
rows each version has), takes the newest version as the active one unless `--version` names it,
puts the deployment (source, encoder, version, probes, thresholds, drift; every field with a
comment) into a new file or into an existing one (other deployments and comments are kept; a
deployment of the same name is replaced only with `--force`), validates the result as the DAGs
will load it, and checks that the source answers (one vector read through the deployment's source,
its dimension), that the encoder answers (one sentence embedded, its dimension and time) and that
the two dimensions agree. Each check prints an `ok` or `FAIL` line; the file is written only when
every check passed (or with `--skip-checks`), and a failure exits 1 naming the connection, table or
column at fault.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from audits.encoders import BUNDLED_MODEL
from audits.errors import EmbwardenError
from monitors.cli.init_checks import (
    CREATED_AT_COLUMNS,
    TEXT_COLUMNS,
    Report,
    check_pipeline,
    inspect_table,
    pick_version,
    source_url,
)
from monitors.cli.init_request import Request
from monitors.cli.init_template import deployment_block, new_file


class InitError(EmbwardenError):
    """The deployment cannot be written as asked (an existing one, a bad file)."""


def add_parser(sub) -> None:
    p = sub.add_parser("init", help="write a commented embwarden.yaml for a new deployment and check it answers",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("deployment", help="the deployment's name (lowercase letters, digits, - _ .)")
    p.add_argument("--table", required=True, help="the table holding the production vectors")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="SQLAlchemy URL of the database (postgresql://user@host/db, sqlite:///file.db)")
    where.add_argument("--connection", help="an Airflow connection id (outside Airflow: AIRFLOW_CONN_<ID>)")
    p.add_argument("--schema", help="the table's schema (default: the connection's default)")
    p.add_argument("--id-column", default="id", help="unique row id (default id)")
    p.add_argument("--vector-column", default="embedding", help="the stored vector (default embedding)")
    p.add_argument("--version-column", default="version", help="which pipeline version made the row (default version)")
    p.add_argument("--text-column", help="the text each vector was made from (default: a column named "
                                         + " or ".join(TEXT_COLUMNS) + " when the table has one)")
    p.add_argument("--created-at-column", help="when each row was written (default: a column named "
                                               + " or ".join(CREATED_AT_COLUMNS) + " when the table has one)")
    p.add_argument("--version", help="the version to audit, as stored in the version column (default: the newest)")
    p.add_argument("--model", default=BUNDLED_MODEL,
                   help=f"Hugging Face model directory of the encoder (default {BUNDLED_MODEL})")
    # Also accepted before the command (`embwarden --config FILE init ...`); here it wins.
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="the file to write or add to (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")
    p.add_argument("--force", action="store_true", help="replace a deployment of the same name in the file")
    p.add_argument("--skip-checks", action="store_true",
                   help="write the file without reaching the database or loading the model")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitors.config import config_path

    url = args.url
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())   # the file is read from elsewhere
    request = Request(
        deployment=args.deployment, table=args.table, url=url, connection=args.connection, schema=args.schema,
        id_column=args.id_column, vector_column=args.vector_column, version_column=args.version_column,
        text_column=args.text_column, created_at_column=args.created_at_column, version=args.version,
        model=args.model, config=Path(args.config).expanduser() if getattr(args, "config", None) else config_path(),
        force=args.force, skip_checks=args.skip_checks)
    try:
        return init(request)
    except EmbwardenError as exc:
        print(f"embwarden init: {exc}", file=sys.stderr)
        return 2


def init(request: Request) -> int:
    """Check, write, report; 0 when the file was written, 1 when a check failed (nothing written)."""
    from monitors.config import NAME, rewrite

    if not re.match(NAME, request.deployment):
        raise InitError(f"deployment name {request.deployment!r}: use lowercase letters, digits, '-', '_' or '.' "
                        "(at most 63, starting with a letter or digit)")
    path = request.config.expanduser().resolve()
    existing = _existing(path, request)
    report = Report()
    info = None
    if not request.skip_checks:
        url = source_url(request, report)
        info = inspect_table(url, request, report) if url else None
    version = pick_version(request, info, report)
    text = deployment_block(request, version, info)
    document = (rewrite.add_deployment(existing[0], request.deployment, text) if existing is not None
                else new_file(text))

    # Validated exactly as the DAGs will load it; written only when every check passed.
    def checked(config) -> bool:
        if not request.skip_checks:
            check_pipeline(config, request.deployment, version, info, report)
        return not report.failed

    if rewrite.replace_validated(path, document, checked) is None:
        print(f"embwarden init: {report.failed} check(s) failed; {path} was not written", file=sys.stderr)
        return 1
    verb = ("wrote" if existing is None else "replaced" if request.deployment in existing[1] else "added")
    print(f"{verb} deployment {request.deployment} (active version {version}) in {path}")
    name = request.deployment
    conf = json.dumps({"deployment": name})
    print("next:\n"
          f"  $EDITOR {path}    # probes, thresholds, alerts: every field is commented\n"
          "  embwarden migrate && embwarden sync    # the ledger's tables; the deployment and its thresholds\n"
          "  airflow db migrate    # Airflow's own metadata database, once\n"
          f"  airflow dags test privacy_audit -c '{conf}'    # the first audit\n"
          f"  embwarden status {name}    # gate, last run, scores against their levels, report path\n"
          "then unpause privacy_audit in Airflow: it audits daily")
    return 0


def _existing(path: Path, request: Request) -> tuple[str, dict] | None:
    """The existing file's text and deployments (None: no file yet); refuses to replace one without --force."""
    if not path.exists():
        return None
    import yaml

    current = path.read_text()
    try:
        data = yaml.safe_load(current) or {}
    except yaml.YAMLError as exc:
        raise InitError(f"{path} exists but is not valid YAML ({exc}); fix or move it first") from None
    if not isinstance(data, dict) or not isinstance(data.get("deployments") or {}, dict):
        raise InitError(f"{path} exists but is not an embwarden configuration (no `deployments:` mapping)")
    deployments = data.get("deployments") or {}
    if request.deployment in deployments and not request.force:
        raise InitError(f"{path} already has a deployment {request.deployment!r}; --force replaces it "
                        "(its ledger history stays)")
    return current, deployments


