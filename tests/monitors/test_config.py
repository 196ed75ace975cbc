"""A bad configuration fails with the path of the field and what was expected."""

import pytest
import yaml

from audits.errors import ConfigError
from monitors.config import load_config
from tests.conftest import REPO


def test_the_example_configuration_loads():
    config = load_config(REPO / "embwarden.yaml")
    dep = config.deployment("support-search")
    assert dep.active_version == "v1"
    assert dep.versions["v1"].transform.kind == "gaussian_noise"
    assert dep.thresholds["bow_inversion.token_f1"].rollback == 0.6
    assert config.resolve_url(dep.source.url) == f"sqlite:///{REPO / '.embwarden/demo/production.db'}"


def write(tmp_path, mutate):
    data = yaml.safe_load((REPO / "embwarden.yaml").read_text())
    mutate(data["deployments"]["support-search"])
    path = tmp_path / "embwarden.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["versions"]["v1"]["transform"].update(sigma="lots"),
     r"deployments.support-search.versions.v1.transform.sigma: Input should be a valid number.*'lots'"),
    (lambda d: d["thresholds"]["bow_inversion.token_f1"].update(gate=0.9),
     r"thresholds.bow_inversion.token_f1: levels out of order: expected gate <= rollback, found 0.9 and 0.6"),
    (lambda d: d.update(active_version="v7"), r"active_version 'v7' is not one of versions \['v1', 'v2'\]"),
    (lambda d: d["probes"].update(telepathy={}), r"unknown probe 'telepathy'"),
    (lambda d: d["thresholds"].update({"tokenf1": {"warn": 0.1}}), r"'tokenf1' is not of the form probe.metric"),
    (lambda d: d["source"].pop("table"), r"deployments.support-search.source.table: Field required"),
    (lambda d: d["source"].update(kind="mongo"), r"deployments.support-search.source: .*'sql', 'parquet'"),
    (lambda d: d["source"].update(connection="prod_db"), r"exactly one of 'url'.* or 'connection'"),
    (lambda d: d.update(sample_size=0), r"sample_size: Input should be greater than or equal to 1"),
    (lambda d: d["thresholds"]["bow_inversion.token_f1"].update(warn=None, gate=None, rollback=None),
     r"set at least one of warn, gate, rollback"),
    (lambda d: d.update(colour="red"), r"deployments.support-search.colour: Extra inputs are not permitted"),
    (lambda d: d["probes"]["candidate_inversion"].update(candidates=1),
     r"probes.candidate_inversion.candidates: Input should be greater than or equal to 2 \(found 1\)"),
    (lambda d: d["probes"]["bow_inversion"].update(epoch=3), r"probes.bow_inversion.epoch: unknown parameter"),
    # Parameters that would train nothing, or crash the run later, are refused when the file loads.
    (lambda d: d["probes"]["bow_inversion"].update(epochs=0),
     r"probes.bow_inversion.epochs: Input should be greater than or equal to 1 \(found 0\)"),
    (lambda d: d["probes"]["bow_inversion"].update(epochs=-5), r"probes.bow_inversion.epochs: .* \(found -5\)"),
    (lambda d: d["probes"]["bow_inversion"].update(epochs="lots"),
     r"probes.bow_inversion.epochs: Input should be a valid integer \(found 'lots'\)"),
    (lambda d: d["probes"]["bow_inversion"].update(epochs=True), r"probes.bow_inversion.epochs: .*integer"),
    (lambda d: d["probes"]["bow_inversion"].update(validation_fraction=2),
     r"probes.bow_inversion.validation_fraction: Input should be less than 1 \(found 2\)"),
    (lambda d: d["probes"]["bow_inversion"].update(bootstrap_resamples=0),
     r"probes.bow_inversion.bootstrap_resamples: Input should be greater than or equal to 100"),
    (lambda d: d["probes"].update(generative_inversion={"epochs": 0}),
     r"probes.generative_inversion.epochs: Input should be greater than or equal to 1"),
    (lambda d: d["probes"].update(repeat_query={"epochs": 0}), r"probes.repeat_query.epochs: .*greater than or equal"),
    (lambda d: d["probes"].update(bow_inversion=[3]), r"probes.bow_inversion: .*(dictionary|mapping)"),
    (lambda d: d.update(sample_size=True), r"sample_size: Input should be a valid integer \(found True\)"),
    (lambda d: d["versions"]["v1"]["transform"].update(sigma=1e300),
     r"versions.v1.transform.sigma: Input should be less than or equal to 100"),
    (lambda d: d["versions"]["v1"]["transform"].update(sigma=True), r"versions.v1.transform.sigma: expected a number"),
    (lambda d: d.update(auxiliary_corpus={"kind": "file"}), r"auxiliary_corpus.path: Field required"),
    (lambda d: d.update(auxiliary_corpus={"kind": "sql", "query": "SELECT text FROM t"}), r"exactly one of 'url'"),
    (lambda d: d.update(canaries={"count": -1}), r"canaries.count: Input should be greater than or equal to 0"),
    (lambda d: d["thresholds"].update({"bow_inversion.token_f2": {"warn": 0.1}}),
     r"thresholds.bow_inversion.token_f2: unknown metric; expected one of \['bow_inversion.secret_recovery'"),
    (lambda d: d["thresholds"]["bow_inversion.token_f1"].update(rollback=1.5),
     r"thresholds.bow_inversion.token_f1.rollback: 1.5 is outside the metric's range \[0, 1\]"),
    (lambda d: d["thresholds"]["bow_inversion.token_f1"].update(gate="high"),
     r"thresholds.bow_inversion.token_f1.gate: Input should be a valid number.*'high'"),
    (lambda d: d["thresholds"]["bow_inversion.token_f1"].update(basis="median"),
     r"thresholds.bow_inversion.token_f1.basis: Input should be 'value', 'ci_low' or 'ci_high'"),
    (lambda d: d["thresholds"].update({"generative_inversion.bleu": {"warn": 30}}),
     r"generative_inversion.bleu: 'generative_inversion' does not run on this deployment"),
    (lambda d: d.update(alerts=[{"kind": "email", "to": []}]), r"alerts.0.to: List should have at least 1 item"),
    (lambda d: d.update(alerts=[{"kind": "pager"}]), r"alerts.0: .*'email', 'webhook'"),
    (lambda d: d.update(reopen="sometimes"), r"reopen: Input should be 'auto' or 'manual'"),
    (lambda d: d["versions"]["v2"].update(transform={"kind": "clip_gaussian", "epsilon": -1}),
     r"versions.v2.transform.epsilon: Input should be greater than 0 .*-1"),
    (lambda d: d["versions"]["v2"].update(transform={"kind": "clip_gaussian", "epsilon": 1, "delta": 2}),
     r"versions.v2.transform.delta: Input should be less than 1"),
    (lambda d: d["versions"]["v2"].update(transform={"kind": "random_projection"}),
     r"versions.v2.transform.dimension: Field required"),
    (lambda d: d["versions"]["v2"].update(transform={"kind": "laplace"}),
     r"versions.v2.transform: .*'clip_gaussian', 'vmf', 'random_projection', 'quantize'"),
])
def test_bad_fields_are_named(tmp_path, mutate, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, mutate))


def test_auxiliary_corpus_defaults_to_the_generator_and_reads_files(tmp_path):
    config = load_config(write(tmp_path, lambda d: d.update(auxiliary_corpus={"size": 500})))
    assert config.deployment("support-search").auxiliary_corpus.kind == "synthetic"
    config = load_config(write(tmp_path, lambda d: d.update(auxiliary_corpus={"kind": "file", "path": "aux.jsonl"})))
    assert config.resolve(config.deployment("support-search").auxiliary_corpus.path) == tmp_path / "aux.jsonl"


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("deployments: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)


def test_unknown_deployment_is_named():
    with pytest.raises(ConfigError, match=r"unknown deployment 'billing'; the configuration has \['support-search'\]"):
        load_config(REPO / "embwarden.yaml").deployment("billing")


def test_each_version_states_its_guarantee_in_the_ledger(tmp_path, ledger):
    import sqlalchemy as sa

    from monitors.ledger.database import session_scope
    from monitors.ledger.models import Version
    from monitors.ledger.registry import sync

    path = write(tmp_path, lambda d: d["versions"].update(
        v3={"transform": {"kind": "clip_gaussian", "epsilon": 2000, "delta": 1e-6}},
        v4={"transform": {"kind": "vmf", "epsilon": 500}},
        v5={"transform": {"kind": "quantize", "bits": 1}}))
    with session_scope(ledger) as session:
        sync(session, load_config(path))
        stated = dict(session.execute(sa.select(Version.name, Version.guarantee)).all())
    assert stated["v1"] == stated["v2"] == stated["v5"] == "none"
    assert stated["v3"].startswith("(epsilon=2000, delta=1e-06)-DP per query, Gaussian (analytic), L2 sensitivity 2")
    assert stated["v4"].startswith("(epsilon=500)-DP per query, von Mises-Fisher")


def test_run_data_goes_to_a_folder_by_default_and_to_an_object_store_when_set(tmp_path, monkeypatch):
    from pathlib import Path

    from airflow.sdk import ObjectStoragePath

    for name in ("EMBWARDEN_ARTIFACTS_ROOT", "EMBWARDEN_CACHE_DIR", "EMBWARDEN_STORE_CONNECTION"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(write(tmp_path, lambda d: None))
    assert config.artifacts_root == tmp_path / ".embwarden" / "artifacts" and isinstance(config.cache_root, Path)
    # The same file on a multi-worker deployment: the environment moves both roots to the store.
    monkeypatch.setenv("EMBWARDEN_ARTIFACTS_ROOT", "s3://runs/embwarden/artifacts")
    monkeypatch.setenv("EMBWARDEN_CACHE_DIR", "s3://runs/embwarden/cache")
    monkeypatch.setenv("EMBWARDEN_STORE_CONNECTION", "embwarden_store")
    config = load_config(write(tmp_path, lambda d: None))
    root = config.artifacts_root
    assert isinstance(root, ObjectStoragePath) and str(root) == "s3://embwarden_store@runs/embwarden/artifacts"
    assert str(config.cache_root) == "s3://embwarden_store@runs/embwarden/cache"
    monkeypatch.setenv("EMBWARDEN_CACHE_DIR", "nosuch://runs/cache")
    with pytest.raises(ConfigError, match=r"cache_dir: .*no object-store filesystem is registered for nosuch://"):
        load_config(write(tmp_path, lambda d: None))
    monkeypatch.setenv("EMBWARDEN_STORE_CONNECTION", "not a connection id")
    monkeypatch.delenv("EMBWARDEN_CACHE_DIR")
    with pytest.raises(ConfigError, match=r"artifacts.connection: String should match pattern"):
        load_config(write(tmp_path, lambda d: None))
