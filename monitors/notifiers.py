"""Delivering an `Alert` through Airflow's own notifiers: SmtpNotifier (mail) and HttpNotifier (webhooks).

Host, port, credentials and TLS live in Airflow connections, so the same settings serve Airflow's own
mail and embwarden's alerts. Outside a task (CLI, tests) a connection comes from `AIRFLOW_CONN_<ID>`.

SMTP connection extras worth setting (the hook reads them only from the connection):
  - `timeout`: seconds per socket operation (hook default 30).
  - `retry_limit`: extra tries of connect-after-disconnect and of sendmail (hook default 5; each try may
    wait `timeout`). A refused connection is not retried. 1 is plenty for alerts.
  - `disable_ssl`: the hook speaks implicit TLS (SMTPS, port 465) unless this is true.
  - `disable_tls`: the hook sends STARTTLS unless this is true.
  - `ssl_context`: "default" verifies the server's certificate; "none" skips verification.
  - `from_email`: the sender when the channel gives none.
  e.g. {"conn_type": "smtp", "host": "mail.example.com", "port": 587, "login": "...", "password": "...",
        "extra": {"disable_ssl": true, "timeout": 10, "retry_limit": 1, "from_email": "embwarden@example.com"}}

HTTP connections: `host` may be a whole URL (a Slack webhook URL, say); extra `timeout` overrides the
10 s used here. Careful: the HTTP hook sends every extra key it does not know as a request header.

`notify()` is called directly rather than through the notifier's `__call__`, which would render the
alert's fields as Jinja templates.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from audits.errors import EmbwardenError
from monitors.config import EmailChannelConfig, WebhookChannelConfig

if TYPE_CHECKING:  # monitors.alerts sends through this module
    from monitors.alerts import Alert

# What `notify()` reads of an Airflow context: nothing but `dag`, which an alert sent outside a DAG lacks.
NO_CONTEXT: Any = {"dag": None}
TIMEOUT_S = 10  # webhook request timeout unless the connection sets `timeout`


class AlertDeliveryError(EmbwardenError):
    """An alert could not be handed to its receiver; the message names channel, connection and cause."""


def deliver(alert: Alert, channel: EmailChannelConfig | WebhookChannelConfig, delivery_id: str | None = None) -> None:
    """Send `alert` over `channel`; any failure is raised as AlertDeliveryError. `delivery_id`, the same
    on every attempt at one alert, goes out as the mail's Message-ID and the webhook's Idempotency-Key
    header (and `delivery_id` field of a JSON payload), so a receiver can drop a second copy."""
    kind = channel.kind
    try:
        if isinstance(channel, EmailChannelConfig):
            _send_mail(alert, channel, delivery_id)
        else:
            _post_webhook(alert, channel, delivery_id)
    except Exception as exc:
        raise AlertDeliveryError(f"{kind} via connection {channel.connection}: {_reason(exc, channel)}") from exc


def _send_mail(alert: Alert, channel: EmailChannelConfig, delivery_id: str | None) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    headers = {"Message-ID": f"<{delivery_id}@embwarden>"} if delivery_id else None
    SmtpNotifier(to=channel.to, from_email=channel.from_email, subject=alert.subject(),
                 html_content=render_html(alert), smtp_conn_id=channel.connection,
                 custom_headers=headers).notify(NO_CONTEXT)


def _post_webhook(alert: Alert, channel: WebhookChannelConfig, delivery_id: str | None) -> None:
    from airflow.providers.http.notifications.http import HttpNotifier

    payload = slack_message(alert) if channel.format == "slack" else alert.as_json()
    headers = {"Content-Type": "application/json"}
    if delivery_id:
        headers["Idempotency-Key"] = delivery_id
        if channel.format == "json":
            payload["delivery_id"] = delivery_id
    notifier = HttpNotifier(http_conn_id=channel.connection, endpoint=channel.endpoint, json=payload,
                            headers=headers)
    # Options passed here win over the connection's extras, so only default the timeout.
    has_timeout = "timeout" in notifier.hook.get_connection(channel.connection).extra_dejson
    notifier.extra_options = {} if has_timeout else {"timeout": TIMEOUT_S}
    notifier.notify(NO_CONTEXT)


def _reason(exc: Exception, channel: Any) -> str:
    from airflow.sdk.exceptions import AirflowNotFoundException

    if isinstance(exc, AirflowNotFoundException) or isinstance(exc.__context__, AirflowNotFoundException):
        return f"connection not defined (set AIRFLOW_CONN_{channel.connection.upper()} or define it in Airflow)"
    reason = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in reason:  # "Unable to connect to smtp server"
        reason += f" ({cause})"
    # A webhook URL's path can be its secret (Slack's is): keep it out of logs and the ledger.
    return re.sub(r"(url: )[^\s)]+", r"\1<redacted>", reason)


def _fields(alert: Alert) -> list[tuple[str, str]]:
    """What an alert shows, in order; the same for mail and Slack."""
    rows = [("Deployment", alert.deployment), ("Version", alert.version), ("Verdict", alert.verdict)]
    if alert.metric is not None:
        value = "n/a" if alert.value is None else f"{alert.value:.3f}"
        rows += [("Metric", alert.metric), ("Value", value), ("Threshold", str(alert.threshold))]
    rows.append(("Actions", ", ".join(alert.actions) or "none"))
    if alert.detail:
        rows.append(("Detail", alert.detail))
    if alert.run:
        rows.append(("Airflow run", alert.run))
    return rows


def _is_url(report: str | None) -> bool:
    return bool(report) and report.startswith(("http://", "https://"))


def render_html(alert: Alert) -> str:
    """The mail body; every field is escaped (detail lines can quote error messages)."""
    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _fields(alert))
    if alert.report is not None and _is_url(alert.report):
        report = f"<a href=\"{e(alert.report)}\">{e(alert.report)}</a>"
    else:
        report = e(alert.report or "pending")
    plain = f"<p>{e(alert.plain)}</p>" if alert.plain else ""
    return (f"<html><body><h3>{e(alert.subject())}</h3>{plain}<table>{rows}"
            f"<tr><th align='left'>Report</th><td>{report}</td></tr></table></body></html>")


def _mrkdwn(text: str, limit: int = 1900) -> str:
    """Slack's escaping; Slack refuses a message whose field is over 2000 characters."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: Alert) -> dict:
    """A Slack incoming-webhook message: `text` for notifications, `blocks` for the channel."""
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"} for k, v in _fields(alert)]
    report = alert.report or "pending"
    link = f"<{_mrkdwn(report)}|open report>" if _is_url(report) else f"`{_mrkdwn(report)}`"
    return {
        "text": alert.summary(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(alert.subject())}*"}},
            *([{"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(alert.plain)}}] if alert.plain else []),
            {"type": "section", "fields": fields},  # at most 9 of Slack's 10
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Report*: {link}"}},
        ],
    }
