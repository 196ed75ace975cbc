"""Property-based: whatever a user writes (configuration, probe and transform parameters, command
lines) either works or fails with one line naming the field: never a traceback, never a value
that would be scored as real (an untrained probe) or crash a run later."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from audits.errors import ConfigError, EmbwardenError
from audits.probes import PROBES, make_probe
from audits.transforms import make_transform
from monitors.cli.main import main as cli
from monitors.config import TransformConfig, load_config
from tests.conftest import REPO

EXAMPLE = yaml.safe_load((REPO / "embwarden.yaml").read_text())
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Anything YAML or JSON can hold: the values a careless operator (or a hostile one) can type.
# Lone surrogates cannot be written to a UTF-8 file; they are tested through JSON below.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | text \
    | st.sampled_from([0, -1, 1, 2, 0.5, 1e300, -1e-300, "lots", "1e-3", "", "\x00", True, False, []])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=6)


def leaf_paths(node, prefix=()) -> list[tuple]:
    """Every path into the example configuration, leaves and branches."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            paths += leaf_paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            paths += leaf_paths(child, (*prefix, i))
    return paths


PATHS = leaf_paths(EXAMPLE)
# Fields that name probes' and transforms' parameters too, new or existing.
PATHS += [("deployments", "support-search", "probes", name, key) for name in PROBES
          for key in ("epochs", "bootstrap_resamples", "validation_fraction", "max_targets", "queries", "seed")]
PATHS += [("deployments", "support-search", "versions", "v1", "transform", key)
          for key in ("sigma", "epsilon", "delta", "clip_norm", "dimension", "bits", "kind", "applied_by")]


def assign(data, path, value):
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
        if not isinstance(node, dict | list):
            return
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)):
        node[path[-1]] = value


def one_line_naming_a_field(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and ": " in message


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_any_configuration_loads_or_names_the_field(changes):
    import copy

    data = copy.deepcopy(EXAMPLE)
    for path, value in changes:
        assign(data, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embwarden.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert one_line_naming_a_field(str(exc)) and str(exc).startswith(str(path)), str(exc)
            return
    for dep in config.deployments.values():   # what loads is usable: every probe builds, every transform too
        for name, params in dep.probes.items():
            make_probe(name, params)
        for version in dep.versions.values():
            make_transform(version.transform.spec())


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_the_configuration_file_fail_with_one_line(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embwarden.yaml"
        path.write_bytes(raw)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert one_line_naming_a_field(str(info.value)), str(info.value)


@SETTINGS
@given(name=st.sampled_from(sorted(PROBES)), params=st.dictionaries(
    st.sampled_from(["epochs", "bootstrap_resamples", "validation_fraction", "learning_rate", "max_targets",
                     "candidates", "max_queries", "queries", "confidence", "attribute", "kinds", "stack",
                     "dropout", "batch_size", "hidden", "layers", "selection", "correction_alpha", "unknown"]) | text,
    values, max_size=4))
def test_any_probe_parameters_build_a_probe_that_trains_or_name_the_parameter(name, params):
    try:
        probe = make_probe(name, params)
    except ConfigError as exc:
        assert one_line_naming_a_field(str(exc)) and str(exc).startswith(f"probes.{name}"), str(exc)
        return
    # Built: whatever trains for epochs trains for at least one, and intervals have resamples.
    for attribute in ("epochs", "bootstrap_resamples", "max_targets"):
        assert getattr(probe, attribute, 1) >= 1


@SETTINGS
@given(spec=st.fixed_dictionaries(
    {"kind": st.sampled_from(["none", "gaussian_noise", "clip_gaussian", "vmf", "random_projection", "quantize"])},
    optional={key: values for key in ("sigma", "epsilon", "delta", "clip_norm", "dimension", "bits", "seed",
                                      "applied_by")}))
@example({"kind": "vmf", "epsilon": 1e300}).via("found: OverflowError in the sampler")
@example({"kind": "clip_gaussian", "epsilon": 1, "clip_norm": 1e300}).via("found: infinite vectors")
@example({"kind": "gaussian_noise", "sigma": 1e300})
def test_any_transform_either_releases_finite_vectors_or_names_the_field(spec):
    try:
        transform = make_transform(TypeAdapter(TransformConfig).validate_python(spec).spec())
    except ValidationError:
        return
    vectors = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    released = transform.apply(vectors, np.random.default_rng(1))
    assert np.isfinite(released).all(), spec


CLI_FLAGS = ["--warn", "--gate", "--rollback", "--basis", "--lower-is-worse", "--higher-is-worse", "--reason",
             "--author"]
tokens = st.sampled_from([*CLI_FLAGS, "0.4", "0.6", "none", "nan", "-1", "1e400", "ci_low", "x", "", "\x00"]) | text


@pytest.fixture(scope="module")
def sqlite_ledger():
    """The CLI against a SQLite ledger, synced from a configuration whose source need not exist."""
    from monitors.ledger.database import migrate, session_scope
    from monitors.ledger.registry import sync
    from tests.helpers import write_config

    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "embwarden.yaml", source_url=f"sqlite:///{tmp}/source.db")
        url = f"sqlite:///{tmp}/ledger.db"
        migrate(url)
        with session_scope(url) as session:
            sync(session, load_config(config))
        saved = {k: os.environ.get(k) for k in ("EMBWARDEN_DB_URL", "EMBWARDEN_CONFIG")}
        os.environ.update(EMBWARDEN_DB_URL=url, EMBWARDEN_CONFIG=str(config))
        try:
            yield config
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli(argv)
        except SystemExit as exc:   # argparse: usage and one line naming the argument
            code = exc.code
    return code, err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(tokens, max_size=6), metric=st.sampled_from(["bow_inversion.token_f1", "coverage.embedding",
                                                                  "nope.metric", "x"]))
def test_thresholds_set_from_any_command_line_works_or_says_why(sqlite_ledger, args, metric):
    code, err = run_cli(["thresholds", "set", "support-search", metric, *args])
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:   # (an argument holding a newline spreads its own echo over lines)
        assert any(line.startswith(("embwarden: ", "embwarden thresholds set: error: ")) for line in err.splitlines())


@settings(max_examples=60, deadline=None)
@example(transform='"none"', params=None, sigma=None, seed=None).via("found: a traceback")
@example(transform=None, params="[1]", sigma=None, seed=None).via("found: a traceback")
@example(transform=None, params='{"bow_inversion": {"epochs": 0}}', sigma=None, seed=None).via("found: accepted")
@example(transform=None, params=None, sigma="1e300", seed=None).via("found: it ran")
@given(transform=st.none() | values.map(lambda v: __import__("json").dumps(v)),
       params=st.none() | values.map(lambda v: __import__("json").dumps(v)),
       sigma=st.none() | st.sampled_from(["0", "0.2", "-1", "1e300", "nan", "inf", "x"]),
       seed=st.none() | st.sampled_from(["0", "-1", "4294967296", "x"]))
def test_the_audit_command_refuses_bad_options_in_one_line(transform, params, sigma, seed):
    """Options are checked before anything loads (the encoder here does not exist: a run that gets
    that far fails on it, with one line too)."""
    argv = ["audit", "--encoder", "/nonexistent/model", "--aux", "synthetic:50", "--targets", "/nonexistent.jsonl",
            "--json", "/nonexistent/out.json"]
    for flag, value in (("--transform", transform), ("--params", params), ("--noise-sigma", sigma), ("--seed", seed)):
        if value is not None:
            argv += [flag, value]
    code, err = run_cli(argv)
    assert code == 2 and "Traceback" not in err, err
    assert any(line.startswith(("embwarden: ", "embwarden audit: error: ")) for line in err.splitlines()), err


@pytest.mark.parametrize("line", [b'{"text": "caf\xe9"}\n', b'{"text": "\\ud800 lone"}\n'])
def test_a_jsonl_file_that_is_not_unicode_text_names_the_line(tmp_path, line):
    from audits.corpora import read_file

    path = tmp_path / "targets.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + line)
    with pytest.raises(ConfigError, match=r"targets.jsonl (line|row) 2: .*(UTF-8|surrogate)"):
        read_file(path)


def test_a_non_utf8_configuration_names_the_byte_and_line(tmp_path):
    path = tmp_path / "embwarden.yaml"
    path.write_bytes((REPO / "embwarden.yaml").read_bytes().replace(b"# embwarden", b"# embw\xe4rden", 1))
    with pytest.raises(ConfigError, match=r"embwarden.yaml: not UTF-8 text \(byte 0xe4 on line 1\)"):
        load_config(path)
    assert not issubclass(ConfigError, ValueError) and issubclass(ConfigError, EmbwardenError)


@pytest.mark.parametrize("port", ["99999999", "0", "-1", "http"])
def test_serve_refuses_a_port_that_is_not_one(port):
    """`serve --port 99999999` used to bind another port."""
    code, err = run_cli(["serve", "support-search", "--port", port])
    assert code == 2 and "expected a TCP port from 1 to 65535" in err
