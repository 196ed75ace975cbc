"""docker-compose.yml cannot be started here (no Docker engine); check that it is whole and
consistent with the project: every Airflow 3 service, the ledger database, the mounts."""

import yaml

from tests.conftest import REPO


def load():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_airflow_3_services_share_one_definition():
    services = load()["services"]
    assert {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-init"} <= set(services)
    commands = {name: svc.get("command") for name, svc in services.items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-dag-processor"] == "dag-processor"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert '"schema": "embwarden"' in env["AIRFLOW_CONN_EMBWARDEN_DB"]


def test_mounts_and_init_match_the_repository():
    services = load()["services"]
    volumes = services["airflow-scheduler"]["volumes"]
    assert any(v.endswith("/dags:/opt/airflow/dags") for v in volumes)
    assert any(v.endswith("/plugins:/opt/airflow/plugins") for v in volumes)
    init = services["airflow-init"]["command"][1]
    assert "airflow db migrate" in init and "embwarden migrate" in init
    init_sql = services["postgres"]["volumes"][1].split(":")[0]
    assert "CREATE DATABASE embwarden" in (REPO / init_sql).read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "/opt/embwarden" in dockerfile


def test_alerts_reach_the_mail_catcher_and_the_reference_service_runs():
    services = load()["services"]
    smtp = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_EMBWARDEN_SMTP"]
    assert '"host": "mailcatcher", "port": 1025' in smtp
    assert "8025:8025" in services["mailcatcher"]["ports"]
    embedder = services["embedder"]
    assert embedder["entrypoint"][:3] == ["embwarden", "serve", "support-search"]
    assert "8000:8000" in embedder["ports"]
