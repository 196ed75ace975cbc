"""Texts with what is known about them: the auxiliary corpus, canaries and ad-hoc targets.

A `Corpus` is text plus, optionally, each text's secrets (kind -> value as it appears in the
text) and a sensitive label. It is read from a JSONL file, a Parquet file, a SQL query, or made
by the built-in synthetic generator. JSONL rows look like
`{"text": ..., "secrets": {"surname": "Okafor"} | ["Okafor", ...], "label": ...}`; a list of
secrets has no kinds, so its values become kind `secret` (`secret`, `secret.2`, ...), and
candidates for them are drawn from every other listed secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audits.corpus import corpus_hash, generate_messages
from audits.errors import ConfigError

LIST_SECRET_KIND = "secret"


@dataclass(frozen=True)
class Corpus:
    texts: tuple[str, ...]
    secrets: tuple[dict[str, str], ...] | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("secrets", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.texts):
                raise ValueError(f"corpus: {len(self.texts)} texts but {len(value)} {name}")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def hash(self) -> str:
        """Keys caches of this corpus' embeddings and of attack models trained on it."""
        parts = list(self.texts)
        if self.secrets is not None:
            parts += [json.dumps(s, sort_keys=True) for s in self.secrets]
        if self.labels is not None:
            parts += list(self.labels)
        return corpus_hash(parts)


def synthetic(size: int, seed: int) -> Corpus:
    """The built-in generator: templated support/medical/HR/finance messages with known secrets."""
    messages = generate_messages(size, seed)
    return Corpus(tuple(m.text for m in messages), tuple(m.secrets for m in messages),
                  tuple(m.category for m in messages))


def canaries(count: int, seed: int) -> Corpus:
    """Synthetic messages with known secrets, to embed through the live pipeline as targets.

    Drawn with their own seed, so the people in them are not in the auxiliary corpus.
    """
    return synthetic(count, seed)


def normalize_secrets(value, where: str) -> dict[str, str]:
    """A row's secrets as kind -> value, from either accepted form."""
    if value is None:
        return {}
    if isinstance(value, dict):
        bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{where}: secrets must map a kind to a string, found {bad[0]!r}")
        return dict(value)
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: secrets must be a list of strings")
        return {(LIST_SECRET_KIND if i == 0 else f"{LIST_SECRET_KIND}.{i + 1}"): v for i, v in enumerate(value)}
    raise ConfigError(f"{where}: secrets must be a list of strings or an object, found {type(value).__name__}")


def secret_kind(key: str) -> str:
    """The pool a secret's candidates come from: `secret.2` shares the pool of `secret`."""
    return key.split(".", 1)[0]


def unencodable(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (a lone surrogate, which JSON allows), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def from_records(records, where: str) -> Corpus:
    """Build a Corpus from dict rows with `text` and optional `secrets` and `label`."""
    texts, secrets, labels = [], [], []
    has_secrets = has_labels = False
    for i, row in enumerate(records, start=1):
        at = f"{where} row {i}"
        if not isinstance(row, dict):
            raise ConfigError(f"{at}: expected an object with a 'text' field, found {type(row).__name__}")
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{at}: field 'text' must be a non-empty string, found {text!r}"[:300])
        if (bad := unencodable(text)) is not None:
            raise ConfigError(f"{at}: field 'text' holds a lone surrogate (\\u{ord(text[bad]):04x}) at character "
                              f"{bad}; it is not Unicode text")
        texts.append(text)
        has_secrets |= row.get("secrets") is not None
        secrets.append(normalize_secrets(row.get("secrets"), at))
        label = row.get("label")
        has_labels |= label is not None
        labels.append(None if label is None else str(label))
    if not texts:
        raise ConfigError(f"{where}: no rows, expected at least one text")
    if has_labels and None in labels:
        missing = labels.index(None) + 1
        raise ConfigError(f"{where} row {missing}: field 'label' is missing; give every row a label or none")
    given = tuple(label for label in labels if label is not None)  # all of them, where any is given
    return Corpus(tuple(texts), tuple(secrets) if has_secrets else None, given if has_labels else None)


def read_jsonl(path: Path) -> Corpus:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")

    def rows():
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ConfigError(f"{path} line {lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                      "save the file as UTF-8") from None
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None

    return from_records(rows(), str(path))


def read_parquet(path: Path) -> Corpus:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if "text" not in table.column_names:
        raise ConfigError(f"{path}: no 'text' column; it has {table.column_names}")
    return from_records(table.to_pylist(), str(path))


def read_file(path: Path) -> Corpus:
    """JSONL or Parquet, by extension."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    raise ConfigError(f"{path}: expected a .jsonl or .parquet file")


def read_sql(url: str, query: str) -> Corpus:
    """Rows of a query with a `text` column and optional `secrets` (JSON) and `label` columns."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.text(query))]
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(f"auxiliary_corpus.query failed: {getattr(exc, 'orig', exc)}") from None
    finally:
        engine.dispose()
    for row in rows:
        if isinstance(row.get("secrets"), str):
            row["secrets"] = json.loads(row["secrets"])
    return from_records(rows, "auxiliary_corpus.query")
