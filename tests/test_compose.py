"""docker-compose.yml cannot be started here (no Docker engine): check it against the Compose
specification's JSON schema after the interpolation Compose does, and check what the schema cannot
see: dependencies and profiles, the executor switch and the GPU queue, the init step, the databases,
the mounts and the README's instructions. The image the Dockerfile builds and the scripts under
docker/ that run in it: tests/test_compose_image.py (which loads the file with `load` from here).

tests/data/compose-spec.json is the Compose specification's schema, copied unchanged from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6 (blob 5db97d0fbbb8e7fbedea0bb5fdb3fe0e93b0e4b1; the file
last changed in commit a08f8d51631b7127ddac3d2c65537db429d0f1d0). To update it, copy the newer file
over it and adjust SPEC_BLOB.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from sqlalchemy.engine import make_url

from tests.conftest import REPO

SPEC = REPO / "tests" / "data" / "compose-spec.json"
SPEC_BLOB = "5db97d0fbbb8e7fbedea0bb5fdb3fe0e93b0e4b1"  # git's blob id of the vendored file
COMPOSE = REPO / "docker-compose.yml"
DOCKER = REPO / "docker"
AIRFLOW_CORE = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")

# ---------------------------------------------------------------------------------------------
# Compose's interpolation (https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    pass


def interpolate(value, env: dict[str, str]):
    """Values (not keys) of a loaded Compose file with ${VAR}, $VAR, ${VAR:-d}, ${VAR-d}, ${VAR:?e},
    ${VAR?e}, ${VAR:+r}, ${VAR+r} and $$ resolved as Compose resolves them from `env`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, str):
        return _substitute(value, env)
    return value


def _substitute(text: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expression(text[i + 2:end], env))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            raise InterpolationError(f"invalid interpolation format in {text!r}")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, j = 1, start
    while j < len(text):
        if text.startswith("$$", j):
            j += 2
            continue
        if text.startswith("${", j):
            depth, j = depth + 1, j + 2
            continue
        if text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def _expression(expr: str, env: dict[str, str]) -> str:
    match = _NAME.match(expr)
    if not match:
        raise InterpolationError(f"invalid interpolation format ${{{expr}}}")
    name, rest, value = match.group(), expr[match.end():], env.get(match.group())
    if not rest:
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            missing = not value if op.startswith(":") else value is None
            arg = _substitute(rest[len(op):], env)
            if op.endswith("-"):
                return arg if missing else value
            if op.endswith("?"):
                if missing:
                    raise InterpolationError(f"required variable {name} is missing a value: {arg}")
                return value
            return "" if missing else arg
    raise InterpolationError(f"invalid interpolation format ${{{expr}}}")


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def load(env: dict[str, str] | None = None) -> dict:
    """The file as Compose sees it with `env` as its environment and .env (default: nothing set)."""
    return interpolate(raw(), env or {})


def enabled(doc: dict, env: dict[str, str] | None = None) -> set[str]:
    """The services `docker compose up` starts with COMPOSE_PROFILES from `env`."""
    profiles = {p.strip() for p in (env or {}).get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    return {name for name, svc in doc["services"].items()
            if not svc.get("profiles") or profiles & set(svc["profiles"])}


def published(doc: dict) -> dict[int, str]:
    ports = {}
    for name, svc in doc["services"].items():
        for port in svc.get("ports", []):
            ports[int(str(port).split(":")[0])] = name
    return ports


# ---------------------------------------------------------------------------------------------


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    cases = {"${SET}": "x", "$SET/y": "x/y", "${UNSET}": "", "${UNSET:-d}": "d", "${EMPTY:-d}": "d",
             "${EMPTY-d}": "", "${UNSET-d}": "d", "${SET:-d}": "x", "${SET:+r}": "r", "${EMPTY:+r}": "",
             "${EMPTY+r}": "r", "$${HOSTNAME}": "${HOSTNAME}", "$$x": "$x", "${UNSET:-${SET}/z}": "x/z",
             "a:${UNSET:-LocalExecutor}:b": "a:LocalExecutor:b"}
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    for bad in ("${UNSET:?needed}", "${EMPTY:?needed}", "${UNSET?needed}", "${", "$-x", "${1A}"):
        with pytest.raises(InterpolationError):
            interpolate(bad, env)
    assert interpolate("${EMPTY?needed}", env) == ""


def test_schema_is_the_vendored_compose_specification():
    data = SPEC.read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == SPEC_BLOB
    schema = json.loads(data)
    assert schema["title"] == "Compose Specification" and "draft-07" in schema["$schema"]
    Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("env_name", [None, "celery.env", "gpu.env"])
def test_file_is_valid_against_the_compose_specification(env_name):
    schema = json.loads(SPEC.read_text())
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    doc = load(env_file(DOCKER / env_name) if env_name else None)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    # The validator does reject what Compose rejects.
    broken = copy.deepcopy(doc)
    broken["services"]["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] = "service_done"
    broken["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0].pop("capabilities")
    broken["services"]["embedder"]["helthcheck"] = {}
    assert len(list(validator.iter_errors(broken))) == 3


def test_airflow_3_services_share_one_definition():
    doc = load()
    services = doc["services"]
    assert {"postgres", *AIRFLOW_CORE, "airflow-init", "airflow-cli", "embedder", "mailcatcher", "redis",
            "airflow-worker", "flower", "airflow-worker-gpu"} <= set(services)
    commands = {name: svc.get("command") for name, svc in services.items()}
    assert [commands[name] for name in AIRFLOW_CORE] == ["api-server", "scheduler", "dag-processor", "triggerer"]
    common = doc["x-airflow-common"]
    for name in (*AIRFLOW_CORE, "airflow-init", "airflow-cli", "embedder", "airflow-worker", "flower",
                 "airflow-worker-gpu"):
        svc = services[name]
        assert svc["environment"] == {**common["environment"], **svc["environment"]}, name
        assert svc["volumes"] == common["volumes"] and svc["user"] in (common["user"], "0:0"), name
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert "8080:8080" in services["airflow-apiserver"]["ports"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] and env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "8974/health" in services["airflow-scheduler"]["healthcheck"]["test"][-1]
    # Compose turns $${HOSTNAME} into ${HOSTNAME} for the container's shell.
    assert '"${HOSTNAME}"' in services["airflow-dag-processor"]["healthcheck"]["test"][1]


def test_every_dependency_exists_and_is_started_with_its_dependent():
    services = load()["services"]
    for name, svc in services.items():
        profiles = set(svc.get("profiles", []))
        for target in svc.get("depends_on", {}):
            assert target in services, f"{name} depends on undefined {target}"
            target_profiles = set(services[target].get("profiles", []))
            # Compose starts a dependency only when one of its profiles is active: it must be on
            # whenever its dependent is.
            assert not target_profiles or (profiles and profiles <= target_profiles), f"{name} -> {target}"
            if "healthcheck" not in services[target]:
                assert svc["depends_on"][target]["condition"] != "service_healthy", f"{name} -> {target}"


def test_init_runs_first_and_prepares_both_databases():
    services = load()["services"]
    image = load()["x-airflow-common"]["image"]
    for name, svc in services.items():
        if svc.get("image") in (image, "embwarden-airflow-gpu:latest") and name not in ("airflow-init", "airflow-cli"):
            assert svc["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
    init = services["airflow-init"]
    assert "restart" not in init and init["entrypoint"] == "/bin/bash"
    script = init["command"][1]
    steps = ["airflow db migrate", "init_helpers.py passwords", "embwarden migrate", "embwarden sync",
             "init_helpers.py seed-demo", "chown -R"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)
    assert script.startswith("set -euo pipefail")
    assert 'chown -R "50000:0" /opt/airflow/logs /opt/airflow/auth /opt/embwarden-config/.embwarden' in script
    # Its shell sees the variables the environment gives it ($$ is a literal $ for Compose).
    for var in re.findall(r"\$\{(\w+)\}", script):
        assert var in init["environment"], var
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"] == "admin"
    assert init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert "--config" not in script and init["environment"]["EMBWARDEN_CONFIG"] == \
        "/opt/embwarden-config/embwarden.yaml"


def test_ledger_connection_points_at_the_embwarden_database():
    doc = load()
    postgres = doc["services"]["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:pg")
    user, password = postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_PASSWORD"]
    env = doc["x-airflow-common"]["environment"]
    ledger = json.loads(env["AIRFLOW_CONN_EMBWARDEN_DB"])
    assert ledger == {"conn_type": "postgres", "host": "postgres", "port": 5432, "login": user,
                      "password": password, "schema": "embwarden"}
    metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (metadata.host, metadata.username, metadata.password, metadata.database) == \
        ("postgres", user, password, postgres["environment"]["POSTGRES_DB"])
    assert ledger["schema"] != metadata.database
    mount = next(v for v in postgres["volumes"] if "/docker-entrypoint-initdb.d/" in v)
    host, target = mount.split(":")[:2]
    assert target.endswith(".sql")
    sql = (REPO / host).read_text()
    assert f"CREATE DATABASE {ledger['schema']} OWNER {user};" in sql
    assert sql.index(f"\\connect {ledger['schema']}") < sql.index("CREATE EXTENSION IF NOT EXISTS vector;")


def test_mounts_volumes_and_the_image_match_the_repository():
    doc = load()
    declared = set(doc["volumes"])
    used = set()
    for name, svc in [("x-airflow-common", doc["x-airflow-common"]), *doc["services"].items()]:
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                used.add(source)
                assert source in declared, f"{name}: named volume {source} is not declared"
            assert target.startswith("/"), f"{name}: {volume}"
    assert used == declared
    volumes = doc["services"]["airflow-scheduler"]["volumes"]
    assert "./dags:/opt/airflow/dags" in volumes and "./plugins:/opt/airflow/plugins" in volumes
    assert "./embwarden.yaml:/opt/embwarden-config/embwarden.yaml:ro" in volumes
    env = doc["x-airflow-common"]["environment"]
    assert any(v.endswith(":" + env["EMBWARDEN_HOME"]) for v in volumes)
    assert any(v.endswith(":" + str(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent))
               for v in volumes)


def test_local_executor_by_default_and_celery_with_its_profile():
    default = load()
    assert default["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert enabled(default) == {"postgres", *AIRFLOW_CORE, "airflow-init", "embedder", "mailcatcher"}
    for name in ("redis", "airflow-worker", "flower", "object-store"):
        assert "celery" in default["services"][name]["profiles"], name
    assert default["services"]["airflow-cli"]["profiles"] == ["debug"]

    env = env_file(DOCKER / "celery.env")
    celery = load(env)
    assert enabled(celery, env) == enabled(default) | {"redis", "airflow-worker", "flower", "object-store"}
    for name in enabled(celery, env) - {"postgres", "redis", "mailcatcher", "object-store"}:
        assert celery["services"][name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
    common = celery["x-airflow-common"]["environment"]
    broker = make_url(common["AIRFLOW__CELERY__BROKER_URL"].replace("redis://:@", "redis://"))
    assert broker.host == "redis" and 6379 in celery["services"]["redis"]["expose"]
    backend = make_url(common["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    assert backend.host == "postgres" and backend.database == "airflow"
    assert celery["services"]["airflow-worker"]["command"] == "celery worker"
    assert 5555 in published(celery) and published(celery)[5555] == "flower"
    # Run data and caches on the object store, through the connection that reaches its S3 gateway: the
    # workers share no volume. By default they stay in embwarden.yaml's folders.
    assert common["EMBWARDEN_ARTIFACTS_ROOT"].startswith("s3://embwarden/")
    assert common["EMBWARDEN_CACHE_DIR"].startswith("s3://embwarden/")
    assert common["EMBWARDEN_STORE_CONNECTION"] == "embwarden_store"
    store = json.loads(common["AIRFLOW_CONN_EMBWARDEN_STORE"])
    assert store["conn_type"] == "aws" and store["extra"]["endpoint_url"] == "http://object-store:8333"
    assert 8333 in celery["services"]["object-store"]["expose"] and "-bucket=embwarden" in str(
        celery["services"]["object-store"]["command"])
    assert "object-store" in celery["services"]["airflow-worker"]["depends_on"]
    assert default["x-airflow-common"]["environment"]["EMBWARDEN_ARTIFACTS_ROOT"] == ""


def test_gpu_profile_adds_a_worker_on_the_gpu_queue():
    env = env_file(DOCKER / "gpu.env")
    doc = load(env)
    assert enabled(doc, env) == enabled(load()) | {"redis", "airflow-worker", "flower", "airflow-worker-gpu",
                                                    "object-store"}
    # The gpu profile alone starts the broker and the default worker as well.
    assert enabled(doc, {"COMPOSE_PROFILES": "gpu"}) == enabled(doc, env)
    gpu = doc["services"]["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == "celery worker --queues gpu --concurrency 1"
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["image"] != doc["x-airflow-common"]["image"]
    assert gpu["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "--queues" not in doc["services"]["airflow-worker"]["command"]      # the default queue
    # The DAG processor applies the policy that queues the probe tasks on `gpu`.
    assert doc["services"]["airflow-dag-processor"]["environment"]["EMBWARDEN_PROBE_QUEUE"] == "gpu"
    assert load()["services"]["airflow-dag-processor"]["environment"]["EMBWARDEN_PROBE_QUEUE"] == ""


def test_alerts_reach_the_mail_catcher_and_the_reference_service_runs():
    services = load()["services"]
    smtp = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_EMBWARDEN_SMTP"]
    assert '"host": "mailcatcher", "port": 1025' in smtp
    assert "8025:8025" in services["mailcatcher"]["ports"]
    embedder = services["embedder"]
    assert embedder["entrypoint"][:3] == ["embwarden", "serve", "support-search"]
    assert "8000:8000" in embedder["ports"]


def test_readme_matches_the_compose_file():
    readme = (REPO / "README.md").read_text()
    doc = load()
    ports = published(doc)
    for port in re.findall(r"localhost:(\d+)", readme):
        assert int(port) in ports, f"README mentions localhost:{port}, which no service publishes"
    profiles = {p for svc in doc["services"].values() for p in svc.get("profiles", [])}
    for profile in re.findall(r"--profile[ =](\w+)", readme) + \
            [p for value in re.findall(r"COMPOSE_PROFILES=([\w,]+)", readme) for p in value.split(",")]:
        assert profile in profiles, profile
    for path in re.findall(r"\bdocker/[\w.-]+", readme):
        assert (REPO / path).exists(), path
    services = set(doc["services"])
    for service in re.findall(r"docker compose (?:run --rm|logs -f|logs|exec|restart) ([a-z][\w-]+)", readme):
        assert service in services, service
    header = COMPOSE.read_text().split("x-airflow-common:")[0]
    for port in re.findall(r"localhost:(\d+)", header):
        assert int(port) in ports, port
