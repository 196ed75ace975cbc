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
import io
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from audits.encoders import BUNDLED_MODEL
from audits.errors import EmbwardenError
from audits.pgvector import register_pgvector_types

SENTENCE = "Hello Ms Novak, your appointment about the asthma check-up has moved to Tuesday at 10:30."
TEXT_COLUMNS = ("text", "body", "content")          # picked up when --text-column is not given
CREATED_AT_COLUMNS = ("created_at", "inserted_at")  # picked up when --created-at-column is not given
DEFAULT_MAX_AGE_HOURS = 168                          # validation.max_age_hours' default
DEFAULT_MIN_ROWS = 50                                # validation.min_rows' default
PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")


class InitError(EmbwardenError):
    """The deployment cannot be written as asked (an existing one, a bad file)."""


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


@dataclass
class TableInfo:
    """What the table says: its columns and, per version, row count and newest row."""

    columns: list[str]
    counts: dict[str, int]
    newest: dict[str, datetime | None] = field(default_factory=dict)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: int = 0

    def ok(self, what: str, detail: str) -> None:
        self._say(f"ok   {what}: {detail}")

    def note(self, what: str, detail: str) -> None:
        self._say(f"note {what}: {detail}")

    def fail(self, what: str, detail: str) -> None:
        self.failed += 1
        self._say(f"FAIL {what}: {detail}")

    def _say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


# -- the command line ----------------------------------------------------------------------------
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


# -- the work ------------------------------------------------------------------------------------
def init(request: Request) -> int:
    """Check, write, report; 0 when the file was written, 1 when a check failed (nothing written)."""
    from audits.errors import ConfigError
    from monitors.config import NAME, load_config

    if not re.match(NAME, request.deployment):
        raise InitError(f"deployment name {request.deployment!r}: use lowercase letters, digits, '-', '_' or '.' "
                        "(at most 63, starting with a letter or digit)")
    path = request.config.expanduser().resolve()
    existing = _existing(path, request)
    report = Report()
    info = None
    if not request.skip_checks:
        url = _source_url(request, report)
        info = inspect_table(url, request, report) if url else None
    version = _pick_version(request, info, report)
    text = deployment_block(request, version, info)
    document = merge(existing[0], request.deployment, text) if existing is not None else new_file(text)

    # Validate exactly what will be written, as the DAGs load it (relative paths against its folder).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".init", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(document)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, str(path))) from None
        if not request.skip_checks:
            check_pipeline(config, request.deployment, version, info, report)
        if report.failed:
            print(f"embwarden init: {report.failed} check(s) failed; {path} was not written", file=sys.stderr)
            return 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _source_url(request: Request, report: Report) -> str | None:
    from monitors.database import connection_url

    if request.url:
        from sqlalchemy.engine import make_url

        try:
            if make_url(request.url).password:
                report.note("source", "the URL's password is written into the file in clear; --connection keeps "
                                      "it in Airflow's connections (or secrets backend) instead")
        except Exception:  # noqa: BLE001 - inspect_table reports a bad URL
            pass
        return request.url
    try:
        url = connection_url(request.connection)
    except EmbwardenError as exc:
        report.fail("source", str(exc))
        return None
    if url is None:
        report.fail("source", f"Airflow connection {request.connection!r} is not defined (outside Airflow, set "
                              f"AIRFLOW_CONN_{request.connection.upper()})")
    return url


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported as it is
        return url


def inspect_table(url: str, request: Request, report: Report) -> TableInfo | None:
    """Connect, find the table and its columns, count the rows of each version; FAIL lines say why not."""
    import sqlalchemy as sa

    where = f"{request.connection and f'connection {request.connection} ' or ''}{_safe(url)}"
    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver
        report.fail("source", f"cannot use the URL {_safe(url)}: {exc}")
        return None
    qualified = f"{request.schema}.{request.table}" if request.schema else request.table
    register_pgvector_types()
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(request.table, schema=request.schema):
                tables = sorted(inspector.get_table_names(schema=request.schema))
                report.fail("source", f"table {qualified!r} not found in {where}; it has {tables}")
                return None
            columns = [c["name"] for c in inspector.get_columns(request.table, schema=request.schema)]
            _pick_optional(request, columns, report)
            wanted = {"--id-column": request.id_column, "--vector-column": request.vector_column,
                      "--version-column": request.version_column, "--text-column": request.text_column,
                      "--created-at-column": request.created_at_column}
            missing = {flag: name for flag, name in wanted.items() if name is not None and name not in columns}
            for flag, name in missing.items():
                report.fail("source", f"column {name!r} ({flag}) not found in table {qualified!r} in {where}; "
                                      f"it has {columns}")
            if missing:
                return None
            table = sa.Table(request.table, sa.MetaData(), schema=request.schema, autoload_with=conn)
            version = table.c[request.version_column]
            newest = sa.func.max(table.c[request.created_at_column]) if request.created_at_column else sa.null()
            rows = conn.execute(sa.select(version, sa.func.count(), newest).group_by(version)).all()
    except sa.exc.OperationalError as exc:
        report.fail("source", f"cannot reach {where}: {str(exc.orig).strip()}")
        return None
    except sa.exc.SQLAlchemyError as exc:
        report.fail("source", f"cannot read table {qualified!r} in {where}: {exc}")
        return None
    finally:
        engine.dispose()
    info = TableInfo(columns, {str(r[0]): int(r[1]) for r in rows if r[0] is not None},
                     {str(r[0]): r[2] for r in rows if r[0] is not None})
    if not info.counts:
        report.fail("source", f"table {qualified!r} in {where} has no rows with a {request.version_column!r}")
        return None
    shown = ", ".join(f"{v} ({n} rows)" for v, n in sorted(info.counts.items()))
    report.ok("source", f"table {qualified!r} in {where}: {sum(info.counts.values())} rows; versions {shown}")
    report.ok("columns", f"id={request.id_column} vector={request.vector_column} version={request.version_column} "
                         f"text={request.text_column or '-'} created_at={request.created_at_column or '-'}")
    return info


def _pick_optional(request: Request, columns: list[str], report: Report) -> None:
    if request.text_column is None:
        request.text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if request.text_column is None:
            report.note("text", "no text column (--text-column): probes that need the production text score "
                                "canaries (synthetic messages embedded through the pipeline) instead")
    if request.created_at_column is None:
        request.created_at_column = next((c for c in CREATED_AT_COLUMNS if c in columns), None)
        if request.created_at_column is None:
            report.note("created_at", "no creation-time column (--created-at-column): no freshness check and "
                                      "no drift checks (drift: null)")


def _pick_version(request: Request, info: TableInfo | None, report: Report) -> str:
    if info is None:
        return request.version or "v1"
    if request.version is not None:
        if request.version not in info.counts:
            report.fail("version", f"no rows with {request.version_column} = {request.version!r} in table "
                                   f"{request.table!r}; it has {sorted(info.counts)}")
        return request.version
    dated = {v: t for v, t in info.newest.items() if t is not None}
    if dated:
        version = max(dated, key=lambda v: (_aware(dated[v]), info.counts[v]))
        why = "its rows are the newest"
    else:
        version = max(info.counts, key=lambda v: (info.counts[v], v))
        why = "it has the most rows"
    if len(info.counts) > 1:
        report.note("version", f"auditing {version!r} ({why}); --version picks another")
    return version


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_pipeline(config, deployment: str, version: str, info: TableInfo | None, report: Report) -> None:
    """One vector read through the deployment's source; one sentence through its encoder; same dimension."""
    import numpy as np

    from monitors.runs import build_pipeline, build_source

    stored = None
    try:
        pipeline = build_pipeline(config, deployment, version)
        expected = pipeline.dimension
    except EmbwardenError as exc:
        report.fail("encoder", str(exc))
        pipeline, expected = None, None
    if info is not None and version in info.counts:
        try:
            drawn = build_source(config, deployment).draw(version, 1, 0, expected or 1)
            stored = drawn.dims[0]
            norm = float(np.linalg.norm(drawn.vectors[0][:stored]))
            report.ok("vector", f"row id={drawn.ids[0]} of version {version} has {stored} dimensions "
                                f"(norm {norm:.3f})")
            _freshness(config, deployment, version, info, report)
        except EmbwardenError as exc:
            report.fail("vector", f"{type(exc).__name__}: {exc}")
            drawn = None
    if info is not None and version in info.counts:
        from monitors import attacker

        try:
            attacker.check(config, deployment, build_source(config, deployment), version)
            report.ok("attacker", "the attacker's corpus can be built (auxiliary_corpus)")
        except EmbwardenError as exc:
            report.fail("attacker", str(exc))
    if pipeline is None:
        return
    model = config.deployment(deployment).versions[version].encoder.model
    try:
        started = time.perf_counter()
        vector = pipeline.embed([SENTENCE], np.random.default_rng(0))
        took = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - whatever the encoder raises is the answer
        report.fail("encoder", f"{model} could not embed a sentence: {type(exc).__name__}: {exc}")
        return
    report.ok("encoder", f"{model} embedded a sentence into {vector.shape[1]} dimensions in {took:.2f} s "
                         "(loading included)")
    if stored is None:
        return
    if stored != vector.shape[1]:
        report.fail("dimensions", f"the table's vectors have {stored} dimensions but version {version}'s pipeline "
                                  f"({model}) makes {vector.shape[1]}: is --model the model that made them?")
        return
    report.ok("dimensions", f"both {stored}")
    if drawn is not None and drawn.texts and drawn.texts[0]:
        again = pipeline.embed([drawn.texts[0]], np.random.default_rng(0))[0]
        cosine = float(again @ drawn.vectors[0] / (np.linalg.norm(again) * np.linalg.norm(drawn.vectors[0]) or 1))
        hint = "" if cosine > 0.98 else (": lower than 1, as a noisy or lossy transform makes it; otherwise "
                                         "the model or its settings differ from production's")
        report.note("same pipeline?", f"row id={drawn.ids[0]}'s text embedded again has cosine {cosine:.3f} "
                                      f"with its stored vector{hint}")


def _freshness(config, deployment: str, version: str, info: TableInfo, report: Report) -> None:
    vcfg = config.deployment(deployment).validation
    rows = info.counts[version]
    if rows < vcfg.min_rows:
        report.note("sample", f"version {version} has {rows} rows, fewer than validation.min_rows "
                              f"({vcfg.min_rows}): audits would be invalid until it has more")
    newest = info.newest.get(version)
    if newest is not None and vcfg.max_age_hours:
        age = (datetime.now(UTC) - _aware(newest)).total_seconds() / 3600
        if age > vcfg.max_age_hours:
            report.note("freshness", f"the newest row of {version} is {age:.0f} h old, more than "
                                     f"validation.max_age_hours ({vcfg.max_age_hours:g}): audits would be invalid; "
                                     "raise it, or set it to 0, in the file")


# -- the YAML ------------------------------------------------------------------------------------
def _q(value: str) -> str:
    """A YAML scalar: plain when unambiguous, else a double-quoted (JSON) string."""
    import json

    plain = PLAIN.match(value) and value.lower() not in ("null", "true", "false", "yes", "no", "on", "off", "~")
    return value if plain and not value.replace(".", "", 1).isdigit() else json.dumps(value)


def _model(model: str) -> str:
    """The model as the file should name it: the bundled one, or an absolute directory."""
    return model if model == BUNDLED_MODEL else str(Path(model).expanduser().resolve())


def deployment_block(request: Request, version: str, info: TableInfo | None) -> str:
    """The deployment as a commented YAML mapping, indented to sit under `deployments:`."""
    where = (_line(6, f"url: {_q(request.url)}", "or `connection: <Airflow connection id>`") if request.url else
             _line(6, f"connection: {_q(request.connection)}", "an Airflow connection id (or `url:`)"))
    schema = _line(6, f"schema: {_q(request.schema)}") if request.schema else "      # schema: public\n"
    text = (_line(8, f"text: {_q(request.text_column)}", "the text each vector was made from") if request.text_column
            else _line(8, "# text: body", "the text each vector was made from; without it probes score canaries"))
    created = (_line(8, f"created_at: {_q(request.created_at_column)}", "when the row was written: freshness, drift")
               if request.created_at_column else
               _line(8, "# created_at: created_at", "when the row was written; freshness checks and drift need it"))
    columns = (_line(8, f"id: {_q(request.id_column)}", "unique row id")
               + _line(8, f"vector: {_q(request.vector_column)}", "float array, pgvector, float32 bytes or JSON")
               + _line(8, f"version: {_q(request.version_column)}", "which version of the pipeline made the row")
               + text + created)
    active = _line(4, f"active_version: {_q(version)}", "applied when first synced, or when changed here")
    others = sorted(set(info.counts) - {version}) if info else []
    others_note = (f"    # The table also holds versions {', '.join(others)}: describe them under `versions:` to\n"
                   "    # audit them too (and to roll back to them).\n" if others else "")
    drift = ("    drift: {window_hours: 24, sample_size: 2000}   # hourly: the last 24 h against the version's "
             "reference sample\n" if request.created_at_column else
             "    drift: null                   # drift checks need `columns.created_at`\n")
    drift_thresholds = ("      drift.model_auc: {warn: 0.65, gate: 0.8}      # a classifier tells the window from "
                        "the reference (0.5: it cannot)\n"
                        "      drift.norm_ks: {warn: 0.2, gate: 0.5}         # the vector norms changed (a transform "
                        "dropped?)\n" if request.created_at_column else "")
    # The production slice: up to 3,000 texts besides the sample of 500 (fewer rows: general English).
    spare = (info.counts.get(version, 0) if info else 3500) - 500
    corpus = (_line(4, f"auxiliary_corpus: [{{kind: production, size: {min(3000, spare)}}}, "
                       "{kind: synthetic, size: 3000, seed: 1}]")
              if request.text_column and spare >= 300 else
              _line(4, "auxiliary_corpus: [{kind: general, size: 20000}, {kind: synthetic, size: 3000, seed: 1}]"))
    return f"""\
deployments:
  {request.deployment}:
    # Where the production vectors are read from (read only): a SQL table.
    source:
      kind: sql
{where}      table: {_q(request.table)}
{schema}      columns:
{columns}    # How the vectors were made: encoder + transform, per version. Versions are immutable once
    # synced: give a changed model or transform a new name, and `embwarden activate` it when deployed.
    versions:
      {_q(version)}:
        # A Hugging Face model directory run locally (mean pooling, L2-normalised), or the bundled MiniLM.
        encoder: {{kind: local, model: {_q(_model(request.model))}}}
        # What the pipeline does to each vector after the encoder, before storing it: none,
        # gaussian_noise {{sigma}}, clip_gaussian {{epsilon, delta, clip_norm}}, vmf {{epsilon}},
        # random_projection {{dimension, seed}} or quantize {{bits}}. The attacker trains through it too.
        transform: {{kind: none}}
{others_note}{active}    sample_size: 500              # production rows drawn for each audit
    # The attacker's texts, a list of corpora combined: `production` (a slice of this deployment's own
    # texts, disjoint from the sample, kept only inside the run and never cached: the in-domain attacker),
    # `general` (real English from Debian's wordnet-base, dict-gcide and fortunes packages), `synthetic`
    # (templated PII messages: what the canaries look like), `{{kind: file, path: aux.jsonl}}` or
    # `{{kind: sql, url: ..., query: "SELECT text ..."}}`. An attacker that does not know this kind of
    # text makes the audit `inconclusive` (coverage), never a pass.
{corpus}    # Synthetic messages with known secrets, embedded through the live pipeline: probes that need
    # secrets or labels the production sample lacks score on them. count: 0 turns them off.
    canaries: {{count: 200, seed: 7}}
    # What a valid sample looks like besides dimension and finite values (defaults shown):
    # validation: {{min_rows: {DEFAULT_MIN_ROWS}, max_age_hours: {DEFAULT_MAX_AGE_HOURS}}}   # 0: no freshness check
{drift}    probes:                       # each runs as its own task; models are cached per version and corpus
      bow_inversion: {{epochs: 30}}                  # which words of the text the vector gives away
      candidate_inversion: {{kinds: [surname, condition], candidates: 100, max_trials: 30}}   # secrets recognised
      attribute_inference: {{attribute: has_condition}}   # a sensitive attribute inferred
      # generative_inversion: {{}}                   # rebuilds the text with a decoder (slow on CPU)
    # When the audit cannot run (source or encoder down): alert only (fail_open) or also close the gate.
    on_audit_error: fail_open
    # Levels per metric (probe.metric): warn (alert) < gate (close the gate) < rollback (and activate the
    # last version that passed). Changes made later (CLI, UI) are stored in the ledger and win over these;
    # `basis: ci_low` acts only when the lower end of the 95% interval crosses.
    thresholds:
      # Scored on the canaries, the same synthetic messages for every deployment, so these levels hold
      # whatever your texts are: an unprotected pipeline scores top1 1.0 and advantage 0.31, one with
      # Gaussian noise sigma 0.2 0.03 and 0.17 (bundled MiniLM; README "Thresholds").
      candidate_inversion.top1: {{warn: 0.2, gate: 0.5}}    # the true secret ranked first among 100 (chance 0.01)
      attribute_inference.advantage: {{warn: 0.25}}         # "mentions a condition" guessed over the majority guess
{drift_thresholds}      bow_inversion.token_f1: {{warn: 0.45, gate: 0.5, rollback: 0.55}}
    # This deployment's own alert channels, replacing the top-level `alerts:` list:
    # alerts: [{{kind: email, to: [owner@example.com]}}]
    reopen: auto                  # after a rollback, reopen the gate when the re-audit passes (or: manual)
"""


def _line(indent: int, content: str, comment: str | None = None, column: int = 34) -> str:
    """One YAML line at `indent`, its comment (if any) aligned at `column`."""
    text = " " * indent + content
    return (f"{text.ljust(column - 1)} # {comment}" if comment else text) + "\n"


HEADER = """\
# embwarden configuration: the deployments to audit, where their vectors are, how they were made,
# which probes attack them and where the thresholds are. Written by `embwarden init` on {date};
# `embwarden init` again adds a deployment. Relative paths are relative to this file.

artifacts:
  root: .embwarden/artifacts      # per-run samples (deleted at the end of each run), scores, reports
  retention_days: 30              # run folders older than this are deleted
  # base_url: https://reports.example.com/embwarden   # where `root` is served: alerts link reports there
cache_dir: .embwarden/cache       # auxiliary-corpus embeddings and fitted attack models, reused across runs

# Where alerts go, for every deployment (a deployment's own `alerts:` replaces this list). Host,
# port and credentials are Airflow connections: embwarden_smtp (conn type smtp) for mail,
# embwarden_webhook (conn type http, host = the URL) for webhooks.
alerts: []
# alerts:
#   - {{kind: email, to: [privacy-team@example.com], from_email: embwarden@example.com}}
#   - {{kind: webhook, format: slack}}        # or format: json

"""


def new_file(block: str) -> str:
    return HEADER.format(date=datetime.now(UTC).strftime("%Y-%m-%d")) + block


def merge(current: str, name: str, block: str) -> str:
    """Add (or replace) deployment `name` in the YAML text `current`, keeping its other content and comments."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    doc = yaml.load(current)
    new = yaml.load(block)["deployments"][name]
    if doc.get("deployments") is None:
        doc["deployments"] = {name: new}
    else:
        doc["deployments"][name] = new
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()
