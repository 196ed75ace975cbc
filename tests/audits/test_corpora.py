"""Reading the auxiliary corpus and targets from files, with errors that name the row."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audits import corpora
from audits.errors import ConfigError


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_both_forms_of_secrets_and_labels(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"text": "Ana Okafor has asthma", "secrets": {"surname": "Okafor", "condition": "asthma"}, "label": "medical"},
        {"text": "call 555-0101 or 555-0199", "secrets": ["555-0101", "555-0199"], "label": "support"},
        {"text": "nothing secret here", "label": "support"},
    ])
    corpus = corpora.read_file(path)
    assert corpus.secrets == ({"surname": "Okafor", "condition": "asthma"},
                              {"secret": "555-0101", "secret.2": "555-0199"}, {})
    assert corpus.labels == ("medical", "support", "support")
    assert corpora.secret_kind("secret.2") == "secret"
    plain = corpora.read_file(write_jsonl(tmp_path / "p.jsonl", [{"text": "a b"}]))
    assert plain.secrets is None and plain.labels is None


def test_parquet_reads_like_jsonl(tmp_path):
    pq.write_table(pa.table({"text": ["one text", "two text"], "label": ["a", "b"]}), tmp_path / "t.parquet")
    corpus = corpora.read_file(tmp_path / "t.parquet")
    assert corpus.texts == ("one text", "two text") and corpus.labels == ("a", "b")


@pytest.mark.parametrize(("lines", "message"), [
    (['{"text": "ok"}', "{not json"], "line 2: not valid JSON"),
    (['{"text": ""}'], "row 1: field 'text' must be a non-empty string"),
    (['{"text": "a", "label": "x"}', '{"text": "b"}'], "row 2: field 'label' is missing"),
    (['{"text": "a", "secrets": 5}'], "row 1: secrets must be a list of strings or an object"),
    ([], "no rows"),
])
def test_malformed_files_say_where(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=message):
        corpora.read_file(path)


def test_corpus_hash_changes_with_any_part():
    base = corpora.Corpus(("a", "b"))
    assert base.hash == corpora.Corpus(("a", "b")).hash
    assert base.hash != corpora.Corpus(("a", "c")).hash
    assert base.hash != corpora.Corpus(("a", "b"), labels=("x", "y")).hash


def test_a_sql_query_on_postgres(pg_url):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (body text, secrets jsonb, category text)"))
        conn.execute(sa.text("INSERT INTO notes VALUES ('Ana Okafor has asthma', :s, 'medical'),"
                             " ('my router is broken', NULL, 'support')"), {"s": '{"surname": "Okafor"}'})
    engine.dispose()
    corpus = corpora.read_sql(pg_url, "SELECT body AS text, secrets, category AS label FROM notes ORDER BY body")
    assert corpus.texts == ("Ana Okafor has asthma", "my router is broken")
    assert corpus.secrets == ({"surname": "Okafor"}, {}) and corpus.labels == ("medical", "support")
    with pytest.raises(ConfigError, match="auxiliary_corpus.query failed: .*no_such_table"):
        corpora.read_sql(pg_url, "SELECT text FROM no_such_table")
