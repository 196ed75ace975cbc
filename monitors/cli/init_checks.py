"""What `embwarden init` checks before it writes: the table answers (columns, rows per version),
the source reads a vector, the encoder embeds a sentence, the dimensions agree, rows are fresh."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from audits.errors import EmbwardenError
from audits.pgvector import register_pgvector_types
from monitors.cli.init_request import Request

SENTENCE = "Hello Ms Novak, your appointment about the asthma check-up has moved to Tuesday at 10:30."


TEXT_COLUMNS = ("text", "body", "content")          # picked up when --text-column is not given


CREATED_AT_COLUMNS = ("created_at", "inserted_at")  # picked up when --created-at-column is not given


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


def source_url(request: Request, report: Report) -> str | None:
    from monitors.ledger.database import connection_url

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
        url = connection_url(request.connection or "")
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


def pick_version(request: Request, info: TableInfo | None, report: Report) -> str:
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

    from monitors.deployments import build_pipeline, build_source

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
        from monitors import auxiliary_corpus

        try:
            auxiliary_corpus.check(config, deployment, build_source(config, deployment), version)
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
