"""The commented embwarden.yaml that `embwarden init` writes: the file's header and one deployment."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from audits.encoders import BUNDLED_MODEL
from monitors.cli.init_request import Request

if TYPE_CHECKING:
    from monitors.cli.init_checks import TableInfo


PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")


DEFAULT_MAX_AGE_HOURS = 168                          # validation.max_age_hours' default


DEFAULT_MIN_ROWS = 50                                # validation.min_rows' default


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
             _line(6, f"connection: {_q(request.connection or '')}", "an Airflow connection id (or `url:`)"))
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
      # Gaussian noise sigma 0.2 0.03 and 0.17 (bundled MiniLM; docs/thresholds-and-actions.md).
      candidate_inversion.top1: {{warn: 0.2, gate: 0.5}}    # the true secret ranked first among 100 (chance 0.01)
      attribute_inference.advantage: {{warn: 0.25}}         # "mentions a condition" guessed over the majority guess
{drift_thresholds}      bow_inversion.token_f1: {{warn: 0.45, gate: 0.5, rollback: 0.55}}
    # This deployment's own alert channels, replacing the top-level `alerts:` list:
    # alerts: [{{kind: email, to: [owner@example.com]}}]
    reopen: auto                  # after a rollback, reopen the gate when the re-audit passes (or: manual)
    # Where the active version and the gate also live (docs/deploy-pipelines.md): an MLflow alias that
    # rollbacks move, a CD system's signed webhook.
    # targets:
    #   - {{kind: mlflow, model: my-embedder, alias: champion, connection: embwarden_mlflow, versions: {{v1: 1}}}}
    #   - {{kind: webhook, connection: embwarden_deploy_hook}}
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
  # Several workers (CeleryExecutor, KubernetesExecutor): put root and cache_dir on an object store,
  # e.g. root: s3://my-bucket/embwarden/artifacts, with the Airflow connection holding its credentials:
  # connection: embwarden_store
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
