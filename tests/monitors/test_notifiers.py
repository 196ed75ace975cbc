"""Alerts delivered by Airflow's SmtpNotifier and HttpNotifier to real receivers on loopback."""

from __future__ import annotations

import pytest

from monitors.alerts import Alert
from monitors.config import EmailChannelConfig, WebhookChannelConfig
from monitors.notifiers import AlertDeliveryError, deliver
from tests.receivers import free_port, mail_catcher, smtp_connection, webhook_receiver  # noqa: F401

ALERT = Alert(deployment="support-search", version="v2", kind="opened", verdict="gate",
              metric="bow_inversion.token_f1", value=0.4123, threshold=0.3,
              actions=("alert", "close_gate"), report="https://reports.example.com/embwarden/runs/17/report.html",
              audit_run_id=17, run="privacy_audit/scheduled__2025-01-01", detail="sampled 500 rows")
EMAIL = EmailChannelConfig(kind="email", to=["privacy@example.com", "oncall@example.com"],
                           from_email="embwarden@example.com")


def _body(msg) -> str:
    return next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()


def test_mail_arrives_with_the_alert(mail_catcher, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection())
    deliver(ALERT, EMAIL)
    [msg] = mail_catcher.messages
    assert msg["To"] == "privacy@example.com, oncall@example.com"
    assert msg["From"] == "embwarden@example.com"
    assert msg["Subject"] == "[embwarden] support-search v2: gate"
    body = _body(msg)
    for expected in ("support-search", "v2", "gate", "bow_inversion.token_f1", "0.412", "0.3", "alert, close_gate",
                     "sampled 500 rows", "privacy_audit/scheduled__2025-01-01",
                     'href="https://reports.example.com/embwarden/runs/17/report.html"'):
        assert expected in body


def test_mail_escapes_fields_and_takes_sender_from_connection(mail_catcher, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection(from_email="alerts@example.com"))
    alert = Alert(deployment="d", version="v1", kind="opened", verdict="error", metric=None, value=None,
                  threshold=None, actions=("alert",), report=None, detail="<script>alert(1)</script> & {{ x }}")
    deliver(alert, EmailChannelConfig(kind="email", to=["a@example.com"]))
    [msg] = mail_catcher.messages
    assert msg["From"] == "alerts@example.com"
    body = _body(msg)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; {{ x }}" in body and "<script>" not in body
    assert "pending" in body


def test_json_webhook(webhook_receiver, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_WEBHOOK", webhook_receiver.connection())
    deliver(ALERT, WebhookChannelConfig(kind="webhook", endpoint="/hooks/embwarden"))
    [(path, headers, body)] = webhook_receiver.requests
    assert path == "/hooks/embwarden"
    assert headers["Content-Type"] == "application/json"
    assert body == ALERT.as_json()
    assert body["actions"] == ["alert", "close_gate"] and body["verdict"] == "gate"


def test_slack_webhook(webhook_receiver, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_SLACK", webhook_receiver.connection())
    deliver(ALERT, WebhookChannelConfig(kind="webhook", connection="slack", format="slack"))
    [(path, _, body)] = webhook_receiver.requests
    assert path == "/"
    assert body["text"] == ALERT.summary()
    blocks = str(body["blocks"])
    assert all(b["type"] == "section" for b in body["blocks"])
    for expected in ("support-search", "v2", "gate", "bow_inversion.token_f1", "0.412", "0.3", "alert, close_gate",
                     "<https://reports.example.com/embwarden/runs/17/report.html|open report>"):
        assert expected in blocks


def test_webhook_error_status_is_a_delivery_error(webhook_receiver, monkeypatch):  # noqa: F811
    webhook_receiver.status = 500
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_WEBHOOK", webhook_receiver.connection())
    with pytest.raises(AlertDeliveryError, match="webhook via connection embwarden_webhook: 500") as err:
        deliver(ALERT, WebhookChannelConfig(kind="webhook", endpoint="/services/T0/B0/SECRET"))
    assert "SECRET" not in str(err.value)  # a Slack webhook's path is its credential
    assert len(webhook_receiver.requests) == 1  # the hook does not retry


def test_refused_smtp_is_a_delivery_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", smtp_connection(free_port()))
    with pytest.raises(AlertDeliveryError, match="email via connection embwarden_smtp: .*refused"):
        deliver(ALERT, EMAIL)


def test_refused_webhook_is_a_delivery_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_WEBHOOK", f'{{"conn_type": "http", "host": "127.0.0.1", '
                                                         f'"port": {free_port()}}}')
    with pytest.raises(AlertDeliveryError, match="webhook via connection embwarden_webhook: .*refused"):
        deliver(ALERT, WebhookChannelConfig(kind="webhook"))


def test_missing_connection_is_a_delivery_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_SMTP", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_WEBHOOK", raising=False)
    with pytest.raises(AlertDeliveryError, match="email via connection embwarden_smtp: connection not defined"):
        deliver(ALERT, EMAIL)
    with pytest.raises(AlertDeliveryError, match="AIRFLOW_CONN_EMBWARDEN_WEBHOOK"):
        deliver(ALERT, WebhookChannelConfig(kind="webhook"))
